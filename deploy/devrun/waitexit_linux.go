package main

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// waitid's arguments and siginfo's si_code values, from <sys/wait.h> and
// <signal.h>.
const (
	pPID       = 1
	wExited    = 0x4
	wNoWait    = 0x1000000
	cldExited  = 1
	cldKilled  = 2
	cldDumped  = 3
	siCodeOff  = 8  // offset of si_code in siginfo_t
	siStatusOf = 24 // offset of si_status in siginfo_t (after si_pid, si_uid) on 64-bit Linux
)

// waitExit blocks until pid, a child of this process that some other
// goroutine reaps (privatepg's), has exited, and says how, as
// [exec.Cmd.Wait] would ("signal: killed", "exit status 1"). It uses
// waitid with WNOWAIT, which leaves the child for its owner to reap; if the
// owner reaps it first, the status is lost and the error says so.
func waitExit(pid int) error {
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info)), wExited|wNoWait, 0, 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errors.Is(errno, syscall.ECHILD):
			return errors.New("exited; status unknown (privatepg logs it at the restart)")
		case errno != 0:
			return fmt.Errorf("exited; status unknown: waitid: %w", errno)
		}
		code := *(*int32)(unsafe.Pointer(&info[siCodeOff]))
		status := *(*int32)(unsafe.Pointer(&info[siStatusOf]))
		switch code {
		case cldExited:
			if status == 0 {
				return nil
			}
			return fmt.Errorf("exit status %d", status)
		case cldKilled, cldDumped:
			return fmt.Errorf("signal: %s", syscall.Signal(status))
		default:
			return fmt.Errorf("exited; si_code %d, status %d", code, status)
		}
	}
}
