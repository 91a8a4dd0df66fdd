package grants

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/offline"
	"github.com/kvinject/kvinject/webhook"
)

// Command runs `kvinject explain` and `kvinject grants` in its Env.
type Command offline.Env

const explainUsage = `Usage: %[1]s explain -f FILE|- [flags]

Explains offline, for each workload of FILE that has kvinject.io/inject: "true"
(Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, or a List),
what the webhook gives it: the files and where the app sees them, the Key
Vault objects and vaults, the identity (client and tenant, and where each came
from), the role and scope each object needs, and the federated credential
subject. ServiceAccounts in FILE stand in for the cluster's.

It takes the webhook's defaults flags with their KVINJECT_* twins, as
%[1]s inject does, so env $(cat webhook.env) %[1]s explain gives what the
webhook does.

Exit codes: 0 explained; 1 a document is invalid or would be denied (stderr
names each); 2 usage error or unreadable input.

Flags:
`

const grantsUsage = `Usage: %[1]s grants -f FILE|- --subscription ID --resource-group RG --issuer URL [flags]

Writes the least-privilege Azure grants for the workloads of FILE: one role
assignment per object (or vault, with --scope vault) and identity, and one
federated credential per identity, ServiceAccount and cluster issuer, as an
az script, Terraform (azurerm) or Bicep, sorted, for review in a pull request.
Identities are user-assigned managed identities, named with --identity.
Workloads that sign in through AKS identity bindings (kvinject.io/identity-binding,
or --identity-binding) get no federated credentials and need no --issuer: the
output's comments say what each cluster needs instead.

Exit codes: 0 written; 1 a document is invalid or would be denied, or the
grants cannot be written in that format; 2 usage error or unreadable input.

Flags:
`

// pairs is a repeatable KEY=VALUE flag.
type pairs map[string]string

func (p pairs) String() string {
	var s []string
	for k, v := range p {
		s = append(s, k+"="+v)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (p pairs) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" || val == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	p[k] = val
	return nil
}

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// sharedFlags are the flags explain and grants share with kvinject inject.
type sharedFlags struct {
	fs                           *flag.FlagSet
	defaults                     *webhook.DefaultsFlags
	file, clientID, tenantID, ns string
	placement                    Options
	vaultGroups                  pairs
}

func (c Command) bind(name, usage string) *sharedFlags {
	o := &sharedFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError), vaultGroups: pairs{}}
	fs := o.fs
	fs.SetOutput(c.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(c.Stderr, usage, c.Name)
		fs.PrintDefaults()
	}
	o.defaults = webhook.BindDefaultsFlags(fs)
	fs.VisitAll(func(fl *flag.Flag) { fl.Usage += " [$" + webhook.EnvName(fl.Name) + "]" })
	fs.StringVar(&o.file, "f", "", "manifest file, or - for stdin (required)")
	fs.StringVar(&o.clientID, "sa-client-id", "", "client ID, as if on the ServiceAccount (azure.workload.identity/client-id)")
	fs.StringVar(&o.tenantID, "sa-tenant-id", "", "tenant ID, as if on the ServiceAccount (azure.workload.identity/tenant-id)")
	fs.StringVar(&o.ns, "namespace", "default", "namespace of documents that name none")
	fs.StringVar(&o.placement.Subscription, "subscription", "", "subscription ID of the vaults")
	fs.StringVar(&o.placement.ResourceGroup, "resource-group", "", "resource group of the vaults, and of the identities unless --identity-resource-group")
	fs.Var(o.vaultGroups, "vault-resource-group", "VAULT=RG: a vault in another resource group (repeatable)")
	return o
}

// parse parses args and reads the workloads; code is non-zero when the
// command should stop.
func (c Command) parse(o *sharedFlags, args []string) (ws []Workload, code int) {
	if err := o.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, -1
		}
		return nil, 2
	}
	fail := func(format string, a ...any) (ws []Workload, code int) {
		fmt.Fprintf(c.Stderr, "%s: %s\n", o.fs.Name(), fmt.Sprintf(format, a...))
		return nil, 2
	}
	if err := webhook.ApplyEnv(o.fs); err != nil {
		return fail("%v", err)
	}
	if o.file == "" || o.fs.NArg() > 0 {
		o.fs.Usage()
		return fail("give one input with -f FILE or -f - for stdin")
	}
	if o.fs.Lookup("agent-image").Value.String() == "" {
		// The image does not change what a workload needs.
		_ = o.fs.Set("agent-image", "ghcr.io/kvinject/kvinject:"+c.Version)
	}
	d, err := o.defaults.Defaults()
	if err != nil {
		return fail("%v", err)
	}
	o.placement.VaultResourceGroups = o.vaultGroups
	in := c.Stdin
	if o.file != "-" {
		f, err := os.Open(o.file)
		if err != nil {
			return fail("read input: %v", err)
		}
		defer f.Close()
		in = f
	}
	ws, problems, err := Read(in, ReadOptions{Namespace: o.ns, ClientID: o.clientID, TenantID: o.tenantID, Defaults: d})
	if err != nil {
		return fail("%v", err)
	}
	for _, w := range ws {
		for _, m := range w.Warnings {
			fmt.Fprintf(c.Stderr, "warning: %s: %s\n", w, m)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(c.Stderr, "error: "+p)
		}
		return nil, 1
	}
	if len(ws) == 0 {
		fmt.Fprintf(c.Stderr, "%s: no workload in the input has %s: \"true\"\n", o.fs.Name(), injector.AnnotationInject)
	}
	return ws, 0
}

// Explain runs `kvinject explain`.
func (c Command) Explain(args []string) int {
	o := c.bind("explain", explainUsage)
	output := o.fs.String("o", "text", "output: text or json")
	ws, code := c.parse(o, args)
	if code != 0 {
		return max(code, 0)
	}
	es := Explain(ws, o.placement)
	var err error
	switch *output {
	case "text":
		err = WriteText(c.Stdout, es)
	case "json":
		err = WriteJSON(c.Stdout, es)
	default:
		fmt.Fprintf(c.Stderr, "explain: -o %q is not text or json\n", *output)
		return 2
	}
	if err != nil {
		fmt.Fprintf(c.Stderr, "explain: write output: %v\n", err)
		return 1
	}
	return 0
}

// Grants runs `kvinject grants`.
func (c Command) Grants(args []string) int {
	o := c.bind("grants", grantsUsage)
	format := o.fs.String("format", "az", "output: "+strings.Join(Formats, ", "))
	azurerm := o.fs.Int("azurerm", 5, "major version of the Terraform azurerm provider, 4 or 5 (--format terraform)")
	o.fs.StringVar(&o.placement.Scope, "scope", ScopeObject, "role assignment scope: object (each secret, key or certificate: for shared vaults) or vault (for a vault per app)")
	o.fs.StringVar(&o.placement.IdentityResourceGroup, "identity-resource-group", "", "resource group of the managed identities (default --resource-group)")
	identities := pairs{}
	o.fs.Var(identities, "identity", "CLIENT_ID=NAME: the user-assigned managed identity with that client ID (repeatable)")
	var issuers list
	o.fs.Var(&issuers, "issuer", "OIDC issuer URL of a cluster the workloads run in (repeatable; az aks show --query oidcIssuerProfile.issuerUrl -o tsv)")
	ws, code := c.parse(o, args)
	if code != 0 {
		return max(code, 0)
	}
	if !contains(Formats, *format) {
		fmt.Fprintf(c.Stderr, "grants: --format %q is not one of %s\n", *format, strings.Join(Formats, ", "))
		return 2
	}
	for _, f := range []string{"subscription", "resource-group"} {
		if o.fs.Lookup(f).Value.String() == "" {
			fmt.Fprintf(c.Stderr, "grants: --%s is required\n", f)
			return 2
		}
	}
	o.placement.Identities, o.placement.Issuers = identities, issuers
	s, err := Derive(ws, o.placement)
	if err != nil {
		fmt.Fprintf(c.Stderr, "grants: %v\n", err)
		return 2
	}
	for _, m := range s.Warnings {
		fmt.Fprintln(c.Stderr, "warning: "+m)
	}
	if *azurerm != 4 && *azurerm != 5 {
		fmt.Fprintf(c.Stderr, "grants: --azurerm %d is not 4 or 5\n", *azurerm)
		return 2
	}
	if err := Render(c.Stdout, s, *format, RenderOptions{AzureRM: *azurerm}); err != nil {
		fmt.Fprintf(c.Stderr, "grants: %v\n", err)
		return 1
	}
	return 0
}
