package worker

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

func TestScanJSON(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth)
	tooDeep := strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1)
	tests := []struct {
		in   string
		want jsonVerdict
	}{
		{`{}`, jsonOK},
		{` {"a": [1, -2.5e+3, true, false, null, "x"], "b": {}} ` + "\r\n", jsonOK},
		{`"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"`, jsonOK},
		{"\"caf\u00e9 \U0001F600\"", jsonOK},
		{`0`, jsonOK},
		{`[]`, jsonOK},
		{deep, jsonOK},
		{``, jsonInvalid},
		{`   `, jsonInvalid},
		{`{"a":1`, jsonInvalid},
		{`{"a":1,}`, jsonInvalid},
		{`[1,]`, jsonInvalid},
		{`{"a" 1}`, jsonInvalid},
		{`{1:2}`, jsonInvalid},
		{`[1 2]`, jsonInvalid},
		{`{"a":1}}`, jsonInvalid},
		{`{"a":1} x`, jsonInvalid},
		{`{"a":1}{"b":2}`, jsonInvalid},
		{`[}`, jsonInvalid},
		{`01`, jsonInvalid},
		{`1.`, jsonInvalid},
		{`.5`, jsonInvalid},
		{`1e`, jsonInvalid},
		{`-`, jsonInvalid},
		{`+1`, jsonInvalid},
		{`tru`, jsonInvalid},
		{`nul`, jsonInvalid},
		{`NaN`, jsonInvalid},
		{`"abc`, jsonInvalid},
		{`"a\x"`, jsonInvalid},
		{`"\u12g4"`, jsonInvalid},
		{`"\u12"`, jsonInvalid},
		{"\"tab\tinside\"", jsonInvalid},
		{"\"bad utf8 \xff\"", jsonInvalid},
		{"\"truncated \xe2\x82\"", jsonInvalid},
		{"\"surrogate in utf8 \xed\xa0\x80\"", jsonInvalid},
		{`{"tweet":"half a line`, jsonInvalid},
		{tooDeep, jsonInvalid},
		{`"\u0000"`, jsonUnsupportedEscape},
		{`{"a":"x\u0000y"}`, jsonUnsupportedEscape},
		{`"\ud83d"`, jsonUnsupportedEscape},
		{`"\ud83d x"`, jsonUnsupportedEscape},
		{`"\ud83d\u0041"`, jsonUnsupportedEscape},
		{`"\ude00"`, jsonUnsupportedEscape},
		{`"\\u0000"`, jsonOK},
		{`{"a":"\u0000"`, jsonInvalid},
	}
	for _, tt := range tests {
		got, off := scanJSON([]byte(tt.in))
		if got != tt.want {
			name := tt.in
			if len(name) > 40 {
				name = name[:40] + "…"
			}
			t.Errorf("scanJSON(%q) = %d at %d, want %d", name, got, off, tt.want)
		}
	}
}

func TestScanJSONTweets(t *testing.T) {
	t.Parallel()
	for i := range 200 {
		line := tweetLine(i)
		if got, off := scanJSON(line); got != jsonOK {
			t.Fatalf("tweet %d: verdict %d at %d", i, got, off)
		}
		if got, _ := scanJSON(line[:len(line)-1]); got != jsonInvalid {
			t.Fatalf("truncated tweet %d: verdict %d, want invalid", i, got)
		}
	}
}

// FuzzScanJSON holds scanJSON to encoding/json plus UTF-8 validity: it must
// call a line invalid exactly when json.Valid or utf8.Valid does.
func FuzzScanJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e3,true,null,"x\u00e9\ud83d\ude00"]}`, `"\u0000"`, "\"\xff\"", `[1,]`, `-0.0E-1`} {
		f.Add([]byte(s))
	}
	f.Add(tweetLine(1))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, _ := scanJSON(b)
		want := json.Valid(b) && utf8.Valid(b)
		if (got != jsonInvalid) != want {
			t.Fatalf("scanJSON(%q) = %d, json.Valid && utf8.Valid = %v", b, got, want)
		}
	})
}

func BenchmarkScanJSON(b *testing.B) {
	line := tweetLine(3)
	b.Run("scanJSON", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		for b.Loop() {
			scanJSON(line)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(line)))
		for b.Loop() {
			_ = json.Valid(line) && utf8.Valid(line)
		}
	})
}

// TestScanJSONAgreesWithPostgres checks that what scanJSON accepts jsonb
// accepts, and what it calls an unsupported escape jsonb refuses.
func TestScanJSONAgreesWithPostgres(t *testing.T) {
	t.Parallel()
	pool := newPool(t, testenv.Postgres(t))
	inputs := []string{
		`{}`, `[]`, `0`, `-0`, `-0.0e-0`, `1E400`, `123456789012345678901234567890`, `true`, `null`,
		` {"a" : [ 1 , 2 ] } ` + "\t\r\n",
		`"\u00e9\ud83d\ude00\uD83D\uDE00\u2028\uffff\ufffe"`,
		"\"raw \u2028 \U0001F600 \x7f\"",
		`"\\u0000"`, `"\/\b\f\n\r\t\"\\"`,
		`{"a":1,"a":2}`,
		strings.Repeat("[", 500) + strings.Repeat("]", 500),
		string(tweetLine(5)),
		`"\u0000"`, `"\ud800"`, `"\udfff"`, `"\ud800\ud800"`, `"\ud800x"`, `"x\ud83d\u0041"`,
	}
	for _, in := range inputs {
		verdict, _ := scanJSON([]byte(in))
		_, err := pool.Exec(t.Context(), `SELECT $1::text::jsonb`, in)
		name := in
		if len(name) > 40 {
			name = name[:40] + "…"
		}
		switch verdict {
		case jsonOK:
			if err != nil {
				t.Errorf("scanJSON accepts %q but jsonb refuses it: %v", name, err)
			}
		case jsonUnsupportedEscape:
			if err == nil {
				t.Errorf("scanJSON calls %q unsupported but jsonb accepts it", name)
			}
		default:
			t.Errorf("scanJSON calls %q invalid", name)
		}
	}
}

func TestScanJSONMembers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string // key=value
		res  string
	}{
		{`{"a":1,"b" : {"c":[1,2]} ,"d":"x\"y","e":{},"f":[]}`, []string{`a=1`, `b={"c":[1,2]}`, `d="x\"y"`, `e={}`, `f=[]`}, "insert"},
		{`  {"a\"b":null}  `, []string{`a\"b=null`}, "insert"},
		{`[{"a":1}]`, nil, "insert"},
		{`{}`, nil, "insert"},
		{`"x"`, nil, "insert"},
		{`{"a":"\u0000","b":true}`, []string{`a="\u0000"`, `b=true`}, "reject"},
		{`{"a":1,`, []string{`a=1`}, "reject"},
	}
	for _, tt := range tests {
		members, res := ScanJSON([]byte(tt.in), nil)
		var got []string
		for _, m := range members {
			got = append(got, tt.in[m.KeyStart:m.KeyEnd]+"="+tt.in[m.ValueStart:m.ValueEnd])
		}
		if res.Outcome.String() != tt.res || !slices.Equal(got, tt.want) {
			t.Errorf("ScanJSON(%s) = %q, %v; want %q, %s", tt.in, got, res, tt.want, tt.res)
		}
	}
}
