package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BuildImage builds a Go main package as a static linux binary and wraps it
// in a one-layer image (the binary at /<base name>, its entrypoint, run as
// uid:uid), written as a docker archive into dir; it returns the archive's
// path, for ImportImage. Module downloads must have happened before (the
// node's network namespace reaches nothing).
func BuildImage(ctx context.Context, dir, ref, pkg string, uid int) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	bin := filepath.Join(dir, path.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=readonly", "GOPROXY=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: path.Base(pkg), Mode: 0o555, Size: int64(len(b)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return "", err
	}
	if _, err := tw.Write(b); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	l, err := tarball.LayerFromReader(&layer)
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch()
	cf.Config = v1.Config{Entrypoint: []string{"/" + path.Base(pkg)}, User: strconv.Itoa(uid) + ":" + strconv.Itoa(uid)}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	out := filepath.Join(dir, strings.ReplaceAll(path.Base(pkg), "/", "-")+".tar")
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return "", fmt.Errorf("write %s: %w", out, err)
	}
	return out, nil
}

func goarch() string {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

// BuildAgentImage builds kvinject's image with `make image` in the
// repository at root, for this machine's platform only, tagged ref
// (repository:version), and returns the docker archive's path in dir.
func BuildAgentImage(ctx context.Context, root, dir, ref string) (string, error) {
	repo, version, ok := strings.Cut(ref, ":")
	if !ok {
		return "", fmt.Errorf("image reference %q has no tag", ref)
	}
	arch := goarch()
	cmd := exec.CommandContext(ctx, "make", "-C", root, "image", "IMAGE="+repo, "VERSION="+version,
		"IMAGE_PLATFORMS=linux/"+arch, "IMAGE_OUT="+dir)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make image: %w\n%s", err, out)
	}
	return filepath.Join(dir, "kvinject-linux-"+arch+".tar"), nil
}
