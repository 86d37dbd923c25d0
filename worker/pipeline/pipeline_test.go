package pipeline

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jetline/jetline/worker"
)

// everyType is a spec with a column of every type and every cleaning step,
// for the fuzz test.
const everyType = `source: fuzz
table: fuzz
filter: drop != true && (n == nil || n >= 0)
columns:
  - {name: t, path: t, type: text, clean: [nfc, strip_control, {max_marks: 1}, collapse_space, trim, lower, upper, {truncate: 5}, {replace: {pattern: 'a+', with: 'b'}}, empty_null]}
  - {name: b, path: n, type: bigint}
  - {name: i, path: n, type: integer}
  - {name: d, path: n, type: double precision}
  - {name: num, path: n, type: numeric}
  - {name: ok, path: ok, type: boolean}
  - {name: ts, path: ts, type: timestamptz, layout: ruby}
  - {name: ms, path: ts, type: timestamptz, layout: unix_ms}
  - {name: day, path: day, type: date}
  - {name: j, path: o, type: jsonb}
  - {name: ta, path: a.#.x, type: 'text[]', clean: [trim, empty_null]}
  - {name: ba, path: a, type: 'bigint[]'}
`

var reasons = []string{ReasonInvalidJSON, ReasonMissingField, ReasonBadValue, ReasonFilterError}

func FuzzTransform(f *testing.F) {
	spec, err := ParseSpec("fuzz.yaml", []byte(everyType))
	if err != nil {
		f.Fatal(err)
	}
	p, err := New(spec)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"t": "  Ｈｅｌｌｏ\u0000 ` + family + ` ", "n": 12, "ok": true, "ts": "Mon Jan 02 15:04:05 -0700 2006", "day": "2018-01-02", "o": {"x": [1]}, "a": [{"x": " y "}, 2]}`,
		`{"t": "Z\u0300\u0301\u0302\u0303", "n": "1e3", "ts": 1514764800123, "a": [1, 2, 3]}`,
		`{"t": "\ud83d\ude00\ud800", "n": -1}`, `{"drop": true}`, `{"n": "x"}`, `{"o": "\u0000"}`, `[1, 2]`, `"str"`, `{"t": "a`, "{\"t\": \"\xff\"}", ``,
	} {
		f.Add([]byte(s))
	}
	if sample, err := os.ReadFile("../../deploy/samples/tweets.ndjson"); err == nil {
		lines := bytes.Split(sample, []byte("\n"))
		// The hand-written lines at the end; small seeds keep the
		// fuzzer's minimisation quick.
		for _, l := range lines[len(lines)-20:] {
			if len(l) < 1024 {
				f.Add(l)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		line := worker.Line{ID: "fuzz.9", Seq: 9, Source: "fuzz", Data: data}
		res, row := transformLine(p, &line)
		switch res.Outcome {
		case worker.Insert:
			if row[0] != "fuzz.9" {
				t.Fatalf("line_id %v", row[0])
			}
			for i, v := range row {
				switch v := v.(type) {
				case string:
					if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
						t.Fatalf("column %d: text %q is not storable", i, v)
					}
				case []string:
					for _, s := range v {
						if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
							t.Fatalf("column %d: element %q is not storable", i, s)
						}
					}
				case []byte:
					if _, r := worker.ScanJSON(v, nil); r.Outcome != worker.Insert {
						t.Fatalf("column %d: jsonb %q: %s", i, v, r.Detail)
					}
				}
			}
		case worker.Filter:
			if res.Reason != ReasonFiltered {
				t.Fatalf("filtered with reason %q", res.Reason)
			}
		case worker.Reject:
			if !slices.Contains(reasons, res.Reason) || res.Detail == "" {
				t.Fatalf("rejected with reason %q, detail %q", res.Reason, res.Detail)
			}
		default:
			t.Fatalf("outcome %v", res.Outcome)
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("Transform modified the line")
		}
	})
}

func TestTransformLineIDKey(t *testing.T) {
	t.Parallel()
	p := onePipeline(t, "type: text")
	table := p.Tables()[0]
	if got := strings.Join(table.ColumnNames(), ","); got != "line_id,v" || table.Key[0] != "line_id" || table.Columns[0].Type != "text" {
		t.Fatalf("table %s key %v", got, table.Key)
	}
	if res, row := transformOne(p, `{"v": "x"}`); res.Outcome != worker.Insert || row[0] != "gw.1.42" || row[1] != "x" {
		t.Errorf("row %v (%v %s), want the line's identity as its key", row, res.Outcome, res.Detail)
	}
	for _, tt := range []struct {
		data   string
		reason string
	}{
		{`{"v": "x"`, ReasonInvalidJSON},
		{"{\"v\": \"\xff\"}", ReasonInvalidJSON},
		{`not json`, ReasonInvalidJSON},
		{``, ReasonInvalidJSON},
		{`{"v": "x"} {"v": "y"}`, ReasonInvalidJSON},
	} {
		if res, _ := transformOne(p, tt.data); res.Outcome != worker.Reject || res.Reason != tt.reason {
			t.Errorf("%q: %v %s, want reject %s", tt.data, res.Outcome, res.Reason, tt.reason)
		}
	}
	// Valid JSON that jsonb would refuse is fine for a typed table.
	if res, row := transformOne(p, `{"x": "\u0000", "v": "ok"}`); res.Outcome != worker.Insert || row[1] != "ok" {
		t.Errorf("line with a NUL escape elsewhere: %v %s %v", res.Outcome, res.Detail, row)
	}
	// Duplicate keys: the first wins.
	if _, row := transformOne(p, `{"v": "first", "v": "second"}`); row[1] != "first" {
		t.Errorf("duplicate key gave %v", row[1])
	}
	// Not an object: every path is missing.
	if res, row := transformOne(p, `[{"v": 1}]`); res.Outcome != worker.Insert || row[1] != nil {
		t.Errorf("array line: %v %v", res.Outcome, row)
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	doc := `{"user": {"screen_name": "ann", "a.b": "dotted"}, "entities": {"hashtags": [{"text": "x"}, {"text": "y"}]}, "list": [10, 20], "k.e.y": 5, "arr": [{"n": 1}]}`
	tests := []struct {
		path string
		want any
	}{
		{"user.screen_name", "ann"},
		{`user.a\.b`, "dotted"},
		{"entities.hashtags.#.text", []string{"x", "y"}},
		{"entities.hashtags.1.text", "y"},
		{"entities.hashtags.#", "2"},
		{"list.0", "10"},
		{`k\.e\.y`, "5"},
		{"arr.#(n==1).n", "1"},
		{"@this.user.screen_name", "ann"},
		{"user.missing", nil},
		{"nope.deeper", nil},
	}
	for _, tt := range tests {
		typ := "type: text"
		if _, ok := tt.want.([]string); ok {
			typ = "type: 'text[]'"
		}
		src := "source: s\ntable: t\ncolumns:\n  - name: v\n    path: '" + tt.path + "'\n    " + typ + "\n"
		spec, err := ParseSpec("p.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		p, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		res, row := transformOne(p, doc)
		if res.Outcome != worker.Insert {
			t.Errorf("%s: %v %s", tt.path, res.Outcome, res.Detail)
			continue
		}
		if got, want := row[1], tt.want; !equalValue(got, want) {
			t.Errorf("path %s = %#v, want %#v", tt.path, got, want)
		}
	}
}

func equalValue(a, b any) bool {
	as, aok := a.([]string)
	bs, bok := b.([]string)
	if aok || bok {
		return aok && bok && slices.Equal(as, bs)
	}
	return a == b
}

func TestMetaColumns(t *testing.T) {
	t.Parallel()
	spec, err := ParseSpec("meta.yaml", []byte(`source: s
table: t
key: [src, id]
columns:
  - {name: seq, meta: seq, type: bigint}
  - {name: src, meta: source, type: text}
  - {name: at, meta: received_at, type: timestamptz}
  - {name: id, meta: line_id, type: text}
  - {name: v, path: v, type: text}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2018, 1, 2, 3, 4, 5, 6, time.UTC)
	line := worker.Line{ID: "gw.3.77", Seq: 77, Source: "s", ReceivedAt: at, Data: []byte(`{"v": "x"}`)}
	res, row := transformLine(p, &line)
	if res.Outcome != worker.Insert {
		t.Fatalf("%+v", res)
	}
	if row[0] != int64(77) || row[1] != "s" || row[2] != at || row[3] != "gw.3.77" || row[4] != "x" {
		t.Fatalf("row %#v", row)
	}
	for _, c := range p.Tables()[0].Columns[:4] {
		if !c.NotNull {
			t.Errorf("meta column %s is nullable", c.Name)
		}
	}
}

// FuzzTransformTables fuzzes the shipped multi-table spec,
// deploy/pipelines/tweets-full.yaml, seeded with its sample. Whatever the
// line, the transform does not panic or modify it, and the rows it makes
// fit the line: a line makes a tweet and its user, or a delete, never
// both; hashtag and mention rows belong to the line's tweet and are no
// more than the line has objects; a line not stored makes no rows.
func FuzzTransformTables(f *testing.F) {
	p, err := Load("../../deploy/pipelines/tweets-full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	const tweets, users, hashtags, mentions, deletes = 0, 1, 2, 3, 4
	if n := len(p.Tables()); n != 5 || !p.Tables()[deletes].Delete {
		f.Fatalf("tweets-full.yaml has %d tables, want tweets, users, hashtags, mentions and the delete entry", n)
	}
	sample, err := os.ReadFile("../../deploy/samples/tweets-full.ndjson")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range bytes.Split(sample, []byte("\n")) {
		f.Add(l)
	}
	f.Add([]byte(`{"id":1,"user":{"id":2},"entities":{"hashtags":[{"text":"a\u0000"},{"text":"a"}],"user_mentions":[{"id":3},{"id":3}]}}`))
	f.Add([]byte(`{"created_at":"Tue Apr 03 14:13:20 +0000 2018","id":1,"user":{"id":2,"screen_name":"a"},"delete":{"status":{"id":1}},"entities":{"hashtags":[1,{"text":null}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		line := worker.Line{ID: "fuzz.9", Seq: 9, Source: "fuzz", Data: data}
		rows := worker.NewRows(p.Tables())
		res := rows.Transform(p, &line, 0)
		if !bytes.Equal(data, orig) {
			t.Fatal("Transform modified the line")
		}
		n := func(table int) int { return len(rows.Table(table).Rows) }
		switch res.Outcome {
		case worker.Insert:
			if (n(tweets) == 1) == (n(deletes) == 1) || n(tweets) > 1 || n(deletes) > 1 {
				t.Fatalf("%d tweet rows and %d deletes, want one of them", n(tweets), n(deletes))
			}
			if n(users) != n(tweets) {
				t.Fatalf("%d user rows for %d tweets", n(users), n(tweets))
			}
			if n(hashtags)+n(mentions) > bytes.Count(data, []byte("{")) {
				t.Fatalf("%d hashtag and %d mention rows from a line of %d objects", n(hashtags), n(mentions), bytes.Count(data, []byte("{")))
			}
			for _, child := range []int{hashtags, mentions} {
				for _, row := range rows.Table(child).Rows {
					if n(tweets) == 0 || row[0] != rows.Table(tweets).Rows[0][0] {
						t.Fatalf("table %s: row %v is not of the line's tweet", p.Tables()[child].Name, row)
					}
				}
			}
		case worker.Filter, worker.Reject:
			if res.Outcome == worker.Reject && (!slices.Contains(reasons, res.Reason) || res.Detail == "") {
				t.Fatalf("rejected with reason %q, detail %q", res.Reason, res.Detail)
			}
			if rows.Len() != 0 {
				t.Fatalf("%v line left %d rows", res.Outcome, rows.Len())
			}
		default:
			t.Fatalf("outcome %v", res.Outcome)
		}
	})
}
