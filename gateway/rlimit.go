package gateway

import (
	"log/slog"
	"strconv"
)

// fileHeadroom is the open files kept, beyond one per connection, for the
// rest: listeners, NATS and health-server sockets, the Go runtime's own.
const fileHeadroom = 256

// RaiseOpenFilesLimit raises the soft limit on open files (RLIMIT_NOFILE)
// as far as the hard limit allows, since every connection holds one, and
// logs the limit. It warns when maxConnections plus some headroom exceeds
// it: connections beyond the limit fail in Accept ("too many open files")
// before GATEWAY_MAX_CONNECTIONS is reached. Call it once at start; on
// systems without the limit it only logs that.
func RaiseOpenFilesLimit(maxConnections int, logger *slog.Logger) {
	logger = logger.With("component", "gateway")
	before, after, hard, err := raiseOpenFiles()
	if err != nil {
		logger.Warn("could not raise the open files limit", "err", err, "open_files_limit", before, "hard_limit", limitString(hard))
	} else {
		logger.Info("open files limit", "open_files_limit", after, "raised_from", before, "hard_limit", limitString(hard))
	}
	if need := uint64(maxConnections) + fileHeadroom; after > 0 && need > after {
		logger.Warn("GATEWAY_MAX_CONNECTIONS does not fit in the open files limit; accepts will fail before the cap is reached: raise the hard limit (ulimit -Hn, docker run --ulimit nofile=N:N, systemd LimitNOFILE=) or lower GATEWAY_MAX_CONNECTIONS",
			"max_connections", maxConnections, "needed", need, "open_files_limit", after)
	}
}

// limitString shows an unlimited hard limit (RLIM_INFINITY, 2^63-1 or
// 2^64-1 depending on the system) as such.
func limitString(n uint64) string {
	if n >= 1<<62 {
		return "unlimited"
	}
	return strconv.FormatUint(n, 10)
}
