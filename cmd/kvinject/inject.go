package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/offline"
	"github.com/kvinject/kvinject/webhook"
)

// injectUsage is a format: %[1]s is the command name ("kvinject", or
// "kubectl kvinject" as a kubectl plugin).
const injectUsage = `Usage: %[1]s inject -f FILE|- [flags]

Shows offline what the webhook does: reads multi-document YAML (or a List, as
kubectl get -o yaml prints), injects every Pod and pod template (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) that has
kvinject.io/inject: "true", and writes all documents to stdout. Other documents pass through byte for byte. Warnings go to stderr.

It takes exactly the webhook's defaults flags, with the same KVINJECT_*
environment twins, so env $(cat webhook.env) %[1]s inject -f app.yaml gives
what the webhook gives. --sa-client-id and --sa-tenant-id stand in for the
workload's ServiceAccount annotations (azure.workload.identity/client-id,
tenant-id) when the input has no such ServiceAccount. The webhook reads its
API server's version and feature gates; offline, --server-version and
--server-feature-gates say them (default: the newest release kvinject is
tested on, its default gates). They decide only whether a pod with
kvinject.io/env-* or kvinject.io/on-change: restart is denied, never what an
injected pod looks like.

Exit codes: 0 written; 1 a document is invalid (nothing is written, stderr
names each document and annotation); 2 usage error or unreadable input.

Flags:
`

// injectOptions are the flags of kvinject inject.
type injectOptions struct {
	file      string
	clientID  string
	tenantID  string
	namespace string
	defaults  injector.Defaults
}

func runInject(ctx context.Context, name string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o injectOptions
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, injectUsage, name)
		fs.PrintDefaults()
	}
	// The webhook's table of defaults flags, and its environment twins.
	defaults := webhook.BindDefaultsFlags(fs)
	fs.VisitAll(func(fl *flag.Flag) { fl.Usage += " [$" + webhook.EnvName(fl.Name) + "]" })
	fs.StringVar(&o.file, "f", "", "manifest file, or - for stdin (required)")
	fs.StringVar(&o.clientID, "sa-client-id", "", "client ID, as if on the ServiceAccount (azure.workload.identity/client-id)")
	fs.StringVar(&o.tenantID, "sa-tenant-id", "", "tenant ID, as if on the ServiceAccount (azure.workload.identity/tenant-id)")
	fs.StringVar(&o.namespace, "namespace", "", "namespace of documents that name none")
	server := offline.BindServerFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := webhook.ApplyEnv(fs); err != nil {
		fmt.Fprintf(stderr, "%s inject: %v\n", name, err)
		return 2
	}
	if o.file == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s inject: give one input with -f FILE or -f - for stdin\n", name)
		fs.Usage()
		return 2
	}
	if fs.Lookup("agent-image").Value.String() == "" {
		// Offline, the image of this build stands in for the webhook's own.
		_ = fs.Set("agent-image", "ghcr.io/kvinject/kvinject:"+version)
	}
	srv, err := server.Server()
	if err != nil {
		fmt.Fprintf(stderr, "%s inject: %v (or %s)\n", name, err, webhook.EnvName("server-version"))
		return 2
	}
	d, err := defaults.Defaults()
	if err != nil {
		fmt.Fprintf(stderr, "%s inject: %v\n", name, err)
		return 2
	}
	o.defaults = d
	o.defaults.Server = srv

	var in []byte
	if o.file == "-" {
		in, err = io.ReadAll(stdin)
	} else {
		in, err = os.ReadFile(o.file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s inject: read input: %v\n", name, err)
		return 2
	}
	out, warnings, problems := offline.Documents(in, offline.Options{
		ClientID: o.clientID, TenantID: o.tenantID, Namespace: o.namespace, Defaults: o.defaults})
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning: "+w)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "error: "+p)
		}
		if hasMissingIdentity(problems) {
			fmt.Fprintln(stderr, "hint: offline, --sa-client-id and --sa-tenant-id stand in for the ServiceAccount's annotations")
		}
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintf(stderr, "%s inject: write output: %v\n", name, err)
		return 1
	}
	return 0
}

func hasMissingIdentity(problems []string) bool {
	for _, p := range problems {
		if strings.Contains(p, "no client ID") || strings.Contains(p, "no tenant ID") {
			return true
		}
	}
	return false
}
