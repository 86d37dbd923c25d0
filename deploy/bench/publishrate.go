package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/shared/contract/topology"
)

// The raw publish goes to a stream of its own, deleted afterwards so the
// end-to-end run starts on an empty server. A stream queues at most
// 100,000 unstored messages (nats-server's default) and refuses more with
// 429; the gateway's window counts lines, which it sends as a few frames,
// but the raw publishers send a message per line, so they hold at most
// rawQueueMsgs in flight together. No acknowledgement comes near
// rawAckTimeout on an idle local server. stampEvery lines share one
// Jetline-Received-At value, as lines of one read do in the gateway.
const (
	rawStream     = "BENCH_RAW"
	rawSubject    = "bench-raw." + topology.DefaultSource
	rawInstance   = "bench-raw"
	rawQueueMsgs  = 50_000
	rawAckTimeout = 30 * time.Second
	stampEvery    = 64
)

// rate is the outcome of moving some lines: how many, their payload bytes
// (without newlines), in how long, and for the references the CPU time of
// what did it (the bench process for the raw publish, Postgres for the
// bare COPY, xz for its floor) and the machine's CPU busy share.
type rate struct {
	Lines        int     `json:"lines"`
	PayloadBytes int64   `json:"payload_bytes"`
	Seconds      float64 `json:"seconds"`
	LinesPerSec  float64 `json:"lines_per_sec"`
	MiBPerSec    float64 `json:"mib_per_sec"`
	CPUSeconds   float64 `json:"cpu_seconds,omitempty"`
	BusyPct      float64 `json:"machine_busy_pct,omitempty"`
}

// newRate returns the rate of lines lines of bytes bytes in d.
func newRate(lines int, bytes int64, d time.Duration) rate {
	secs := d.Seconds()
	r := rate{Lines: lines, PayloadBytes: bytes, Seconds: secs}
	if secs > 0 {
		r.LinesPerSec = float64(lines) / secs
		r.MiBPerSec = float64(bytes) / secs / (1 << 20)
	}
	return r
}

// window is the gateway's per-connection in-flight limit, which the raw
// publishers apply too, for the same pipelining.
type window struct {
	Messages int   `json:"messages"`
	Bytes    int64 `json:"bytes"`
}

// measureRaw measures what end to end is compared with: the raw
// JetStream publish rate of the corpus, and with a dump its `xz -dc` floor.
func measureRaw(ctx context.Context, b *bench) error {
	c, conns, win := b.corpus, b.cfg.Conns, b.report.Setup.RawWindow
	win.Messages = min(win.Messages, rawQueueMsgs/conns)
	b.pr.step("raw publish: %s lines from %d publishers, at most %d lines / %s in flight each",
		thousands(int64(c.Len())), conns, win.Messages, mib(win.Bytes))
	settle()
	raw, err := measurePublish(ctx, b.h.nc, c, conns, win)
	if err != nil {
		return fmt.Errorf("raw publish: %w", err)
	}
	b.report.Raw = raw
	b.pr.step("raw publish: %s lines/s, %.1f MiB/s in %.1fs", thousands(int64(raw.LinesPerSec)), raw.MiBPerSec, raw.Seconds)
	if d := b.dump; d != nil {
		settle()
		if err := d.measureFloor(ctx, c); err != nil {
			return err
		}
		b.pr.step("floor: xz -dc %s > /dev/null: %.1f MiB/s of decompressed output in %.2fs", mib(d.Bytes), d.Floor.MiBPerSec, d.Floor.Seconds)
	}
	return nil
}

// measurePublish publishes every line of c into a fresh stream configured
// like the ingest stream, from conns publishers on one NATS connection as
// the gateway's sessions do, waits for every acknowledgement, checks the
// stream holds every line and deletes it.
func measurePublish(ctx context.Context, nc *nats.Conn, c *corpus, conns int, win window) (_ *rate, err error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(conns*win.Messages), jetstream.WithPublishAsyncTimeout(rawAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	sc := topology.StreamConfig{MaxBytes: max(10<<30, 2*int64(len(c.data))), DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}.Stream()
	sc.Name, sc.Subjects, sc.Description = rawStream, []string{rawSubject}, "jetline bench: raw publish rate"
	stream, err := js.CreateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", rawStream, err)
	}
	defer func() {
		if derr := js.DeleteStream(context.WithoutCancel(ctx), rawStream); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete stream %s: %w", rawStream, derr))
		}
	}()
	before, err := sampleUsage(nil, nil)
	if err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range c.Split(conns) {
		g.Go(func() error { return publishSpan(gctx, js, c, s, strconv.Itoa(i+1), win) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	after, err := sampleUsage(nil, nil)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", rawStream, err)
	}
	if info.State.Msgs != uint64(c.Len()) {
		return nil, fmt.Errorf("stream %s holds %d messages after %d acknowledged publishes", rawStream, info.State.Msgs, c.Len())
	}
	res := newRate(c.Len(), c.PayloadBytes(), after.at.Sub(before.at))
	res.CPUSeconds = (after.cpu[benchProcName] - before.cpu[benchProcName]).Seconds()
	res.BusyPct, _ = busy(before.machine, after.machine)
	return &res, nil
}

// publishSpan publishes the lines of s as the gateway's connection conn
// would: asynchronously with its headers, at most win in flight,
// acknowledgements taken in order.
func publishSpan(ctx context.Context, js jetstream.JetStream, c *corpus, s span, conn string, win window) error {
	type pending struct {
		ack  jetstream.PubAckFuture
		size int64
		line int
	}
	inflight := make(chan pending, win.Messages)
	var bytes int64
	await := func() error {
		p := <-inflight
		bytes -= p.size
		select {
		case <-p.ack.Ok():
			return nil
		case err := <-p.ack.Err():
			return fmt.Errorf("publish line %d of publisher %s: %w", p.line, conn, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var stamp []string
	for k := range s.N {
		data := c.Line(s.First + k)
		for len(inflight) == win.Messages || (len(inflight) > 0 && bytes+int64(len(data)) > win.Bytes) {
			if err := await(); err != nil {
				return err
			}
		}
		if k%stampEvery == 0 {
			stamp = []string{time.Now().UTC().Format(time.RFC3339Nano)}
		}
		line := strconv.Itoa(k + 1)
		ack, err := js.PublishMsgAsync(&nats.Msg{Subject: rawSubject, Data: data, Header: nats.Header{
			topology.HeaderMsgID: {rawInstance + "." + conn + "." + line}, topology.HeaderGateway: {rawInstance},
			topology.HeaderConn: {conn}, topology.HeaderLine: {line}, topology.HeaderReceivedAt: stamp,
		}})
		if err != nil {
			return fmt.Errorf("publish line %d of publisher %s: %w", k+1, conn, err)
		}
		inflight <- pending{ack: ack, size: int64(len(data)), line: k + 1}
		bytes += int64(len(data))
	}
	for len(inflight) > 0 {
		if err := await(); err != nil {
			return err
		}
	}
	return nil
}
