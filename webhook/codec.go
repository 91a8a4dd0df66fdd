package webhook

import (
	"bytes"

	gojson "github.com/goccy/go-json"
)

// The review path decodes the review with its pod, encodes the pod twice
// (before and after injection) for the patch, and encodes the answer: most
// of a review's CPU with reflection-based encoding/json. goccy/go-json does
// the same work with compiled per-type codecs; it calls the Kubernetes
// types' own MarshalJSON/UnmarshalJSON and honours omitempty and omitzero,
// and TestCodecMatchesEncodingJSON and TestCodecResponsesMatchEncodingJSON
// prove its output byte-identical to encoding/json's for the pods and
// answers we serve. Everything off this path (the fallback decoding with its
// precise errors, the agent config) keeps encoding/json.

// decodeReview decodes a review body into r.
func decodeReview(body []byte, r *podReview) error {
	return gojson.Unmarshal(body, r)
}

// encodeTo appends v's JSON encoding, as encoding/json's Encoder writes it
// (HTML-escaped, newline-terminated), to buf.
func encodeTo(buf *bytes.Buffer, v any) error {
	return gojson.NewEncoder(buf).Encode(v)
}
