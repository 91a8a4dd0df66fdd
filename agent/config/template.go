package config

import (
	"text/template"
	"text/template/parse"
)

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

// TemplateObjectRefs calls visit for every call of a TemplateObjectFuncs
// function whose file argument is a string literal, in every template t
// defines. The injector checks these references at admission and the agent
// before its first fetch, so both must see the same ones.
func TemplateObjectRefs(t *template.Template, visit func(cmd *parse.CommandNode, fn, file string)) {
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walkTemplate(tt.Tree.Root, visit)
		}
	}
}

func walkTemplate(n parse.Node, visit func(cmd *parse.CommandNode, fn, file string)) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walkTemplate(c, visit)
		}
	case *parse.ActionNode:
		walkTemplate(n.Pipe, visit)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			walkTemplate(c, visit)
		}
	case *parse.CommandNode:
		if len(n.Args) >= 2 {
			if id, ok := n.Args[0].(*parse.IdentifierNode); ok && TemplateObjectFuncs[id.Ident] != "" {
				if s, ok := n.Args[1].(*parse.StringNode); ok {
					visit(n, id.Ident, s.Text)
				}
			}
		}
		for _, a := range n.Args {
			walkTemplate(a, visit)
		}
	case *parse.ChainNode:
		walkTemplate(n.Node, visit)
	case *parse.IfNode:
		walkTemplate(&n.BranchNode, visit)
	case *parse.RangeNode:
		walkTemplate(&n.BranchNode, visit)
	case *parse.WithNode:
		walkTemplate(&n.BranchNode, visit)
	case *parse.BranchNode:
		walkTemplate(n.Pipe, visit)
		walkTemplate(n.List, visit)
		walkTemplate(n.ElseList, visit)
	case *parse.TemplateNode:
		walkTemplate(n.Pipe, visit)
	}
}
