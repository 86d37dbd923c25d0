package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// maxResends bounds how often sendResuming starts again from a receipt's
// resume_line before giving up.
const maxResends = 5

// sendResuming sends p's input to addr as a careful sender does: when the
// receipt is not ok, it must say where to resume (resume_line: every line
// before it is stored), and the input is sent again from that line on a
// new connection, until a receipt is ok. It returns every receipt, the
// last one ok, and how many lines were sent again. An ok receipt must
// count every line it was sent: stored, blank or too long. It does not use
// t, so it may run in any goroutine. If hold is not nil, the first
// attempt sends the first third of the input, then waits until hold is
// closed before it sends the rest.
func sendResuming(addr string, p *plan, rng *rand.Rand, hold <-chan struct{}) (receipts []receipt, resent int64, err error) {
	data := p.data
	for attempt := 0; ; attempt++ {
		r, err := sendReadingReceipt(addr, data, rng, hold)
		hold = nil
		if err != nil {
			return receipts, resent, fmt.Errorf("attempt %d: %w", attempt+1, err)
		}
		receipts = append(receipts, r)
		lines := countLines(data)
		if r.Status == "ok" {
			if r.Lines+r.Blank+r.TooLong != lines || r.Bytes != int64(len(data)) || r.ResumeLine != 0 {
				return receipts, resent, fmt.Errorf("attempt %d sent %d lines in %d bytes; the ok receipt %+v counts otherwise", attempt+1, lines, len(data), r)
			}
			return receipts, resent, nil
		}
		if r.Status != "error" && r.Status != "shutdown" {
			return receipts, resent, fmt.Errorf("attempt %d: receipt %+v: want status ok, or error or shutdown with resume_line", attempt+1, r)
		}
		if r.ResumeLine < 1 || r.ResumeLine > lines+1 || r.Error == "" {
			return receipts, resent, fmt.Errorf("attempt %d sent %d lines; receipt %+v does not say why it failed and where to resume", attempt+1, lines, r)
		}
		if attempt == maxResends {
			return receipts, resent, fmt.Errorf("still no ok receipt after resending %d times; the last: %+v", maxResends, r)
		}
		data = data[lineOffset(data, r.ResumeLine):]
		resent += countLines(data)
	}
}

// sendResumingAll runs sendResuming for every plan at once, each on the
// listener of its source, and returns the receipts and lines sent again of
// each. hold is as for sendResuming.
func sendResumingAll(gw *gatewayProc, plans []*plan, seed uint64, hold <-chan struct{}) ([][]receipt, []int64, error) {
	receipts := make([][]receipt, len(plans))
	resent := make([]int64, len(plans))
	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for i, p := range plans {
		wg.Go(func() {
			var err error
			receipts[i], resent[i], err = sendResuming(gw.addrs[p.source], p, rngFor(seed, 1000+i), hold)
			if err != nil {
				errs[i] = fmt.Errorf("connection %d (%s, %d bytes): %w", i, p.source, len(p.data), err)
			}
		})
	}
	wg.Wait()
	return receipts, resent, errors.Join(errs...)
}

// sendReadingReceipt sends data on a new connection to addr in writes of
// random sizes, half-closes it and reads the receipt. If the gateway
// stops reading and sends its receipt before the input is all sent (it
// does on an error), the receipt is read all the same. If hold is not
// nil, it waits for hold to be closed once a third of data is sent.
func sendReadingReceipt(addr string, data []byte, rng *rand.Rand, hold <-chan struct{}) (receipt, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return receipt{}, fmt.Errorf("dial gateway: %w", err)
	}
	defer c.Close()
	conn := c.(*net.TCPConn)
	if err := conn.SetWriteDeadline(time.Now().Add(receiptTimeout)); err != nil {
		return receipt{}, err
	}
	var werr error
	holdAt := len(data) * 2 / 3 // what is left to send when it holds
	for len(data) > 0 && werr == nil {
		if hold != nil && len(data) <= holdAt {
			<-hold
			hold = nil
		}
		n := min(len(data), 1+rng.IntN(1<<rng.IntN(17)))
		_, werr = conn.Write(data[:n])
		data = data[n:]
	}
	if werr == nil {
		werr = conn.CloseWrite()
	}
	r, rerr := readReceipt(conn)
	if rerr != nil && werr != nil {
		return receipt{}, fmt.Errorf("send: %w; then %w", werr, rerr)
	}
	return r, rerr
}

// countLines returns the number of lines in data, the last one perhaps
// without a newline.
func countLines(data []byte) int64 {
	n := int64(bytes.Count(data, []byte("\n")))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return n
}

// lineOffset returns where line n (1-based) of data starts, or len(data)
// if data has fewer lines.
func lineOffset(data []byte, n int64) int {
	off := 0
	for range n - 1 {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return len(data)
		}
		off += i + 1
	}
	return off
}

// TestLineOffset checks the arithmetic a resend relies on: where line n
// starts, and how many lines remain from there.
func TestLineOffset(t *testing.T) {
	t.Parallel()
	data := []byte("a\r\n\nbb\nccc")
	tests := []struct {
		n         int64
		want      string
		wantLines int64
	}{
		{1, "a\r\n\nbb\nccc", 4},
		{2, "\nbb\nccc", 3},
		{3, "bb\nccc", 2},
		{4, "ccc", 1},
		{5, "", 0},
		{9, "", 0},
	}
	for _, tt := range tests {
		rest := data[lineOffset(data, tt.n):]
		if string(rest) != tt.want || countLines(rest) != tt.wantLines {
			t.Errorf("from line %d: %q with %d lines; want %q with %d", tt.n, rest, countLines(rest), tt.want, tt.wantLines)
		}
	}
	if n := countLines([]byte("x\n")); n != 1 {
		t.Errorf("countLines(%q) = %d, want 1", "x\n", n)
	}
}
