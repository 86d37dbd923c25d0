package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/admin"
)

// statusJSON runs `worker status --json` against cfg and decodes it.
func statusJSON(t *testing.T, cfg worker.Config) (admin.Status, error) {
	t.Helper()
	out, _, err := operate(t, cfg, "status", "--interval", "200ms", "--json")
	if err != nil {
		return admin.Status{}, err
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return admin.Status{}, fmt.Errorf("decode %s: %w", out, err)
	}
	return st, nil
}

// instances returns the instance names status lists, in order.
func instances(st admin.Status) []string {
	var names []string
	if st.Workers != nil {
		for _, w := range st.Workers.Workers {
			names = append(names, w.Instance)
		}
	}
	return names
}

func TestStatusListsRunningWorkers(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfgA := setup(t, dsn)
	cfgA.Instance = "worker-a"
	cfgB := cfgA
	cfgB.Instance, cfgB.HealthAddr = "worker-b", testenv.FreeAddr(t)

	stopA := start(t, cfgA)
	// One at a time: both would create the table at once.
	testenv.Eventually(t, 20*time.Second, "worker-a ready", func() error { return healthcheck(t.Context(), cfgA, nil) })
	stopB := start(t, cfgB)
	testenv.Eventually(t, 20*time.Second, "worker-b ready", func() error { return healthcheck(t.Context(), cfgB, nil) })

	_, js := testenv.Connect(t, cfgA.NATS.URL)
	const n = 50
	for i := range n {
		if _, err := js.Publish(t.Context(), topology.Subject("smoke"), fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Totals arrive with the next heartbeat (every 5s).
	testenv.Eventually(t, 20*time.Second, "both workers listed with every line", func() error {
		st, err := statusJSON(t, cfgA)
		if err != nil {
			return err
		}
		if names := instances(st); !slices.Equal(names, []string{"worker-a", "worker-b"}) || st.Workers.Count != 2 {
			return fmt.Errorf("workers %v, want worker-a and worker-b", names)
		}
		var lines, inserted uint64
		for _, w := range st.Workers.Workers {
			lines += w.Totals.Lines
			inserted += w.Totals.Inserted
		}
		if lines != n || inserted != n {
			return fmt.Errorf("workers settled %d lines, inserted %d; want %d", lines, inserted, n)
		}
		return nil
	})
	out, _, err := operate(t, cfgA, "status", "--interval", "200ms")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connected   2 workers", "worker-a", "worker-b", "lines/s", "inserted", "heartbeat"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// A stopped worker is gone from the list at once.
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	st, err := statusJSON(t, cfgA)
	if err != nil {
		t.Fatal(err)
	}
	if names := instances(st); !slices.Equal(names, []string{"worker-a"}) {
		t.Errorf("after stopping worker-b, workers %v, want worker-a", names)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	st, err = statusJSON(t, cfgA)
	if err != nil {
		t.Fatal(err)
	}
	if st.Workers == nil || st.Workers.Count != 0 {
		t.Errorf("after stopping both, workers %+v, want none", st.Workers)
	}
}
