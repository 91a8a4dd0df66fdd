// Command fleet runs many agents in one process for make bench (hack/bench):
// the 50-agent storm and the 100-sidecar fleet. Each agent is agent.Run with
// its own directory, its own credential and transport, as in its own pod;
// one process keeps a hundred of them cheap. The environment is one agent
// container's (KVINJECT_CONFIG, AZURE_*, SSL_CERT_FILE); -dir holds one
// directory per agent. It prints, per agent, one JSON line when its first
// fetch is done: {"agent": i, "doneUnixNano": t, "error": "..."}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
)

func main() {
	n := flag.Int("agents", 50, "agents to run")
	mode := flag.String("mode", "init", "init or sidecar")
	dir := flag.String("dir", "", "directory for one subdirectory per agent")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var base config.Config
	if err := json.Unmarshal([]byte(os.Getenv(config.EnvVar)), &base); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", config.EnvVar, err)
		os.Exit(2)
	}
	var (
		mu  sync.Mutex
		enc = json.NewEncoder(os.Stdout)
		wg  sync.WaitGroup
	)
	for i := range *n {
		c := base
		c.Dir = filepath.Join(*dir, strconv.Itoa(i))
		if err := os.MkdirAll(c.Dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "fleet:", err)
			os.Exit(1)
		}
		raw, _ := json.Marshal(c)
		getenv := func(k string) string {
			if k == config.EnvVar {
				return string(raw)
			}
			return os.Getenv(k)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			report := func(err error) {
				line := map[string]any{"agent": i, "doneUnixNano": time.Now().UnixNano()}
				if err != nil {
					line["error"] = err.Error()
				}
				mu.Lock()
				defer mu.Unlock()
				_ = enc.Encode(line)
			}
			if *mode == "sidecar" {
				go func() {
					// The first snapshot is the sidecar's first fetch done.
					for agent.Probe(c.Dir) != nil && ctx.Err() == nil {
						time.Sleep(5 * time.Millisecond)
					}
					report(nil)
				}()
			}
			err := agent.Run(ctx, agent.Options{
				Mode: agent.Mode(*mode), Getenv: getenv,
				TerminationLog: c.Dir + ".termination",
				Logger:         slog.New(slog.DiscardHandler),
			})
			if *mode == "init" {
				report(err)
			}
		}()
	}
	wg.Wait()
}
