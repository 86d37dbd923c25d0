package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/topology"
)

// collectSink is a [frameSink] that keeps what it is sent, checking each
// frame against the limits it was built under.
type collectSink struct {
	t      testing.TB
	limits frameLimits
	ids    topology.LineIDs
	frames []collectedFrame
	// lines are the lines recovered from the frames, with their ids.
	lines, lineIDs []string
	lineNums       []int64
	tooLongs       []int64
	published      chan collectedFrame // if set, each frame is sent here too
	failAfter      int                 // publishFrame fails once this many frames are taken; 0: never
}

type collectedFrame struct {
	first, lines int64
	data         string
}

func (s *collectSink) publishFrame(_ context.Context, e *entry) error {
	defer putEntry(e)
	if s.failAfter > 0 && len(s.frames) == s.failAfter {
		return errors.New("publish refused")
	}
	f := collectedFrame{first: e.line, lines: e.lines, data: string(e.data)}
	if f.lines < 1 || int(f.lines) > s.limits.lines {
		s.t.Errorf("frame at line %d holds %d lines, limit %d", f.first, f.lines, s.limits.lines)
	}
	if len(f.data) > s.limits.bytes && f.lines != 1 {
		s.t.Errorf("frame at line %d holds %d lines in %d bytes, over the %d-byte limit", f.first, f.lines, len(f.data), s.limits.bytes)
	}
	if !strings.HasSuffix(f.data, "\n") {
		s.t.Errorf("frame at line %d does not end with a newline: %q", f.first, f.data)
	}
	n := int64(0)
	for k, line := range topology.Lines(e.data) {
		if int64(k) != n {
			s.t.Errorf("frame at line %d has a gap at position %d", f.first, n)
		}
		n++
		s.lines = append(s.lines, string(line))
		s.lineNums = append(s.lineNums, f.first+int64(k))
		s.lineIDs = append(s.lineIDs, s.ids.Line(f.first+int64(k)))
	}
	if n != f.lines {
		s.t.Errorf("frame at line %d holds %d lines, says %d", f.first, n, f.lines)
	}
	s.frames = append(s.frames, f)
	if s.published != nil {
		s.published <- f
	}
	return nil
}

func (s *collectSink) tooLong(_ context.Context, _ []byte, _, line int64) error {
	s.tooLongs = append(s.tooLongs, line)
	return nil
}

func (s *collectSink) stamp() []string { return []string{"stamp"} }

// FuzzFrameBuilder frames any input cut into reads of any sizes into
// frames of any limits, and checks that the lines recovered from the
// frames are exactly the input's lines with their line numbers, so each
// keeps the identity it had with a message per line.
func FuzzFrameBuilder(f *testing.F) {
	f.Add([]byte("a\nb\r\n\n\r\nccc"), []byte{1, 2, 3}, uint8(2), uint8(4), uint8(3), uint8(2))
	f.Add([]byte("{\"x\":1}\n{\"y\":22222222}\r\n"), []byte{0, 5}, uint8(8), uint8(1), uint8(30), uint8(9))
	f.Add([]byte(strings.Repeat("z", 300)+"\nok\nok\nok\n"), []byte{200, 7}, uint8(20), uint8(16), uint8(5), uint8(1))
	f.Add([]byte("one\ntwo\nthree\nfour\n\nfive\nsix"), []byte{64}, uint8(40), uint8(100), uint8(12), uint8(3))
	f.Add([]byte("#jetline upload=rc-2018/01\n{\"a\":1}\n\n{\"b\":2}\n"), []byte{3, 9}, uint8(40), uint8(5), uint8(12), uint8(3))
	f.Add([]byte("#jetline upload=x first_line=41\r\nfirst\nsecond\n"+strings.Repeat("z", 70)+"\nlast"), []byte{1, 30}, uint8(50), uint8(7), uint8(9), uint8(2))
	f.Add([]byte("#jetline upload=..\nnot stored\n"), []byte{4}, uint8(40), uint8(9), uint8(40), uint8(8))
	f.Add([]byte("\n#jetline upload=x\ndata, not a header\n"), []byte{2}, uint8(40), uint8(9), uint8(40), uint8(8))
	f.Add([]byte("#jetlinex upload=x\n"), []byte{2}, uint8(40), uint8(9), uint8(40), uint8(8))
	f.Fuzz(func(t *testing.T, input, cuts []byte, maxLine, readBuffer, frameBytes, frameLines uint8) {
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		ml := 1 + int(maxLine)%64
		rb := 1 + int(readBuffer)%128
		keep := int(maxLine) / 64 * 7
		limits := frameLimits{bytes: 1 + int(frameBytes), lines: 1 + int(frameLines)%16}
		eofWithData := len(cuts) > 0 && cuts[0]&1 == 1

		fr := newFramer(&chunkReader{data: input, sizes: sizes, eofWithData: eofWithData}, rb, ml, keep)
		defer fr.close()
		sink := &collectSink{t: t, limits: limits, ids: topology.ConnLineIDs("gw", "7")}
		fb := frameBuilder{limits: limits}
		want := referenceFrame(input, ml, keep)
		// A first line that is a header names an upload and is not a
		// line: the lines after it are numbered from its first_line.
		u, named, herr := readUploadHeader(fr)
		if len(want.lines) > 0 && want.lines[0] == 1 && isUploadHeader([]byte(want.records[0])) {
			wu, werr := parseUploadHeader([]byte(want.records[0]))
			if (werr != nil) != (herr != nil) || u != wu || named != (werr == nil) {
				t.Fatalf("readUploadHeader = %+v, %v, %v; want %+v, %v", u, named, herr, wu, werr)
			}
			if werr != nil {
				return
			}
			want.records, want.lines = want.records[1:], want.lines[1:]
			for _, nums := range [][]int64{want.lines, want.tooLong} {
				for i := range nums {
					nums[i] += wu.first - 2
				}
			}
		} else if named || herr != nil {
			t.Fatalf("readUploadHeader = %+v, %v, %v on a first line that is no header", u, named, herr)
		}
		if held, err := fb.pump(t.Context(), fr, sink); !errors.Is(err, io.EOF) || held != 0 {
			t.Fatalf("pump = %d, %v; want 0, EOF", held, err)
		}
		if fmt.Sprintf("%q", sink.lines) != fmt.Sprintf("%q", want.records) {
			t.Errorf("lines = %q, want %q", sink.lines, want.records)
		}
		if fmt.Sprint(sink.lineNums) != fmt.Sprint(want.lines) {
			t.Errorf("line numbers = %v, want %v", sink.lineNums, want.lines)
		}
		for i, id := range sink.lineIDs {
			if wantID := fmt.Sprintf("gw.7.%d", want.lines[i]); id != wantID {
				t.Errorf("line %d has id %s, want %s", i, id, wantID)
			}
		}
		if fmt.Sprint(sink.tooLongs) != fmt.Sprint(want.tooLong) {
			t.Errorf("oversize lines = %v, want %v", sink.tooLongs, want.tooLong)
		}
	})
}

// TestFrameBuilderCloses checks where frames close: at the byte and line
// limits, at blank and oversize lines, and never with a gap inside.
func TestFrameBuilderCloses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("L", 50)
	tests := []struct {
		name   string
		input  string
		limits frameLimits
		want   []string // each frame's payload
	}{
		{"one frame", "a\nb\nc\n", frameLimits{bytes: 100, lines: 10}, []string{"a\nb\nc\n"}},
		{"line limit", "a\nb\nc\n", frameLimits{bytes: 100, lines: 2}, []string{"a\nb\n", "c\n"}},
		{"byte limit", "aa\nbb\ncc\n", frameLimits{bytes: 6, lines: 10}, []string{"aa\nbb\n", "cc\n"}},
		{"a long line travels alone", "a\n" + long + "\nb\n", frameLimits{bytes: 10, lines: 10}, []string{"a\n", long + "\n", "b\n"}},
		{"blank line", "a\n\nb\r\n\r\nc", frameLimits{bytes: 100, lines: 10}, []string{"a\n", "b\n", "c\n"}},
		{"oversize line", "a\n" + long + long + "\nb\n", frameLimits{bytes: 1000, lines: 10}, []string{"a\n", "b\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fr := newFramer(strings.NewReader(tt.input), 4096, 80, 10)
			defer fr.close()
			sink := &collectSink{t: t, limits: tt.limits}
			fb := frameBuilder{limits: tt.limits}
			if _, err := fb.pump(t.Context(), fr, sink); !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			var got []string
			for _, f := range sink.frames {
				got = append(got, f.data)
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
				t.Errorf("frames = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestFrameBuilderPublishesALoneLineAtOnce checks that a line that arrives
// alone is published while the sender is still connected and silent: the
// frame closes because nothing more is buffered, not on a timer or at EOF.
func TestFrameBuilderPublishesALoneLineAtOnce(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	defer pw.Close()
	limits := frameLimits{bytes: 1 << 20, lines: 1000}
	sink := &collectSink{t: t, limits: limits, published: make(chan collectedFrame, 10)}
	fr := newFramer(pr, 4096, 1000, 10)
	done := make(chan error, 1)
	go func() {
		defer fr.close()
		fb := frameBuilder{limits: limits}
		_, err := fb.pump(context.Background(), fr, sink)
		done <- err
	}()
	for i, write := range []string{"one\n", "two\nthree\n", "four\n\n"} {
		if _, err := pw.Write([]byte(write)); err != nil {
			t.Fatal(err)
		}
		select {
		case f := <-sink.published:
			if want := strings.TrimRight(write, "\n") + "\n"; f.data != want {
				t.Errorf("frame %d = %q, want %q", i, f.data, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("write %d (%q) not published while the sender is silent", i, write)
		}
	}
	pw.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("pump = %v, want EOF", err)
	}
}

// TestFrameBuilderHeldLine checks that when the sink refuses a frame, pump
// reports its first line as the first one not taken, for resume_line.
func TestFrameBuilderHeldLine(t *testing.T) {
	t.Parallel()
	input := strings.Repeat("xx\n", 10)
	limits := frameLimits{bytes: 9, lines: 100} // three lines a frame
	fr := newFramer(strings.NewReader(input), 4096, 80, 10)
	defer fr.close()
	sink := &collectSink{t: t, limits: limits, failAfter: 2}
	fb := frameBuilder{limits: limits}
	held, err := fb.pump(t.Context(), fr, sink)
	if err == nil || held != 7 {
		t.Fatalf("pump = %d, %v; want line 7 held with the sink's error", held, err)
	}
	if got := bytes.Count([]byte(fmt.Sprint(sink.lines)), []byte("xx")); got != 6 {
		t.Fatalf("%d lines taken before the refusal, want 6", got)
	}
}
