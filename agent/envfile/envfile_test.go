package envfile

import (
	"errors"
	"strings"
	"testing"
)

func TestEncode(t *testing.T) {
	got, err := Encode([]Var{
		{Name: "DB_PASSWORD", Value: []byte(`p@ss$word "#=\x`)},
		{Name: "my.env-name", Value: []byte("line one\nline two\n")},
		{Name: "UNICODE", Value: []byte("grüße")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "DB_PASSWORD='p@ss$word \"#=\\x'\nmy.env-name='line one\nline two\n'\nUNICODE='grüße'\n"
	if string(got) != want {
		t.Errorf("Encode:\n got %q\nwant %q", got, want)
	}
}

func TestEncodeLongest(t *testing.T) {
	name := "K"
	v := strings.Repeat("a", MaxEntry-len(name)-3)
	got, err := Encode([]Var{{Name: name, Value: []byte(v)}})
	if err != nil {
		t.Fatalf("entry of exactly %d bytes: %v", MaxEntry, err)
	}
	if len(got) != MaxEntry+1 {
		t.Errorf("len = %d, want %d (entry and newline)", len(got), MaxEntry+1)
	}
	if _, err := Encode([]Var{{Name: name, Value: []byte(v + "a")}}); err == nil {
		t.Errorf("entry of %d bytes: no error", MaxEntry+1)
	}
}

// TestEncodeRefuses checks each value the format cannot carry is refused
// with an error naming the variable and the reason, never the value.
func TestEncodeRefuses(t *testing.T) {
	const secret = "s3cr3t"
	for _, tc := range []struct {
		name, value, reason string
	}{
		{"QUOTE", secret + "'x", "single quote"},
		{"EMPTY", "", "empty"},
		{"NUL", secret + "\x00", "NUL"},
		{"CRLF", secret + "\r\nx", "carriage return"},
		{"LONG", secret + strings.Repeat("x", MaxEntry), "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Encode([]Var{{Name: "OK", Value: []byte("fine")}, {Name: tc.name, Value: []byte(tc.value)}})
			var ee *Error
			if !errors.As(err, &ee) || ee.Name != tc.name {
				t.Fatalf("err = %v, want an *Error for %s", err, tc.name)
			}
			if !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), tc.name) {
				t.Errorf("error %q does not name %s and %q", err, tc.name, tc.reason)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q holds the value", err)
			}
		})
	}
}

func TestEncodeNames(t *testing.T) {
	for _, name := range []string{"", "A=B", "A\nB", "#A", " A"} {
		if _, err := Encode([]Var{{Name: name, Value: []byte("v")}}); err == nil {
			t.Errorf("name %q: no error", name)
		}
	}
	if _, err := Encode([]Var{{Name: "A", Value: []byte("1")}, {Name: "A", Value: []byte("2")}}); err == nil {
		t.Error("duplicate name: no error")
	}
}
