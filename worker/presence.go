package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// Defaults of [PresenceOptions].
const (
	// DefaultHeartbeat is how often a worker puts its presence entry.
	DefaultHeartbeat = 5 * time.Second
	// DefaultPresenceTTL is how long an entry outlives its last heartbeat:
	// six heartbeats, so a put delayed by a slow server does not make a
	// live worker vanish from `worker status`.
	DefaultPresenceTTL = 30 * time.Second
)

// PresenceEntry is what a running worker says about itself, as JSON, under
// its key in the [topology.WorkersBucket] bucket. Totals only grow, so two
// readings give the worker's throughput between them.
type PresenceEntry struct {
	Instance string `json:"instance"`
	Host     string `json:"host"`
	PID      int    `json:"pid"`
	// Version is the module version the program was built from, when the
	// build recorded one.
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	// Heartbeat is when the entry was put; HeartbeatSeconds how often it
	// is.
	Heartbeat        time.Time `json:"heartbeat"`
	HeartbeatSeconds float64   `json:"heartbeat_interval_seconds"`
	Concurrency      int       `json:"concurrency"`
	BatchSize        int       `json:"batch_size"`
	// Sources are the sources that have a pipeline; every other source
	// lands in the raw table.
	Sources []string `json:"pipeline_sources"`
	// Totals are the worker's running totals ([Worker.Stats]) at Heartbeat.
	Totals PresenceTotals `json:"totals"`
	// RecentLinesPerSec is lines settled per second since the previous
	// heartbeat, for readers that saw only this one.
	RecentLinesPerSec float64 `json:"recent_lines_per_sec"`
}

// PresenceTotals are the [Stats] a presence entry carries.
type PresenceTotals struct {
	Lines        uint64 `json:"lines"`
	Inserted     uint64 `json:"inserted"`
	Duplicates   uint64 `json:"duplicates"`
	Filtered     uint64 `json:"filtered"`
	DeadLettered uint64 `json:"dead_lettered"`
	Retried      uint64 `json:"retried"`
}

// PresenceOptions are the settings of a [Presence].
type PresenceOptions struct {
	// Heartbeat is how often the entry is put. Defaults to
	// [DefaultHeartbeat].
	Heartbeat time.Duration
	// TTL is the bucket's max age: how long the entry of a worker that
	// died without deleting it stays listed. It must exceed Heartbeat.
	// Defaults to [DefaultPresenceTTL].
	TTL time.Duration
	// Replicas is the bucket's number of replicas (INGEST_REPLICAS).
	// Defaults to 1.
	Replicas int
	// Retry is how creating the bucket waits for a cluster that cannot
	// take it yet, within one heartbeat; the zero Retry logs nothing.
	Retry topology.Retry
}

// Presence keeps a worker's entry in the [topology.WorkersBucket] bucket
// while the worker runs. JetStream lists only the fetch requests of idle
// worker loops; the entries are how `worker status` sees busy workers too.
// Create it with [NewPresence] and call [Presence.Run] once.
type Presence struct {
	js     jetstream.JetStream
	w      *Worker
	opts   PresenceOptions
	logger *slog.Logger
	key    string
	entry  PresenceEntry // the fields that do not change

	// Run's state, used by its goroutine only.
	kv        jetstream.KeyValue // nil until the bucket is ensured
	revision  uint64             // of the last successful put
	failing   bool               // the last put failed, and it was logged
	lastLines uint64
	lastAt    time.Time
}

// NewPresence returns the presence of w, kept through js. It does not touch
// the network: [Presence.Run] creates or updates the bucket.
func NewPresence(js jetstream.JetStream, w *Worker, opts PresenceOptions, logger *slog.Logger) (*Presence, error) {
	if opts.Heartbeat == 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultPresenceTTL
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Heartbeat < 0 || opts.TTL <= opts.Heartbeat {
		return nil, fmt.Errorf("presence: the TTL (%s) must exceed the heartbeat (%s), or live workers drop out of the bucket", opts.TTL, opts.Heartbeat)
	}
	host, _ := os.Hostname()
	instance := cmp.Or(w.opts.Instance, host, "worker")
	return &Presence{
		js:     js,
		w:      w,
		opts:   opts,
		logger: logger.With("component", "presence"),
		key:    PresenceKey(instance),
		entry: PresenceEntry{
			Instance:         instance,
			Host:             host,
			PID:              os.Getpid(),
			Version:          buildVersion(),
			Started:          time.Now(),
			HeartbeatSeconds: opts.Heartbeat.Seconds(),
			Concurrency:      w.opts.Concurrency,
			BatchSize:        w.opts.BatchSize,
			Sources:          w.router.Sources(),
		},
	}, nil
}

// PresenceKey returns the key of instance in the bucket: its letters,
// digits, '-' and '_', with '_' in place of anything else (a key is a
// subject token).
func PresenceKey(instance string) string {
	if instance == "" {
		return "worker"
	}
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return '_'
	}, instance)
}

// Run puts the entry at once and every heartbeat until ctx is done, then
// deletes it. Failures are logged (once until a put succeeds again) and
// never end Run, which returns nil once ctx is done: presence is for
// operators, and must not stop a worker that can store lines.
func (p *Presence) Run(ctx context.Context) error {
	t := time.NewTicker(p.opts.Heartbeat)
	defer t.Stop()
	for {
		p.beat(ctx)
		select {
		case <-ctx.Done():
			p.leave()
			return nil
		case <-t.C:
		}
	}
}

// beat puts the entry once and logs how that went, when it changed.
func (p *Presence) beat(ctx context.Context) {
	putCtx, cancel := context.WithTimeout(ctx, p.opts.Heartbeat)
	defer cancel()
	err := p.put(putCtx)
	switch {
	case err == nil && p.failing:
		p.failing = false
		p.logger.InfoContext(ctx, "presence reported again", "bucket", topology.WorkersBucket, "key", p.key)
	case err == nil, ctx.Err() != nil:
	case !p.failing:
		p.failing = true
		p.logger.WarnContext(ctx, "cannot report presence; worker status will not list this worker until it can (storing lines goes on)",
			"bucket", topology.WorkersBucket, "key", p.key, "err", err)
	}
}

func (p *Presence) put(ctx context.Context) error {
	if p.kv == nil {
		kv, err := p.opts.Retry.CreateOrUpdateKeyValue(ctx, p.js, jetstream.KeyValueConfig{
			Bucket:      topology.WorkersBucket,
			Description: "jetline: running workers, one key each, refreshed every heartbeat",
			History:     1,
			TTL:         p.opts.TTL,
			Storage:     jetstream.FileStorage,
			Replicas:    p.opts.Replicas,
		})
		if err != nil {
			return err
		}
		p.kv = kv
	}
	now, s := time.Now(), p.w.Stats()
	e := p.entry
	e.Heartbeat = now
	e.Totals = PresenceTotals{Lines: s.Lines, Inserted: s.Inserted, Duplicates: s.Duplicates, Filtered: s.Filtered, DeadLettered: s.DeadLettered, Retried: s.Retried}
	if !p.lastAt.IsZero() {
		e.RecentLinesPerSec = float64(s.Lines-p.lastLines) / now.Sub(p.lastAt).Seconds()
	}
	p.lastLines, p.lastAt = s.Lines, now
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode presence: %w", err)
	}
	rev, err := p.kv.Put(ctx, p.key, data)
	if err != nil {
		// The bucket may have been deleted: ensure it again next time.
		p.kv = nil
		return fmt.Errorf("put key %s in %s: %w", p.key, topology.WorkersBucket, err)
	}
	p.revision = rev
	return nil
}

// leave deletes the entry, so `worker status` stops listing the worker at
// once rather than after the TTL.
func (p *Presence) leave() {
	if p.kv == nil || p.revision == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.Heartbeat)
	defer cancel()
	// Only if the entry is still this process's: another one started
	// with the same instance name may have put it since.
	if err := p.kv.Delete(ctx, p.key, jetstream.LastRevision(p.revision)); err != nil {
		p.logger.Warn("cannot delete presence; the entry ages out by itself", "bucket", topology.WorkersBucket, "key", p.key, "ttl", p.opts.TTL, "err", err)
	}
}

// ErrNoPresence is returned by [ReadPresence] when the
// [topology.WorkersBucket] bucket does not exist: no worker has reported
// its presence yet.
var ErrNoPresence = errors.New("no worker has reported yet")

// ReadPresence returns the entries of the workers that reported within the
// bucket's TTL and have not stopped, by instance name. Values that are not
// presence entries are skipped. It returns [ErrNoPresence] when the bucket
// does not exist.
func ReadPresence(ctx context.Context, js jetstream.JetStream) ([]PresenceEntry, error) {
	kv, err := js.KeyValue(ctx, topology.WorkersBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, ErrNoPresence
	}
	if err != nil {
		return nil, fmt.Errorf("open key-value bucket %s: %w", topology.WorkersBucket, err)
	}
	watch, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read key-value bucket %s: %w", topology.WorkersBucket, err)
	}
	defer watch.Stop()
	var out []PresenceEntry
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case kve, ok := <-watch.Updates():
			// A nil entry ends the current values.
			if !ok || kve == nil {
				slices.SortFunc(out, func(a, b PresenceEntry) int { return strings.Compare(a.Instance, b.Instance) })
				return out, nil
			}
			var e PresenceEntry
			if err := json.Unmarshal(kve.Value(), &e); err != nil || e.Instance == "" {
				continue
			}
			out = append(out, e)
		}
	}
}

// buildVersion returns the module version the program was built from, or
// "" when the build did not record one.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "(devel)" {
		return ""
	}
	return bi.Main.Version
}
