package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

func TestOffDisables(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{Off, ""} {
		s := New(addr, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		err := s.Run(ctx)
		cancel()
		if err != nil || s.Addr() != nil {
			t.Fatalf("New(%q).Run = %v, listening on %v; want disabled", addr, err, s.Addr())
		}
	}
	if err := ProbeLocal("X_HEALTH_ADDR", Off); err == nil {
		t.Fatal("ProbeLocal(off) succeeded")
	}
}

func TestReadyFollowsChecks(t *testing.T) {
	t.Parallel()
	s := New("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	var down error = errors.New("database down")
	s.AddCheck("db", func(context.Context) error { return down })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for s.Addr() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	base := "http://" + s.Addr().String()
	if err := Probe(base+"/healthz", time.Second); err != nil {
		t.Fatalf("healthz: %v", err)
	}
	if err := Probe(base+"/readyz", time.Second); err == nil {
		t.Fatal("readyz passed while a check fails")
	}
	s.AddCheck("db", func(context.Context) error { return nil })
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz = %s after the check recovered", resp.Status)
	}
}

func TestStartupNotReadyUntilDone(t *testing.T) {
	t.Parallel()
	s := NewStartup("connecting to NATS")
	if err := s.Check(t.Context()); err == nil || err.Error() != "starting: connecting to NATS" {
		t.Fatalf("Check before Done = %v, want the reason", err)
	}
	s.Waiting("waiting for the JetStream cluster to elect a meta leader")
	if err := s.Check(t.Context()); err == nil || err.Error() != "starting: waiting for the JetStream cluster to elect a meta leader" {
		t.Fatalf("Check = %v, want the new reason", err)
	}
	s.Done()
	s.Waiting("late report")
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check after Done = %v", err)
	}
}
