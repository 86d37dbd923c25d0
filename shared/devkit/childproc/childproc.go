// Package childproc runs the programs that the dev runner, the benchmark
// and the tests start (gateway, workers, postgres, a test binary as a
// program) so that none of them outlives its parent: each child gets its
// own process group, which is killed once the child exits, and on Linux the
// kernel kills the child if the parent dies (Pdeathsig). A child is stopped
// with a signal and killed if it does not exit in time ([Process.Stop]);
// [PrefixWriter] prefixes its output lines with its name.
package childproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// outputGrace is how long the output reader may run on after the child has
// exited, before the pipe is closed under it: something outside the group
// may still hold the pipe's write end.
const outputGrace = time.Second

// Process is a started child. Its methods are safe for concurrent use.
type Process struct {
	name string // the program's file name, for errors
	pid  int    // also its process group id
	done chan struct{}
	err  error // from Wait; valid once done is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts cmd in its own process group. cmd.SysProcAttr gets
// Setpgid and Pdeathsig; its other fields, such as Credential, are kept
// (the kernel arms the death signal after switching credentials, so the
// switch does not clear it).
//
// Stdout and stderr go to a pipe that output reads in its own goroutine
// until EOF. With output nil, cmd.Stdout and cmd.Stderr are used as set,
// and should be files or nil: exec.Cmd copies any other writer through a
// pipe of its own, and then the child is not reaped until everything
// holding that pipe has exited.
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
	// The child writes into a pipe of our own rather than one exec.Cmd
	// makes, so that Wait returns when the child exits even if something it
	// started still holds the pipe.
	var pr, pw *os.File // nil without output, which makes Close a no-op
	if output == nil {
		output = func(io.Reader) {}
	} else {
		var err error
		if pr, pw, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("make output pipe: %w", err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	setDeathsig(cmd.SysProcAttr)

	p := &Process{name: filepath.Base(cmd.Path), done: make(chan struct{})}
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

// Exited reports whether [Process.Done] is closed.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns how the child ended, as [exec.Cmd.Wait] reported it; nil for
// status 0. Valid once [Process.Done] is closed.
func (p *Process) Err() error { return p.err }

// Kill sends SIGKILL to the child's process group, as a crash would, and
// waits until the child has been reaped. On a child already reaped it does
// nothing.
func (p *Process) Kill() {
	if !p.Exited() {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	<-p.done
}

// ErrKilled is wrapped by [Process.Stop] when the child had to be killed.
var ErrKilled = errors.New("killed")

// Stop sends sig to the child's process group and waits until the child
// exits. If it is still running after timeout (0: no limit), or when ctx is
// done, the group is killed with SIGKILL and the error, wrapping
// [ErrKilled], says why, for example "stop gateway (pid 12): did not exit
// within 20s of SIGTERM; killed". Otherwise, and on a child that had
// already exited, it returns nil; the exit status is in [Process.Err].
//
// Only the first call stops the child; later ones wait for it and return
// its result.
func (p *Process) Stop(ctx context.Context, sig syscall.Signal, timeout time.Duration) error {
	p.stopOnce.Do(func() { p.stopErr = p.stop(ctx, sig, timeout) })
	return p.stopErr
}

// Terminate is [Process.Stop] with SIGTERM.
func (p *Process) Terminate(ctx context.Context, timeout time.Duration) error {
	return p.Stop(ctx, syscall.SIGTERM, timeout)
}

func (p *Process) stop(ctx context.Context, sig syscall.Signal, timeout time.Duration) error {
	if p.Exited() {
		return nil
	}
	start := time.Now()
	// A failed signal leaves the child running: the timeout then kills it.
	_ = syscall.Kill(-p.pid, sig)
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var why string
	select {
	case <-p.done:
		return nil
	case <-expired:
		why = fmt.Sprintf("did not exit within %s of %s", timeout, signalName(sig))
	case <-ctx.Done():
		why = fmt.Sprintf("still running %s after %s when the stop was cut short (%v)",
			time.Since(start).Round(time.Millisecond), signalName(sig), context.Cause(ctx))
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("stop %s (pid %d): %s; %w", p.name, p.pid, why, ErrKilled)
}

// signalName names the signals a stop sends as people write them.
func signalName(sig syscall.Signal) string {
	if name, ok := map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT"}[sig]; ok {
		return name
	}
	return sig.String()
}
