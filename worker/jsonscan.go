package worker

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// jsonVerdict is what [scanJSON] found in a line.
type jsonVerdict uint8

const (
	// jsonOK means the line is one JSON value that a jsonb column accepts.
	jsonOK jsonVerdict = iota
	// jsonInvalid means the line is not JSON (RFC 8259, UTF-8 encoded).
	jsonInvalid
	// jsonUnsupportedEscape means the line is valid JSON that PostgreSQL's
	// jsonb refuses: a \u0000 escape (SQLSTATE 22P05) or a \uXXXX surrogate
	// escape that is not part of a high+low pair (22P02).
	jsonUnsupportedEscape
)

// maxJSONDepth is the deepest nesting of objects and arrays accepted, the
// same limit encoding/json applies.
const maxJSONDepth = 10000

// scanJSON checks that b holds exactly one JSON value, optionally surrounded
// by whitespace, encoded in valid UTF-8, and that jsonb can store it. It
// returns the verdict and, unless jsonOK, the byte offset of the problem.
//
// It exists because validation runs on every line and encoding/json.Valid
// is the worker's largest CPU cost after Postgres itself: on ~6 KB
// tweet-shaped lines json.Valid runs at ~340 MB/s and does not check UTF-8,
// which Postgres then rejects a whole batch for. scanJSON is a single pass
// without allocation that skips plain string bytes eight at a time; see
// BenchmarkScanJSON. FuzzScanJSON holds it to json.Valid && utf8.Valid.
func scanJSON(b []byte) (jsonVerdict, int) {
	return scanJSONMembers(b, nil)
}

// JSONMember locates one member of a line's top-level object by byte
// offsets into the line: the key between its quotes (escapes left as
// they are) and the value.
type JSONMember struct {
	KeyStart, KeyEnd     int
	ValueStart, ValueEnd int
}

// ScanJSON checks b the way [RawLanding] does and, if b is a JSON object,
// appends its members to members, in document order, so a caller can
// reach the fields it needs without a second pass. It returns the members
// and a Result: Insert when b is JSON that jsonb can store, else Reject
// with [ReasonInvalidJSON] (members are then incomplete) or
// [ReasonUnsupportedEscape] (members are complete: the document is JSON,
// only jsonb refuses it). It does not allocate unless members grows.
func ScanJSON(b []byte, members []JSONMember) ([]JSONMember, Result) {
	switch verdict, off := scanJSONMembers(b, &members); verdict {
	case jsonInvalid:
		return members, Result{Outcome: Reject, Reason: ReasonInvalidJSON, Detail: fmt.Sprintf("syntax error at byte %d of %d", off, len(b))}
	case jsonUnsupportedEscape:
		return members, Result{Outcome: Reject, Reason: ReasonUnsupportedEscape, Detail: fmt.Sprintf("jsonb cannot store the \\u escape at byte %d", off)}
	}
	return members, Result{Outcome: Insert}
}

// scanJSONMembers is [scanJSON] that also appends the members of a
// top-level object to *members, unless members is nil.
func scanJSONMembers(b []byte, members *[]JSONMember) (jsonVerdict, int) {
	// kinds is a bit stack of the open containers: 1 object, 0 array.
	var kinds [maxJSONDepth/64 + 1]uint64
	depth := 0
	unsupported := -1
	i := skipSpace(b, 0)
	for {
		// Parse one value starting at i.
		if i >= len(b) {
			return jsonInvalid, i
		}
		switch c := b[i]; c {
		case '{', '[':
			if depth == maxJSONDepth {
				return jsonInvalid, i
			}
			if c == '{' {
				kinds[depth/64] |= 1 << (depth % 64)
			} else {
				kinds[depth/64] &^= 1 << (depth % 64)
			}
			depth++
			i = skipSpace(b, i+1)
			if i < len(b) && (c == '{' && b[i] == '}' || c == '[' && b[i] == ']') {
				depth--
				i++
				break
			}
			if c == '{' {
				var ok bool
				start := i
				if i, ok = scanKey(b, i, &unsupported); !ok {
					return jsonInvalid, i
				}
				if depth == 1 && members != nil {
					*members = appendMember(*members, b, start, i)
				}
			}
			continue
		case '"':
			var ok bool
			if i, ok = scanString(b, i+1, &unsupported); !ok {
				return jsonInvalid, i
			}
		case 't':
			if !hasPrefixAt(b, i, "true") {
				return jsonInvalid, i
			}
			i += 4
		case 'f':
			if !hasPrefixAt(b, i, "false") {
				return jsonInvalid, i
			}
			i += 5
		case 'n':
			if !hasPrefixAt(b, i, "null") {
				return jsonInvalid, i
			}
			i += 4
		default:
			var ok bool
			if i, ok = scanNumber(b, i); !ok {
				return jsonInvalid, i
			}
		}

		// A value ended at i: close containers until one continues.
		for {
			if depth == 1 && members != nil && kinds[0]&1 != 0 {
				(*members)[len(*members)-1].ValueEnd = i
			}
			i = skipSpace(b, i)
			if depth == 0 {
				if i != len(b) {
					return jsonInvalid, i
				}
				if unsupported >= 0 {
					return jsonUnsupportedEscape, unsupported
				}
				return jsonOK, -1
			}
			if i >= len(b) {
				return jsonInvalid, i
			}
			inObject := kinds[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			c := b[i]
			if c == ',' {
				i = skipSpace(b, i+1)
				if inObject {
					var ok bool
					start := i
					if i, ok = scanKey(b, i, &unsupported); !ok {
						return jsonInvalid, i
					}
					if depth == 1 && members != nil {
						*members = appendMember(*members, b, start, i)
					}
				}
				break
			}
			if inObject && c == '}' || !inObject && c == ']' {
				depth--
				i++
				continue
			}
			return jsonInvalid, i
		}
	}
}

// appendMember appends the member whose key starts at the opening quote at
// keyStart and whose value starts at valueStart.
func appendMember(members []JSONMember, b []byte, keyStart, valueStart int) []JSONMember {
	// The key ends at the last quote before the colon.
	keyEnd := valueStart - 1
	for b[keyEnd] != '"' {
		keyEnd--
	}
	return append(members, JSONMember{KeyStart: keyStart + 1, KeyEnd: keyEnd, ValueStart: valueStart, ValueEnd: valueStart})
}

// scanKey scans `"key" :` and the whitespace after the colon, starting at
// the opening quote.
func scanKey(b []byte, i int, unsupported *int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := scanString(b, i+1, unsupported)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipSpace(b, i+1), true
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// scanString scans a string body starting just after its opening quote and
// returns the offset after the closing quote. The first unsupported escape
// is recorded in *unsupported.
func scanString(b []byte, i int, unsupported *int) (int, bool) {
	for {
		// Skip eight plain bytes at a time: none is '"', '\\', a control
		// character or non-ASCII.
		for i+8 <= len(b) {
			v := binary.LittleEndian.Uint64(b[i:])
			quote := v ^ ('"' * lsb)
			slash := v ^ ('\\' * lsb)
			special := (quote-lsb)&^quote | (slash-lsb)&^slash | (v - 0x20*lsb) | v
			if special&msb != 0 {
				// Borrows only flag bytes above a special one, so the
				// lowest flag is exact.
				i += bits.TrailingZeros64(special&msb) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			n, ok := scanEscape(b, i, unsupported)
			if !ok {
				return i, false
			}
			i = n
		case c < 0x20:
			return i, false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return i, false
			}
			i += size
		}
	}
}

// scanEscape scans the escape sequence at b[i] == '\\' and returns the
// offset after it.
func scanEscape(b []byte, i int, unsupported *int) (int, bool) {
	if i+1 >= len(b) {
		return i, false
	}
	switch b[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 2, true
	case 'u':
	default:
		return i, false
	}
	r, ok := hex4(b, i+2)
	if !ok {
		return i, false
	}
	switch {
	case r == 0:
		markUnsupported(unsupported, i)
	case r >= 0xDC00 && r <= 0xDFFF:
		// A low surrogate on its own; a pair is consumed below.
		markUnsupported(unsupported, i)
	case r >= 0xD800 && r <= 0xDBFF:
		if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
			lo, ok := hex4(b, i+8)
			if !ok {
				return i + 6, false
			}
			if lo >= 0xDC00 && lo <= 0xDFFF {
				return i + 12, true
			}
		}
		markUnsupported(unsupported, i)
	}
	return i + 6, true
}

func markUnsupported(unsupported *int, i int) {
	if *unsupported < 0 {
		*unsupported = i
	}
}

// hex4 decodes the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	d0, d1, d2, d3 := hexDigit[b[i]], hexDigit[b[i+1]], hexDigit[b[i+2]], hexDigit[b[i+3]]
	if (d0|d1|d2|d3)&0x10 != 0 {
		return 0, false
	}
	return rune(d0)<<12 | rune(d1)<<8 | rune(d2)<<4 | rune(d3), true
}

// hexDigit maps a byte to its hex value, or to 0x10 if it is not a hex
// digit.
var hexDigit = func() (t [256]byte) {
	for c := range t {
		switch {
		case '0' <= c && c <= '9':
			t[c] = byte(c - '0')
		case 'a' <= c && c <= 'f':
			t[c] = byte(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			t[c] = byte(c - 'A' + 10)
		default:
			t[c] = 0x10
		}
	}
	return t
}()

// scanNumber scans a number as RFC 8259 defines it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func hasPrefixAt(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}
