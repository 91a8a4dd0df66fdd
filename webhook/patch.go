package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

// diffPatch returns the JSON patch that turns document a into document b, both
// encoded by encoding/json from the same Go type, so equal values have equal
// bytes. It descends only into subtrees whose bytes differ: an unchanged field
// costs one bytes.Equal and is never touched by the patch, which keeps fields
// this build does not know about (a newer API server's) intact. Arrays are
// diffed element by element when their length is kept, as appends when b
// extends a, and replaced whole otherwise. The result is nil when a equals b.
func diffPatch(a, b []byte) ([]byte, error) {
	var ops []patchOp
	if err := diffValue(&ops, "", a, b); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return json.Marshal(ops)
}

func diffValue(ops *[]patchOp, path string, a, b json.RawMessage) error {
	if bytes.Equal(a, b) {
		return nil
	}
	switch {
	case kindOf(a) == '{' && kindOf(b) == '{':
		return diffObject(ops, path, a, b)
	case kindOf(a) == '[' && kindOf(b) == '[':
		return diffArray(ops, path, a, b)
	}
	*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
	return nil
}

func diffObject(ops *[]patchOp, path string, a, b json.RawMessage) error {
	var am, bm map[string]json.RawMessage
	if err := json.Unmarshal(a, &am); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	if err := json.Unmarshal(b, &bm); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	// Sorted keys make the patch deterministic, for tests and for audit.
	for _, k := range sortedKeys(bm) {
		p := path + "/" + escapePointer(k)
		av, ok := am[k]
		if !ok {
			*ops = append(*ops, patchOp{Op: "add", Path: p, Value: bm[k]})
			continue
		}
		if err := diffValue(ops, p, av, bm[k]); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(am) {
		if _, ok := bm[k]; !ok {
			*ops = append(*ops, patchOp{Op: "remove", Path: path + "/" + escapePointer(k)})
		}
	}
	return nil
}

func diffArray(ops *[]patchOp, path string, a, b json.RawMessage) error {
	var as, bs []json.RawMessage
	if err := json.Unmarshal(a, &as); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	if err := json.Unmarshal(b, &bs); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	switch {
	case len(as) == len(bs):
		for i := range as {
			if err := diffValue(ops, path+"/"+strconv.Itoa(i), as[i], bs[i]); err != nil {
				return err
			}
		}
		return nil
	case len(bs) > len(as) && isPrefix(as, bs):
		for i := len(as); i < len(bs); i++ {
			*ops = append(*ops, patchOp{Op: "add", Path: path + "/" + strconv.Itoa(i), Value: bs[i]})
		}
		return nil
	}
	*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
	return nil
}

func isPrefix(as, bs []json.RawMessage) bool {
	for i := range as {
		if !bytes.Equal(as[i], bs[i]) {
			return false
		}
	}
	return true
}

// kindOf returns the first byte of a compact JSON value: '{', '[', or another.
func kindOf(v json.RawMessage) byte {
	if len(v) == 0 {
		return 0
	}
	return v[0]
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// escapePointer escapes a key for a JSON pointer (RFC 6901), e.g. the "/" in
// annotation keys like kvinject.io/status.
func escapePointer(k string) string {
	if !strings.ContainsAny(k, "~/") {
		return k
	}
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
