package config

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestFileModeJSON(t *testing.T) {
	b, err := json.Marshal(File{Name: "a", Mode: 0o440, Template: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"mode":"0440"`) {
		t.Errorf("encoded %s, want the mode as \"0440\"", b)
	}
	for in, want := range map[string]FileMode{`"0440"`: 0o440, `"640"`: 0o640, `288`: 0o440} {
		var m FileMode
		if err := json.Unmarshal([]byte(in), &m); err != nil || m != want {
			t.Errorf("decode %s = %#o, %v; want %#o", in, m, err, want)
		}
	}
	for _, in := range []string{`"0x1ff"`, `"rw-r-----"`, `-1`, `true`} {
		var m FileMode
		if err := json.Unmarshal([]byte(in), &m); err == nil {
			t.Errorf("decode %s = %#o, want an error", in, m)
		}
	}
}
