package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	dto "github.com/prometheus/client_model/go"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/shared/runtime/natsconn"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// grafanaVariables are Grafana's built-in interval variables, replaced by
// a duration so the queries parse as PromQL.
var grafanaVariables = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dashboardDir)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Fatalf("%s: a dashboard needs a uid, a title and panels", f)
		}
		out[f] = d
	}
	return out
}

// exportedMetrics returns the name and type of every series the gateway
// and the worker export, gathered from registries built as the programs
// build theirs, with the tweets pipeline (so its filter has a series).
func exportedMetrics(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	ctx := t.Context()
	logger := testenv.Logger(t)
	srv := testenv.NATS(t)
	nc, js, err := natsconn.Connect(ctx, natsconn.Config{URL: srv.ClientURL(), ConnectTimeout: 10 * time.Second}, "dashboard-test", logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	var gcfg gateway.Config
	if err := env.ParseWithOptions(&gcfg, env.Options{Environment: map[string]string{
		"NATS_URL": srv.ClientURL(), "GATEWAY_LISTEN": "127.0.0.1:0,tweets=127.0.0.1:0",
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.EnsureStream(ctx, js, gcfg.Stream); err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gcfg, nc, logger)
	if err != nil {
		t.Fatal(err)
	}

	var wcfg worker.Config
	if err := env.ParseWithOptions(&wcfg, env.Options{Environment: map[string]string{"NATS_URL": srv.ClientURL()}}); err != nil {
		t.Fatal(err)
	}
	cons, err := topology.EnsureConsumer(ctx, js, wcfg.Consumer())
	if err != nil {
		t.Fatal(err)
	}
	tweets, err := pipeline.Load("pipelines/tweets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The stores are never written to: no database is needed.
	router, _, err := worker.Routes(nil, wcfg.Table, []worker.Pipeline{tweets}, logger)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(cons, router, wcfg.Options(js), logger)
	if err != nil {
		t.Fatal(err)
	}

	families, err := metrics.NewRegistry(gw.Metrics(), w.Metrics(js)).Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dto.MetricType{}
	for _, f := range families {
		out[f.GetName()] = f.GetType()
	}
	return out
}

// seriesNames returns the names a query may use for the exported metrics:
// a histogram's or summary's series are name_bucket (histograms), name_sum
// and name_count.
func seriesNames(exported map[string]dto.MetricType) map[string]bool {
	out := map[string]bool{}
	for name, typ := range exported {
		out[name] = true
		switch typ {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[name+"_bucket"] = true
			fallthrough
		case dto.MetricType_SUMMARY:
			out[name+"_sum"] = true
			out[name+"_count"] = true
		}
	}
	return out
}

// TestDashboardQueriesUseExportedMetrics parses every query of every
// provisioned dashboard as PromQL and checks that each metric it selects
// is one the programs export, so a renamed metric cannot leave a panel
// silently empty.
func TestDashboardQueriesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	dashboards := loadDashboards(t)
	names := seriesNames(exportedMetrics(t))
	if len(names) < 20 {
		t.Fatalf("the programs export only %d series names: %v", len(names), slices.Sorted(maps.Keys(names)))
	}
	for file, d := range dashboards {
		var panels []panel
		for _, pn := range d.Panels {
			panels = append(panels, pn)
			panels = append(panels, pn.Panels...)
		}
		for _, pn := range panels {
			if pn.Type == "row" {
				continue
			}
			if pn.Datasource.UID != dashboardDatasourceUID {
				t.Errorf("%s: panel %q uses data source %q, want the provisioned %q", file, pn.Title, pn.Datasource.UID, dashboardDatasourceUID)
			}
			if len(pn.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, pn.Title)
			}
			for _, target := range pn.Targets {
				checkQuery(t, fmt.Sprintf("%s: panel %q", file, pn.Title), target.Expr, names)
			}
		}
	}
}

// checkQuery checks that query, after replacing Grafana's interval
// variables, is balanced and selects metrics, and only exported ones. A
// metric is a name followed by a selector, a range or an operator, never
// by "(" (a function) — PromQL's grammar for what the dashboards use.
func checkQuery(t *testing.T, where, query string, names map[string]bool) {
	t.Helper()
	q := grafanaVariables.ReplaceAllString(query, "1m")
	if err := balanced(q); err != nil {
		t.Errorf("%s: query %q: %v", where, query, err)
		return
	}
	// Label names inside {…} and by/without (…) are not metrics.
	q = labelLists.ReplaceAllString(q, "")
	selected := 0
	for _, m := range metricName.FindAllStringSubmatch(q, -1) {
		selected++
		if !names[m[1]] {
			t.Errorf("%s selects %q, which neither program exports", where, m[1])
		}
	}
	if selected == 0 {
		t.Errorf("%s: query %q selects no metric", where, query)
	}
}

var (
	// metricName matches a metric name that is not a function call.
	metricName = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*_[a-zA-Z0-9_:]*)\b\s*(?:[^a-zA-Z0-9_:(\s]|$)`)
	// labelLists matches label matchers and grouping clauses.
	labelLists = regexp.MustCompile(`\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
)

// balanced reports unbalanced brackets or quotes in a query.
func balanced(q string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	quoted := false
	for _, r := range q {
		switch {
		case r == '"':
			quoted = !quoted
		case quoted:
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case pairs[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return fmt.Errorf("unbalanced %q", r)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if quoted || len(stack) > 0 {
		return fmt.Errorf("unclosed quote or bracket")
	}
	return nil
}

// readmeMetrics returns the README's Metrics section.
func readmeMetrics(t *testing.T) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Metrics\n")
	if !ok {
		t.Fatal(`README.md has no "## Metrics" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	return section
}

// TestReadmeQueriesUseExportedMetrics checks the PromQL of the README's
// Metrics section (the accounting identity) as the dashboards' is.
func TestReadmeQueriesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	section := readmeMetrics(t)
	names := seriesNames(exportedMetrics(t))
	blocks := strings.Split(section, "```promql\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("README's Metrics section has no promql block")
	}
	for i, b := range blocks {
		query, _, ok := strings.Cut(b, "```")
		if !ok {
			t.Fatalf("promql block %d is not closed", i+1)
		}
		checkQuery(t, fmt.Sprintf("README promql block %d", i+1), query, names)
	}
}

// TestReadmeListsEveryMetric checks that the README's Metrics section
// names every jetline metric the programs export.
func TestReadmeListsEveryMetric(t *testing.T) {
	t.Parallel()
	section := readmeMetrics(t)
	n := 0
	for name := range exportedMetrics(t) {
		if !strings.HasPrefix(name, "jetline_") {
			continue
		}
		n++
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("README's Metrics section does not list `%s`", name)
		}
	}
	if n == 0 {
		t.Fatal("the programs export no jetline_ metrics")
	}
}
