package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// The connections mode measures what a gateway costs per connection rather
// than per line: the memory an idle connection holds, and how many short
// connections (connect, one line, half-close, receipt, close) it serves
// per second, in plain TCP and with a full TLS handshake each. A receipt
// is written once JetStream has acknowledged the line, so no worker runs:
// lines stay in the stream.

// Goals of the connections mode.
const (
	// goalIdleBytes is the most gateway RSS one idle connection may add.
	goalIdleBytes = 16 << 10
	// goalPlainPerSec is the plain connections per second to reach.
	goalPlainPerSec = 5_000
	// goalTLSPerSec is the TLS handshakes per second to reach, with an
	// ECDSA P-256 certificate and no session resumption.
	goalTLSPerSec = 1_000
)

// connGoalText states the goals the way the report checks them.
const connGoalText = "goals: ≤ 16 KiB gateway RSS per idle connection, ≥ 5,000 plain connections/s, ≥ 1,000 TLS handshakes/s (ECDSA P-256)"

// Timing and sizing of the connections mode.
const (
	// acceptTimeout bounds waiting for the gateway to accept every idle
	// connection, and to end their sessions once they are closed.
	acceptTimeout = time.Minute
	// idleSettle is how long the gateway is left alone once every idle
	// connection is accepted, so each session has reached its first read
	// before RSS is read.
	idleSettle = time.Second
	// idleDialers is how many goroutines open the idle connections.
	idleDialers = 16
	// fdHeadroom is what the bench needs besides its client connections:
	// NATS, its clients, Postgres connections, files.
	fdHeadroom = 256
)

// connRun is one run of the connections mode in progress.
type connRun struct {
	b       *bench
	gateway *child
	// plainAddr, tlsAddr and healthAddr are where the gateway listens.
	plainAddr, tlsAddr, healthAddr string
	// tlsClient is the clients' TLS configuration, trusting the run's
	// self-signed certificate.
	tlsClient *tls.Config
	srcs      *sources
	ingest    jetstream.Stream
	res       connectionsResult
}

// runConnections is the connections mode: idle memory, then the plain and
// the TLS connection rates, all against one gateway.
func runConnections(ctx context.Context, b *bench) error {
	r := &connRun{b: b, srcs: newSources(sourceAddrCount)}
	cfg := b.cfg
	// The connection cap leaves room for the idle connections and, as a
	// client may connect again before the gateway has closed its last
	// connection, for every client twice and the probes.
	r.res = connectionsResult{
		IdleConns: cfg.IdleConns, Clients: cfg.Clients, DurationSeconds: cfg.Duration.Seconds(),
		SourceAddrs: r.srcs.String(), MaxConnections: cfg.IdleConns + 2*cfg.Clients + 100,
		LoadAvg: loadAvg(),
	}
	var err error
	if r.res.OpenFiles, r.res.OpenFilesHard, err = raiseOpenFiles(); err != nil {
		return err
	}
	if need := uint64(cfg.IdleConns + cfg.Clients + fdHeadroom); r.res.OpenFiles < need {
		return fmt.Errorf("-idle-conns %d needs about %d open files but this process may open %d (hard limit %d): lower -idle-conns or raise the hard limit (ulimit -Hn)",
			cfg.IdleConns, need, r.res.OpenFiles, r.res.OpenFilesHard)
	}
	if err := r.startGateway(ctx); err != nil {
		return err
	}

	if r.res.Idle, err = r.measureIdle(ctx); err != nil {
		return fmt.Errorf("idle connections: %w", err)
	}
	settle()
	plain, err := r.measureRate(ctx, "plain", r.plainAddr, nil)
	if err != nil {
		return fmt.Errorf("plain connections: %w", err)
	}
	r.res.Plain = &plain
	settle()
	secure, err := r.measureRate(ctx, "TLS", r.tlsAddr, r.tlsClient)
	if err != nil {
		return fmt.Errorf("TLS connections: %w", err)
	}
	r.res.TLS = &secure

	if r.res.GatewayPeakRSS, err = peakRSS(r.gateway.pid); err != nil {
		return err
	}
	if err := r.stopGateway(); err != nil {
		return err
	}
	b.report.setConnections(r.res)
	return nil
}

// startGateway starts the gateway with a plain listener and a TLS
// listener with a fresh ECDSA P-256 certificate, and waits until it
// accepts connections on both.
func (r *connRun) startGateway(ctx context.Context) error {
	h, cfg, pr := r.b.h, r.b.cfg, r.b.pr
	addrs, err := freeAddrs(3)
	if err != nil {
		return err
	}
	r.plainAddr, r.healthAddr, r.tlsAddr = addrs[0], addrs[1], addrs[2]
	env := []string{
		"NATS_URL=" + h.nats.ClientURL(),
		"LOG_FORMAT=json",
		"LOG_LEVEL=warn",
		"GATEWAY_LISTEN=" + r.plainAddr,
		"GATEWAY_HEALTH_ADDR=" + r.healthAddr,
		"GATEWAY_INSTANCE=bench-gateway",
		"GATEWAY_MAX_CONNECTIONS=" + strconv.Itoa(r.res.MaxConnections),
	}
	cert, err := writeCertificate(filepath.Join(h.dir, "tls"))
	if err != nil {
		return err
	}
	r.tlsClient = cert.clientConfig()
	env = append(env, "GATEWAY_TLS_LISTEN="+r.tlsAddr, "GATEWAY_TLS_CERT="+cert.CertFile, "GATEWAY_TLS_KEY="+cert.KeyFile)
	// Last, so that -env wins over the defaults above.
	env = append(env, cfg.ChildEnv...)

	listeners := r.plainAddr + ", TLS " + r.tlsAddr
	pr.step("starting the gateway on %s (%s); no workers: a receipt needs only JetStream's acknowledgement", listeners, h.binaries.Gateway.Path)
	if r.gateway, err = startChild("gateway", h.binaries.Gateway.Path, env, r.b.stderr); err != nil {
		return err
	}
	h.children = append(h.children, r.gateway)
	if err := poll(ctx, readyTimeout, "gateway listening", func() (bool, error) { return r.listening(ctx, r.plainAddr, nil) }); err != nil {
		return err
	}
	if err := poll(ctx, readyTimeout, "TLS listener", func() (bool, error) { return r.listening(ctx, r.tlsAddr, r.tlsClient) }); err != nil {
		return err
	}
	if r.res.GatewayOpenFiles, err = openFilesLimit(r.gateway.pid); err != nil {
		return err
	}
	if need := uint64(cfg.IdleConns + 64); r.res.GatewayOpenFiles < need {
		return fmt.Errorf("the gateway may open %d files, too few for -idle-conns %d: lower -idle-conns or raise the hard limit (ulimit -Hn)", r.res.GatewayOpenFiles, cfg.IdleConns)
	}
	if r.ingest, err = h.js.Stream(ctx, topology.StreamName); err != nil {
		return fmt.Errorf("find stream %s: %w", topology.StreamName, err)
	}
	return nil
}

// listening reports whether the gateway serves on addr: a connection
// (over TLS with tlsCfg) that sends nothing gets an "ok" receipt. A
// connection refused means not yet; it fails if the gateway has exited or
// answers wrongly.
func (r *connRun) listening(ctx context.Context, addr string, tlsCfg *tls.Config) (bool, error) {
	if err := r.exited(); err != nil {
		return false, err
	}
	_, err := exchange(ctx, r.srcs.dialer(0), addr, tlsCfg, nil, bufio.NewReader(nil))
	var se *stageError
	if errors.As(err, &se) && se.stage == "connect" {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe connection to %s: %w", addr, err)
	}
	return true, nil
}

// exited returns the error of a gateway that has exited, or nil.
func (r *connRun) exited() error {
	select {
	case <-r.gateway.Done():
		return r.gateway.exitError()
	default:
		return nil
	}
}

// stopGateway fails if the gateway has exited on its own, and otherwise
// stops it; it must exit cleanly.
func (r *connRun) stopGateway() error {
	if err := r.exited(); err != nil {
		return err
	}
	r.b.pr.step("stopping the gateway (SIGTERM)")
	r.b.h.children = nil
	if err := r.gateway.stop(childStopTimeout); err != nil {
		return fmt.Errorf("stop gateway: %w", err)
	}
	return nil
}

// storedLines returns how many lines the ingest stream holds.
func (r *connRun) storedLines(ctx context.Context) (uint64, error) {
	info, err := r.ingest.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", topology.StreamName, err)
	}
	return info.State.Msgs, nil
}

// raiseOpenFiles raises this process's soft limit on open files to the
// hard limit, since every client connection is a file, and returns both.
func raiseOpenFiles() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("read the open files limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, 0, fmt.Errorf("raise the open files limit to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, lim.Max, nil
}

// openFiles returns how many files pid has open.
func openFiles(pid int) (int, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, fmt.Errorf("count open files of pid %d: %w", pid, err)
	}
	return len(entries), nil
}

// goroutines returns the gateway's go_goroutines from its /metrics, or -1
// when it serves no such metric.
func (r *connRun) goroutines(ctx context.Context) int {
	v, ok := scrapeSum(ctx, r.healthAddr, "go_goroutines")
	if !ok {
		return -1
	}
	return int(v)
}
