package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"debug/elf"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// elfMachines are the platforms the image supports and what their binaries
// must be built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// checkBinary rejects a binary that would not start in the image: wrong
// architecture, or dynamically linked (the image has no libc and no loader).
func checkBinary(b []byte, plat *v1.Platform) error {
	if plat.OS != "linux" {
		return fmt.Errorf("OS %q: only linux images are built", plat.OS)
	}
	want, ok := elfMachines[plat.Architecture]
	if !ok {
		return fmt.Errorf("architecture %q: supported are %s", plat.Architecture, strings.Join(slices.Sorted(maps.Keys(elfMachines)), ", "))
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF executable (build with GOOS=linux): %w", err)
	}
	if f.Machine != want {
		return fmt.Errorf("built for %s, want %s (set GOARCH=%s)", f.Machine, want, plat.Architecture)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return errors.New("dynamically linked; the image has no libc: build with CGO_ENABLED=0")
		}
	}
	return nil
}

// layerFiles is the complete content of the image: anything more is a
// regression (a shell, a package database, a stray temp file).
var layerFiles = []string{
	"etc/",
	"etc/group",
	"etc/passwd",
	"etc/ssl/",
	"etc/ssl/certs/",
	"etc/ssl/certs/ca-certificates.crt",
	"kvinject",
	"kvinject-agent",
}

// verify re-reads a written index the way a runtime would and checks every
// promise the image makes to users. make image runs it on its own output.
func verify(idx v1.ImageIndex, s spec) error {
	mt, err := idx.MediaType()
	if err != nil {
		return err
	}
	if mt != types.OCIImageIndex {
		return fmt.Errorf("index media type %s, want %s", mt, types.OCIImageIndex)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	var got []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			return fmt.Errorf("manifest %s has no platform", d.Digest)
		}
		p := d.Platform.String()
		got = append(got, p)
		img, err := idx.Image(d.Digest)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := verifyImage(img, d.Platform, s); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	slices.Sort(got)
	if want := s.platforms(); !slices.Equal(got, want) {
		return fmt.Errorf("platforms %v, want %v", got, want)
	}
	return nil
}

func verifyImage(img v1.Image, plat *v1.Platform, s spec) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	switch {
	case cf.OS != plat.OS || cf.Architecture != plat.Architecture:
		return fmt.Errorf("config says %s/%s", cf.OS, cf.Architecture)
	case !slices.Equal(cf.Config.Entrypoint, []string{binaryPath}):
		return fmt.Errorf("entrypoint %q, want [%q]", cf.Config.Entrypoint, binaryPath)
	case len(cf.Config.Cmd) != 0:
		return fmt.Errorf("cmd %q, want none", cf.Config.Cmd)
	case cf.Config.User != imageUser:
		return fmt.Errorf("user %q, want %q", cf.Config.User, imageUser)
	case !maps.Equal(cf.Config.Labels, s.labels()):
		return fmt.Errorf("labels %v, want %v", cf.Config.Labels, s.labels())
	case !cf.Created.Time.Equal(s.created):
		return fmt.Errorf("created %s, want %s", cf.Created.Time, s.created)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != 1 {
		return fmt.Errorf("%d layers, want 1", len(layers))
	}
	files, err := readLayer(layers[0])
	if err != nil {
		return err
	}
	if names := slices.Sorted(maps.Keys(files)); !slices.Equal(names, layerFiles) {
		return fmt.Errorf("layer holds %q, want exactly %q", names, layerFiles)
	}
	for name, f := range files {
		if f.hdr.Uid != 0 || f.hdr.Gid != 0 || f.hdr.Mode&^0o755 != 0 {
			return fmt.Errorf("%s: owner %d:%d mode %o, want root-owned, not writable by others, no setuid", name, f.hdr.Uid, f.hdr.Gid, f.hdr.Mode)
		}
	}
	if !bytes.Equal(files["kvinject"].data, s.binaries[plat.String()]) {
		return errors.New("kvinject differs from the binary given for this platform")
	}
	if err := checkBinary(files["kvinject"].data, plat); err != nil {
		return fmt.Errorf("kvinject: %w", err)
	}
	if !bytes.Equal(files["kvinject-agent"].data, s.agents[plat.String()]) {
		return errors.New("kvinject-agent differs from the agent binary given for this platform")
	}
	if err := checkBinary(files["kvinject-agent"].data, plat); err != nil {
		return fmt.Errorf("kvinject-agent: %w", err)
	}
	if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532:") ||
		!strings.Contains(string(files["etc/group"].data), "nonroot:x:65532:") {
		return errors.New("etc/passwd or etc/group lacks nonroot (65532)")
	}
	n, err := countCerts(files["etc/ssl/certs/ca-certificates.crt"].data)
	if err != nil {
		return fmt.Errorf("ca-certificates.crt: %w", err)
	}
	if n < 100 {
		return fmt.Errorf("ca-certificates.crt holds %d roots, expected the NSS set (over 100)", n)
	}
	return nil
}

type layerFile struct {
	hdr  *tar.Header
	data []byte
}

func readLayer(l v1.Layer) (map[string]layerFile, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read layer: %w", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read layer %s: %w", h.Name, err)
		}
		files[h.Name] = layerFile{hdr: h, data: data}
	}
}

// countCerts parses a PEM bundle the way crypto/x509 would and counts roots.
func countCerts(b []byte) (int, error) {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return n, nil
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return n, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
}
