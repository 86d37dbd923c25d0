package pipeline

import (
	"strings"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// step builds a cleaning step from its YAML form, as a spec writes it.
func step(t *testing.T, src string) Step {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	sn := n.Content[0]
	var st Step
	var err error
	if sn.Kind == yaml.MappingNode {
		st, err = newStep(sn.Content[0].Value, sn.Content[1])
	} else {
		st, err = newStep(sn.Value, nil)
	}
	if err != nil {
		t.Fatalf("step %s: %v", src, err)
	}
	return st
}

const (
	family   = "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466" // one grapheme, 7 runes, 25 bytes
	flagJP   = "\U0001F1EF\U0001F1F5"                                       // regional indicator pair
	thumbsUp = "\U0001F44D\U0001F3FD"                                       // with a skin tone modifier
	eAcute   = "e\u0301"                                                    // decomposed é
)

func TestCleaningSteps(t *testing.T) {
	t.Parallel()
	zalgo := "Z" + strings.Repeat("\u0300\u0301\u0302", 10) + "a" + strings.Repeat("\u0316", 25) + "lgo"
	tests := []struct {
		step, in, want string
		null           bool
	}{
		{"trim", "  \t hello \n\u00a0", "hello", false},
		{"trim", "", "", false},
		{"lower", "ÀÉÎ Straße ΣΑΣ", "àéî straße σασ", false},
		{"upper", "straße ǆ", "STRAßE Ǆ", false}, // simple case mapping: ß stays
		{"nfc", "Cafe\u0301", "Café", false},
		{"nfc", "\u1100\u1161\u11A8", "\uAC01", false}, // Hangul jamo compose
		{"nfc", family + " ok", family + " ok", false},
		{"nfc", "bad \xff byte", "bad \uFFFD byte", false},
		{"nfc", "plain ascii", "plain ascii", false},
		{"strip_control", "a\x00b\x07c\x7fd\u0085e\u009bf", "abcdef", false},
		{"strip_control", "keep\ttab\nand\r\nnewlines", "keep\ttab\nand\r\nnewlines", false},
		{"strip_control", "zwj " + family + " stays", "zwj " + family + " stays", false},
		{"strip_control", "bad \xc3 utf8\xff", "bad \uFFFD utf8\uFFFD", false},
		{"collapse_space", "  a \t\n b\u00a0\u2003c  ", " a b c ", false},
		{"collapse_space", "already clean", "already clean", false},
		{"collapse_space", "x\n", "x ", false},
		{"empty_null", "", "", true},
		{"empty_null", " ", " ", false},
		{"{truncate: 5}", "hello world", "hello", false},
		{"{truncate: 5}", "héllo", "héllo", false},
		{"{truncate: 2}", eAcute + eAcute + eAcute, eAcute + eAcute, false},
		{"{truncate: 2}", family + family + family, family + family, false},
		{"{truncate: 1}", flagJP + flagJP, flagJP, false},
		{"{truncate: 3}", "ab" + thumbsUp + "cd", "ab" + thumbsUp, false},
		{"{truncate: 3}", "a\r\nbc", "a\r\nb", false},
		{"{truncate: 4}", "ab", "ab", false},
		{"{truncate: 2}", "日本語", "日本", false},
		{"{max_marks: 2}", zalgo, "Z\u0300\u0301a\u0316\u0316lgo", false},
		{"{max_marks: 0}", "Cafe\u0301 na\u0303o", "Cafe nao", false},
		{"{max_marks: 1}", "Cafe\u0301", "Cafe\u0301", false},
		{"{max_marks: 1}", "ok \U0001F441\uFE0F\u200D\U0001F5E8\uFE0F", "ok \U0001F441\uFE0F\u200D\U0001F5E8\uFE0F", false},
		{"{max_marks: 1}", "\u0301\u0301\u0301 leading", "\u0301 leading", false},
		{"{replace: {pattern: 'https?://\\S+', with: '<url>'}}", "see https://t.co/x and http://a.b", "see <url> and <url>", false},
		{"{replace: {pattern: '(\\w+)@(\\w+)', with: '$2 at $1'}}", "me@home", "home at me", false},
		{"{replace: {pattern: '\\s+', with: ''}}", "a b\tc", "abc", false},
	}
	for _, tt := range tests {
		st := step(t, tt.step)
		got, ok := st.Apply(tt.in)
		if ok == tt.null || ok && got != tt.want {
			t.Errorf("%s(%q) = %q, %v; want %q, null %v", tt.step, tt.in, got, !ok, tt.want, tt.null)
		}
		if ok && utf8.ValidString(tt.in) && !utf8.ValidString(got) {
			t.Errorf("%s(%q) made invalid UTF-8: %q", tt.step, tt.in, got)
		}
	}
}

func TestStepArguments(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"{truncate: 0}", "{truncate: -3}", "{truncate: many}", "truncate", "{max_marks: -1}",
		"{trim: 1}", "{replace: {pattern: '(['}}", "{replace: {pattern: 'a', with: 'b', extra: 1}}", "{replace: x}", "frobnicate"} {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(bad), &n); err != nil {
			t.Fatal(err)
		}
		sn := n.Content[0]
		var err error
		if sn.Kind == yaml.MappingNode {
			_, err = newStep(sn.Content[0].Value, sn.Content[1])
		} else {
			_, err = newStep(sn.Value, nil)
		}
		if err == nil {
			t.Errorf("step %s accepted", bad)
		}
	}
}
