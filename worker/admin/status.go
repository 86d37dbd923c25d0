package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/worker"
)

// FullPercent is how full the ingest stream may get before [TakeStatus]
// warns that the gateway is about to push back on senders.
const FullPercent = 90

// Status is one look at the pipeline: the ingest stream, the workers'
// consumer, the running workers (from their entries in the
// topology.WorkersBucket bucket) and the dead letters, sampled twice to
// see how they move.
type Status struct {
	At time.Time `json:"at"`
	// Interval is the time between the two readings.
	Interval time.Duration `json:"-"`
	Seconds  float64       `json:"interval_seconds"`
	Ingest   IngestStatus  `json:"ingest"`
	// Consumer is nil when no worker has created it yet.
	Consumer *ConsumerStatus `json:"consumer"`
	// Workers is nil when no worker has reported its presence yet.
	Workers *WorkersStatus `json:"workers"`
	// DeadLetters is nil when nothing has been dead-lettered yet.
	DeadLetters *DeadLetterStatus `json:"dead_letters"`
	Rates       Rates             `json:"rates"`
	// Verdict says in a sentence how things go; Warnings list what needs
	// a look.
	Verdict  string   `json:"verdict"`
	Warnings []string `json:"warnings,omitempty"`
}

// IngestStatus is the state of the ingest stream.
type IngestStatus struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// MaxBytes is the stream's byte limit (INGEST_MAX_BYTES), FullPercent
	// how much of it Bytes is.
	MaxBytes    int64   `json:"max_bytes"`
	FullPercent float64 `json:"full_percent"`
	LastSeq     uint64  `json:"last_seq"`
	// Cluster is where the stream's replicas run; nil on a server that
	// is not clustered.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// ClusterStatus is the placement of the ingest stream on a JetStream
// cluster, from the stream's info: its leader and the other replicas as
// the leader sees them. With INGEST_REPLICAS=3 a healthy stream has a
// leader and two current replicas; a killed node stays listed, not
// current, its lag and inactivity growing, until it is back or removed
// (nats stream cluster peer-remove).
type ClusterStatus struct {
	Name string `json:"name"`
	// Leader is the server that orders the stream's writes; empty while
	// the replicas elect one (after its node was lost, for a few seconds).
	Leader   string          `json:"leader"`
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica of the stream other than the leader.
type ReplicaStatus struct {
	Name string `json:"name"`
	// Current reports whether the replica has every entry the leader has
	// (within the leader's view); Offline whether the leader cannot reach
	// it.
	Current bool `json:"current"`
	Offline bool `json:"offline"`
	// Lag is how many entries the replica is behind; Active how long ago
	// the leader last heard from it.
	Lag           uint64        `json:"lag"`
	Active        time.Duration `json:"-"`
	ActiveSeconds float64       `json:"active_seconds"`
}

// Lagging reports whether the replica is behind the leader or unreachable.
func (r ReplicaStatus) Lagging() bool { return !r.Current || r.Offline || r.Lag > 0 }

// clusterStatus translates the stream's cluster info; nil when info is.
func clusterStatus(info *jetstream.ClusterInfo) *ClusterStatus {
	if info == nil || (info.Leader == "" && len(info.Replicas) == 0) {
		return nil
	}
	cs := &ClusterStatus{Name: info.Name, Leader: info.Leader, Replicas: []ReplicaStatus{}}
	for _, p := range info.Replicas {
		if p == nil {
			continue
		}
		cs.Replicas = append(cs.Replicas, ReplicaStatus{
			Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag,
			Active: p.Active, ActiveSeconds: p.Active.Seconds(),
		})
	}
	slices.SortFunc(cs.Replicas, func(a, b ReplicaStatus) int { return strings.Compare(a.Name, b.Name) })
	return cs
}

// ConsumerStatus is the state of the workers' shared consumer.
type ConsumerStatus struct {
	// Pending frames (messages of one line or more) are waiting to be
	// fetched.
	Pending uint64 `json:"pending"`
	// AckPending frames are fetched and being stored.
	AckPending int `json:"ack_pending"`
	// Redelivered frames, among AckPending, were delivered before.
	Redelivered int `json:"redelivered"`
	// Waiting is the number of pull requests waiting for frames: a worker
	// keeps one or two outstanding while its prefetch has room, and none
	// while it is full, so busy workers do not show here.
	Waiting int `json:"waiting_pulls"`
	// MaxAckPending is the consumer's cap on AckPending.
	MaxAckPending int `json:"max_ack_pending"`
}

// WorkersStatus lists the running workers: those whose presence entry in
// the topology.WorkersBucket bucket is fresh and not deleted.
type WorkersStatus struct {
	Count   int            `json:"count"`
	Workers []WorkerStatus `json:"workers"`
}

// WorkerStatus is one running worker: its latest presence entry and what
// the two readings make of it.
type WorkerStatus struct {
	worker.PresenceEntry
	// Uptime is how long ago the worker started, HeartbeatAge how long ago
	// it last reported, both as of the second reading.
	Uptime              time.Duration `json:"-"`
	UptimeSeconds       float64       `json:"uptime_seconds"`
	HeartbeatAge        time.Duration `json:"-"`
	HeartbeatAgeSeconds float64       `json:"heartbeat_age_seconds"`
	// LinesPerSec is lines settled per second between the heartbeats of
	// the two readings or, when the worker did not report between them,
	// over its last heartbeat interval.
	LinesPerSec float64 `json:"lines_per_sec"`
}

// Late reports whether the worker missed heartbeats: it is stuck, or gone
// and about to drop out of the bucket.
func (w WorkerStatus) Late() bool {
	return w.HeartbeatSeconds > 0 && w.HeartbeatAge.Seconds() > lateHeartbeats*w.HeartbeatSeconds
}

// lateHeartbeats is how many heartbeat intervals may pass without one
// before [WorkerStatus.Late] says so.
const lateHeartbeats = 3

// DeadLetterStatus is the size of the dead-letter stream.
type DeadLetterStatus struct {
	Messages uint64            `json:"messages"`
	Bytes    uint64            `json:"bytes"`
	ByReason map[string]uint64 `json:"by_reason"`
	LastSeq  uint64            `json:"last_seq"`
}

// Rates are frames (messages of one line or more) per second over the
// sampling interval; the workers' own rates (WorkersStatus) are in lines.
type Rates struct {
	// In is frames received into the ingest stream.
	In float64 `json:"in_per_sec"`
	// Out is frames that left it: their lines stored or dead-lettered.
	Out float64 `json:"out_per_sec"`
	// DeadLetters is entries written to the dead-letter stream.
	DeadLetters float64 `json:"dead_letters_per_sec"`
	// Backlog is how fast the ingest stream grows (negative: shrinks).
	Backlog float64 `json:"backlog_per_sec"`
}

// sample is one reading of the three streams' state.
type sample struct {
	at       time.Time
	ingest   IngestStatus
	consumer *ConsumerStatus
	dead     *DeadLetterStatus
	// workers is nil when the presence bucket does not exist.
	workers []worker.PresenceEntry
}

// TakeStatus reads the state of the pipeline twice, interval apart, and
// judges it. It returns [ErrNoIngest] when the ingest stream does not
// exist, and ctx's error when ctx ends between the readings.
func TakeStatus(ctx context.Context, js jetstream.JetStream, interval time.Duration) (Status, error) {
	first, err := takeSample(ctx, js)
	if err != nil {
		return Status{}, err
	}
	select {
	case <-ctx.Done():
		return Status{}, ctx.Err()
	case <-time.After(interval):
	}
	last, err := takeSample(ctx, js)
	if err != nil {
		return Status{}, err
	}
	st := Status{At: last.at, Interval: last.at.Sub(first.at), Ingest: last.ingest, Consumer: last.consumer, DeadLetters: last.dead}
	st.Workers = workersStatus(first, last)
	secs := st.Interval.Seconds()
	st.Seconds = secs
	perSec := func(from, to uint64) float64 { return (float64(to) - float64(from)) / secs }
	st.Rates.In = perSec(first.ingest.LastSeq, last.ingest.LastSeq)
	st.Rates.Backlog = perSec(first.ingest.Messages, last.ingest.Messages)
	// The ingest stream keeps a line until it is acknowledged, so what
	// came in and did not stay went out.
	st.Rates.Out = max(st.Rates.In-st.Rates.Backlog, 0)
	if first.dead != nil && last.dead != nil {
		st.Rates.DeadLetters = perSec(first.dead.LastSeq, last.dead.LastSeq)
	} else if last.dead != nil {
		st.Rates.DeadLetters = float64(last.dead.LastSeq) / secs
	}
	st.Verdict, st.Warnings = judge(st)
	return st, nil
}

func takeSample(ctx context.Context, js jetstream.JetStream) (sample, error) {
	s := sample{at: time.Now()}
	in, err := ingest(ctx, js)
	if err != nil {
		return s, err
	}
	info, err := in.Info(ctx)
	if err != nil {
		return s, fmt.Errorf("read stream %s: %w", topology.StreamName, err)
	}
	s.ingest = IngestStatus{Messages: info.State.Msgs, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes, LastSeq: info.State.LastSeq, Cluster: clusterStatus(info.Cluster)}
	if info.Config.MaxBytes > 0 {
		s.ingest.FullPercent = 100 * float64(info.State.Bytes) / float64(info.Config.MaxBytes)
	}

	cons, err := in.Consumer(ctx, topology.ConsumerName)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return s, fmt.Errorf("read consumer %s: %w", topology.ConsumerName, err)
	default:
		ci := cons.CachedInfo()
		s.consumer = &ConsumerStatus{Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting, MaxAckPending: ci.Config.MaxAckPending}
	}

	s.workers, err = worker.ReadPresence(ctx, js)
	switch {
	case errors.Is(err, worker.ErrNoPresence):
	case err != nil:
		return s, err
	case s.workers == nil:
		s.workers = []worker.PresenceEntry{}
	}

	dl, err := deadLetters(ctx, js)
	if errors.Is(err, ErrNoDeadLetters) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	dinfo, err := dl.Info(ctx, jetstream.WithSubjectFilter(deadletter.StreamSubjects))
	if err != nil {
		return s, fmt.Errorf("read stream %s: %w", deadletter.StreamName, err)
	}
	s.dead = &DeadLetterStatus{Messages: dinfo.State.Msgs, Bytes: dinfo.State.Bytes, LastSeq: dinfo.State.LastSeq, ByReason: map[string]uint64{}}
	for subject, n := range dinfo.State.Subjects {
		s.dead.ByReason[groupOf(subject).Reason] += n
	}
	return s, nil
}

// workersStatus lists the workers of the last reading, with their
// throughput from both; nil when no worker has reported yet.
func workersStatus(first, last sample) *WorkersStatus {
	if last.workers == nil {
		return nil
	}
	before := map[string]worker.PresenceEntry{}
	for _, e := range first.workers {
		before[e.Instance] = e
	}
	ws := &WorkersStatus{Count: len(last.workers), Workers: []WorkerStatus{}}
	for _, e := range last.workers {
		w := WorkerStatus{PresenceEntry: e, Uptime: last.at.Sub(e.Started), HeartbeatAge: max(last.at.Sub(e.Heartbeat), 0), LinesPerSec: e.RecentLinesPerSec}
		// A worker restarted under the same name starts its totals again.
		if b, ok := before[e.Instance]; ok && e.Heartbeat.After(b.Heartbeat) && e.Totals.Lines >= b.Totals.Lines {
			w.LinesPerSec = float64(e.Totals.Lines-b.Totals.Lines) / e.Heartbeat.Sub(b.Heartbeat).Seconds()
		}
		w.UptimeSeconds, w.HeartbeatAgeSeconds = w.Uptime.Seconds(), w.HeartbeatAge.Seconds()
		ws.Workers = append(ws.Workers, w)
	}
	return ws
}

// judge puts st in plain words.
func judge(st Status) (verdict string, warnings []string) {
	if st.Ingest.FullPercent >= FullPercent {
		warnings = append(warnings, fmt.Sprintf("%s is %.0f%% full: when full, the gateway refuses lines and senders wait (raise INGEST_MAX_BYTES or add workers)", topology.StreamName, st.Ingest.FullPercent))
	}
	if cs := st.Ingest.Cluster; cs != nil {
		if cs.Leader == "" {
			warnings = append(warnings, fmt.Sprintf("%s has no leader: its replicas are electing one, or too few of them run (see nats server list)", topology.StreamName))
		}
		for _, r := range cs.Replicas {
			if r.Lagging() {
				warnings = append(warnings, fmt.Sprintf("replica %s of %s is %s (%d behind, last seen %s ago): its node is down or catching up",
					r.Name, topology.StreamName, replicaState(r), r.Lag, r.Active.Round(100*time.Millisecond)))
			}
		}
	}
	if st.DeadLetters != nil && st.Rates.DeadLetters > 0 {
		warnings = append(warnings, fmt.Sprintf("lines are being dead-lettered (%.1f/s): see worker dlq list", st.Rates.DeadLetters))
	}
	if c := st.Consumer; c != nil && c.Redelivered > 0 {
		warnings = append(warnings, fmt.Sprintf("%d frames in flight were delivered before: workers failed or timed out storing them (see worker logs)", c.Redelivered))
	}
	if ws := st.Workers; ws != nil {
		for _, w := range ws.Workers {
			if w.Late() {
				warnings = append(warnings, fmt.Sprintf("worker %s last reported %s ago (every %s): stuck, or gone and about to drop out of the list",
					w.Instance, w.HeartbeatAge.Round(time.Second), time.Duration(w.HeartbeatSeconds*float64(time.Second))))
			}
		}
	}
	c := st.Consumer
	if c == nil {
		if st.Ingest.Messages > 0 {
			return fmt.Sprintf("no worker has started: consumer %s does not exist and %d frames are waiting", topology.ConsumerName, st.Ingest.Messages), warnings
		}
		return fmt.Sprintf("no worker has started yet (consumer %s does not exist)", topology.ConsumerName), warnings
	}
	backlog := c.Pending + uint64(c.AckPending)
	r := st.Rates
	switch {
	case backlog == 0 && r.In == 0:
		verdict = "idle: nothing waiting, nothing arriving"
	case backlog == 0:
		verdict = fmt.Sprintf("keeping up: %.0f frames/s arriving, nothing waiting", r.In)
	case r.Out == 0 && c.AckPending == 0 && st.Workers != nil && st.Workers.Count == 0:
		verdict = fmt.Sprintf("stalled: %d frames waiting and no worker connected (start one: docker compose up -d worker, or make run)", backlog)
	case r.Out == 0 && c.AckPending == 0 && c.Waiting == 0 && st.Workers != nil:
		verdict = fmt.Sprintf("stalled: %d frames waiting, %s connected but none fetching (waiting for the database? see worker logs)", backlog, Count(uint64(st.Workers.Count), "worker"))
	case r.Out == 0 && c.AckPending == 0 && c.Waiting == 0:
		verdict = fmt.Sprintf("stalled: %d frames waiting and no worker fetching (are workers running?)", backlog)
	case r.Out == 0:
		verdict = fmt.Sprintf("stalled: %d frames waiting, workers hold %d but stored none in %s (database down? see worker logs)", backlog, c.AckPending, st.Interval.Round(100*time.Millisecond))
	case r.Backlog > 0:
		verdict = fmt.Sprintf("backlog growing by %.0f frames/s (%.0f in, %.0f out), %d waiting: add workers or check the database", r.Backlog, r.In, r.Out, backlog)
	case r.Backlog < 0:
		eta := time.Duration(float64(backlog) / -r.Backlog * float64(time.Second))
		verdict = fmt.Sprintf("draining: %d frames waiting, shrinking by %.0f frames/s, empty in about %s", backlog, -r.Backlog, eta.Round(time.Second))
	default:
		verdict = fmt.Sprintf("steady: %d frames waiting, %.0f frames/s in and out", backlog, r.Out)
	}
	return verdict, warnings
}

// WriteStatus writes st as one screen for a terminal.
func WriteStatus(out io.Writer, st Status) error {
	w := bufio.NewWriter(out)
	in := st.Ingest
	fmt.Fprintf(w, "%-11s %d frames, %s", topology.StreamName, in.Messages, Bytes(in.Bytes))
	if in.MaxBytes > 0 {
		fmt.Fprintf(w, " of %s (%.1f%% full)", Bytes(uint64(in.MaxBytes)), in.FullPercent)
	}
	fmt.Fprintln(w)
	writeCluster(w, in.Cluster)
	if c := st.Consumer; c != nil {
		fmt.Fprintf(w, "%-11s %d to fetch, %d being stored (max %d), %d of them redelivered; %d pull requests waiting (workers with room)\n",
			topology.ConsumerName, c.Pending, c.AckPending, c.MaxAckPending, c.Redelivered, c.Waiting)
	} else {
		fmt.Fprintf(w, "%-11s consumer does not exist yet\n", topology.ConsumerName)
	}
	writeWorkers(w, st.Workers)
	fmt.Fprintf(w, "%-11s %.0f frames/s in, %.0f frames/s out, %.1f dead letters/s (over %s)\n",
		"rates", st.Rates.In, st.Rates.Out, st.Rates.DeadLetters, st.Interval.Round(100*time.Millisecond))
	if d := st.DeadLetters; d != nil {
		fmt.Fprintf(w, "%-11s %s, %s", deadletter.StreamName, Count(d.Messages, "dead letter"), Bytes(d.Bytes))
		if len(d.ByReason) > 0 {
			var parts []string
			for _, reason := range slices.Sorted(maps.Keys(d.ByReason)) {
				parts = append(parts, fmt.Sprintf("%s %d", reason, d.ByReason[reason]))
			}
			fmt.Fprintf(w, ": %s", strings.Join(parts, ", "))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "%-11s none yet\n", deadletter.StreamName)
	}
	fmt.Fprintf(w, "\n%s\n", st.Verdict)
	for _, warning := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
	return w.Flush()
}

// writeWorkers writes the workers block: a count, then a line a worker.
func writeWorkers(w io.Writer, ws *WorkersStatus) {
	if ws == nil {
		fmt.Fprintf(w, "%-11s no worker has reported yet\n", "connected")
		return
	}
	fmt.Fprintf(w, "%-11s %s\n", "connected", Count(uint64(ws.Count), "worker"))
	for _, wk := range ws.Workers {
		late := ""
		if wk.Late() {
			late = " (late)"
		}
		fmt.Fprintf(w, "  %-20s %-16s up %-9s %7.0f lines/s  %d inserted  %d dead-lettered  heartbeat %s ago%s\n",
			wk.Instance, wk.Host, wk.Uptime.Round(time.Second), wk.LinesPerSec, wk.Totals.Inserted, wk.Totals.DeadLettered,
			wk.HeartbeatAge.Round(100*time.Millisecond), late)
	}
}

// writeCluster writes the stream's leader and a line a replica, or
// nothing on a server that is not clustered.
func writeCluster(w io.Writer, cs *ClusterStatus) {
	if cs == nil {
		return
	}
	leader := cs.Leader
	if leader == "" {
		leader = "none (electing)"
	}
	fmt.Fprintf(w, "%-11s cluster %s, leader %s, %s\n", "replicas", cs.Name, leader, Count(uint64(len(cs.Replicas)), "other replica"))
	for _, r := range cs.Replicas {
		fmt.Fprintf(w, "  %-20s %-8s %d behind  active %s ago\n", r.Name, replicaState(r), r.Lag, r.Active.Round(100*time.Millisecond))
	}
}

// replicaState is a replica's state in a word.
func replicaState(r ReplicaStatus) string {
	switch {
	case r.Offline:
		return "offline"
	case !r.Current:
		return "lagging"
	case r.Lag > 0:
		return "behind"
	}
	return "current"
}
