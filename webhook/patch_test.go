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
		"prepend replaces": {a: `{"l":[1,2]}`, b: `{"l":[0,1,2]}`, ops: `[{"op":"replace","path":"/l","value":[0,1,2]}]`},
		"same length descends": {a: `{"l":[{"m":[1]},{"m":[2]}]}`, b: `{"l":[{"m":[1]},{"m":[2,3]}]}`,
			ops: `[{"op":"add","path":"/l/1/m/1","value":3}]`},
		"shorter replaces": {a: `{"l":[1,2]}`, b: `{"l":[1]}`, ops: `[{"op":"replace","path":"/l","value":[1]}]`},
		"new field":        {a: `{}`, b: `{"spec":{"initContainers":[{"name":"a"}]}}`, ops: `[{"op":"add","path":"/spec","value":{"initContainers":[{"name":"a"}]}}]`},
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
