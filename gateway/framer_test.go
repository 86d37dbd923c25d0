package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// chunkReader returns data in reads of the given sizes (cycling through
// them), to cut lines at arbitrary places. A size of 0 is an empty read.
// If eofWithData is set, the last read returns its bytes together with
// io.EOF, as io.Reader allows.
type chunkReader struct {
	data        []byte
	sizes       []int
	next        int
	eofWithData bool
	empties     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = r.sizes[r.next%len(r.sizes)]
		r.next++
	}
	if n == 0 {
		// Never so many empty reads in a row that the framer gives up.
		if r.empties++; r.empties < 3 {
			return 0, nil
		}
		n = 1
	}
	r.empties = 0
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	if len(r.data) == 0 && r.eofWithData {
		return n, io.EOF
	}
	return n, nil
}

type frameResult struct {
	records []string
	lines   []int64 // line number of each record
	blank   int64
	tooLong []int64 // line numbers of oversize lines
	lengths []int64 // length of each oversize line
	kept    []string
	total   int64 // physical lines
	bytes   int64
}

func runFramer(t testing.TB, r io.Reader, readBuffer, maxLine, keep int) frameResult {
	t.Helper()
	var res frameResult
	f := newFramer(r, readBuffer, maxLine, keep)
	defer f.close()
	for {
		rec, tooLong, err := f.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if tooLong > 0 {
			if len(rec) > keep {
				t.Fatalf("kept %d bytes of an oversize line, want at most %d", len(rec), keep)
			}
			res.tooLong = append(res.tooLong, f.Line())
			res.lengths = append(res.lengths, tooLong)
			res.kept = append(res.kept, string(rec))
			continue
		}
		if len(rec) > maxLine {
			t.Fatalf("record of %d bytes exceeds max %d", len(rec), maxLine)
		}
		res.records = append(res.records, string(rec))
		res.lines = append(res.lines, f.Line())
	}
	if int64(len(res.tooLong)) != f.tooLong {
		t.Fatalf("returned %d oversize lines, counter says %d", len(res.tooLong), f.tooLong)
	}
	if len(f.buf) > max(readBuffer, maxLine+2) {
		t.Fatalf("buffer of %d bytes, past max(read buffer, max line + 2)", len(f.buf))
	}
	res.blank, res.total, res.bytes = f.blank, f.Line(), f.bytes
	return res
}

// referenceFrame frames input the slow, obvious way.
func referenceFrame(input []byte, maxLine, keep int) frameResult {
	res := frameResult{bytes: int64(len(input))}
	if len(input) == 0 {
		return res
	}
	parts := bytes.Split(input, []byte("\n"))
	if input[len(input)-1] == '\n' {
		parts = parts[:len(parts)-1]
	}
	for i, p := range parts {
		line := int64(i + 1)
		p = bytes.TrimSuffix(p, []byte("\r"))
		switch {
		case len(p) == 0:
			res.blank++
		case len(p) > maxLine:
			res.tooLong = append(res.tooLong, line)
			res.lengths = append(res.lengths, int64(len(p)))
			res.kept = append(res.kept, string(p[:min(keep, len(p))]))
		default:
			res.records = append(res.records, string(p))
			res.lines = append(res.lines, line)
		}
	}
	res.total = int64(len(parts))
	return res
}

func compareFrames(t *testing.T, got, want frameResult) {
	t.Helper()
	if fmt.Sprint(got.records) != fmt.Sprint(want.records) {
		t.Errorf("records = %q, want %q", got.records, want.records)
	}
	if fmt.Sprint(got.lines) != fmt.Sprint(want.lines) {
		t.Errorf("record lines = %v, want %v", got.lines, want.lines)
	}
	if fmt.Sprint(got.tooLong) != fmt.Sprint(want.tooLong) {
		t.Errorf("too long lines = %v, want %v", got.tooLong, want.tooLong)
	}
	if fmt.Sprint(got.lengths) != fmt.Sprint(want.lengths) {
		t.Errorf("too long lengths = %v, want %v", got.lengths, want.lengths)
	}
	if fmt.Sprintf("%q", got.kept) != fmt.Sprintf("%q", want.kept) {
		t.Errorf("kept of too long lines = %q, want %q", got.kept, want.kept)
	}
	if got.blank != want.blank || got.total != want.total || got.bytes != want.bytes {
		t.Errorf("blank, lines, bytes = %d, %d, %d; want %d, %d, %d", got.blank, got.total, got.bytes, want.blank, want.total, want.bytes)
	}
}

func TestFramer(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 10)
	tests := []struct {
		name    string
		input   string
		sizes   []int
		maxLine int
		want    frameResult
	}{
		{
			name:  "empty input",
			input: "",
			want:  frameResult{},
		},
		{
			name:  "lf lines",
			input: "a\nbb\nccc\n",
			want:  frameResult{records: []string{"a", "bb", "ccc"}, lines: []int64{1, 2, 3}, total: 3},
		},
		{
			name:  "crlf lines drop the cr",
			input: "a\r\nbb\r\n",
			want:  frameResult{records: []string{"a", "bb"}, lines: []int64{1, 2}, total: 2},
		},
		{
			name:  "cr inside a line stays",
			input: "a\rb\n",
			want:  frameResult{records: []string{"a\rb"}, lines: []int64{1}, total: 1},
		},
		{
			name:  "blank lines are counted and keep numbering",
			input: "\na\n\r\n\nb\n",
			want:  frameResult{records: []string{"a", "b"}, lines: []int64{2, 5}, blank: 3, total: 5},
		},
		{
			name:  "lone cr is blank",
			input: "\r\n\r",
			want:  frameResult{blank: 2, total: 2},
		},
		{
			name:  "final line without newline",
			input: "a\nb",
			want:  frameResult{records: []string{"a", "b"}, lines: []int64{1, 2}, total: 2},
		},
		{
			name:  "final line with cr only",
			input: "a\nb\r",
			want:  frameResult{records: []string{"a", "b"}, lines: []int64{1, 2}, total: 2},
		},
		{
			name:  "partial line over many one-byte reads",
			input: "hello world\n{\"a\":1}\n",
			sizes: []int{1},
			want:  frameResult{records: []string{"hello world", `{"a":1}`}, lines: []int64{1, 2}, total: 2},
		},
		{
			name:    "line of exactly max",
			input:   long + "\n",
			maxLine: 10,
			want:    frameResult{records: []string{long}, lines: []int64{1}, total: 1},
		},
		{
			name:    "line of exactly max with crlf",
			input:   long + "\r\n" + long + "\r\n",
			maxLine: 10,
			sizes:   []int{3},
			want:    frameResult{records: []string{long, long}, lines: []int64{1, 2}, total: 2},
		},
		{
			name:    "line of max plus one is skipped, next line kept",
			input:   long + "y\nok\n",
			maxLine: 10,
			want:    frameResult{records: []string{"ok"}, lines: []int64{2}, tooLong: []int64{1}, total: 2},
		},
		{
			name:    "very long line over many reads is skipped",
			input:   "a\n" + strings.Repeat("z", 1000) + "\r\nb\n",
			maxLine: 10,
			sizes:   []int{7, 1, 64},
			want:    frameResult{records: []string{"a", "b"}, lines: []int64{1, 3}, tooLong: []int64{2}, total: 3},
		},
		{
			name:    "oversize line at eof without newline",
			input:   "a\n" + strings.Repeat("z", 100),
			maxLine: 10,
			want:    frameResult{records: []string{"a"}, lines: []int64{1}, tooLong: []int64{2}, total: 2},
		},
		{
			name:    "max plus one at eof without newline",
			input:   "a\n" + long + "y",
			maxLine: 10,
			want:    frameResult{records: []string{"a"}, lines: []int64{1}, tooLong: []int64{2}, total: 2},
		},
		{
			name:    "max at eof with cr",
			input:   long + "\r",
			maxLine: 10,
			want:    frameResult{records: []string{long}, lines: []int64{1}, total: 1},
		},
		{
			name:    "consecutive oversize lines",
			input:   strings.Repeat("q", 30) + "\n" + strings.Repeat("r", 30) + "\nend",
			maxLine: 10,
			sizes:   []int{5},
			want:    frameResult{records: []string{"end"}, lines: []int64{3}, tooLong: []int64{1, 2}, total: 3},
		},
		{
			name:  "empty reads are tolerated",
			input: "ab\ncd\n",
			sizes: []int{0, 1, 0, 2},
			want:  frameResult{records: []string{"ab", "cd"}, lines: []int64{1, 2}, total: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			maxLine := tt.maxLine
			if maxLine == 0 {
				maxLine = 1 << 10
			}
			tt.want.bytes = int64(len(tt.input))
			for _, keep := range []int{0, 3, 1 << 10} {
				// What is kept of oversize lines is checked against the
				// reference; the rest against the table.
				ref := referenceFrame([]byte(tt.input), maxLine, keep)
				tt.want.lengths, tt.want.kept = ref.lengths, ref.kept
				for _, eofWithData := range []bool{false, true} {
					for _, readBuffer := range []int{1, 4, 64} {
						r := &chunkReader{data: []byte(tt.input), sizes: tt.sizes, eofWithData: eofWithData}
						got := runFramer(t, r, readBuffer, maxLine, keep)
						compareFrames(t, got, tt.want)
					}
				}
			}
		})
	}
}

// The buffer grows only as far as one line needs, never past maxLine+2.
func TestFramerBufferGrowth(t *testing.T) {
	t.Parallel()
	input := strings.Repeat("a", 100) + "\n" + strings.Repeat("b", 5000) + "\n"
	f := newFramer(strings.NewReader(input), 16, 200, 0)
	rec, _, err := f.Next()
	if err != nil || len(rec) != 100 {
		t.Fatalf("Next = %d bytes, %v; want 100 bytes", len(rec), err)
	}
	if len(f.buf) > 202 {
		t.Fatalf("buffer grew to %d bytes for a 100-byte line", len(f.buf))
	}
	if _, tooLong, err := f.Next(); err != nil || tooLong != 5000 {
		t.Fatalf("Next = %d bytes too long, %v; want the oversize line of 5000 bytes", tooLong, err)
	}
	if _, _, err := f.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after oversize line = %v, want EOF", err)
	}
	if len(f.buf) > 202 {
		t.Fatalf("buffer grew to %d bytes, past max line + 2", len(f.buf))
	}
	if f.tooLong != 1 {
		t.Fatalf("too long = %d, want 1", f.tooLong)
	}
}

// A failed read ends framing with that error; a partial line is not a
// record and not counted.
func TestFramerReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("a\npartial"), &errReader{boom})
	f := newFramer(r, 64, 64, 0)
	if rec, _, err := f.Next(); err != nil || string(rec) != "a" {
		t.Fatalf("Next = %q, %v; want a", rec, err)
	}
	if _, _, err := f.Next(); !errors.Is(err, boom) {
		t.Fatalf("Next = %v, want %v", err, boom)
	}
	if f.Line() != 1 {
		t.Fatalf("lines = %d, want 1", f.Line())
	}
}

type errReader struct{ err error }

// watchReader serves its chunks, at most one per read, and notes for each
// read its size and the framer's buffer at the time.
type watchReader struct {
	f      *framer
	chunks []string
	reads  []watchedRead
}

type watchedRead struct {
	size   int
	bufLen int // 0: the framer held no buffer
}

func (r *watchReader) Read(p []byte) (int, error) {
	r.reads = append(r.reads, watchedRead{len(p), len(r.f.buf)})
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func watchFramer(chunks []string, readBuffer, maxLine, keep int) (*framer, *watchReader) {
	r := &watchReader{chunks: chunks}
	r.f = newFramer(r, readBuffer, maxLine, keep)
	return r.f, r
}

// A framer with nothing buffered gives its buffer back and waits in a
// small read; a buffer grown for a long line goes back once it is framed.
func TestFramerWaitsWithoutBuffer(t *testing.T) {
	t.Parallel()
	f, r := watchFramer([]string{"a\n", "bc", "d\n", strings.Repeat("x", 300) + "\n", "y\n"}, 64, 1000, 0)
	defer f.close()
	var got []string
	for {
		rec, _, err := f.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(rec))
		if string(rec) == "y" && len(f.buf) != 64 {
			t.Errorf("after the long line the buffer has %d bytes, want the read buffer's 64", len(f.buf))
		}
	}
	if want := []string{"a", "bcd", strings.Repeat("x", 300), "y"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records = %q, want %q", got, want)
	}
	// Buffers grown for long lines come from a pool shared with other
	// tests, so only their bounds are certain.
	want := []watchedRead{
		{64, 0},  // waiting for the first bytes: "a\n"
		{64, 0},  // waiting again: "bc"
		{62, 64}, // the rest of the line into the buffer: "d\n"
		{64, 0},  // waiting: 64 bytes of the long line
	}
	n := len(r.reads)
	if n < len(want)+3 || fmt.Sprint(r.reads[:len(want)]) != fmt.Sprint(want) {
		t.Fatalf("reads (size, buffer) = %v, want them to start with %v and end with two reads without a buffer", r.reads, want)
	}
	for _, rd := range r.reads[len(want) : n-2] {
		if rd.bufLen <= 64 || rd.bufLen > 1002 {
			t.Errorf("read %v for the long line: want a buffer grown past 64 bytes, up to max line + 2", rd)
		}
	}
	// The grown buffer given back: waiting for "y\n", then for EOF.
	if end := fmt.Sprint(r.reads[n-2:]); end != "[{64 0} {64 0}]" {
		t.Errorf("last reads (size, buffer) = %s, want [{64 0} {64 0}]", end)
	}
}

// Skipping an oversize line of any length holds at most maxLine+2 bytes of
// buffer and keep bytes of the line.
func TestFramerOversizeLineStaysBounded(t *testing.T) {
	t.Parallel()
	const maxLine, keep = 1000, 100
	line := make([]byte, 5<<20)
	for i := range line {
		line[i] = 'a' + byte(i%26)
	}
	chunks := make([]string, 0, 2+len(line)/4096)
	for rest := line; len(rest) > 0; rest = rest[min(len(rest), 4096):] {
		chunks = append(chunks, string(rest[:min(len(rest), 4096)]))
	}
	chunks = append(chunks, "\r\nnext\n")
	f, r := watchFramer(chunks, 512, maxLine, keep)
	defer f.close()
	rec, tooLong, err := f.Next()
	if err != nil || tooLong != int64(len(line)) || string(rec) != string(line[:keep]) {
		t.Fatalf("Next = %q, %d, %v; want the first %d bytes of a %d-byte line", rec, tooLong, err, keep, len(line))
	}
	if rec, tooLong, err := f.Next(); err != nil || tooLong != 0 || string(rec) != "next" {
		t.Fatalf("Next after the oversize line = %q, %d, %v; want next", rec, tooLong, err)
	}
	for _, rd := range r.reads {
		if rd.bufLen > maxLine+2 {
			t.Fatalf("buffer grew to %d bytes, past max line + 2", rd.bufLen)
		}
	}
	if cap(f.kept) > keep {
		t.Fatalf("kept %d bytes of the line, want at most %d", cap(f.kept), keep)
	}
}

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

func FuzzFramer(f *testing.F) {
	f.Add([]byte("a\nb\r\n\n\r\nccc"), []byte{1, 2, 3}, uint8(2), uint8(4))
	f.Add([]byte("{\"x\":1}\n{\"y\":22222222}\r\n"), []byte{0, 5}, uint8(8), uint8(1))
	f.Add([]byte(strings.Repeat("z", 300)+"\nok\n"), []byte{200, 7}, uint8(20), uint8(16))
	f.Add([]byte("\r\r\n\r"), []byte{1}, uint8(1), uint8(1))
	f.Add([]byte("exact\r\nexact!\n"), []byte{3}, uint8(5), uint8(3))
	f.Add([]byte(strings.Repeat("long", 40)), []byte{9}, uint8(10), uint8(2))
	f.Fuzz(func(t *testing.T, input, cuts []byte, maxLine, readBuffer uint8) {
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		ml := 1 + int(maxLine)%64
		rb := 1 + int(readBuffer)%128
		keep := int(maxLine) / 64 * 7 // 0 to 21: shorter and longer than ml
		eofWithData := len(cuts) > 0 && cuts[0]&1 == 1
		got := runFramer(t, &chunkReader{data: input, sizes: sizes, eofWithData: eofWithData}, rb, ml, keep)
		compareFrames(t, got, referenceFrame(input, ml, keep))
	})
}

// infiniteReader serves the same block over and over, like a socket that
// always has data.
type infiniteReader struct {
	block []byte
	off   int
}

func (r *infiniteReader) Read(p []byte) (int, error) {
	n := copy(p, r.block[r.off:])
	r.off = (r.off + n) % len(r.block)
	return n, nil
}

func BenchmarkFramer(b *testing.B) {
	for _, size := range []int{200, 6000, 60000} {
		b.Run(fmt.Sprintf("line=%d", size), func(b *testing.B) {
			line := append(bytes.Repeat([]byte("x"), size-1), '\n')
			block := bytes.Repeat(line, max(1, (1<<20)/size))
			f := newFramer(&infiniteReader{block: block}, 64<<10, 1<<20, 64<<10)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				rec, _, err := f.Next()
				if err != nil || len(rec) != size-1 {
					b.Fatalf("Next = %d bytes, %v", len(rec), err)
				}
			}
		})
	}
}
