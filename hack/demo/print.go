package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// printer writes the demo's narrative: a header per step, indented lines,
// indented blocks of command output.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func newPrinter(w io.Writer) *printer { return &printer{w: w} }

// step prints a step header (n 0 is an unnumbered section) and why it matters.
func (p *printer) step(n int, title, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	head := title
	if n > 0 {
		head = fmt.Sprintf("Step %d/7: %s", n, title)
	}
	fmt.Fprintf(p.w, "\n==> %s\n", head)
	for _, l := range wrap(why, 76) {
		fmt.Fprintf(p.w, "    %s\n", l)
	}
	fmt.Fprintln(p.w)
}

// say prints one indented line.
func (p *printer) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "    "+format+"\n", args...)
}

// note prints a line outside of any step.
func (p *printer) note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "--- "+format+"\n", args...)
}

// block prints text indented under the current line.
func (p *printer) block(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if l == "" {
			fmt.Fprintln(p.w)
			continue
		}
		fmt.Fprintf(p.w, "      %s\n", l)
	}
}

// prefixWriter indents streamed output (hack/controlplane.sh's progress).
type prefixWriter struct {
	p   *printer
	buf []byte
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		w.p.block(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
