package childproc

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestOutputAndExit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var out bytes.Buffer
	p, err := Start(exec.Command("sh", "-c", "echo hello; echo oops >&2; exit 3"), func(r io.Reader) {
		b, _ := io.ReadAll(r)
		mu.Lock()
		out.Write(b)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	mu.Lock()
	got := out.String()
	mu.Unlock()
	if got != "hello\noops\n" {
		t.Errorf("output = %q", got)
	}
	var exit *exec.ExitError
	if !errors.As(p.Err(), &exit) || exit.ExitCode() != 3 {
		t.Errorf("Err() = %v, want exit status 3", p.Err())
	}
	if err := p.Terminate(context.Background(), time.Second); err != nil {
		t.Errorf("Terminate after exit = %v", err)
	}
}

// TestOutputToFile checks that without an output function the child writes
// where cmd.Stdout and cmd.Stderr say.
func TestOutputToFile(t *testing.T) {
	t.Parallel()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sh", "-c", "echo out; echo err >&2")
	cmd.Stdout, cmd.Stderr = f, f
	p, err := Start(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if b, err := os.ReadFile(f.Name()); err != nil || string(b) != "out\nerr\n" {
		t.Errorf("log = %q, %v; want %q", b, err, "out\nerr\n")
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		script  string
		sig     syscall.Signal
		timeout time.Duration
		cut     time.Duration // cancel Stop's context after this; 0 for an hour
		want    string        // a regular expression for the error; "" for a clean stop
	}{
		{name: "obeys SIGTERM", script: "echo ready; sleep 60 & wait", sig: syscall.SIGTERM, timeout: 10 * time.Second},
		{name: "obeys SIGINT", script: "trap '' TERM; trap 'exit 0' INT; echo ready; sleep 60 & wait", sig: syscall.SIGINT, timeout: 10 * time.Second},
		{
			name:   "ignores SIGTERM",
			script: "trap '' TERM; echo ready; sleep 60 & wait; sleep 60", sig: syscall.SIGTERM, timeout: 200 * time.Millisecond,
			want: `^stop sh \(pid \d+\): did not exit within 200ms of SIGTERM; killed$`,
		},
		{
			name:   "ignores SIGINT until cut short",
			script: "trap '' INT; echo ready; sleep 60 & wait; sleep 60", sig: syscall.SIGINT, cut: 200 * time.Millisecond,
			want: `^stop sh \(pid \d+\): still running \S+ after SIGINT when the stop was cut short \(context deadline exceeded\); killed$`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ready := make(chan struct{})
			p, err := Start(exec.Command("sh", "-c", tt.script), func(r io.Reader) {
				_, _ = bufio.NewReader(r).ReadString('\n')
				close(ready)
				_, _ = io.Copy(io.Discard, r)
			})
			if err != nil {
				t.Fatal(err)
			}
			<-ready // the shell has set its trap
			ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(tt.cut, time.Hour))
			defer cancel()
			err = p.Stop(ctx, tt.sig, tt.timeout)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Stop = %v", err)
			case tt.want != "" && (!errors.Is(err, ErrKilled) || !regexp.MustCompile(tt.want).MatchString(err.Error())):
				t.Fatalf("Stop = %v, want an error matching %s and wrapping ErrKilled", err, tt.want)
			}
			if !p.Exited() {
				t.Fatal("Stop returned before the child was reaped")
			}
			if again := p.Terminate(context.Background(), time.Second); again != err {
				t.Errorf("second Stop = %v, want the first one's %v", again, err)
			}
		})
	}
}
