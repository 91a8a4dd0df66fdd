package main

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// outputs are the files make image produces under _out/.
type outputs struct {
	// layoutDir is an OCI image layout holding the index: the input for
	// `crane push DIR REF` and `skopeo copy oci:DIR docker://REF`.
	layoutDir string
	// ociTar is layoutDir as one tar: `docker load` with the containerd
	// image store, `skopeo copy oci-archive:FILE`, `podman load`.
	ociTar string
	// dockerTars maps platforms to docker-archive tarballs with one image
	// each, which every `docker load` accepts, the classic store included.
	dockerTars map[string]string
}

func outputPaths(dir string, platforms []string) outputs {
	o := outputs{
		layoutDir:  filepath.Join(dir, "kvinject-oci"),
		ociTar:     filepath.Join(dir, "kvinject-oci.tar"),
		dockerTars: map[string]string{},
	}
	for _, p := range platforms {
		o.dockerTars[p] = filepath.Join(dir, "kvinject-"+strings.ReplaceAll(p, "/", "-")+".tar")
	}
	return o
}

// write stores idx in every output format, tagged as tag.
func write(idx v1.ImageIndex, tag name.Tag, o outputs) error {
	if err := os.RemoveAll(o.layoutDir); err != nil {
		return err
	}
	lp, err := layout.Write(o.layoutDir, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", o.layoutDir, err)
	}
	// Docker's `docker save` writes the same two annotations, and
	// `docker load` reads them back to tag the image.
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.Name(),
	})); err != nil {
		return fmt.Errorf("OCI layout %s: %w", o.layoutDir, err)
	}
	if err := tarDir(o.layoutDir, o.ociTar); err != nil {
		return fmt.Errorf("OCI archive %s: %w", o.ociTar, err)
	}

	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		path, ok := o.dockerTars[d.Platform.String()]
		if !ok {
			return fmt.Errorf("no output path for platform %s", d.Platform)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		if err := tarball.WriteToFile(path, tag, img); err != nil {
			return fmt.Errorf("docker archive %s: %w", path, err)
		}
	}
	return nil
}

// tarDir archives dir with sorted entries, fixed modes and zero mtimes, so
// the archive's bytes depend only on the layout's content.
func tarDir(dir, dst string) (err error) {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	// WalkDir visits entries in lexical order.
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if d.IsDir() {
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
			return tw.WriteHeader(h)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
