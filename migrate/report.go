package migrate

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// WriteReport writes what migrated, what did not and why, and what to
// delete after the rollout, in input order.
func (r *Result) WriteReport(w io.Writer) error {
	b := bufio.NewWriter(w)
	for _, p := range r.Problems {
		fmt.Fprintf(b, "error: %s\n", p)
	}
	if len(r.Migrated) > 0 {
		fmt.Fprintf(b, "migrated (%d):\n", len(r.Migrated))
		for _, m := range r.Migrated {
			fmt.Fprintf(b, "  %s: %s\n", m.Name, m.Summary)
			for _, x := range m.Warnings {
				fmt.Fprintf(b, "    note: %s\n", x)
			}
		}
	}
	if len(r.NotMigrated) > 0 {
		fmt.Fprintf(b, "not migrated (%d):\n", len(r.NotMigrated))
		for _, m := range r.NotMigrated {
			if len(m.Classes) > 0 {
				fmt.Fprintf(b, "  %s (%s):\n", m.Name, strings.Join(m.Classes, ", "))
			} else {
				fmt.Fprintf(b, "  %s:\n", m.Name)
			}
			for _, x := range m.Reasons {
				fmt.Fprintf(b, "    - %s\n", x)
			}
		}
	}
	if len(r.Unused) > 0 {
		fmt.Fprintln(b, "delete after the rollout (no workload of the input needs them once the migrated pods run; check the cluster for others):")
		for _, x := range r.Unused {
			fmt.Fprintf(b, "  - %s\n", x)
		}
	}
	for _, x := range r.Notes {
		fmt.Fprintf(b, "note: %s\n", x)
	}
	if len(r.Migrated)+len(r.NotMigrated) == 0 && len(r.Problems) == 0 {
		fmt.Fprintln(b, "no workload in the input mounts a SecretProviderClass through the "+csiDriver+" driver")
	}
	return b.Flush()
}
