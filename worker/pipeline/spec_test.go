package pipeline

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

const validSpec = `source: tweets
table: public.tweets
key: id
filter: retweeted_status == nil
columns:
  - name: id
    path: id
    type: bigint
    required: true
  - name: text
    path: text
    type: text
    clean: [trim, {truncate: 10}]
`

func TestSpecValid(t *testing.T) {
	t.Parallel()
	spec, err := ParseSpec("ok.yaml", []byte(validSpec))
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Tables) != 1 {
		t.Fatalf("parsed %d tables, want the one of the single-table form", len(spec.Tables))
	}
	ts := spec.Tables[0]
	if spec.Source != "tweets" || ts.Schema != "public" || ts.Table != "tweets" || len(ts.Key) != 1 || spec.Filter == "" ||
		len(ts.Columns) != 2 || ts.Columns[1].Clean[1].Name != "truncate" || ts.Action != ActionInsert || ts.OnConflict != ConflictIgnore {
		t.Fatalf("parsed %+v", spec)
	}
	table := ts.WorkerTable()
	if err := table.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(table.ColumnNames(), ","); got != "id,text" {
		t.Fatalf("columns %s", got)
	}
}

// TestSpecMistakes checks that each kind of mistake is reported with the
// file, the line, the field and what is wrong.
func TestSpecMistakes(t *testing.T) {
	t.Parallel()
	// edit replaces old with new in validSpec; the test fails if old is
	// not there, so the cases stay in step with the spec.
	edit := func(old, new string) string {
		if !strings.Contains(validSpec, old) {
			t.Fatalf("validSpec has no %q", old)
		}
		return strings.Replace(validSpec, old, new, 1)
	}
	tests := []struct {
		name string
		src  string
		want string // regexp matched against one error's text
	}{
		{"yaml syntax", edit("key: id", "key: [id"), `^bad\.yaml: not valid YAML: .*line`},
		{"empty file", "", `the file is empty`},
		{"not a mapping", "- a\n- b\n", `^bad\.yaml:1:1: must be a mapping with the fields source, filter, tables, table, key, explode, on_conflict, version, action, columns`},
		{"unknown top field", edit("key: id", "key: id\ntabel: x"), `^bad\.yaml:4:1: tabel: unknown field "tabel"; valid fields here are source, filter, tables, table, key, explode, on_conflict, version, action, columns`},
		{"field twice", edit("key: id", "key: id\nkey: id"), `^bad\.yaml:4:1: key: given twice`},
		{"missing source", edit("source: tweets\n", ""), `^bad\.yaml:1:1: source: missing; a spec needs source, table and columns`},
		{"bad source", edit("source: tweets", "source: a.b"), `^bad\.yaml:1:9: source: .*a\.b`},
		{"bad table", edit("table: public.tweets", "table: drop table;"), `^bad\.yaml:2:8: table: table name "drop table;" is not valid`},
		{"no columns", edit(validSpec[strings.Index(validSpec, "columns:"):], "columns: []\n"), `^bad\.yaml:5:10: columns: must be a non-empty list`},
		{"unknown column field", edit("    type: bigint\n", "    type: bigint\n    typo: 1\n"), `^bad\.yaml:9:5: columns\[0\] \(id\)\.typo: unknown field "typo"; valid fields here are name, path, element, meta, type, layout, required, default, clean`},
		{"column without name", edit("  - name: id\n    path: id", "  - path: id"), `^bad\.yaml:6:5: columns\[0\]\.name: missing`},
		{"bad column name", edit("name: text", "name: 2text"), `columns\[1\] \(2text\)\.name: "2text" is not a plain SQL identifier`},
		{"duplicate column", edit("name: text", "name: id"), `^bad\.yaml:10:11: columns\[1\] \(id\)\.name: column "id" is declared twice`},
		{"missing path", edit("    path: text\n", ""), `columns\[1\] \(text\)\.path: missing; give the gjson path`},
		{"bad path", edit("path: text", "path: user..name"), `^bad\.yaml:11:11: columns\[1\] \(text\)\.path: "user\.\.name" has an empty component`},
		{"unknown type", edit("type: bigint", "type: bigin"), `^bad\.yaml:8:11: columns\[0\] \(id\)\.type: unknown type "bigin"; valid types are text, bigint, integer, double precision, numeric, boolean, timestamptz, date, jsonb, text\[\], bigint\[\]`},
		{"missing type", edit("    type: text\n", ""), `columns\[1\] \(text\)\.type: missing; valid types are text, bigint`},
		{"layout on text", edit("    type: text\n", "    type: text\n    layout: ruby\n"), `columns\[1\] \(text\)\.layout: only timestamptz and date columns take a layout`},
		{"bad layout", edit("    type: text\n", "    type: timestamptz\n    layout: yyyy-mm-dd\n"), `columns\[1\] \(text\)\.layout: "yyyy-mm-dd" is not a layout: use rfc3339, ruby, unix, unix_ms or a Go layout`},
		{"unix date", edit("    type: text\n", "    type: date\n    layout: unix\n"), `date columns take a Go layout`},
		{"required not bool", edit("required: true", "required: yes please"), `columns\[0\] \(id\)\.required: must be true or false`},
		{"required and default", edit("required: true", "required: true\n    default: 1"), `columns\[0\] \(id\)\.default: a required column cannot have a default`},
		{"default of wrong type", edit("    type: text\n", "    type: integer\n    default: many\n"), `^bad\.yaml:13:14: columns\[1\] \(text\)\.default: the default "many" does not fit type integer`},
		{"null default", edit("    type: text\n", "    type: text\n    default: null\n"), `a null default is the same as no default`},
		{"unknown step", edit("clean: [trim,", "clean: [trimm,"), `^bad\.yaml:13:13: columns\[1\] \(text\)\.clean\[0\]: unknown cleaning step "trimm"; steps are trim, lower, upper, nfc`},
		{"step without argument", edit("{truncate: 10}", "truncate"), `clean\[1\]: step truncate needs a whole number argument \(at least 1\), e\.g\. \{truncate: 280\}`},
		{"bad step argument", edit("{truncate: 10}", "{max_marks: lots}"), `clean\[1\]: step max_marks needs a whole number argument`},
		{"bad regexp", edit("{truncate: 10}", "{replace: {pattern: '(', with: ''}}"), `clean\[1\]: step replace: pattern "\(" is not a valid regular expression`},
		{"clean on jsonb", edit("    type: text\n", "    type: jsonb\n"), `columns\[1\] \(text\)\.clean: jsonb values are stored as they are`},
		{"meta and path", edit("    path: text\n", "    path: text\n    meta: seq\n"), `columns\[1\] \(text\)\.meta: a column takes its value from the line \(path\) or from the line's metadata \(meta\), not both`},
		{"unknown meta", edit("    path: text\n", "    meta: subject\n"), `^bad\.yaml:11:11: columns\[1\] \(text\)\.meta: unknown metadata "subject"; valid are seq \(bigint\), line_id \(text\), source \(text\) and received_at \(timestamptz\)`},
		{"meta of wrong type", edit("    path: text\n", "    meta: received_at\n"), `columns\[1\] \(text\)\.type: meta received_at is timestamptz, not text`},
		{"meta with cleaning", edit("    path: text\n", "    meta: source\n"), `columns\[1\] \(text\)\.clean: a meta column is always present and stored as it is; drop clean`},
		{"unknown key", edit("key: id", "key: ident"), `^bad\.yaml:3:6: key: "ident" is not one of the columns \(id, text\)`},
		{"nullable key", edit("key: id", "key: [id, text]"), `^bad\.yaml:3:11: key\[1\]: key column "text" must be required: true`},
		{"empty key", edit("key: id", "key: []"), `key: is empty`},
		{"line_id without key", strings.Replace(edit("key: id\n", ""), "name: text", "name: line_id", 1), `columns: a column is named "line_id", which is the key column a spec without a key gets`},
		{"filter syntax", edit("retweeted_status == nil", "retweeted_status == "), `^bad\.yaml:4:9: filter: not a valid filter expression`},
		{"filter not boolean", edit("retweeted_status == nil", "1 + 2"), `^bad\.yaml:4:9: filter: not a valid filter expression.*\n?.*bool`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseSpec("bad.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.src)
			}
			re := regexp.MustCompile("(?s)" + tt.want)
			for _, e := range unjoin(err) {
				var se *SpecError
				if !errors.As(e, &se) {
					t.Errorf("error %v is not a *SpecError", e)
				}
				if re.MatchString(e.Error()) {
					return
				}
			}
			t.Errorf("no error matches %s; got:\n%v", tt.want, err)
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// TestSpecReportsEveryMistake: one run lists all mistakes, not the first.
func TestSpecReportsEveryMistake(t *testing.T) {
	t.Parallel()
	src := strings.NewReplacer("type: bigint", "type: bigin", "clean: [trim,", "clean: [trimm,", "key: id", "key: nope").Replace(validSpec)
	_, err := ParseSpec("bad.yaml", []byte(src))
	if n := len(unjoin(err)); n != 3 {
		t.Fatalf("%d errors, want 3:\n%v", n, err)
	}
}

// TestShippedSpecs loads the specs in deploy/pipelines and the one in the
// README, so that what users copy works.
func TestShippedSpecs(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"tweets.yaml", "tweets-full.yaml"} {
		if _, err := Load("../../deploy/pipelines/" + f); err != nil {
			t.Fatal(err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Pipelines.*?```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no yaml block in its Pipelines section")
	}
	spec, err := ParseSpec("README.md", m[1])
	if err != nil {
		t.Fatalf("the README's example spec: %v", err)
	}
	if _, err := New(spec); err != nil {
		t.Fatal(err)
	}
}

// TestSpecTablesMistakes: what the several-tables form checks, each
// mistake with its entry, field and what would be valid.
func TestSpecTablesMistakes(t *testing.T) {
	t.Parallel()
	const base = `source: feed
tables:
  - table: tweets
    key: id
    on_conflict: update
    version: n
    columns:
      - {name: id, path: id, type: bigint, required: true}
      - {name: n, path: n, type: bigint, required: true}
  - table: tags
    key: [id, tag]
    explode: tags
    columns:
      - {name: id, path: id, type: bigint, required: true}
      - {name: tag, element: "@this", type: text, required: true}
  - table: tweets
    action: delete
    filter: delete != nil
    columns:
      - {name: id, path: delete.id, type: bigint, required: true}
`
	if _, err := ParseSpec("ok.yaml", []byte(base)); err != nil {
		t.Fatalf("the base spec: %v", err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("base has no %q", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	tests := []struct{ name, src, want string }{
		{"table beside tables", edit("source: feed\n", "source: feed\ntable: x\n"), `table: with tables, table belongs in each entry of tables`},
		{"empty tables", "source: feed\ntables: []\n", `tables: must be a non-empty list of tables`},
		{"entry without columns", edit("  - table: tags\n    key: [id, tag]\n    explode: tags\n    columns:\n      - {name: id, path: id, type: bigint, required: true}\n      - {name: tag, element: \"@this\", type: text, required: true}\n", "  - table: tags\n"), `tables\[1\] \(tags\)\.columns: missing; every entry of tables needs table and columns`},
		{"unknown action", edit("action: delete", "action: remove"), `tables\[2\] \(tweets\)\.action: unknown action "remove"; valid are insert \(the default\) and delete`},
		{"unknown on_conflict", edit("on_conflict: update", "on_conflict: replace"), `tables\[0\] \(tweets\)\.on_conflict: unknown on_conflict "replace"`},
		{"version without update", edit("    on_conflict: update\n", ""), `tables\[0\] \(tweets\)\.version: a version orders updates; it needs on_conflict: update`},
		{"version not a column", edit("version: n", "version: m"), `version: "m" is not one of the columns \(id, n\)`},
		{"version of text", edit("{name: n, path: n, type: bigint", "{name: n, path: n, type: text"), `version column "n" is text; a version must be a number or a time`},
		{"update without key", edit("    key: id\n    on_conflict", "    on_conflict"), `on_conflict: an update needs a key saying which row a line updates`},
		{"explode without key", edit("    key: [id, tag]\n", ""), `tables\[1\] \(tags\)\.explode: the rows of an exploded array need a key`},
		{"element without explode", edit("    explode: tags\n", ""), `column "tag" reads element "@this", but the table has no explode`},
		{"element and path", edit(`{name: tag, element: "@this"`, `{name: tag, path: x, element: "@this"`), `element: a column takes its value from the line \(path\), the exploded element \(element\) or the line's metadata \(meta\): one of them`},
		{"two entries fill a table", edit("  - table: tags\n", "  - table: tweets\n"), `tables\[1\] \(tweets\)\.table: table "tweets" is filled by tables\[0\] \(tweets\) already`},
		{"delete without filter", edit("    filter: delete != nil\n", ""), `tables\[2\] \(tweets\)\.filter: a delete entry needs a filter of its own`},
		{"delete with a key", edit("    action: delete\n", "    action: delete\n    key: id\n"), `tables\[2\] \(tweets\)\.key: a delete entry takes its key from the table it deletes from; drop key`},
		{"delete of an unfilled table", edit("  - table: tweets\n    action: delete", "  - table: other\n    action: delete"), `no entry fills "other"`},
		{"delete of a non-key column", edit("{name: id, path: delete.id,", "{name: n, path: delete.id,"), `column "n" is not part of the key of tables\[0\] \(tweets\) \(id\)`},
		{"delete of another type", edit("{name: id, path: delete.id, type: bigint", "{name: id, path: delete.id, type: text"), `column "id" is text here and bigint in tables\[0\] \(tweets\)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseSpec("bad.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.src)
			}
			if !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Errorf("no error matches %s; got:\n%v", tt.want, err)
			}
		})
	}
}
