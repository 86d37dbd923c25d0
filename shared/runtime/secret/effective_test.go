package secret

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/runtime/logging"
)

// effectiveConfig has one field of each shape a Config may hold.
type effectiveConfig struct {
	URL         string        `env:"NATS_URL"`
	Token       Value         `env:"NATS_TOKEN"`
	Unset       Value         `env:"NATS_OTHER_TOKEN"`
	Creds       string        `env:"NATS_CREDS"`
	Timeout     time.Duration `env:"NATS_CONNECT_TIMEOUT"`
	Database    string        `env:"DATABASE_URL,required"`
	Pipelines   []string      `env:"WORKER_PIPELINES"`
	Batch       int           `env:"WORKER_BATCH_SIZE"`
	Big         uint64        `env:"WORKER_BIG"`
	Ratio       float64       `env:"WORKER_RATIO"`
	On          bool          `env:"WORKER_ON"`
	Forgotten   string        `env:"API_PASSWORD"` // not a Value, but named like one
	FromFile    string        `env:"DB_CERT,file"` // holds the file's contents
	Mirrors     []string      `env:"MIRROR_URLS"`
	Ignored     string        `env:"-"`
	notExported string        //nolint:unused // must not be read
	Log         struct {
		Level slog.Level `env:"LEVEL"`
	} `envPrefix:"LOG_"`
	Nested *struct {
		Key Value `env:"API_KEY"`
	}
}

func TestEffective(t *testing.T) {
	t.Parallel()
	cfg := effectiveConfig{
		URL:       "nats://jet:nats-pw@a:4222,nats://nats-tok@b:4222",
		Token:     "tok-value",
		Creds:     "/run/secrets/jet.creds",
		Timeout:   1500 * time.Millisecond,
		Database:  "postgres://jet:pg-pw@db:5432/jetline?sslmode=verify-full",
		Pipelines: []string{"a.yaml", "b.yaml"},
		Batch:     500,
		Big:       1 << 40,
		Ratio:     0.5,
		On:        true,
		Forgotten: "forgotten-pw",
		FromFile:  "-----BEGIN CERTIFICATE----- file-contents",
		Mirrors:   []string{"https://u:mirror-pw@m1", "https://m2"},
		Ignored:   "ignored",
		Nested: &struct {
			Key Value `env:"API_KEY"`
		}{Key: "api-key-value"},
	}
	cfg.Log.Level = slog.LevelWarn
	var buf bytes.Buffer
	LogConfig(logging.New(logging.Config{Format: "json"}, &buf), &cfg)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, buf.Bytes())
	}
	want := map[string]any{
		"msg":                  "configuration",
		"NATS_URL":             "nats://jet:xxxxx@a:4222,nats://xxxxx@b:4222",
		"NATS_TOKEN":           "xxxxx",
		"NATS_OTHER_TOKEN":     "",
		"NATS_CREDS":           "/run/secrets/jet.creds",
		"NATS_CONNECT_TIMEOUT": "1.5s",
		"DATABASE_URL":         "postgres://jet:xxxxx@db:5432/jetline?sslmode=verify-full",
		"WORKER_PIPELINES":     "a.yaml,b.yaml",
		"WORKER_BATCH_SIZE":    float64(500),
		"WORKER_BIG":           float64(1 << 40),
		"WORKER_RATIO":         0.5,
		"WORKER_ON":            true,
		"API_PASSWORD":         "xxxxx",
		"DB_CERT":              "xxxxx",
		"MIRROR_URLS":          "https://u:xxxxx@m1,https://m2",
		"LOG_LEVEL":            "WARN",
		"API_KEY":              "xxxxx",
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %#v, want %#v", k, rec[k], v)
		}
	}
	for k := range rec {
		if _, ok := want[k]; !ok && k != "time" && k != "level" {
			t.Errorf("unexpected attribute %s = %v", k, rec[k])
		}
	}
	secrets := []string{"nats-pw", "nats-tok", "tok-value", "pg-pw", "forgotten-pw", "file-contents", "mirror-pw", "api-key-value"}
	for _, s := range secrets {
		if bytes.Contains(buf.Bytes(), []byte(s)) {
			t.Errorf("configuration line holds secret %q: %s", s, buf.Bytes())
		}
	}

	got := ConfigSecrets(cfg)
	for _, s := range secrets {
		if !slices.Contains(got, s) && !slices.ContainsFunc(got, func(g string) bool { return strings.HasSuffix(g, s) }) {
			t.Errorf("ConfigSecrets misses %q: %q", s, got)
		}
	}
	if slices.Contains(got, "/run/secrets/jet.creds") || slices.Contains(got, "") {
		t.Errorf("ConfigSecrets holds a path or an empty string: %q", got)
	}
}

func TestEffectiveText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	LogConfig(logging.New(logging.Config{Format: "text"}, &buf), struct {
		Token Value  `env:"NATS_TOKEN"`
		URL   string `env:"NATS_URL"`
	}{"tok-value", "nats://jet:nats-pw@a:4222"})
	out := buf.String()
	if !strings.Contains(out, "configuration") || !strings.Contains(out, "NATS_URL=") || !strings.Contains(out, "nats://jet:xxxxx@a:4222") {
		t.Fatalf("text line = %q", out)
	}
	if strings.Contains(out, "tok-value") || strings.Contains(out, "nats-pw") {
		t.Fatalf("text line leaks: %q", out)
	}
}
