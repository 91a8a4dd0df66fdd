package main

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"sigs.k8s.io/yaml"
)

// testRelease runs a release of a random two-platform index, with this test
// binary (which carries the module's build information) as the binary.
func testRelease(t *testing.T) (options, *result) {
	t.Helper()
	dir := t.TempDir()
	idx, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	l, err := layout.Write(filepath.Join(dir, "kvinject-oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	o := options{
		version: "v1.2.3", repo: "registry.example/kvinject", layoutDir: string(l), binary: os.Args[0],
		chart: "../../charts/kvinject", manifests: "../../manifests", out: filepath.Join(dir, "release"),
		created: time.Unix(1767225600, 0).UTC(),
	}
	r, err := release(o)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if r.digest != want {
		t.Fatalf("release digest %s, index %s", r.digest, want)
	}
	return o, r
}

func TestSBOMAttachedToIndex(t *testing.T) {
	o, r := testRelease(t)
	sbom, err := os.ReadFile(r.sbomPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		BOMFormat, SpecVersion string
		Metadata               struct {
			Component struct{ Name, Version, PURL string }
		}
		Components []struct{ Name, Version, PURL string }
	}
	if err := json.Unmarshal(sbom, &doc); err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.ReadFile(o.binary)
	if err != nil {
		t.Fatal(err)
	}
	if doc.BOMFormat != "CycloneDX" || doc.Metadata.Component.Version != "v1.2.3" ||
		doc.Metadata.Component.PURL != "pkg:golang/"+bi.Main.Path+"@v1.2.3" || len(doc.Components) != len(bi.Deps) {
		t.Errorf("SBOM %s %s, component %+v, %d components for %d modules", doc.BOMFormat, doc.SpecVersion, doc.Metadata.Component, len(doc.Components), len(bi.Deps))
	}
	found := false
	for _, d := range bi.Deps {
		if d.Path == "github.com/google/go-containerregistry" {
			for _, c := range doc.Components {
				found = found || c.PURL == "pkg:golang/github.com/google/go-containerregistry@"+d.Version
			}
		}
	}
	if !found {
		t.Error("SBOM lacks go-containerregistry at the linked version")
	}

	// The layout lists the index and the SBOM artifact whose subject it is.
	l, err := layout.FromPath(r.layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := l.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 || im.Manifests[0].Digest != r.digest || im.Manifests[1].Digest != r.sbomManifest {
		t.Fatalf("index.json lists %+v, want the index %s and the SBOM %s", im.Manifests, r.digest, r.sbomManifest)
	}
	raw, err := l.Bytes(r.sbomManifest)
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.Subject == nil || m.Subject.Digest != r.digest || m.ArtifactType != sbomMediaType || len(m.Layers) != 1 {
		t.Fatalf("SBOM manifest %s", raw)
	}
	layer, err := l.Bytes(m.Layers[0].Digest)
	if err != nil || !bytes.Equal(layer, sbom) {
		t.Errorf("SBOM blob differs from sbom.cdx.json (%v)", err)
	}
	// The image itself is still whole.
	if _, err := l.ImageIndex(); err != nil {
		t.Fatal(err)
	}
	if _, err := top.ImageIndex(r.digest); err != nil {
		t.Errorf("image index %s not readable from the release layout: %v", r.digest, err)
	}
}

// Both installs deploy, and inject, the release's image by tag and digest.
func TestPinnedReferences(t *testing.T) {
	o, r := testRelease(t)
	want := o.repo + ":v1.2.3@" + r.digest.String()
	// The chart as make release packages it (helm package).
	pkg, err := exec.Command("kvinject-helm", "package", "-out", t.TempDir(), r.chartDir).CombinedOutput()
	if err != nil {
		t.Fatalf("kvinject-helm package: %v\n%s", err, pkg)
	}
	tgz := strings.TrimSpace(string(pkg))
	if filepath.Base(tgz) != "kvinject-1.2.3.tgz" {
		t.Errorf("packaged chart %s, want kvinject-1.2.3.tgz", tgz)
	}
	for name, args := range map[string][]string{
		"kustomize":      {"kubectl", "kustomize", r.overlay},
		"chart":          {"kvinject-helm", "template", r.chartDir},
		"packaged chart": {"kvinject-helm", "template", tgz},
	} {
		bin, err := exec.LookPath(args[0])
		if err != nil {
			t.Fatalf("%s is needed (make unit puts it on PATH): %v", args[0], err)
		}
		out, err := exec.Command(bin, args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		var image, agent string
		for _, doc := range strings.Split(string(out), "\n---\n") {
			var d struct {
				Kind string
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Image string
								Env   []struct{ Name, Value string }
							}
						}
					}
				}
			}
			if err := yaml.Unmarshal([]byte(doc), &d); err != nil || d.Kind != "Deployment" {
				continue
			}
			c := d.Spec.Template.Spec.Containers[0]
			image = c.Image
			for _, e := range c.Env {
				if e.Name == "KVINJECT_AGENT_IMAGE" {
					agent = e.Value
				}
			}
		}
		if image != want || agent != want {
			t.Errorf("%s: image %q, KVINJECT_AGENT_IMAGE %q, want both %q", name, image, agent, want)
		}
	}
	chart, err := os.ReadFile(filepath.Join(r.chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(chart), "\nversion: 1.2.3\n") || !strings.Contains(string(chart), "\nappVersion: \"v1.2.3\"\n") {
		t.Errorf("Chart.yaml not stamped:\n%s", chart)
	}
}

func TestRejectsBadVersion(t *testing.T) {
	for _, v := range []string{"", "1.2.3", "v1.2", "v01.2.3", "latest"} {
		err := run([]string{"-version", v, "-created", "0"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "-version") {
			t.Errorf("-version %q: %v, want an error naming -version", v, err)
		}
	}
}
