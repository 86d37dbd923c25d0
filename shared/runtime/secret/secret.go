// Package secret keeps secrets out of logs and error messages: the [Value]
// type for configuration fields that hold one, [LogConfig] printing a
// program's effective configuration with every secret hidden, and [Scrub]
// and [RedactURLs] for the errors and URLs that might carry one.
package secret

import "log/slog"

// Redacted is what a secret is shown as in logs and error messages.
const Redacted = "xxxxx"

// Value is a configuration value that must never be logged or printed: a
// token, a password. Declare such a Config field as Value rather than
// string; caarlos0/env fills it like a string. Printing it with fmt, slog,
// encoding/json or [LogConfig] shows [Redacted] (or nothing when it is
// empty), so it cannot leak by accident; [Value.Reveal] returns the value
// for the one place that needs it.
type Value string

// Reveal returns the secret itself, to hand to the library that
// authenticates with it. Never log what it returns.
func (s Value) Reveal() string { return string(s) }

// String returns [Redacted], or "" for an empty secret so that an unset one
// still reads as unset.
func (s Value) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString hides the secret from %#v too.
func (s Value) GoString() string { return `secret.Value("` + s.String() + `")` }

// LogValue hides the secret from slog.
func (s Value) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText hides the secret from encoding/json and friends.
func (s Value) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
