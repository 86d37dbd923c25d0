package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jetline/jetline/gateway"
)

// dialTimeout bounds connecting to the gateway.
const dialTimeout = 10 * time.Second

// sent is what one sending connection got back.
type sent struct {
	// Conn is the sender's 1-based number.
	Conn int
	// Receipt is the gateway's receipt.
	Receipt gateway.Receipt
	// At is when the receipt arrived.
	At time.Time
	// Err is why the connection failed, or why its receipt is wrong.
	Err error
}

// senders are open connections to the gateway, each with its share of the
// lines, ready to send them as ncat would: write everything, half-close,
// read the receipt.
type senders struct {
	conns []*net.TCPConn
	spans []span
	c     *corpus
}

// dialSenders opens one connection per span, so that connecting is not
// part of what is measured.
func dialSenders(ctx context.Context, addr string, c *corpus, spans []span) (*senders, error) {
	s := &senders{spans: spans, c: c}
	d := net.Dialer{Timeout: dialTimeout}
	for i := range spans {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("connect sender %d to the gateway at %s: %w", i+1, addr, err)
		}
		s.conns = append(s.conns, conn.(*net.TCPConn))
	}
	return s, nil
}

// start sends on every connection at once and returns when the first byte
// is about to leave, with a channel that yields one [sent] per connection
// and is then closed. ctx cancels the sends by closing the connections.
func (s *senders) start(ctx context.Context) (time.Time, <-chan sent) {
	out := make(chan sent, len(s.conns))
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i, conn := range s.conns {
		wg.Go(func() {
			<-begin
			out <- s.send(ctx, i+1, conn, s.spans[i])
		})
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	t0 := time.Now()
	close(begin)
	return t0, out
}

func (s *senders) send(ctx context.Context, n int, conn *net.TCPConn, sp span) sent {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	res := sent{Conn: n}
	data := s.c.Bytes(sp)
	if _, err := conn.Write(data); err != nil {
		res.Err = fmt.Errorf("sender %d: write: %w", n, err)
		return res
	}
	if err := conn.CloseWrite(); err != nil {
		res.Err = fmt.Errorf("sender %d: half-close: %w", n, err)
		return res
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	res.At = time.Now()
	if err != nil {
		res.Err = fmt.Errorf("sender %d: read receipt: %w (got %q)", n, err, line)
		return res
	}
	if err := json.Unmarshal(line, &res.Receipt); err != nil {
		res.Err = fmt.Errorf("sender %d: receipt %q: %w", n, line, err)
		return res
	}
	res.Err = checkReceipt(res.Receipt, sp.N, int64(len(data)))
	if res.Err != nil {
		res.Err = fmt.Errorf("sender %d: %w", n, res.Err)
	}
	return res
}

// checkReceipt reports how r differs from a receipt for lines lines of
// bytes bytes, all stored.
func checkReceipt(r gateway.Receipt, lines int, bytes int64) error {
	var errs []error
	if r.Status != gateway.StatusOK {
		errs = append(errs, fmt.Errorf("status %q, want %q (error %q, resume at line %d)", r.Status, gateway.StatusOK, r.Error, r.ResumeLine))
	}
	if r.Lines != int64(lines) {
		errs = append(errs, fmt.Errorf("%d lines stored, sent %d", r.Lines, lines))
	}
	if r.Bytes != bytes {
		errs = append(errs, fmt.Errorf("%d bytes received, sent %d", r.Bytes, bytes))
	}
	if r.Blank != 0 || r.TooLong != 0 {
		errs = append(errs, fmt.Errorf("%d blank and %d too long lines, sent none", r.Blank, r.TooLong))
	}
	if len(errs) > 0 {
		return fmt.Errorf("receipt is wrong: %w", errors.Join(errs...))
	}
	return nil
}

func (s *senders) close() {
	for _, c := range s.conns {
		c.Close()
	}
}
