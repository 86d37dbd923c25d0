package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// msgCounts returns how many messages the NATS server has sent to worker
// p's connection and received from it.
//
// The consumer's counts cannot say which worker holds which lines, but
// these can: every message a worker sends is an acknowledgement, a pull
// request or an API request; an API request gets one response, a pull
// request at most one status message besides its lines (the worker's
// fetches expire within WORKER_FETCH_MAX_WAIT, under the 10 s from which
// nats.go adds heartbeats). So out-in is at most the lines the worker
// holds unacknowledged.
func (b *bundle) msgCounts(p *proc) (out, in int64, err error) {
	name := "jetline-worker/" + p.name
	cz, err := b.nats.Connz(&server.ConnzOptions{Limit: 1 << 16})
	if err != nil {
		return 0, 0, fmt.Errorf("list nats connections: %w", err)
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return c.OutMsgs, c.InMsgs, nil
		}
	}
	return 0, 0, fmt.Errorf("no nats connection named %s", name)
}

// quietFor is how long a worker must send nothing for killHolding to take
// it as busy storing its batches.
const quietFor = 20 * time.Millisecond

// killHolding SIGKILLs worker p while it holds at least n lines and is
// busy storing them, so that JetStream must redeliver them, failing the
// test if that does not happen within timeout. It returns how many lines p
// held at least.
//
// Holding lines is not enough: a worker that has just committed a batch
// may have sent its acknowledgements, which the server has yet to count,
// and a test that waits for rows to appear looks just then. So p must also
// have sent nothing for quietFor: it is in the middle of storing, and
// acknowledges nothing before the kill that follows at once.
func (b *bundle) killHolding(t *testing.T, p *proc, n int64, timeout time.Duration) int64 {
	t.Helper()
	var held int64
	b.waitFor(t, timeout, p.name+" to hold lines while storing them", func() (bool, string) {
		_, in1, err := b.msgCounts(p)
		if err != nil {
			return false, err.Error()
		}
		time.Sleep(quietFor)
		out2, in2, err := b.msgCounts(p)
		if err != nil {
			return false, err.Error()
		}
		held = out2 - in2
		if in2 != in1 || held < n {
			return false, fmt.Sprintf("it holds at least %d lines (want %d) and sent %d messages in %s (want none)", held, n, in2-in1, quietFor)
		}
		p.kill(t)
		return true, ""
	})
	return held
}
