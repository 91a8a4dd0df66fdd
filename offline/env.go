package offline

import "io"

// Env is what an offline command (explain, grants, migrate) runs with: Name
// is how the binary names itself in usage texts ("kvinject", or "kubectl
// kvinject" as a kubectl plugin), Version its version, and its streams.
type Env struct {
	Name    string
	Version string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}
