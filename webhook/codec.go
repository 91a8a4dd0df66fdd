package webhook

import (
	gojson "github.com/goccy/go-json"
)

// decodeReview decodes a review body into r. Decoding the review with its
// pod was the largest part of a review's CPU with reflection-based
// encoding/json; goccy/go-json does it with compiled per-type decoders, calls
// the Kubernetes types' own UnmarshalJSON, and TestCodecDecodesLikeEncodingJSON
// and FuzzDecodeReview hold it to encoding/json's result. Only this decoding
// uses it: the fallback decoding (with its precise errors) and every
// encoding keep encoding/json — goccy's encoder would cut another ~15 % of
// CPU per review, but its compiled encoder for corev1.Pod holds 2.3 MiB and
// took the webhook's RSS under load from 25 to 31.5 MiB, over its 30 MiB
// target (docs/performance.md).
func decodeReview(body []byte, r *podReview) error {
	return gojson.Unmarshal(body, r)
}
