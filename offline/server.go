package offline

import (
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"

	k8sversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kvinject/kvinject/injector"
)

// ServerFlags stand, offline, for the API server whose version and feature
// gates the webhook reads (injector.Server): kvinject inject and kvinject
// migrate judge kvinject.io/env-* and on-change: restart by them.
type ServerFlags struct {
	version string
	gates   gatesFlag
}

// BindServerFlags adds --server-version and --server-feature-gates to fs.
func BindServerFlags(fs *flag.FlagSet) *ServerFlags {
	f := &ServerFlags{}
	fs.StringVar(&f.version, "server-version", injector.Newest, "Kubernetes version of the API server to check kvinject.io/env-* and on-change: restart against (the webhook reads its server's)")
	fs.Var(&f.gates, "server-feature-gates", "the API server's feature gates that differ from its version's defaults, as kube-apiserver's --feature-gates, e.g. EnvFiles=false")
	return f
}

// Server is what the flags say, or an error naming --server-version.
func (f *ServerFlags) Server() (injector.Server, error) {
	if _, err := k8sversion.ParseGeneric(f.version); err != nil {
		return injector.Server{}, fmt.Errorf("--server-version: %q is not a Kubernetes version like %s", f.version, injector.Newest)
	}
	return injector.Server{Version: f.version, Gates: f.gates}, nil
}

// gatesFlag is a list of feature gates as kube-apiserver's --feature-gates
// takes it: Name=bool, comma-separated. (component-base's MapStringBool
// would link cobra into the binary for this.)
type gatesFlag map[string]bool

func (g *gatesFlag) String() string {
	var parts []string
	for k, v := range *g {
		parts = append(parts, k+"="+strconv.FormatBool(v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (g *gatesFlag) Set(value string) error {
	if *g == nil {
		*g = map[string]bool{}
	}
	for _, kv := range strings.Split(value, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		on, err := strconv.ParseBool(v)
		if !ok || k == "" || err != nil {
			return fmt.Errorf("%q is not Gate=true or Gate=false", kv)
		}
		(*g)[k] = on
	}
	return nil
}
