package injector

//go:generate go test -run TestReferenceDocs -update .

import (
	"os"
	"strings"
	"testing"
)

// referenceDocs are the files that embed Reference().
var referenceDocs = []string{"../README.md", "../docs/annotations.md"}

// TestReferenceDocs fails when a document's annotation reference differs from
// the table in code; -update (or go generate ./injector) rewrites it.
func TestReferenceDocs(t *testing.T) {
	for _, path := range referenceDocs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		doc := string(data)
		before, rest, ok1 := strings.Cut(doc, ReferenceBegin)
		_, after, ok2 := strings.Cut(rest, ReferenceEnd)
		if !ok1 || !ok2 {
			t.Errorf("%s: no %s ... %s markers", path, ReferenceBegin, ReferenceEnd)
			continue
		}
		want := before + ReferenceBegin + "\n" + Reference() + ReferenceEnd + after
		if doc == want {
			continue
		}
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s: annotation reference is out of date; run go generate ./injector", path)
	}
}

// TestEveryAnnotationDocumented checks that each annotation key the code
// defines is in the table, so the reference cannot miss one.
func TestEveryAnnotationDocumented(t *testing.T) {
	for _, key := range []string{AnnotationInject, AnnotationVault, AnnotationObjects, AnnotationRefresh,
		AnnotationSidecar, AnnotationMountPath, AnnotationContainers, AnnotationClientID, AnnotationTenantID,
		AnnotationCloud, AnnotationFileMode, AnnotationCPURequest, AnnotationMemoryRequest, AnnotationCPULimit,
		AnnotationMemoryLimit, AnnotationStatus, Prefix + FileSecret + "x", Prefix + FileCert + "x",
		Prefix + FileKey + "x", Prefix + FileTemplate + "x"} {
		if _, _, ok := lookup(key); !ok {
			t.Errorf("%s is not in Annotations", key)
		}
	}
	for _, a := range Annotations {
		if a.Type == "" || a.Default == "" || a.Help == "" || a.Example == "" {
			t.Errorf("%s: every column must be filled", a.Key())
		}
	}
}
