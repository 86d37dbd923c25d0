package gateway_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// oversizeLine returns a line of n bytes whose every 64 KiB differs, so a
// prefix taken from the wrong place does not pass for the right one.
func oversizeLine(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "[%08d]", i)
	}
	return b.Bytes()[:n]
}

// deadLetters returns every entry of the dead-letter stream, oldest first.
func (b *bundle) deadLetters(t testing.TB) []deadletter.Entry {
	t.Helper()
	s, err := b.js.Stream(t.Context(), deadletter.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []deadletter.Entry
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		e, err := deadletter.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// An oversize line leaves a dead letter with its first 64 KiB and its
// length; the lines around it are stored and the receipt counts it.
func TestGatewayOversizeLineIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	maxLine := b.gw.MaxLineBytes()
	big, last := oversizeLine(3<<20+17), oversizeLine(maxLine+1)
	raw := bytes.Join([][]byte{[]byte("first"), big, []byte("third"), last}, []byte("\n"))
	raw = append(raw, '\r') // the final line ends without "\n"; its "\r" is not part of it
	cases := []struct {
		name        string
		compression string
		data        []byte
	}{
		{"plain", gateway.CompressionNone, raw},
		{"gzip", gateway.CompressionGzip, gzipped(t, raw)},
		{"zstd", gateway.CompressionZstd, zstded(t, raw)},
	}
	payloads := make([][]byte, len(cases))
	for i, c := range cases {
		payloads[i] = c.data
	}
	receipts := sendAll(t, b.addr(t, 0), payloads)

	byConn := map[string]string{} // conn → case
	for i, r := range receipts {
		c := cases[i]
		want := gateway.Receipt{Status: gateway.StatusOK, Lines: 2, Bytes: int64(len(c.data)), Compression: c.compression,
			BytesDecompressed: int64(len(raw)), TooLong: 2, DeadLettered: 2, Gateway: "test-gw", Conn: r.Conn}
		if r != want {
			t.Errorf("%s: receipt = %+v, want %+v", c.name, r, want)
		}
		byConn[strconv.FormatUint(r.Conn, 10)] = c.name
	}

	stored := map[string]string{}
	for _, l := range b.storedLines(t) {
		stored[byConn[l.conn]+":"+strconv.FormatInt(l.line, 10)] = l.data
	}
	entries := b.deadLetters(t)
	if len(entries) != 2*len(cases) {
		t.Fatalf("dead-letter stream holds %d entries, want %d", len(entries), 2*len(cases))
	}
	seen := map[string]bool{}
	for _, e := range entries {
		conn, line := e.Header.Get(topology.HeaderConn), e.Header.Get(topology.HeaderLine)
		name := byConn[conn]
		seen[name+":"+line] = true
		wantLine := big
		if line == "4" {
			wantLine = last
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"data", e.Data, wantLine[:deadletter.TooLongKeep]},
			{"length", e.Length, int64(len(wantLine))},
			{"reason", e.Reason, deadletter.ReasonTooLong},
			{"class", e.Class, deadletter.ClassPermanent},
			{"error", e.Error, fmt.Sprintf("line of %d bytes exceeds GATEWAY_MAX_LINE_BYTES=%d", len(wantLine), maxLine)},
			{"ingest subject", e.Subject, topology.Subject(topology.DefaultSource)},
			{"source", e.Source, topology.DefaultSource},
			{"by", e.By, "test-gw"},
			{"gateway header", e.Header.Get(topology.HeaderGateway), "test-gw"},
			{"message id", e.Header.Get(jetstream.MsgIDHeader), "dlq.test-gw." + conn + "." + line},
			{"line id", e.Header.Get(topology.HeaderLineID), "test-gw." + conn + "." + line},
		}
		for _, c := range checks {
			if !bytes.Equal(fmt.Append(nil, c.got), fmt.Append(nil, c.want)) {
				t.Errorf("%s line %s: %s = %.80v, want %.80v", name, line, c.what, c.got, c.want)
			}
		}
		if ts, err := time.Parse(time.RFC3339Nano, e.Header.Get(topology.HeaderReceivedAt)); err != nil || time.Since(ts) > time.Minute {
			t.Errorf("%s line %s: %s = %q (%v)", name, line, topology.HeaderReceivedAt, e.Header.Get(topology.HeaderReceivedAt), err)
		}
		if time.Since(e.At) > time.Minute {
			t.Errorf("%s line %s: written at %s", name, line, e.At)
		}
	}
	for _, c := range cases {
		for _, line := range []string{"2", "4"} {
			if !seen[c.name+":"+line] {
				t.Errorf("%s: no dead letter for line %s", c.name, line)
			}
		}
		if stored[c.name+":1"] != "first" || stored[c.name+":3"] != "third" {
			t.Errorf("%s: stored lines 1 and 3 = %q, %q; want first, third", c.name, stored[c.name+":1"], stored[c.name+":3"])
		}
	}
	if got := subjects(t, b); got != "dlq.default.too_long" {
		t.Errorf("dead-letter subjects = %s, want dlq.default.too_long", got)
	}
}

// subjects lists the subjects of the dead-letter stream.
func subjects(t testing.TB, b *bundle) string {
	t.Helper()
	s, err := b.js.Stream(t.Context(), deadletter.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for subj := range info.State.Subjects {
		out = append(out, subj)
	}
	return strings.Join(out, ",")
}

// A dead letter the stream refuses ends the connection like a line it
// refuses: an error receipt that resumes at the oversize line.
func TestGatewayDeadLetterRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	cfg := deadletter.Config{MaxAge: time.Hour, MaxBytes: 256 << 20}.Stream(1)
	cfg.MaxMsgSize = 1 << 10 // smaller than the 64 KiB kept of an oversize line
	if _, err := b.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	input := "first\n" + string(oversizeLine(2<<20)) + "\nthird\n"
	r := send(t, b.addr(t, 0), []byte(input))
	if r.Status != gateway.StatusError || r.ResumeLine != 2 || r.TooLong != 1 || r.DeadLettered != 0 {
		t.Fatalf("receipt = %+v, want error resuming at line 2 with 1 line too long, none dead-lettered", r)
	}
	if !strings.Contains(r.Error, "dead letter of line 2") {
		t.Errorf("receipt error %q does not name the dead letter of line 2", r.Error)
	}
	// Line 3 may have been published while the dead letter was refused:
	// lines after resume_line may be stored (the README says so).
	lines := b.storedLines(t)
	if int64(len(lines)) < r.Lines || len(lines) == 0 || lines[0].data != "first" {
		t.Errorf("stream holds %d lines, receipt says %d; want line 1 among them", len(lines), r.Lines)
	}
	for _, l := range lines[min(1, len(lines)):] {
		if l.data != "third" {
			t.Errorf("stream holds %.20q after line 1, want only line 3", l.data)
		}
	}
	if n := len(b.deadLetters(t)); n != 0 {
		t.Errorf("dead-letter stream holds %d entries, want 0", n)
	}
}

// Under a maximum line length below 64 KiB, a dead letter keeps as much
// of the line as a line may have.
func TestGatewayDeadLetterKeepsAtMostMaxLine(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_LINE_BYTES": "100", "GATEWAY_READ_BUFFER_BYTES": "512"}})
	line := oversizeLine(5000)
	r := send(t, b.addr(t, 0), append(line, "\r\nok\n"...))
	if r.Status != gateway.StatusOK || r.Lines != 1 || r.TooLong != 1 || r.DeadLettered != 1 {
		t.Fatalf("receipt = %+v, want ok with 1 line, 1 too long and dead-lettered", r)
	}
	entries := b.deadLetters(t)
	if len(entries) != 1 {
		t.Fatalf("dead-letter stream holds %d entries, want 1", len(entries))
	}
	if e := entries[0]; !bytes.Equal(e.Data, line[:100]) || e.Length != 5000 || !e.Truncated() {
		t.Fatalf("dead letter holds %q of %d bytes, want the first 100 of 5000", e.Data, e.Length)
	}
}
