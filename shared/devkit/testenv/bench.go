package testenv

import (
	"bytes"
	"fmt"
	"syscall"
	"time"
)

// CPUTime returns the user and system CPU time this process has used, for
// benchmarks that report CPU per operation: a loaded machine slows the
// clock, not the work. It returns 0 if the system cannot tell.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// NDJSON returns size bytes of newline-terminated JSON lines of about 200
// bytes each, as a frame of many lines carries them; the last line is
// cut to fit and ends with a newline too.
func NDJSON(size int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < size; i++ {
		fmt.Fprintf(&buf, `{"id":%d,"user":"someone","text":"%s"}`+"\n", i, bytes.Repeat([]byte("x"), 150))
	}
	out := buf.Bytes()[:size]
	out[size-1] = '\n'
	return out
}
