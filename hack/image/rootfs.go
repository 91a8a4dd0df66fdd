package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

const (
	// binaryPath is where the injector and the manifests expect the binary.
	binaryPath = "/kvinject"
	// agentPath is where the injector runs the agent (injector.AgentBinary).
	agentPath = "/kvinject-agent"
	// caBundlePath is the first file Go's crypto/x509 reads on Linux, and
	// what curl/openssl-based debug tools look at too.
	caBundlePath = "/etc/ssl/certs/ca-certificates.crt"
	// nonroot is the user the image runs as, the same UID/GID distroless uses.
	nonrootUID = 65532
	imageUser  = "65532:65532"
	rootsMod   = "golang.org/x/crypto/x509roots/fallback"
)

// entry is one file or directory of the image's single layer.
type entry struct {
	path string // absolute, as it appears in the container
	mode int64  // permission bits
	dir  bool
	data []byte
}

// passwd and group give UID/GID 65532 a name so `id`, `ps` and `ls -l` in a
// debug container show "nonroot". Home is "/" because the image has no /home;
// the shell field is conventional, the image has no shell at all.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nonroot:x:65532:\n"
)

// rootfs lists everything in the image, parents before children, sorted.
// Nothing else goes in: no shell, no package manager, no /tmp (the agent
// writes only to its in-memory volume and the root filesystem is read-only).
func rootfs(binary, agent []byte) []entry {
	return []entry{
		{path: "/etc", mode: 0o755, dir: true},
		{path: "/etc/group", mode: 0o644, data: []byte(group)},
		{path: "/etc/passwd", mode: 0o644, data: []byte(passwd)},
		{path: "/etc/ssl", mode: 0o755, dir: true},
		{path: "/etc/ssl/certs", mode: 0o755, dir: true},
		{path: caBundlePath, mode: 0o644, data: caBundle()},
		{path: binaryPath, mode: 0o755, data: binary},
		{path: agentPath, mode: 0o755, data: agent},
	}
}

// caBundle renders the Mozilla NSS roots that golang.org/x/crypto ships as a
// pinned Go module, so the bundle is fixed by go.sum instead of by whatever
// Debian package the build machine happens to have. Roots that NSS trusts only
// with an extra constraint (a distrust-after date) are left out: a PEM file
// cannot carry the constraint, and trusting them fully would be wider than
// NSS itself.
func caBundle() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Mozilla NSS trusted roots from %s@%s, constrained roots omitted.\n", rootsMod, moduleVersion(rootsMod))
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Certificate})
	}
	return b.Bytes()
}

// moduleVersion reports the version of a dependency compiled into this
// program, so the bundle header names exactly what it came from.
func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, m := range info.Deps {
		if m.Path == path {
			if m.Replace != nil {
				return m.Replace.Version
			}
			return m.Version
		}
	}
	return "unknown"
}

// writeTar writes the entries as a tar stream with fixed owners and mtimes,
// so the same inputs always give the same layer digest.
func writeTar(w *tar.Writer, entries []entry, mtime time.Time) error {
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.path[1:],
			Mode:    e.mode,
			ModTime: mtime,
			Uname:   "root",
			Gname:   "root",
			Format:  tar.FormatUSTAR,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := w.WriteHeader(h); err != nil {
			return fmt.Errorf("tar header %s: %w", e.path, err)
		}
		if _, err := w.Write(e.data); err != nil {
			return fmt.Errorf("tar %s: %w", e.path, err)
		}
	}
	return w.Close()
}

// writeRootfs writes the entries into dir (for the Dockerfile, which copies
// the result onto scratch so both build paths ship the same files).
func writeRootfs(dir string, entries []entry) error {
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.path))
		if e.dir {
			if err := os.MkdirAll(p, os.FileMode(e.mode)); err != nil {
				return fmt.Errorf("rootfs %s: %w", e.path, err)
			}
			continue
		}
		if err := os.WriteFile(p, e.data, os.FileMode(e.mode)); err != nil {
			return fmt.Errorf("rootfs %s: %w", e.path, err)
		}
		// WriteFile honours the umask; the image needs the exact mode.
		if err := os.Chmod(p, os.FileMode(e.mode)); err != nil {
			return fmt.Errorf("rootfs %s: %w", e.path, err)
		}
	}
	return nil
}
