package testenv

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback host:port that nothing listens on right now:
// an address to give a program to listen on, or one that refuses
// connections. Another process may take the port before the caller uses
// it; the kernel hands out ports in turn, so that is rare.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
