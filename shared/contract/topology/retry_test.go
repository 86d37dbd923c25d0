package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// apiError is an error as nats.go returns it for a JetStream API answer,
// wrapped as a caller would.
func apiError(code jetstream.ErrorCode, status int, description string) error {
	return fmt.Errorf("create stream: %w", &jetstream.APIError{Code: status, ErrorCode: code, Description: description})
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want wait // zero: not transient
	}{
		{"no meta leader", apiError(10008, 503, "JetStream system temporarily unavailable"), metaLeader},
		{"leader change", apiError(10009, 500, "JetStream cluster can not handle request"), leaderChange},
		{"incomplete results", apiError(10004, 503, "incomplete results"), leaderChange},
		{"no peers yet", apiError(10005, 400, "no suitable peers for placement"), placement},
		{"insufficient resources", apiError(10023, 503, "insufficient resources"), placement},
		{"member change in flight", apiError(10202, 400, "cluster member change is in progress"), leaderChange},
		{"jetstream not enabled yet", apiError(10076, 503, "JetStream not enabled"), jetStreamStarting},
		{"jetstream not enabled, as nats.go maps no responders", jetstream.ErrJetStreamNotEnabled, jetStreamStarting},
		{"no responders", fmt.Errorf("request: %w", nats.ErrNoResponders), jetStreamStarting},
		{"other 503", apiError(10999, 503, "something new"), serverBusy},
		{"stream created by another process", apiError(10058, 400, "stream name already in use with a different configuration"), conflict},
		{"consumer created by another process", apiError(10013, 400, "consumer name already in use"), conflict},
		{"bucket created by another process", jetstream.ErrBucketExists, conflict},
		{"attempt timed out", fmt.Errorf("create: %w", context.DeadlineExceeded), noAnswer},
		{"nats timeout", nats.ErrTimeout, noAnswer},
		{"reconnecting", nats.ErrConnectionReconnecting, connection},
		{"disconnected", nats.ErrDisconnected, connection},

		{"canceled", context.Canceled, wait{}},
		{"connection closed", nats.ErrConnectionClosed, wait{}},
		{"not clustered", apiError(10074, 500, "replicas > 1 not supported in non-clustered mode"), wait{}},
		{"account without jetstream", apiError(10039, 503, "JetStream not enabled for account"), wait{}},
		{"bad config", apiError(10052, 500, "stream configuration update can not change storage"), wait{}},
		{"bad request", jetstream.ErrBadRequest, wait{}},
		{"other error", errors.New("boom"), wait{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := classify(tc.err)
			if ok != (tc.want != wait{}) || got != tc.want {
				t.Fatalf("classify(%v) = %q, %t; want %q, %t", tc.err, got.reason, ok, tc.want.reason, tc.want != wait{})
			}
		})
	}
}

// logLines is a slog handler that keeps the messages it gets.
type logLines struct {
	slog.Handler
	msgs chan string
}

func (logLines) Enabled(context.Context, slog.Level) bool { return true }

func (h logLines) Handle(_ context.Context, r slog.Record) error {
	h.msgs <- r.Message
	return nil
}

func TestDoRetriesTransientAndStopsOnPermanent(t *testing.T) {
	t.Parallel()
	leaderless := apiError(10008, 503, "JetStream system temporarily unavailable")
	for _, tc := range []struct {
		name     string
		errs     []error // what the attempts return, in turn; then nil
		timeout  time.Duration
		attempts int
		wantErr  string // "" for success
	}{
		{"succeeds after waits", []error{leaderless, leaderless, context.DeadlineExceeded}, time.Minute, 4, ""},
		{"permanent at once", []error{apiError(10074, 500, "replicas > 1 not supported in non-clustered mode"), leaderless}, time.Minute, 1,
			"set INGEST_REPLICAS=1"},
		{"gives up at the timeout", []error{leaderless, leaderless, leaderless, leaderless, leaderless, leaderless, leaderless, leaderless}, 500 * time.Millisecond, 0,
			"gave up after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := logLines{Handler: slog.DiscardHandler, msgs: make(chan string, 100)}
			var waiting []string
			r := Retry{Timeout: tc.timeout, Logger: slog.New(h), Waiting: func(s string) { waiting = append(waiting, s) }}
			calls := 0
			err := r.Do(t.Context(), "create or update stream TEST", func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("an attempt's context has no deadline")
				}
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Do = %v, want %q", err, tc.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "create or update stream TEST: ") {
				t.Errorf("error %q does not start with what was set up", err)
			}
			if tc.attempts > 0 && calls != tc.attempts {
				t.Errorf("%d attempts, want %d", calls, tc.attempts)
			}
			if tc.name == "gives up at the timeout" {
				if calls < 2 || calls >= len(tc.errs) {
					t.Errorf("%d attempts in %s; want a few, with growing waits", calls, tc.timeout)
				}
				for _, want := range []string{"waiting for " + metaLeader.reason, "NATS_CONNECT_TIMEOUT is 500ms", "check " + metaLeader.check} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
			}
			// One log line and one readiness report per wait, saying
			// what it waits for.
			close(h.msgs)
			var logged []string
			for m := range h.msgs {
				logged = append(logged, m)
			}
			waits := calls - 1
			if err == nil && waits > 0 {
				waits++ // and the line saying it is done
			}
			if len(logged) != waits {
				t.Errorf("logged %d lines for %d attempts: %q", len(logged), calls, logged)
			}
			if len(logged) > 0 && !strings.HasPrefix(logged[0], "waiting for "+metaLeader.reason+"; retrying create or update stream TEST in ") {
				t.Errorf("first log line %q does not say what it waits for", logged[0])
			}
			if len(waiting) != calls-1 {
				t.Errorf("reported %d waits for %d attempts", len(waiting), calls)
			}
		})
	}
}

func TestDoStopsWhenCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Retry{Timeout: time.Minute}.Do(ctx, "create or update stream TEST", func(context.Context) error {
			return apiError(10008, 503, "JetStream system temporarily unavailable")
		})
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Do = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not return after its context was canceled")
	}
}
