package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CertManagerVersion is the cert-manager release whose CRDs the e2e cluster
// installs (the one place this version is pinned).
const CertManagerVersion = "v1.21.2"

// CertManagerCRDDir returns the directory of cert-manager's CRD YAMLs
// (deploy/crds in the module zip: the controller-gen output the Helm chart is
// rendered from), fetching the pinned module into the Go module cache if it is
// not there yet. It does not touch the caller's go.mod.
func CertManagerCRDDir(ctx context.Context) (string, error) {
	mod := "github.com/cert-manager/cert-manager@" + CertManagerVersion
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Dir = os.TempDir() // outside any module
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GO111MODULE=on")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w: %s", mod, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: decode output: %w", mod, err)
	}
	if info.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, info.Error)
	}
	dir := filepath.Join(info.Dir, "deploy", "crds")
	if _, err := os.Stat(filepath.Join(dir, "cert-manager.io_certificates.yaml")); err != nil {
		return "", fmt.Errorf("cert-manager %s CRDs not where expected: %w", CertManagerVersion, err)
	}
	return dir, nil
}
