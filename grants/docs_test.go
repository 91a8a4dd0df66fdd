package grants

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// docs/azure.md quotes the goldens as they are: the explain and az outputs
// whole, every hcl and bicep block as a part of its golden.
func TestDocsQuoteGoldens(t *testing.T) {
	doc, err := os.ReadFile("../docs/azure.md")
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, name := range []string{"explain.txt", "az-object.sh"} {
		if !strings.Contains(string(doc), read(name)) {
			t.Errorf("docs/azure.md does not quote testdata/%s as it is", name)
		}
	}
	blocks := regexp.MustCompile("(?s)```(hcl|bicep)\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 3 {
		t.Fatalf("%d hcl/bicep blocks in docs/azure.md", len(blocks))
	}
	golden := map[string]string{"hcl": read("terraform-object.tf"), "bicep": read("bicep-object.bicep")}
	for _, b := range blocks {
		for _, part := range strings.Split(strings.TrimSpace(b[2]), "\n\n") {
			if !strings.Contains(golden[b[1]], part) {
				t.Errorf("docs/azure.md %s block is not in the golden:\n%s", b[1], part)
			}
		}
	}
}
