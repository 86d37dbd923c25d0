package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

// Metric names. Dashboards and alerts use them (README.md, "Metrics"):
// renaming one breaks them.
const (
	MetricConnectionsOpen     = "jetline_gateway_connections_open"
	MetricConnectionsAccepted = "jetline_gateway_connections_accepted_total"
	MetricConnectionsRefused  = "jetline_gateway_connections_refused_total"
	MetricLinesReceived       = "jetline_gateway_lines_received_total"
	MetricBytesReceived       = "jetline_gateway_bytes_received_total"
	MetricLinesPublished      = "jetline_gateway_lines_published_total"
	MetricFramesPublished     = "jetline_gateway_frames_published_total"
	MetricLinesTooLong        = "jetline_gateway_lines_too_long_total"
	MetricLinesDeadLettered   = "jetline_gateway_lines_dead_lettered_total"
	MetricInflightLines       = "jetline_gateway_publish_inflight_lines"
	MetricInflightBytes       = "jetline_gateway_publish_inflight_bytes"
	MetricPublishLatency      = "jetline_gateway_publish_latency_seconds"
	MetricBackpressure        = "jetline_gateway_backpressure_seconds_total"
	MetricPublishRetries      = "jetline_gateway_publish_retries_total"
)

// publishLatencyBuckets span a loopback PubAck (well under a millisecond)
// to a publish held back by a full stream or a NATS failover (seconds).
var publishLatencyBuckets = prometheus.ExponentialBuckets(0.00025, 2, 17) // 250µs … 16s

// metrics are a gateway's Prometheus metrics. Counters that move per line
// are resolved per source when the gateway is made ([sourceMetrics]), so
// counting a line is an atomic add and allocates nothing. Numbers the
// gateway keeps anyway (open connections, refusals, the in-flight windows)
// are read when Prometheus scrapes instead of being counted twice.
type metrics struct {
	g *Gateway

	accepted, received, bytes, published, frames, tooLong, deadLettered *prometheus.CounterVec
	latency                                                             prometheus.Histogram
	retries                                                             prometheus.Counter
	waits                                                               waitTotal

	open, refused, inflightLines, inflightBytes, backpressure *prometheus.Desc

	sources map[string]*sourceMetrics
}

// sourceMetrics are the counters of one source's connections. Its methods
// do nothing on a nil receiver, so sessions and publishers built without a
// gateway (in tests) need no metrics. Safe for concurrent use.
type sourceMetrics struct {
	accepted, received, bytes, published, frames, tooLong prometheus.Counter
	tooLongDeadLettered                                   prometheus.Counter
	latency                                               prometheus.Observer
	retries                                               prometheus.Counter
	waits                                                 *waitTotal
}

func newMetrics(g *Gateway, listeners []Listener) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &metrics{
		g:        g,
		accepted: counter(MetricConnectionsAccepted, "Connections accepted and admitted, by listener source.", "source"),
		received: counter(MetricLinesReceived, "Lines framed from connections and handed to the publisher (blank and too long lines excluded), by source.", "source"),
		bytes:    counter(MetricBytesReceived, "Bytes read from connections, compressed if the input is, by source.", "source"),
		published: counter(MetricLinesPublished,
			"Lines acknowledged by JetStream (stored in the ingest stream, or dropped there as a duplicate of a stored line), by source.", "source"),
		frames: counter(MetricFramesPublished,
			"Frames (messages of consecutive lines of one connection) acknowledged by JetStream, by source.", "source"),
		tooLong: counter(MetricLinesTooLong,
			"Lines over the maximum line length: not published to the ingest stream, their first 64 KiB written to the dead-letter stream instead; by source.", "source"),
		deadLettered: counter(MetricLinesDeadLettered, "Dead letters the gateway wrote (acknowledged by JetStream), by reason (too_long).", "reason"),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricPublishLatency,
			Help:    "Time from publishing a frame to its acknowledgement by JetStream, retries included.",
			Buckets: publishLatencyBuckets,
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricPublishRetries,
			Help: "Publishes sent again after a failure or a timeout (same message id, stored once).",
		}),
		open: prometheus.NewDesc(MetricConnectionsOpen, "Connections open now.", nil, nil),
		refused: prometheus.NewDesc(MetricConnectionsRefused,
			"Connections refused (closed before anything was read), by reason.", []string{"reason"}, nil),
		inflightLines: prometheus.NewDesc(MetricInflightLines, "Lines published and not yet acknowledged, across all connections.", nil, nil),
		inflightBytes: prometheus.NewDesc(MetricInflightBytes, "Bytes of lines published and not yet acknowledged, across all connections.", nil, nil),
		backpressure: prometheus.NewDesc(MetricBackpressure,
			"Time connections spent not being read because their in-flight window (or the gateway-wide byte budget) was full: a slow or full stream holding senders back. Waits still going on are included.", nil, nil),
		sources: map[string]*sourceMetrics{},
	}
	tooLongDeadLettered := m.deadLettered.WithLabelValues(deadletter.ReasonTooLong)
	for _, l := range listeners {
		if _, ok := m.sources[l.Source]; ok {
			continue // a plain and a TLS listener may share a source
		}
		m.sources[l.Source] = &sourceMetrics{
			accepted:            m.accepted.WithLabelValues(l.Source),
			received:            m.received.WithLabelValues(l.Source),
			bytes:               m.bytes.WithLabelValues(l.Source),
			published:           m.published.WithLabelValues(l.Source),
			frames:              m.frames.WithLabelValues(l.Source),
			tooLong:             m.tooLong.WithLabelValues(l.Source),
			tooLongDeadLettered: tooLongDeadLettered,
			latency:             m.latency,
			waits:               &m.waits,
			retries:             m.retries,
		}
	}
	return m
}

// source returns the counters of source's connections.
func (m *metrics) source(source string) *sourceMetrics {
	if m == nil {
		return nil
	}
	return m.sources[source]
}

// Describe implements [prometheus.Collector].
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range []*prometheus.CounterVec{m.accepted, m.received, m.bytes, m.published, m.frames, m.tooLong, m.deadLettered} {
		v.Describe(ch)
	}
	m.latency.Describe(ch)
	m.retries.Describe(ch)
	ch <- m.backpressure
	ch <- m.open
	ch <- m.refused
	ch <- m.inflightLines
	ch <- m.inflightBytes
}

// Collect implements [prometheus.Collector]. The in-flight gauges sum the
// windows of the connections open at the time of the scrape, and the
// backpressure adds the waits they are in to those that have ended.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, v := range []*prometheus.CounterVec{m.accepted, m.received, m.bytes, m.published, m.frames, m.tooLong, m.deadLettered} {
		v.Collect(ch)
	}
	m.latency.Collect(ch)
	m.retries.Collect(ch)

	ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(m.g.limiter.open.Load()))
	for reason, n := range m.g.Refused() {
		ch <- prometheus.MustNewConstMetric(m.refused, prometheus.CounterValue, float64(n), reason)
	}
	var lines, bytes int64
	// Holding waits.mu keeps a wait from ending (and moving from the
	// windows to the total) while it is being added up.
	m.waits.mu.Lock()
	waited, now := m.waits.ended, monotonic()
	m.g.mu.Lock()
	for s := range m.g.active {
		if p := s.pub.Load(); p != nil {
			n, b := p.win.inflight()
			lines += n
			bytes += b
			if since := p.win.wait.since.Load(); since != 0 {
				waited += now - since
			}
		}
	}
	m.g.mu.Unlock()
	m.waits.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.inflightLines, prometheus.GaugeValue, float64(lines))
	ch <- prometheus.MustNewConstMetric(m.inflightBytes, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(m.backpressure, prometheus.CounterValue, time.Duration(waited).Seconds())
}

// Metrics returns the collector of the gateway's metrics, for a registry
// (see shared/runtime/metrics). Scrapes may run at any time, concurrently.
func (g *Gateway) Metrics() prometheus.Collector { return g.metrics }

// accept counts a connection accepted and admitted.
func (m *sourceMetrics) accept() {
	if m != nil {
		m.accepted.Inc()
	}
}

// read counts n bytes read from a connection.
func (m *sourceMetrics) read(n int) {
	if m != nil && n > 0 {
		m.bytes.Add(float64(n))
	}
}

// framed counts the lines of a frame handed to the publisher.
func (m *sourceMetrics) framed(lines int64) {
	if m != nil {
		m.received.Add(float64(lines))
	}
}

// lineTooLong counts a line skipped for its length.
func (m *sourceMetrics) lineTooLong() {
	if m != nil {
		m.tooLong.Inc()
	}
}

// acked counts a frame of lines lines acknowledged by JetStream, first
// published at sent.
func (m *sourceMetrics) acked(lines int64, sent time.Time) {
	if m != nil {
		m.published.Add(float64(lines))
		m.frames.Inc()
		m.latency.Observe(time.Since(sent).Seconds())
	}
}

// deadLetterAcked counts the dead letter of a too long line acknowledged
// by JetStream.
func (m *sourceMetrics) deadLetterAcked() {
	if m != nil {
		m.tooLongDeadLettered.Inc()
	}
}

// retry counts a publish sent again.
func (m *sourceMetrics) retry() {
	if m != nil {
		m.retries.Inc()
	}
}

// instrument makes p count its acknowledgements, retries and waits in m.
func (p *publisher) instrument(m *sourceMetrics) {
	p.metrics = m
	if m != nil {
		p.win.wait.total = m.waits
	}
}

// waitTotal is the time waits for room took, once they ended.
type waitTotal struct {
	mu    sync.Mutex
	ended int64 // nanoseconds
}

// waitClock times one window's waits for room. The reader starts it
// before it blocks and stops it when reserve returns; a scrape meanwhile
// counts the wait so far, so a sender held back for minutes shows at once.
// Stopping a clock that is not running, as every reserve does, is one
// atomic load.
type waitClock struct {
	total *waitTotal   // nil: not counted
	since atomic.Int64 // monotonic() when the wait began; 0 when not waiting
}

func (c *waitClock) start() {
	if c.total != nil {
		c.since.CompareAndSwap(0, monotonic())
	}
}

func (c *waitClock) stop() {
	if c.since.Load() == 0 {
		return
	}
	c.total.mu.Lock()
	if since := c.since.Swap(0); since != 0 {
		c.total.ended += monotonic() - since
	}
	c.total.mu.Unlock()
}

// clockBase makes [monotonic] readings positive, so 0 can mean "not
// waiting".
var clockBase = time.Now()

// monotonic returns nanoseconds on the monotonic clock, at least 1.
func monotonic() int64 { return int64(time.Since(clockBase)) + 1 }

// inflight returns the lines and bytes in the window: reserved, published
// and not yet acknowledged.
func (w *window) inflight() (lines, bytes int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines, w.bytes
}
