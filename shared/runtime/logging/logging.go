// Package logging builds the one *slog.Logger each program passes down:
// colourful tint output on a terminal, JSON lines everywhere else.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
)

// Config selects the log format and level.
type Config struct {
	// Format is "auto" (tint on a terminal, JSON otherwise), "text" (tint)
	// or "json". Defaults to auto.
	Format string `env:"LOG_FORMAT" envDefault:"auto"`
	// Level is debug, info, warn or error. Defaults to info.
	Level slog.Level `env:"LOG_LEVEL" envDefault:"info"`
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	switch c.Format {
	case "auto", "text", "json":
		return nil
	}
	return fmt.Errorf("LOG_FORMAT must be auto, text or json (got %q)", c.Format)
}

// New returns a logger writing to w in the configured format.
func New(cfg Config, w io.Writer) *slog.Logger {
	format := cfg.Format
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(tint.NewHandler(w, &tint.Options{Level: cfg.Level, TimeFormat: time.TimeOnly + ".000"}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: cfg.Level, ReplaceAttr: readableDurations}))
}

// readableDurations writes durations as "1.5s" rather than nanoseconds, so
// JSON logs read like the terminal ones.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
