package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// TestFaultOversizeLine sends a line of several MiB, far over the
// gateway's maximum, in the middle of one of many connections. The gateway
// must dead-letter it (reason too_long, its full length, its first
// 64 KiB), count it in the receipt as too long and dead-lettered, and
// carry on: every other line, before and after it, lands.
func TestFaultOversizeLine(t *testing.T) {
	t.Parallel()
	const bigSize = 5<<20 + 321
	b := setup(t, setupOptions{})
	gw := b.startGateway(t)
	b.startWorkers(t, 2, nil)

	seed := inputSeed(t)
	plans := faultPlans(seed, "os", topology.DefaultSource)
	// The oversize line goes in the middle of the first connection.
	big, bigLineNo := insertLine(plans[0], bigRecord(bigSize))
	want := expect(plans)

	start := time.Now()
	sendErr := make(chan error, 1)
	go func() { sendErr <- sendAll(gw, plans[1:], seed) }()
	r, deadLettered := sendWithDeadLettered(t, gw.addrs[topology.DefaultSource], plans[0].data, rngFor(seed, 999))
	if err := plans[0].check(r); err != nil {
		t.Error(err)
	}
	if r.TooLong != 1 || deadLettered != 1 {
		t.Errorf("receipt counts %d lines too long and %d dead-lettered; want 1 and 1", r.TooLong, deadLettered)
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	info := b.waitDrained(t, drainTimeout)
	b.checkRows(t, want.rows)
	b.checkAccounting(t, want)

	dl := b.deadLetters(t)
	if len(dl) != 1 {
		for _, e := range dl {
			t.Logf("dead letter: %s", describeEntry(e))
		}
		t.Fatalf("%d dead letters; want the oversize line alone", len(dl))
	}
	e := dl[0]
	keep := min(deadletter.TooLongKeep, maxLine)
	switch {
	case e.Reason != deadletter.ReasonTooLong || e.Class != deadletter.ClassPermanent:
		t.Errorf("dead letter %s; want reason %s, class %s", describeEntry(e), deadletter.ReasonTooLong, deadletter.ClassPermanent)
	case e.Length != int64(len(big)):
		t.Errorf("dead letter says the line is %d bytes long; it is %d", e.Length, len(big))
	case !bytes.Equal(e.Data, big[:keep]):
		t.Errorf("dead letter holds %d bytes; want the line's first %d", len(e.Data), keep)
	case e.Source != topology.DefaultSource || e.Header.Get(topology.HeaderLine) != strconv.Itoa(bigLineNo):
		t.Errorf("dead letter of source %q, line %q; want %q, line %d", e.Source, e.Header.Get(topology.HeaderLine), topology.DefaultSource, bigLineNo)
	case e.Header.Get(topology.HeaderLineID) != fmt.Sprintf("%s.%v.%d", r.Gateway, r.Conn, bigLineNo):
		// The message id the line would have had, which workers would
		// have keyed its row by.
		t.Errorf("dead letter's %s is %q; want %s.%v.%d", topology.HeaderLineID, e.Header.Get(topology.HeaderLineID), r.Gateway, r.Conn, bigLineNo)
	}
	received, rows := want.lines+r.TooLong, b.rowCount(t)
	if int64(rows+len(dl)) != received {
		t.Errorf("%d lines received; %d rows and %d dead letters account for %d", received, rows, len(dl), rows+len(dl))
	}
	faultSummary{lines: received, rows: rows, deadLettered: len(dl), redelivered: redeliveries(info), start: start}.log(t)
}

// bigRecord returns a JSON record of exactly size bytes.
func bigRecord(size int) []byte {
	head, tail := `{"id":"big","text":"`, `"}`
	line := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	copy(line, head)
	copy(line[size-len(tail):], tail)
	return line
}

// insertLine puts line, over the maximum, halfway through p's input, and
// returns it with its line number.
func insertLine(p *plan, line []byte) ([]byte, int) {
	n := int(countLines(p.data)/2) + 1
	at := lineOffset(p.data, int64(n))
	data := make([]byte, 0, len(p.data)+len(line)+1)
	data = append(data, p.data[:at]...)
	data = append(data, line...)
	data = append(data, '\n')
	p.data = append(data, p.data[at:]...)
	p.tooLong++
	return line, n
}

// sendWithDeadLettered sends data on a new connection to addr and returns
// the receipt with its dead_lettered count, which must be there.
func sendWithDeadLettered(t *testing.T, addr string, data []byte, rng *rand.Rand) (receipt, int64) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	defer c.Close()
	conn := c.(*net.TCPConn)
	if err := conn.SetDeadline(time.Now().Add(receiptTimeout)); err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.IntN(1<<rng.IntN(17)))
		if _, err := conn.Write(rest[:n]); err != nil {
			t.Fatalf("send: %v", err)
		}
		rest = rest[n:]
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatalf("half-close: %v", err)
	}
	raw, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read receipt: %v", err)
	}
	r, err := parseReceipt(raw)
	if err != nil {
		t.Fatal(err)
	}
	var extra struct {
		DeadLettered *int64 `json:"dead_lettered"`
	}
	if err := json.Unmarshal(raw, &extra); err != nil || extra.DeadLettered == nil {
		t.Fatalf("receipt %s has no dead_lettered count", bytes.TrimSpace(raw))
	}
	return r, *extra.DeadLettered
}
