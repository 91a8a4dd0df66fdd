package migrate

import (
	"os"
	"strings"
	"testing"
)

// docs/migrate.md quotes the golden files as they are.
func TestDocsQuoteGolden(t *testing.T) {
	doc, err := os.ReadFile("../docs/migrate.md")
	if err != nil {
		t.Fatal(err)
	}
	report, err := os.ReadFile("testdata/shop/shop.report.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```text\n"+string(report)+"```") {
		t.Errorf("docs/migrate.md does not quote testdata/shop/shop.report.txt as it is")
	}
	out, err := os.ReadFile("testdata/shop/shop.out.yaml")
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := os.ReadFile("testdata/blocked/blocked.report.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range strings.Split(string(doc), "```")[1:] {
		lang, body, _ := strings.Cut(block, "\n")
		var golden []byte
		switch {
		case lang == "yaml":
			golden = out
		case lang == "text" && strings.HasPrefix(body, "  Deployment shop/frontend ("):
			golden = blocked
		default:
			continue
		}
		for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
			if !strings.Contains(string(golden), line+"\n") {
				t.Errorf("docs/migrate.md quotes a line the golden file does not have: %q", line)
			}
		}
	}
}
