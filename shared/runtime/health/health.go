// Package health serves the liveness and readiness endpoints both programs
// expose: /healthz answers while the process runs, /readyz only while every
// registered check passes (for the worker: NATS and Postgres reachable).
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Check reports whether one dependency is usable. It must return quickly;
// it is called with a short deadline on every /readyz request.
type Check func(ctx context.Context) error

// Server is the HTTP server for /healthz and /readyz. Other handlers (such as
// /metrics) can be added with Handle.
type Server struct {
	addr   string
	logger *slog.Logger
	mux    *http.ServeMux

	mu     sync.Mutex
	checks map[string]Check
	ln     net.Listener
}

// Off is the address value that disables the health server. (An empty
// environment variable cannot: the configuration library treats it as unset
// and applies the default.)
const Off = "off"

// Enabled reports whether addr asks for a health server.
func Enabled(addr string) bool { return addr != "" && addr != Off }

// New returns a server that will listen on addr (e.g. ":8080"); addr [Off]
// (or empty) disables it and Run just waits for ctx to be done.
func New(addr string, logger *slog.Logger) *Server {
	s := &Server{addr: addr, logger: logger.With("component", "health"), mux: http.NewServeMux(), checks: map[string]Check{}}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.mux.HandleFunc("GET /readyz", s.ready)
	return s
}

// AddCheck registers a readiness check under name. Safe for concurrent use.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// Handle registers an extra handler on the server's mux. It may be called
// while Run serves: a program registers /metrics once the component that
// serves it exists, after /healthz and /readyz are up.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	var failed []error
	for name, c := range checks {
		if err := c(ctx); err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", name, err))
		}
	}
	if err := errors.Join(failed...); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

// Addr returns the address the server listens on, once Run has started
// listening; nil before.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves until ctx is done, then shuts down within five seconds.
func (s *Server) Run(ctx context.Context) error {
	if !Enabled(s.addr) {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listen for health on %s: %w", s.addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	s.logger.Info("health endpoints listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve health: %w", err)
	}
	<-done
	return nil
}

// ProbeLocal probes /readyz of a server listening on addr (as given in
// configuration, e.g. ":8080") on this host. envVar names the setting in
// errors.
func ProbeLocal(envVar, addr string) error {
	if !Enabled(addr) {
		return fmt.Errorf("%s is %q, so there is no health endpoint to probe", envVar, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", envVar, addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return Probe("http://"+net.JoinHostPort(host, port)+"/readyz", 3*time.Second)
}

// Probe performs a GET on url and fails unless it answers 200 within
// timeout. The programs' `healthcheck` sub-command uses it, so container
// images need no curl.
func Probe(url string, timeout time.Duration) error {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// Startup is a readiness check for a program's start-up: it fails, saying
// what the program waits for, until [Startup.Done]. The programs serve
// /healthz and /readyz from the moment they start, so that while they wait
// for NATS or for a forming JetStream cluster, an orchestrator sees them
// alive, not ready, and why. Its methods are safe for concurrent use.
type Startup struct {
	mu      sync.Mutex
	waiting string
	done    bool
}

// NewStartup returns a start-up that waits for waiting, e.g. "connecting to
// NATS".
func NewStartup(waiting string) *Startup { return &Startup{waiting: waiting} }

// Waiting replaces what the start-up waits for. After Done it changes
// nothing Check reports.
func (s *Startup) Waiting(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting = reason
}

// Done marks the start-up finished: Check passes from now on.
func (s *Startup) Done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
}

// Check is the readiness [Check]: nil once Done, else an error saying what
// the start-up waits for.
func (s *Startup) Check(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil
	}
	return fmt.Errorf("starting: %s", s.waiting)
}
