package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
)

// natsCluster is a JetStream cluster of nats-server processes (built by
// TestMain from the module go.mod names), for tests that crash a server
// the way production does: SIGKILL, no goodbye to its routes, its store
// left as it was. Each node has its own configuration file, store
// directory, client, route and monitoring ports, all chosen before any
// node starts, and a route to every other node. A cluster of one node is
// a plain JetStream server, for comparing against.
//
// The nodes run with nats-server's defaults but for max_payload, which is
// the 8 MB of deploy/nats and the embedded servers, so that a line of
// GATEWAY_MAX_LINE_BYTES fits a message.
type natsCluster struct {
	nodes []*natsNode
}

// natsNode is one server of a [natsCluster]. Its methods are safe for
// concurrent use.
type natsNode struct {
	name      string
	conf      string
	clientURL string
	// healthURL is its monitoring /healthz: 200 once it runs JetStream and
	// every stream and consumer it holds a replica of is current.
	healthURL string

	mu   sync.Mutex
	proc *childproc.Process // nil while it does not run
	cpu  time.Duration      // the CPU time its earlier lives used
	out  testenv.Buffer     // its log, every life of it
}

// startNATSCluster starts an n-node cluster and waits until every node is
// healthy (see [natsNode.waitHealthy]), so R3 streams can be created at
// once. When the test ends, the nodes are stopped (after the programs, whose
// cleanup is registered later) and, if it failed, their logs copied to
// its log.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	dir := t.TempDir()
	type addrs struct{ client, monitor, route string }
	var nodeAddrs []addrs
	var routes []string
	for range n {
		a := addrs{testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)}
		nodeAddrs = append(nodeAddrs, a)
		routes = append(routes, "nats-route://"+a.route)
	}
	for i, a := range nodeAddrs {
		node := &natsNode{
			name:      fmt.Sprintf("nats-%d", i+1),
			clientURL: "nats://" + a.client,
			healthURL: "http://" + a.monitor + "/healthz",
		}
		node.conf = filepath.Join(dir, node.name+".conf")
		conf := fmt.Sprintf("server_name: %s\nlisten: %s\nhttp: %s\nmax_payload: 8MB\njetstream { store_dir: %q }\n",
			node.name, a.client, a.monitor, filepath.Join(dir, node.name))
		if n > 1 {
			// A node ignores the route to itself, as in deploy/nats/cluster.
			conf += fmt.Sprintf("cluster { name: jetline, listen: %s, routes: [%s] }\n", a.route, strings.Join(routes, ", "))
		}
		if err := os.WriteFile(node.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, node)
	}
	t.Cleanup(func() { c.stop(t) })
	for _, node := range c.nodes {
		node.start(t)
	}
	for _, node := range c.nodes {
		node.waitHealthy(t, readyTimeout)
	}
	return c
}

// URL returns every node's client URL, comma-separated, as NATS_URL takes
// them.
func (c *natsCluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, node := range c.nodes {
		urls[i] = node.clientURL
	}
	return strings.Join(urls, ",")
}

// node returns the node named name, or nil.
func (c *natsCluster) node(name string) *natsNode {
	for _, node := range c.nodes {
		if node.name == name {
			return node
		}
	}
	return nil
}

// cpu returns the CPU time every node has used so far.
func (c *natsCluster) cpu(t *testing.T) time.Duration {
	t.Helper()
	var sum time.Duration
	for _, node := range c.nodes {
		sum += node.cpuTime(t)
	}
	return sum
}

// stop stops every node that runs with SIGTERM, and copies the nodes'
// logs to the test's if it failed.
func (c *natsCluster) stop(t *testing.T) {
	var wg sync.WaitGroup
	for _, node := range c.nodes {
		wg.Go(func() {
			if p := node.process(); p != nil {
				if err := p.Terminate(context.Background(), stopTimeout); err != nil {
					t.Errorf("%s: %v", node.name, err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		for _, node := range c.nodes {
			t.Logf("---- %s log:\n%s", node.name, tail(node.out.String(), 32<<10))
		}
	}
}

// start starts the node, or starts it again after [natsNode.kill] on the
// same ports and store, and waits until it accepts connections (not until
// it is healthy: see [natsNode.waitHealthy]).
func (n *natsNode) start(t *testing.T) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	cmd := exec.Command(programs.natsServer, "-c", n.conf)
	p, err := childproc.Start(cmd, func(r io.Reader) { _, _ = io.Copy(&n.out, r) })
	if err != nil {
		t.Fatalf("start %s: %v", n.name, err)
	}
	n.proc = p
	varz := strings.TrimSuffix(n.healthURL, "/healthz") + "/varz"
	deadline := time.Now().Add(readyTimeout)
	for health.Probe(varz, time.Second) != nil {
		select {
		case <-p.Done():
			t.Fatalf("%s exited at start: %v\n%s", n.name, p.Err(), tail(n.out.String(), 8<<10))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer on %s within %s", n.name, varz, readyTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// kill SIGKILLs the node, as a crash would, and waits until it is gone.
func (n *natsNode) kill(t *testing.T) {
	t.Helper()
	n.mu.Lock()
	p := n.proc
	n.cpu += procCPU(t, p.Pid())
	n.proc = nil
	n.mu.Unlock()
	p.Kill()
}

func (n *natsNode) process() *childproc.Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// waitHealthy waits until the node's /healthz answers 200: it runs
// JetStream, knows the meta leader and has caught up every replica it
// holds.
func (n *natsNode) waitHealthy(t *testing.T, timeout time.Duration) {
	t.Helper()
	// Not testenv.Eventually: every failed probe is a warning in the
	// node's log, and 10 ms apart they would bury the rest.
	deadline := time.Now().Add(timeout)
	for {
		if p := n.process(); p == nil || isDone(p) {
			t.Fatalf("%s is not running\n%s", n.name, tail(n.out.String(), 8<<10))
		}
		err := health.Probe(n.healthURL, time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s to be healthy: %v", timeout, n.name, err)
		}
		time.Sleep(10 * pollInterval)
	}
}

// cpuTime returns the CPU time the node has used in all its lives.
func (n *natsNode) cpuTime(t *testing.T) time.Duration {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || isDone(n.proc) {
		return n.cpu
	}
	return n.cpu + procCPU(t, n.proc.Pid())
}

func isDone(p *childproc.Process) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// procCPU returns the user and system CPU time process pid has used.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	p, err := procfs.NewProc(pid)
	if err != nil {
		t.Fatalf("read /proc/%d: %v", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatalf("read /proc/%d/stat: %v", pid, err)
	}
	return time.Duration(st.CPUTime() * float64(time.Second))
}

// setupNATSCluster is [setup] for a test of its own n-node cluster of
// nats-server processes: b.natsURL names every node, b.js is connected to
// them all (nats.go moves to another when its server dies) and b.nats is
// nil.
func setupNATSCluster(t *testing.T, n int, opts setupOptions) (*bundle, *natsCluster) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	cluster := startNATSCluster(t, n)
	b := &bundle{natsURL: cluster.URL(), dsn: testenv.Postgres(t), streamMaxBytes: defaultStreamMaxBytes, gatewayEnv: opts.gatewayEnv}
	// Cleanups run last-registered first: the programs stop before the
	// cluster does.
	t.Cleanup(func() { b.stopAll(t) })
	_, b.js = testenv.Connect(t, b.natsURL)
	var err error
	if b.db, err = pgxpool.New(context.Background(), b.dsn); err != nil {
		t.Fatalf("open database pool: %v", err)
	}
	t.Cleanup(b.db.Close)
	return b, cluster
}

// streamPlacement returns the stream's leader and the names of its other
// replicas, with why not if there is no leader or a replica is not
// current; it asks whichever node the test's connection is on. Without a
// leader, the request times out after 2 s.
func (b *bundle) streamPlacement(t *testing.T, stream string) (leader string, followers []string, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return "", nil, fmt.Sprintf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", nil, fmt.Sprintf("stream %s info: %v", stream, err)
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", nil, "no leader"
	}
	for _, r := range info.Cluster.Replicas {
		followers = append(followers, r.Name)
		if !r.Current || r.Offline {
			why = fmt.Sprintf("replica %s current=%t offline=%t lag %d", r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return info.Cluster.Leader, followers, why
}

// streamLeader waits until stream has a leader and returns its node.
func (b *bundle) streamLeader(t *testing.T, c *natsCluster, stream string) *natsNode {
	t.Helper()
	var leader *natsNode
	b.waitFor(t, time.Minute, "a leader of "+stream, func() (bool, string) {
		name, _, why := b.streamPlacement(t, stream)
		leader = c.node(name)
		return leader != nil, fmt.Sprintf("leader %q: %s", name, why)
	})
	return leader
}

// checkReplicas fails the test unless stream has n replicas configured.
func (b *bundle) checkReplicas(t *testing.T, stream string, n int) {
	t.Helper()
	s, err := b.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	if got := s.CachedInfo().Config.Replicas; got != n {
		t.Fatalf("stream %s has %d replicas, want %d", stream, got, n)
	}
}
