//go:build linux

package gateway_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/devkit/tweetgen"
)

// A connection reset in the middle of an xz stream, or one whose stream
// decompresses to more than the limit while its sender waits, leaves no
// xz process behind, and the gateway goes on serving. Not parallel: it
// looks at every child process of the test binary.
func TestGatewayXzProgramEndsWithItsConnection(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz is not installed; the gateway decodes xz in Go")
	}
	cmd := exec.Command("xz", "-c", "-6")
	cmd.Stdin = bytes.NewReader(tweetgen.New(7, 1).Lines(1000))
	data, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		limit string               // GATEWAY_MAX_DECOMPRESSED_BYTES
		end   func(c *net.TCPConn) // once the first lines are stored
	}{
		{"reset mid-stream", "1073741824", func(c *net.TCPConn) {
			_ = c.SetLinger(0)
			_ = c.Close()
		}},
		// Only killing xz ends it: it waits to write what nobody reads.
		{"over the limit", "1000000", func(c *net.TCPConn) {
			if _, err := c.Write(data[len(data)/20 : len(data)/2]); err != nil {
				t.Fatal(err)
			}
			if r := readReceipt(t, c, 20*time.Second); !strings.Contains(r.Error, "GATEWAY_MAX_DECOMPRESSED_BYTES") {
				t.Errorf("over the limit: receipt = %+v, want the limit's error", r)
			}
		}},
	}
	for _, tc := range cases {
		b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_DECOMPRESSED_BYTES": tc.limit}})
		before := xzChildren(t)
		c := dial(t, b.addr(t, 0))
		// A twentieth decompresses to ~300 kB, under either limit.
		if _, err := c.Write(data[:len(data)/20]); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, "lines to be stored", func() error {
			if got := b.msgCount(t); got <= 0 {
				return fmt.Errorf("%v, want more than %v", got, 0)
			}
			return nil
		})
		var running []int
		for pid := range xzChildren(t) {
			if !before[pid] {
				running = append(running, pid)
			}
		}
		if len(running) != 1 {
			t.Fatalf("%s: %d xz processes decode the connection, want 1", tc.name, len(running))
		}
		tc.end(c)
		testenv.Eventually(t, 20*time.Second, "the session to end", func() error {
			if got := gateway.OpenSessions(b.gw); got != 0 {
				return fmt.Errorf("%v, want %v", got, 0)
			}
			return nil
		})
		if err := syscall.Kill(running[0], 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: after the session ended, xz (pid %d) answers kill(0) with %v, want ESRCH (gone and reaped)", tc.name, running[0], err)
		}
		_ = c.Close()
		if r := send(t, b.addr(t, 0), []byte("after\n")); r.Status != gateway.StatusOK || r.Lines != 1 {
			t.Fatalf("%s: receipt after = %+v, want ok with 1 line", tc.name, r)
		}
	}
}

// xzChildren returns the pids of this process's children named xz,
// zombies too.
func xzChildren(t *testing.T) map[int]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	out := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …; comm may hold spaces, not ")".
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.HasSuffix(s[:i], "(xz") {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == self {
			out[pid] = true
		}
	}
	return out
}
