package logging

import "log/slog"

// Redacted is what a secret is shown as in logs and error messages.
const Redacted = "xxxxx"

// Secret is a configuration value that must never be logged or printed: a
// token, a password. Declare such a Config field as Secret rather than
// string; caarlos0/env fills it like a string. Printing it with fmt, slog,
// encoding/json or [Effective] shows [Redacted] (or nothing when it is
// empty), so it cannot leak by accident; [Secret.Reveal] returns the value
// for the one place that needs it.
type Secret string

// Reveal returns the secret itself, to hand to the library that
// authenticates with it. Never log what it returns.
func (s Secret) Reveal() string { return string(s) }

// String returns [Redacted], or "" for an empty secret so that an unset one
// still reads as unset.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString hides the secret from %#v too.
func (s Secret) GoString() string { return `logging.Secret("` + s.String() + `")` }

// LogValue hides the secret from slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText hides the secret from encoding/json and friends.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
