package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// msgCounts returns how many messages the NATS server has sent to worker
// p's connection and received from it, and whether the connection is
// closed (the counts are then final).
//
// The consumer's counts cannot say which worker holds which frames, but
// these can: every message a worker sends is an acknowledgement, a pull
// request or an API request; an API request gets one response, a pull
// request a status message or a heartbeat now and then besides its frames.
// So out-in is about the frames the worker holds unacknowledged
// (delivered into its prefetch or in its batches), over by the odd
// heartbeat.
func (b *bundle) msgCounts(p *proc) (out, in int64, closed bool, err error) {
	name := "jetline-worker/" + p.name
	cz, err := b.nats.Connz(&server.ConnzOptions{State: server.ConnAll, Limit: 1 << 16})
	if err != nil {
		return 0, 0, false, fmt.Errorf("list nats connections: %w", err)
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return c.OutMsgs, c.InMsgs, c.Stop != nil, nil
		}
	}
	return 0, 0, false, fmt.Errorf("no nats connection named %s", name)
}

// quietFor is how long a worker must send nothing for killHolding to take
// it as busy storing its batches.
const quietFor = 20 * time.Millisecond

// killHolding SIGKILLs worker p while it holds at least n frames and is
// busy storing them, failing the test if that does not happen within
// timeout. Then it waits for the server to close p's connection and
// returns out-in of its final counts (see [bundle.msgCounts]): about that
// many frames were left unacknowledged, and JetStream must redeliver each
// of them.
//
// Holding lines is not enough: a worker that has just committed a batch
// may have sent acknowledgements the server has yet to count, and a test
// waiting for rows to appear looks just then. So p must also have sent
// nothing for quietFor, in the middle of storing. Even so, on a loaded
// machine the server may lag that long; the final counts tell, and a
// result of 0 or less means the kill may have left nothing to redeliver.
func (b *bundle) killHolding(t *testing.T, p *proc, n int64, timeout time.Duration) int64 {
	t.Helper()
	b.waitFor(t, timeout, p.name+" to hold frames while storing them", func() (bool, string) {
		_, in1, _, err := b.msgCounts(p)
		if err != nil {
			return false, err.Error()
		}
		time.Sleep(quietFor)
		out, in2, _, err := b.msgCounts(p)
		if err != nil {
			return false, err.Error()
		}
		if held := out - in2; in2 != in1 || held < n {
			return false, fmt.Sprintf("it holds about %d frames (want %d) and sent %d messages in %s (want none)", held, n, in2-in1, quietFor)
		}
		p.kill(t)
		return true, ""
	})
	var left int64
	b.waitFor(t, readyTimeout, "the server to close the connection of "+p.name, func() (bool, string) {
		out, in, closed, err := b.msgCounts(p)
		if err != nil {
			return false, err.Error()
		}
		left = out - in
		return closed, "still open"
	})
	return left
}
