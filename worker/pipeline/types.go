package pipeline

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/tidwall/gjson"
)

// Type is a column's PostgreSQL type.
type Type uint8

// The column types a spec may use.
const (
	TypeText Type = iota + 1
	TypeBigint
	TypeInteger
	TypeDouble
	TypeNumeric
	TypeBoolean
	TypeTimestamptz
	TypeDate
	TypeJSONB
	TypeTextArray
	TypeBigintArray
)

var typeNames = []struct {
	t    Type
	name string
}{
	{TypeText, "text"},
	{TypeBigint, "bigint"},
	{TypeInteger, "integer"},
	{TypeDouble, "double precision"},
	{TypeNumeric, "numeric"},
	{TypeBoolean, "boolean"},
	{TypeTimestamptz, "timestamptz"},
	{TypeDate, "date"},
	{TypeJSONB, "jsonb"},
	{TypeTextArray, "text[]"},
	{TypeBigintArray, "bigint[]"},
}

// String returns the type as written in CREATE TABLE, such as "bigint".
func (t Type) String() string {
	for _, n := range typeNames {
		if n.t == t {
			return n.name
		}
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

func parseType(s string) (Type, bool) {
	s = strings.Join(strings.Fields(strings.ToLower(s)), " ")
	for _, n := range typeNames {
		if n.name == s {
			return n.t, true
		}
	}
	return 0, false
}

func typeList() string {
	names := make([]string, len(typeNames))
	for i, n := range typeNames {
		names[i] = n.name
	}
	return strings.Join(names, ", ")
}

// Named layouts of timestamptz and date columns.
const (
	LayoutRFC3339 = "rfc3339"
	LayoutRuby    = "ruby"
	LayoutUnix    = "unix"
	LayoutUnixMs  = "unix_ms"
)

var namedLayouts = map[string]string{
	LayoutRFC3339: time.RFC3339Nano,
	LayoutRuby:    time.RubyDate,
}

// checkLayout reports whether layout can parse values of a column of type t.
func checkLayout(t Type, layout string) error {
	if layout == LayoutUnix || layout == LayoutUnixMs {
		if t == TypeDate {
			return fmt.Errorf("date columns take a Go layout such as 2006-01-02, not %s", layout)
		}
		return nil
	}
	if _, ok := namedLayouts[layout]; ok {
		return nil
	}
	// A usable Go layout formats the reference time and parses it back.
	ref := time.Date(2006, 1, 2, 15, 4, 5, 0, time.FixedZone("", -7*3600))
	if !strings.Contains(layout, "2006") && !strings.Contains(layout, "06") {
		return fmt.Errorf("%q is not a layout: use rfc3339, ruby, unix, unix_ms or a Go layout written with the reference time, e.g. 2006-01-02 15:04:05", layout)
	}
	if _, err := time.Parse(layout, ref.Format(layout)); err != nil {
		return fmt.Errorf("%q is not a usable Go layout (%v); write it with the reference time, e.g. 2006-01-02 15:04:05", layout, err)
	}
	return nil
}

// Reasons a pipeline rejects or filters a line. They count outcomes, so the
// set is small and fixed.
const (
	// ReasonInvalidJSON: the line is not one JSON value in UTF-8.
	ReasonInvalidJSON = "invalid_json"
	// ReasonMissingField: a required column's value is missing, null or
	// was made NULL by cleaning.
	ReasonMissingField = "missing_field"
	// ReasonBadValue: a value cannot be converted to its column's type.
	ReasonBadValue = "bad_value"
	// ReasonFilterError: the filter failed on the line (e.g. comparing a
	// string with a number); the line is rejected, not filtered.
	ReasonFilterError = "filter_error"
	// ReasonFiltered: the filter did not keep the line (outcome Filter).
	ReasonFiltered = "filtered"
)

// column is a compiled column: its spec, where its value is extracted and
// how it is parsed.
type column struct {
	ColumnSpec
	path      int
	layout    string
	epochUnit time.Duration
}

func newColumn(spec ColumnSpec) column {
	c := column{ColumnSpec: spec, layout: spec.Layout}
	switch spec.Layout {
	case LayoutUnix:
		c.epochUnit = time.Second
	case LayoutUnixMs:
		c.epochUnit = time.Millisecond
	case "":
		if spec.Type == TypeDate {
			c.layout = time.DateOnly
		} else {
			c.layout = time.RFC3339Nano
		}
	default:
		if l, ok := namedLayouts[spec.Layout]; ok {
			c.layout = l
		}
	}
	return c
}

// value returns the column's value for r, applying default and required.
func (c *column) value(r gjson.Result) (any, string, string) {
	v, reason, detail := c.convert(r, true)
	if reason != "" {
		return nil, reason, detail
	}
	if v == nil {
		switch {
		case c.HasDefault:
			return c.Default, "", ""
		case c.Required:
			if r.Exists() && r.Type != gjson.Null {
				return nil, ReasonMissingField, fmt.Sprintf("column %s: %s: cleaning left nothing", c.Name, c.source())
			}
			return nil, ReasonMissingField, fmt.Sprintf("column %s: %s is missing or null", c.Name, c.source())
		}
	}
	return v, "", ""
}

// convert turns r into a value pgx encodes for the column's type: nil for
// a missing or null value (or one cleaning made NULL), else a string,
// int64, int32, float64, pgtype.Numeric, bool, time.Time, []byte,
// []string or []int64. clean applies the cleaning steps to strings.
func (c *column) convert(r gjson.Result, clean bool) (any, string, string) {
	if !r.Exists() || r.Type == gjson.Null {
		return nil, "", ""
	}
	switch c.Type {
	case TypeJSONB:
		if err := checkJSONB(r.Raw); err != nil {
			return nil, ReasonBadValue, c.explain(r, err)
		}
		return unsafeBytes(r.Raw), "", ""
	case TypeTextArray, TypeBigintArray:
		if !r.IsArray() {
			return nil, ReasonBadValue, c.explain(r, fmt.Errorf("expected an array for %s", c.Type))
		}
		return c.array(r, clean)
	}
	var s string
	switch r.Type {
	case gjson.String:
		s = r.Str
		if clean {
			var ok bool
			if s, ok = applySteps(c.Clean, s); !ok {
				return nil, "", ""
			}
		}
	case gjson.JSON:
		return nil, ReasonBadValue, c.explain(r, fmt.Errorf("expected a single value for %s, got an object or array", c.Type))
	default:
		s = r.Raw
	}
	v, err := c.parse(s, r.Type)
	if err != nil {
		return nil, ReasonBadValue, c.explain(r, err)
	}
	return v, "", ""
}

func (c *column) explain(r gjson.Result, err error) string {
	raw := r.Raw
	if len(raw) > 64 {
		raw = raw[:64] + "…"
	}
	return fmt.Sprintf("column %s: %s: %v (value %s)", c.Name, c.source(), err, strings.ToValidUTF8(raw, "\uFFFD"))
}

// source names where the column's value comes from, for messages.
func (c *column) source() string {
	if c.Element != "" {
		return "element " + c.Element
	}
	return "path " + c.Path
}

// parse converts the text of a scalar of JSON type jt.
func (c *column) parse(s string, jt gjson.Type) (any, error) {
	switch c.Type {
	case TypeText:
		return text(s)
	case TypeBigint:
		return parseInt(s, 64)
	case TypeInteger:
		n, err := parseInt(s, 32)
		return int32(n), err
	case TypeDouble:
		if jt == gjson.True || jt == gjson.False {
			return nil, errors.New("expected a number, got a boolean")
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	case TypeNumeric:
		if jt == gjson.True || jt == gjson.False {
			return nil, errors.New("expected a number, got a boolean")
		}
		var n pgtype.Numeric
		if _, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		if err := n.Scan(strings.TrimSpace(s)); err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return n, nil
	case TypeBoolean:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not a boolean (true, false, 1, 0, t, f)", s)
		}
		return b, nil
	case TypeTimestamptz, TypeDate:
		return c.parseTime(s, jt)
	}
	return nil, fmt.Errorf("type %s has no scalar conversion", c.Type)
}

// text checks that s fits a text value: PostgreSQL refuses NUL, and every
// value must be UTF-8 (invalid bytes become U+FFFD).
func text(s string) (string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return "", errors.New("contains a NUL character, which PostgreSQL text cannot hold (add the strip_control step)")
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s, nil
}

// parseInt parses an integer written plainly, in exponent form or with a
// zero fraction ("12", "1.2e3", "12.0"), within bits.
func parseInt(s string, bitSize int) (int64, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, bitSize)
	if err == nil {
		return n, nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%s is out of range for a %d-bit integer", s, bitSize)
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || f != math.Trunc(f) {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	limit := math.Ldexp(1, bitSize-1)
	if f < -limit || f >= limit {
		return 0, fmt.Errorf("%s is out of range for a %d-bit integer", s, bitSize)
	}
	return int64(f), nil
}

func (c *column) parseTime(s string, jt gjson.Type) (time.Time, error) {
	if c.epochUnit != 0 {
		s = strings.TrimSpace(s)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			if c.epochUnit == time.Second {
				return time.Unix(n, 0).UTC(), nil
			}
			return time.UnixMilli(n).UTC(), nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e15 {
			return time.Time{}, fmt.Errorf("%q is not a %s time", s, c.Layout)
		}
		return time.UnixMicro(int64(math.Round(f * float64(c.epochUnit/time.Microsecond)))).UTC(), nil
	}
	if jt != gjson.String {
		return time.Time{}, fmt.Errorf("expected a string in layout %s", c.layoutName())
	}
	t, err := time.Parse(c.layout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q does not match layout %s", s, c.layoutName())
	}
	if c.Type == TypeDate {
		y, m, d := t.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), nil
	}
	return t, nil
}

func (c *column) layoutName() string {
	if c.Layout == "" {
		if c.Type == TypeDate {
			return time.DateOnly
		}
		return LayoutRFC3339
	}
	return c.Layout
}

// array converts a JSON array for a text[] or bigint[] column. Null
// elements, and elements cleaning makes NULL, are left out.
func (c *column) array(r gjson.Result, clean bool) (any, string, string) {
	var (
		texts  []string
		ints   []int64
		reason string
		detail string
	)
	if c.Type == TypeTextArray {
		texts = []string{}
	} else {
		ints = []int64{}
	}
	r.ForEach(func(_, e gjson.Result) bool {
		if e.Type == gjson.Null {
			return true
		}
		if e.Type == gjson.JSON {
			reason, detail = ReasonBadValue, c.explain(r, errors.New("an element is an object or array"))
			return false
		}
		s := e.Raw
		if e.Type == gjson.String {
			s = e.Str
			if clean {
				var ok bool
				if s, ok = applySteps(c.Clean, s); !ok {
					return true
				}
			}
		}
		var err error
		if c.Type == TypeTextArray {
			if s, err = text(s); err == nil {
				texts = append(texts, s)
			}
		} else {
			var n int64
			if n, err = parseInt(s, 64); err == nil {
				ints = append(ints, n)
			}
		}
		if err != nil {
			reason, detail = ReasonBadValue, c.explain(r, fmt.Errorf("element %s: %w", e.Raw, err))
			return false
		}
		return true
	})
	if reason != "" {
		return nil, reason, detail
	}
	if c.Type == TypeTextArray {
		return texts, "", ""
	}
	return ints, "", ""
}
