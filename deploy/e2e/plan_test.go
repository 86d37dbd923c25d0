package e2e

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// The end-to-end tests can only be as right as their input and their
// reading of receipts; these check both without any server.

// TestPlan frames each plan's input independently of the generator, as the
// gateway documents it (lines end in "\n" or "\r\n", a final line may lack
// one, empty lines are blank, lines over maxLine are too long), and checks
// the generator's counts, ids and decoded texts against it.
func TestPlan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mix  mix
	}{
		{"small", mix{records: 300, blanks: 20, invalid: 16, crlfPercent: 50, last: kindRecord}},
		{"edges", mix{
			records: 50, large: 1, blanks: 3, invalid: 8, crlfPercent: 20, last: kindNearMax,
			nearMax: []bigLine{{size: maxLine, crlf: true}, {size: maxLine - 7}},
			overMax: []bigLine{{size: maxLine + 1, crlf: true}},
		}},
		{"ends too long", mix{records: 10, overMax: []bigLine{{size: maxLine + 1}}, last: kindOverMax}},
		{"ends invalid", mix{records: 10, invalid: 1, last: kindInvalid}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newPlan(rngFor(uint64(i), 0), "t", "src", tt.mix)
			if bytes.HasSuffix(p.data, []byte("\n")) {
				t.Errorf("input ends with a newline")
			}
			var lines, blank, tooLong, invalid int64
			valid := map[string]bool{}
			for _, line := range bytes.Split(p.data, []byte("\n")) {
				line = bytes.TrimSuffix(line, []byte("\r"))
				switch {
				case len(line) == 0:
					blank++
					continue
				case len(line) > maxLine:
					tooLong++
					continue
				}
				lines++
				var rec struct {
					ID   string  `json:"id"`
					Text *string `json:"text"`
				}
				if !utf8.Valid(line) || json.Unmarshal(line, &rec) != nil || strings.Contains(string(line), `\u0000`) || strings.Contains(string(line), `\ud800`) {
					invalid++
					continue
				}
				valid[rec.ID] = true
				if want, ok := p.texts[rec.ID]; ok && (rec.Text == nil || *rec.Text != want) {
					t.Errorf("line %s: the text the plan expects differs from what the line decodes to", rec.ID)
				}
			}
			if lines != p.lines || blank != p.blank || tooLong != p.tooLong || invalid != p.invalid {
				t.Errorf("framed %d lines, %d blank, %d too long, %d invalid; plan says %d, %d, %d, %d",
					lines, blank, tooLong, invalid, p.lines, p.blank, p.tooLong, p.invalid)
			}
			if len(valid) != len(p.valid) {
				t.Errorf("input has %d distinct valid ids, plan %d", len(valid), len(p.valid))
			}
			for _, id := range p.valid {
				if !valid[id] {
					t.Errorf("plan expects %s, which is not a valid line of the input", id)
				}
			}
			for id := range p.texts {
				if !valid[id] {
					t.Errorf("plan checks the text of %s, which is not a valid line", id)
				}
			}
		})
	}
}

func TestParseReceipt(t *testing.T) {
	t.Parallel()
	const ok = `{"status":"ok","lines":3,"bytes":20,"blank":1,"too_long":0,"gateway":"gw-1","conn":7}`
	tests := []struct {
		name    string
		raw     string
		want    receipt
		wantErr string
	}{
		{"ok", ok + "\n", receipt{Status: "ok", Lines: 3, Bytes: 20, Blank: 1, Gateway: "gw-1", Conn: 7}, ""},
		{"error", `{"status":"error","lines":1,"bytes":9,"blank":0,"too_long":0,"resume_line":2,"error":"boom","gateway":"g","conn":1}` + "\n",
			receipt{Status: "error", Lines: 1, Bytes: 9, ResumeLine: 2, Error: "boom", Gateway: "g", Conn: 1}, ""},
		{"no newline", ok, receipt{}, "exactly one line"},
		{"two lines", ok + "\n" + ok + "\n", receipt{}, "exactly one line"},
		{"nothing", "", receipt{}, "exactly one line"},
		{"missing field", `{"status":"ok","lines":3,"bytes":20,"blank":1,"gateway":"g","conn":7}` + "\n", receipt{}, "lacks too_long"},
		{"not json", "ok\n", receipt{}, "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseReceipt([]byte(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseReceipt(%q) = %+v, %v; want an error containing %q", tt.raw, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseReceipt(%q) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
			}
		})
	}
}

func TestErrorRecords(t *testing.T) {
	t.Parallel()
	logs := `{"time":"t","level":"WARN","msg":"line rejected"}
{"time":"t","level":"ERROR","msg":"publish failed"}
gateway: plain text mentioning "level":"ERROR"
{"time":"t","level":"INFO","msg":"ok"}`
	got := errorRecords(logs)
	if len(got) != 1 || !strings.Contains(got[0], "publish failed") {
		t.Fatalf("errorRecords = %q, want the one ERROR record", got)
	}
}
