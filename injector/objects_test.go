package injector

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/agent/config"
)

// TestObjectsFollowTheCSIProvider has one case per row of the table in
// docs/annotations.md (section objects): each field of the Secrets Store CSI
// Azure provider's objects, what kvinject makes of it.
func TestObjectsFollowTheCSIProvider(t *testing.T) {
	vault := "https://shop-kv.vault.azure.net/"
	for _, tc := range []struct {
		row     string
		objects string
		want    config.File // Name, Mode 0 means the pod's default (0440)
		err     string
	}{
		{row: "objectType secret", objects: "- {objectName: db, objectType: secret}",
			want: config.File{Name: "db", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
		{row: "objectType secret, objectFormat pfx", objects: "- {objectName: tls, objectType: secret, objectFormat: pfx}",
			want: config.File{Name: "tls", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "tls"}}},
		{row: "objectType secret, objectFormat PEM", objects: "- {objectName: tls, objectType: secret, objectFormat: PEM}",
			want: config.File{Name: "tls", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "tls"}, Format: config.FormatPEM}},
		{row: "objectType cert", objects: "- {objectName: tls, objectType: cert}",
			want: config.File{Name: "tls", Object: &config.Object{Vault: vault, Kind: config.KindPublicCert, Name: "tls"}}},
		{row: "objectType key", objects: "- {objectName: sign, objectType: key}",
			want: config.File{Name: "sign", Object: &config.Object{Vault: vault, Kind: config.KindKey, Name: "sign"}}},
		{row: "objectType in another case", objects: "- {objectName: db, objectType: Secret}", err: `objectType "Secret" is not secret, cert or key`},
		{row: "objectFormat pfx on cert", objects: "- {objectName: tls, objectType: cert, objectFormat: pfx}", err: "objectFormat pfx needs objectType secret"},
		{row: "objectFormat other", objects: "- {objectName: tls, objectType: secret, objectFormat: der}", err: `objectFormat "der" is not pem or pfx`},
		{row: "objectEncoding base64", objects: "- {objectName: blob, objectType: secret, objectEncoding: Base64}",
			want: config.File{Name: "blob", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "blob"}, Format: config.FormatPEM, Encoding: config.EncodingBase64}},
		{row: "objectEncoding hex", objects: "- {objectName: blob, objectType: secret, objectEncoding: hex}",
			want: config.File{Name: "blob", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "blob"}, Format: config.FormatPEM, Encoding: config.EncodingHex}},
		{row: "objectEncoding utf-8", objects: "- {objectName: db, objectType: secret, objectEncoding: UTF-8}",
			want: config.File{Name: "db", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
		{row: "objectEncoding utf8", objects: "- {objectName: db, objectType: secret, objectEncoding: utf8}", err: `objectEncoding "utf8" is not utf-8, base64 or hex`},
		{row: "objectEncoding on key", objects: "- {objectName: k, objectType: key, objectEncoding: hex}", err: "applies to objectType secret only"},
		{row: "objectVersion", objects: "- {objectName: db, objectType: secret, objectVersion: 0123abcd}",
			want: config.File{Name: "db", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db", Version: "0123abcd"}, Format: config.FormatPEM}},
		{row: "objectVersion latest", objects: "- {objectName: db, objectType: secret, objectVersion: latest}",
			want: config.File{Name: "db", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
		{row: "objectVersionHistory", objects: "- {objectName: db, objectType: secret, objectVersionHistory: 3}", err: "objectVersionHistory 3 is not supported"},
		{row: "objectAlias", objects: "- {objectName: db, objectType: secret, objectAlias: db.txt}",
			want: config.File{Name: "db.txt", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
		{row: "objectAlias escaping", objects: "- {objectName: db, objectType: secret, objectAlias: ../x}", err: `may not start with ".."`},
		{row: "filePermission", objects: "- {objectName: db, objectType: secret, filePermission: \"0640\"}",
			want: config.File{Name: "db", Mode: 0o640, Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
		{row: "whitespace", objects: "array:\n- |\n  objectName: \" db \"\n  objectType: \"secret \"",
			want: config.File{Name: "db", Object: &config.Object{Vault: vault, Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
		{row: "vault per object", objects: "- {objectName: db, objectType: secret, vault: other-kv}",
			want: config.File{Name: "db", Object: &config.Object{Vault: "https://other-kv.vault.azure.net/", Kind: config.KindSecret, Name: "db"}, Format: config.FormatPEM}},
	} {
		t.Run(tc.row, func(t *testing.T) {
			pod := testPod(map[string]string{Prefix + "secret-db-password": "-", AnnotationObjects: tc.objects})
			out, _, err := Inject(pod, nil, testDefaults())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var cfg config.Config
			for _, e := range out.Spec.InitContainers[0].Env {
				if e.Name == config.EnvVar {
					if err := json.Unmarshal([]byte(e.Value), &cfg); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.want.Mode == 0 {
				tc.want.Mode = DefaultFileMode
			}
			g, _ := json.Marshal(cfg.Files)
			w, _ := json.Marshal([]config.File{tc.want})
			if string(g) != string(w) {
				t.Errorf("files %s\nwant  %s", g, w)
			}
		})
	}
}
