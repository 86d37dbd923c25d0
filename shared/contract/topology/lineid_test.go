package topology

import (
	"fmt"
	"testing"
	"time"
)

func TestLineIDs(t *testing.T) {
	t.Parallel()
	ids := ConnLineIDs("gw-1a2b", "7")
	if got := ids.Line(42); got != "gw-1a2b.7.42" {
		t.Fatalf("Line(42) = %q", got)
	}
	up := UploadLineIDs("default", "rc/2018-01.xz")
	if got := up.Line(42); got != "default/rc/2018-01.xz.42" {
		t.Fatalf("upload Line(42) = %q", got)
	}
	if got := string(up.AppendUploadFrame(nil, 42, 3)); got != "default/rc/2018-01.xz.42+3" {
		t.Fatalf("AppendUploadFrame(42, 3) = %q", got)
	}
	if got := string(up.AppendUploadFrame(nil, 42, 1)); got != up.Line(42) {
		t.Fatalf("AppendUploadFrame(42, 1) = %q, want the line's id", got)
	}
	tests := []struct {
		msgID        string
		first, lines int64
		want         LineIDs
		ok           bool
	}{
		{"gw-1a2b.7.42", 42, 3, "gw-1a2b.7.", true},
		{"gw.x.y.7.1", 1, 1, "gw.x.y.7.", true},
		{"gw-1a2b.7.42", 41, 3, "", false},
		{"gw-1a2b.7.142", 42, 3, "", false},
		{"42", 42, 1, "", false},
		{".42", 42, 1, "", false},
		{"gw.7.0", 0, 1, "", false},
		{"default/rc.2018.42+3", 42, 3, "default/rc.2018.", true},
		{"default/rc.2018.42", 42, 3, "default/rc.2018.", true},
		{"default/rc.2018.42+3", 42, 4, "", false},
		{"default/rc.2018.42+1", 42, 1, "", false},
	}
	for _, tt := range tests {
		got, ok := FrameLineIDs(tt.msgID, tt.first, tt.lines)
		if got != tt.want || ok != tt.ok {
			t.Errorf("FrameLineIDs(%q, %d, %d) = %q, %v; want %q, %v", tt.msgID, tt.first, tt.lines, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSeqLineIDs(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 3, 1, 12, 0, 0, 5, time.UTC)
	tests := []struct {
		ids         SeqLineIDs
		one, second string
	}{
		{StreamSeqLineIDs(created), "1772366400000000005.77", "1772366400000000005.77.2"},
		{StreamSeqLineIDs(time.Time{}), "77", "77.2"},
	}
	for _, tt := range tests {
		if got := tt.ids.Message(77); got != tt.one {
			t.Errorf("%q.Message(77) = %q, want %q", tt.ids, got, tt.one)
		}
		if got := tt.ids.Lines(77).Line(2); got != tt.second {
			t.Errorf("%q.Lines(77).Line(2) = %q, want %q", tt.ids, got, tt.second)
		}
	}
}

func TestLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		payload string
		want    string
	}{
		{"", "[]"},
		{"a\n", "[0:a]"},
		{"a\nb\n", "[0:a 1:b]"},
		{"a\r\nb", "[0:a 1:b]"},
		{"a\n\n\r\nd\n", "[0:a 3:d]"},
		{"\n", "[]"},
	}
	for _, tt := range tests {
		var got []string
		for k, line := range Lines([]byte(tt.payload)) {
			got = append(got, fmt.Sprintf("%d:%s", k, line))
		}
		if fmt.Sprint(got) != tt.want && !(len(got) == 0 && tt.want == "[]") {
			t.Errorf("Lines(%q) = %v, want %s", tt.payload, got, tt.want)
		}
	}
}
