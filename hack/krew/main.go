// Command krew writes the kubectl plugin's release archives and its krew
// manifest; `make release VERSION=vX.Y.Z` runs it after `make image`.
//
//  1. For each -binary OS/ARCH=PATH, write kvinject_<version>_<os>_<arch>.tar.gz
//     holding the binary as kubectl-kvinject (the name kubectl finds a
//     plugin by, and the one the binary reads from argv[0]) and LICENSE.
//     Entries are owned by root with the -created time, so the same inputs
//     give the same bytes.
//  2. Render the manifest template (-template, hack/krew/kvinject.yaml)
//     with the version and each archive's sha256 into kvinject.yaml.
//
// The archives go on the GitHub release as the manifest's uri says; the
// manifest goes to a krew index (or kubectl krew install --manifest).
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"
)

// Platform is one archive of the manifest.
type Platform struct {
	OS, Arch, Archive, SHA256 string
}

type binaries map[string]string

func (b binaries) String() string { return fmt.Sprint(map[string]string(b)) }
func (b binaries) Set(v string) error {
	p, path, ok := strings.Cut(v, "=")
	if !ok || strings.Count(p, "/") != 1 || path == "" {
		return fmt.Errorf("%q is not OS/ARCH=PATH", v)
	}
	b[p] = path
	return nil
}

var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

func main() {
	bins := binaries{}
	version := flag.String("version", "", "release version, vX.Y.Z (required)")
	tmpl := flag.String("template", "hack/krew/kvinject.yaml", "manifest template")
	license := flag.String("license", "LICENSE", "license file put in each archive")
	created := flag.Int64("created", 0, "file times in the archives, seconds since the epoch (SOURCE_DATE_EPOCH)")
	out := flag.String("out", "_out/release/krew", "output directory")
	flag.Var(bins, "binary", "OS/ARCH=PATH of a kvinject binary (repeatable)")
	flag.Parse()
	if err := run(*version, *tmpl, *license, *out, time.Unix(*created, 0).UTC(), bins); err != nil {
		fmt.Fprintln(os.Stderr, "krew:", err)
		os.Exit(1)
	}
}

func run(version, tmplPath, licensePath, out string, created time.Time, bins binaries) error {
	if !semver.MatchString(version) {
		return fmt.Errorf("-version %q is not vX.Y.Z", version)
	}
	if len(bins) == 0 {
		return fmt.Errorf("no -binary")
	}
	license, err := os.ReadFile(licensePath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var platforms []Platform
	for p, path := range bins {
		osName, arch, _ := strings.Cut(p, "/")
		bin, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		archive, err := tarball(created, map[string][]byte{"kubectl-kvinject": bin, "LICENSE": license})
		if err != nil {
			return err
		}
		name := fmt.Sprintf("kvinject_%s_%s_%s.tar.gz", version, osName, arch)
		if err := os.WriteFile(filepath.Join(out, name), archive, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(archive)
		platforms = append(platforms, Platform{OS: osName, Arch: arch, Archive: name, SHA256: hex.EncodeToString(sum[:])})
	}
	sort.Slice(platforms, func(i, j int) bool { return platforms[i].OS+platforms[i].Arch < platforms[j].OS+platforms[j].Arch })
	t, err := template.ParseFiles(tmplPath)
	if err != nil {
		return err
	}
	var manifest bytes.Buffer
	if err := t.Execute(&manifest, struct {
		Version   string
		Platforms []Platform
	}{version, platforms}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "kvinject.yaml"), manifest.Bytes(), 0o644)
}

// tarball is a gzipped tar of files in name order, executable for the binary.
func tarball(created time.Time, files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := int64(0o644)
		if n == "kubectl-kvinject" {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), ModTime: created,
			Typeflag: tar.TypeReg, Format: tar.FormatPAX, Uname: "root", Gname: "root"}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
