package injector

import (
	"strings"
)

// Reference is the annotation reference as a Markdown table, generated from
// Annotations. README.md and docs/annotations.md embed it between
// ReferenceBegin and ReferenceEnd; a test fails when they drift, and
// `go generate ./injector` rewrites them.
func Reference() string {
	var b strings.Builder
	b.WriteString("| annotation | value | default | meaning |\n|---|---|---|---|\n")
	for _, a := range Annotations {
		b.WriteString("| `" + a.Key() + "` | " + cell(a.Type) + " | " + cell(a.Default) + " | " + cell(a.Help) + " |\n")
	}
	return b.String()
}

// Markers around the generated reference in Markdown files.
const (
	ReferenceBegin = "<!-- BEGIN ANNOTATIONS (generated from injector.Annotations by go generate ./injector; do not edit) -->"
	ReferenceEnd   = "<!-- END ANNOTATIONS -->"
)

// cell escapes a table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
