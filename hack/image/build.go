package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Label keys from the OCI image spec's pre-defined annotations.
const (
	labelSource   = "org.opencontainers.image.source"
	labelVersion  = "org.opencontainers.image.version"
	labelRevision = "org.opencontainers.image.revision"
	labelCreated  = "org.opencontainers.image.created"
	labelTitle    = "org.opencontainers.image.title"
	labelDesc     = "org.opencontainers.image.description"
)

// spec is everything that decides the image's bytes. Two builds with equal
// specs give the same digests: there is no clock and no host state in here.
type spec struct {
	// binaries maps "linux/amd64"-style platforms to the static kvinject
	// binary for that platform.
	binaries map[string][]byte
	// agents maps the same platforms to the static kvinject-agent binaries.
	agents   map[string][]byte
	version  string
	revision string
	source   string
	// created is the build's reference time (SOURCE_DATE_EPOCH or the commit
	// time); it is the config's created time and every file's mtime.
	created time.Time
}

func (s spec) labels() map[string]string {
	return map[string]string{
		labelSource:   s.source,
		labelVersion:  s.version,
		labelRevision: s.revision,
		labelCreated:  s.created.UTC().Format(time.RFC3339),
		labelTitle:    "kvinject",
		labelDesc:     "Azure Key Vault objects in Kubernetes pods: admission webhook and in-pod agent",
	}
}

// platforms returns the spec's platforms in a stable order.
func (s spec) platforms() []string {
	ps := make([]string, 0, len(s.binaries))
	for p := range s.binaries {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// buildIndex assembles one OCI image per platform, each a single layer, and
// an OCI index over them.
func buildIndex(s spec) (v1.ImageIndex, error) {
	if len(s.binaries) == 0 {
		return nil, fmt.Errorf("no binaries: pass -binary linux/ARCH=PATH at least once")
	}
	var adds []mutate.IndexAddendum
	for _, p := range s.platforms() {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", p, err)
		}
		if err := checkBinary(s.binaries[p], plat); err != nil {
			return nil, fmt.Errorf("binary for %s: %w", p, err)
		}
		if err := checkBinary(s.agents[p], plat); err != nil {
			return nil, fmt.Errorf("agent for %s: %w", p, err)
		}
		img, err := buildImage(s, plat, s.binaries[p], s.agents[p])
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
		adds = append(adds, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: plat},
		})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	// Registries (ghcr.io, for one) show index annotations, not config labels.
	return mutate.Annotations(idx, map[string]string{
		labelSource:   s.source,
		labelVersion:  s.version,
		labelRevision: s.revision,
		labelCreated:  s.created.UTC().Format(time.RFC3339),
	}).(v1.ImageIndex), nil
}

func buildImage(s spec, plat *v1.Platform, binary, agent []byte) (v1.Image, error) {
	var buf bytes.Buffer
	if err := writeTar(tar.NewWriter(&buf), rootfs(binary, agent), s.created); err != nil {
		return nil, err
	}
	layerTar := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	created := v1.Time{Time: s.created.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Variant:      plat.Variant,
		Created:      created,
		Config: v1.Config{
			Entrypoint: []string{binaryPath},
			User:       imageUser,
			Labels:     s.labels(),
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "hack/image: static kvinject, CA bundle, passwd/group for nonroot",
		},
	})
}
