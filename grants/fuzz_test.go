package grants

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// Whatever the stream holds, Read, Explain, Derive and every renderer end
// without a panic.
func FuzzRead(f *testing.F) {
	seed, err := os.ReadFile("testdata/shop.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("kind: List\nitems: [{kind: Pod, metadata: {annotations: {kvinject.io/inject: 'true'}}}]"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		timer := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("hang on %q", doc)) })
		defer timer.Stop()
		ws, _, err := Read(bytes.NewReader(doc), ReadOptions{Namespace: "default", Defaults: defaults(),
			ClientID: clientOrders, TenantID: tenant})
		if err != nil {
			return
		}
		_ = WriteText(&bytes.Buffer{}, Explain(ws, options(ScopeObject)))
		for _, scope := range []string{ScopeObject, ScopeVault} {
			s, err := Derive(ws, options(scope))
			if err != nil {
				t.Fatal(err)
			}
			for _, format := range Formats {
				_ = Render(&bytes.Buffer{}, s, format, RenderOptions{})
			}
		}
	})
}
