package childproc

import (
	"bytes"
	"strings"
	"testing"
)

// writeRecorder records each Write separately.
type writeRecorder struct{ writes []string }

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestPrefixWriter(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", maxPartialLine+10)
	tests := []struct {
		name   string
		chunks []string
		flush  bool
		want   []string // one entry per Write to the underlying writer
	}{
		{name: "one line", chunks: []string{"hello\n"}, want: []string{"w | hello\n"}},
		{name: "two lines in one write", chunks: []string{"a\nb\n"}, want: []string{"w | a\n", "w | b\n"}},
		{name: "line split across writes", chunks: []string{"hel", "lo", "\nwor", "ld\n"}, want: []string{"w | hello\n", "w | world\n"}},
		{name: "unterminated line waits", chunks: []string{"a\npartial"}, want: []string{"w | a\n"}},
		{name: "flush ends the last line", chunks: []string{"a\npartial"}, flush: true, want: []string{"w | a\n", "w | partial\n"}},
		{name: "flush with nothing held", chunks: []string{"a\n"}, flush: true, want: []string{"w | a\n"}},
		{name: "empty line kept", chunks: []string{"\n"}, want: []string{"w | \n"}},
		{name: "carriage return dropped", chunks: []string{"dos\r\n"}, want: []string{"w | dos\n"}},
		{
			name:   "overlong line is cut",
			chunks: []string{long[:100], long[100:], "\n"},
			want:   []string{"w | " + long[:maxPartialLine] + "\n", "w | " + long[maxPartialLine:] + "\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec writeRecorder
			w := NewPrefixWriter("w | ", &rec)
			for _, c := range tt.chunks {
				n, err := w.Write([]byte(c))
				if err != nil || n != len(c) {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", c, n, err, len(c))
				}
			}
			if tt.flush {
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if got := strings.Join(rec.writes, ""); got != strings.Join(tt.want, "") || len(rec.writes) != len(tt.want) {
				t.Errorf("writes = %q\nwant     %q", rec.writes, tt.want)
			}
		})
	}
}

func TestPrefixWriterDoesNotAliasInput(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := NewPrefixWriter("> ", &out)
	buf := []byte("abc")
	w.Write(buf)
	copy(buf, "xyz") // The caller may reuse its buffer after Write returns.
	w.Write([]byte("\n"))
	if got, want := out.String(), "> abc\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
