package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/topology"
)

// uploadPlan is a hostile file for a named upload: records with escapes
// and CRLF endings, blank, invalid and oversize lines.
func uploadPlan(t *testing.T, records int) *plan {
	seed := inputSeed(t)
	rng := rngFor(seed, 0)
	return newPlan(rng, "u", topology.DefaultSource, mix{
		records:     records,
		large:       2,
		overMax:     []bigLine{{size: maxLine + 1 + rng.IntN(64<<10), crlf: true}},
		blanks:      30,
		invalid:     25,
		crlfPercent: 20,
		last:        kindRecord,
	})
}

// eventRows returns every row of events as line_id → payload.
func (b *bundle) eventRows(t *testing.T) map[string]string {
	t.Helper()
	rows, err := b.db.Query(t.Context(), "SELECT line_id, payload::text FROM events")
	if err != nil {
		t.Fatalf("query events: %v", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, payload string
		if err := rows.Scan(&id, &payload); err != nil {
			t.Fatal(err)
		}
		out[id] = payload
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sendUpload sends the header naming upload name and then data on a new
// connection, and returns the receipt.
func sendUpload(gw *gatewayProc, name string, data []byte, seed uint64) (receipt, error) {
	c, err := net.DialTimeout("tcp", gw.addrs[topology.DefaultSource], 10*time.Second)
	if err != nil {
		return receipt{}, err
	}
	defer c.Close()
	input := append([]byte("#jetline upload="+name+"\n"), data...)
	return sendLines(c.(*net.TCPConn), input, rngFor(seed, 7))
}

// TestUploadSentTwiceStoresOnce sends a hostile file under a name to the
// raw events table, then sends it again: the rows are exactly the same,
// one per valid line, keyed by the upload's identities.
func TestUploadSentTwiceStoresOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	gw := b.startGateway(t)
	b.startWorkers(t, 2, nil)
	p := uploadPlan(t, 6000)
	want := expect([]*plan{p})

	r, err := sendUpload(gw, "hostile", p.data, 1)
	if err != nil || r.Status != "ok" || r.Lines != p.lines {
		t.Fatalf("first send: receipt %+v, %v; want ok with %d lines", r, err, p.lines)
	}
	b.waitDrained(t, drainTimeout)
	first := b.eventRows(t)
	b.checkRows(t, want.rows)
	for id := range first {
		if !strings.HasPrefix(id, "default/hostile.") {
			t.Fatalf("row %s is not keyed by the upload's identity", id)
		}
	}

	// The dead letters, the worker's (invalid lines) and the gateway's
	// (the oversize line), keep the upload's identity and name.
	letters := b.deadLetters(t)
	if int64(len(letters)) != p.invalid+p.tooLong {
		t.Fatalf("%d dead letters, want %d invalid and %d oversize lines", len(letters), p.invalid, p.tooLong)
	}
	for _, e := range letters {
		if e.Header.Get(topology.HeaderUpload) != "hostile" || !strings.HasPrefix(e.Header.Get(topology.HeaderLineID), "default/hostile.") {
			t.Fatalf("dead letter %s lacks the upload's name or identity", describeEntry(e))
		}
	}

	r, err = sendUpload(gw, "hostile", p.data, 2)
	if err != nil || r.Status != "ok" || r.Lines != p.lines {
		t.Fatalf("second send: receipt %+v, %v", r, err)
	}
	b.waitDrained(t, drainTimeout)
	second := b.eventRows(t)
	if len(second) != len(first) {
		t.Fatalf("events has %d rows after the second send, %d after the first", len(second), len(first))
	}
	for id, payload := range first {
		if second[id] != payload {
			t.Fatalf("row %s changed between sends: %q, then %q", id, payload, second[id])
		}
	}
	b.checkRows(t, want.rows)
}

// TestUploadGatewayKilledResendWhole SIGKILLs the gateway in the middle of
// a named upload, starts another, and sends the whole file again under
// the same name once the dead gateway's hold on it has expired: every
// line is stored exactly once.
func TestUploadGatewayKilledResendWhole(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{gatewayEnv: map[string]string{"GATEWAY_UPLOAD_LEASE": "2s"}})
	gw := b.startGateway(t)
	b.startWorkers(t, 2, nil)
	p := uploadPlan(t, 30000)
	want := expect([]*plan{p})

	sent := make(chan error, 1)
	go func() {
		c, err := net.DialTimeout("tcp", gw.addrs[topology.DefaultSource], 10*time.Second)
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		data := append([]byte("#jetline upload=archive\n"), p.data...)
		for len(data) > 0 {
			n := min(len(data), 2048)
			if _, err := c.Write(data[:n]); err != nil {
				sent <- err
				return
			}
			data = data[n:]
			time.Sleep(200 * time.Microsecond)
		}
		_, err = readReceipt(c)
		sent <- err
	}()
	b.waitFor(t, 60*time.Second, "part of the upload to be stored", func() (bool, string) {
		n := b.rowCount(t)
		return n > len(want.rows)/10, fmt.Sprintf("%d rows", n)
	})
	gw.kill(t)
	if err := <-sent; err == nil {
		t.Fatal("the sender got a receipt from a gateway killed mid-upload")
	}
	partial := b.rowCount(t)
	if partial >= len(want.rows) {
		t.Fatalf("the whole upload (%d rows) was stored before the kill; the test needs a partial one", partial)
	}

	gw2 := b.startGateway(t)
	var r receipt
	b.waitFor(t, 30*time.Second, "the dead gateway's hold on the name to expire", func() (bool, string) {
		var err error
		r, err = sendUpload(gw2, "archive", p.data, 3)
		if err != nil {
			t.Fatalf("resend: %v", err)
		}
		return r.Status == "ok", fmt.Sprintf("receipt %+v", r)
	})
	if r.Lines != p.lines {
		t.Fatalf("resend receipt %+v, want %d lines", r, p.lines)
	}
	b.waitDrained(t, drainTimeout)
	t.Logf("%d of %d rows stored before the kill, then the whole file sent again", partial, len(want.rows))
	b.checkRows(t, want.rows)
}
