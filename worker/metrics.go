package worker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
)

// Metric names. Dashboards and alerts use them (README.md, "Metrics"):
// renaming one breaks them.
const (
	MetricBatches             = "jetline_worker_batches_total"
	MetricBatchLines          = "jetline_worker_batch_lines"
	MetricBatchFrames         = "jetline_worker_batch_frames"
	MetricLines               = "jetline_worker_lines_total"
	MetricFrames              = "jetline_worker_frames_total"
	MetricBatchDuration       = "jetline_worker_batch_duration_seconds"
	MetricSettleLatency       = "jetline_worker_settle_latency_seconds"
	MetricRowsInserted        = "jetline_worker_rows_inserted_total"
	MetricRowsDuplicate       = "jetline_worker_rows_duplicate_total"
	MetricRowsUpdated         = "jetline_worker_rows_updated_total"
	MetricRowsUnchanged       = "jetline_worker_rows_unchanged_total"
	MetricRowsDeleted         = "jetline_worker_rows_deleted_total"
	MetricRowsSuppressed      = "jetline_worker_rows_suppressed_total"
	MetricLinesFiltered       = "jetline_worker_lines_filtered_total"
	MetricLinesDeadLettered   = "jetline_worker_lines_dead_lettered_total"
	MetricLinesRetried        = "jetline_worker_lines_retried_total"
	MetricStoreFailures       = "jetline_worker_store_failures_total"
	MetricConsumerPending     = "jetline_worker_consumer_pending"
	MetricConsumerAckPending  = "jetline_worker_consumer_ack_pending"
	MetricConsumerRedelivered = "jetline_worker_consumer_redelivered"
	MetricStreamMessages      = "jetline_stream_messages"
	MetricStreamBytes         = "jetline_stream_bytes"
)

// Values of the outcome label of [MetricBatches].
const (
	batchStored = "stored"
	batchFailed = "failed"
)

// JetStream state is asked for at most every jetstreamStateCacheFor, and
// given jetstreamStateTimeout to answer, so that a scrape stays quick.
const (
	jetstreamStateCacheFor = 5 * time.Second
	jetstreamStateTimeout  = 2 * time.Second
)

// commonDeadLetterReasons are reported from the start, at 0, so that
// rate() and increase() see the first dead letter of each.
var commonDeadLetterReasons = []string{ReasonInvalidJSON, deadletter.ReasonMaxDeliveries}

// batchDurationBuckets span a small batch on an idle database (a few
// milliseconds) to one that waits on locks or a slow disk (tens of
// seconds, near the ack wait).
var batchDurationBuckets = prometheus.ExponentialBuckets(0.001, 2, 16) // 1ms … 33s

// settleLatencyBuckets span a lone line on an idle pipeline (a few
// milliseconds) to a backlog worked off for minutes, each half again the
// one before, so that a quantile read from them is within a quarter.
var settleLatencyBuckets = prometheus.ExponentialBuckets(0.001, 1.5, 32) // 1ms … 291s

// metrics are a worker's Prometheus metrics. Counting happens once per
// batch, never per line: what [Worker.Stats] already counts is read at
// scrape time, and the rest is resolved per route when the worker is made.
type metrics struct {
	w *Worker

	batchStored, batchFailed prometheus.Counter
	batches                  *prometheus.CounterVec
	batchLines, batchFrames  prometheus.Histogram
	batchDuration            prometheus.Histogram
	settleLatency            prometheus.Histogram
	inserted, duplicates     *prometheus.CounterVec
	updated, unchanged       *prometheus.CounterVec
	deleted, suppressed      *prometheus.CounterVec
	filtered                 *prometheus.CounterVec
	storeFailures            *prometheus.CounterVec

	// Per route index: its tables' row counters, and for routes of their
	// own the source they filter.
	tables     [][]tableMetrics
	filteredBy []prometheus.Counter
	failedBy   map[Class]prometheus.Counter

	lines, frames, retried, deadLettered *prometheus.Desc

	js *jetstreamState
}

func newMetrics(w *Worker, router *Router) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &metrics{
		w:       w,
		batches: counter(MetricBatches, "Batches finished: stored (every table committed, frames acknowledged) or failed (a store failed; its frames were handed back).", "outcome"),
		batchLines: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricBatchLines,
			Help:    "Lines per batch.",
			Buckets: prometheus.ExponentialBucketsRange(1, 100000, 17),
		}),
		batchFrames: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricBatchFrames,
			Help:    "Frames (messages) per batch.",
			Buckets: prometheus.ExponentialBucketsRange(1, 10000, 15),
		}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricBatchDuration,
			Help:    "Time from a batch being taken to its frames being settled (split, transform, store, commit, dead letters, ack).",
			Buckets: batchDurationBuckets,
		}),
		settleLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricSettleLatency,
			Help:    "Time from the gateway reading a frame's first line (Jetline-Received-At; for another program's message, JetStream's timestamp) to the frame being settled: every line stored, filtered or dead-lettered, and the frame acknowledged. Across hosts it includes their clocks' difference.",
			Buckets: settleLatencyBuckets,
		}),
		inserted:      counter(MetricRowsInserted, "Rows newly stored, by table.", "table"),
		duplicates:    counter(MetricRowsDuplicate, "Rows skipped because their key was already stored (a redelivered or re-sent line), by table.", "table"),
		updated:       counter(MetricRowsUpdated, "Rows that replaced the stored row of their key (on_conflict: update), by table.", "table"),
		unchanged:     counter(MetricRowsUnchanged, "Rows of a table with on_conflict: update that replaced nothing: the stored row's version was not older, or a newer row of the same batch won, by table.", "table"),
		deleted:       counter(MetricRowsDeleted, "Rows deleted by a delete entry, by table.", "table"),
		suppressed:    counter(MetricRowsSuppressed, "Rows dropped because their key was deleted (it has a tombstone), by table.", "table"),
		filtered:      counter(MetricLinesFiltered, "Lines a pipeline's filter dropped, by source.", "source"),
		storeFailures: counter(MetricStoreFailures, "Failed attempts to store a batch's rows of one table, by class (transient: retried soon; permanent: fix the cause).", "class"),
		lines: prometheus.NewDesc(MetricLines,
			"Lines settled: stored (or found stored), filtered, rejected or dead-lettered.", nil, nil),
		frames: prometheus.NewDesc(MetricFrames,
			"Frames (messages of one line or more) settled: acknowledged or terminated once every line was.", nil, nil),
		retried: prometheus.NewDesc(MetricLinesRetried,
			"Lines negatively acknowledged for redelivery after a failed store or a failed dead letter.", nil, nil),
		deadLettered: prometheus.NewDesc(MetricLinesDeadLettered,
			"Lines the worker wrote to the dead-letter stream and terminated, by reason.", []string{"reason"}, nil),
		failedBy: map[Class]prometheus.Counter{},
	}
	m.batchStored = m.batches.WithLabelValues(batchStored)
	m.batchFailed = m.batches.WithLabelValues(batchFailed)
	for _, c := range []Class{Transient, RowData, Permanent} {
		m.failedBy[c] = m.storeFailures.WithLabelValues(c.String())
	}
	for i, r := range router.routes {
		var ts []tableMetrics
		for _, t := range r.Transform.Tables() {
			table := strings.Join(t.Ident(), ".")
			tm := tableMetrics{inserted: m.inserted.WithLabelValues(table), duplicates: m.duplicates.WithLabelValues(table)}
			switch {
			case t.Delete:
				tm = tableMetrics{deleted: m.deleted.WithLabelValues(table)}
			case t.Update:
				tm.updated, tm.unchanged = m.updated.WithLabelValues(table), m.unchanged.WithLabelValues(table)
			}
			if t.Tombstones {
				tm.suppressed = m.suppressed.WithLabelValues(table)
			}
			ts = append(ts, tm)
		}
		m.tables = append(m.tables, ts)
		if i == 0 {
			// The default route takes every source without a route of
			// its own; the raw landing never filters.
			m.filteredBy = append(m.filteredBy, nil)
			continue
		}
		m.filteredBy = append(m.filteredBy, m.filtered.WithLabelValues(router.sources[i-1]))
	}
	return m
}

// Describe implements [prometheus.Collector].
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
	ch <- m.lines
	ch <- m.frames
	ch <- m.retried
	ch <- m.deadLettered
	if m.js != nil {
		m.js.Describe(ch)
	}
}

// Collect implements [prometheus.Collector].
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
	s := m.w.Stats()
	ch <- prometheus.MustNewConstMetric(m.lines, prometheus.CounterValue, float64(s.Lines))
	ch <- prometheus.MustNewConstMetric(m.frames, prometheus.CounterValue, float64(s.Frames))
	ch <- prometheus.MustNewConstMetric(m.retried, prometheus.CounterValue, float64(s.Retried))
	for _, reason := range commonDeadLetterReasons {
		if _, ok := s.DeadLetteredBy[reason]; !ok {
			ch <- prometheus.MustNewConstMetric(m.deadLettered, prometheus.CounterValue, 0, reason)
		}
	}
	for reason, n := range s.DeadLetteredBy {
		ch <- prometheus.MustNewConstMetric(m.deadLettered, prometheus.CounterValue, float64(n), reason)
	}
	if m.js != nil {
		m.js.Collect(ch)
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.batches, m.batchLines, m.batchFrames, m.batchDuration, m.settleLatency,
		m.inserted, m.duplicates, m.updated, m.unchanged, m.deleted, m.suppressed, m.filtered, m.storeFailures}
}

// Metrics returns the collector of the worker's metrics, for a registry
// (see shared/runtime/metrics). Besides the worker's own counts it reports the
// shared consumer's state and the sizes of the ingest and dead-letter
// streams, asked of JetStream through js at most every 5 seconds (every
// worker reports the same numbers; take their max). js may be nil to leave
// those out. Call it once, before [Worker.Run].
func (w *Worker) Metrics(js jetstream.JetStream) prometheus.Collector {
	w.metrics.js = newJetstreamState(w.cons, js, w.logger)
	return w.metrics
}

// stored counts what a store of route r's rows wrote.
func (m *metrics) stored(r int, wr WriteResult) {
	if m == nil {
		return
	}
	for t, c := range wr.Tables {
		m.tables[r][t].add(c)
	}
}

// tableMetrics are the row counters of one table of a route; those its
// kind of table cannot move are nil.
type tableMetrics struct {
	inserted, duplicates, updated, unchanged, deleted, suppressed prometheus.Counter
}

func (tm *tableMetrics) add(c TableCounts) {
	for _, x := range []struct {
		c prometheus.Counter
		n int
	}{{tm.inserted, c.Inserted}, {tm.duplicates, c.Duplicates}, {tm.updated, c.Updated}, {tm.unchanged, c.Unchanged}, {tm.deleted, c.Deleted}, {tm.suppressed, c.Suppressed}} {
		if x.c != nil && x.n > 0 {
			x.c.Add(float64(x.n))
		}
	}
}

// settled observes the latency of a frame settled now whose first line
// the gateway read at receivedAt.
func (m *metrics) settled(receivedAt time.Time) {
	if m != nil {
		m.settleLatency.Observe(time.Since(receivedAt).Seconds())
	}
}

// batchDone counts the batch in b once its lines are settled: its outcome,
// size, how long it took since the fetch completed, the lines each
// pipeline filtered and the class of each store that failed. complete says
// whether every table's rows were stored.
func (m *metrics) batchDone(b *batch, complete bool) {
	if m == nil {
		return
	}
	if complete {
		m.batchStored.Inc()
	} else {
		m.batchFailed.Inc()
	}
	m.batchLines.Observe(float64(len(b.items)))
	m.batchFrames.Observe(float64(len(b.frames)))
	m.batchDuration.Observe(time.Since(b.taken).Seconds())
	for i := range b.items {
		it := &b.items[i]
		if it.result.Outcome != Filter || b.frames[it.frame].handedBack {
			continue
		}
		if c := m.filteredBy[b.frames[it.frame].route]; c != nil {
			c.Inc()
		} else {
			// Not the raw landing's doing; count it under its source.
			m.filtered.WithLabelValues(it.line.Source).Inc()
		}
	}
	for _, g := range b.groups {
		if g.err != nil {
			m.failedBy[Classify(g.err)].Inc()
		}
	}
}

// jetstreamState reports the shared consumer's state and the streams'
// sizes. JetStream is asked at scrape time, at most every
// jetstreamStateCacheFor, so many workers scraped often do not load the
// server; a scrape that cannot ask in time leaves the numbers out rather
// than repeat stale ones.
type jetstreamState struct {
	cons   jetstream.Consumer
	js     jetstream.JetStream
	logger *slog.Logger

	pending, ackPending, redelivered, messages, bytes *prometheus.Desc

	mu      sync.Mutex
	at      time.Time
	metrics []prometheus.Metric
}

func newJetstreamState(cons jetstream.Consumer, js jetstream.JetStream, logger *slog.Logger) *jetstreamState {
	stream := []string{"stream"}
	return &jetstreamState{
		cons: cons, js: js, logger: logger,
		pending: prometheus.NewDesc(MetricConsumerPending,
			"Frames (messages) in the ingest stream not yet delivered to any worker (the consumer's lag).", nil, nil),
		ackPending: prometheus.NewDesc(MetricConsumerAckPending,
			"Frames delivered to workers and not yet acknowledged (being stored, or waiting for redelivery).", nil, nil),
		redelivered: prometheus.NewDesc(MetricConsumerRedelivered,
			"Lines not yet acknowledged that were delivered more than once.", nil, nil),
		messages: prometheus.NewDesc(MetricStreamMessages, "Messages in a JetStream stream (INGEST, INGEST_DLQ).", stream, nil),
		bytes:    prometheus.NewDesc(MetricStreamBytes, "Bytes in a JetStream stream (INGEST, INGEST_DLQ).", stream, nil),
	}
}

// Describe implements [prometheus.Collector].
func (s *jetstreamState) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.pending
	ch <- s.ackPending
	ch <- s.redelivered
	ch <- s.messages
	ch <- s.bytes
}

// Collect implements [prometheus.Collector].
func (s *jetstreamState) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) >= jetstreamStateCacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), jetstreamStateTimeout)
		s.metrics = s.read(ctx)
		cancel()
		s.at = time.Now()
	}
	for _, m := range s.metrics {
		ch <- m
	}
}

// read asks JetStream for the consumer's and the streams' state. What it
// cannot learn in time (NATS down, a stream not created yet) it leaves out.
func (s *jetstreamState) read(ctx context.Context) []prometheus.Metric {
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v uint64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...))
	}
	if s.cons != nil {
		if ci, err := s.cons.Info(ctx); err == nil {
			gauge(s.pending, ci.NumPending)
			gauge(s.ackPending, uint64(ci.NumAckPending))
			gauge(s.redelivered, uint64(ci.NumRedelivered))
		} else {
			s.logger.Debug("metrics: reading consumer info", "err", err)
		}
	}
	if s.js == nil {
		return out
	}
	for _, name := range []string{topology.StreamName, deadletter.StreamName} {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			s.logger.Debug("metrics: reading stream info", "stream", name, "err", err)
			continue
		}
		info := st.CachedInfo()
		gauge(s.messages, info.State.Msgs, name)
		gauge(s.bytes, info.State.Bytes, name)
	}
	return out
}
