package podrunner

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// KvinjectPackage is the import path of the kvinject binary.
const KvinjectPackage = "github.com/kvinject/kvinject/cmd/kvinject"

// Build builds the kvinject binary into dir and returns its path, for
// Options.Commands{"/kvinject": path}. It must run inside the module (tests
// and the demo do); the Go build cache makes repeated builds take seconds.
func Build(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "kvinject")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, KvinjectPackage)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("podrunner: go build %s: %w\n%s", KvinjectPackage, err, b)
	}
	return out, nil
}
