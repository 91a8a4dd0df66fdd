// Command image builds the kvinject container image without a container
// engine: one OCI index over linux/amd64 and linux/arm64 images, each a single
// reproducible layer holding the two static binaries (/kvinject, the webhook,
// and /kvinject-agent, the in-pod agent), a CA bundle and passwd/group
// entries for the non-root user. `make image` runs it; see docs/install.md.
//
//	go run ./hack/image -binary linux/amd64=PATH -agent linux/amd64=PATH \
//	    -binary linux/arm64=PATH -agent linux/arm64=PATH \
//	    -out _out -repo ghcr.io/kvinject/kvinject -version v0.1.0 \
//	    -revision $(git rev-parse HEAD) -created $(git log -1 --format=%ct)
//
// With -rootfs DIR it writes the same files into DIR instead, for the
// Dockerfile to copy onto scratch.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// binaryFlags collects repeated -binary PLATFORM=PATH flags.
type binaryFlags map[string]string

func (b binaryFlags) String() string { return fmt.Sprint(map[string]string(b)) }

func (b binaryFlags) Set(v string) error {
	p, path, ok := strings.Cut(v, "=")
	if !ok || path == "" {
		return fmt.Errorf("want PLATFORM=PATH, e.g. linux/amd64=_out/bin/linux_amd64/kvinject")
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil {
		return err
	}
	b[plat.String()] = path
	return nil
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	bins, agents := binaryFlags{}, binaryFlags{}
	fs.Var(bins, "binary", "PLATFORM=PATH of a static kvinject binary; repeat per platform")
	fs.Var(agents, "agent", "PLATFORM=PATH of a static kvinject-agent binary; one per -binary platform")
	out := fs.String("out", "_out", "directory for the OCI layout and the tarballs")
	rootfsDir := fs.String("rootfs", "", "write the image's files into this directory instead of building an image (needs exactly one -binary)")
	repo := fs.String("repo", "ghcr.io/kvinject/kvinject", "repository the tarballs are tagged with")
	version := fs.String("version", "dev", "version: the image tag and the org.opencontainers.image.version label")
	revision := fs.String("revision", "unknown", "source commit for the org.opencontainers.image.revision label")
	source := fs.String("source", "https://github.com/kvinject/kvinject", "source repository URL for the org.opencontainers.image.source label")
	created := fs.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "build time as Unix seconds (default $SOURCE_DATE_EPOCH); use the commit time for reproducible images")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	s := spec{binaries: map[string][]byte{}, agents: map[string][]byte{}, version: *version, revision: *revision, source: *source}
	for p, path := range bins {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("-binary %s: %w", p, err)
		}
		s.binaries[p] = b
	}
	for p, path := range agents {
		if bins[p] == "" {
			return fmt.Errorf("-agent %s: no -binary for that platform", p)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("-agent %s: %w", p, err)
		}
		s.agents[p] = b
	}
	for p := range bins {
		if agents[p] == "" {
			return fmt.Errorf("-binary %s: no -agent for that platform (the image holds both binaries)", p)
		}
	}

	if *rootfsDir != "" {
		ps := s.platforms()
		if len(ps) != 1 {
			return fmt.Errorf("-rootfs needs exactly one -binary, got %d", len(ps))
		}
		plat, err := v1.ParsePlatform(ps[0])
		if err != nil {
			return err
		}
		if err := checkBinary(s.binaries[ps[0]], plat); err != nil {
			return fmt.Errorf("-binary %s: %w", ps[0], err)
		}
		if err := checkBinary(s.agents[ps[0]], plat); err != nil {
			return fmt.Errorf("-agent %s: %w", ps[0], err)
		}
		return writeRootfs(*rootfsDir, rootfs(s.binaries[ps[0]], s.agents[ps[0]]))
	}

	if *created == "" {
		return fmt.Errorf("-created is empty: pass the commit time (git log -1 --format=%%ct) or set SOURCE_DATE_EPOCH, so the image is reproducible")
	}
	sec, err := strconv.ParseInt(*created, 10, 64)
	if err != nil {
		return fmt.Errorf("-created %q: want Unix seconds: %w", *created, err)
	}
	s.created = time.Unix(sec, 0).UTC()
	tag, err := name.NewTag(*repo + ":" + *version)
	if err != nil {
		return fmt.Errorf("-repo/-version: %q is not a valid image reference: %w", *repo+":"+*version, err)
	}

	idx, err := buildIndex(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	o := outputPaths(*out, s.platforms())
	if err := write(idx, tag, o); err != nil {
		return err
	}
	// Check what landed on disk, not what is in memory.
	written, err := readLayout(o.layoutDir)
	if err != nil {
		return err
	}
	if err := verify(written, s); err != nil {
		return fmt.Errorf("verify %s: %w", o.layoutDir, err)
	}
	digest, err := written.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s@%s\n  OCI layout:  %s\n  OCI archive: %s\n", tag, digest, o.layoutDir, o.ociTar)
	for _, p := range s.platforms() {
		fmt.Fprintf(stdout, "  %s: %s\n", p, o.dockerTars[p])
	}
	return nil
}

// readLayout opens the single index an OCI layout written by write holds.
func readLayout(dir string) (v1.ImageIndex, error) {
	l, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	im, err := l.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("%s holds %d entries, want 1 index", dir, len(im.Manifests))
	}
	return l.ImageIndex(im.Manifests[0].Digest)
}
