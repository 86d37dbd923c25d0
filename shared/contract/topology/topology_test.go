package topology

import (
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go/jetstream"
)

func TestStreamConfigDefaultsAndValidate(t *testing.T) {
	t.Parallel()
	var cfg StreamConfig
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	sc := cfg.Stream()
	if sc.Discard != jetstream.DiscardNew || sc.Retention != jetstream.WorkQueuePolicy || sc.Storage != jetstream.FileStorage {
		t.Errorf("stream policy = %v/%v/%v, want DiscardNew/WorkQueue/File", sc.Discard, sc.Retention, sc.Storage)
	}
	if sc.Duplicates < MinDuplicateWindow {
		t.Errorf("duplicate window %s below %s", sc.Duplicates, MinDuplicateWindow)
	}

	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"zero bytes", map[string]string{"INGEST_MAX_BYTES": "0"}, "INGEST_MAX_BYTES"},
		{"short window", map[string]string{"INGEST_DUPLICATE_WINDOW": "30s"}, "INGEST_DUPLICATE_WINDOW"},
		{"replicas", map[string]string{"INGEST_REPLICAS": "7"}, "INGEST_REPLICAS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg StreamConfig
			if err := env.ParseWithOptions(&cfg, env.Options{Environment: tt.env}); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestSubjectAndSource(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"default", "tweets", "a-b_9"} {
		if err := ValidateSource(name); err != nil {
			t.Errorf("ValidateSource(%q) = %v", name, err)
		}
		if got := Source(Subject(name)); got != name {
			t.Errorf("Source(Subject(%q)) = %q", name, got)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "*", ">", strings.Repeat("x", 65)} {
		if ValidateSource(bad) == nil {
			t.Errorf("ValidateSource(%q) accepted a bad name", bad)
		}
	}
	if got := Source("other.x"); got != "" {
		t.Errorf("Source(other.x) = %q, want empty", got)
	}
}

func TestConsumerConfig(t *testing.T) {
	t.Parallel()
	cc := ConsumerConfig{AckWait: 30 * time.Second, MaxAckPending: 4000, MaxDeliver: -1}.Consumer()
	if cc.Durable != ConsumerName || cc.AckPolicy != jetstream.AckExplicitPolicy || cc.MaxAckPending != 4000 {
		t.Fatalf("consumer config = %+v", cc)
	}
}
