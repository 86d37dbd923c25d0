package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// maxLine is the gateway's default GATEWAY_MAX_LINE_BYTES, which the tests
// keep: the embedded server's 8 MiB maximum payload leaves it as it is.
const maxLine = 1 << 20

// kind is a kind of input line.
type kind int

const (
	kindRecord  kind = iota // a small JSON record
	kindLarge               // a JSON record of about 200 KB
	kindNearMax             // a JSON record of up to maxLine bytes, \uXXXX escapes
	kindOverMax             // a JSON record over maxLine bytes: skipped as too long
	kindBlank               // an empty line, "\n" or "\r\n"
	kindInvalid             // a line the worker must reject
)

// bigLine is the size, without its line ending, and the ending of a
// near-max or over-max line.
type bigLine struct {
	size int
	crlf bool
}

// mix describes what one connection sends. Every line but blank ones and
// some invalid ones carries a unique id; the last line has no newline.
type mix struct {
	records     int       // small JSON records
	recordBytes int       // approximate size of a small record's text; 0 means 40
	large       int       // records of about 200 KB
	nearMax     []bigLine // records of maxLine bytes or a little less
	overMax     []bigLine // records over maxLine bytes
	blanks      int       // blank lines
	invalid     int       // lines the worker rejects
	crlfPercent int       // share of other lines ending in "\r\n"
	last        kind      // kind of the final line, sent without a newline; one of those counted above, not kindBlank
}

// plan is one connection's input and what must come of it.
type plan struct {
	source string
	data   []byte

	// What the receipt must report besides bytes (len(data)).
	lines, blank, tooLong int64

	valid   []string          // ids of the lines that must become rows
	invalid int64             // lines the worker must reject (counted in lines)
	texts   map[string]string // the decoded "text" of some valid lines, by id
}

// newPlan generates the input of one connection whose ids start with
// prefix (e.g. "c3" gives "c3-l17" for line 17), deterministically from rng.
func newPlan(rng *rand.Rand, prefix, source string, m mix) *plan {
	if m.recordBytes == 0 {
		m.recordBytes = 40
	}
	if m.last == kindBlank {
		panic("newPlan: an input cannot end in a blank line without a newline")
	}
	kinds := make([]kind, 0, m.records+m.large+len(m.nearMax)+len(m.overMax)+m.blanks+m.invalid)
	add := func(k kind, n int) {
		if k == m.last {
			n-- // placed at the end
		}
		for range n {
			kinds = append(kinds, k)
		}
	}
	add(kindRecord, m.records)
	add(kindLarge, m.large)
	add(kindNearMax, len(m.nearMax))
	add(kindOverMax, len(m.overMax))
	add(kindBlank, m.blanks)
	add(kindInvalid, m.invalid)
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	kinds = append(kinds, m.last)

	p := &plan{source: source, texts: map[string]string{}}
	var buf bytes.Buffer
	nearMax, overMax := m.nearMax, m.overMax
	for i, k := range kinds {
		lineNo := i + 1
		id := prefix + "-l" + strconv.Itoa(lineNo)
		crlf := rng.IntN(100) < m.crlfPercent
		var line []byte
		switch k {
		case kindRecord:
			var text string
			line, text = record(rng, id, lineNo, m.recordBytes)
			p.keep(id, text, rng.IntN(50) == 0)
		case kindLarge:
			var text string
			line, text = record(rng, id, lineNo, 190_000+rng.IntN(20_000))
			p.keep(id, text, true)
		case kindNearMax, kindOverMax:
			var bl bigLine
			if k == kindNearMax {
				bl, nearMax = nearMax[0], nearMax[1:]
			} else {
				bl, overMax = overMax[0], overMax[1:]
			}
			var text string
			line, text = escapedRecord(rng, id, bl.size)
			crlf = bl.crlf
			if k == kindNearMax {
				p.keep(id, text, true)
			} else {
				p.tooLong++
			}
		case kindBlank:
			p.blank++
		case kindInvalid:
			line = invalidLine(id, lineNo)
			p.invalid++
		}
		if k != kindOverMax && k != kindBlank {
			p.lines++
		}
		buf.Write(line)
		if i == len(kinds)-1 {
			break
		}
		if crlf {
			buf.WriteByte('\r')
		}
		buf.WriteByte('\n')
	}
	p.data = buf.Bytes()
	return p
}

// keep records that id must become a row, and its text if check is set.
func (p *plan) keep(id, text string, check bool) {
	p.valid = append(p.valid, id)
	if check {
		p.texts[id] = text
	}
}

// record returns a JSON record of about textBytes bytes of text mixing
// ASCII, raw UTF-8, JSON escapes and \uXXXX escapes, with its decoded text.
// One record in fifty is wrapped in whitespace, which JSON allows.
func record(rng *rand.Rand, id string, n, textBytes int) ([]byte, string) {
	b := make([]byte, 0, textBytes+100)
	pad := rng.IntN(50) == 0
	if pad {
		b = append(b, " \t"...)
	}
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","n":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	if rng.IntN(4) == 0 {
		b = append(b, `,"user":{"name":"u`...)
		b = strconv.AppendInt(b, int64(rng.IntN(1000)), 10)
		b = append(b, `","tags":["a","b"],"verified":true,"bio":null},"score":-1.5e3`...)
	}
	b = append(b, `,"text":"`...)
	var text strings.Builder
	for start := len(b); len(b)-start < textBytes; {
		switch r := rng.IntN(20); {
		case r < 8:
			w := words[rng.IntN(len(words))]
			b = append(b, w...)
			text.WriteString(w)
		case r < 12:
			c := rawUTF8[rng.IntN(len(rawUTF8))]
			b = utf8.AppendRune(b, c)
			text.WriteRune(c)
		case r < 14:
			e := jsonEscapes[rng.IntN(len(jsonEscapes))]
			b = append(b, e[0]...)
			text.WriteString(e[1])
		default:
			var s string
			b, s = appendEscape(b, rng)
			text.WriteString(s)
		}
	}
	b = append(b, `"}`...)
	if pad {
		b = append(b, ' ')
	}
	return b, text.String()
}

var (
	words       = []string{"data ", "stream ", "line ", "jet ", "tweet ", "coffee ", "night ", "42 ", "ok "}
	rawUTF8     = []rune("éñü日本語あ東京😀🎉ß")
	jsonEscapes = [][2]string{{`\"`, `"`}, {`\\`, `\`}, {`\/`, `/`}, {`\n`, "\n"}, {`\t`, "\t"}, {`\r`, "\r"}, {`\b`, "\b"}, {`\f`, "\f"}}
)

// appendEscape appends one \uXXXX escape (or a surrogate pair of them) of
// a random character jsonb can store, in upper or lower case hex, and
// returns it with the character.
func appendEscape(b []byte, rng *rand.Rand) ([]byte, string) {
	var r rune
	switch rng.IntN(8) {
	case 0:
		r = rune(0x1F600 + rng.IntN(0x50)) // emoji: a surrogate pair
	case 1:
		r = rune(1 + rng.IntN(0x7F)) // ASCII and control characters, never \u0000
	case 2:
		r = rune(0xC0 + rng.IntN(0x140)) // Latin-1 and Latin Extended-A
	case 3, 4:
		r = rune(0x3041 + rng.IntN(0x56)) // Hiragana
	default:
		r = rune(0x4E00 + rng.IntN(0x5000)) // CJK
	}
	digits := hexLower
	if rng.IntN(2) == 0 {
		digits = hexUpper
	}
	if r > 0xFFFF {
		b = appendU(b, 0xD800+(r-0x10000)>>10, digits)
		b = appendU(b, 0xDC00+(r-0x10000)&0x3FF, digits)
	} else {
		b = appendU(b, r, digits)
	}
	return b, string(r)
}

const (
	hexLower = "0123456789abcdef"
	hexUpper = "0123456789ABCDEF"
)

// appendU appends the escape \uXXXX of the UTF-16 code unit u.
func appendU(b []byte, u rune, digits string) []byte {
	return append(b, '\\', 'u', digits[u>>12&0xF], digits[u>>8&0xF], digits[u>>4&0xF], digits[u&0xF])
}

// escapedRecord returns a JSON record of exactly size bytes whose text is
// \uXXXX escapes, padded with ASCII to the size, with its decoded text.
func escapedRecord(rng *rand.Rand, id string, size int) ([]byte, string) {
	b := make([]byte, 0, size)
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","text":"`...)
	end := size - len(`"}`)
	var text strings.Builder
	for len(b) < end {
		switch room := end - len(b); {
		case room >= 12:
			var s string
			b, s = appendEscape(b, rng)
			text.WriteString(s)
		case room >= 6:
			r := rune(0x3041 + rng.IntN(0x56))
			b = appendU(b, r, hexLower)
			text.WriteRune(r)
		default:
			b = append(b, 'x')
			text.WriteByte('x')
		}
	}
	b = append(b, `"}`...)
	if len(b) != size {
		panic(fmt.Sprintf("escapedRecord made %d bytes, want %d", len(b), size))
	}
	return b, text.String()
}

// invalidLine returns one of several lines the worker must reject: broken
// JSON, invalid UTF-8, two values, whitespace only, or JSON that jsonb
// cannot hold (\u0000, an unpaired surrogate).
func invalidLine(id string, n int) []byte {
	switch n % 8 {
	case 0:
		return []byte(`{"id":"` + id + `","text":"unterminated`)
	case 1:
		return []byte("not json " + id)
	case 2:
		return []byte(`{"id":"` + id + "\",\"text\":\"bad utf-8 \xff\xfe\"}")
	case 3:
		return []byte(`{"id":"` + id + `","text":"nul \u0000"}`)
	case 4:
		return []byte(`{"id":"` + id + `"} {"id":"` + id + `-2"}`)
	case 5:
		return []byte(`{"id":"` + id + `","text":"lone \ud800 surrogate"}`)
	case 6:
		return []byte(`{"id":"` + id + `",}`)
	default:
		return []byte(" \t ")
	}
}

// receipt is the gateway's receipt line, decoded independently of the
// gateway's own type: the tests hold the wire format.
type receipt struct {
	Status     string `json:"status"`
	Lines      int64  `json:"lines"`
	Bytes      int64  `json:"bytes"`
	Blank      int64  `json:"blank"`
	TooLong    int64  `json:"too_long"`
	ResumeLine int64  `json:"resume_line"`
	Error      string `json:"error"`
	// Compression and BytesDecompressed describe a compressed input.
	Compression       string `json:"compression"`
	BytesDecompressed int64  `json:"bytes_decompressed"`
	Gateway           string `json:"gateway"`
	Conn              uint64 `json:"conn"`
}

// receiptTimeout bounds waiting for a receipt after the input ended.
const receiptTimeout = 2 * time.Minute

// dial connects to the gateway at addr, closing the connection when the
// test ends.
func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// sendAll sends every plan at once, each on its own connection to the
// listener of its source with writes cut at random sizes, and checks each
// receipt against its plan. It does not use t, so it may run in any
// goroutine; the connections are closed when it returns.
func sendAll(gw *gatewayProc, plans []*plan, seed uint64) error {
	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for i, p := range plans {
		wg.Go(func() {
			err := func() error {
				c, err := net.DialTimeout("tcp", gw.addrs[p.source], 10*time.Second)
				if err != nil {
					return fmt.Errorf("dial gateway: %w", err)
				}
				defer c.Close()
				// Not the random stream that generated the plan.
				r, err := sendLines(c.(*net.TCPConn), p.data, rngFor(seed, 1000+i))
				if err != nil {
					return err
				}
				return p.check(r)
			}()
			if err != nil {
				errs[i] = fmt.Errorf("connection %d (%s, %d bytes): %w", i, p.source, len(p.data), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sendLines sends data as writes of random sizes, from 1 byte to 64 KiB
// (log-uniform, so most are small), half-closes the connection like ncat
// at the end of its input, and returns the receipt. It may be called from
// any goroutine.
func sendLines(conn *net.TCPConn, data []byte, rng *rand.Rand) (receipt, error) {
	if err := conn.SetWriteDeadline(time.Now().Add(receiptTimeout)); err != nil {
		return receipt{}, err
	}
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(1<<rng.IntN(17)))
		if _, err := conn.Write(data[:n]); err != nil {
			return receipt{}, fmt.Errorf("send: %w", err)
		}
		data = data[n:]
	}
	if err := conn.CloseWrite(); err != nil {
		return receipt{}, fmt.Errorf("half-close: %w", err)
	}
	return readReceipt(conn)
}

// readReceipt reads what the gateway sends until it closes the connection,
// which must be exactly one receipt line with every field the format
// requires.
func readReceipt(conn net.Conn) (receipt, error) {
	if err := conn.SetReadDeadline(time.Now().Add(receiptTimeout)); err != nil {
		return receipt{}, err
	}
	raw, err := io.ReadAll(conn)
	if err != nil {
		return receipt{}, fmt.Errorf("read receipt: %w (got %q)", err, raw)
	}
	return parseReceipt(raw)
}

// parseReceipt decodes raw, which must be one JSON line.
func parseReceipt(raw []byte) (receipt, error) {
	line, ok := bytes.CutSuffix(raw, []byte("\n"))
	if !ok || bytes.IndexByte(line, '\n') >= 0 {
		return receipt{}, fmt.Errorf("gateway sent %q, want exactly one line", raw)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return receipt{}, fmt.Errorf("receipt %q: %w", line, err)
	}
	var missing []string
	for _, k := range []string{"status", "lines", "bytes", "blank", "too_long", "gateway", "conn"} {
		if _, ok := fields[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return receipt{}, fmt.Errorf("receipt %s lacks %s", line, strings.Join(missing, ", "))
	}
	var r receipt
	if err := json.Unmarshal(line, &r); err != nil {
		return receipt{}, fmt.Errorf("receipt %q: %w", line, err)
	}
	return r, nil
}

// check returns an error unless r is the ok receipt of p.
func (p *plan) check(r receipt) error {
	want := receipt{Status: "ok", Lines: p.lines, Bytes: int64(len(p.data)), Blank: p.blank, TooLong: p.tooLong,
		Compression: "none", BytesDecompressed: int64(len(p.data)),
		Gateway: r.Gateway, Conn: r.Conn}
	return p.checkAgainst(r, want)
}

// checkCompressed is check for the plan's data sent compressed as format,
// wireBytes long.
func (p *plan) checkCompressed(r receipt, format string, wireBytes int64) error {
	want := receipt{Status: "ok", Lines: p.lines, Bytes: wireBytes, Blank: p.blank, TooLong: p.tooLong,
		Compression: format, BytesDecompressed: int64(len(p.data)),
		Gateway: r.Gateway, Conn: r.Conn}
	return p.checkAgainst(r, want)
}

func (p *plan) checkAgainst(r, want receipt) error {
	var errs []error
	if r != want {
		errs = append(errs, fmt.Errorf("receipt %+v, want %+v", r, want))
	}
	if r.Gateway == "" || r.Conn == 0 {
		errs = append(errs, fmt.Errorf("receipt %+v does not name its gateway and connection", r))
	}
	return errors.Join(errs...)
}

// expectation sums up the plans of a test.
type expectation struct {
	rows    map[string]string // source of every line that must become a row, by id
	lines   int64             // lines stored in JetStream (the receipts' sum)
	invalid int64
	texts   map[string]string
	bytes   int64
}

func expect(plans []*plan) expectation {
	e := expectation{rows: map[string]string{}, texts: map[string]string{}}
	for _, p := range plans {
		for _, id := range p.valid {
			e.rows[id] = p.source
		}
		for id, text := range p.texts {
			e.texts[id] = text
		}
		e.lines += p.lines
		e.invalid += p.invalid
		e.bytes += int64(len(p.data))
	}
	return e
}

// inputSeed returns the seed of the test's random input: $E2E_SEED, or the
// time. It is logged so a failure can be reproduced.
func inputSeed(t *testing.T) uint64 {
	t.Helper()
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("E2E_SEED"); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("E2E_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (set E2E_SEED=%d to repeat this input)", s, s)
	return s
}

// rngFor returns a random source for stream i of the test.
func rngFor(seed uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(i)))
}
