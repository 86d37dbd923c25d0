package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// seqTransform stores every line's sequence in table name.
type seqTransform struct{ name string }

func (s seqTransform) Tables() []Table {
	return []Table{{Name: s.name, Columns: []Column{{Name: "seq", Type: "bigint"}}, Key: []string{"seq"}}}
}

func (s seqTransform) Transform(line *Line, rows *Rows) Result {
	if strings.Contains(string(line.Data), "drop") {
		return Result{Outcome: Filter, Reason: "filtered"}
	}
	rows.Add(0)[0] = int64(line.Seq)
	return Result{Outcome: Insert}
}

// recordingStore records the rows it is given; its first failures writes
// fail with a connection error.
type recordingStore struct {
	mu       sync.Mutex
	seqs     []int64
	failures int
}

func (r *recordingStore) Write(_ context.Context, rows *Rows) (WriteResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.failures--
		return WriteResult{}, &pgconn.ConnectError{}
	}
	for _, row := range rows.Table(0).Rows {
		r.seqs = append(r.seqs, row[0].(int64))
	}
	return WriteResult{Inserted: rows.Len(), Tables: []TableCounts{{Inserted: rows.Len()}}}, nil
}

func (r *recordingStore) stored() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(slices.Values(r.seqs))
}

// TestRouterSplitsBatches sends two sources through one consumer to two
// stores, one of which fails at first: the lines of the working store are
// stored once and acknowledged even in batches where the other store
// failed, and the failing store's lines are redelivered until stored.
func TestRouterSplitsBatches(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	flaky := &recordingStore{failures: 3}
	good := &recordingStore{}
	router, err := NewRouter(Route{Transform: seqTransform{"events"}, Store: flaky})
	if err != nil {
		t.Fatal(err)
	}
	if err := router.Handle("tweets", Route{Transform: seqTransform{"tweets"}, Store: good}); err != nil {
		t.Fatal(err)
	}
	const n = 300
	var lines [][]byte
	for i := range n {
		word := "keep"
		if i%3 == 0 {
			word = "drop"
		}
		lines = append(lines, []byte(fmt.Sprintf(`{"%s": %d}`, word, i)))
	}
	// Interleave the sources so every batch holds both.
	for i := 0; i < n; i += 10 {
		nb.publish(t, "tweets", lines[i:i+5])
		nb.publish(t, "other", lines[i+5:i+10])
	}
	opts := testOptions()
	w, stop := runWorker(t, nb.cons, router, opts)
	testenv.Eventually(t, 30*time.Second, "every line acknowledged", func() error {
		if got := w.Stats().Lines; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Sequences 1..n were published in groups of five alternating between
	// the sources, starting with tweets; a third of the lines is filtered.
	var wantGood, wantFlaky []int64
	for seq := int64(1); seq <= n; seq++ {
		if (seq-1)%3 == 0 {
			continue
		}
		if (seq-1)/5%2 == 0 {
			wantGood = append(wantGood, seq)
		} else {
			wantFlaky = append(wantFlaky, seq)
		}
	}
	if got := good.stored(); !slices.Equal(got, wantGood) {
		t.Errorf("tweets store got %d rows, want %d once each", len(got), len(wantGood))
	}
	if got := flaky.stored(); !slices.Equal(got, wantFlaky) {
		t.Errorf("default store got %d rows, want %d once each", len(got), len(wantFlaky))
	}
	s := w.Stats()
	if s.Failures != 3 || s.Retried == 0 || s.Filtered != n/3 || s.Inserted != uint64(len(wantGood)+len(wantFlaky)) {
		t.Errorf("stats %+v", s)
	}
}

func TestRouterRefusesAmbiguousRoutes(t *testing.T) {
	t.Parallel()
	store := &recordingStore{}
	router, err := NewRouter(Route{Transform: seqTransform{"events"}, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := router.Handle("a", Route{Transform: seqTransform{"a"}, Store: store}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		source, table, want string
	}{
		{"a", "a2", `source "a" has two routes`},
		{"b", "events", `table "events" is already written by the default route`},
		{"c", "a", `table "a" is already written by source "a"`},
		{"bad.source", "x", "source"},
	} {
		err := router.Handle(tt.source, Route{Transform: seqTransform{tt.table}, Store: store})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Handle(%s → %s) = %v, want %q", tt.source, tt.table, err, tt.want)
		}
	}
	if err := router.Handle("d", Route{}); err == nil {
		t.Error("route without transform accepted")
	}
	if _, err := New(nil, nil, testOptions(), testenv.Logger(t)); err == nil {
		t.Error("worker without router accepted")
	}
}

// testPipeline is a pipeline of source, defined in file, that stores every
// line's sequence.
type testPipeline struct {
	seqTransform
	source, file string
}

func (p testPipeline) Source() string { return p.source }
func (p testPipeline) String() string { return p.file }

// TestRoutes checks the worker program's routing: each pipeline's source
// goes to its own store of its tables, every other source to the raw
// landing's, and a pipeline that cannot be routed is named by its file.
func TestRoutes(t *testing.T) {
	t.Parallel()
	logger := testenv.Logger(t)
	router, stores, err := Routes(nil, "landing", []Pipeline{
		testPipeline{seqTransform{"a_seqs"}, "a", "a.yaml"},
		testPipeline{seqTransform{"b_seqs"}, "b", "b.yaml"},
	}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if got := router.Sources(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("sources %q, want [a b]", got)
	}
	for i, tt := range []struct{ source, table string }{{"other", "landing"}, {"a", "a_seqs"}, {"b", "b_seqs"}} {
		route := router.routes[router.route(tt.source)]
		if route.Store != stores[i] || stores[i].tables[0].table.Name != tt.table || route.Transform.Tables()[0].Name != tt.table {
			t.Errorf("source %s: route %+v, store %d of table %s; want store %d of table %s", tt.source, route, i, stores[i].tables[0].table.Name, i, tt.table)
		}
	}
	if len(stores) != 3 {
		t.Errorf("%d stores, want 3", len(stores))
	}

	_, _, err = Routes(nil, "events", []Pipeline{
		testPipeline{seqTransform{"a_seqs"}, "a", "a.yaml"},
		testPipeline{seqTransform{"a2_seqs"}, "a", "again.yaml"},
	}, logger)
	if want := `pipeline again.yaml: source "a" has two routes`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("two pipelines of one source: %v, want %q", err, want)
	}
	if _, _, err := Routes(nil, "no such;table", nil, logger); err == nil {
		t.Error("raw landing table with a bad name accepted")
	}
}
