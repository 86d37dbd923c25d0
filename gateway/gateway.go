// Package gateway is jetline's TCP gateway. It accepts plain TCP and TLS
// connections (`ncat host 4000 < file`, `ncat --ssl host 4443 < file`)
// from the allowed networks, splits what arrives into lines,
// publishes every line to the JetStream ingest stream and, when the sender
// has finished and every line is stored, writes one JSON receipt line back
// (see [Receipt]).
//
// Each connection has a bounded window of lines published but not yet
// acknowledged. When it is full the gateway stops reading that connection,
// so TCP flow control stops the sender: a slow or full stream slows senders
// down instead of filling the gateway's memory.
//
// Typical use, with a connected *nats.Conn and cfg.Listen = "127.0.0.1:0"
// (a free port, as in tests):
//
//	g, err := gateway.New(cfg, nc, logger)
//	...
//	if err := g.Listen(); err != nil { ... } // bind now; Run would otherwise
//	addr := g.Addrs()[0].String()             // e.g. "127.0.0.1:40123"
//	go g.Run(ctx)                             // serves until ctx is done, then
//	                                          // shuts down gracefully
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/jetline/jetline/shared/contract/topology"
)

// HeaderReserve is the room left in a NATS message for headers and the
// subject: the longest line accepted is the server's maximum payload minus
// HeaderReserve, or GATEWAY_MAX_LINE_BYTES if that is smaller.
const HeaderReserve = 4 << 10

// ErrAlreadyRunning is returned by [Gateway.Run] on a gateway that is
// running or has run.
var ErrAlreadyRunning = errors.New("gateway: Run called twice")

// Gateway accepts connections on its listeners and streams their lines into
// JetStream. Create it with [New]; its methods are safe for concurrent use.
type Gateway struct {
	logger    *slog.Logger
	js        jetstream.JetStream
	instance  string
	listeners []Listener
	acceptors int
	session   sessionConfig
	shutdown  time.Duration
	reserve   time.Duration // end of shutdown kept for receipts
	limiter   *connLimiter
	metrics   *metrics // see metrics.go
	guard     *guard
	uploads   *uploadNames
	abort     chan struct{}
	nextConn  atomic.Uint64
	running   atomic.Bool

	// tls serves the TLS listeners (nil if there are none); a client has
	// handshakeTimeout to finish its handshake.
	tls              *tls.Config
	handshakeTimeout time.Duration

	mu     sync.Mutex
	lns    []net.Listener
	active map[*session]struct{}
	wg     sync.WaitGroup // sessions
}

// New returns a gateway publishing through nc, which must be connected: the
// server's maximum payload bounds the line length. cfg's NATS, stream and
// log settings are not used; the gateway settings must be valid (see
// [Config.Validate]). An empty cfg.Instance is replaced by
// [DefaultInstance]. New does not listen yet; see [Gateway.Listen].
func New(cfg Config, nc *nats.Conn, logger *slog.Logger) (*Gateway, error) {
	if err := cfg.validateGateway(); err != nil {
		return nil, err
	}
	listeners, err := cfg.Listeners()
	if err != nil {
		return nil, err
	}
	tlsConfig, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	allow, err := ParseAllowCIDRs(cfg.AllowCIDRs)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", "gateway")
	instance := cfg.Instance
	if instance == "" {
		instance = DefaultInstance()
	}
	maxLine := cfg.MaxLineBytes
	if limit := int(nc.MaxPayload()) - HeaderReserve; maxLine > limit {
		if limit < 1 {
			return nil, fmt.Errorf("the NATS server's maximum payload (%d bytes) leaves no room for lines: raise max_payload in the server config", nc.MaxPayload())
		}
		logger.Warn("GATEWAY_MAX_LINE_BYTES exceeds what the NATS server accepts; lowering it",
			"max_line_bytes", cfg.MaxLineBytes, "effective_max_line_bytes", limit, "server_max_payload", nc.MaxPayload())
		maxLine = limit
	}
	acceptors := cfg.Acceptors
	if acceptors == 0 {
		acceptors = runtime.GOMAXPROCS(0) * 4
	}
	// Every connection may fill its window, so the client-wide limit on
	// pending async publishes must not be the tighter one.
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxConnections*cfg.InflightLines),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	reserve := min(cfg.ShutdownTimeout/4, 2*time.Second)
	g := &Gateway{
		logger:    logger,
		js:        js,
		instance:  instance,
		listeners: listeners,
		acceptors: acceptors,
		shutdown:  cfg.ShutdownTimeout,
		reserve:   reserve,
		limiter:   newConnLimiter(cfg.MaxConnections, logger),
		guard:     newGuard(allow, cfg.MaxConnectionsPerIP, newRefusalLog(logger, time.Now)),
		abort:     make(chan struct{}),
		active:    map[*session]struct{}{},
		uploads: &uploadNames{js: js, lease: cfg.UploadLease, replicas: cfg.Stream.Replicas,
			instance: instance, logger: logger},

		tls:              tlsConfig,
		handshakeTimeout: cfg.TLSHandshakeTimeout,
	}
	g.metrics = newMetrics(g, listeners)
	g.session = sessionConfig{
		maxLine:         maxLine,
		readBuffer:      cfg.ReadBufferBytes,
		idleTimeout:     cfg.IdleTimeout,
		maxDecompressed: cfg.MaxDecompressedBytes,
		decoders:        systemDecoders.withSlots(cfg.DecodePrograms),
		// A frame of lines, and a line alone, fit what the server takes.
		frame: frameLimits{bytes: min(cfg.FrameBytes, int(nc.MaxPayload())-HeaderReserve), lines: cfg.FrameLines},
		publisher: publisherConfig{
			inflightLines: cfg.InflightLines,
			inflightBytes: cfg.InflightBytes,
			total:         semaphore.NewWeighted(cfg.InflightTotalBytes),
		},
		abort:         g.abort,
		shutdownWrite: reserve / 2,
	}
	return g, nil
}

// SetupUploads creates or updates the [topology.UploadsBucket] bucket in
// which gateways hold the names of named uploads, waiting as retry says
// for a server or cluster that cannot take it yet. The program calls it
// before [Gateway.Run]; without it the first named upload sets the bucket
// up.
func (g *Gateway) SetupUploads(ctx context.Context, retry topology.Retry) error {
	_, err := g.uploads.setup(ctx, retry)
	return err
}

// Instance returns the instance name in this gateway's message ids and
// Jetline-Gateway header.
func (g *Gateway) Instance() string { return g.instance }

// MaxLineBytes returns the longest line accepted, after lowering
// GATEWAY_MAX_LINE_BYTES to fit the NATS server's maximum payload.
func (g *Gateway) MaxLineBytes() int { return g.session.maxLine }

// Listen binds every listener of cfg.Listen and cfg.TLSListen, so that [Gateway.Addrs] can
// report the bound addresses (useful with port 0) before [Gateway.Run]. It
// is optional: Run listens if Listen was not called. Calling it again is a
// no-op. Run closes the listeners when it stops.
func (g *Gateway) Listen() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lns != nil {
		return nil
	}
	var lc net.ListenConfig
	lns := make([]net.Listener, 0, len(g.listeners))
	for _, l := range g.listeners {
		ln, err := lc.Listen(context.Background(), "tcp", l.Addr)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			variable := "GATEWAY_LISTEN"
			if l.TLS {
				variable = "GATEWAY_TLS_LISTEN"
			}
			return fmt.Errorf("listen for source %s on %s (is the port in use? set %s): %w", l.Source, l.Addr, variable, err)
		}
		lns = append(lns, ln)
	}
	g.lns = lns
	return nil
}

// Addrs returns the bound address of each listener, in the order of
// cfg.Listen then cfg.TLSListen (see [Config.Listeners]), or nil before [Gateway.Listen] (or Run) has bound them.
func (g *Gateway) Addrs() []net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lns == nil {
		return nil
	}
	addrs := make([]net.Addr, len(g.lns))
	for i, ln := range g.lns {
		addrs[i] = ln.Addr()
	}
	return addrs
}

// Run accepts and serves connections until ctx is done, then shuts down
// within cfg.ShutdownTimeout: it closes the listeners, stops reading every
// connection, waits for the acknowledgements of lines already published,
// sends each sender a receipt and closes the connections. It returns nil
// after a shutdown, or an error if it cannot listen. A gateway runs once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	if err := g.Listen(); err != nil {
		return err
	}
	var acceptors sync.WaitGroup
	g.mu.Lock()
	for i, ln := range g.lns {
		a := &acceptor{
			ln:       ln,
			listener: g.listeners[i],
			limit:    g.limiter,
			admit:    g.admit,
			serve:    func(conn net.Conn, l Listener) { g.serve(ctx, conn, l) },
			logger:   g.logger,
		}
		acceptors.Go(func() { a.runPool(g.acceptors, ctx.Done()) })
		g.logger.Info("listening", "source", a.listener.Source, "addr", ln.Addr().String(), "tls", a.listener.TLS,
			"subject", topology.Subject(a.listener.Source))
	}
	g.mu.Unlock()
	g.logger.Info("gateway started", "instance", g.instance, "acceptors_per_listener", g.acceptors,
		"max_line_bytes", g.session.maxLine, "frame_bytes", g.session.frame.bytes, "frame_lines", g.session.frame.lines,
		"decode_programs", g.session.decoders.bound(),
		"inflight_lines", g.session.publisher.inflightLines,
		"inflight_bytes", g.session.publisher.inflightBytes, "max_decompressed_bytes", g.session.maxDecompressed,
		"allow_cidrs", len(g.guard.allow), "max_connections_per_ip", g.guard.perIP)
	g.logCertificate()

	<-ctx.Done()
	start := time.Now()
	g.mu.Lock()
	open := len(g.active)
	for _, ln := range g.lns {
		ln.Close()
	}
	g.mu.Unlock()
	g.logger.Info("shutting down: no longer accepting, flushing open connections", "open_connections", open, "timeout", g.shutdown)
	acceptors.Wait()

	abortTimer := time.AfterFunc(g.shutdown-g.reserve, func() { close(g.abort) })
	defer abortTimer.Stop()
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(g.shutdown - time.Since(start))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		g.mu.Lock()
		n := len(g.active)
		for s := range g.active {
			s.conn.Close()
		}
		g.mu.Unlock()
		g.logger.Warn("shutdown timeout reached; closed remaining connections", "connections", n)
		<-done
	}
	g.logger.Info("gateway stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// serve starts a session for conn, accepted on listener l and admitted by
// the guard. conn holds a limiter slot and a guard slot the session gives
// back when it ends. On a TLS listener the handshake runs first, in the
// session's goroutine.
func (g *Gateway) serve(ctx context.Context, conn net.Conn, l Listener) {
	id := g.nextConn.Add(1)
	peer := peerAddr(conn)
	var tc *tls.Conn
	if l.TLS {
		tc = tls.Server(conn, g.tls)
		conn = tc
	}
	s := &session{
		cfg:      g.session,
		conn:     conn,
		id:       id,
		source:   l.Source,
		subject:  topology.Subject(l.Source),
		instance: g.instance,
		js:       g.js,
		uploads:  g.uploads,
		logger:   g.logger.With("conn", id, "source", l.Source, "remote", conn.RemoteAddr().String()),
		metrics:  g.metrics.source(l.Source),
	}
	s.metrics.accept()
	g.mu.Lock()
	g.active[s] = struct{}{}
	g.mu.Unlock()
	g.wg.Go(func() {
		defer g.limiter.closed()
		defer g.guard.leave(peer)
		defer func() {
			g.mu.Lock()
			delete(g.active, s)
			g.mu.Unlock()
		}()
		if tc != nil {
			if err := g.handshake(ctx, tc); err != nil {
				conn.Close()
				if ctx.Err() == nil {
					g.refuse(RefusedTLSHandshake, peer, err)
				}
				return
			}
			st := tc.ConnectionState()
			attrs := []any{"tls_version", tls.VersionName(st.Version)}
			if len(st.PeerCertificates) > 0 {
				attrs = append(attrs, "client_cert", st.PeerCertificates[0].Subject.String())
			}
			s.logger.Debug("tls handshake done", attrs...)
		}
		s.logger.Debug("connection accepted")
		s.serve(ctx)
	})
}
