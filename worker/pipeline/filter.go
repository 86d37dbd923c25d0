package pipeline

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
	"github.com/tidwall/gjson"
)

// filter is a compiled filter expression (expr-lang syntax) over a line.
//
// The expression is not given the decoded document. Compiling rewrites
// every chain of constant member accesses rooted at a document field
// (user.followers_count, entities["hashtags"][0]) into one variable whose
// value is extracted with the equivalent gjson path, so a line is never
// decoded beyond what the filter reads. A chain only compared with nil
// (retweeted_status == nil) becomes a presence flag, so even a large
// object is not decoded. A missing field is nil; member access on a
// missing field is nil too, rather than an error.
type filter struct {
	program *vm.Program
	vars    []filterVar
}

// filterVar is one variable of the rewritten expression.
type filterVar struct {
	name string
	path string
	// presence means only whether the value exists (non-null) matters.
	presence bool
	// index is the path's index in the pipeline's extractor.
	index int
}

// compileFilter compiles src and lists the variables it reads.
func compileFilter(src string) (*filter, error) {
	a := &filterAnalysis{
		inner:  map[ast.Node]bool{},
		callee: map[ast.Node]bool{},
		nilCmp: map[ast.Node]bool{},
		locals: map[string]bool{},
	}
	rw := &filterRewrite{a: a, byKey: map[string]int{}}
	program, err := expr.Compile(src,
		expr.Env(map[string]any{}),
		expr.AllowUndefinedVariables(),
		expr.AsBool(),
		expr.Patch(a),
		expr.Patch(rw),
	)
	if err != nil {
		return nil, fmt.Errorf("not a valid filter expression (expr-lang syntax, e.g. lang == \"en\" && retweeted_status == nil):\n%v", err)
	}
	return &filter{program: program, vars: rw.vars}, nil
}

// filterAnalysis is the first pass over the expression: it marks nodes
// that must not become variables on their own.
type filterAnalysis struct {
	// inner marks nodes that are the object of a constant member access:
	// the chain continues above them.
	inner map[ast.Node]bool
	// callee marks nodes that are called (functions, methods).
	callee map[ast.Node]bool
	// nilCmp marks operands of == nil and != nil.
	nilCmp map[ast.Node]bool
	// locals are names bound by let.
	locals map[string]bool
}

func (a *filterAnalysis) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.MemberNode:
		if _, ok := constProperty(n.Property); ok {
			a.inner[n.Node] = true
		}
	case *ast.CallNode:
		a.callee[n.Callee] = true
	case *ast.BinaryNode:
		if n.Operator == "==" || n.Operator == "!=" {
			if _, ok := n.Left.(*ast.NilNode); ok {
				a.nilCmp[n.Right] = true
			}
			if _, ok := n.Right.(*ast.NilNode); ok {
				a.nilCmp[n.Left] = true
			}
		}
	case *ast.VariableDeclaratorNode:
		a.locals[n.Name] = true
	}
}

// filterRewrite is the second pass: it replaces each maximal chain with a
// variable.
type filterRewrite struct {
	a     *filterAnalysis
	vars  []filterVar
	byKey map[string]int
}

func (rw *filterRewrite) Visit(node *ast.Node) {
	n := *node
	if rw.a.inner[n] || rw.a.callee[n] {
		return
	}
	path, ok := rw.chain(n)
	if !ok {
		return
	}
	presence := rw.a.nilCmp[n]
	key := path
	if presence {
		key = "?" + path
	}
	i, seen := rw.byKey[key]
	if !seen {
		i = len(rw.vars)
		rw.byKey[key] = i
		// Names that cannot clash with anything written in the filter.
		rw.vars = append(rw.vars, filterVar{name: "$jetline_" + strconv.Itoa(i), path: path, presence: presence})
	}
	ast.Patch(node, &ast.IdentifierNode{Value: rw.vars[i].name})
}

// chain returns the gjson path of a chain of constant member accesses
// rooted at a document field.
func (rw *filterRewrite) chain(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		if rw.a.locals[n.Value] || strings.HasPrefix(n.Value, "$") {
			return "", false
		}
		return escapePath(n.Value), true
	case *ast.MemberNode:
		prop, ok := constProperty(n.Property)
		if !ok || n.Method {
			return "", false
		}
		base, ok := rw.chain(n.Node)
		if !ok {
			return "", false
		}
		return base + "." + prop, true
	}
	return "", false
}

// constProperty returns the gjson path component of a constant member
// property: a name or a non-negative index.
func constProperty(p ast.Node) (string, bool) {
	switch p := p.(type) {
	case *ast.StringNode:
		return escapePath(p.Value), true
	case *ast.IntegerNode:
		if p.Value >= 0 {
			return strconv.Itoa(p.Value), true
		}
	}
	return "", false
}

// escapePath escapes the characters gjson gives a meaning in a key.
func escapePath(key string) string {
	if !strings.ContainsAny(key, `.*?#@|\{}[]!=<>%:,"`) {
		return key
	}
	var b strings.Builder
	for _, r := range key {
		if strings.ContainsRune(`.*?#@|\{}[]!=<>%:,"`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// exprValue converts an extracted value for the filter: nil, bool, int
// (integral numbers that fit), float64, string, or for objects and arrays
// what encoding/json would decode.
func exprValue(r gjson.Result) any {
	switch r.Type {
	case gjson.Null:
		return nil
	case gjson.True:
		return true
	case gjson.False:
		return false
	case gjson.Number:
		if n, err := strconv.Atoi(r.Raw); err == nil {
			return n
		}
		return r.Num
	case gjson.String:
		return r.Str
	}
	return r.Value()
}

// run evaluates the filter for the line x was run on, reusing env and
// machine.
func (f *filter) run(ex *extractor, x *extraction, env map[string]any, machine *vm.VM) (bool, error) {
	for _, v := range f.vars {
		var r gjson.Result
		if v.presence && x.state[v.index] == pathFound && ex.paths[v.index].rest == "" && !ex.paths[v.index].whole {
			// Present unless it is null; no need to parse it.
			if x.raw[v.index] != "null" {
				env[v.name] = true
			} else {
				env[v.name] = nil
			}
			continue
		}
		r = ex.value(x, v.index)
		switch {
		case !v.presence:
			env[v.name] = exprValue(r)
		case r.Exists() && r.Type != gjson.Null:
			env[v.name] = true
		default:
			env[v.name] = nil
		}
	}
	out, err := machine.Run(f.program, env)
	if err != nil {
		return false, err
	}
	keep, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("the filter returned %T, not a boolean", out)
	}
	return keep, nil
}
