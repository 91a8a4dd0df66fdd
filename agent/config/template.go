package config

// TemplateFuncNames are the functions a template-<file> annotation may call.
// The agent provides exactly these (its renderer is tested against this list);
// the injector parses templates with the same names so that a typo is denied
// at admission instead of failing inside the pod.
//
//   - secret "file": the value of another file's secret
//   - cert "file", privateKey "file", chain "file": a cert file's leaf
//     certificate, private key and full chain, as PEM
//   - key "file": a key file's public key, as PEM
//   - base64, base64decode, json, envQuote, quote, trim: string helpers
var TemplateFuncNames = []string{
	"secret", "cert", "key", "privateKey", "chain",
	"base64", "base64decode", "json", "envQuote", "quote", "trim",
}

// TemplateObjectFuncs are the template functions whose argument names another
// file, with the kind that file must be. The injector denies a mismatch at
// admission; the agent's renderer enforces the same rule.
var TemplateObjectFuncs = map[string]Kind{
	"secret":     KindSecret,
	"cert":       KindCert,
	"privateKey": KindCert,
	"chain":      KindCert,
	"key":        KindKey,
}
