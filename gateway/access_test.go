package gateway_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// expectClosed checks that the gateway closed c without a receipt.
func expectClosed(t *testing.T, c io.Reader, what string) {
	t.Helper()
	b, err := io.ReadAll(c)
	if len(b) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s read %q, %v; want the connection closed without a receipt", what, b, err)
	}
}

func TestGatewayAllowlist(t *testing.T) {
	t.Parallel()
	tests := []struct {
		allow   string
		refused bool
	}{
		{"10.0.0.0/8", true},
		{"10.0.0.0/8, 127.0.0.0/8", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.allow, func(t *testing.T) {
			t.Parallel()
			b := setup(t, setupOptions{env: map[string]string{"GATEWAY_ALLOW_CIDRS": tt.allow}})
			if !tt.refused {
				if r := send(t, b.addr(t, 0), []byte("{\"allowed\":1}\n")); r.Status != gateway.StatusOK || r.Lines != 1 {
					t.Fatalf("receipt = %+v, want ok with 1 line", r)
				}
				if n := b.gw.Refused()[gateway.RefusedAllowlist]; n != 0 {
					t.Fatalf("%d refused for the allowlist, want 0", n)
				}
				return
			}
			c := dial(t, b.addr(t, 0))
			_, _ = c.Write([]byte("{\"allowed\":0}\n"))
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			expectClosed(t, c, "connection from outside the allowlist")
			testenv.Eventually(t, 10*time.Second, "the refusal to be counted", func() error {
				if got := b.gw.Refused()[gateway.RefusedAllowlist]; got != 1 {
					return fmt.Errorf("%v, want %v", got, 1)
				}
				return nil
			})
			if n := b.msgCount(t); n != 0 {
				t.Fatalf("stream holds %d lines, want 0", n)
			}
		})
	}
}

func TestGatewayPerIPCap(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_CONNECTIONS_PER_IP": "2"}})
	open := []string{"first", "second"}
	conns := make([]*net.TCPConn, len(open))
	for i, name := range open {
		c := dial(t, b.addr(t, 0))
		if _, err := c.Write([]byte("{\"conn\":\"" + name + "\"}\n")); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	testenv.Eventually(t, 10*time.Second, "both lines to be stored", func() error {
		if got := b.lineCount(t); got != 2 {
			return fmt.Errorf("%v, want %v", got, 2)
		}
		return nil
	})

	third := dial(t, b.addr(t, 0))
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	expectClosed(t, third, "third connection from one address")
	testenv.Eventually(t, 10*time.Second, "the refusal to be counted", func() error {
		if got := b.gw.Refused()[gateway.RefusedPerIP]; got != 1 {
			return fmt.Errorf("%v, want %v", got, 1)
		}
		return nil
	})

	// Once one of them has ended, the address may connect again.
	if err := conns[0].CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := readReceipt(t, conns[0], 10*time.Second); r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("first receipt = %+v", r)
	}
	var r gateway.Receipt
	testenv.Eventually(t, 10*time.Second, "a new connection to be served", func() error {
		c := dial(t, b.addr(t, 0))
		_, _ = c.Write([]byte("{\"conn\":\"later\"}\n"))
		_ = c.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, readErr := io.ReadAll(c)
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("no receipt in %q (read: %v): %w", line, readErr, err)
		}
		return nil
	})
	if r.Status != gateway.StatusOK || r.Lines != 1 {
		t.Fatalf("receipt after the first ended = %+v", r)
	}
	if err := conns[1].CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n := b.lineCount(t); n != 3 {
		t.Fatalf("stream holds %d lines, want 3", n)
	}
}
