package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/model"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/devkit/tweetgen"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/worker"
)

const (
	// promScrapeInterval is the test's scrape interval: short, so that a
	// few seconds of traffic give every rate() several samples.
	promScrapeInterval = time.Second
	// promMaxLineBytes is the gateway's GATEWAY_MAX_LINE_BYTES: above a
	// generated tweet (about 6 KB), below the line sent to be too long.
	promMaxLineBytes = 16 << 10
	// Traffic: rounds of one connection per source, a pause apart, so the
	// rates have samples while lines flow and the histograms have
	// observations in several windows.
	promRounds     = 8
	promRoundPause = 400 * time.Millisecond
	promRawLines   = 200 // valid lines per round on the raw source
	promTweets     = 60  // tweets per round on the tweets source
	promResent     = 10  // of them, sent again the round after: duplicates
)

// TestPrometheusEvaluatesEveryQuery runs a real Prometheus scraping a
// gateway and two workers while lines of every kind flow through them (raw
// lines, a pipeline's kept, filtered and re-sent lines, invalid lines that
// become dead letters, lines too long), then evaluates every panel query of
// every provisioned dashboard, and the PromQL of the README's Metrics
// section, through Prometheus's HTTP API. A query that returns no data is a
// broken panel. Once the stream is drained, the README's two sides of the
// accounting identity must be equal: none of the approximations the README
// lists happens here (no restart, replay, lost acknowledgement or resend of
// an unacknowledged line), and the in-flight estimate is 0.
func TestPrometheusEvaluatesEveryQuery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts Prometheus, a gateway and workers; skipped with -short")
	}
	promBin := testenv.Prometheus(t)
	dashboards := loadDashboards(t)
	readme := readmePromQL(t)
	gatewayBin, workerBin := buildPrograms(t)
	tweetsSpec, err := filepath.Abs("pipelines/tweets.yaml")
	if err != nil {
		t.Fatal(err)
	}

	natsURL := testenv.NATS(t).ClientURL()
	dsn := testenv.Postgres(t)
	common := map[string]string{"NATS_URL": natsURL, "LOG_FORMAT": "json", "LOG_LEVEL": "warn"}

	rawAddr, tweetsAddr, gwHealth := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	gw := startProgram(t, "gateway", gatewayBin, nil, common, map[string]string{
		"GATEWAY_LISTEN":         rawAddr + ",tweets=" + tweetsAddr,
		"GATEWAY_HEALTH_ADDR":    gwHealth,
		"GATEWAY_MAX_LINE_BYTES": strconv.Itoa(promMaxLineBytes),
	})
	gw.waitReady(t, "http://"+gwHealth+"/readyz")
	targets := map[string][]string{"gateway": {gwHealth}}
	for i := range 2 {
		addr := testenv.FreeAddr(t)
		name := fmt.Sprintf("worker-%d", i+1)
		w := startProgram(t, name, workerBin, nil, common, map[string]string{
			"DATABASE_URL":       dsn,
			"WORKER_PIPELINES":   tweetsSpec,
			"WORKER_HEALTH_ADDR": addr,
			"WORKER_INSTANCE":    name,
		})
		w.waitReady(t, "http://"+addr+"/readyz")
		targets["worker"] = append(targets["worker"], addr)
	}
	prom := startPrometheus(t, promBin, targets)

	start := time.Now()
	stored := sendTraffic(t, rawAddr, tweetsAddr)
	end := time.Now()
	t.Logf("sent %d lines stored by the gateway in %s", stored, end.Sub(start).Round(time.Millisecond))
	waitDrained(t, natsURL)

	// Prometheus may take a few seconds to see the drained state: the
	// workers read the consumer's and the streams' gauges at most every 5 s.
	db, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	var rows int64
	if err := db.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM tweets)").Scan(&rows); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "Prometheus to show the accounting identity", func() error {
		err := prom.accounting(t.Context(), readme[0], readme[1], stored, rows)
		if err != nil {
			time.Sleep(250 * time.Millisecond) // Prometheus scrapes every second
		}
		return err
	})
	for i, q := range readme {
		prom.checkData(t, fmt.Sprintf("README promql block %d", i+1), q, start, time.Now())
	}

	rangeEnd := time.Now()
	for file, d := range dashboards {
		for _, pn := range flattenPanels(d.Panels) {
			for _, target := range pn.Targets {
				where := fmt.Sprintf("%s: panel %q", filepath.Base(file), pn.Title)
				expr, err := substituteGrafanaVariables(target.Expr, promScrapeInterval, rangeEnd.Sub(start))
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				prom.checkData(t, where, expr, start, rangeEnd)
			}
		}
	}
}

// accounting evaluates, at the current time, the README's two sides of the
// accounting identity (received and settled) and the counters that can be
// held against the ground: the lines the receipts count stored, the rows
// in the tables, and the dead-letter stream, whose size the workers read
// from JetStream. It returns nil once all agree.
func (s *promServer) accounting(ctx context.Context, received, settled string, stored, rows int64) error {
	queries := []string{
		received,
		settled,
		fmt.Sprintf("sum(%s)", worker.MetricRowsInserted),
		fmt.Sprintf("max(%s{stream=%q})", worker.MetricStreamMessages, deadletter.StreamName),
		fmt.Sprintf("sum(%s) + sum(%s)", worker.MetricLinesDeadLettered, gateway.MetricLinesDeadLettered),
	}
	now := time.Now()
	v := make([]float64, len(queries))
	for i, q := range queries {
		var err error
		if v[i], err = s.number(ctx, q, now); err != nil {
			return err
		}
	}
	switch in, out, inserted, dlq, letters := v[0], v[1], v[2], v[3], v[4]; {
	case in != float64(stored):
		return fmt.Errorf("lines received = %v, the receipts count %d lines stored", in, stored)
	case out != in:
		return fmt.Errorf("lines received = %v, but settled + in flight = %v", in, out)
	case inserted != float64(rows):
		return fmt.Errorf("rows inserted = %v, the tables hold %d rows", inserted, rows)
	case dlq != letters:
		return fmt.Errorf("the workers report %v messages in %s, the programs counted %v dead letters", dlq, deadletter.StreamName, letters)
	}
	return nil
}

// flattenPanels returns the panels that query: rows' panels included, rows
// themselves left out.
func flattenPanels(panels []panel) []panel {
	var out []panel
	for _, pn := range panels {
		if pn.Type != "row" {
			out = append(out, pn)
		}
		out = append(out, flattenPanels(pn.Panels)...)
	}
	return out
}

// anyVariable matches a Grafana variable left in a query.
var anyVariable = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*`)

// substituteGrafanaVariables replaces Grafana's interval variables as
// Grafana does for a panel whose query step is the scrape interval:
// $__interval is the step, $__rate_interval is max($__interval + scrape
// interval, 4 × scrape interval), and $__range the time range shown. A
// dashboard variable ($instance, …) is an error, until the test learns
// what to put for it.
func substituteGrafanaVariables(expr string, scrape, rng time.Duration) (string, error) {
	values := map[string]string{
		"__interval":      model.Duration(scrape).String(),
		"__rate_interval": model.Duration(max(scrape+scrape, 4*scrape)).String(),
		"__range":         model.Duration(rng.Round(time.Second)).String(),
	}
	out := grafanaVariables.ReplaceAllStringFunc(expr, func(v string) string {
		return values[strings.Trim(v, "${}")]
	})
	if v := anyVariable.FindString(out); v != "" {
		return "", fmt.Errorf("query %q uses the variable %s, which the test does not substitute", expr, v)
	}
	return out, nil
}

// readmePromQL returns the queries of the README Metrics section's promql
// blocks, in order.
func readmePromQL(t *testing.T) []string {
	t.Helper()
	blocks := strings.Split(readmeMetrics(t), "```promql\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("README's Metrics section has no promql block")
	}
	var out []string
	for i, b := range blocks {
		query, _, ok := strings.Cut(b, "```")
		if !ok {
			t.Fatalf("promql block %d is not closed", i+1)
		}
		out = append(out, query)
	}
	if len(out) < 2 {
		t.Fatalf("README's Metrics section has %d promql blocks; want the two sides of the accounting identity first", len(out))
	}
	return out
}

// buildPrograms builds the gateway and the worker into the test's
// temporary directory, with -race if this test binary has it.
func buildPrograms(t *testing.T) (gatewayBin, workerBin string) {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	args = append(args, "github.com/jetline/jetline/gateway/cmd/gateway", "github.com/jetline/jetline/worker/cmd/worker")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return filepath.Join(dir, "gateway"), filepath.Join(dir, "worker")
}

// program is a process the test started: a gateway, a worker or
// Prometheus. It is stopped when the test ends, and its output logged if
// the test failed.
type program struct {
	name   string
	proc   *childproc.Process
	output testenv.Buffer
}

// startProgram starts path with args and exactly the environments envs
// (plus PATH), in its own process group (see [childproc.Start]).
func startProgram(t *testing.T, name, path string, args []string, envs ...map[string]string) *program {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, env := range envs {
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	p := &program{name: name}
	var err error
	p.proc, err = childproc.Start(cmd, func(r io.Reader) { _, _ = io.Copy(&p.output, r) })
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := p.proc.Terminate(context.Background(), 20*time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			out := p.output.String()
			t.Logf("---- %s output (last 16 KiB):\n%s", name, out[max(0, len(out)-16<<10):])
		}
	})
	return p
}

// waitReady waits until url answers 200, failing the test if the program
// exits first.
func (p *program) waitReady(t *testing.T, url string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, p.name+" to answer "+url, func() error {
		select {
		case <-p.proc.Done():
			t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.proc.Err(), p.output.String())
		default:
		}
		return health.Probe(url, time.Second)
	})
}

// promServer is a running Prometheus and its HTTP API.
type promServer struct {
	base string // http://host:port
}

// startPrometheus starts Prometheus with its configuration and storage in
// a temporary directory, scraping the /metrics of targets (addresses by
// job name) every [promScrapeInterval], and waits until it has scraped
// every target once.
func startPrometheus(t *testing.T, bin string, targets map[string][]string) *promServer {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: %s\n  scrape_timeout: %[1]s\nscrape_configs:\n", model.Duration(promScrapeInterval))
	n := 0
	for job, addrs := range targets {
		quoted, _ := json.Marshal(addrs) // YAML takes a JSON list
		fmt.Fprintf(&cfg, "  - job_name: %q\n    static_configs:\n      - targets: %s\n", job, quoted)
		n += len(addrs)
	}
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	p := startProgram(t, "prometheus", bin, []string{
		"--config.file=" + config,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--log.level=warn",
	})
	p.waitReady(t, "http://"+addr+"/-/ready")
	s := &promServer{base: "http://" + addr}
	testenv.Eventually(t, 30*time.Second, "Prometheus to scrape every target", func() error {
		up, err := s.number(t.Context(), "sum(up)", time.Now())
		if err == nil && up != float64(n) {
			err = fmt.Errorf("%v of %d targets up", up, n)
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
		return err
	})
	return s
}

// query evaluates expr at ts through /api/v1/query, or, with step > 0,
// from ts to end through /api/v1/query_range, as a Grafana panel does.
func (s *promServer) query(ctx context.Context, expr string, ts, end time.Time, step time.Duration) (model.Value, error) {
	path, form := "/api/v1/query", url.Values{"query": {expr}}
	unix := func(t time.Time) string { return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', 3, 64) }
	if step > 0 {
		path = "/api/v1/query_range"
		form.Set("start", unix(ts))
		form.Set("end", unix(end))
		form.Set("step", step.String())
	} else {
		form.Set("time", unix(ts))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query prometheus: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&body); err != nil {
		return nil, fmt.Errorf("decode prometheus's answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s: %s", body.ErrorType, body.Error)
	}
	var v model.Value
	switch body.Data.ResultType {
	case "vector":
		v = &model.Vector{}
	case "matrix":
		v = &model.Matrix{}
	case "scalar":
		v = &model.Scalar{}
	default:
		return nil, fmt.Errorf("prometheus answered a %q", body.Data.ResultType)
	}
	if err := json.Unmarshal(body.Data.Result, v); err != nil {
		return nil, fmt.Errorf("decode prometheus's %s: %w", body.Data.ResultType, err)
	}
	return v, nil
}

// number evaluates expr at ts and returns its one value.
func (s *promServer) number(ctx context.Context, expr string, ts time.Time) (float64, error) {
	v, err := s.query(ctx, expr, ts, time.Time{}, 0)
	if err != nil {
		return 0, err
	}
	switch v := v.(type) {
	case *model.Scalar:
		return float64(v.Value), nil
	case *model.Vector:
		if len(*v) == 1 {
			return float64((*v)[0].Value), nil
		}
		return 0, fmt.Errorf("%q returned %d series, want 1", expr, len(*v))
	}
	return 0, fmt.Errorf("%q returned a %s, want a number", expr, v.Type())
}

// checkData fails the test unless expr returns data: a series at end
// (/api/v1/query), and a number, not NaN, at one step at least from start
// to end (/api/v1/query_range, as a Grafana panel plots it).
func (s *promServer) checkData(t *testing.T, where, expr string, start, end time.Time) {
	t.Helper()
	instant, err := s.query(t.Context(), expr, end, time.Time{}, 0)
	if err != nil {
		t.Errorf("%s: query %q: %v", where, expr, err)
		return
	}
	if series(instant) == 0 {
		t.Errorf("%s: query %q returns no series: a broken panel", where, expr)
		return
	}
	ranged, err := s.query(t.Context(), expr, start, end, promScrapeInterval)
	if err != nil {
		t.Errorf("%s: query %q over the traffic: %v", where, expr, err)
		return
	}
	if numbers(ranged) == 0 {
		t.Errorf("%s: query %q returns no number (only NaN or nothing) at any step of the %s of traffic: a broken panel",
			where, expr, end.Sub(start).Round(time.Second))
	}
}

// series returns the number of series in v (1 for a scalar).
func series(v model.Value) int {
	switch v := v.(type) {
	case *model.Vector:
		return len(*v)
	case *model.Matrix:
		return len(*v)
	case *model.Scalar:
		return 1
	}
	return 0
}

// numbers returns how many values in v are finite numbers.
func numbers(v model.Value) int {
	finite := func(f model.SampleValue) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }
	n := 0
	switch v := v.(type) {
	case *model.Vector:
		for _, s := range *v {
			if finite(s.Value) {
				n++
			}
		}
	case *model.Matrix:
		for _, ss := range *v {
			for _, p := range ss.Values {
				if finite(p.Value) {
					n++
				}
			}
		}
	case *model.Scalar:
		if finite(v.Value) {
			n++
		}
	}
	return n
}

// sendTraffic sends [promRounds] rounds of lines, [promRoundPause] apart:
// on the raw source valid lines, invalid ones (dead letters), a blank line
// and one too long; on the tweets source generated tweets, some of which
// the pipeline filters, the first of the previous round's again (duplicate
// rows) and an invalid line. It returns the lines the receipts count stored.
func sendTraffic(t *testing.T, rawAddr, tweetsAddr string) (stored int64) {
	t.Helper()
	var resend [][]byte
	for round := range promRounds {
		if round > 0 {
			time.Sleep(promRoundPause)
		}
		var raw []byte
		for i := range promRawLines {
			raw = fmt.Appendf(raw, `{"id":"r%d-%d","round":%d}`+"\n", round, i, round)
			if i%20 == 0 {
				raw = fmt.Appendf(raw, `{"id":"bad%d-%d","text":"unterminated`+"\n", round, i)
			}
		}
		raw = append(raw, '\n')
		raw = append(raw, `{"id":"long","pad":"`...)
		raw = append(raw, strings.Repeat("x", promMaxLineBytes)...)
		raw = append(raw, "\"}\n"...)
		r := send(t, rawAddr, raw)
		if r.TooLong != 1 || r.DeadLettered != 1 {
			t.Fatalf("raw round %d: receipt counts %d too long lines, %d dead-lettered; want 1 of each", round, r.TooLong, r.DeadLettered)
		}
		stored += r.Lines

		gen := tweetgen.New(uint64(round)+1, 1_000_000_000+int64(round)*promTweets)
		var tweets []byte
		for _, line := range resend {
			tweets = append(append(tweets, line...), '\n')
		}
		resend = resend[:0]
		for i := range promTweets {
			var line []byte
			line, _ = gen.Line(nil)
			if i < promResent {
				resend = append(resend, line)
			}
			tweets = append(append(tweets, line...), '\n')
		}
		tweets = append(tweets, `{"id":`+"\n"...)
		stored += send(t, tweetsAddr, tweets).Lines
	}
	return stored
}

// send sends data on one connection to the gateway at addr, ends its
// input and returns the receipt, failing the test unless it is ok.
func send(t *testing.T, addr string, data []byte) gateway.Receipt {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("connect to the gateway: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("send to the gateway: %v", err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		t.Fatalf("read the receipt: %v (read %q)", err, line)
	}
	var r gateway.Receipt
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("decode the receipt %q: %v", line, err)
	}
	if r.Status != gateway.StatusOK {
		t.Fatalf("receipt %s, want status ok", line)
	}
	return r
}

// waitDrained waits until the workers have settled every frame: the
// consumer has none pending or awaiting acknowledgement.
func waitDrained(t *testing.T, natsURL string) {
	t.Helper()
	_, js := testenv.Connect(t, natsURL)
	testenv.Eventually(t, time.Minute, "the workers to drain the stream", func() error {
		var info *jetstream.ConsumerInfo
		c, err := js.Consumer(t.Context(), topology.StreamName, topology.ConsumerName)
		if err == nil {
			info, err = c.Info(t.Context())
		}
		if err == nil && (info.NumPending > 0 || info.NumAckPending > 0) {
			err = fmt.Errorf("%d frames pending, %d awaiting acknowledgement", info.NumPending, info.NumAckPending)
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
		return err
	})
}
