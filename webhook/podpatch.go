package webhook

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// podPatch derives the JSON patch from the two Go objects. It walks them
// as encoding/json would encode them, structs field by field and slices of
// structs element by element, compares in Go, and encodes only the values
// that differ (maps, scalars, values with their own encoding), which it
// diffs with diffPatch's walk: only what the injector changed is in the
// patch, fields this build does not know survive, and most of the pod is
// never encoded. The patch is byte for byte the one diffPatch gives for the
// two whole encodings (TestPodPatchIsTheWholePodDiff).
func podPatch(orig, mutated *corev1.Pod) ([]byte, error) {
	if orig.TypeMeta != mutated.TypeMeta {
		return wholePatch(orig, mutated)
	}
	p := patchWriters.Get().(*patchWriter)
	defer p.release()
	if err := p.diffValue(p.path[:0], podType, reflect.ValueOf(orig).Elem(), reflect.ValueOf(mutated).Elem()); err != nil {
		return nil, err
	}
	return p.bytes(), nil
}

// wholePatch diffs the encodings of the two whole pods.
func wholePatch(orig, mutated *corev1.Pod) ([]byte, error) {
	abuf, a, err := encode(orig)
	if err != nil {
		return nil, fmt.Errorf("encode pod: %w", err)
	}
	defer encodeBuffers.Put(abuf)
	bbuf, b, err := encode(mutated)
	if err != nil {
		return nil, fmt.Errorf("encode injected pod: %w", err)
	}
	defer encodeBuffers.Put(bbuf)
	patch, err := diffPatch(a, b)
	if err != nil {
		return nil, fmt.Errorf("derive patch: %w", err)
	}
	return patch, nil
}

// diffValue records the operations turning a into b at path, as diff
// would for their encodings. a and b are addressable values of t's type.
// Only leaves are compared (leafEqual), so each part of the pod is walked
// once.
func (p *patchWriter) diffValue(path []byte, t *walkType, a, b reflect.Value) error {
	switch {
	case t.fields != nil:
		return p.diffFields(path, t.fields, a, b)
	case t.elem != nil && t.kind == reflect.Pointer && !a.IsNil() && !b.IsNil():
		return p.diffValue(path, t.elem, a.Elem(), b.Elem())
	case t.elem != nil && t.kind == reflect.Slice && a.IsNil() == b.IsNil():
		la, lb := a.Len(), b.Len()
		if la == lb {
			for i := range la {
				if err := p.diffValue(strconv.AppendInt(append(path, '/'), int64(i), 10), t.elem, a.Index(i), b.Index(i)); err != nil {
					return err
				}
			}
			return nil
		}
		// An append when the elements kept are equal in Go; were one only
		// equal in encoding, diffArray on the encodings below decides.
		prefix := lb > la
		for i := 0; prefix && i < la; i++ {
			prefix = reflect.DeepEqual(a.Index(i).Addr().Interface(), b.Index(i).Addr().Interface())
		}
		if prefix {
			for i := la; i < lb; i++ {
				if err := p.addEncoded(appendIndex(path, i), b.Index(i).Addr().Interface()); err != nil {
					return err
				}
			}
			return nil
		}
	}
	// A leaf, or a shape the walk leaves to the encodings.
	if leafEqual(a, b) {
		return nil
	}
	return p.diffEncoded(path, a.Addr().Interface(), b.Addr().Interface())
}

// leafEqual is reflect.DeepEqual, without its generality for the strings,
// numbers and booleans (and pointers to them) most leaves are.
func leafEqual(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		switch a.Type().Elem().Kind() {
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			return leafEqual(a.Elem(), b.Elem())
		}
	}
	return reflect.DeepEqual(a.Addr().Interface(), b.Addr().Interface())
}

// diffFields records the operations turning struct a into b at path, as
// diffObject would for their encodings: adds and changes in field order,
// then removals.
func (p *patchWriter) diffFields(path []byte, fields []walkField, a, b reflect.Value) error {
	var removed []string
	for _, f := range fields {
		fa, fb := a.Field(f.index), b.Field(f.index)
		inA, inB := !f.omitted(fa), !f.omitted(fb)
		switch {
		case inA && inB:
			// Field names need no escaping in a JSON pointer; the path is
			// built in place, as nothing keeps it.
			if err := p.diffValue(append(append(path, '/'), f.name...), f.typ, fa, fb); err != nil {
				return err
			}
		case inB:
			if err := p.addEncoded(appendPointer(path, []byte(f.name)), fb.Addr().Interface()); err != nil {
				return err
			}
		case inA:
			removed = append(removed, f.name)
		}
	}
	for _, name := range removed {
		p.op("remove", appendPointer(path, []byte(name)), nil)
	}
	return nil
}

// addEncoded records adding v's encoding at path.
func (p *patchWriter) addEncoded(path []byte, v any) error {
	buf, enc, err := encode(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	p.op("add", path, enc)
	encodeBuffers.Put(buf)
	return nil
}

// diffEncoded diffs the encodings of a and b at path.
func (p *patchWriter) diffEncoded(path []byte, a, b any) error {
	abuf, ea, err := encode(a)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	defer encodeBuffers.Put(abuf)
	bbuf, eb, err := encode(b)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	defer encodeBuffers.Put(bbuf)
	if err := p.diff(path, ea, eb); err != nil {
		return fmt.Errorf("derive patch: %w", err)
	}
	return nil
}

// walkType is how podPatch walks a type: a struct by its fields, a slice
// or a pointer by its element; a type with neither is encoded whole.
type walkType struct {
	kind   reflect.Kind
	fields []walkField
	elem   *walkType
}

// walkField is a struct field as encoding/json encodes it.
type walkField struct {
	index     int
	name      string
	omitEmpty bool
	omitZero  bool
	typ       *walkType
}

// omitted reports whether encoding/json leaves v, the field's value, out.
func (f walkField) omitted(v reflect.Value) bool {
	if f.omitEmpty && isEmptyValue(v) {
		return true
	}
	if f.omitZero {
		if z, ok := v.Addr().Interface().(interface{ IsZero() bool }); ok {
			return z.IsZero()
		}
		return v.IsZero()
	}
	return false
}

// isEmptyValue is encoding/json's test for omitempty.
func isEmptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64,
		reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// walkOf describes t for podPatch. Structs are walked by field unless they
// encode themselves (MarshalJSON, MarshalText) or have a field this walk
// does not model (embedded, the string option, omitzero on a pointer);
// those, maps and scalars are leaves, encoded whole. seen breaks cycles.
func walkOf(t reflect.Type, seen map[reflect.Type]*walkType) *walkType {
	if w, ok := seen[t]; ok {
		return w
	}
	w := &walkType{kind: t.Kind()}
	seen[t] = w
	if t.Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(jsonMarshaler) ||
		t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return w
	}
	switch t.Kind() {
	case reflect.Pointer:
		if t.Elem().Kind() == reflect.Struct {
			w.elem = walkOf(t.Elem(), seen)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			w.elem = walkOf(t.Elem(), seen)
		}
	case reflect.Struct:
		w.fields = fieldsOf(t, seen)
	}
	return w
}

func fieldsOf(t reflect.Type, seen map[reflect.Type]*walkType) []walkField {
	var fs []walkField
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("json")
		if !sf.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if sf.Anonymous || !ok || name == "" || strings.ContainsAny(name, "~/") {
			return nil
		}
		f := walkField{index: i, name: name}
		for o := range strings.SplitSeq(opts, ",") {
			switch o {
			case "omitempty":
				f.omitEmpty = true
			case "omitzero":
				f.omitZero = true
				if sf.Type.Kind() == reflect.Pointer || sf.Type.Kind() == reflect.Interface {
					return nil
				}
			case "":
			default:
				return nil
			}
		}
		f.typ = walkOf(sf.Type, seen)
		fs = append(fs, f)
	}
	return fs
}

// podType is how a Pod is walked: metadata, spec and status. Its TypeMeta
// is embedded (kind and apiVersion promoted), which the walk does not model;
// the injector never changes it, and podPatch diffs whole encodings if it did.
var podType = podWalk()

func podWalk() *walkType {
	seen := map[reflect.Type]*walkType{}
	t := reflect.TypeFor[corev1.Pod]()
	w := &walkType{kind: reflect.Struct}
	for _, name := range []string{"ObjectMeta", "Spec", "Status"} {
		sf, _ := t.FieldByName(name)
		jname, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		w.fields = append(w.fields, walkField{index: sf.Index[0], name: jname, typ: walkOf(sf.Type, seen)})
	}
	return w
}
