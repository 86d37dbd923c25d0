package gateway

import (
	"testing"
	"time"
)

// BenchmarkLineMetrics measures what the metrics add to each frame on the
// hot path: counting its lines received, stamping its publish, stopping
// the (idle) wait clock, and counting its acknowledgement with its
// latency. It must not allocate.
func BenchmarkLineMetrics(b *testing.B) {
	m := newMetrics(&Gateway{}, []Listener{{Source: "default"}}).source("default")
	var c waitClock
	c.total = m.waits
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.framed(1)
			sent := time.Now()
			c.stop()
			m.acked(1, sent)
		}
	})
}
