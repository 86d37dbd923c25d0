package pipeline

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jetline/jetline/worker"
)

// onePipeline compiles a spec with a single column v declared by column
// (YAML flow mapping fields, without name and path).
func onePipeline(t *testing.T, column string) *Pipeline {
	t.Helper()
	src := fmt.Sprintf("source: s\ntable: t\ncolumns:\n  - {name: v, path: v, %s}\n", column)
	spec, err := ParseSpec("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("spec %s: %v", column, err)
	}
	p, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// transformOne runs p on data and returns the result and the row.
func transformOne(p *Pipeline, data string) (worker.Result, []any) {
	line := worker.Line{ID: "gw.1.42", Seq: 42, Source: "s", Data: []byte(data)}
	return transformLine(p, &line)
}

// transformLine runs p on line and returns the result and the first row
// of the first table (a row of nils when it made none).
func transformLine(p *Pipeline, line *worker.Line) (worker.Result, []any) {
	rows := worker.NewRows(p.Tables())
	res := rows.Transform(p, line, 0)
	if tr := rows.Table(0); len(tr.Rows) > 0 {
		return res, tr.Rows[0]
	}
	return res, make([]any, len(p.Tables()[0].Columns))
}

func mustNumeric(s string) pgtype.Numeric {
	var n pgtype.Numeric
	if err := n.Scan(s); err != nil {
		panic(err)
	}
	return n
}

func TestTypes(t *testing.T) {
	t.Parallel()
	ts := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			panic(err)
		}
		return v
	}
	tests := []struct {
		column string
		value  string // JSON of v; "" leaves v out
		want   any    // the row value, or a reason string prefixed with "!"
	}{
		{"type: text", `"hello"`, "hello"},
		{"type: text", `"caf\u00e9 \ud83d\ude00"`, "café 😀"},
		{"type: text", `"\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67"`, "👨‍👩‍👧"},
		{"type: text", `"lone \udc00 surrogate"`, "lone \uFFFD surrogate"},
		{"type: text", `12.50`, "12.50"},
		{"type: text", `true`, "true"},
		{"type: text", `{"a":1}`, "!bad_value"},
		{"type: text", `"nul \u0000 inside"`, "!bad_value"},
		{"type: text, clean: [strip_control]", `"nul \u0000 inside"`, "nul  inside"},
		{"type: text", `null`, nil},
		{"type: text", ``, nil},
		{"type: text, required: true", ``, "!missing_field"},
		{"type: text, required: true", `null`, "!missing_field"},
		{"type: text, required: true, clean: [trim, empty_null]", `"   "`, "!missing_field"},
		{"type: text, default: none", ``, "none"},
		{"type: text, default: none, clean: [empty_null]", `""`, "none"},
		{"type: bigint", `9007199254740993`, int64(9007199254740993)},
		{"type: bigint", `"1234567890123456789"`, int64(1234567890123456789)},
		{"type: bigint", `-12`, int64(-12)},
		{"type: bigint", `1.5e3`, int64(1500)},
		{"type: bigint", `12.0`, int64(12)},
		{"type: bigint", `12.5`, "!bad_value"},
		{"type: bigint", `9223372036854775808`, "!bad_value"},
		{"type: bigint", `"12abc"`, "!bad_value"},
		{"type: bigint", `true`, "!bad_value"},
		{"type: bigint, clean: [trim]", `" 77 "`, int64(77)},
		{"type: integer", `2147483647`, int32(math.MaxInt32)},
		{"type: integer", `2147483648`, "!bad_value"},
		{"type: integer", `-2147483648`, int32(math.MinInt32)},
		{"type: integer, default: 0", ``, int32(0)},
		{"type: double precision", `1.25`, 1.25},
		{"type: double precision", `"-3e2"`, -300.0},
		{"type: double precision", `"x"`, "!bad_value"},
		{"type: numeric", `12345678901234567890.123456789`, mustNumeric("12345678901234567890.123456789")},
		{"type: numeric", `"0.1"`, mustNumeric("0.1")},
		{"type: numeric", `"one"`, "!bad_value"},
		{"type: boolean", `true`, true},
		{"type: boolean", `false`, false},
		{"type: boolean", `"t"`, true},
		{"type: boolean", `0`, false},
		{"type: boolean", `"maybe"`, "!bad_value"},
		{"type: timestamptz", `"2018-01-02T03:04:05.123Z"`, ts("2018-01-02T03:04:05.123Z")},
		{"type: timestamptz", `"2018-01-02T03:04:05+02:00"`, ts("2018-01-02T01:04:05Z")},
		{"type: timestamptz, layout: ruby", `"Mon Jan 02 15:04:05 -0700 2006"`, ts("2006-01-02T22:04:05Z")},
		{"type: timestamptz, layout: ruby", `"2006-01-02"`, "!bad_value"},
		{"type: timestamptz, layout: unix", `1514764800`, ts("2018-01-01T00:00:00Z")},
		{"type: timestamptz, layout: unix", `"1514764800.5"`, ts("2018-01-01T00:00:00.5Z")},
		{"type: timestamptz, layout: unix_ms", `"1514764800123"`, ts("2018-01-01T00:00:00.123Z")},
		{"type: timestamptz, layout: unix_ms", `1514764800123`, ts("2018-01-01T00:00:00.123Z")},
		{"type: timestamptz, layout: unix", `"soon"`, "!bad_value"},
		{"type: timestamptz, layout: '2006-01-02 15:04:05'", `"2018-05-06 07:08:09"`, ts("2018-05-06T07:08:09Z")},
		{"type: timestamptz", `1514764800`, "!bad_value"},
		{"type: date", `"2018-05-06"`, ts("2018-05-06T00:00:00Z")},
		{"type: date, layout: 02/01/2006", `"06/05/2018"`, ts("2018-05-06T00:00:00Z")},
		{"type: date", `"May 6"`, "!bad_value"},
		{"type: jsonb", `{"a": [1, "x"]}`, []byte(`{"a": [1, "x"]}`)},
		{"type: jsonb", `"s"`, []byte(`"s"`)},
		{"type: jsonb", `{"a": "\u0000"}`, "!bad_value"},
		{"type: jsonb", `null`, nil},
		{"type: 'text[]'", `["a", "B", null, 3]`, []string{"a", "B", "3"}},
		{"type: 'text[]', clean: [lower, trim, empty_null]", `[" A ", "", "  "]`, []string{"a"}},
		{"type: 'text[]'", `[]`, []string{}},
		{"type: 'text[]'", `"a"`, "!bad_value"},
		{"type: 'text[]'", `[{"a": 1}]`, "!bad_value"},
		{"type: 'text[]', default: []", ``, []string{}},
		{"type: 'bigint[]'", `[1, "2", 3e2]`, []int64{1, 2, 300}},
		{"type: 'bigint[]'", `[1, "x"]`, "!bad_value"},
		{"type: 'bigint[]', default: [7, 8]", `null`, []int64{7, 8}},
	}
	for _, tt := range tests {
		p := onePipeline(t, tt.column)
		data := `{"other": 1}`
		if tt.value != "" {
			data = `{"other": 1, "v": ` + tt.value + `}`
		}
		res, row := transformOne(p, data)
		if want, ok := tt.want.(string); ok && len(want) > 0 && want[0] == '!' {
			if res.Outcome != worker.Reject || res.Reason != want[1:] {
				t.Errorf("{%s} %s: got %v %s (%s) row %#v, want reject %s", tt.column, tt.value, res.Outcome, res.Reason, res.Detail, row[1], want[1:])
			}
			continue
		}
		if res.Outcome != worker.Insert {
			t.Errorf("{%s} %s: got %v %s (%s), want insert", tt.column, tt.value, res.Outcome, res.Reason, res.Detail)
			continue
		}
		got := row[1]
		if wt, ok := tt.want.(time.Time); ok {
			if gt, ok := got.(time.Time); !ok || !gt.Equal(wt) {
				t.Errorf("{%s} %s = %#v, want %s", tt.column, tt.value, got, wt)
			}
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("{%s} %s = %#v, want %#v", tt.column, tt.value, got, tt.want)
		}
		if row[0] != "gw.1.42" {
			t.Errorf("line_id column = %#v, want gw.1.42", row[0])
		}
	}
}
