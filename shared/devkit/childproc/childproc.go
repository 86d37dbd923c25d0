// Package childproc runs the programs that the dev runner and the benchmark
// start (gateway, workers) so that none of them outlives its parent: each
// child gets its own process group, which is killed once the child exits,
// and the kernel kills the child if the parent dies (Pdeathsig).
package childproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// outputGrace is how long the output reader may run on after the child has
// exited, before the pipe is closed under it: something outside the group
// may still hold the pipe's write end.
const outputGrace = time.Second

// Process is a started child. Its methods are safe for concurrent use.
type Process struct {
	pid  int // also its process group id
	done chan struct{}
	err  error // from Wait; valid once done is closed
}

// Start starts cmd in its own process group, with stdout and stderr going to
// a pipe that output reads in its own goroutine until EOF; output may be
// nil to discard them. cmd.SysProcAttr is replaced.
//
// The child is started and waited for on one goroutine locked to its OS
// thread: Pdeathsig fires when the *thread* that forked the child exits, and
// the Go runtime may retire an unlocked goroutine's thread while the child is
// still wanted. Keeping the thread until the child is reaped costs one parked
// thread per child; if the parent dies, even by SIGKILL, the thread dies with
// it and the kernel kills the child.
//
// When the child exits, whatever it left in its group is killed, output is
// given [outputGrace] to finish, and then [Process.Done] is closed.
func Start(cmd *exec.Cmd, output func(io.Reader)) (*Process, error) {
	if output == nil {
		output = func(r io.Reader) { _, _ = io.Copy(io.Discard, r) }
	}
	// The child writes into a pipe of our own rather than one exec.Cmd
	// makes, so that Wait returns when the child exits even if something it
	// started still holds the pipe.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("make output pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	p := &Process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		pw.Close() // the child has its own copy now
		if err != nil {
			pr.Close()
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil

		copied := make(chan struct{})
		go func() {
			defer close(copied)
			output(pr)
		}()
		p.err = cmd.Wait()
		// The group id cannot be reused while any member is alive.
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		select {
		case <-copied:
		case <-time.After(outputGrace):
			pr.Close()
			<-copied
		}
		pr.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Pid returns the child's process id, which is also its process group id.
func (p *Process) Pid() int { return p.pid }

// Done is closed once the child has been reaped and its output read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns how the child ended, as [exec.Cmd.Wait] reported it; nil for
// status 0. Valid once [Process.Done] is closed.
func (p *Process) Err() error { return p.err }

// Kill sends SIGKILL to the child's process group, as a crash would, and
// waits until the child has been reaped.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
}

// ErrKilled is wrapped by [Process.Terminate] when the child had to be
// killed.
var ErrKilled = errors.New("killed it")

// Terminate sends SIGTERM to the child's process group and waits until the
// child exits. If it is still running after timeout, or when ctx is done,
// the group is killed with SIGKILL and the error, wrapping [ErrKilled], says
// why. A child that had already exited returns nil at once; its exit status
// is in [Process.Err].
func (p *Process) Terminate(ctx context.Context, timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	// A failed signal leaves the child running: the timeout then kills it.
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	var why string
	select {
	case <-p.done:
		return nil
	case <-t.C:
		why = fmt.Sprintf("still running %s after SIGTERM", timeout)
	case <-ctx.Done():
		why = "stop cut short"
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s, %w", why, ErrKilled)
}
