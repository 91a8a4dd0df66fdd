package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// diffPatch returns the JSON patch (RFC 6902) that turns document a into
// document b, both encoded by encoding/json from the same Go type, so equal
// values have equal bytes and members come in the same order.
//
// It descends only into values whose bytes differ: an unchanged field costs
// one bytes.Equal and is never touched by the patch, which also keeps fields
// this build does not know about (a newer API server's) intact. Arrays are
// diffed element by element when their length is kept, as appends when b
// extends a, and replaced whole otherwise. Values are sliced out of a and b
// in place, never decoded. The result is nil when a equals b.
func diffPatch(a, b []byte) ([]byte, error) {
	var p patchWriter
	if err := p.diff(nil, a, b); err != nil {
		return nil, err
	}
	return p.bytes(), nil
}

// patchWriter appends operations to a JSON array as they are found.
type patchWriter struct {
	buf []byte
}

func (p *patchWriter) op(op string, path []byte, value []byte) {
	if len(p.buf) == 0 {
		p.buf = append(p.buf, '[')
	} else {
		p.buf = append(p.buf, ',')
	}
	p.buf = append(p.buf, `{"op":"`...)
	p.buf = append(p.buf, op...)
	p.buf = append(p.buf, `","path":`...)
	p.buf = appendString(p.buf, path)
	if value != nil {
		p.buf = append(p.buf, `,"value":`...)
		p.buf = append(p.buf, value...)
	}
	p.buf = append(p.buf, '}')
}

func (p *patchWriter) bytes() []byte {
	if len(p.buf) == 0 {
		return nil
	}
	return append(p.buf, ']')
}

// diff records the operations turning a into b at path, a JSON pointer.
func (p *patchWriter) diff(path []byte, a, b []byte) error {
	if bytes.Equal(a, b) {
		return nil
	}
	if len(a) == 0 || len(b) == 0 {
		return fmt.Errorf("diff %q: %w", path, errSyntax)
	}
	switch {
	case a[0] == '{' && b[0] == '{':
		return p.diffObject(path, a, b)
	case a[0] == '[' && b[0] == '[':
		return p.diffArray(path, a, b)
	}
	p.op("replace", path, b)
	return nil
}

func (p *patchWriter) diffObject(path []byte, a, b []byte) error {
	am, err := members(a)
	if err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	bm, err := members(b)
	if err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	// Both sides list members in the same order (struct field order, sorted
	// map keys), so a cursor finds most matches at once.
	cursor := 0
	matched := make([]bool, len(am))
	for _, m := range bm {
		i := find(am, m.key, cursor)
		p2 := appendPointer(path, m.key)
		if i < 0 {
			p.op("add", p2, m.value)
			continue
		}
		matched[i], cursor = true, i+1
		if err := p.diff(p2, am[i].value, m.value); err != nil {
			return err
		}
	}
	for i, m := range am {
		if !matched[i] {
			p.op("remove", appendPointer(path, m.key), nil)
		}
	}
	return nil
}

func (p *patchWriter) diffArray(path []byte, a, b []byte) error {
	as, err := elements(a)
	if err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	bs, err := elements(b)
	if err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	switch {
	case len(as) == len(bs):
		for i := range as {
			if err := p.diff(appendIndex(path, i), as[i], bs[i]); err != nil {
				return err
			}
		}
		return nil
	case len(bs) > len(as) && isPrefix(as, bs):
		for i := len(as); i < len(bs); i++ {
			p.op("add", appendIndex(path, i), bs[i])
		}
		return nil
	}
	p.op("replace", path, b)
	return nil
}

func isPrefix(as, bs [][]byte) bool {
	for i := range as {
		if !bytes.Equal(as[i], bs[i]) {
			return false
		}
	}
	return true
}

// member is one "key": value of an object, the value sliced from the input.
type member struct {
	key   string
	value []byte
}

// find returns the index of key in ms, searching from start and wrapping.
func find(ms []member, key string, start int) int {
	for i := start; i < len(ms); i++ {
		if ms[i].key == key {
			return i
		}
	}
	for i := 0; i < start && i < len(ms); i++ {
		if ms[i].key == key {
			return i
		}
	}
	return -1
}

var errSyntax = errors.New("malformed JSON")

// members splits a JSON object into its members.
func members(obj []byte) ([]member, error) {
	var out []member
	i := skipSpace(obj, 1)
	if i < len(obj) && obj[i] == '}' {
		return out, nil
	}
	for i < len(obj) {
		if obj[i] != '"' {
			return nil, errSyntax
		}
		end, err := skipValue(obj, i)
		if err != nil {
			return nil, err
		}
		key, err := unquote(obj[i:end])
		if err != nil {
			return nil, err
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return nil, errSyntax
		}
		i = skipSpace(obj, i+1)
		end, err = skipValue(obj, i)
		if err != nil {
			return nil, err
		}
		out = append(out, member{key: key, value: obj[i:end]})
		i = skipSpace(obj, end)
		if i >= len(obj) {
			break
		}
		if obj[i] == '}' {
			return out, nil
		}
		if obj[i] != ',' {
			return nil, errSyntax
		}
		i = skipSpace(obj, i+1)
	}
	return nil, errSyntax
}

// elements splits a JSON array into its elements.
func elements(arr []byte) ([][]byte, error) {
	var out [][]byte
	i := skipSpace(arr, 1)
	if i < len(arr) && arr[i] == ']' {
		return out, nil
	}
	for i < len(arr) {
		end, err := skipValue(arr, i)
		if err != nil {
			return nil, err
		}
		out = append(out, arr[i:end])
		i = skipSpace(arr, end)
		if i >= len(arr) {
			break
		}
		if arr[i] == ']' {
			return out, nil
		}
		if arr[i] != ',' {
			return nil, errSyntax
		}
		i = skipSpace(arr, i+1)
	}
	return nil, errSyntax
}

// skipValue returns the index just past the JSON value starting at b[i]. It
// trusts its input to come from encoding/json and checks only structure.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, nil
			}
		}
		return 0, errSyntax
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipValue(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	}
	// A number, true, false or null: up to the next delimiter.
	j := i
	for j < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[j])) {
		j++
	}
	if j == i {
		return 0, errSyntax
	}
	return j, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// unquote decodes a JSON string; the common case without escapes is a copy.
func unquote(s []byte) (string, error) {
	if bytes.IndexByte(s, '\\') < 0 {
		return string(s[1 : len(s)-1]), nil
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil {
		return "", err
	}
	return out, nil
}

// appendPointer returns path extended by key, escaped per RFC 6901 (the "/"
// in annotation keys like kvinject.io/status becomes "~1"). It never
// modifies path's backing array, which sibling paths share.
func appendPointer(path []byte, key string) []byte {
	out := make([]byte, 0, len(path)+1+len(key)+2)
	out = append(out, path...)
	out = append(out, '/')
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case '~':
			out = append(out, '~', '0')
		case '/':
			out = append(out, '~', '1')
		default:
			out = append(out, key[i])
		}
	}
	return out
}

func appendIndex(path []byte, i int) []byte {
	out := make([]byte, 0, len(path)+4)
	out = append(out, path...)
	out = append(out, '/')
	return strconv.AppendInt(out, int64(i), 10)
}

// appendString appends s as a JSON string.
func appendString(buf, s []byte) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
			i++
		case c < 0x20:
			buf = append(buf, `\u00`...)
			buf = append(buf, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			i++
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				buf = append(buf, `\ufffd`...)
			} else {
				buf = append(buf, s[i:i+size]...)
			}
			i += size
		}
	}
	return append(buf, '"')
}
