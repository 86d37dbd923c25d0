package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestNewJSON(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	New(Config{Format: "auto", Level: 0}, &buf).Info("done", "elapsed", 1500*time.Millisecond, "lines", 3)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("auto format on a non-terminal should be JSON: %v: %s", err, buf.Bytes())
	}
	if rec["elapsed"] != "1.5s" || rec["lines"] != float64(3) {
		t.Fatalf("record = %v", rec)
	}
}

func TestNewText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	New(Config{Format: "text"}, &buf).Debug("hidden")
	New(Config{Format: "text"}, &buf).Warn("shown", "k", "v")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, "shown") || strings.HasPrefix(out, "{") {
		t.Fatalf("text output = %q", out)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{Format: "yaml"}).Validate(); err == nil || !strings.Contains(err.Error(), "LOG_FORMAT") {
		t.Fatalf("Validate(yaml) = %v", err)
	}
}
