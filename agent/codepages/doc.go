// Package codepages hands the resident pages of the running executable's
// code back to the kernel.
//
// kvinject is one binary: the agent in every pod also links the webhook's
// client-go and controller-runtime, and Go runs every package's init at
// start, so a fresh process has most of its 40 MiB executable resident,
// though an idle sidecar (or a webhook past its start-up) touches little of
// it. Releasing those pages takes a sidecar's idle RSS from about 36 MiB to
// about 8 MiB (docs/performance.md).
package codepages
