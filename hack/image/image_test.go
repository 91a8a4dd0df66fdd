package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"debug/elf"
	"encoding/binary"
	"encoding/pem"
	"io"
	"io/fs"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kvinject/kvinject/injector"
)

// fakeELF returns the smallest file debug/elf reads as an executable for
// machine, with a PT_INTERP header when dynamic. The image code only looks at
// the header, so a real multi-megabyte link per test run buys nothing; make
// image runs the same checks on the real binaries.
func fakeELF(t *testing.T, machine elf.Machine, dynamic bool, payload string) []byte {
	t.Helper()
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: uint32(elf.EV_CURRENT),
		Ehsize: 64, Phentsize: 56, Shentsize: 64,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	progs := []elf.Prog64{{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X)}}
	if dynamic {
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP)})
	}
	h.Phoff, h.Phnum = 64, uint16(len(progs))
	if err := binary.Write(&b, binary.LittleEndian, h); err != nil {
		t.Fatal(err)
	}
	if err := binary.Write(&b, binary.LittleEndian, progs); err != nil {
		t.Fatal(err)
	}
	b.WriteString(payload)
	return b.Bytes()
}

const (
	testEpoch   = "1780000000" // 2026-05-28T20:26:40Z
	testCreated = "2026-05-28T20:26:40Z"
	testRepo    = "ghcr.io/kvinject/kvinject"
	testVersion = "v1.2.3"
	testRev     = "0123456789abcdef0123456789abcdef01234567"
)

// buildTestImage runs the command as make image does, with fake binaries.
func buildTestImage(t *testing.T, out string, bins map[string][]byte) error {
	t.Helper()
	dir := t.TempDir()
	args := []string{"-out", out, "-repo", testRepo, "-version", testVersion, "-revision", testRev, "-created", testEpoch}
	for _, p := range slices.Sorted(maps.Keys(bins)) {
		path := filepath.Join(dir, strings.ReplaceAll(p, "/", "_"))
		if err := os.WriteFile(path, bins[p], 0o755); err != nil {
			t.Fatal(err)
		}
		agent := path + "-agent"
		if err := os.WriteFile(agent, append(bins[p], " agent"...), 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-binary", p+"="+path, "-agent", p+"="+agent)
	}
	return run(args, io.Discard)
}

func testBinaries(t *testing.T) map[string][]byte {
	return map[string][]byte{
		"linux/amd64": fakeELF(t, elf.EM_X86_64, false, "amd64 kvinject"),
		"linux/arm64": fakeELF(t, elf.EM_AARCH64, false, "arm64 kvinject"),
	}
}

func TestImage(t *testing.T) {
	out := t.TempDir()
	bins := testBinaries(t)
	if err := buildTestImage(t, out, bins); err != nil {
		t.Fatal(err)
	}

	// The layout holds one entry, tagged the way `docker load` expects.
	l, err := layout.ImageIndexFromPath(filepath.Join(out, "kvinject-oci"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := l.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("layout has %d entries, want 1", len(top.Manifests))
	}
	if got := top.Manifests[0].Annotations["io.containerd.image.name"]; got != testRepo+":"+testVersion {
		t.Errorf("io.containerd.image.name = %q", got)
	}
	if got := top.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != testVersion {
		t.Errorf("org.opencontainers.image.ref.name = %q", got)
	}
	idx, err := l.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index media type %s", im.MediaType)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Fatalf("platforms %v, want %v", platforms, want)
	}

	for _, d := range im.Manifests {
		p := d.Platform.String()
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != d.Platform.Architecture || cf.OS != "linux" {
			t.Errorf("%s: config platform %s/%s", p, cf.OS, cf.Architecture)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{"/kvinject"}) || cf.Config.Cmd != nil {
			t.Errorf("%s: entrypoint %q cmd %q, want [/kvinject] and no cmd", p, cf.Config.Entrypoint, cf.Config.Cmd)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q", p, cf.Config.User)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   "https://github.com/kvinject/kvinject",
			"org.opencontainers.image.version":  testVersion,
			"org.opencontainers.image.revision": testRev,
			"org.opencontainers.image.created":  testCreated,
		} {
			if got := cf.Config.Labels[k]; got != want {
				t.Errorf("%s: label %s = %q, want %q", p, k, got, want)
			}
		}
		if got := cf.Created.UTC().Format("2006-01-02T15:04:05Z"); got != testCreated {
			t.Errorf("%s: created %s", p, got)
		}

		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: %d layers (%v), want 1", p, len(layers), err)
		}
		files, err := readLayer(layers[0])
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for n, f := range files {
			names = append(names, n)
			if f.hdr.ModTime.UTC().Format("2006-01-02T15:04:05Z") != testCreated || f.hdr.Uid != 0 || f.hdr.Gid != 0 {
				t.Errorf("%s: %s mtime %s owner %d:%d, want the build time and root", p, n, f.hdr.ModTime, f.hdr.Uid, f.hdr.Gid)
			}
		}
		slices.Sort(names)
		want := []string{"etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt", "kvinject", "kvinject-agent"}
		if !slices.Equal(names, want) {
			t.Errorf("%s: layer holds %q\nwant exactly %q", p, names, want)
		}
		if !bytes.Equal(files["kvinject"].data, bins[p]) || files["kvinject"].hdr.Mode != 0o755 {
			t.Errorf("%s: /kvinject is not the %s binary with mode 0755 (mode %o)", p, p, files["kvinject"].hdr.Mode)
		}
		if !strings.Contains(string(files["etc/passwd"].data), "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd has no nonroot user:\n%s", p, files["etc/passwd"].data)
		}
	}

	// Each docker archive holds the same image as the index (same config, so
	// the same image ID after docker load), tagged.
	for _, d := range im.Manifests {
		want, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(out, "kvinject-"+strings.ReplaceAll(d.Platform.String(), "/", "-")+".tar")
		tag, _ := name.NewTag(testRepo + ":" + testVersion)
		img, err := tarball.ImageFromPath(path, &tag)
		if err != nil {
			t.Fatalf("docker archive %s: %v", path, err)
		}
		if got, want := mustConfigName(t, img), mustConfigName(t, want); got != want {
			t.Errorf("%s holds image ID %s, index has %s", path, got, want)
		}
	}

	// The OCI archive is the layout as one tar.
	ociTar := readTar(t, filepath.Join(out, "kvinject-oci.tar"))
	layoutFiles := map[string][]byte{}
	filepath.WalkDir(filepath.Join(out, "kvinject-oci"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(filepath.Join(out, "kvinject-oci"), path)
			layoutFiles[filepath.ToSlash(rel)], _ = os.ReadFile(path)
		}
		return err
	})
	if len(ociTar) != len(layoutFiles) {
		t.Errorf("OCI archive has %d files, layout %d", len(ociTar), len(layoutFiles))
	}
	for n, b := range layoutFiles {
		if !bytes.Equal(ociTar[n], b) {
			t.Errorf("OCI archive %s differs from the layout", n)
		}
	}

	// What `crane push _out/kvinject-oci REF` does: read the layout, push the
	// index; then pull each platform back as a node would.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/kvinject/kvinject:"+testVersion, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("push: %v", err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
		if err != nil {
			t.Fatalf("pull linux/%s: %v", arch, err)
		}
		if cf, _ := img.ConfigFile(); cf.Architecture != arch {
			t.Errorf("pulled linux/%s, got %s", arch, cf.Architecture)
		}
	}

	// Same inputs, same bytes.
	again := t.TempDir()
	if err := buildTestImage(t, again, bins); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"kvinject-oci.tar", "kvinject-linux-amd64.tar", "kvinject-linux-arm64.tar"} {
		a, _ := os.ReadFile(filepath.Join(out, f))
		b, _ := os.ReadFile(filepath.Join(again, f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same inputs", f)
		}
	}
}

func TestRejectsBinariesThatWouldNotRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		bins map[string][]byte
		want string
	}{
		{"wrong arch", map[string][]byte{"linux/arm64": fakeELF(t, elf.EM_X86_64, false, "")}, "GOARCH=arm64"},
		{"dynamic", map[string][]byte{"linux/amd64": fakeELF(t, elf.EM_X86_64, true, "")}, "CGO_ENABLED=0"},
		{"not ELF", map[string][]byte{"linux/amd64": []byte("#!/bin/sh\n")}, "GOOS=linux"},
		{"unsupported platform", map[string][]byte{"linux/s390x": fakeELF(t, elf.EM_S390, false, "")}, "supported are amd64, arm64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := buildTestImage(t, t.TempDir(), tc.bins)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestCreatedIsRequired(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	bin := filepath.Join(t.TempDir(), "kvinject")
	os.WriteFile(bin, fakeELF(t, elf.EM_X86_64, false, ""), 0o755)
	err := run([]string{"-out", t.TempDir(), "-binary", "linux/amd64=" + bin, "-agent", "linux/amd64=" + bin}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Fatalf("err = %v, want one naming SOURCE_DATE_EPOCH", err)
	}
}

// The Dockerfile copies the -rootfs output onto scratch; it must be the
// same files with the same modes as the layer.
func TestRootfsMatchesLayer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kvinject")
	elfBin := fakeELF(t, elf.EM_AARCH64, false, "x")
	os.WriteFile(bin, elfBin, 0o700)
	dir := t.TempDir()
	if err := run([]string{"-rootfs", dir, "-binary", "linux/arm64=" + bin, "-agent", "linux/arm64=" + bin}, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, _ := d.Info()
		rel, _ := filepath.Rel(dir, path)
		got = append(got, filepath.ToSlash(rel)+" "+info.Mode().String())
		return nil
	})
	want := []string{
		"etc drwxr-xr-x", "etc/group -rw-r--r--", "etc/passwd -rw-r--r--", "etc/ssl drwxr-xr-x",
		"etc/ssl/certs drwxr-xr-x", "etc/ssl/certs/ca-certificates.crt -rw-r--r--", "kvinject -rwxr-xr-x", "kvinject-agent -rwxr-xr-x",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rootfs:\n%q\nwant\n%q", got, want)
	}
}

// Key Vault and Entra ID endpoints chain to these roots today; losing them
// would break every fetch.
func TestCABundleTrustsAzure(t *testing.T) {
	var subjects []string
	rest := caBundle()
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, c.Subject.CommonName)
	}
	for _, cn := range []string{"DigiCert Global Root G2", "Microsoft RSA Root Certificate Authority 2017", "Microsoft ECC Root Certificate Authority 2017"} {
		if !slices.Contains(subjects, cn) {
			t.Errorf("CA bundle lacks %q", cn)
		}
	}
}

func mustConfigName(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
}

// The runtime creates the agent's mount points inside this image's root
// filesystem; one that runs through a file (say /kvinject/secrets, while
// /kvinject is the binary) fails container creation with "not a directory".
func TestAgentMountPointsFitTheImage(t *testing.T) {
	files := map[string]bool{}
	for _, e := range rootfs(nil, nil) {
		files[e.path] = !e.dir
	}
	for _, mp := range []string{injector.AgentDir, injector.TokenDir, injector.CADir} {
		for p := mp; p != "/"; p = filepath.Dir(p) {
			if files[p] {
				t.Errorf("agent mount point %s runs through %s, which is a file in the image", mp, p)
			}
		}
	}
}
