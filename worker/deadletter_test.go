package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// splitCountingStore passes writes to a real store and records the batch
// sizes it was given and the extra attempts it needed to isolate rows.
type splitCountingStore struct {
	Store
	mu      sync.Mutex
	batches []int
	splits  int
}

func (s *splitCountingStore) Write(ctx context.Context, rows *Rows) (WriteResult, error) {
	wr, err := s.Store.Write(ctx, rows)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, rows.Len())
	s.splits += wr.Splits
	return wr, err
}

// failingStore fails every write with err.
type failingStore struct {
	err   error
	calls atomic.Int64
}

func (s *failingStore) Write(context.Context, *Rows) (WriteResult, error) {
	s.calls.Add(1)
	return WriteResult{}, s.err
}

// TestDeadLetterPoisonRows: a frame of 500 lines with a few rows the
// database refuses stores all the others, puts exactly those lines in the
// dead letters, each on its own with its line number, identity and the
// database's message, finds them in O(log n) extra attempts, and is
// acknowledged once.
func TestDeadLetterPoisonRows(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	const n, first = 500, 1001
	poison := []int{1, 222, 223, 500} // positions in the frame, from 1
	lines := make([][]byte, n)
	for i := range lines {
		lines[i] = tweetLine(i + 1)
	}
	for _, k := range poison {
		// Valid JSON (the transform takes it) that jsonb cannot hold.
		lines[k-1] = fmt.Appendf(nil, `{"id":%d,"n":-1e1000000}`, k)
	}
	nb.publishFrame(t, "tweets", first, lines)

	store := &splitCountingStore{Store: sb.store}
	opts := testOptions()
	opts.BatchSize, opts.Concurrency = n, 1
	opts.DeadLetters, opts.Instance = nb.js, "w-poison"
	w, stop := startWorker(t, nb.cons, store, opts)
	testenv.Eventually(t, 30*time.Second, "all lines settled", func() error {
		if got := w.Stats().Lines; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	if !slices.Equal(store.batches, []int{n}) {
		t.Fatalf("store given batches of %v, want one of %d", store.batches, n)
	}
	lineID := func(k int) string { return fmt.Sprintf("gw.1.%d", first+k-1) }
	var want []string
	for k := 1; k <= n; k++ {
		if !slices.Contains(poison, k) {
			want = append(want, lineID(k))
		}
	}
	slices.Sort(want)
	if got := sb.storedIDs(t); !slices.Equal(got, want) {
		t.Fatalf("stored %d rows, want all %d but the poison ones %v", len(got), len(want), poison)
	}
	var gotIDs []string
	for _, e := range nb.deadLetters(t) {
		id := e.Header.Get(topology.HeaderLineID)
		gotIDs = append(gotIDs, id)
		k := slices.IndexFunc(poison, func(k int) bool { return lineID(k) == id })
		if k < 0 || e.Reason != "pg_22003" || e.Class != deadletter.ClassPermanent || !strings.Contains(e.Error, "numeric") ||
			string(e.Data) != string(lines[poison[k]-1]) || e.By != "w-poison" || e.StreamSeq != 1 ||
			e.Header.Get(topology.HeaderLine) != strconv.Itoa(first+poison[k]-1) || e.Header.Get(topology.HeaderLines) != "" {
			t.Errorf("dead letter %+v", e)
		}
	}
	var wantIDs []string
	for _, k := range poison {
		wantIDs = append(wantIDs, lineID(k))
	}
	if slices.Sort(gotIDs); !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("dead letters for lines %v, want %v", gotIDs, wantIDs)
	}
	s := w.Stats()
	if s.Inserted != n-uint64(len(poison)) || s.DeadLettered != uint64(len(poison)) || s.DeadLetteredBy["pg_22003"] != uint64(len(poison)) ||
		s.Retried != 0 || s.Frames != 1 {
		t.Fatalf("stats %+v", s)
	}
	// Each poison row costs at most two attempts per level of halving.
	levels := bits.Len(uint(n))
	t.Logf("isolated %d poison rows of %d in %d extra attempts", len(poison), n, store.splits)
	if limit := 2 * len(poison) * levels; store.splits > limit || store.splits == 0 {
		t.Fatalf("%d extra attempts to isolate %d rows of %d, want 1..%d", store.splits, len(poison), n, limit)
	}
	testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })
}

// TestDeadLetterMaxDeliveries: lines whose store fails on every delivery
// are dead-lettered on the last one allowed, each on its own with reason
// max_deliveries and the last error, and terminated; a line the transform
// refuses does not wait for that. Lines come one per message, or in two
// frames of ten, whose lines are dead-lettered one by one.
func TestDeadLetterMaxDeliveries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		frames  bool
		store   func(t *testing.T) Store
		wantErr string
	}{
		{
			name:   "transient, frames",
			frames: true,
			store: func(*testing.T) Store {
				return &failingStore{err: fmt.Errorf("begin transaction: %w", &pgconn.ConnectError{})}
			},
			wantErr: "begin transaction",
		},
		{
			name: "transient",
			store: func(*testing.T) Store {
				return &failingStore{err: fmt.Errorf("begin transaction: %w", &pgconn.ConnectError{})}
			},
			wantErr: "begin transaction",
		},
		{
			name: "table dropped",
			store: func(t *testing.T) Store {
				sb := setupStore(t)
				if _, err := sb.pool.Exec(t.Context(), `DROP TABLE events`); err != nil {
					t.Fatal(err)
				}
				return sb.store
			},
			wantErr: `relation "events" does not exist`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nb := setupNATS(t, 30*time.Second)
			const n, maxDeliver = 20, 3
			lines := make([][]byte, n)
			for i := range lines {
				lines[i] = tweetLine(i + 1)
			}
			lines[4] = []byte(`{"truncated":`)
			if tt.frames {
				nb.publishFrame(t, "tweets", 1, lines[:n/2])
				nb.publishFrame(t, "tweets", n/2+1, lines[n/2:])
			} else {
				nb.publish(t, "tweets", lines)
			}

			opts := testOptions()
			opts.DeadLetters, opts.MaxDeliver = nb.js, maxDeliver
			w, stop := startWorker(t, nb.cons, tt.store(t), opts)
			testenv.Eventually(t, 30*time.Second, "all lines settled", func() error {
				if got := w.Stats().Lines; got != n {
					return fmt.Errorf("%v, want %v", got, n)
				}
				return nil
			})
			if err := stop(); err != nil {
				t.Fatal(err)
			}

			entries := nb.deadLetters(t)
			if len(entries) != n {
				t.Fatalf("%d dead letters, want %d", len(entries), n)
			}
			for _, e := range entries {
				invalid := e.StreamSeq == 5
				if tt.frames {
					invalid = e.Header.Get(topology.HeaderLineID) == "gw.1.5"
				}
				switch {
				case invalid:
					if e.Reason != ReasonInvalidJSON || e.Deliveries != 1 {
						t.Errorf("invalid line dead-lettered as %s on delivery %d, want invalid_json on 1", e.Reason, e.Deliveries)
					}
				case e.Reason != deadletter.ReasonMaxDeliveries || e.Class != deadletter.ClassTransient ||
					e.Deliveries != maxDeliver || !strings.Contains(e.Error, tt.wantErr):
					t.Errorf("line %d: dead letter %s/%s on delivery %d with %q, want max_deliveries/transient on %d with %q",
						e.StreamSeq, e.Reason, e.Class, e.Deliveries, e.Error, maxDeliver, tt.wantErr)
				}
			}
			if tt.frames {
				ids := map[string]bool{}
				for _, e := range entries {
					ids[e.Header.Get(topology.HeaderLineID)] = true
				}
				if len(ids) != n || !ids["gw.1.1"] || !ids[fmt.Sprintf("gw.1.%d", n)] {
					t.Errorf("dead letters for %d distinct lines (%v), want each of gw.1.1…gw.1.%d once", len(ids), ids, n)
				}
			}
			// A frame is handed back whole, its refused line with it.
			retried := uint64((maxDeliver - 1) * (n - 1))
			if tt.frames {
				retried = (maxDeliver - 1) * n
			}
			s := w.Stats()
			if s.DeadLetteredBy[deadletter.ReasonMaxDeliveries] != n-1 || s.Rejected != 1 || s.Retried != retried || s.Inserted != 0 {
				t.Fatalf("stats %+v, want %d max_deliveries, 1 rejected, %d retried", s, n-1, retried)
			}
			// Terminated, not handed back: nothing comes again.
			testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })
		})
	}
}

// TestDeadLetterPublishFailure: while the dead-letter stream cannot take a
// dead letter, the line is handed back, never acknowledged, and the rest of
// the batch is stored; once it can, the line is dead-lettered.
func TestDeadLetterPublishFailure(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	if err := nb.js.DeleteStream(t.Context(), deadletter.StreamName); err != nil {
		t.Fatal(err)
	}
	const n = 20
	lines := make([][]byte, n)
	var bad int
	for i := range lines {
		lines[i] = tweetLine(i + 1)
		if i%4 == 0 {
			lines[i] = []byte("not json")
			bad++
		}
	}
	nb.publish(t, "tweets", lines)

	opts := testOptions()
	opts.DeadLetters, opts.DeadLetterTimeout = nb.js, time.Second
	w, stop := startWorker(t, nb.cons, sb.store, opts)
	testenv.Eventually(t, 30*time.Second, "dead letters failing twice", func() error {
		if got := w.Stats().DeadLetterFailures; got < 2*uint64(bad) {
			return fmt.Errorf("%v, want at least %v", got, 2*uint64(bad))
		}
		return nil
	})
	s := w.Stats()
	if s.Inserted != n-uint64(bad) || s.Lines != n-uint64(bad) || s.DeadLettered != 0 || s.Rejected != 0 {
		t.Fatalf("stats with the dead-letter stream gone: %+v", s)
	}
	si, err := nb.stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if si.State.Msgs != uint64(bad) {
		t.Fatalf("ingest stream holds %d lines, want the %d that could not be dead-lettered", si.State.Msgs, bad)
	}

	if _, err := deadletter.EnsureStream(t.Context(), nb.js, deadletter.Config{MaxAge: time.Hour, MaxBytes: 1 << 30}, 1); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "all lines settled", func() error {
		if got := w.Stats().Lines; got != n {
			return fmt.Errorf("%v, want %v", got, n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	entries := nb.deadLetters(t)
	if len(entries) != bad {
		t.Fatalf("%d dead letters, want %d", len(entries), bad)
	}
	for _, e := range entries {
		if e.Reason != ReasonInvalidJSON || e.Deliveries < 3 || (e.StreamSeq-1)%4 != 0 {
			t.Errorf("dead letter of line %d: %s on delivery %d, want invalid_json after two failed tries", e.StreamSeq, e.Reason, e.Deliveries)
		}
	}
	testenv.Eventually(t, 10*time.Second, "stream drained", func() error { return nb.drained(t) })
}

// idTransform stores every line's identity in table name.
type idTransform struct{ name string }

func (s idTransform) Tables() []Table {
	return []Table{{Name: s.name, Columns: []Column{{Name: LineIDColumn, Type: "text"}}, Key: []string{LineIDColumn}}}
}

func (s idTransform) Transform(line *Line, rows *Rows) Result {
	rows.Add(0)[0] = line.ID
	return Result{Outcome: Insert}
}

// TestLineIdentity: rows are keyed by the line's identity, in the raw
// landing and in a typed route alike: its topology.HeaderLineID, else its
// message id, else the stream's creation time and its sequence. Copies of
// a line under other sequences and message ids (replays, twice) are
// stored once, and a dead letter carries the line's identity for its
// replay.
func TestLineIdentity(t *testing.T) {
	t.Parallel()
	nb := setupNATS(t, 30*time.Second)
	sb := setupStore(t)
	typed := idTransform{name: "typed_ids"}
	typedStore, err := NewPostgresStore(sb.pool, typed.Tables(), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := typedStore.CreateTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	router := rawRouter(t, sb.store)
	if err := router.Handle("typed", Route{Transform: typed, Store: typedStore}); err != nil {
		t.Fatal(err)
	}
	created := nb.stream.CachedInfo().Created
	unnamed := func(seq int) string { return fmt.Sprintf("%d.%d", created.UnixNano(), seq) }
	opts := testOptions()
	opts.DeadLetters, opts.StreamCreated = nb.js, created
	w, _ := runWorker(t, nb.cons, router, opts)

	msg := func(source, data string, headers ...string) *nats.Msg {
		m := nats.NewMsg(topology.Subject(source))
		m.Data = []byte(data)
		for i := 0; i+1 < len(headers); i += 2 {
			m.Header.Set(headers[i], headers[i+1])
		}
		return m
	}
	replayed := func(source, data, dlqSeq, lineID string) *nats.Msg {
		return msg(source, data, topology.HeaderMsgID, "replay."+dlqSeq, topology.HeaderLineID, lineID)
	}
	testenv.Publish(t, nb.js, []*nats.Msg{
		msg("tweets", `{"no_id":true}`), // sequence 1
		msg("tweets", `{"gateway":1}`, topology.HeaderMsgID, "gw-a.1.1"),
		replayed("tweets", `{"replayed":1}`, "1", "gw-a.1.7"),
		replayed("typed", `{"replayed":2}`, "2", "gw-a.1.8"),
		msg("tweets", `not json`, topology.HeaderMsgID, "gw-a.1.9"), // sequence 5
		msg("tweets", `not json either`),                            // sequence 6
	})
	testenv.Eventually(t, 30*time.Second, "the first lines settled", func() error {
		if got := w.Stats().Lines; got != 6 {
			return fmt.Errorf("%v, want %v", got, 6)
		}
		return nil
	})
	// The same lines again, in a later batch, under new sequences and
	// message ids.
	testenv.Publish(t, nb.js, []*nats.Msg{
		replayed("tweets", `{"replayed":1}`, "3", "gw-a.1.7"),
		replayed("typed", `{"replayed":2}`, "4", "gw-a.1.8"),
		replayed("tweets", `{"gateway":1}`, "5", "gw-a.1.1"),
	})
	testenv.Eventually(t, 30*time.Second, "the copies settled", func() error {
		if got := w.Stats().Lines; got != 9 {
			return fmt.Errorf("%v, want %v", got, 9)
		}
		return nil
	})

	ids := func(query string) []string {
		t.Helper()
		rows, err := sb.pool.Query(t.Context(), query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := ids(`SELECT line_id FROM events ORDER BY seq`), []string{unnamed(1), "gw-a.1.1", "gw-a.1.7"}; !slices.Equal(got, want) {
		t.Errorf("raw landing holds lines %q, want %q", got, want)
	}
	if got, want := ids(`SELECT line_id FROM typed_ids`), []string{"gw-a.1.8"}; !slices.Equal(got, want) {
		t.Errorf("typed table holds lines %q, want %q", got, want)
	}
	if s := w.Stats(); s.Inserted != 4 || s.Duplicates != 3 || s.DeadLetteredBy[ReasonInvalidJSON] != 2 {
		t.Errorf("stats %+v, want 4 inserted, 3 duplicates, 2 dead-lettered as invalid_json", s)
	}
	got := map[uint64]string{}
	for _, e := range nb.deadLetters(t) {
		got[e.StreamSeq] = e.Header.Get(topology.HeaderLineID)
	}
	if want := map[uint64]string{5: "gw-a.1.9", 6: unnamed(6)}; !maps.Equal(got, want) {
		t.Errorf("dead letters by sequence with their line ids %v, want %v", got, want)
	}
}

// wordyReject refuses every line with a long detail, as a NOT NULL
// violation quoting a whole row would.
type wordyReject struct{ *RawLanding }

func (wordyReject) Transform(*Line, *Rows) Result {
	return Result{Outcome: Reject, Reason: "wordy", Detail: strings.Repeat("too long ", 1000)}
}

// TestDeadLetterNearMaxPayload: a line that fitted on the server but would
// not with the dead-letter headers is dead-lettered whole, with less of
// its error.
func TestDeadLetterNearMaxPayload(t *testing.T) {
	t.Parallel()
	const maxPayload = 16 << 10
	nb := setupNATSWith(t, 30*time.Second, embeddednats.Options{MaxPayload: maxPayload})
	// The longest line the gateway lets through: the limit minus 4 KiB.
	line := []byte(`"` + strings.Repeat("é", (maxPayload-4<<10-2)/2) + `"`)
	nb.publish(t, "tweets", [][]byte{line, []byte(`{}`)})

	raw, _ := NewRawLanding("events")
	router, err := NewRouter(Route{Transform: wordyReject{raw}, Store: &failingStore{err: errors.New("unused")}})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.DeadLetters = nb.js
	w, _ := runWorker(t, nb.cons, router, opts)
	testenv.Eventually(t, 30*time.Second, "both lines dead-lettered", func() error {
		if got := w.Stats().DeadLettered; got != 2 {
			return fmt.Errorf("%v, want %v", got, 2)
		}
		return nil
	})

	entries := nb.deadLetters(t)
	if len(entries) != 2 {
		t.Fatalf("%d dead letters, want 2", len(entries))
	}
	for _, e := range entries {
		full := len(e.Error) == deadletter.MaxErrorBytes+len("…")
		switch {
		case e.StreamSeq == 1 && (string(e.Data) != string(line) || full || !strings.HasPrefix(e.Error, "too long") || !strings.HasSuffix(e.Error, "…")):
			t.Errorf("long line: %d bytes kept of %d, error of %d bytes %.20q…; want all of it, a shortened error", len(e.Data), len(line), len(e.Error), e.Error)
		case e.StreamSeq == 2 && !full:
			t.Errorf("short line: error of %d bytes, want the usual %d", len(e.Error), deadletter.MaxErrorBytes)
		}
	}
	if s := w.Stats(); s.DeadLetterFailures != 0 {
		t.Fatalf("stats %+v, want no failed dead letters", s)
	}
}

// TestNewRefusesMaxDeliverWithoutDeadLetters: giving up on lines needs
// somewhere to put them.
func TestNewRefusesMaxDeliverWithoutDeadLetters(t *testing.T) {
	t.Parallel()
	raw, _ := NewRawLanding("events")
	router, err := NewRouter(Route{Transform: raw, Store: &failingStore{err: errors.New("unused")}})
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	opts.MaxDeliver = 3
	if _, err := New(nil, router, opts, testenv.Logger(t)); err == nil || !strings.Contains(err.Error(), "dead-letter") {
		t.Fatalf("New with MaxDeliver and no dead-letter publisher: %v", err)
	}
}
