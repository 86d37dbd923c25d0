package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// drainTimeout bounds waiting for the workers to store everything sent.
const drainTimeout = 2 * time.Minute

// TestEndToEnd sends a bit of everything a real feed holds, over eight
// connections split between two listeners, to a gateway with three
// workers, and checks the receipts, the rows and the stream.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	tweets := "tweets"
	gw := b.startGateway(t, topology.DefaultSource, tweets)
	b.startWorkers(t, 3, nil)

	seed := inputSeed(t)
	const conns = 8
	var plans []*plan
	for c := range conns {
		rng := rngFor(seed, c)
		m := mix{
			records:     2550,
			large:       2,
			nearMax:     []bigLine{{size: maxLine - 1 - rng.IntN(10), crlf: rng.IntN(2) == 0}},
			overMax:     []bigLine{{size: maxLine + 1 + rng.IntN(64<<10), crlf: rng.IntN(2) == 0}},
			blanks:      40,
			invalid:     32,
			crlfPercent: 20,
			last:        kindRecord,
		}
		// The edges, each on one connection: a line of exactly the
		// maximum ending in CRLF (the "\r" must not count), one byte
		// over, a maximum-size line ending the input without a newline,
		// and an oversize line ending the input.
		switch c {
		case 0:
			m.nearMax = append(m.nearMax, bigLine{size: maxLine, crlf: true})
			m.overMax[0] = bigLine{size: maxLine + 1}
		case 1:
			m.overMax[0] = bigLine{size: maxLine + 1, crlf: true}
			m.last = kindNearMax
		case 2:
			m.nearMax = append(m.nearMax, bigLine{size: maxLine})
			m.last = kindOverMax
		}
		source := topology.DefaultSource
		if c%2 == 1 {
			source = tweets
		}
		plans = append(plans, newPlan(rng, "c"+strconv.Itoa(c), source, m))
	}
	want := expect(plans)
	if len(want.rows) < 20_000 {
		t.Fatalf("the plans make %d valid lines; the test needs at least 20,000", len(want.rows))
	}

	start := time.Now()
	if err := sendAll(gw, plans, seed); err != nil {
		t.Fatal(err)
	}
	sent := time.Since(start)
	info := b.waitDrained(t, drainTimeout)
	t.Logf("sent %d lines (%d valid, %d invalid), %s, over %d connections in %s; stored in %s; %d redeliveries",
		want.lines, len(want.rows), want.invalid, mib(want.bytes), conns, sent.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond), redeliveries(info))

	b.checkLanded(t, want)
}

// TestWorkerKilled kills one of three workers while they work through a
// backlog and checks that every line still lands exactly once: the killed
// worker's unacknowledged lines are redelivered to the others, and those
// it committed but had not acknowledged are not stored twice.
//
// Frames of a few dozen lines, batches of a few frames and a database that
// takes a fifth of a second per statement keep the backlog in the
// workers' hands for seconds: at full speed three workers store these
// 20,000 lines in well under one, and the kill would come too late.
func TestWorkerKilled(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{gatewayEnv: map[string]string{"GATEWAY_FRAME_LINES": "32"}})
	gw := b.startGateway(t)
	workerEnv := map[string]string{"WORKER_BATCH_SIZE": "4"}
	workers := b.startWorkers(t, 3, workerEnv)
	b.slowInserts(t, "events", 200*time.Millisecond)

	seed := inputSeed(t)
	var plans []*plan
	for c := range 8 {
		plans = append(plans, newPlan(rngFor(seed, c), "k"+strconv.Itoa(c), topology.DefaultSource, mix{
			records: 2550, recordBytes: 80, blanks: 10, invalid: 10, crlfPercent: 20, last: kindRecord,
		}))
	}
	want := expect(plans)
	if len(want.rows) < 20_000 {
		t.Fatalf("the plans make %d valid lines; the test needs at least 20,000", len(want.rows))
	}

	sendErr := make(chan error, 1)
	go func() { sendErr <- sendAll(gw, plans, seed) }()

	// Kill once a fifth of the rows are in: the workers have been busy for
	// a while and most of the input is still ahead of them.
	b.waitFor(t, drainTimeout, "a fifth of the rows to land", func() (bool, string) {
		n := b.rowCount(t)
		return n >= len(want.rows)/5, fmt.Sprintf("%d rows", n)
	})
	// The consumer's count of lines awaiting acknowledgement covers all
	// three workers: kill one that holds lines itself, and if it turns
	// out to have acknowledged them all in the instant before, another.
	victim := workers[1]
	var left int64
	for attempt := 1; left <= 0; attempt++ {
		if attempt > 3 {
			t.Fatalf("three killed workers had acknowledged every line they held; the kills tested nothing")
		}
		if left = b.killHolding(t, victim, 1, time.Minute); left <= 0 {
			t.Logf("%s acknowledged what it held just before the kill; killing another", victim.name)
			victim = b.startWorkers(t, 1, workerEnv)[0]
		}
	}
	rowsAfter := b.rowCount(t)
	t.Logf("killed %s, which left about %d frames unacknowledged, with %d of %d rows stored", victim.name, left, rowsAfter, len(want.rows))
	if rowsAfter >= len(want.rows) {
		t.Fatalf("the kill came when no work was left; it tests nothing")
	}

	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	info := b.waitDrained(t, drainTimeout)
	b.checkRows(t, want.rows)
	b.checkAccounting(t, want)
	// Every line the killed worker left unacknowledged was delivered again.
	if n := redeliveries(info); n < uint64(left) {
		t.Errorf("%d lines redelivered after the kill; the killed worker left %d unacknowledged", n, left)
	} else {
		t.Logf("%d lines redelivered after the kill", n)
	}
}

// TestBackpressure fills a small stream with no workers running and checks
// that the gateway stops reading instead of buffering: the sender's writes
// block long before its input is sent, the gateway's memory stays bounded
// and no error comes back. Then workers start and everything lands.
func TestBackpressure(t *testing.T) {
	t.Parallel()
	const (
		streamMaxBytes = 4 << 20
		lineBytes      = 4 << 10
		writeBytes     = 16 << 10
		sendBuffer     = 64 << 10
		// The gateway's default GATEWAY_INFLIGHT_BYTES: lines read and
		// published but not yet stored.
		inflightBytes = 8 << 20
		// Silence the sender must keep, with the stream full, to count as
		// blocked. Unblocked, it writes megabytes in that time.
		stallFor = 2 * time.Second
	)
	// Where the sender must block at the latest: all the gateway's path
	// can hold is the stream, the in-flight window, the framer's buffer
	// (up to a maximum line) and a line waiting for room, and the two
	// sockets' kernel buffers. The input is larger by a margin: 64 MiB
	// where tcp_rmem allows 32 MiB (the blocking point is then 46 MiB;
	// measured, it is 12-30 MiB).
	rmem, err := tcpRmemMax()
	if err != nil {
		t.Skipf("cannot read the TCP receive buffer limit: %v", err)
	}
	mustBlockBy := streamMaxBytes + inflightBytes + 2*maxLine + 2*sendBuffer + rmem
	total := max(64<<20, mustBlockBy+16<<20)
	// Bound on the gateway's peak RSS. Measured on a 2-core x86-64 Linux
	// machine: idle 10 MiB, 23 MiB while holding the sender back, 35 MiB
	// at most while draining (flat over 160 MiB sent); built with -race,
	// 29, 70 and 110-116 MiB (the race runtime's shadow memory and
	// bookkeeping grow with every allocation and goroutine). What the
	// gateway holds by design is its in-flight window plus one read
	// buffer. A gateway that buffered its input instead would need all
	// 64 MiB on top of its idle size, which both bounds rule out while
	// leaving room for garbage-collector slack (GOGC=100 lets the heap
	// grow to twice the live data).
	maxRSS := int64(60 << 20)
	if raceEnabled {
		maxRSS = 150 << 20
	}

	b := setup(t, setupOptions{streamMaxBytes: streamMaxBytes})
	gw := b.startGateway(t)
	_, idle, err := memStatus(gw.pid())
	if err != nil {
		t.Skipf("cannot read the gateway's memory use: %v", err)
	}

	// Lines of about 4 KiB with unique ids.
	var data bytes.Buffer
	want := map[string]string{}
	filler := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz0123456789"), lineBytes/36+1)
	for n := 1; int64(data.Len()) < total; n++ {
		id := "bp-l" + strconv.Itoa(n)
		want[id] = topology.DefaultSource
		fmt.Fprintf(&data, `{"id":"%s","text":"%s"}`+"\n", id, filler[:lineBytes-len(id)-22])
	}
	payload := data.Bytes()

	conn := dial(t, gw.addrs[topology.DefaultSource])
	if err := conn.SetWriteBuffer(sendBuffer); err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	sendErr := make(chan error, 1)
	go func() {
		if err := conn.SetWriteDeadline(time.Now().Add(5 * time.Minute)); err != nil {
			sendErr <- err
			return
		}
		for off := 0; off < len(payload); {
			n, err := conn.Write(payload[off:min(off+writeBytes, len(payload))])
			off += n
			sent.Store(int64(off))
			if err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- conn.CloseWrite()
	}()

	// Wait until the stream is full and the sender has made no progress
	// for stallFor.
	start := time.Now()
	var stalledAt int64
	last, lastMove := int64(-1), time.Now()
	b.waitFor(t, time.Minute, "the sender to block on a full stream", func() (bool, string) {
		select {
		case err := <-sendErr:
			if err != nil {
				t.Fatalf("send failed while the stream filled: %v", err)
			}
			t.Fatalf("the sender wrote all %s with no worker running: nothing held it back", mib(total))
		default:
		}
		if cur := sent.Load(); cur != last {
			last, lastMove = cur, time.Now()
		}
		state := b.streamState(t)
		full := state.Bytes >= streamMaxBytes*9/10
		stalledAt = last
		return full && time.Since(lastMove) >= stallFor,
			fmt.Sprintf("sent %s, stream holds %s", mib(last), mib(int64(state.Bytes)))
	})
	rss, peak, err := memStatus(gw.pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sender blocked after %s of %s (at most %s allowed), %s into the run; gateway RSS %s (peak %s, idle %s)",
		mib(stalledAt), mib(total), mib(mustBlockBy), time.Since(start).Round(time.Millisecond), mib(rss), mib(peak), mib(idle))
	if stalledAt > mustBlockBy {
		t.Errorf("sender blocked only after %s of %s; the gateway's path holds at most %s", mib(stalledAt), mib(total), mib(mustBlockBy))
	}
	if peak > maxRSS {
		t.Errorf("gateway peak RSS %s while holding back the sender, want at most %s", mib(peak), mib(maxRSS))
	}

	b.startWorkers(t, 2, nil)
	if err := <-sendErr; err != nil {
		t.Fatalf("send: %v", err)
	}
	r, err := readReceipt(conn)
	if err != nil {
		t.Fatal(err)
	}
	p := &plan{data: payload, lines: int64(len(want))}
	if err := p.check(r); err != nil {
		t.Fatal(err)
	}
	b.waitDrained(t, drainTimeout)
	t.Logf("%d lines stored %s after the start", len(want), time.Since(start).Round(time.Millisecond))
	b.checkRows(t, want)
	b.checkAccounting(t, expectation{lines: p.lines})
	if _, peak, err = memStatus(gw.pid()); err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway peak RSS over the whole run %s", mib(peak))
	if peak > maxRSS {
		t.Errorf("gateway peak RSS %s, want at most %s", mib(peak), mib(maxRSS))
	}
}

// TestNcat sends a file the way users do, `ncat host port < file`, and checks
// that ncat prints the receipt, exits 0, and the lines land.
func TestNcat(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	ncat := testenv.Ncat(t)
	gw := b.startGateway(t)
	b.startWorkers(t, 1, nil)

	p := newPlan(rngFor(inputSeed(t), 0), "nc", topology.DefaultSource, mix{
		records: 2000, large: 1, blanks: 20, invalid: 8, crlfPercent: 20, last: kindRecord,
	})
	r := sendWithNcat(t, ncat, gw.addrs[topology.DefaultSource], p.data)
	if err := p.check(r); err != nil {
		t.Fatal(err)
	}
	b.waitDrained(t, drainTimeout)
	b.checkLanded(t, expect([]*plan{p}))
}

// TestNcatXz is the seeds' way of sending an archive, `ncat host 4000 <
// dump.xz`: the gateway detects xz and every line lands as if sent plain.
func TestNcatXz(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	ncat := testenv.Ncat(t)
	gw := b.startGateway(t)
	b.startWorkers(t, 1, nil)

	p := newPlan(rngFor(inputSeed(t), 1), "xz", topology.DefaultSource, mix{
		records: 3000, large: 1, blanks: 20, invalid: 8, crlfPercent: 20, last: kindRecord,
	})
	var compressed bytes.Buffer
	w, err := xz.NewWriter(&compressed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p.data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r := sendWithNcat(t, ncat, gw.addrs[topology.DefaultSource], compressed.Bytes())
	if err := p.checkCompressed(r, "xz", int64(compressed.Len())); err != nil {
		t.Fatal(err)
	}
	b.waitDrained(t, drainTimeout)
	b.checkLanded(t, expect([]*plan{p}))
}

// sendWithNcat runs `ncat host port < file` with data in the file and
// returns the receipt ncat printed.
func sendWithNcat(t *testing.T, ncat, addr string, data []byte) receipt {
	t.Helper()
	file := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()

	ctx, cancel := context.WithTimeout(t.Context(), receiptTimeout)
	defer cancel()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, ncat, host, port)
	cmd.Stdin = in
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ncat %s %s < file: %v\nstdout: %q\nstderr: %s", host, port, err, stdout.Bytes(), stderr.Bytes())
	}
	r, err := parseReceipt(stdout.Bytes())
	if err != nil {
		t.Fatalf("ncat printed: %v", err)
	}
	return r
}
