package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/jetline/jetline/gateway"
)

// sent is what one sending connection, numbered Conn from 1, got back:
// the gateway's receipt, when, or why the connection failed or its
// receipt is wrong.
type sent struct {
	Conn    int
	Receipt gateway.Receipt
	At      time.Time
	Err     error
}

// senders are open connections to the gateway, each with its share of the
// lines (see [senders.send]).
type senders struct {
	addr  string
	conns []*net.TCPConn // nil when ncat sends a dump
	spans []span
	c     *corpus
	dump  *dump
	// each, when set, makes the lines lone: each is written on its own,
	// then each is called with its index and write time before the next.
	each func(i int, written time.Time) error
}

// dialSenders opens one connection per span, so that connecting is not
// part of what is measured. With a dump, spans must be the whole corpus.
func dialSenders(ctx context.Context, b *bench, spans []span) (*senders, error) {
	s := &senders{addr: b.gatewayAddr, spans: spans, c: b.corpus, dump: b.dump}
	if s.dump != nil && s.dump.Ncat != "" {
		return s, nil
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	for i := range spans {
		conn, err := d.DialContext(ctx, "tcp", s.addr)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("connect sender %d to the gateway at %s: %w", i+1, s.addr, err)
		}
		s.conns = append(s.conns, conn.(*net.TCPConn))
	}
	return s, nil
}

// start sends on every connection at once and returns when the first byte
// is about to leave, with a channel that yields one [sent] per connection
// and is then closed. ctx cancels the sends by closing the connections.
func (s *senders) start(ctx context.Context) (time.Time, <-chan sent) {
	out := make(chan sent, len(s.spans))
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i, sp := range s.spans {
		wg.Go(func() {
			<-begin
			out <- s.send(ctx, i, sp)
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

// send sends sp (or the dump) on connection i as ncat would: write
// everything, half-close, read the receipt; then it checks the receipt.
// A dump with ncat found is sent by `ncat host port < dump` itself.
func (s *senders) send(ctx context.Context, i int, sp span) sent {
	res := sent{Conn: i + 1}
	data := s.c.Bytes(sp)
	wire := int64(len(data))
	if s.dump != nil {
		wire = s.dump.Bytes
	}
	var line []byte
	var err error
	if s.dump != nil && s.dump.Ncat != "" {
		line, err = s.dump.sendNcat(ctx, s.addr)
	} else {
		line, err = s.write(ctx, s.conns[i], sp)
	}
	res.At = time.Now()
	if err == nil {
		err = json.Unmarshal(line, &res.Receipt)
	}
	if err == nil {
		err = checkReceipt(res.Receipt, sp.N, wire)
	}
	if d := s.dump; err == nil && d != nil && (res.Receipt.Compression != d.Format || res.Receipt.BytesDecompressed != int64(len(data))) {
		err = fmt.Errorf("receipt is wrong: compression %q with %d bytes decompressed, sent %s of %d bytes",
			res.Receipt.Compression, res.Receipt.BytesDecompressed, d.Format, len(data))
	}
	if err != nil {
		res.Err = fmt.Errorf("sender %d: %w (receipt %q)", res.Conn, err, line)
	}
	return res
}

// write writes sp (or the dump) to conn, half-closes it and returns the
// receipt line.
func (s *senders) write(ctx context.Context, conn *net.TCPConn, sp span) ([]byte, error) {
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	var err error
	switch {
	case s.dump != nil:
		var f *os.File
		if f, err = os.Open(s.dump.Path); err == nil {
			_, err = io.Copy(conn, f)
			f.Close()
		}
	case s.each != nil:
		for i := sp.First; i < sp.First+sp.N && err == nil; i++ {
			if _, err = conn.Write(s.c.Bytes(span{First: i, N: 1})); err == nil {
				err = s.each(i, time.Now())
			}
		}
	default:
		_, err = conn.Write(s.c.Bytes(sp))
	}
	if err == nil {
		err = conn.CloseWrite()
	}
	if err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return line, fmt.Errorf("read receipt: %w", err)
	}
	return line, nil
}

// sendNcat runs `ncat host port < dump` and returns the receipt it
// printed.
func (d *dump) sendNcat(ctx context.Context, addr string) ([]byte, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	in, err := os.Open(d.Path)
	if err != nil {
		return nil, fmt.Errorf("open the dump: %w", err)
	}
	defer in.Close()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, d.Ncat, host, port)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ncat %s %s < %s: %w: %s", host, port, d.Path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
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

// close closes the connections not sent on.
func (s *senders) close() {
	for _, c := range s.conns {
		c.Close()
	}
}
