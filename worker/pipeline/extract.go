package pipeline

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/jetline/jetline/worker"
)

// extractor finds the values of a fixed set of gjson paths in a line
// without decoding it. The line is scanned once, by [worker.ScanJSON],
// which also validates it and locates the members of its top-level object;
// each path then starts from its first key's member, so the rest of the
// path only walks that member's value. Paths that do not start with a
// plain key (modifiers, wildcards, queries) are resolved on the whole line.
type extractor struct {
	paths []extractPath
	// byKey maps a top-level key to the indices of the paths starting
	// with it.
	byKey map[string][]int
	// whole lists the paths resolved on the whole line.
	whole []int
}

type extractPath struct {
	path string
	// rest is the path after the first key; "" when the path is the key.
	rest string
	// whole means the path is resolved on the whole line.
	whole bool
}

// add returns the index of path, adding it if it is new.
func (e *extractor) add(path string) int {
	for i, p := range e.paths {
		if p.path == path {
			return i
		}
	}
	if e.byKey == nil {
		e.byKey = map[string][]int{}
	}
	i := len(e.paths)
	key, rest, plain := splitPath(path)
	e.paths = append(e.paths, extractPath{path: path, rest: rest, whole: !plain})
	if plain {
		e.byKey[key] = append(e.byKey[key], i)
	} else {
		e.whole = append(e.whole, i)
	}
	return i
}

// splitPath splits a gjson path into its first key, unescaped, and the
// rest. plain is false when the first component is not a plain key.
func splitPath(path string) (key, rest string, plain bool) {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch c {
		case '\\':
			if i+1 < len(path) {
				i++
				b.WriteByte(path[i])
			}
			continue
		case '.':
			return b.String(), path[i+1:], b.Len() > 0
		case '*', '?', '#', '@', '|', '{', '[', '!', '=', '<', '>', '%', ':':
			return "", "", false
		}
		b.WriteByte(c)
	}
	return b.String(), "", b.Len() > 0
}

// checkPath reports what is wrong with a column's path, if anything gjson
// can tell without a document.
func checkPath(path string) error {
	switch {
	case strings.HasPrefix(path, ".") || strings.HasSuffix(path, ".") && !strings.HasSuffix(path, `\.`):
		return fmt.Errorf("%q has an empty component; write paths like user.screen_name (gjson syntax)", path)
	case strings.Contains(path, ".."):
		return fmt.Errorf("%q has an empty component; write paths like user.screen_name (gjson syntax)", path)
	case strings.Count(path, "[") != strings.Count(path, "]") || strings.Count(path, "{") != strings.Count(path, "}"):
		return fmt.Errorf("%q has unbalanced brackets (gjson syntax)", path)
	}
	return nil
}

// extraction is the per-line state of an extractor, reused across lines.
type extraction struct {
	doc     string
	members []worker.JSONMember
	// raw[i] is the value of path i's first key, when state[i] is found.
	raw    []string
	values []gjson.Result
	state  []pathState
}

type pathState uint8

const (
	pathMissing pathState = iota
	pathFound
	pathResolved
)

// run scans data and locates the first key of every path. It returns a
// Reject result when data is not JSON. Values are resolved on demand by
// [extractor.value], so a line the filter drops pays only for what the
// filter reads.
func (e *extractor) run(data []byte, x *extraction) worker.Result {
	var res worker.Result
	x.members, res = worker.ScanJSON(data, x.members[:0])
	if res.Outcome == worker.Reject && res.Reason == worker.ReasonInvalidJSON {
		res.Reason = ReasonInvalidJSON
		return res
	}
	n := len(e.paths)
	if cap(x.values) < n {
		x.raw = make([]string, n)
		x.values = make([]gjson.Result, n)
		x.state = make([]pathState, n)
	}
	x.raw, x.values, x.state = x.raw[:n], x.values[:n], x.state[:n]
	clear(x.state)
	x.doc = unsafeString(data)
	for _, m := range x.members {
		idx, ok := e.byKey[unsafeString(data[m.KeyStart:m.KeyEnd])]
		if !ok {
			continue
		}
		for _, i := range idx {
			// The first of duplicate keys wins, as in gjson.
			if x.state[i] == pathMissing {
				x.state[i] = pathFound
				x.raw[i] = unsafeString(data[m.ValueStart:m.ValueEnd])
			}
		}
	}
	for _, i := range e.whole {
		x.state[i] = pathFound
	}
	return worker.Result{Outcome: worker.Insert}
}

// value returns the value of path i in the line x was run on; a zero
// Result when it is missing.
func (e *extractor) value(x *extraction, i int) gjson.Result {
	switch x.state[i] {
	case pathMissing:
		return gjson.Result{}
	case pathResolved:
		return x.values[i]
	}
	p := e.paths[i]
	var r gjson.Result
	switch {
	case p.whole:
		r = gjson.Get(x.doc, p.path)
	case p.rest == "":
		r = parseJSONValue(x.raw[i])
	default:
		r = gjson.Get(x.raw[i], p.rest)
	}
	x.values[i], x.state[i] = r, pathResolved
	return r
}

// parseJSONValue returns the Result of one JSON value, as gjson.Get would.
func parseJSONValue(raw string) gjson.Result {
	r := gjson.Parse(raw)
	if r.Type == gjson.Null && raw != "null" {
		return gjson.Result{}
	}
	return r
}

// checkJSONB reports whether a jsonb column can store raw.
func checkJSONB(raw string) error {
	if _, res := worker.ScanJSON(unsafeBytes(raw), nil); res.Outcome != worker.Insert {
		return errors.New(res.Detail)
	}
	return nil
}

// unsafeString views b as a string without copying. The string must not
// outlive b's contents.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// unsafeBytes views s as bytes without copying; they must not be written.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
