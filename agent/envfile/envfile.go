// Package envfile encodes environment variables in the format of the env
// files the kubelet reads for env[].valueFrom.fileKeyRef (KEP-3721, parsed by
// k8s.io/kubernetes pkg/kubelet/util/env ParseEnv).
//
// That format has no escaping: each variable is one NAME='value' entry, the
// value runs to the next single quote (newlines included), and lines are read
// with a bufio.Scanner of 64 KiB that drops a carriage return before each
// newline. So some values cannot be carried at all, and Encode refuses them
// rather than write a file that makes the kubelet fail the container with a
// parse error, or set a different value:
//
//  1. a value with a single quote (it would end the value early);
//  2. an empty value (the kubelet treats an empty quoted value as unset);
//  3. a value with a NUL byte (no process environment can hold one), or with
//     a carriage return before a newline (the scanner drops it);
//  4. an entry NAME='value' longer than MaxEntry bytes: one line of it would
//     overflow the kubelet's scanner, and one environment string past
//     128 KiB fails the container's exec.
//
// Errors name the variable and never hold the value.
package envfile

import (
	"bytes"
	"fmt"
	"strings"
)

// MaxEntry is the longest NAME='value' entry Encode writes: the longest line
// the kubelet's scanner reads (bufio.MaxScanTokenSize less the newline).
const MaxEntry = 64*1024 - 1

// Var is one variable to encode.
type Var struct {
	Name  string
	Value []byte
}

// Error is a variable whose value cannot be carried in an env file.
type Error struct {
	Name   string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("environment variable %q: %s", e.Name, e.Reason)
}

// Encode returns the env file holding vars, one entry each, in order. Names
// must be unique; the injector validates them as the API server validates
// fileKeyRef keys (apimachinery, which the agent binary does not link), and
// Encode only refuses a name that would break the file's syntax.
func Encode(vars []Var) ([]byte, error) {
	var buf bytes.Buffer
	seen := make(map[string]bool, len(vars))
	for _, v := range vars {
		if v.Name == "" || strings.ContainsAny(v.Name, "=\n\r\x00") || strings.ContainsAny(v.Name[:1], " \t#") {
			return nil, &Error{Name: v.Name, Reason: "the name is empty or holds a character the env file cannot carry"}
		}
		if seen[v.Name] {
			return nil, &Error{Name: v.Name, Reason: "appears twice"}
		}
		seen[v.Name] = true
		if reason := uncarriable(v); reason != "" {
			return nil, &Error{Name: v.Name, Reason: reason}
		}
		buf.WriteString(v.Name)
		buf.WriteString("='")
		buf.Write(v.Value)
		buf.WriteString("'\n")
	}
	return buf.Bytes(), nil
}

// uncarriable says why v cannot be written, or "".
func uncarriable(v Var) string {
	switch n := len(v.Name) + len(v.Value) + 3; {
	case len(v.Value) == 0:
		return "the value is empty, and the kubelet treats an empty value in an env file as unset"
	case bytes.IndexByte(v.Value, '\'') >= 0:
		return "the value contains a single quote ('), which the kubelet's env-file format cannot carry (it has no escaping)"
	case bytes.IndexByte(v.Value, 0) >= 0:
		return "the value contains a NUL byte, which no environment variable can hold"
	case bytes.Contains(v.Value, []byte("\r\n")):
		return "the value contains a carriage return before a newline, which the kubelet drops when it reads the env file"
	case n > MaxEntry:
		return fmt.Sprintf("the value is %d bytes; with its name it must fit in %d bytes, the longest line the kubelet reads", len(v.Value), MaxEntry)
	}
	return ""
}
