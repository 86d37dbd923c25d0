package embeddednats

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterName is the name of the cluster [NewCluster] routes its servers
// into.
const ClusterName = "jetline"

// Cluster is a JetStream cluster of embedded servers in this process, for
// tests that need R3 streams, a meta leader to elect, and nodes that stop,
// come back or start late. Each node has its own store directory
// (opts.StoreDir/<name>), its own client and route ports, and a route to
// every other node, as `nats-server --cluster … --routes …` would.
//
// All ports are chosen when the cluster is made, so [Cluster.URL] is known
// before any node runs: programs can be given it and started first. The
// methods are safe for concurrent use.
type Cluster struct {
	logger *slog.Logger
	mu     sync.Mutex
	nodes  []*Server
}

// NewCluster makes a cluster of n servers and starts none of them: see
// [Cluster.Start] and [Cluster.StartNode]. opts apply to every node, except
// the ports and the store: with opts.Port > 0 node i (from 0) serves
// clients on opts.Port+i and routes on opts.Port+[RoutePortOffset]+i
// (4222 gives 4222… and 6222…, the ports nats-server's docs use), otherwise
// free ports are chosen; each node's store is a directory of opts.StoreDir; opts.Configure, if set, runs on each node's options after
// the cluster settings. The nodes are named jetline-1 … jetline-n.
//
// JetStream elects a meta leader once a majority of the n nodes run, and
// places an R3 stream only once three of them have joined.
func NewCluster(opts Options, n int, logger *slog.Logger) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("a cluster needs at least one node (got %d)", n)
	}
	if opts.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats cluster needs a store directory")
	}
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ports, err := clusterPorts(host, opts.Port, n)
	if err != nil {
		return nil, err
	}
	routes := make([]string, n)
	for i := range n {
		routes[i] = "nats-route://" + net.JoinHostPort(host, strconv.Itoa(ports[2*i+1]))
	}
	c := &Cluster{logger: logger}
	for i := range n {
		name := "jetline-" + strconv.Itoa(i+1)
		nopts := opts
		nopts.Host, nopts.Port = host, ports[2*i]
		nopts.StoreDir = filepath.Join(opts.StoreDir, name)
		var others []*url.URL
		for j, r := range routes {
			if j != i {
				u, _ := url.Parse(r)
				others = append(others, u)
			}
		}
		clusterPort := ports[2*i+1]
		s, err := newServer(nopts, name, func(o *server.Options) {
			o.Cluster = server.ClusterOpts{Name: ClusterName, Host: host, Port: clusterPort}
			o.Routes = others
		})
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	return c, nil
}

// StartCluster makes a cluster of n servers with [NewCluster], starts them
// all and waits until JetStream has elected a meta leader, so R3 streams
// can be created at once. On error, the nodes started are stopped.
func StartCluster(opts Options, n int, logger *slog.Logger) (*Cluster, error) {
	c, err := NewCluster(opts, n, logger)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.WaitForMetaLeader(30 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Size returns the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.nodes) }

// URL returns the client URLs of every node, comma-separated, as NATS_URL
// takes them. It is known before any node starts.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.NodeURL(i)
	}
	return strings.Join(urls, ",")
}

// NodeURL returns the client URL of node i (from 0).
func (c *Cluster) NodeURL(i int) string {
	o := c.nodes[i].opts
	return "nats://" + net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
}

// Node returns node i (from 0). Its embedded *server.Server is nil until
// the node first starts.
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// Start starts every node that is not running, one right after the other
// (each takes milliseconds), as compose or Kubernetes would, and waits until
// each accepts client connections. It does not wait for a meta leader; see
// [Cluster.WaitForMetaLeader].
func (c *Cluster) Start() error {
	var errs []error
	for i := range c.nodes {
		errs = append(errs, c.StartNode(i))
	}
	return errors.Join(errs...)
}

// StartNode starts node i (from 0), or starts it again after
// [Cluster.StopNode], on the same ports and store, and waits until it
// accepts client connections. It does nothing if the node runs.
func (c *Cluster) StartNode(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.nodes[i]
	if s.Server != nil && s.Running() {
		return nil
	}
	if err := s.start(); err != nil {
		return fmt.Errorf("node %s: %w", s.opts.ServerName, err)
	}
	c.logger.Info("embedded nats cluster node started", "node", s.opts.ServerName, "url", c.NodeURL(i), "store_dir", s.opts.StoreDir)
	return nil
}

// StopNode shuts node i (from 0) down, as a crash of its process would
// from the other nodes' view, and waits for it. Its store is kept, for
// [Cluster.StartNode]. Safe on a node that is not running.
func (c *Cluster) StopNode(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[i].Stop()
}

// RestartNode stops node i (from 0) and starts it again on the same ports
// and store.
func (c *Cluster) RestartNode(i int) error {
	c.StopNode(i)
	return c.StartNode(i)
}

// Stop shuts every node down. Safe to call twice.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Go(func() { c.StopNode(i) })
	}
	wg.Wait()
}

// running returns the nodes that run now.
func (c *Cluster) running() []*Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Server
	for _, s := range c.nodes {
		if s.Server != nil && s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// MetaLeader returns the running node that leads the JetStream meta group,
// or nil while there is none.
func (c *Cluster) MetaLeader() *Server {
	for _, s := range c.running() {
		if s.JetStreamIsLeader() {
			return s
		}
	}
	return nil
}

// StreamLeader returns the running node that leads stream in the global
// account, or nil while there is none.
func (c *Cluster) StreamLeader(stream string) *Server {
	for _, s := range c.running() {
		if s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return s
		}
	}
	return nil
}

// Index returns the index of node s in c, or -1.
func (c *Cluster) Index(s *Server) int {
	for i, n := range c.nodes {
		if n == s {
			return i
		}
	}
	return -1
}

// WaitForMetaLeader waits until a running node leads the JetStream meta
// group and every running node knows it, or timeout passes.
func (c *Cluster) WaitForMetaLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if leader := c.MetaLeader(); leader != nil && c.agreeOnMetaLeader() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded nats cluster: no JetStream meta leader after %s (%d of %d nodes running)", timeout, len(c.running()), len(c.nodes))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) agreeOnMetaLeader() bool {
	for _, s := range c.running() {
		if !s.JetStreamIsCurrent() {
			return false
		}
	}
	return true
}

// freePorts returns n distinct ports on host that nothing listens on now.
// RoutePortOffset is how far above its client port a node of a
// [NewCluster] with fixed ports listens for routes.
const RoutePortOffset = 2000

// clusterPorts returns the client and route ports of n nodes, interleaved
// (client, route, client, …): from first (see [NewCluster]) when first > 0,
// else free ones, chosen together so no two are the same. Another process
// may take a free port before the node binds it; the kernel hands out
// ports in turn, so that is rare.
func clusterPorts(host string, first, n int) ([]int, error) {
	if first <= 0 {
		return freePorts(host, 2*n)
	}
	if first+RoutePortOffset+n-1 > 65535 {
		return nil, fmt.Errorf("client port %d leaves no room for %d route ports %d above it", first, n, RoutePortOffset)
	}
	ports := make([]int, 0, 2*n)
	for i := range n {
		ports = append(ports, first+i, first+RoutePortOffset+i)
	}
	return ports, nil
}

func freePorts(host string, n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("find a free port on %s: %w", host, err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
