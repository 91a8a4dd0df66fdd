package migrate

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kvinject/kvinject/offline"
	"github.com/kvinject/kvinject/webhook"
)

// Command runs `kvinject migrate` in its Env.
type Command offline.Env

const usage = `Usage: %[1]s migrate -f FILE... [-o DIR|-] [flags]

Rewrites workloads (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob, or a List) that mount Azure Key Vault objects through the Secrets
Store CSI driver for kvinject: the CSI volume and its mounts become
kvinject.io annotations (the class's objects, vault, identity, the same mount
path, the containers that mounted it), and variables from the Secrets the
driver syncs (secretObjects) become kvinject.io/env-<NAME>. The
SecretProviderClasses must be in the input; ServiceAccounts in it stand in
for the cluster's. Every migrated pod is checked with the webhook's defaults
flags (and their KVINJECT_* twins), as the webhook will admit it.

Documents it does not migrate are copied byte for byte. The report on stderr
lists what migrated, what did not and why, and the SecretProviderClasses and
Secrets to delete after the rollout.

Exit codes: 0 everything migrated (or --partial); 1 something could not
migrate (nothing is written without --partial); 2 usage error or unreadable
input.

Flags:
`

// files is the repeatable -f flag.
type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// Run runs the command with args and returns its exit code.
func (c Command) Run(args []string) int {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, usage, c.Name)
		fs.PrintDefaults()
	}
	defaults := webhook.BindDefaultsFlags(fs)
	server := offline.BindServerFlags(fs)
	fs.VisitAll(func(fl *flag.Flag) { fl.Usage += " [$" + webhook.EnvName(fl.Name) + "]" })
	var in files
	var o Options
	fs.Var(&in, "f", "manifest file, or - for stdin (repeatable; more files may follow the flags)")
	out := fs.String("o", "-", "output: - for stdout, or a directory to write each input file into under its base name")
	partial := fs.Bool("partial", false, "write the workloads that migrate and exit 0 even if others do not (they are copied unchanged)")
	fs.StringVar(&o.ClientID, "sa-client-id", "", "client ID, as if on the ServiceAccount (azure.workload.identity/client-id)")
	fs.StringVar(&o.TenantID, "sa-tenant-id", "", "tenant ID, as if on the ServiceAccount (azure.workload.identity/tenant-id)")
	fs.StringVar(&o.Namespace, "namespace", "default", "namespace of documents that name none")
	fs.StringVar(&o.Refresh, "rotation-poll-interval", "", "write kvinject.io/refresh with this interval on every migrated pod (the CSI driver's --rotation-poll-interval, if it runs with --enable-secret-rotation)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(c.Stderr, "migrate: %s\n", fmt.Sprintf(format, a...))
		return 2
	}
	if err := webhook.ApplyEnv(fs); err != nil {
		return fail("%v", err)
	}
	in = append(in, fs.Args()...)
	if len(in) == 0 {
		fs.Usage()
		return fail("give the input with -f FILE (repeatable) or -f - for stdin")
	}
	if o.Refresh != "" {
		if _, err := time.ParseDuration(o.Refresh); err != nil {
			return fail("--rotation-poll-interval %q is not a duration such as 2m", o.Refresh)
		}
	}
	if fs.Lookup("agent-image").Value.String() == "" {
		// The image does not change what migrates.
		_ = fs.Set("agent-image", "ghcr.io/kvinject/kvinject:"+c.Version)
	}
	d, err := defaults.Defaults()
	if err != nil {
		return fail("%v", err)
	}
	o.Defaults = d
	if o.Defaults.Server, err = server.Server(); err != nil {
		return fail("%v (or %s)", err, webhook.EnvName("server-version"))
	}

	var inputs []Input
	names := map[string]bool{}
	for _, f := range in {
		var b []byte
		name := f
		if f == "-" {
			name = "stdin.yaml"
			b, err = io.ReadAll(c.Stdin)
		} else {
			b, err = os.ReadFile(f)
		}
		if err != nil {
			return fail("read input: %v", err)
		}
		if *out != "-" && names[filepath.Base(name)] {
			return fail("-o %s: two inputs are named %s; give them different base names", *out, filepath.Base(name))
		}
		names[filepath.Base(name)] = true
		inputs = append(inputs, Input{Name: name, Data: b})
	}

	r := Run(inputs, o)
	if err := r.WriteReport(c.Stderr); err != nil {
		return 1
	}
	if len(r.Problems) > 0 {
		return 1
	}
	if !r.OK() && !*partial {
		fmt.Fprintln(c.Stderr, "migrate: nothing written; fix the workloads above, or give --partial to write those that migrate")
		return 1
	}
	if *out == "-" {
		for i, f := range r.Files {
			if i > 0 {
				sep := "---\n"
				if d := r.Files[i-1].Data; len(d) > 0 && d[len(d)-1] != '\n' {
					sep = "\n" + sep
				}
				fmt.Fprint(c.Stdout, sep)
			}
			if _, err := c.Stdout.Write(f.Data); err != nil {
				fmt.Fprintf(c.Stderr, "migrate: write output: %v\n", err)
				return 1
			}
		}
		return 0
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fail("-o: %v", err)
	}
	for i, f := range r.Files {
		p := filepath.Join(*out, filepath.Base(inputs[i].Name))
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			fmt.Fprintf(c.Stderr, "migrate: write output: %v\n", err)
			return 1
		}
	}
	return 0
}
