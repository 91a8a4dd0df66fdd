package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// plugin is krew's index.Plugin (sigs.k8s.io/krew/pkg/index, apiVersion
// v1alpha2), decoded strictly so a misspelt field fails.
type plugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector *metav1.LabelSelector `json:"selector"`
			URI      string                `json:"uri"`
			Sha256   string                `json:"sha256"`
			Files    []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
			Bin string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// validate applies krew's ValidatePlugin rules
// (internal/index/validation/validate.go).
func validate(t *testing.T, p plugin) {
	t.Helper()
	check := func(ok bool, what string) {
		if !ok {
			t.Errorf("krew rejects the manifest: %s", what)
		}
	}
	check(p.APIVersion == "krew.googlecontainertools.github.com/v1alpha2", "apiVersion")
	check(p.Kind == "Plugin", "kind")
	check(regexp.MustCompile(`^[\w-]+$`).MatchString(p.Metadata.Name) && p.Metadata.Name == "kvinject", "name")
	check(p.Spec.ShortDescription != "" && !strings.ContainsAny(p.Spec.ShortDescription, "\r\n"), "shortDescription")
	check(semver.MatchString(p.Spec.Version), "version")
	check(len(p.Spec.Platforms) > 0, "platforms")
	for _, pl := range p.Spec.Platforms {
		check(pl.URI != "", "uri")
		check(regexp.MustCompile(`^[a-f0-9]{64}$`).MatchString(pl.Sha256), "sha256 "+pl.Sha256)
		check(pl.Bin != "", "bin")
		for _, f := range pl.Files {
			check(f.From != "" && f.To != "", "files")
		}
		check(pl.Selector != nil && len(pl.Selector.MatchLabels) > 0, "selector")
		if pl.Selector != nil {
			for k := range pl.Selector.MatchLabels {
				check(k == "os" || k == "arch", "selector key "+k)
			}
		}
	}
}

func TestRelease(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "kvinject")
	if err := os.WriteFile(bin, []byte("\x7fELF binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1767225600, 0).UTC()
	bins := binaries{"linux/amd64": bin, "linux/arm64": bin}
	out := filepath.Join(dir, "out")
	if err := run("v0.2.0", "kvinject.yaml", "../../LICENSE", out, created, bins); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "kvinject.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p plugin
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}
	validate(t, p)
	if len(p.Spec.Platforms) != 2 {
		t.Fatalf("%d platforms, want linux/amd64 and linux/arm64", len(p.Spec.Platforms))
	}
	for _, pl := range p.Spec.Platforms {
		name := "kvinject_v0.2.0_linux_" + pl.Selector.MatchLabels["arch"] + ".tar.gz"
		if !strings.HasSuffix(pl.URI, "/download/v0.2.0/"+name) {
			t.Errorf("uri %s, want the release's %s", pl.URI, name)
		}
		archive, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(archive); hex.EncodeToString(sum[:]) != pl.Sha256 {
			t.Errorf("%s: sha256 in the manifest is not the archive's", name)
		}
		// krew copies files, then links kubectl-kvinject to bin.
		entries := untar(t, archive)
		if entries[pl.Bin] != 0o755 || entries["LICENSE"] == 0 {
			t.Errorf("%s holds %v; want %s executable and LICENSE", name, entries, pl.Bin)
		}
	}
	// Deterministic: the same inputs give the same bytes.
	again := filepath.Join(dir, "again")
	if err := run("v0.2.0", "kvinject.yaml", "../../LICENSE", again, created, bins); err != nil {
		t.Fatal(err)
	}
	raw2, _ := os.ReadFile(filepath.Join(again, "kvinject.yaml"))
	if !bytes.Equal(raw, raw2) {
		t.Error("a second run wrote another manifest")
	}
	if err := run("0.2", "kvinject.yaml", "../../LICENSE", again, created, bins); err == nil {
		t.Error("version 0.2 accepted")
	}
}

func untar(t *testing.T, archive []byte) map[string]int64 {
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	entries := map[string]int64{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h.Mode
	}
}
