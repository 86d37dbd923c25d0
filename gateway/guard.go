package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Refusal reasons: the keys of [Gateway.Refused] and the reason attribute
// of the refusal log. The gateway refuses no connection for
// GATEWAY_MAX_CONNECTIONS: at that cap it stops accepting, and newcomers
// wait in the kernel's listen backlog.
const (
	// RefusedAllowlist counts connections from addresses outside
	// GATEWAY_ALLOW_CIDRS.
	RefusedAllowlist = "allowlist"
	// RefusedPerIP counts connections over GATEWAY_MAX_CONNECTIONS_PER_IP.
	RefusedPerIP = "per_ip"
	// RefusedTLSHandshake counts TLS connections whose handshake failed or
	// did not finish within GATEWAY_TLS_HANDSHAKE_TIMEOUT, including
	// clients without an accepted certificate under mutual TLS.
	RefusedTLSHandshake = "tls_handshake"
)

var refusalReasons = []string{RefusedAllowlist, RefusedPerIP, RefusedTLSHandshake}

// Why the guard refuses, for the log.
var (
	errNotAllowed = errors.New("address not in GATEWAY_ALLOW_CIDRS")
	errPerIP      = errors.New("as many connections open from this address as GATEWAY_MAX_CONNECTIONS_PER_IP allows")
)

// Refusal log limits.
const (
	// refusalLogEvery is how often one peer's refusals are logged at most.
	refusalLogEvery = time.Minute
	// refusalLogPeers bounds the peers the refusal log remembers; refusals
	// from further peers within a minute are only counted.
	refusalLogPeers = 4096
)

// ParseAllowCIDRs parses a [Config.AllowCIDRs] value such as
// "10.0.0.0/8, 192.0.2.7, 2001:db8::/32"; an address stands for itself
// alone. An empty value gives no prefixes, which allows everyone.
func ParseAllowCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("GATEWAY_ALLOW_CIDRS entry %q is not a network such as 10.0.0.0/8 or an address such as 192.0.2.7: %w", item, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("GATEWAY_ALLOW_CIDRS entry %q is not a network such as 10.0.0.0/8 or an address such as 192.0.2.7: %w", item, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// peerAddr returns the address conn comes from, with IPv4 addresses in
// their 4-byte form even on a dual-stack listener.
func peerAddr(conn net.Conn) netip.Addr {
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	return ap.Addr().Unmap()
}

// guard decides which accepted connections may stay: those from an
// allowed network, within the per-address cap. It counts refusals by
// reason. Safe for concurrent use.
type guard struct {
	allow []netip.Prefix // empty: everyone
	perIP int            // 0: no cap

	mu   sync.Mutex
	open map[netip.Addr]int // connections per address, kept only with a cap

	refused map[string]*atomic.Uint64 // by reason; the map is never written after newGuard
	log     *refusalLog
}

func newGuard(allow []netip.Prefix, perIP int, log *refusalLog) *guard {
	g := &guard{allow: allow, perIP: perIP, open: map[netip.Addr]int{}, refused: map[string]*atomic.Uint64{}, log: log}
	for _, r := range refusalReasons {
		g.refused[r] = new(atomic.Uint64)
	}
	return g
}

// admit returns nil if a connection from peer may stay, else the reason
// and why. An admitted connection holds a per-address slot it must give
// back with leave.
func (g *guard) admit(peer netip.Addr) (reason string, err error) {
	if len(g.allow) > 0 && !g.allowed(peer) {
		return RefusedAllowlist, errNotAllowed
	}
	if g.perIP == 0 {
		return "", nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open[peer] >= g.perIP {
		return RefusedPerIP, errPerIP
	}
	g.open[peer]++
	return "", nil
}

func (g *guard) allowed(peer netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// leave gives back the per-address slot of an admitted connection.
func (g *guard) leave(peer netip.Addr) {
	if g.perIP == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := g.open[peer]; n > 1 {
		g.open[peer] = n - 1
	} else {
		delete(g.open, peer)
	}
}

// refuse counts a refusal and logs it, at most once per peer per minute.
func (g *guard) refuse(reason string, peer netip.Addr, err error) {
	g.refused[reason].Add(1)
	g.log.note(reason, peer, err)
}

// counts returns the refusals so far by reason, every reason included.
func (g *guard) counts() map[string]uint64 {
	out := make(map[string]uint64, len(g.refused))
	for r, n := range g.refused {
		out[r] = n.Load()
	}
	return out
}

// refusalLog logs refused connections at most once per peer per minute,
// so a client retrying in a loop, or a scanner, cannot flood the log. A
// peer's next line says how many of its refusals were not logged since.
// Memory is bounded: peers not refused for a minute are forgotten in a
// sweep at most once a minute, which logs in one line what they had left
// unlogged, and at most refusalLogPeers are remembered at once. Safe for
// concurrent use.
type refusalLog struct {
	logger *slog.Logger
	now    func() time.Time // time.Now; tests set a clock

	mu       sync.Mutex
	peers    map[netip.Addr]*peerRefusals
	swept    time.Time
	overflow uint64 // refusals unlogged because too many peers were remembered
}

type peerRefusals struct {
	logged     time.Time // when a refusal of this peer was last logged
	last       time.Time // when this peer was last refused
	suppressed uint64    // refusals since logged, not logged
}

func newRefusalLog(logger *slog.Logger, now func() time.Time) *refusalLog {
	return &refusalLog{logger: logger, now: now, peers: map[netip.Addr]*peerRefusals{}, swept: now()}
}

// note logs a refusal of peer, unless one was logged less than a minute
// ago.
func (l *refusalLog) note(reason string, peer netip.Addr, err error) {
	l.mu.Lock()
	now := l.now()
	var unlogged uint64
	if now.Sub(l.swept) >= refusalLogEvery {
		unlogged = l.sweep(now)
	}
	p, ok := l.peers[peer]
	log := true
	var suppressed uint64
	switch {
	case ok && now.Sub(p.logged) < refusalLogEvery:
		p.suppressed++
		p.last = now
		log = false
	case ok:
		suppressed = p.suppressed
		p.logged, p.last, p.suppressed = now, now, 0
	case len(l.peers) >= refusalLogPeers:
		l.overflow++
		log = false
	default:
		l.peers[peer] = &peerRefusals{logged: now, last: now}
	}
	l.mu.Unlock()

	if unlogged > 0 {
		l.logger.Warn("connections refused and not logged, from peers not refused for a minute or too many to track",
			"refused_unlogged", unlogged)
	}
	if log {
		attrs := []any{"reason", reason, "peer", peer.String(), "err", err}
		if suppressed > 0 {
			attrs = append(attrs, "refused_unlogged_since", suppressed)
		}
		l.logger.Warn("connection refused", attrs...)
	}
}

// sweep forgets peers not refused for a minute and returns the refusals
// left unlogged by them and by peers that could not be remembered. A peer
// refused all along stays, so that its next line tells its own count. l.mu
// must be held.
func (l *refusalLog) sweep(now time.Time) (unlogged uint64) {
	for a, p := range l.peers {
		if now.Sub(p.last) >= refusalLogEvery {
			unlogged += p.suppressed
			delete(l.peers, a)
		}
	}
	unlogged += l.overflow
	l.overflow, l.swept = 0, now
	return unlogged
}

// refuse counts and logs a refused connection from peer: the one place
// every refusal goes through. reason is one of [RefusedAllowlist],
// [RefusedPerIP] and [RefusedTLSHandshake]; err, if not nil, says what
// failed.
func (g *Gateway) refuse(reason string, peer netip.Addr, err error) {
	g.guard.refuse(reason, peer, err)
}

// Refused returns how many connections were refused so far, by reason
// ([RefusedAllowlist], [RefusedPerIP], [RefusedTLSHandshake]); every
// reason is present, 0 if it never happened. The map is the caller's.
func (g *Gateway) Refused() map[string]uint64 { return g.guard.counts() }

// admit decides, right after Accept and before anything is read, whether
// conn may stay. A refused conn is counted and logged; the caller closes
// it.
func (g *Gateway) admit(conn net.Conn) bool {
	peer := peerAddr(conn)
	if reason, err := g.guard.admit(peer); err != nil {
		g.refuse(reason, peer, err)
		return false
	}
	return true
}
