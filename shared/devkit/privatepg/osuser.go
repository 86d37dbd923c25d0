package privatepg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrDirNotReachable is returned (wrapped) by [Start] when the process runs
// as root and the unprivileged user postgres must run as cannot search one of
// the directories above the data directory. The message names the directory
// and the fix.
var ErrDirNotReachable = errors.New("data directory not reachable by the postgres OS user")

// serviceUser is the account created to run postgres when we are root.
const serviceUser = "jetline"

// osUser is the unprivileged account initdb and postgres run as when the
// calling process is root.
type osUser struct {
	name     string
	uid, gid uint32
}

// credential returns the child process credential for u. The empty Groups
// slice drops root's supplementary groups.
func (u *osUser) credential() *syscall.Credential {
	return &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: []uint32{}}
}

// resolveRunAs returns the account to run postgres as, or nil to run as the
// current user. Only root needs another account: "jetline", created with
// useradd if missing, else "postgres", else "nobody".
func resolveRunAs(ctx context.Context, logger *slog.Logger) (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	if u, err := lookupOSUser(serviceUser); err == nil {
		return u, nil
	}
	u, addErr := addServiceUser(ctx)
	if addErr == nil {
		logger.InfoContext(ctx, "created OS user to run postgres", slog.String("os_user", serviceUser))
		return u, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		if u, err := lookupOSUser(name); err == nil {
			logger.WarnContext(ctx, "could not create OS user, running postgres as a fallback user",
				slog.String("os_user", name), slog.Any("error", addErr))
			return u, nil
		}
	}
	return nil, fmt.Errorf("find an unprivileged user to run postgres as (initdb and postgres refuse to run as root): %w; "+
		"create one with `useradd --system --no-create-home --shell /usr/sbin/nologin %s`", addErr, serviceUser)
}

// lookupOSUser returns the named account, refusing root-equivalent ones.
func lookupOSUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up OS user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of OS user %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of OS user %q: %w", name, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("OS user %q has uid 0", name)
	}
	return &osUser{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
}

// userMu serialises user creation within this process; useraddLock does so
// across processes. useradd's own /etc/.pwd.lock has been seen not to stop
// concurrent runs from each adding the user under a different uid, leaving
// all but the last one's uid unknown.
var userMu sync.Mutex

// useraddLock is the file locked around user creation, shared by every
// process using this package (parallel test binaries, say).
var useraddLock = filepath.Join(os.TempDir(), "jetline-useradd.lock")

// addServiceUser creates the jetline system account unless another process
// already has, and returns it.
func addServiceUser(ctx context.Context) (*osUser, error) {
	userMu.Lock()
	defer userMu.Unlock()
	lock, err := os.OpenFile(useraddLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", useraddLock, err)
	}
	defer lock.Close() // Releases the flock.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", useraddLock, err)
	}
	if u, err := lookupOSUser(serviceUser); err == nil {
		return u, nil
	}

	path, err := exec.LookPath("useradd")
	if err != nil {
		path = "/usr/sbin/useradd"
	}
	out, err := exec.CommandContext(ctx, path,
		"--system", "--no-create-home", "--shell", "/usr/sbin/nologin", serviceUser).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("useradd %s: %w: %s", serviceUser, err, strings.TrimSpace(string(out)))
	}
	u, err := lookupOSUser(serviceUser)
	if err != nil {
		return nil, fmt.Errorf("useradd %s succeeded but: %w", serviceUser, err)
	}
	return u, nil
}

// prepareDir creates dir (mode 0700) and any missing parents (mode 0755,
// regardless of umask, so an unprivileged user can pass through them),
// resolves symlinks, and when runAs is set checks that runAs can reach dir
// and hands dir and everything in it to runAs. It returns the resolved path.
func prepareDir(dir string, runAs *osUser) (string, error) {
	if err := mkdirReachable(dir); err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("resolve data directory %s: %w", dir, err)
	}
	// postgres refuses data directories readable by others.
	if err := os.Chmod(resolved, 0o700); err != nil {
		return "", fmt.Errorf("restrict permissions of data directory %s: %w", resolved, err)
	}
	if runAs == nil {
		return resolved, nil
	}
	if err := checkReachable(resolved, runAs); err != nil {
		return "", err
	}
	if err := chownTree(resolved, runAs); err != nil {
		return "", err
	}
	return resolved, nil
}

// mkdirReachable is os.MkdirAll with explicit modes: 0755 for created
// parents, 0700 for dir itself.
func mkdirReachable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("create data directory %s: %w", dir, err)
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		mode := os.FileMode(0o755)
		if i == 0 {
			mode = 0o700
		}
		if err := os.Mkdir(missing[i], mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create data directory %s: %w", dir, err)
		}
		if err := os.Chmod(missing[i], mode); err != nil {
			return fmt.Errorf("create data directory %s: %w", dir, err)
		}
	}
	return nil
}

// checkReachable verifies that u can search every directory above dir.
// dir itself is chowned to u afterwards, so it is not checked.
func checkReachable(dir string, u *osUser) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check access to data directory %s: %w", dir, err)
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // Not a unix stat; nothing to check against.
		}
		perm := info.Mode().Perm()
		var searchable bool
		switch {
		case st.Uid == u.uid:
			searchable = perm&0o100 != 0
		case st.Gid == u.gid:
			searchable = perm&0o010 != 0
		default:
			searchable = perm&0o001 != 0
		}
		if !searchable {
			return fmt.Errorf("%w: postgres runs as OS user %q (uid %d) because initdb and postgres refuse to run as root, "+
				"but %s (mode %04o, owner uid %d) is not searchable by that user, so it cannot reach %s; "+
				"run `chmod o+x %s`, or use a data directory whose parents are all searchable by others, "+
				"such as /tmp/jetline/postgres (for the dev runner: JETLINE_DATA_DIR=/tmp/jetline)",
				ErrDirNotReachable, u.name, u.uid, p, uint32(perm), st.Uid, dir, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// chownTree gives root and everything below it to u. A reused data directory
// may have been created by another user (an earlier fallback user, or a run
// without root), and postgres insists on owning all of it.
func chownTree(root string, u *osUser) error {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == u.uid && st.Gid == u.gid {
			return nil
		}
		return os.Lchown(path, int(u.uid), int(u.gid))
	})
	if err != nil {
		return fmt.Errorf("give data directory %s to OS user %q: %w", root, u.name, err)
	}
	return nil
}
