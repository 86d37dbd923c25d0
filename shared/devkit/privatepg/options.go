package privatepg

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
)

// EnvBinDir is the environment variable naming the directory that holds the
// initdb and postgres binaries when [Options.BinDir] is empty.
const EnvBinDir = "JETLINE_PG_BIN"

// DefaultBinDir is where Debian and Ubuntu's postgresql-15 package installs
// the server binaries. It is used when neither [Options.BinDir] nor
// [EnvBinDir] is set.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Options configures [Start]. The zero value is not usable: Dir is required.
type Options struct {
	// Dir is the data directory. It is created if missing and initialised
	// with initdb unless it already contains PG_VERSION, in which case the
	// existing cluster is reused. Required.
	Dir string

	// Host is the address postgres listens on and the host of [Server.URL].
	// Defaults to 127.0.0.1.
	Host string

	// Port is the TCP port. Defaults to 0, which picks a free port on the
	// first start; [Server.Restart] keeps whatever port was chosen.
	Port int

	// Database is the database [Server.URL] points at. It is created if
	// missing. Defaults to "jetline".
	Database string

	// User is the superuser created by initdb and used in every URL. It
	// authenticates by trust, without a password. Defaults to "postgres".
	// A reused cluster keeps the superuser it was created with.
	User string

	// BinDir is the directory holding initdb and postgres. Defaults to
	// $JETLINE_PG_BIN, then [DefaultBinDir], then the output of
	// `pg_config --bindir`.
	BinDir string

	// Settings are extra server settings passed as -c name=value. They
	// override the defaults, which are listen_addresses=Host,
	// unix_socket_directories='', max_connections=200 and
	// shared_buffers=128MB. fsync stays on unless Settings turns it off;
	// fsync=off also skips initdb's final sync. Setting "port" is an error;
	// use Port.
	Settings map[string]string
}

// withDefaults returns a copy of o with defaults filled in and Dir made
// absolute.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("options: Dir is empty; set it to the directory postgres should keep its data in")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("resolve data directory %q: %w", o.Dir, err)
	}
	o.Dir = dir
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port < 0 || o.Port > 65535 {
		return o, fmt.Errorf("options: Port %d is out of range; use 0 to pick a free port", o.Port)
	}
	if o.Database == "" {
		o.Database = "jetline"
	}
	if o.User == "" {
		o.User = "postgres"
	}
	if _, ok := o.Settings["port"]; ok {
		return o, errors.New(`options: Settings must not set "port"; use Port`)
	}
	o.Settings = maps.Clone(o.Settings)
	return o, nil
}
