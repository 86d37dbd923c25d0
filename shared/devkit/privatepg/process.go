package privatepg

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/jetline/jetline/shared/devkit/childproc"
)

// logMarker starts the line written to the log before every server start,
// so the tail shown in an error belongs to the latest attempt.
const logMarker = "---- privatepg:"

// kill sends SIGKILL to the postmaster p, waits for it to be reaped, and
// then kills whatever postgres processes are left in dir (see
// [killDirProcs]).
//
// The leftovers are killed only if the postmaster was still running: then
// it held the data directory's lock, so whatever works in dir is its own. A
// postmaster that had already exited may have been refused the lock by
// another server on dir, whose processes must be left alone.
func kill(p *childproc.Process, dir string) {
	running := !p.Exited()
	p.Kill()
	if running {
		killDirProcs(dir, 5*time.Second)
	}
}

// killDirProcs SIGKILLs the live processes working in dir until there are
// none or timeout passes. Each backend calls setsid, so killing the
// postmaster's process group does not reach them, and a backend still alive
// would keep the shared memory segment attached: the next postmaster on dir
// would refuse to start.
func killDirProcs(dir string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		pids := dirProcs(dir)
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// childEnv is the environment for initdb and postgres: ours without the
// libpq variables that could redirect them, and with the C locale so the
// server log is in English.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, "PG") || strings.HasPrefix(key, "LC_") || key == "LANG" || key == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// sysProcAttr returns the process attributes for a child: runAs's
// credentials when set, and its own process group, so a Ctrl-C in the
// terminal reaches only us and we decide how postgres shuts down. (Each
// postgres backend calls setsid, so the group does not hold the backends.)
// [childproc.Start] keeps them and adds the death signal.
func sysProcAttr(runAs *osUser) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if runAs != nil {
		attr.Credential = runAs.credential()
	}
	return attr
}

// openLog opens the server log for appending, gives it to runAs and writes
// a marker line announcing what comes next.
func openLog(path string, runAs *osUser, what string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open postgres log: %w", err)
	}
	if runAs != nil {
		if err := f.Chown(int(runAs.uid), int(runAs.gid)); err != nil {
			f.Close()
			return nil, fmt.Errorf("give postgres log %s to OS user %q: %w", path, runAs.name, err)
		}
	}
	if _, err := fmt.Fprintf(f, "%s %s at %s ----\n", logMarker, what, time.Now().Format(time.RFC3339)); err != nil {
		f.Close()
		return nil, fmt.Errorf("write postgres log: %w", err)
	}
	return f, nil
}

// logTail returns the last lines of the log at path written since the most
// recent marker, for inclusion in an error.
func logTail(path string) string {
	const maxBytes, maxLines = 8 << 10, 40
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	off := max(info.Size()-maxBytes, 0)
	buf, err := io.ReadAll(io.NewSectionReader(f, off, info.Size()-off))
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if off > 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	if i := bytes.LastIndex(buf, []byte(logMarker)); i >= 0 {
		if j := bytes.IndexByte(buf[i:], '\n'); j >= 0 {
			buf = buf[i+j+1:]
		}
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// withLogTail appends the tail of the log at path to err's message.
func withLogTail(err error, path string) error {
	return fmt.Errorf("%w\n--- end of %s ---\n%s", err, path, logTail(path))
}
