package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// receivedPrefix is where the ingest stream republishes its lines' headers.
const receivedPrefix = "bench-received."

// receivedCapture collects each line's gateway connection, number on it and
// read time from the headers the ingest stream republishes, for the latency
// of a table without received_at: the stream is a work queue, so its lines
// are gone once acknowledged. The headers are a few hundred bytes a frame.
type receivedCapture struct {
	sub *nats.Subscription

	mu   sync.Mutex
	seen []seenLine
	bad  error
}

type seenLine struct {
	conn uint64
	line int64
	at   string
}

// captureReceived subscribes to the headers of source's lines, then has the
// ingest stream republish them.
func captureReceived(ctx context.Context, h *harness, source string) (*receivedCapture, error) {
	rc := &receivedCapture{}
	st, err := h.js.Stream(ctx, topology.StreamName)
	if err == nil {
		rc.sub, err = h.nc.Subscribe(receivedPrefix+source, rc.add)
	}
	if err == nil {
		err = rc.sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = h.nc.FlushTimeout(readyTimeout)
	}
	if err == nil {
		cfg := st.CachedInfo().Config
		cfg.RePublish = &jetstream.RePublish{Source: topology.Subject(source), Destination: receivedPrefix + source, HeadersOnly: true}
		_, err = h.js.UpdateStream(ctx, cfg)
	}
	if err != nil {
		rc.close()
		return nil, fmt.Errorf("have stream %s republish headers: %w", topology.StreamName, err)
	}
	return rc, nil
}

// add records one frame's lines: Jetline-Lines of them from Jetline-Line
// on, all read by the time its first was.
func (rc *receivedCapture) add(m *nats.Msg) {
	conn, err1 := strconv.ParseUint(m.Header.Get(topology.HeaderConn), 10, 64)
	line, err2 := strconv.ParseInt(m.Header.Get(topology.HeaderLine), 10, 64)
	lines, err := strconv.Atoi(m.Header.Get(topology.HeaderLines))
	if err != nil || lines < 1 {
		lines = 1
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err1 != nil || err2 != nil {
		if rc.bad == nil {
			rc.bad = fmt.Errorf("republished headers lack %s or %s: %v", topology.HeaderConn, topology.HeaderLine, m.Header)
		}
		return
	}
	for k := range lines {
		rc.seen = append(rc.seen, seenLine{conn: conn, line: line + int64(k), at: m.Header.Get(topology.HeaderReceivedAt)})
	}
}

// readTimes waits up to 5s for n lines' headers and returns the earliest
// read time of a line of each key (keys[i] is line i's, "" for none) and
// how many arrived. receipts name the senders' gateway connections; spans,
// their first lines.
func (rc *receivedCapture) readTimes(ctx context.Context, n int, receipts []sent, spans []span, keys []string) (map[string]time.Time, int, error) {
	var seen []seenLine
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		rc.mu.Lock()
		seen, err = rc.seen, rc.bad
		rc.mu.Unlock()
		if err != nil || len(seen) >= n || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, 0, err
	}
	first := map[uint64]int{} // gateway connection → first corpus line
	for _, s := range receipts {
		first[s.Receipt.Conn] = spans[s.Conn-1].First
	}
	read := map[string]time.Time{}
	for _, s := range seen {
		f, ok := first[s.conn]
		i := f + int(s.line) - 1
		if !ok || s.line < 1 || i >= len(keys) {
			return nil, 0, fmt.Errorf("republished headers name line %d of gateway connection %d, which no sender sent", s.line, s.conn)
		}
		if keys[i] == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, s.at)
		if err != nil {
			return nil, 0, fmt.Errorf("line %d of gateway connection %d: %s %q: %w", s.line, s.conn, topology.HeaderReceivedAt, s.at, err)
		}
		if t, ok := read[keys[i]]; !ok || at.Before(t) {
			read[keys[i]] = at
		}
	}
	return read, len(seen), nil
}

func (rc *receivedCapture) close() {
	if rc.sub != nil {
		_ = rc.sub.Unsubscribe()
	}
}
