package gateway_test

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetline/jetline/gateway"
)

// BenchmarkGateway streams 6 KB (and 500 byte) lines over one or more connections into an
// embedded server (memory storage, so the disk does not dominate), with
// and without a delay between gateway and NATS, to choose the in-flight
// window defaults. Each operation is one line.
func BenchmarkGateway(b *testing.B) {
	const ms = time.Millisecond
	cases := []struct {
		line     int
		conns    int
		delay    time.Duration
		messages string
		bytes    string
	}{
		{6000, 1, 0, "256", "1048576"},
		{6000, 1, 0, "4096", "8388608"},
		{6000, 4, 0, "4096", "8388608"},
		{6000, 1, 2 * ms, "256", "1048576"},
		{6000, 1, 2 * ms, "1024", "4194304"},
		{6000, 1, 2 * ms, "4096", "8388608"},
		{6000, 1, 2 * ms, "8192", "33554432"},
		{6000, 4, 2 * ms, "4096", "8388608"},
		{500, 1, 0, "4096", "8388608"},
		{500, 1, 2 * ms, "1024", "8388608"},
		{500, 1, 2 * ms, "2048", "8388608"},
		{500, 1, 2 * ms, "4096", "8388608"},
		{500, 1, 2 * ms, "8192", "8388608"},
	}
	for _, c := range cases {
		name := fmt.Sprintf("line=%d/conns=%d/delay=%s/msgs=%s/bytes=%s", c.line, c.conns, c.delay, c.messages, c.bytes)
		b.Run(name, func(b *testing.B) {
			benchGateway(b, c.line, c.conns, c.delay, map[string]string{"GATEWAY_INFLIGHT_LINES": c.messages, "GATEWAY_INFLIGHT_BYTES": c.bytes})
		})
	}
}

func benchGateway(b *testing.B, lineSize, conns int, delay time.Duration, environ map[string]string) {
	bb := setup(b, setupOptions{env: environ, streamMaxBytes: 4 << 30, memory: true, natsDelay: delay})
	perConn := max(1, b.N/conns)
	b.SetBytes(int64(lineSize))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			c := dial(b, bb.addr(b, 0))
			var written atomic.Int64
			streamLines(c, lineSize, &written, perConn)
			_ = c.CloseWrite()
			r := readReceipt(b, c, 5*time.Minute)
			if r.Status != gateway.StatusOK || r.Lines != int64(perConn) {
				b.Errorf("receipt = %+v, want ok with %d lines", r, perConn)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
}

// delayProxy forwards TCP connections to target, delaying every chunk by
// delay in each direction (so a round trip takes twice delay) without
// limiting bandwidth. It returns the nats:// URL to connect to.
func delayProxy(t testing.TB, target string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool {
			k.(net.Conn).Close()
			return true
		})
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, nil)
			conns.Store(up, nil)
			wg.Go(func() { delayCopy(up, c, delay) })
			wg.Go(func() { delayCopy(c, up, delay) })
		}
	})
	return "nats://" + ln.Addr().String()
}

func delayCopy(dst, src net.Conn, delay time.Duration) {
	type chunk struct {
		data []byte
		at   time.Time
	}
	ch := make(chan chunk, 4096)
	var failed atomic.Bool
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil || failed.Load() {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.data); err != nil && !errors.Is(err, net.ErrClosed) {
			failed.Store(true)
		}
	}
	dst.Close()
}
