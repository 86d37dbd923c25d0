package admin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// Filter selects dead letters. The zero Filter selects them all; each field
// set narrows the selection further.
type Filter struct {
	// Reason keeps entries of this reason token (invalid_json, pg_22003…).
	Reason string
	// Source keeps entries of lines from this source.
	Source string
	// FromSeq and ToSeq keep entries whose dead-letter sequence lies in
	// [FromSeq, ToSeq]; 0 leaves that end open.
	FromSeq, ToSeq uint64
	// Since and Until keep entries stored in the dead-letter stream at or
	// after Since and at or before Until; the zero time leaves that end
	// open. They compare with the stream's own timestamp, the one `nats
	// stream view` shows, so the server can start reading at Since.
	Since, Until time.Time
}

// Validate reports what is wrong with f in terms of the command's flags.
func (f Filter) Validate() error {
	var errs []error
	if f.Reason != "" && deadletter.Token(f.Reason) != f.Reason {
		errs = append(errs, fmt.Errorf("--reason %q is not a reason token: use letters, digits, '_' or '-', as `worker dlq list` shows them", f.Reason))
	}
	if f.Source != "" && f.Source != "_" {
		if err := topology.ValidateSource(f.Source); err != nil {
			errs = append(errs, fmt.Errorf("--source: %w", err))
		}
	}
	if f.ToSeq != 0 && f.FromSeq > f.ToSeq {
		errs = append(errs, fmt.Errorf("--seq %d-%d is empty: the first sequence must not exceed the last", f.FromSeq, f.ToSeq))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Since.After(f.Until) {
		errs = append(errs, fmt.Errorf("--since %s is after --until %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}

// Subject returns the dead-letter subject filter that selects f's reason
// and source: dlq.<source|*>.<reason|*>.
func (f Filter) Subject() string {
	if f.Reason == "" && f.Source == "" {
		return deadletter.StreamSubjects
	}
	source, reason := f.Source, f.Reason
	if source == "" {
		source = "*"
	}
	if reason == "" {
		reason = "*"
	}
	return deadletter.SubjectPrefix + source + "." + reason
}

// BySubjectOnly reports whether the subject filter alone selects f's
// entries, so they can be counted and purged without reading them.
func (f Filter) BySubjectOnly() bool {
	return f.FromSeq == 0 && f.ToSeq == 0 && f.Since.IsZero() && f.Until.IsZero()
}

// String describes f for messages ("reason invalid_json, seq 10-20").
func (f Filter) String() string {
	var parts []string
	if f.Reason != "" {
		parts = append(parts, "reason "+f.Reason)
	}
	if f.Source != "" {
		parts = append(parts, "source "+f.Source)
	}
	if f.FromSeq != 0 || f.ToSeq != 0 {
		to := "end"
		if f.ToSeq != 0 {
			to = strconv.FormatUint(f.ToSeq, 10)
		}
		parts = append(parts, fmt.Sprintf("seq %d-%s", max(f.FromSeq, 1), to))
	}
	if !f.Since.IsZero() {
		parts = append(parts, "since "+f.Since.Format(time.RFC3339))
	}
	if !f.Until.IsZero() {
		parts = append(parts, "until "+f.Until.Format(time.RFC3339))
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ", ")
}

// all reports whether f selects every entry.
func (f Filter) all() bool {
	return f.Reason == "" && f.Source == "" && f.BySubjectOnly()
}

// keepsTime reports whether t lies in f's time range.
func (f Filter) keepsTime(t time.Time) bool {
	return (f.Since.IsZero() || !t.Before(f.Since)) && (f.Until.IsZero() || !t.After(f.Until))
}

// ParseSeqRange parses a --seq value: "N" (one entry), "FROM-TO", "FROM-"
// or "-TO".
func ParseSeqRange(s string) (from, to uint64, err error) {
	bad := func() (uint64, uint64, error) {
		return 0, 0, fmt.Errorf("--seq %q: use N, FROM-TO, FROM- or -TO with dead-letter sequence numbers", s)
	}
	// num parses one end; an empty end is open (0).
	num := func(v string) (uint64, bool) {
		if v == "" {
			return 0, true
		}
		n, err := strconv.ParseUint(v, 10, 64)
		return n, err == nil && n > 0
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		n, ok := num(lo)
		if !ok || n == 0 {
			return bad()
		}
		return n, n, nil
	}
	from, ok1 := num(lo)
	to, ok2 := num(hi)
	if !ok1 || !ok2 || (from == 0 && to == 0) {
		return bad()
	}
	if to != 0 && from > to {
		return 0, 0, fmt.Errorf("--seq %q is empty: the first sequence must not exceed the last", s)
	}
	return from, to, nil
}

// ParseTime parses a --since or --until value: an RFC 3339 time
// (2026-11-23T01:00:00Z), a date (2026-11-23, midnight UTC) or a duration
// meaning that long before now ("90m", "2h").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration means that long ago and must not be negative", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-11-23T01:00:00Z), a date (2026-11-23) or a duration ago (2h)", s)
}
