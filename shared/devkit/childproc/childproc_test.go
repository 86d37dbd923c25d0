package childproc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
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

func TestTerminate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		want   string // "" for a clean stop
	}{
		{"obeys SIGTERM", "echo ready; sleep 60 & wait", ""},
		{"ignores SIGTERM", "trap '' TERM; echo ready; sleep 60 & wait; sleep 60", "still running 200ms after SIGTERM"},
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
			err = p.Terminate(context.Background(), 200*time.Millisecond)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Terminate = %v", err)
			case tt.want != "" && (!errors.Is(err, ErrKilled) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Terminate = %v, want %q and ErrKilled", err, tt.want)
			}
			select {
			case <-p.Done():
			default:
				t.Fatal("Terminate returned before the child was reaped")
			}
		})
	}
}
