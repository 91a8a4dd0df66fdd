package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// diffPatch returns the JSON patch (RFC 6902) that turns document a into
// document b. It is the webhook's one way to derive a patch: a is the pod as
// decoded from the review, b the injector's result, both encoded by
// encoding/json from corev1.Pod, so equal values have equal bytes and members
// come in the same order. The patch touches only what the injector changed,
// so a field this build does not know (a newer API server's, dropped by the
// decode on both sides) is never replaced or removed.
//
//  1. Values with equal bytes produce nothing; the patch is nil when a
//     equals b. An unchanged field costs one bytes.Equal.
//  2. Objects are diffed member by member (diffObject): a member only in b
//     is added, one only in a removed, one in both diffed by these steps.
//  3. Arrays of equal length are diffed element by element at each index.
//  4. An array that b extends is aligned (align): when every element of a
//     is kept in order, by equal bytes or an equal "name", the insertions
//     are added at their index and the kept elements diffed in place
//     (diffInserted). Any other array change replaces the array whole.
//  5. Any other change (a scalar, a type change) is one replace.
//
// Values are sliced out of a and b in place, never decoded; FuzzDiffPatch
// holds the result to the patch library's application of it.
func diffPatch(a, b []byte) ([]byte, error) {
	p := patchWriters.Get().(*patchWriter)
	defer p.release()
	if err := p.diff(nil, a, b); err != nil {
		return nil, err
	}
	return p.bytes(), nil
}

// patchWriter appends operations to a JSON array as they are found.
type patchWriter struct {
	buf []byte
	// Scratch stacks for the members, elements and matches of the objects
	// and arrays being diffed: each level appends its own and truncates
	// them when done, so a review allocates none of them once the pooled
	// writer has grown.
	members  []member
	elements [][]byte
	matched  []bool
	// path is podPatch's scratch JSON pointer.
	path []byte
}

var patchWriters = sync.Pool{New: func() any { return new(patchWriter) }}

// release returns p to the pool, keeping its scratch stacks (cleared of
// references to the documents) but not the patch, which the caller owns.
func (p *patchWriter) release() {
	clear(p.members)
	clear(p.elements)
	p.buf, p.members, p.elements, p.matched = nil, p.members[:0], p.elements[:0], p.matched[:0]
	if p.path == nil {
		p.path = make([]byte, 0, 256)
	}
	patchWriters.Put(p)
}

func (p *patchWriter) op(op string, path []byte, value []byte) {
	if len(p.buf) == 0 {
		// An injection's patch is a few kB (2.3 kB for review-web.json):
		// start there rather than doubling up from a few bytes.
		p.buf = make([]byte, 0, 4096)
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
	// am and bm stay valid when deeper levels grow the stack: they keep the
	// old backing array, and nothing writes below the current length.
	base := len(p.members)
	defer func() { p.members = p.members[:base] }()
	var err error
	if p.members, err = appendMembers(p.members, a); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	mid := len(p.members)
	if p.members, err = appendMembers(p.members, b); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	am, bm := p.members[base:mid:mid], p.members[mid:len(p.members):len(p.members)]
	mbase := len(p.matched)
	defer func() { p.matched = p.matched[:mbase] }()
	p.matched = slices.Grow(p.matched, len(am))[:mbase+len(am)]
	matched := p.matched[mbase:len(p.matched):len(p.matched)]
	clear(matched)
	// Both sides list members in the same order (struct field order, sorted
	// map keys), so a cursor finds most matches at once.
	cursor := 0
	for _, m := range bm {
		i := find(am, m.key, cursor)
		if i < 0 {
			p.op("add", appendPointer(path, m.key), m.value)
			continue
		}
		matched[i], cursor = true, i+1
		// Most members are unchanged: compare before building their path.
		if bytes.Equal(am[i].value, m.value) {
			continue
		}
		if err := p.diff(appendPointer(path, m.key), am[i].value, m.value); err != nil {
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
	base := len(p.elements)
	defer func() { p.elements = p.elements[:base] }()
	var err error
	if p.elements, err = appendElements(p.elements, a); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	mid := len(p.elements)
	if p.elements, err = appendElements(p.elements, b); err != nil {
		return fmt.Errorf("diff %q: %w", path, err)
	}
	as, bs := p.elements[base:mid:mid], p.elements[mid:len(p.elements):len(p.elements)]
	switch {
	case len(as) == len(bs):
		for i := range as {
			if bytes.Equal(as[i], bs[i]) {
				continue
			}
			if err := p.diff(appendIndex(path, i), as[i], bs[i]); err != nil {
				return err
			}
		}
		return nil
	case len(bs) > len(as):
		if at, ok := align(as, bs); ok {
			return p.diffInserted(path, as, bs, at)
		}
	}
	p.op("replace", path, b)
	return nil
}

// align finds where each element of as went in bs, when bs is as with
// elements inserted anywhere (the injector inserts its init container at
// index 0 and appends elsewhere) and some kept elements changed in place.
// An element is kept at the first later position holding the same bytes, or
// else an object with the same "name" (a container, a volume). at[i] is the
// index in bs of as[i].
func align(as, bs [][]byte) (at []int, ok bool) {
	at = make([]int, len(as))
	j := 0
	for i, a := range as {
		name := nameOf(a)
		for ; j < len(bs); j++ {
			if bytes.Equal(a, bs[j]) || name != nil && bytes.Equal(name, nameOf(bs[j])) {
				break
			}
		}
		if j == len(bs) {
			return nil, false
		}
		at[i] = j
		j++
	}
	return at, true
}

// nameOf is the raw "name" member of an object element, or nil.
func nameOf(v []byte) []byte {
	if len(v) == 0 || v[0] != '{' {
		return nil
	}
	ms, err := appendMembers(nil, v)
	if err != nil {
		return nil
	}
	for _, m := range ms {
		if string(m.key) == "name" {
			return m.value
		}
	}
	return nil
}

// diffInserted records the insertions into an array, then the changes to
// the kept elements.
//
//  1. Each element of bs that no element of as went to (align) is added at
//     its index in bs, in increasing order: once those adds are applied, the
//     array has bs's length and every kept element sits at its index in bs.
//  2. Each kept element is then diffed in place at that index, so a field
//     this build does not know, inside it or next to it, is never replaced.
func (p *patchWriter) diffInserted(path []byte, as, bs [][]byte, at []int) error {
	k := 0
	for j := range bs {
		if k < len(at) && at[k] == j {
			k++
			continue
		}
		p.op("add", appendIndex(path, j), bs[j])
	}
	for i, j := range at {
		if err := p.diff(appendIndex(path, j), as[i], bs[j]); err != nil {
			return err
		}
	}
	return nil
}

// member is one "key": value of an object. Both are sliced from the input
// unless the key has escapes (encoding/json writes them only for <, >, & and
// control characters), which are decoded into a copy.
type member struct {
	key   []byte
	value []byte
}

// find returns the index of key in ms, searching from start and wrapping.
func find(ms []member, key []byte, start int) int {
	for i := start; i < len(ms); i++ {
		if bytes.Equal(ms[i].key, key) {
			return i
		}
	}
	for i := 0; i < start && i < len(ms); i++ {
		if bytes.Equal(ms[i].key, key) {
			return i
		}
	}
	return -1
}

var errSyntax = errors.New("malformed JSON")

// appendMembers appends the members of a JSON object to out.
func appendMembers(out []member, obj []byte) ([]member, error) {
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
		if end, err = skipValue(obj, i); err != nil {
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

// appendElements appends the elements of a JSON array to out.
func appendElements(out [][]byte, arr []byte) ([][]byte, error) {
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
		// The closing quote is the first one not escaped, i.e. preceded by
		// an even number of backslashes.
		for j := i + 1; j < len(b); {
			k := bytes.IndexByte(b[j:], '"')
			if k < 0 {
				break
			}
			j += k
			n := 0
			for n < j-i-1 && b[j-1-n] == '\\' {
				n++
			}
			if n%2 == 0 {
				return j + 1, nil
			}
			j++
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
	for j < len(b) && !isDelimiter(b[j]) {
		j++
	}
	if j == i {
		return 0, errSyntax
	}
	return j, nil
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// unquote decodes a JSON string; the common case without escapes is a
// slice of s.
func unquote(s []byte) ([]byte, error) {
	if bytes.IndexByte(s, '\\') < 0 {
		return s[1 : len(s)-1], nil
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// appendPointer returns path extended by key, escaped per RFC 6901 (the "/"
// in annotation keys like kvinject.io/status becomes "~1"). It never
// modifies path's backing array, which sibling paths share.
func appendPointer(path []byte, key []byte) []byte {
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
