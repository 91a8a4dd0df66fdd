package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the user+system CPU time a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields are counted after
	// its closing parenthesis.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	// After ")": state is field 3, so utime (14) and stime (15) are at 11, 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// memory is a process's resident memory from /proc/<pid>/status, in KiB.
type memory struct {
	RSS, HWM, Anon, File int64
}

func readMemory(pid int) (memory, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	fields := map[string]*int64{"VmRSS:": &m.RSS, "VmHWM:": &m.HWM, "RssAnon:": &m.Anon, "RssFile:": &m.File}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) >= 2 {
			if p, ok := fields[parts[0]]; ok {
				*p, _ = strconv.ParseInt(parts[1], 10, 64)
			}
		}
	}
	return m, sc.Err()
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// machine describes where the figures were taken.
type machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpuModel"`
	Memory   string `json:"memory"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if out, err := exec.Command("nproc").Output(); err == nil {
		m.CPUs, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("free", "-h").Output(); err == nil {
		// The "Mem:" line: total used free shared buff/cache available.
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 7 && f[0] == "Mem:" {
				m.Memory = fmt.Sprintf("%s total, %s available", f[1], f[6])
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	return m
}

// loadAvg is the 1-minute load average: how busy the shared machine was.
func loadAvg() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// gnuTime is GNU time, which reports a child's peak RSS as its own: Go
// starts children with vfork, so the kernel's maxrss of a child Go started
// directly is at least the bench's own RSS at the time.
const gnuTime = "/usr/bin/time"

// timed returns the command that runs bin args under GNU time, writing the
// peak RSS (KiB) to out, or bin args itself when GNU time is missing.
func timed(ctx context.Context, out, bin string, args ...string) *exec.Cmd {
	if _, err := os.Stat(gnuTime); err != nil {
		return exec.CommandContext(ctx, bin, args...)
	}
	return exec.CommandContext(ctx, gnuTime, append([]string{"-f", "%M", "-o", out, bin}, args...)...)
}

// timedPeak reads what timed wrote: peak RSS in MiB, or 0.
func timedPeak(out string) float64 {
	b, err := os.ReadFile(out)
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	kib, _ := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	return mib(kib)
}
