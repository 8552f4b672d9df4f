package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a config file, located by its path in the
// document ("ups[1].nut.address") and, when known, its line.
type Problem struct {
	Path string
	Line int
	Msg  string
}

func (p Problem) String() string {
	loc := p.Path
	if loc == "" {
		loc = "(top level)"
	}
	if p.Line > 0 {
		loc = fmt.Sprintf("%s (line %d)", loc, p.Line)
	}
	return loc + ": " + p.Msg
}

// Error lists every problem found in a config file. Load returns it so that
// an operator fixes all of them in one pass instead of one per restart.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	n := len(e.Problems)
	fmt.Fprintf(&b, "%s: %d problem", e.File, n)
	if n != 1 {
		b.WriteString("s")
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems collects Problems while the config is checked.
type problems struct {
	list  []Problem
	lines map[string]int // path -> line, recorded by checkNode
}

func (ps *problems) add(path string, line int, format string, args ...any) {
	if line == 0 {
		line = ps.lines[path]
	}
	ps.list = append(ps.list, Problem{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// checkNode walks a YAML node against the Go type it will decode into and
// records every unknown key, duplicate key, wrong shape and bad scalar, each
// with its path. It replaces each bad value by null, so that yaml's own
// Decode then fills everything else and the semantic checks can run too.
func checkNode(n *yaml.Node, t reflect.Type, path string, ps *problems) {
	if ps.lines == nil {
		ps.lines = map[string]int{}
	}
	ps.lines[path] = n.Line
	if n.Kind == yaml.AliasNode {
		ps.add(path, n.Line, "YAML aliases are not supported; write the value out")
		nullify(n)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // empty value: keeps the default
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ps.add(path, n.Line, "%s", cleanYAMLError(err))
			nullify(n)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkNode(n, t.Elem(), path, ps)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			ps.add(path, n.Line, "want a mapping (key: value lines), got %s", kindName(n))
			nullify(n)
			return
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := join(path, k.Value)
			if seen[k.Value] {
				ps.add(kp, k.Line, "key given twice")
				continue
			}
			seen[k.Value] = true
			f, ok := fields[k.Value]
			if !ok {
				ps.add(kp, k.Line, "unknown key%s", suggest(k.Value, fields))
				continue
			}
			checkNode(v, f.Type, kp, ps)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			ps.add(path, n.Line, "want a list, got %s", kindName(n))
			nullify(n)
			return
		}
		for i, c := range n.Content {
			checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), ps)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			ps.add(path, n.Line, "want a mapping, got %s", kindName(n))
			nullify(n)
			return
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := join(path, k.Value)
			if seen[k.Value] {
				ps.add(kp, k.Line, "key given twice")
				continue
			}
			seen[k.Value] = true
			checkNode(v, t.Elem(), kp, ps)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			ps.add(path, n.Line, "want a single value, got %s", kindName(n))
			nullify(n)
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ps.add(path, n.Line, "want %s, got %q", typeName(t), n.Value)
			nullify(n)
		}
	}
}

func nullify(n *yaml.Node) {
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

type fieldInfo struct{ Type reflect.Type }

func yamlFields(t reflect.Type) map[string]fieldInfo {
	out := map[string]fieldInfo{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = fieldInfo{Type: f.Type}
	}
	return out
}

// suggest names the closest known key, for typos.
func suggest(key string, fields map[string]fieldInfo) string {
	best, bestD := "", 3
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if d := editDistance(key, name); d < bestD {
			best, bestD = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return fmt.Sprintf(" (known keys: %s)", strings.Join(names, ", "))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	return s
}
