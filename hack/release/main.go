// Command release turns the image `make image` built into a release under
// -out (default _out/release); `make release VERSION=vX.Y.Z` runs it after
// `make image`. Nothing it writes is committed: every file names the
// image's digest.
//
//  1. Read the image index digest from the OCI layout (-layout).
//  2. Write an SBOM, CycloneDX 1.5 JSON, of the Go modules linked into the
//     binary (-binary), read from the build information the Go toolchain
//     embeds (what `go version -m` prints): sbom.cdx.json.
//  3. Copy the layout to kvinject-oci/ and attach the SBOM to the index as
//     an OCI 1.1 artifact: a manifest whose subject is the index and whose
//     artifactType is CycloneDX, listed in the layout's index.json beside
//     the image (registries and `oras discover` show it as a referrer).
//  4. Pin the image by tag and digest: a kustomize overlay of manifests/
//     (kustomize/kustomization.yaml) and a copy of the chart whose
//     Chart.yaml carries the version and values.yaml the digest (chart/).
//
// Every step is offline and deterministic for one image and binary.
package main

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The media types of the attached SBOM (CycloneDX's registered type) and of
// the OCI 1.1 empty config an artifact manifest carries.
const (
	sbomMediaType  = "application/vnd.cyclonedx+json"
	emptyMediaType = "application/vnd.oci.empty.v1+json"
)

var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

type options struct {
	version, repo, layoutDir, binary, chart, manifests, out string
	created                                                 time.Time
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.version, "version", "", "release version, vMAJOR.MINOR.PATCH[-PRERELEASE] (required)")
	fs.StringVar(&o.repo, "repo", "ghcr.io/kvinject/kvinject", "image repository")
	fs.StringVar(&o.layoutDir, "layout", "_out/kvinject-oci", "OCI layout `make image` wrote")
	fs.StringVar(&o.binary, "binary", "_out/bin/linux-amd64/kvinject", "a kvinject binary of the image, for the SBOM")
	fs.StringVar(&o.chart, "chart", "charts/kvinject", "the chart to pin")
	fs.StringVar(&o.manifests, "manifests", "manifests", "the kustomize install to pin")
	fs.StringVar(&o.out, "out", "_out/release", "output directory (replaced)")
	created := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "release time as Unix seconds (default $SOURCE_DATE_EPOCH)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !semver.MatchString(o.version) {
		return fmt.Errorf("-version %q: want vMAJOR.MINOR.PATCH, e.g. v0.1.0", o.version)
	}
	sec, err := strconv.ParseInt(*created, 10, 64)
	if err != nil {
		return fmt.Errorf("-created %q: want Unix seconds (the commit time): %w", *created, err)
	}
	o.created = time.Unix(sec, 0).UTC()
	r, err := release(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s:%s@%s\n  SBOM:      %s (%d modules, attached as %s)\n  layout:    %s\n  kustomize: %s\n  chart:     %s\n",
		o.repo, o.version, r.digest, r.sbomPath, r.modules, r.sbomManifest, r.layoutDir, r.overlay, r.chartDir)
	return nil
}

type result struct {
	digest, sbomManifest                   v1.Hash
	sbomPath, layoutDir, overlay, chartDir string
	modules                                int
}

func release(o options) (*result, error) {
	r := &result{
		sbomPath:  filepath.Join(o.out, "sbom.cdx.json"),
		layoutDir: filepath.Join(o.out, "kvinject-oci"),
		overlay:   filepath.Join(o.out, "kustomize"),
		chartDir:  filepath.Join(o.out, "chart", filepath.Base(o.chart)),
	}
	// 1. The index digest.
	src, err := layout.FromPath(o.layoutDir)
	if err != nil {
		return nil, fmt.Errorf("-layout %s: %w (run make image first)", o.layoutDir, err)
	}
	top, err := src.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 || !im.Manifests[0].MediaType.IsIndex() {
		return nil, fmt.Errorf("-layout %s: want exactly one image index, found %d entries", o.layoutDir, len(im.Manifests))
	}
	indexDesc := im.Manifests[0]
	r.digest = indexDesc.Digest

	// 2. The SBOM.
	bi, err := buildinfo.ReadFile(o.binary)
	if err != nil {
		return nil, fmt.Errorf("-binary %s: %w", o.binary, err)
	}
	sbom, err := cycloneDX(bi, o, r.digest)
	if err != nil {
		return nil, err
	}
	r.modules = len(bi.Deps)
	if err := os.RemoveAll(o.out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.sbomPath, sbom, 0o644); err != nil {
		return nil, err
	}

	// 3. The layout with the SBOM attached to the index.
	if err := copyTree(o.layoutDir, r.layoutDir, nil); err != nil {
		return nil, err
	}
	r.sbomManifest, err = attach(layout.Path(r.layoutDir), indexDesc, sbom, o.created)
	if err != nil {
		return nil, err
	}

	// 4. Pinned references.
	if err := overlay(o, r); err != nil {
		return nil, err
	}
	if err := pinChart(o, r); err != nil {
		return nil, err
	}
	return r, nil
}

// cycloneDX describes the binary's main module and every module linked into
// it, with Go module package URLs and the go.sum hashes.
func cycloneDX(bi *buildinfo.BuildInfo, o options, digest v1.Hash) ([]byte, error) {
	type hash struct {
		Alg     string `json:"alg"`
		Content string `json:"content"`
	}
	type property struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}
	type component struct {
		Type       string     `json:"type"`
		BOMRef     string     `json:"bom-ref"`
		Name       string     `json:"name"`
		Version    string     `json:"version"`
		PURL       string     `json:"purl"`
		Hashes     []hash     `json:"hashes,omitempty"`
		Properties []property `json:"properties,omitempty"`
	}
	type dependency struct {
		Ref       string   `json:"ref"`
		DependsOn []string `json:"dependsOn"`
	}
	purl := func(path, version string) string {
		return "pkg:golang/" + path + "@" + version
	}
	main := component{
		Type: "application", Name: bi.Main.Path, Version: o.version,
		PURL: purl(bi.Main.Path, o.version),
		Properties: []property{
			{"kvinject:image", o.repo + ":" + o.version + "@" + digest.String()},
			{"go:toolchain", bi.GoVersion},
		},
	}
	main.BOMRef = main.PURL
	for _, s := range bi.Settings {
		if s.Key == "GOOS" || s.Key == "GOARCH" || s.Key == "CGO_ENABLED" || s.Key == "-tags" {
			main.Properties = append(main.Properties, property{"go:build:" + s.Key, s.Value})
		}
	}
	var comps []component
	dep := dependency{Ref: main.BOMRef, DependsOn: []string{}}
	for _, d := range bi.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		c := component{Type: "library", Name: m.Path, Version: m.Version, PURL: purl(m.Path, m.Version)}
		c.BOMRef = c.PURL
		// go.sum's h1: is the base64 SHA-256 of the module's file list hash.
		if h, ok := strings.CutPrefix(m.Sum, "h1:"); ok {
			c.Properties = append(c.Properties, property{"go:sum", "h1:" + h})
		}
		if d.Replace != nil {
			c.Properties = append(c.Properties, property{"go:replaces", d.Path + "@" + d.Version})
		}
		comps = append(comps, c)
		dep.DependsOn = append(dep.DependsOn, c.BOMRef)
	}
	// A serial number that is the same for the same image: a name-based UUID
	// from the digest.
	sum := sha256.Sum256([]byte("kvinject sbom " + digest.String()))
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	u := hex.EncodeToString(sum[:16])
	doc := map[string]any{
		"bomFormat":    "CycloneDX",
		"specVersion":  "1.5",
		"serialNumber": "urn:uuid:" + u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32],
		"version":      1,
		"metadata": map[string]any{
			"timestamp": o.created.Format(time.RFC3339),
			"tools":     map[string]any{"components": []component{{Type: "application", Name: "kvinject hack/release", Version: o.version, BOMRef: "kvinject-hack-release", PURL: purl(bi.Main.Path+"/hack/release", o.version)}}},
			"component": main,
		},
		"components":   comps,
		"dependencies": []dependency{dep},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	return append(b, '\n'), err
}

// attach writes the SBOM as an OCI 1.1 artifact manifest whose subject is
// the index, and lists it in the layout's index.json.
func attach(l layout.Path, subject v1.Descriptor, sbom []byte, created time.Time) (v1.Hash, error) {
	blob := func(b []byte) (v1.Hash, error) {
		h, _, err := v1.SHA256(bytes.NewReader(b))
		if err != nil {
			return h, err
		}
		return h, l.WriteBlob(h, io.NopCloser(bytes.NewReader(b)))
	}
	empty := []byte("{}")
	emptyHash, err := blob(empty)
	if err != nil {
		return v1.Hash{}, err
	}
	sbomHash, err := blob(sbom)
	if err != nil {
		return v1.Hash{}, err
	}
	subj := v1.Descriptor{MediaType: subject.MediaType, Size: subject.Size, Digest: subject.Digest}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  sbomMediaType,
		Config:        v1.Descriptor{MediaType: emptyMediaType, Size: int64(len(empty)), Digest: emptyHash},
		Layers: []v1.Descriptor{{MediaType: sbomMediaType, Size: int64(len(sbom)), Digest: sbomHash,
			Annotations: map[string]string{"org.opencontainers.image.title": "sbom.cdx.json"}}},
		Subject:     &subj,
		Annotations: map[string]string{"org.opencontainers.image.created": created.Format(time.RFC3339)},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	mh, err := blob(mb)
	if err != nil {
		return v1.Hash{}, err
	}
	return mh, l.AppendDescriptor(v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Size: int64(len(mb)), Digest: mh, ArtifactType: sbomMediaType,
	})
}

// overlay writes a kustomize overlay of manifests/ with the image pinned by
// tag and digest (kustomize writes repo:tag@digest into the container image
// and KVINJECT_AGENT_IMAGE alike, manifests/kustomizeconfig.yaml).
func overlay(o options, r *result) error {
	absManifests, err := filepath.Abs(o.manifests)
	if err != nil {
		return err
	}
	absOverlay, err := filepath.Abs(r.overlay)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(absOverlay, absManifests)
	if err != nil {
		return err
	}
	kz := fmt.Sprintf(`# kvinject %[1]s: manifests/ with the image pinned by tag and digest.
# Written by make release; kubectl apply -k this directory.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %[2]s
images:
- name: ghcr.io/kvinject/kvinject
  newName: %[3]s
  newTag: %[1]s
  digest: %[4]s
`, o.version, filepath.ToSlash(rel), o.repo, r.digest)
	if err := os.MkdirAll(r.overlay, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.overlay, "kustomization.yaml"), []byte(kz), 0o644)
}

// pinChart copies the chart and stamps its version, appVersion, repository
// and digest. Each edit must match exactly one line of the source, so a
// change to Chart.yaml or values.yaml that this does not follow fails here.
func pinChart(o options, r *result) error {
	chartVersion := strings.TrimPrefix(o.version, "v")
	edits := map[string][][2]string{
		"Chart.yaml": {
			{`(?m)^version: .*$`, "version: " + chartVersion},
			{`(?m)^appVersion: .*$`, "appVersion: " + strconv.Quote(o.version)},
		},
		"values.yaml": {
			{`(?m)^  repository: ghcr\.io/kvinject/kvinject$`, "  repository: " + o.repo},
			{`(?m)^  digest: ""$`, "  digest: " + r.digest.String()},
		},
	}
	return copyTree(o.chart, r.chartDir, func(rel string, b []byte) ([]byte, error) {
		for _, e := range edits[rel] {
			re := regexp.MustCompile(e[0])
			if n := len(re.FindAllIndex(b, -1)); n != 1 {
				return nil, fmt.Errorf("%s/%s: %d lines match %s, want 1", o.chart, rel, n, e[0])
			}
			b = re.ReplaceAllLiteral(b, []byte(e[1]))
		}
		return b, nil
	})
}

// copyTree copies the regular files under src to dst, through edit if set.
func copyTree(src, dst string, edit func(rel string, b []byte) ([]byte, error)) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if edit != nil {
			if b, err = edit(filepath.ToSlash(rel), b); err != nil {
				return err
			}
		}
		return os.WriteFile(target, b, 0o644)
	})
}
