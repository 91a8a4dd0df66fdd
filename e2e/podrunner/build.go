package podrunner

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// Packages of the two binaries of the kvinject image.
const (
	KvinjectPackage = "github.com/kvinject/kvinject/cmd/kvinject"
	AgentPackage    = "github.com/kvinject/kvinject/cmd/kvinject-agent"
)

// Binaries are the built binaries of the image: the webhook (and offline
// injector) and the agent, which podrunner runs as Options.Commands{"/kvinject-agent": Agent}.
type Binaries struct {
	Kvinject, Agent string
}

// Build builds both binaries into dir. It must run inside the module (tests
// and the demo do); the Go build cache makes repeated builds take seconds.
func Build(ctx context.Context, dir string) (Binaries, error) {
	b := Binaries{Kvinject: filepath.Join(dir, "kvinject"), Agent: filepath.Join(dir, "kvinject-agent")}
	for pkg, out := range map[string]string{KvinjectPackage: b.Kvinject, AgentPackage: b.Agent} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("podrunner: go build %s: %w\n%s", pkg, err, out)
		}
	}
	return b, nil
}
