package injector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// patch records an injection as a JSON Patch (RFC 6902) while the injector
// makes it, so the webhook answers with exactly the changes made: nothing
// is derived afterwards by encoding the pod twice and comparing.
//
// Every change mutate, setFileGroup, setWarnings and reinvoked make to the
// pod goes through one of the functions below, which changes the pod and
// records the operation (a field kvinject creates whole, such as a missing
// securityContext, is set and then recorded with add):
//
//  1. An operation's path is taken from the pod as it is just before the
//     change, and operations apply in the order they were made, so a later
//     path sees earlier insertions exactly as the pod did.
//  2. Adding to an empty list adds the whole list: the API server encodes an
//     empty list as absent (or null), and "add" of a whole value works on
//     both. A non-empty list gets "add <list>/-" to append or "add
//     <list>/<i>" to insert, which leave its other elements alone.
//  3. Setting a map member adds the whole map when the map is empty, and
//     otherwise adds (or replaces) that one member; a member is removed
//     only when it is there. A change to the value already there records
//     nothing, so a pod that needs nothing gets no patch.
//  4. Values are encoded when recorded, so what a later change does to the
//     pod never alters an earlier operation.
//  5. No operation replaces anything kvinject did not build, so the fields
//     of a pod that this build does not know (a newer API server's) are
//     never touched: the API server applies the operations to its own
//     encoding of the pod.
//
// TestPatchTurnsInputIntoOutput and FuzzInject check, for every golden case
// and fuzzed pod, that applying the patch to the input's encoding gives the
// output's.
type patch struct {
	ops []patchOp
}

type patchOp struct {
	op, path string
	value    []byte // encoded; nil for "remove"
}

// bytes is the patch as the admission response carries it; nil when the
// injection changed nothing. The values are JSON already, so only each
// operation's fixed frame and its path are written here.
func (p *patch) bytes() []byte {
	if len(p.ops) == 0 {
		return nil
	}
	n := 2
	for _, o := range p.ops {
		n += len(`{"op":"","path":"","value":},`) + len(o.op) + 2*len(o.path) + len(o.value)
	}
	b := append(make([]byte, 0, n), '[')
	for i, o := range p.ops {
		if i > 0 {
			b = append(b, ',')
		}
		path, err := json.Marshal(o.path)
		if err != nil {
			panic(fmt.Sprintf("injector: encode patch path: %v", err)) // a string always encodes
		}
		b = append(b, `{"op":"`+o.op+`","path":`...)
		b = append(b, path...)
		if o.value != nil {
			b = append(b, `,"value":`...)
			b = append(b, o.value...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

func (p *patch) add(path string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only API types and strings are recorded.
		panic(fmt.Sprintf("injector: encode patch value at %s: %v", path, err))
	}
	p.ops = append(p.ops, patchOp{op: "add", path: path, value: b})
}

// appendTo appends vs to *list (at path).
func appendTo[T any](p *patch, path string, list *[]T, vs ...T) {
	if len(vs) == 0 {
		return
	}
	if len(*list) == 0 {
		p.add(path, vs)
	} else {
		for _, v := range vs {
			p.add(path+"/-", v)
		}
	}
	*list = append(*list, vs...)
}

// insertAt inserts v into *list (at path) at index i.
func insertAt[T any](p *patch, path string, list *[]T, i int, v T) {
	if len(*list) == 0 {
		p.add(path, []T{v})
	} else {
		p.add(path+"/"+strconv.Itoa(i), v)
	}
	*list = slices.Insert(*list, i, v)
}

// setMember sets (*m)[k] = v (the map at path).
func setMember(p *patch, path string, m *map[string]string, k, v string) {
	if old, ok := (*m)[k]; ok && old == v {
		return
	}
	if len(*m) == 0 {
		*m = map[string]string{k: v}
		p.add(path, *m)
		return
	}
	p.add(path+"/"+escapePointer(k), v)
	(*m)[k] = v
}

// removeMember deletes k from m (the map at path).
func removeMember(p *patch, path string, m map[string]string, k string) {
	if _, ok := m[k]; !ok {
		return
	}
	p.ops = append(p.ops, patchOp{op: "remove", path: path + "/" + escapePointer(k)})
	delete(m, k)
}

// setString sets *s = v (the string at path).
func setString(p *patch, path string, s *string, v string) {
	if *s == v {
		return
	}
	p.add(path, v)
	*s = v
}

// escapePointer escapes a JSON Pointer reference token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// containerPath is the path of the i-th container of a pod's list ("initContainers" or "containers").
func containerPath(list string, i int) string {
	return "/spec/" + list + "/" + strconv.Itoa(i)
}
