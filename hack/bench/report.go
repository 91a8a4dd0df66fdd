package main

import (
	"fmt"
	"strings"
)

// markdown renders the results as the table docs/performance.md shows.
func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %d CPUs (`nproc`), %s, %s (`free -h`), Linux %s, %s.\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.Memory, r.Machine.Kernel, r.Machine.Go)
	fmt.Fprintf(&b, "Run: %s, `%s`, medians of %d repetitions (min–max in brackets), 1-min load average %.1f before, %.1f after.\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), r.Command, r.Reps, r.LoadBefore, r.LoadAfter)
	b.WriteString("| figure | target | kvinject | floor, same run | kvinject / floor (median of paired runs) |\n|---|---|---|---|---|\n")
	row := func(figure, target, value, floor, ratio string) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", figure, target, value, floor, ratio)
	}
	for _, g := range r.GoBench {
		lo, hi := minMax(g.NsPerOp)
		row(fmt.Sprintf("`%s` (go test -bench), µs/op", g.Name), "–",
			fmt.Sprintf("%.1f [%.1f–%.1f], %.0f B/op, %.0f allocs/op", median(g.NsPerOp)/1e3, lo/1e3, hi/1e3, g.BPerOp, g.Allocs), "–", "–")
	}
	if w := r.Webhook; w != nil {
		pick := func(s serverResults, f func(serverRun) float64) []float64 {
			var xs []float64
			for _, run := range s.Runs {
				xs = append(xs, f(run))
			}
			return xs
		}
		stat := func(s serverResults, f func(serverRun) float64, format string) (float64, string) {
			xs := pick(s, f)
			lo, hi := minMax(xs)
			m := median(xs)
			return m, fmt.Sprintf(format+" ["+format+"–"+format+"]", m, lo, hi)
		}
		type fig struct {
			name, target, format string
			f                    func(serverRun) float64
		}
		// Ratios pair each webhook run with the floor run next to it, so
		// the noise both saw cancels; the median of those is shown.
		pairedRatio := func(hook serverResults, f func(serverRun) float64) string {
			var rs []float64
			for i := range min(len(hook.Runs), len(w.Floor.Runs)) {
				if fl := f(w.Floor.Runs[i]); fl != 0 {
					rs = append(rs, f(hook.Runs[i])/fl)
				}
			}
			if len(rs) == 0 {
				return "–"
			}
			lo, hi := minMax(rs)
			return fmt.Sprintf("%.2f [%.2f–%.2f]", median(rs), lo, hi)
		}
		figs := []fig{
			{"webhook throughput at saturation, reviews/s (" + fmt.Sprint(w.Conns) + " connections)", "≥ 4,000", "%.0f", func(s serverRun) float64 { return s.Saturation.Throughput }},
			{"webhook p99 at saturation, ms", "–", "%.2f", func(s serverRun) float64 { return s.Saturation.P99 }},
			{fmt.Sprintf("webhook p50 at %.0f reviews/s, ms", w.Rate), "–", "%.2f", func(s serverRun) float64 { return s.Rate.P50 }},
			{fmt.Sprintf("webhook p99 at %.0f reviews/s, ms", w.Rate), "≤ 1.5 ms", "%.2f", func(s serverRun) float64 { return s.Rate.P99 }},
			{fmt.Sprintf("webhook p99.9 at %.0f reviews/s, ms", w.Rate), "–", "%.2f", func(s serverRun) float64 { return s.Rate.P999 }},
			{fmt.Sprintf("load generator's timer lateness at %.0f reviews/s (not in the latencies), p99 ms", w.Rate), "–", "%.2f", func(s serverRun) float64 { return s.Rate.SchedLagP99 }},
			{fmt.Sprintf("webhook CPU at %.0f reviews/s, %% of one core", w.Rate), "–", "%.1f", func(s serverRun) float64 { return s.RateCPU }},
			{"webhook CPU per review at saturation, µs", "–", "%.0f", func(s serverRun) float64 { return s.SatCPUPerReview }},
		}
		b.WriteString("| **the same pod again** (one body sent again and again; no cache, answered from scratch) | | | | |\n")
		for _, x := range figs {
			_, hs := stat(w.Webhook, x.f, x.format)
			_, fs := stat(w.Floor, x.f, x.format)
			row(x.name, x.target, hs, fs, pairedRatio(w.Webhook, x.f))
		}
		if d := w.Distinct; d != nil {
			fmt.Fprintf(&b, "| **a different pod every time** (`%s` replaced by a counter: every review answered from scratch) | | | | |\n", w.Vary)
			for _, x := range figs {
				_, hs := stat(*d, x.f, x.format)
				_, fs := stat(w.Floor, x.f, x.format)
				row(x.name, x.target, hs, fs, pairedRatio(*d, x.f))
			}
			if bl := w.Baseline; bl != nil {
				fmt.Fprintf(&b, "| **the baseline build** (`-baseline %s`, a different pod every time, interleaved with the runs above) | | | | |\n", w.BaselineBinary)
				for _, x := range figs {
					_, hs := stat(*bl, x.f, x.format)
					_, fs := stat(w.Floor, x.f, x.format)
					row(x.name, x.target, hs, fs, pairedRatio(*bl, x.f))
				}
			}
			b.WriteString("| **memory** (one webhook process, after all the runs above) | | | | |\n")
		}
		row("webhook RSS idle, 1 s after ready, MiB", "–", fmt.Sprintf("%.1f", w.Webhook.IdleRSSMiB), fmt.Sprintf("%.1f", w.Floor.IdleRSSMiB), ratio(w.Webhook.IdleRSSMiB, w.Floor.IdleRSSMiB))
		rss := func(s serverResults) string {
			return fmt.Sprintf("%.1f (peak %.1f; anon %.1f, file %.1f)", s.RSSMiB, s.HWMMiB, s.AnonMiB, s.FileMiB)
		}
		row("webhook RSS after the load runs (peak: start-up included), MiB", "≤ 30 MiB", rss(w.Webhook), rss(w.Floor), ratio(w.Webhook.RSSMiB, w.Floor.RSSMiB))
	}
	if a := r.Agent; a != nil {
		row("process start (`kvinject-agent version`), ms", "–", fmt.Sprintf("%.1f", a.ProcessStartMs), "–", "–")
		for _, ir := range a.Init {
			lo, hi := minMax(ir.Runs)
			m := median(ir.Runs)
			row(fmt.Sprintf("agent init, %d objects, %.0f ms latency, ms (requests: %d challenge, %d token, %d GET)", ir.Objects, ir.LatencyMs, ir.Challenges, ir.Tokens, ir.Gets),
				"≤ 1.5 × floor", fmt.Sprintf("%.1f [%.1f–%.1f]", m, lo, hi),
				fmt.Sprintf("%.1f (start + %d round trips)", ir.FloorMs, ir.Rounds), ratio(m, ir.FloorMs))
		}
		for _, ir := range a.Init {
			if ir.LatencyMs == 0 {
				row(fmt.Sprintf("agent init, %d objects: peak RSS MiB, CPU ms", ir.Objects), "–", fmt.Sprintf("%.1f, %.0f", ir.PeakRSSMiB, ir.CPUMs), "–", "–")
			}
		}
		id := a.Idle
		lo, hi := minMax(id.RSSMiB)
		row(fmt.Sprintf("idle sidecar RSS (%d objects, 1 s samples over %.0f s), MiB", id.Objects, id.Seconds), "≤ 10 MiB",
			fmt.Sprintf("%.1f [%.1f–%.1f]; anon %.1f, file %.1f; Go live heap %.0f MiB; peak %.1f", median(id.RSSMiB), lo, hi, id.AnonMiB, id.FileMiB, id.GoHeapMiB, id.PeakMiB), "–", "–")
		row(fmt.Sprintf("idle sidecar CPU over %.0f s, ms", id.Seconds), "–", fmt.Sprintf("%.0f (%.3f %% of a core)", id.CPUMs, 100*id.CPUMs/1000/id.Seconds), "–", "–")
		if len(a.Probe.RunsMs) > 0 {
			row("startup probe (`kvinject-agent probe`, 10 runs): peak RSS MiB; median ms", "≤ 12 MiB", fmt.Sprintf("%.1f; %.1f", a.Probe.PeakRSSMiB, median(a.Probe.RunsMs)), "–", "–")
		}
		if t := a.Ten; len(t.RSSMiB) > 0 {
			row("ten idle sidecars at once (4 objects each): RSS MiB, median [each]", "–", fmt.Sprintf("%.1f %s", median(t.RSSMiB), list(t.RSSMiB)), "–", "–")
			row("ten idle sidecars at once: PSS MiB (shared pages divided), median [each]", "≤ 10 MiB", fmt.Sprintf("%.1f %s", median(t.PSSMiB), list(t.PSSMiB)), "–", "–")
		}
		if st := a.Storm; len(st.RecoveryMs) > 0 {
			row(fmt.Sprintf("storm: %d agents × %d objects, %.0f s vault outage (503, no Retry-After): recovery after it, median / max, s", st.Agents, st.Objects, st.StormSeconds),
				"≤ 3 / ≤ 10", fmt.Sprintf("%.2f / %.2f", median(st.RecoveryMs)/1000, st.RecoveryMs[len(st.RecoveryMs)-1]/1000), "–", "–")
			row("storm: mean time between one agent's tries at one object, s", "≥ about 2", fmt.Sprintf("%.2f", st.MeanRetrySeconds), "–", "–")
		}
		if f := a.Fleet; len(f.PerSecond) > 0 {
			row(fmt.Sprintf("fleet: %d sidecars × %d objects, %.0f s refresh, started at once, %.0f s: 1-s peak / mean GETs from the 2nd cycle", f.Agents, f.Objects, f.RefreshSeconds, f.Seconds),
				"≤ 1.5", fmt.Sprintf("%.2f (GETs %d, tokens %d)", f.PeakOverMean, f.Gets, f.Tokens), "–", "–")
		}
	}
	if n := r.Node; n != nil {
		span := func(xs []float64) string {
			lo, hi := minMax(xs)
			return fmt.Sprintf("%.0f [%.0f–%.0f]", median(xs), lo, hi)
		}
		row(fmt.Sprintf("real node (kubelet %s): pod create → app Running, plain pod, ms (%d runs)", n.K8sVersion, len(n.PlainStartMs)), "–", span(n.PlainStartMs), "–", "–")
		row(fmt.Sprintf("real node: pod create → app Running, injected init-mode pod, ms (%d runs)", len(n.InjectedStartMs)), "–", span(n.InjectedStartMs),
			fmt.Sprintf("%.0f plain + %.0f the agent's fetch", median(n.PlainStartMs), median(n.AgentFetchMs)), ratio(median(n.InjectedStartMs), median(n.PlainStartMs)+median(n.AgentFetchMs)))
		row(fmt.Sprintf("real node: agent container working set (kubelet /metrics/resource, as kubectl top), %d sidecar pods, MiB", len(n.SidecarWorkingSetMiB)), "–", span1(n.SidecarWorkingSetMiB), "–", "–")
	}
	row("kvinject binary size (`-trimpath -ldflags='-s -w'`), MiB", "–", fmt.Sprintf("%.1f", float64(r.BinaryBytes)/(1<<20)), "–", "–")
	row("kvinject-agent binary size, MB (target ≤ 15)", "–", fmt.Sprintf("%.1f", float64(r.AgentBinaryBytes)/1e6), "–", "–")
	return b.String()
}

func span1(xs []float64) string {
	lo, hi := minMax(xs)
	return fmt.Sprintf("%.1f [%.1f–%.1f]", median(xs), lo, hi)
}

func list(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}
