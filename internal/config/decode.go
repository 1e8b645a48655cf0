package config

import (
	"fmt"
	"math"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// fileDecoder walks goccy's AST of one file against the schema. Walking the
// AST ourselves (instead of yaml.Unmarshal) keeps types strict (goccy turns
// 7.5 into 7 and "7" into 7), tells which keys are present (for partial
// workers.paths overrides and "empty means default"), and gives every error
// the line of its key.
type fileDecoder struct {
	file    string
	anchors map[string]ast.Node
	lines   map[string]int  // dotted key path -> line of the key
	nulls   map[string]bool // key paths whose value is empty (= the default)
	merges  int
	// defaults is what workers.default gave, for errors that name where a
	// worker setting came from.
	defaults WorkerOverride
}

// entry is one key of a mapping, after merge keys were applied.
type entry struct {
	key   string
	line  int      // line of the key
	value ast.Node // resolved: anchors, aliases and tags unwrapped
}

type fieldFunc func(d *fileDecoder, path string, e entry) error

const (
	maxAliasChain = 64
	maxMergeDepth = 16
	maxMerges     = 10000
	maxInt32      = math.MaxInt32
)

func (d *fileDecoder) errf(line int, format string, args ...any) error {
	return &Error{File: d.file, Line: line, Msg: oneLine(fmt.Sprintf(format, args...))}
}

// resolve unwraps anchors, aliases and tags down to the node that holds data.
func (d *fileDecoder) resolve(n ast.Node) (ast.Node, error) {
	for i := 0; i < maxAliasChain; i++ {
		switch x := n.(type) {
		case *ast.AnchorNode:
			n = x.Value
		case *ast.AliasNode:
			name := scalarText(x.Value)
			target, ok := d.anchors[name]
			if !ok {
				return nil, d.errf(line(x), "unknown alias *%s", name)
			}
			n = target
		case *ast.TagNode:
			tag := ""
			if x.Start != nil {
				tag = x.Start.Value
			}
			switch tag {
			case "!!str":
				inner, err := d.resolve(x.Value)
				if err != nil {
					return nil, err
				}
				if !isScalar(inner) {
					return nil, d.errf(line(x), "!!str applied to a %s", describe(inner))
				}
				if _, ok := inner.(*ast.NullNode); ok {
					return &ast.StringNode{BaseNode: &ast.BaseNode{}, Token: inner.GetToken(), Value: ""}, nil
				}
				return &ast.StringNode{BaseNode: &ast.BaseNode{}, Token: inner.GetToken(), Value: scalarText(inner)}, nil
			case "!!int", "!!bool", "!!float", "!!null", "!!map", "!!seq":
				n = x.Value
			default:
				return nil, d.errf(line(x), "unsupported tag %q", tag)
			}
		case nil:
			return &ast.NullNode{BaseNode: &ast.BaseNode{}}, nil
		default:
			return n, nil
		}
	}
	return nil, d.errf(line(n), "alias chain too long (a cycle?)")
}

// mapping returns the entries of a mapping node (already resolved). Merge
// keys (<<) are applied: keys written in the mapping win over merged ones, and
// earlier merge sources win over later ones.
func (d *fileDecoder) mapping(n ast.Node, depth int) ([]entry, error) {
	var values []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.MappingNode:
		values = m.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{m}
	default:
		return nil, fmt.Errorf("not a mapping")
	}
	var own, merged []entry
	seen := map[string]bool{}
	for _, mv := range values {
		if mv == nil {
			continue
		}
		if _, ok := mv.Key.(*ast.MergeKeyNode); ok {
			es, err := d.mergeSources(mv, depth)
			if err != nil {
				return nil, err
			}
			merged = append(merged, es...)
			continue
		}
		k, err := d.keyText(mv.Key)
		if err != nil {
			return nil, err
		}
		v, err := d.resolve(mv.Value)
		if err != nil {
			return nil, err
		}
		own = append(own, entry{key: k, line: line(mv.Key), value: v})
		seen[k] = true
	}
	for _, e := range merged {
		if !seen[e.key] {
			seen[e.key] = true
			own = append(own, e)
		}
	}
	return own, nil
}

func (d *fileDecoder) mergeSources(mv *ast.MappingValueNode, depth int) ([]entry, error) {
	if depth >= maxMergeDepth {
		return nil, d.errf(line(mv.Key), "merge keys nested too deeply")
	}
	src, err := d.resolve(mv.Value)
	if err != nil {
		return nil, err
	}
	var sources []ast.Node
	switch s := src.(type) {
	case *ast.SequenceNode:
		for _, it := range s.Values {
			r, err := d.resolve(it)
			if err != nil {
				return nil, err
			}
			sources = append(sources, r)
		}
	default:
		sources = []ast.Node{src}
	}
	var out []entry
	for _, s := range sources {
		if d.merges++; d.merges > maxMerges {
			return nil, d.errf(line(mv.Key), "too many merge keys")
		}
		es, err := d.mapping(s, depth+1)
		if err != nil {
			return nil, d.errf(line(mv.Key), "<< must merge a mapping or a sequence of mappings, got %s", describe(s))
		}
		out = append(out, es...)
	}
	return out, nil
}

func (d *fileDecoder) keyText(k ast.Node) (string, error) {
	if mk, ok := k.(*ast.MappingKeyNode); ok {
		k = mk.Value
	}
	r, err := d.resolve(k)
	if err != nil {
		return "", err
	}
	if !isScalar(r) {
		return "", d.errf(line(k), "a mapping key must be a string, got %s", describe(r))
	}
	return scalarText(r), nil
}

// section decodes a mapping value with the given fields. A null value (key
// with nothing after it) leaves every default in place.
func (d *fileDecoder) section(path string, e entry, fields map[string]fieldFunc) error {
	if isNull(e.value) {
		return nil
	}
	entries, err := d.mapping(e.value, 0)
	if err != nil {
		if _, ok := err.(*Error); ok {
			return err
		}
		return d.typeErr(path, e, "a mapping")
	}
	for _, sub := range entries {
		f, ok := fields[sub.key]
		if !ok {
			return d.errf(sub.line, "unknown key %q", sub.key)
		}
		p := joinPath(path, sub.key)
		d.lines[p] = sub.line
		if isNull(sub.value) {
			d.nulls[p] = true
		}
		if err := f(d, p, sub); err != nil {
			return err
		}
	}
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *fileDecoder) typeErr(path string, e entry, want string) error {
	return d.errf(e.line, "%s: expected %s, got %s", path, want, describe(e.value))
}

func isNull(n ast.Node) bool {
	_, ok := n.(*ast.NullNode)
	return ok
}

func isScalar(n ast.Node) bool {
	switch n.(type) {
	case *ast.StringNode, *ast.LiteralNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode,
		*ast.NullNode, *ast.InfinityNode, *ast.NanNode:
		return true
	}
	return false
}

// scalarText is the text of a scalar: the string value of strings, the
// source text of numbers and booleans.
func scalarText(n ast.Node) string {
	switch x := n.(type) {
	case *ast.StringNode:
		return x.Value
	case *ast.LiteralNode:
		if x.Value != nil {
			return x.Value.Value
		}
		return ""
	case *ast.NullNode:
		return ""
	}
	if n == nil {
		return ""
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return n.String()
}

func describe(n ast.Node) string {
	switch x := n.(type) {
	case *ast.StringNode:
		return fmt.Sprintf("string %q", clip(x.Value, 40))
	case *ast.LiteralNode:
		return "block string"
	case *ast.IntegerNode:
		return "integer " + clip(scalarText(x), 40)
	case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "float " + clip(scalarText(x), 40)
	case *ast.BoolNode:
		return "boolean " + scalarText(x)
	case *ast.NullNode:
		return "null"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "mapping"
	case *ast.SequenceNode:
		return "sequence"
	}
	if n == nil {
		return "nothing"
	}
	return n.Type().YAMLName()
}

// --- scalar fields -------------------------------------------------------

func (d *fileDecoder) intValue(path string, e entry, min, max int64) (int64, error) {
	in, ok := e.value.(*ast.IntegerNode)
	if !ok {
		// goccy reads a plain integer too big for 64 bits as a string.
		if sn, isStr := e.value.(*ast.StringNode); isStr && sn.Token != nil && sn.Token.Type == token.StringType && isDecimal(sn.Value) {
			return 0, d.errf(e.line, "%s: %s is out of range", path, clip(sn.Value, 40))
		}
		return 0, d.typeErr(path, e, "an integer")
	}
	var v int64
	switch x := in.Value.(type) {
	case int64:
		v = x
	case uint64:
		if x > math.MaxInt64 {
			return 0, d.errf(e.line, "%s: %s is out of range", path, scalarText(in))
		}
		v = int64(x)
	default:
		return 0, d.typeErr(path, e, "an integer")
	}
	if v < min || v > max {
		return 0, d.errf(e.line, "%s: %s", path, rangeMsg(v, min, max))
	}
	return v, nil
}

func isDecimal(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func rangeMsg(v, min, max int64) string {
	if max >= maxInt32 { // open-ended in practice
		if v < min {
			return fmt.Sprintf("must be >= %d, got %d", min, v)
		}
		return fmt.Sprintf("must be <= %d, got %d", max, v)
	}
	return fmt.Sprintf("must be between %d and %d, got %d", min, max, v)
}

func intField(dst *int, min, max int64) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		v, err := d.intValue(path, e, min, max)
		if err == nil {
			*dst = int(v)
		}
		return err
	}
}

func optIntField(dst **int, min, max int64) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		v, err := d.intValue(path, e, min, max)
		if err == nil {
			n := int(v)
			*dst = &n
		}
		return err
	}
}

func optInt64Field(dst **int64, min, max int64) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		v, err := d.intValue(path, e, min, max)
		if err == nil {
			*dst = &v
		}
		return err
	}
}

func boolField(dst *bool) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		b, ok := e.value.(*ast.BoolNode)
		if !ok {
			return d.typeErr(path, e, "true or false")
		}
		*dst = b.Value
		return nil
	}
}

// check validates a string value; it returns "" or what is wrong.
type check func(string) string

func (d *fileDecoder) stringValue(path string, e entry, chk check) (string, error) {
	switch e.value.(type) {
	case *ast.StringNode, *ast.LiteralNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode,
		*ast.InfinityNode, *ast.NanNode:
	default:
		return "", d.typeErr(path, e, "a string")
	}
	s := scalarText(e.value)
	if chk != nil {
		if msg := chk(s); msg != "" {
			return "", d.errf(e.line, "%s: %s", path, msg)
		}
	}
	return s, nil
}

func stringField(dst *string, chk check) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		s, err := d.stringValue(path, e, chk)
		if err == nil {
			*dst = s
		}
		return err
	}
}

func optStringField(dst **string, chk check) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		s, err := d.stringValue(path, e, chk)
		if err == nil {
			*dst = &s
		}
		return err
	}
}

// optStringsField sets *dst to the list when the key is present.
func optStringsField(dst **[]string, chk check) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		var out []string
		if err := stringsField(&out, chk)(d, path, e); err != nil || isNull(e.value) {
			return err
		}
		*dst = &out
		return nil
	}
}

// stringsField replaces the default list; an empty sequence gives an empty list.
func stringsField(dst *[]string, chk check) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		seq, ok := e.value.(*ast.SequenceNode)
		if !ok {
			return d.typeErr(path, e, "a list of strings")
		}
		out := make([]string, 0, len(seq.Values))
		for i, it := range seq.Values {
			v, err := d.resolve(it)
			if err != nil {
				return err
			}
			ie := entry{line: line(it), value: v}
			if ie.line == 0 {
				ie.line = e.line
			}
			p := fmt.Sprintf("%s[%d]", path, i)
			if isNull(v) {
				return d.typeErr(p, ie, "a string")
			}
			s, err := d.stringValue(p, ie, chk)
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		*dst = out
		return nil
	}
}

// envField merges entries into *dst key by key. A null value is "".
func envField(dst *map[string]string) fieldFunc {
	return func(d *fileDecoder, path string, e entry) error {
		if isNull(e.value) {
			return nil
		}
		entries, err := d.mapping(e.value, 0)
		if err != nil {
			if _, ok := err.(*Error); ok {
				return err
			}
			return d.typeErr(path, e, "a mapping of NAME: value")
		}
		for _, sub := range entries {
			p := fmt.Sprintf("%s[%q]", path, sub.key)
			if !validEnvName(sub.key) {
				return d.errf(sub.line, "%s: invalid environment variable name %q: want [A-Za-z_][A-Za-z0-9_]*", path, sub.key)
			}
			v := ""
			if !isNull(sub.value) {
				if v, err = d.stringValue(p, sub, nil); err != nil {
					return err
				}
			}
			if *dst == nil {
				*dst = map[string]string{}
			}
			(*dst)[sub.key] = v
			d.lines[p] = sub.line
		}
		return nil
	}
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i], i == 0) {
			return false
		}
	}
	return true
}

// --- string checks -------------------------------------------------------
