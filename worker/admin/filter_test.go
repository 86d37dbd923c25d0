package admin

import (
	"testing"
	"time"
)

func TestParseSeqRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		from, to uint64
		wantErr  bool
	}{
		{in: "7", from: 7, to: 7},
		{in: "10-20", from: 10, to: 20},
		{in: "10-", from: 10},
		{in: "-20", to: 20},
		{in: "20-10", wantErr: true},
		{in: "-", wantErr: true},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "a-b", wantErr: true},
		{in: "1-2-3", wantErr: true},
	}
	for _, tt := range tests {
		from, to, err := ParseSeqRange(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseSeqRange(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if from != tt.from || to != tt.to {
			t.Errorf("ParseSeqRange(%q) = %d, %d; want %d, %d", tt.in, from, to, tt.from, tt.to)
		}
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "2h", want: now.Add(-2 * time.Hour)},
		{in: "2026-11-22T08:30:00Z", want: time.Date(2026, 11, 22, 8, 30, 0, 0, time.UTC)},
		{in: "2026-11-22", want: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)},
		{in: "-2h", wantErr: true},
		{in: "yesterday", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseTime(tt.in, now)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTime(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("ParseTime(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestFilterSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		f    Filter
		want string
	}{
		{Filter{}, "dlq.>"},
		{Filter{Reason: "invalid_json"}, "dlq.*.invalid_json"},
		{Filter{Source: "tweets"}, "dlq.tweets.*"},
		{Filter{Source: "tweets", Reason: "pg_22003"}, "dlq.tweets.pg_22003"},
	}
	for _, tt := range tests {
		if got := tt.f.Subject(); got != tt.want {
			t.Errorf("%+v.Subject() = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestFilterValidate(t *testing.T) {
	t.Parallel()
	bad := []Filter{
		{Reason: "a.b"},
		{Source: "no spaces"},
		{FromSeq: 9, ToSeq: 3},
		{Since: time.Unix(100, 0), Until: time.Unix(50, 0)},
	}
	for _, f := range bad {
		if err := f.Validate(); err == nil {
			t.Errorf("%+v.Validate() = nil, want an error", f)
		}
	}
	if err := (Filter{Reason: "pg_22003", Source: "tweets", FromSeq: 1, ToSeq: 9}).Validate(); err != nil {
		t.Errorf("valid filter: %v", err)
	}
}
