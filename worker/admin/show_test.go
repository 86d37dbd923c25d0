package admin

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jetline/jetline/shared/contract/deadletter"
)

func TestShow(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	big := `{"text":"` + strings.Repeat("é", 3000) + `"}`
	b.deadLetter(t, entry("tweets", "pg_22P05", 42, big), tooLong("default", 5<<20))
	ctx := context.Background()

	e, err := Show(ctx, b.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if e.Reason != "pg_22P05" || e.StreamSeq != 42 || e.Source != "tweets" || string(e.Data) != big {
		t.Errorf("entry = %+v", e)
	}
	var out bytes.Buffer
	if err := WriteEntry(&out, e, false); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"reason:      pg_22P05", "line id:     gw1.7.42", "ingest seq:  42", "deliveries:  1", "by:          worker-1",
		"subject:     ingest.tweets", "Jetline-Gateway: gw1", deadletter.HeaderError + ": line gw1.7.42 failed",
		"showing the first 4095 of 6011 bytes kept; --full shows all",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("show output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, big) {
		t.Error("show output has the whole line without --full")
	}
	out.Reset()
	if err := WriteEntry(&out, e, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), big) || strings.Contains(out.String(), "--full shows all") {
		t.Errorf("--full output does not hold exactly the whole line:\n%s", out.String())
	}

	e, err = Show(ctx, b.js, 2)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := WriteEntry(&out, e, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "the line was 5242880 bytes; only the first 16 were kept (it cannot be replayed)") {
		t.Errorf("too_long entry does not say it was cut:\n%s", out.String())
	}

	if _, err := Show(ctx, b.js, 3); err == nil || !strings.Contains(err.Error(), "no dead letter 3") {
		t.Errorf("Show of a missing entry: %v", err)
	}
}
