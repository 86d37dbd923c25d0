package pipeline

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rivo/uniseg"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/unicode/norm"
)

// Step is one cleaning step: it turns a string into another, or into NULL
// (ok false). Steps are safe for concurrent use, never panic, and keep
// valid UTF-8 valid.
type Step struct {
	// Name is the step as written in the spec, such as "trim" or
	// "truncate".
	Name  string
	apply func(string) (string, bool)
}

// Apply runs the step on s.
func (st Step) Apply(s string) (string, bool) { return st.apply(s) }

func applySteps(steps []Step, s string) (string, bool) {
	for _, st := range steps {
		var ok bool
		if s, ok = st.apply(s); !ok {
			return "", false
		}
	}
	return s, true
}

// stepDoc lists the steps for messages, with their argument.
var stepDoc = []string{
	"trim", "lower", "upper", "nfc", "strip_control", "collapse_space", "empty_null",
	"{truncate: N}", "{max_marks: N}", "{replace: {pattern: REGEXP, with: TEXT}}",
}

func stepList() string { return strings.Join(stepDoc, ", ") }

// newStep builds the step name with its argument (nil for steps without).
func newStep(name string, arg *yaml.Node) (Step, error) {
	simple := map[string]func(string) (string, bool){
		"trim":           func(s string) (string, bool) { return strings.TrimSpace(s), true },
		"lower":          func(s string) (string, bool) { return strings.ToLower(s), true },
		"upper":          func(s string) (string, bool) { return strings.ToUpper(s), true },
		"nfc":            nfc,
		"strip_control":  stripControl,
		"collapse_space": collapseSpace,
		"empty_null":     func(s string) (string, bool) { return s, s != "" },
	}
	if f, ok := simple[name]; ok {
		if arg != nil {
			return Step{}, fmt.Errorf("step %s takes no argument; write it as a plain %s", name, name)
		}
		return Step{Name: name, apply: f}, nil
	}
	switch name {
	case "truncate", "max_marks":
		var n int
		if arg == nil || arg.Kind != yaml.ScalarNode || arg.Decode(&n) != nil || n < 0 || name == "truncate" && n == 0 {
			return Step{}, fmt.Errorf("step %s needs a whole number argument (at least %d), e.g. {%s: %d}", name, map[string]int{"truncate": 1, "max_marks": 0}[name], name, map[string]int{"truncate": 280, "max_marks": 2}[name])
		}
		if name == "truncate" {
			return Step{Name: name, apply: truncate(n)}, nil
		}
		return Step{Name: name, apply: maxMarks(n)}, nil
	case "replace":
		var r struct {
			Pattern *string `yaml:"pattern"`
			With    *string `yaml:"with"`
		}
		if arg == nil || arg.Kind != yaml.MappingNode || arg.Decode(&r) != nil || r.Pattern == nil || r.With == nil || len(arg.Content) != 4 {
			return Step{}, fmt.Errorf(`step replace needs {pattern: REGEXP, with: TEXT}, e.g. {replace: {pattern: 'https?://\S+', with: ''}}`)
		}
		re, err := regexp.Compile(*r.Pattern)
		if err != nil {
			return Step{}, fmt.Errorf("step replace: pattern %q is not a valid regular expression (RE2 syntax): %v", *r.Pattern, err)
		}
		with := *r.With
		return Step{Name: name, apply: func(s string) (string, bool) {
			return re.ReplaceAllString(s, with), true
		}}, nil
	}
	return Step{}, fmt.Errorf("unknown cleaning step %q; steps are %s", name, stepList())
}

// isASCII reports whether s has no byte above 0x7F.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// nfc normalises s to Unicode NFC, so that "é" written as e + U+0301 and as
// U+00E9 compare equal.
func nfc(s string) (string, bool) {
	if isASCII(s) {
		return s, true
	}
	return norm.NFC.String(strings.ToValidUTF8(s, "\uFFFD")), true
}

// stripControl removes control characters (NUL, C0 and C1 controls, DEL)
// except tab, newline and carriage return, and replaces invalid UTF-8 with
// U+FFFD.
func stripControl(s string) (string, bool) {
	clean := true
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if isControl(rune(c)) {
				clean = false
				break
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || isControl(r) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return s, true
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		case !isControl(r):
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String(), true
}

func isControl(r rune) bool {
	return r != '\t' && r != '\n' && r != '\r' && unicode.IsControl(r)
}

// collapseSpace replaces every run of white space (Unicode's definition,
// newlines included) with one space.
func collapseSpace(s string) (string, bool) {
	// Most text needs no change: look for a space other than ' ', or a
	// space after a space, before building anything.
	prev := false
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			sp := c == ' ' || c >= '\t' && c <= '\r'
			if sp && (prev || c != ' ') {
				return collapseSpaceFrom(s), true
			}
			prev = sp
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			return collapseSpaceFrom(s), true
		}
		prev = false
		i += size
	}
	return s, true
}

func collapseSpaceFrom(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	prev := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			if !prev {
				b.WriteByte(' ')
			}
			prev = true
		} else {
			prev = false
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// truncate keeps the first n user-perceived characters (grapheme
// clusters), so an emoji sequence or a letter with its accents is never
// cut in half.
func truncate(n int) func(string) (string, bool) {
	return func(s string) (string, bool) {
		if len(s) <= n || utf8.RuneCountInString(s) <= n {
			// A cluster is at least one rune, and a rune at least one
			// byte. Counting runes is cheap: 1.1 µs for a Japanese text
			// of 165 runes (435 bytes) against 13.5 µs to find its
			// clusters, and few texts have more than n runes.
			return s, true
		}
		state, end := -1, 0
		for count := 0; count < n && end < len(s); count++ {
			// Between two ASCII characters there is always a boundary,
			// except inside CR LF: skip uniseg for plain text.
			if c := s[end]; c < utf8.RuneSelf && c != '\r' && end+1 < len(s) && s[end+1] < utf8.RuneSelf {
				end++
				state = -1
				continue
			}
			var cluster string
			cluster, _, _, state = uniseg.FirstGraphemeClusterInString(s[end:], state)
			end += len(cluster)
		}
		return s[:end], true
	}
}

// maxMarks keeps at most n combining marks (Unicode categories Mn and Me)
// after each base character and drops the rest: the towers of diacritics
// of "Zalgo" text. Accented letters in any script need one or two; n = 0
// removes all combining marks.
func maxMarks(n int) func(string) (string, bool) {
	return func(s string) (string, bool) {
		if isASCII(s) {
			return s, true
		}
		run, over := 0, false
		for _, r := range s {
			if isMark(r) {
				run++
				if run > n {
					over = true
					break
				}
			} else {
				run = 0
			}
		}
		if !over {
			return s, true
		}
		var b strings.Builder
		b.Grow(len(s))
		run = 0
		for i, r := range s {
			if isMark(r) {
				run++
				if run > n {
					continue
				}
			} else {
				run = 0
			}
			_, size := utf8.DecodeRuneInString(s[i:])
			b.WriteString(s[i : i+size])
		}
		return b.String(), true
	}
}

func isMark(r rune) bool {
	return r >= 0x300 && (unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r))
}
