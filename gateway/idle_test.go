package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// BenchmarkIdleConnections opens 2,000 connections, lets them send nothing
// (or one line, then nothing), and reports what the process holds per
// connection: live heap, goroutine stacks and resident memory. The figures
// include the dialling side's net.Conn (a few hundred bytes), which lives
// in the same process. Run it with -benchtime 1x: each iteration opens and
// closes every connection.
func BenchmarkIdleConnections(b *testing.B) {
	for _, tc := range []struct {
		name  string
		first string
	}{
		{"silent", ""},
		{"after_one_line", "{\"hello\":\"world\"}\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const conns = 2000
			bb := setup(b, setupOptions{env: map[string]string{"GATEWAY_ACCEPTORS": "8"}, memory: true})
			addr := bb.addr(b, 0)
			var heap, stacks, rss float64
			for b.Loop() {
				before := memoryNow()
				open := make([]net.Conn, 0, conns)
				for range conns {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Fatal(err)
					}
					if tc.first != "" {
						if _, err := c.Write([]byte(tc.first)); err != nil {
							b.Fatal(err)
						}
					}
					open = append(open, c)
				}
				testenv.Eventually(b, time.Minute, "every connection to have its session", func() error {
					if got := gateway.OpenSessions(bb.gw); got != conns {
						return fmt.Errorf("%v, want %v", got, conns)
					}
					return nil
				})
				if tc.first != "" {
					testenv.Eventually(b, time.Minute, "every first line to be stored", func() error {
						if got := bb.lineCount(b); got < uint64(conns) {
							return fmt.Errorf("%v, want at least %v", got, uint64(conns))
						}
						return nil
					})
				}
				time.Sleep(200 * time.Millisecond) // every session blocked in its read
				during := memoryNow()
				heap += (during.heap - before.heap) / conns
				stacks += (during.stacks - before.stacks) / conns
				rss += (during.rss - before.rss) / conns
				for _, c := range open {
					c.Close()
				}
				testenv.Eventually(b, time.Minute, "every session to end", func() error {
					if got := gateway.OpenSessions(bb.gw); got != 0 {
						return fmt.Errorf("%v, want %v", got, 0)
					}
					return nil
				})
			}
			n := float64(b.N)
			b.ReportMetric(heap/n, "heap-B/conn")
			b.ReportMetric(stacks/n, "stack-B/conn")
			b.ReportMetric(rss/n, "rss-B/conn")
			b.ReportMetric(0, "ns/op")
		})
	}
}

type memory struct{ heap, stacks, rss float64 }

// memoryNow collects garbage and reads the live heap, the goroutine stacks
// and the resident set size.
func memoryNow() memory {
	runtime.GC()
	runtime.GC()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(samples)
	return memory{heap: float64(samples[0].Value.Uint64()), stacks: float64(samples[1].Value.Uint64()), rss: float64(vmRSS())}
}

// vmRSS returns the process's resident set size in bytes, or 0 where
// /proc is not available.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
