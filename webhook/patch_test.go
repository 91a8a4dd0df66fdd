package webhook

import (
	"encoding/json"
	"reflect"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
)

func TestDiffPatch(t *testing.T) {
	for name, tc := range map[string]struct {
		a, b string
		ops  string // the expected patch; "" for none
	}{
		"equal": {a: `{"a":1}`, b: `{"a":1}`},
		"add key with escaping": {a: `{"m":{"x":"1"}}`, b: `{"m":{"kvinject.io/status":"injected","t~":"2","x":"1"}}`,
			ops: `[{"op":"add","path":"/m/kvinject.io~1status","value":"injected"},{"op":"add","path":"/m/t~0","value":"2"}]`},
		"remove key":    {a: `{"a":1,"b":2}`, b: `{"a":1}`, ops: `[{"op":"remove","path":"/b"}]`},
		"replace value": {a: `{"a":{"b":"x"}}`, b: `{"a":{"b":"y"}}`, ops: `[{"op":"replace","path":"/a/b","value":"y"}]`},
		"type change":   {a: `{"a":[1]}`, b: `{"a":{"b":1}}`, ops: `[{"op":"replace","path":"/a","value":{"b":1}}]`},
		"append": {a: `{"l":[{"n":1}]}`, b: `{"l":[{"n":1},{"n":2},{"n":3}]}`,
			ops: `[{"op":"add","path":"/l/1","value":{"n":2}},{"op":"add","path":"/l/2","value":{"n":3}}]`},
		"prepend adds": {a: `{"l":[1,2]}`, b: `{"l":[0,1,2]}`, ops: `[{"op":"add","path":"/l/0","value":0}]`},
		"insert anywhere adds": {a: `{"l":[1,2]}`, b: `{"l":[0,1,3,2,4]}`,
			ops: `[{"op":"add","path":"/l/0","value":0},{"op":"add","path":"/l/2","value":3},{"op":"add","path":"/l/4","value":4}]`},
		"insert before an element changed in place": {a: `{"l":[{"name":"app","m":[1]}]}`, b: `{"l":[{"name":"agent"},{"name":"app","m":[1,2]}]}`,
			ops: `[{"op":"add","path":"/l/0","value":{"name":"agent"}},{"op":"add","path":"/l/1/m/1","value":2}]`},
		"reorder replaces": {a: `{"l":[1,2]}`, b: `{"l":[2,1,0]}`, ops: `[{"op":"replace","path":"/l","value":[2,1,0]}]`},
		"same length descends": {a: `{"l":[{"m":[1]},{"m":[2]}]}`, b: `{"l":[{"m":[1]},{"m":[2,3]}]}`,
			ops: `[{"op":"add","path":"/l/1/m/1","value":3}]`},
		"shorter replaces": {a: `{"l":[1,2]}`, b: `{"l":[1]}`, ops: `[{"op":"replace","path":"/l","value":[1]}]`},
		"strings with delimiters and escaped keys": {a: `{"s":"a\"}],b","k\u003c/":{"n":[1,{"x":"]"}]},"z":null}`, b: `{"s":"a\"}],b","k\u003c/":{"n":[1,{"x":"]["}]},"z":true}`,
			ops: `[{"op":"replace","path":"/k<~1/n/1/x","value":"]["},{"op":"replace","path":"/z","value":true}]`},
		"new field": {a: `{}`, b: `{"spec":{"initContainers":[{"name":"a"}]}}`, ops: `[{"op":"add","path":"/spec","value":{"initContainers":[{"name":"a"}]}}]`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := diffPatch([]byte(tc.a), []byte(tc.b))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.ops {
				t.Errorf("patch\n got %s\nwant %s", got, tc.ops)
			}
			if got == nil {
				return
			}
			// Whatever the ops, applying them must give b.
			p, err := jsonpatch.DecodePatch(got)
			if err != nil {
				t.Fatal(err)
			}
			applied, err := p.Apply([]byte(tc.a))
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			var x, y any
			_ = json.Unmarshal(applied, &x)
			_ = json.Unmarshal([]byte(tc.b), &y)
			if !reflect.DeepEqual(x, y) {
				t.Errorf("applied patch gives %s, want %s", applied, tc.b)
			}
		})
	}
}

// TestDiffPatchKeepsUnknownFields applies the patch derived from two
// encodings that lack some fields (those a newer API server knows and this
// build does not) to the document that has them: every one survives.
func TestDiffPatchKeepsUnknownFields(t *testing.T) {
	known := `{"metadata":{"annotations":{"kvinject.io/inject":"true"}},"spec":{"initContainers":[{"name":"init"}],"containers":[{"name":"app","volumeMounts":[{"mountPath":"/data","name":"data"}]}],"volumes":[{"name":"data"}]}}`
	injected := `{"spec":{"initContainers":[{"name":"kvinject-agent"},{"name":"init","volumeMounts":[{"mountPath":"/mnt/secrets","name":"kvinject-secrets"}]}],"containers":[{"name":"app","volumeMounts":[{"mountPath":"/data","name":"data"},{"mountPath":"/mnt/secrets","name":"kvinject-secrets"}]}],"volumes":[{"name":"data"},{"name":"kvinject-secrets"}]},"metadata":{"annotations":{"kvinject.io/inject":"true","kvinject.io/status":"injected"}}}`
	stored := `{"future":1,"metadata":{"future":2,"annotations":{"kvinject.io/inject":"true"}},"spec":{"future":3,"initContainers":[{"name":"init","future":4}],"containers":[{"name":"app","future":5,"volumeMounts":[{"mountPath":"/data","name":"data","future":6}]}],"volumes":[{"name":"data","future":7}]}}`
	want := `{"future":1,"metadata":{"future":2,"annotations":{"kvinject.io/inject":"true","kvinject.io/status":"injected"}},"spec":{"future":3,"initContainers":[{"name":"kvinject-agent"},{"name":"init","future":4,"volumeMounts":[{"mountPath":"/mnt/secrets","name":"kvinject-secrets"}]}],"containers":[{"name":"app","future":5,"volumeMounts":[{"mountPath":"/data","name":"data","future":6},{"mountPath":"/mnt/secrets","name":"kvinject-secrets"}]}],"volumes":[{"name":"data","future":7},{"name":"kvinject-secrets"}]}}`
	ops, err := diffPatch([]byte(known), []byte(injected))
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Apply([]byte(stored))
	if err != nil {
		t.Fatalf("apply %s: %v", ops, err)
	}
	var x, y any
	_ = json.Unmarshal(got, &x)
	_ = json.Unmarshal([]byte(want), &y)
	if !reflect.DeepEqual(x, y) {
		t.Errorf("patch %s\ngives %s\n want %s", ops, got, want)
	}
}

// FuzzDiffPatch checks the one property that matters on any pair of
// documents encoding/json produces: applying the patch to a gives b.
func FuzzDiffPatch(f *testing.F) {
	f.Add(`{"a":[1,{"b":"c"}],"d":{"e/f~":"\"}"}}`, `{"a":[1,{"b":"c"},2],"d":{"e/f~":"<>&"},"g":null}`)
	f.Add(`[1,2,3]`, `[1,{"x":[]}]`)
	f.Add(`[{"name":"a","v":[1]},{"name":"b"}]`, `[{"name":"k"},{"name":"a","v":[1,2]},{"name":"x"},{"name":"b"}]`)
	f.Add(`{"metadata":{"annotations":{"k":"v"}}}`, `{"metadata":{"annotations":{"k":"v","kvinject.io/status":"injected"}}}`)
	f.Fuzz(func(t *testing.T, x, y string) {
		var xv, yv any
		if json.Unmarshal([]byte(x), &xv) != nil || json.Unmarshal([]byte(y), &yv) != nil {
			return
		}
		// A pod is an object at the root, so the documents are too.
		xv, yv = map[string]any{"v": xv}, map[string]any{"v": yv}
		a, _ := json.Marshal(xv)
		b, _ := json.Marshal(yv)
		ops, err := diffPatch(a, b)
		if err != nil {
			t.Fatalf("diff %s %s: %v", a, b, err)
		}
		if ops == nil {
			if !reflect.DeepEqual(xv, yv) {
				t.Fatalf("no patch for different documents %s and %s", a, b)
			}
			return
		}
		p, err := jsonpatch.DecodePatch(ops)
		if err != nil {
			t.Fatalf("patch %s: %v", ops, err)
		}
		got, err := p.Apply(a)
		if err != nil {
			t.Fatalf("apply %s to %s: %v", ops, a, err)
		}
		var gv any
		if err := json.Unmarshal(got, &gv); err != nil || !reflect.DeepEqual(gv, yv) {
			t.Fatalf("patch %s turns %s into %s, want %s", ops, a, got, b)
		}
	})
}
