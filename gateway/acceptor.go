package gateway

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Accept retry timing, as net/http's Server.Serve.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// connLimiter caps the connections open at once across all listeners. An
// acceptor takes a slot before it calls Accept, so at the cap no acceptor
// accepts and newcomers wait in the kernel's listen backlog. Reaching the
// cap is logged once per episode; the episode ends when the open
// connections fall below 90% of the cap, so churn at the cap does not flood
// the log. Safe for concurrent use.
type connLimiter struct {
	slots    chan struct{}
	lowWater int64
	open     atomic.Int64
	atCap    atomic.Bool
	logger   *slog.Logger
}

func newConnLimiter(n int, logger *slog.Logger) *connLimiter {
	return &connLimiter{slots: make(chan struct{}, n), lowWater: int64(n - max(1, n/10)), logger: logger}
}

// acquire takes a slot, waiting while all are taken. It returns false if
// done is closed first.
func (l *connLimiter) acquire(done <-chan struct{}) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

// release gives back a slot that Accept did not fill.
func (l *connLimiter) release() { <-l.slots }

// opened records that a slot now holds a connection.
func (l *connLimiter) opened() {
	if l.open.Add(1) == int64(cap(l.slots)) && l.atCap.CompareAndSwap(false, true) {
		l.logger.Warn("connection limit reached; new connections wait in the listen backlog", "max_connections", cap(l.slots))
	}
}

// closed gives back the slot of a connection that has ended.
func (l *connLimiter) closed() {
	open := l.open.Add(-1)
	<-l.slots
	if open <= l.lowWater && l.atCap.Load() && l.atCap.CompareAndSwap(true, false) {
		l.logger.Info("below the connection limit again", "max_connections", cap(l.slots), "open_connections", open)
	}
}

// acceptor runs accept loops on one listener. It asks admit about each
// connection at once, before anything is read, and closes those refused;
// it hands the others to serve, which takes over the connection and must
// call limit.closed when it ends.
type acceptor struct {
	ln       net.Listener
	listener Listener
	limit    *connLimiter
	admit    func(conn net.Conn) bool
	serve    func(conn net.Conn, l Listener)
	logger   *slog.Logger
}

// runPool runs n accept loops on the listener and returns when all have
// returned, which they do once the listener is closed.
func (a *acceptor) runPool(n int, done <-chan struct{}) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { a.loop(done) })
	}
	wg.Wait()
}

// loop accepts connections until the listener is closed. Other Accept errors
// (out of file descriptors, aborted handshakes) are logged and retried after
// a delay growing from 5ms to 1s, reset by a success.
func (a *acceptor) loop(done <-chan struct{}) {
	var delay time.Duration
	for {
		if !a.limit.acquire(done) {
			return
		}
		conn, err := a.ln.Accept()
		if err != nil {
			a.limit.release()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
			a.logger.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if !a.admit(conn) {
			conn.Close()
			a.limit.release()
			continue
		}
		a.limit.opened()
		a.serve(conn, a.listener)
	}
}
