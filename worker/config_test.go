package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
)

func parseConfig(t *testing.T, environ map[string]string) Config {
	t.Helper()
	var cfg Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, map[string]string{})
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.DatabaseURL != "postgres://postgres@127.0.0.1:5433/jetline?sslmode=disable" || cfg.BatchSize != 500 ||
		cfg.BatchBytes != 4<<20 || cfg.Concurrency != 2 || cfg.AckWait != 30*time.Second ||
		cfg.RetryBackoff != time.Second || cfg.RetryMaxBackoff != time.Minute || cfg.Table != "events" ||
		cfg.ShutdownTimeout != 30*time.Second || cfg.HealthAddr != ":8081" || cfg.NATS.URL != "nats://127.0.0.1:4222" {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if got := cfg.Consumer(); got.MaxAckPending != 500*2*8 || got.AckWait != 30*time.Second || got.MaxDeliver != 10+spareDeliveries {
		t.Fatalf("consumer config %+v", got)
	}
	if cfg.MaxDeliver != 10 || cfg.DLQ.MaxAge != 720*time.Hour || cfg.DLQ.MaxBytes != 1<<30 {
		t.Fatalf("dead-letter defaults: max deliver %d, %+v", cfg.MaxDeliver, cfg.DLQ)
	}
	if o := cfg.Options(nil); o.MaxDeliver != 10 || o.Instance != cfg.InstanceName() {
		t.Fatalf("options %+v", o)
	}
	if len(cfg.Pipelines) != 0 {
		t.Fatalf("pipelines %q by default, want none", cfg.Pipelines)
	}
	if got := parseConfig(t, map[string]string{"WORKER_PIPELINES": "a.yaml,b.yaml"}).Pipelines; len(got) != 2 || got[1] != "b.yaml" {
		t.Fatalf("WORKER_PIPELINES=a.yaml,b.yaml parsed as %q", got)
	}
	if cfg.InstanceName() == "" {
		t.Fatal("no instance name")
	}
	if got := parseConfig(t, map[string]string{"WORKER_INSTANCE": "w-7"}).InstanceName(); got != "w-7" {
		t.Fatalf("instance %q, want w-7", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want []string // substrings of the error
	}{
		{map[string]string{"WORKER_BATCH_SIZE": "0"}, []string{"WORKER_BATCH_SIZE must be between 1 and 10000 (got 0)"}},
		{map[string]string{"WORKER_CONCURRENCY": "0", "WORKER_TABLE": "drop table;"}, []string{"WORKER_CONCURRENCY", "WORKER_TABLE"}},
		{map[string]string{"WORKER_ACK_WAIT": "1s"}, []string{"WORKER_ACK_WAIT must be at least 2s (got 1s)"}},
		{map[string]string{"WORKER_BATCH_BYTES": "100"}, []string{"WORKER_BATCH_BYTES must be between 1024"}},
		{map[string]string{"WORKER_MAX_ACK_PENDING": "100"}, []string{"WORKER_MAX_ACK_PENDING (100) must be 0 (automatic) or at least"}},
		{map[string]string{"WORKER_RETRY_BACKOFF": "2m"}, []string{"WORKER_RETRY_MAX_BACKOFF (1m0s) must be at least WORKER_RETRY_BACKOFF (2m0s)"}},
		{map[string]string{"DATABASE_URL": "postgres://a:b@host:notaport/db"}, []string{"DATABASE_URL is not a usable"}},
		{map[string]string{"WORKER_HEALTH_ADDR": "8081"}, []string{"WORKER_HEALTH_ADDR"}},
		{map[string]string{"WORKER_PIPELINES": "a.yaml,,b.yaml"}, []string{"WORKER_PIPELINES has an empty entry"}},
		{map[string]string{"WORKER_MAX_DELIVER": "0"}, []string{"WORKER_MAX_DELIVER must be between 1 and 1000 (got 0)"}},
		{map[string]string{"INGEST_DLQ_MAX_AGE": "0s", "INGEST_DLQ_MAX_BYTES": "-1"}, []string{"INGEST_DLQ_MAX_AGE must be positive", "INGEST_DLQ_MAX_BYTES must be a positive"}},
		{map[string]string{"NATS_CONNECT_TIMEOUT": "0s", "LOG_FORMAT": "xml", "INGEST_REPLICAS": "0"}, []string{"NATS_CONNECT_TIMEOUT", "LOG_FORMAT", "INGEST_REPLICAS"}},
	}
	for _, tt := range tests {
		err := parseConfig(t, tt.env).Validate()
		if err == nil {
			t.Errorf("%v: Validate() = nil", tt.env)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: Validate() = %q, want it to mention %q", tt.env, err, w)
			}
		}
	}
	if err := parseConfig(t, map[string]string{"WORKER_HEALTH_ADDR": "off"}).Validate(); err != nil {
		t.Errorf("empty WORKER_HEALTH_ADDR (disabled): %v", err)
	}
}
