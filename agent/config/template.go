package config

import (
	"fmt"
	"slices"
	"strings"
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

// TemplateProblem is a construct a template may not use, at a node of it.
type TemplateProblem struct {
	Node parse.Node
	// Message says what is wrong and what to write instead.
	Message string
}

// TemplateProblems checks that every template t defines is a straight
// pipeline language, in which a value can only flow into the output:
//
//  1. The text holds only literal text, comments and actions; no if, range,
//     with, define, block or template, no variables, no "." and no fields.
//  2. An action is a pipeline. Its first command is a string literal, an
//     object function (secret, cert, privateKey, chain, key) with exactly one
//     string literal, a helper (base64, json, …) with one argument that is a
//     string literal or a parenthesized pipeline of these rules, or such a
//     parenthesized pipeline.
//  3. Every later command is a helper without arguments (it takes the piped
//     value). No object function takes a piped or computed argument, so the
//     files a template reads are known from its text alone, and no other
//     function (call, index, len, printf, eq, …) is callable.
//
// Under these rules the engine never has a value in hand where it could quote
// one in an error: every value is a string that goes from an object function
// through helpers that take strings into the output. The injector denies a
// template with problems at admission; the agent checks again before its
// first fetch.
func TemplateProblems(t *template.Template) []TemplateProblem {
	var c shapeChecker
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		if tt.Name() != t.Name() {
			c.add(tt.Tree.Root, "define and block are not allowed: write the text where it is used")
			continue
		}
		c.list(tt.Tree.Root)
	}
	return c.problems
}

type shapeChecker struct{ problems []TemplateProblem }

func (c *shapeChecker) add(n parse.Node, format string, args ...any) {
	c.problems = append(c.problems, TemplateProblem{Node: n, Message: fmt.Sprintf(format, args...)})
}

const straight = `templates are straight pipelines such as {{ secret "db-password" | quote }}`

func (c *shapeChecker) list(l *parse.ListNode) {
	for _, n := range l.Nodes {
		switch n := n.(type) {
		case *parse.TextNode, *parse.CommentNode:
		case *parse.ActionNode:
			c.pipe(n.Pipe)
		case *parse.IfNode:
			c.add(n, "if is not allowed: %s; choose the text in the pod's annotations instead", straight)
		case *parse.RangeNode:
			c.add(n, "range is not allowed: %s, one action per value", straight)
		case *parse.WithNode:
			c.add(n, "with is not allowed: %s", straight)
		case *parse.TemplateNode:
			c.add(n, "template and block are not allowed: write the text where it is used")
		default:
			c.add(n, "%s is not allowed: %s", n, straight)
		}
	}
}

func (c *shapeChecker) pipe(p *parse.PipeNode) {
	if len(p.Decl) > 0 {
		c.add(p, "variables are not allowed: %s", straight)
		return
	}
	for i, cmd := range p.Cmds {
		c.command(cmd, i == 0)
	}
}

func (c *shapeChecker) command(cmd *parse.CommandNode, first bool) {
	switch head := cmd.Args[0].(type) {
	case *parse.StringNode:
		if !first || len(cmd.Args) != 1 {
			c.add(cmd, "a string literal can only begin a pipeline: %s", straight)
		}
	case *parse.PipeNode:
		if !first || len(cmd.Args) != 1 {
			c.add(cmd, "a parenthesized pipeline can only begin a pipeline: %s", straight)
			return
		}
		c.pipe(head)
	case *parse.IdentifierNode:
		fn := head.Ident
		switch {
		case TemplateObjectFuncs[fn] != "":
			if _, lit := arg(cmd).(*parse.StringNode); !first || !lit || len(cmd.Args) != 2 {
				c.add(cmd, `%s takes exactly one file name in double quotes, like %s "file"; it cannot take a piped or computed argument`, fn, fn)
			}
		case slices.Contains(TemplateFuncNames, fn):
			switch a := arg(cmd).(type) {
			case nil:
				if first {
					c.add(cmd, `%s needs one argument: a string in double quotes, a parenthesized pipeline, or a piped value as in {{ secret "f" | %s }}`, fn, fn)
				}
			case *parse.StringNode:
			case *parse.PipeNode:
				c.pipe(a)
			default:
				c.add(cmd, "%s takes one string: a literal in double quotes or a parenthesized pipeline, not %s", fn, a)
			}
			if len(cmd.Args) > 2 || (!first && len(cmd.Args) > 1) {
				c.add(cmd, "%s takes one argument: the piped value or one given argument", fn)
			}
		default:
			c.add(cmd, "function %s is not allowed in kvinject templates: use %s", fn, strings.Join(TemplateFuncNames, ", "))
		}
	default:
		c.add(cmd, "%s is not allowed: templates see no data (\".\" is empty); name files with secret, cert, privateKey, chain or key", head)
	}
}

// arg is a command's first argument after its function, or nil.
func arg(cmd *parse.CommandNode) parse.Node {
	if len(cmd.Args) < 2 {
		return nil
	}
	return cmd.Args[1]
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
