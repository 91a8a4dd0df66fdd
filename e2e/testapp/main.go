// Command testapp is the application container of the real-node e2e tests
// and the demo (image built by the tests, run as a non-root user other than
// the agent's). It reports, as one JSON line on stdout prefixed with
// ReportPrefix, what a workload next to the agent sees: the files of its
// secrets volume (content, mode, group) as it reads them, whether it can
// write there, its identity and confinement from /proc/self/status, the
// volume's mount, any JSON web token its file system or environment holds
// (by audience), and the agents it can see when the pod shares its process
// namespace, and the environment variables named by -env (their values: test
// values only, the report goes to the pod's log). A new line whenever that
// view changes, checked every interval.
//
// With -hook it also serves POST /reload on that loopback address (an
// on-change hook) and reports the calls and what the files held at the last.
//
// Usage: testapp [-dir /mnt/secrets] [-env NAME,...] [-hook 127.0.0.1:8081] [-interval 1s] [-once]
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ReportPrefix starts every report line (the tests look for it in the log).
const ReportPrefix = "KVINJECT-APP "

type file struct {
	Content string `json:"content"`
	Mode    string `json:"mode"`
	GID     uint32 `json:"gid"`
}

type report struct {
	Files      map[string]file   `json:"files"`
	ReadErrors map[string]string `json:"readErrors,omitempty"`
	WriteError string            `json:"writeError"`
	Status     map[string]string `json:"status"`
	Mount      string            `json:"mount"`
	// Tokens maps each place holding a JWT to its audience.
	Tokens map[string]string `json:"tokens"`
	// Agents is /proc/<pid>/status of each other process whose command is a
	// kvinject binary (shareProcessNamespace pods only).
	Agents []map[string]string `json:"agents,omitempty"`
	// Env holds each variable named by -env that is set, by name.
	Env map[string]string `json:"env,omitempty"`
	// HookCalls counts POST /reload calls; HookSaw is the files' content at
	// the last one.
	HookCalls int               `json:"hookCalls,omitempty"`
	HookSaw   map[string]string `json:"hookSaw,omitempty"`
}

var (
	hookMu    sync.Mutex
	hookCalls int
	hookSaw   map[string]string
)

// serveHook answers POST /reload on addr, recording what the files hold.
func serveHook(addr, dir string) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		saw := map[string]string{}
		for name, f := range look(dir).Files {
			saw[name] = f.Content
		}
		hookMu.Lock()
		hookCalls, hookSaw = hookCalls+1, saw
		hookMu.Unlock()
	})
	go func() { fmt.Fprintln(os.Stderr, http.ListenAndServe(addr, mux)) }()
}

func main() {
	dir := flag.String("dir", "/mnt/secrets", "the secrets volume's mount path")
	interval := flag.Duration("interval", time.Second, "how often to look again")
	once := flag.Bool("once", false, "report once and exit 0 (a Job's container)")
	env := flag.String("env", "", "comma-separated names of environment variables to report")
	hook := flag.String("hook", "", "serve POST /reload on this address")
	flag.Parse()
	if *hook != "" {
		serveHook(*hook, *dir)
	}
	var last []byte
	for {
		r := look(*dir)
		if *env != "" {
			r.Env = map[string]string{}
			for _, name := range strings.Split(*env, ",") {
				if v, ok := os.LookupEnv(name); ok {
					r.Env[name] = v
				}
			}
		}
		hookMu.Lock()
		r.HookCalls, r.HookSaw = hookCalls, hookSaw
		hookMu.Unlock()
		b, _ := json.Marshal(r)
		if !bytes.Equal(b, last) {
			fmt.Printf("%s%s\n", ReportPrefix, b)
			last = b
		}
		if *once {
			return
		}
		time.Sleep(*interval)
	}
}

func look(dir string) report {
	r := report{Files: map[string]file{}, ReadErrors: map[string]string{}, Tokens: map[string]string{}}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			r.ReadErrors[e.Name()] = err.Error()
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		r.Files[e.Name()] = file{Content: string(b), Mode: fmt.Sprintf("%04o", fi.Mode().Perm()), GID: st.Gid}
	}
	if f, err := os.OpenFile(filepath.Join(dir, ".app-write-probe"), os.O_CREATE|os.O_WRONLY, 0o600); err != nil {
		r.WriteError = err.Error()
	} else {
		f.Close()
	}
	r.Status = status("/proc/self/status")
	r.Mount = mount(dir)
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if aud, ok := audience([]byte(v)); ok {
			r.Tokens["env:"+k] = aud
		}
	}
	_ = filepath.WalkDir("/", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (p == "/proc" || p == "/sys" || p == "/dev") {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<10 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil {
			if aud, ok := audience(b); ok {
				r.Tokens[p] = aud
			}
		}
		return nil
	})
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		b, err := os.ReadFile(c)
		if err != nil || !strings.Contains(filepath.Base(string(bytes.SplitN(b, []byte{0}, 2)[0])), "kvinject") {
			continue
		}
		r.Agents = append(r.Agents, status(filepath.Join(filepath.Dir(c), "status")))
	}
	return r
}

// status returns the identity and confinement lines of a /proc status file.
func status(path string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		switch k {
		case "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp":
			if ok {
				m[k] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return m
}

// mount returns "fstype options" of the mount at dir.
func mount(dir string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if ok && len(f) > 4 && f[4] == dir {
			p := strings.Fields(post)
			if len(p) >= 3 {
				return p[0] + " " + p[2] + " " + f[5]
			}
		}
	}
	return ""
}

// audience returns the "aud" of b if b is a JSON web token.
func audience(b []byte) (string, bool) {
	parts := strings.Split(strings.TrimSpace(string(b)), ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "eyJ") {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var claims struct {
		Aud any `json:"aud"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return "", false
	}
	var auds []string
	switch a := claims.Aud.(type) {
	case string:
		auds = []string{a}
	case []any:
		for _, x := range a {
			auds = append(auds, fmt.Sprint(x))
		}
	}
	sort.Strings(auds)
	return strings.Join(auds, ","), true
}
