package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// uploadFile returns n lines of a hostile file, line i (from 1) naming i:
// blank lines and lines with "\r\n" among them, so line numbers count more
// than records.
func uploadFile(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		switch {
		case i%97 == 0:
			b.WriteString("\n")
		case i%13 == 0:
			fmt.Fprintf(&b, `{"i":%d,"text":"crlf \u00e9\"quoted\""}`+"\r\n", i)
		default:
			fmt.Fprintf(&b, `{"i":%d,"text":"%s"}`+"\n", i, strings.Repeat("y", i%40))
		}
	}
	return b.Bytes()
}

// fileLines returns the lines of file that are not blank, by line number.
func fileLines(file []byte) map[int64]string {
	out := map[int64]string{}
	for i, l := range bytes.Split(bytes.TrimSuffix(file, []byte("\n")), []byte("\n")) {
		if l = bytes.TrimSuffix(l, []byte("\r")); len(l) > 0 {
			out[int64(i+1)] = string(l)
		}
	}
	return out
}

// storedByID returns the stream's lines by identity, failing the test if
// one identity holds two different lines.
func storedByID(t *testing.T, b *bundle) map[string]storedLine {
	t.Helper()
	out := map[string]storedLine{}
	for _, l := range b.storedLines(t) {
		if prev, ok := out[l.id]; ok && prev.data != l.data {
			t.Fatalf("identity %s holds %q and %q", l.id, prev.data, l.data)
		}
		out[l.id] = l
	}
	return out
}

// checkUploadStored checks that the stream holds exactly the lines of
// file under upload name on the default source, each under the identity
// its line number gives it, and nothing else.
func checkUploadStored(t *testing.T, b *bundle, name string, file []byte) {
	t.Helper()
	want := fileLines(file)
	got := storedByID(t, b)
	ids := topology.UploadLineIDs(topology.DefaultSource, name)
	for n, data := range want {
		l, ok := got[ids.Line(n)]
		if !ok {
			t.Fatalf("line %d (%s) is not stored; %d of %d identities are", n, ids.Line(n), len(got), len(want))
		}
		if l.data != data || l.line != n || l.header.Get(topology.HeaderUpload) != name {
			t.Fatalf("line %d stored as %q, line %d, upload %q; want %q under %q", n, l.data, l.line, l.header.Get(topology.HeaderUpload), data, name)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("stream holds %d identities, want the file's %d lines", len(got), len(want))
	}
}

func header(name string, first int64) string {
	if first == 0 {
		return "#jetline upload=" + name + "\n"
	}
	return fmt.Sprintf("#jetline upload=%s first_line=%d\n", name, first)
}

// A file sent twice under one name has the same identities both times:
// the second send stores no line under a new identity, and its receipt
// says the upload and where its numbering starts.
func TestUploadSentTwiceHasTheSameIdentities(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	file := uploadFile(2000)
	for range 2 {
		r := send(t, b.addr(t, 0), append([]byte(header("rc-2018-01", 0)), file...))
		if r.Status != gateway.StatusOK || r.Upload != "rc-2018-01" || r.FirstLine != 1 || r.Lines != int64(len(fileLines(file))) {
			t.Fatalf("receipt = %+v; want ok, upload rc-2018-01 from line 1, %d lines", r, len(fileLines(file)))
		}
	}
	checkUploadStored(t, b, "rc-2018-01", file)

	// An unnamed connection keeps its identities by connection.
	if r := send(t, b.addr(t, 0), []byte("{\"unnamed\":1}\n")); r.Status != gateway.StatusOK || r.Upload != "" || r.FirstLine != 0 {
		t.Fatalf("unnamed receipt = %+v", r)
	}
	if _, ok := storedByID(t, b)[topology.ConnLineIDs("test-gw", "3").Line(1)]; !ok {
		t.Fatal("the unnamed connection's line is not stored as test-gw.3.1")
	}
}

// A send cut short and then the whole file again: the frames of the second
// send that start where the first send's did but hold more lines are not
// dropped as duplicates, so every line is stored.
func TestUploadResentAfterAPartialSend(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	file := uploadFile(3000)
	cut := bytes.Index(file, []byte(`{"i":80,`))
	if r := send(t, b.addr(t, 0), append([]byte(header("part", 0)), file[:cut]...)); r.Status != gateway.StatusOK || r.Lines != 79 {
		t.Fatalf("first part: receipt = %+v, want ok with 79 lines", r)
	}
	if r := send(t, b.addr(t, 0), append([]byte(header("part", 0)), file...)); r.Status != gateway.StatusOK {
		t.Fatalf("whole file: receipt = %+v", r)
	}
	checkUploadStored(t, b, "part", file)
}

// A gateway stopped mid-upload gives a resume_line in the upload's
// numbering; sending from there with first_line, to another gateway,
// completes the upload with nothing missing and no line under two
// identities.
func TestUploadResumesFromFirstLine(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_SHUTDOWN_TIMEOUT": "5s"}})
	file := uploadFile(40000)
	c := dial(t, b.addr(t, 0))
	go func() {
		// Slowly enough that the gateway stops before the end.
		data := append([]byte(header("resume", 0)), file...)
		for len(data) > 0 {
			n := min(len(data), 4096)
			if _, err := c.Write(data[:n]); err != nil {
				return
			}
			data = data[n:]
			time.Sleep(time.Millisecond)
		}
		_ = c.CloseWrite()
	}()
	testenv.Eventually(t, 20*time.Second, "the first lines to be stored", func() error {
		if n := b.msgCount(t); n < 5 {
			return fmt.Errorf("%d frames stored", n)
		}
		return nil
	})
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	r := readReceipt(t, c, 10*time.Second)
	if r.Status != gateway.StatusShutdown || r.Upload != "resume" || r.ResumeLine < 2 {
		t.Fatalf("receipt = %+v, want shutdown with a resume_line", r)
	}
	lines := bytes.SplitAfter(file, []byte("\n"))
	rest := bytes.Join(lines[r.ResumeLine-1:], nil) // tail -n +resume_line
	b2 := setup(t, setupOptions{server: b.srv, env: map[string]string{"GATEWAY_INSTANCE": "test-gw-2"}})
	r2 := send(t, b2.addr(t, 0), append([]byte(header("resume", r.ResumeLine)), rest...))
	if r2.Status != gateway.StatusOK || r2.FirstLine != r.ResumeLine {
		t.Fatalf("resumed receipt = %+v, want ok from line %d", r2, r.ResumeLine)
	}
	checkUploadStored(t, b2, "resume", file)
}

// Compressed input carries the header inside the compressed stream: as the
// first line of one stream, or as a stream of its own before the file's
// (concatenated gzip members, xz streams, zstd frames).
func TestUploadHeaderInsideCompressedInput(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	file := uploadFile(1500)
	formats := map[string]func(testing.TB, []byte) []byte{
		"gzip": gzipped, "xz": xzed, "zstd": zstded,
	}
	for format, compress := range formats {
		for _, separate := range []bool{false, true} {
			name := fmt.Sprintf("%s-separate-%v", format, separate)
			input := compress(t, append([]byte(header(name, 0)), file...))
			if separate {
				input = append(compress(t, []byte(header(name, 0))), compress(t, file)...)
			}
			r := send(t, b.addr(t, 0), input)
			if r.Status != gateway.StatusOK || r.Compression != format || r.Upload != name || r.Lines != int64(len(fileLines(file))) {
				t.Fatalf("%s: receipt = %+v", name, r)
			}
		}
	}
	got := storedByID(t, b)
	for format := range formats {
		for _, separate := range []bool{false, true} {
			ids := topology.UploadLineIDs(topology.DefaultSource, fmt.Sprintf("%s-separate-%v", format, separate))
			for n, data := range fileLines(file) {
				if l, ok := got[ids.Line(n)]; !ok || l.data != data {
					t.Fatalf("%s: line %d = %q, %v; want %q", ids, n, l.data, ok, data)
				}
			}
		}
	}
}

// A header that is not valid ends the connection at once with an error
// receipt saying what is allowed, and stores nothing. A line that only
// looks like a header, or is not the first, is data.
func TestUploadBadHeaderIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	tests := []struct{ header, want string }{
		{"#jetline", "names no upload"},
		{"#jetline first_line=3", "names no upload"},
		{"#jetline upload=", "is not valid: use 1 to 128 letters"},
		{"#jetline upload=a..b", "no '.' at either end or two in a row"},
		{"#jetline upload=.hidden", "no '.' at either end"},
		{"#jetline upload=" + strings.Repeat("n", 129), "1 to 128"},
		{"#jetline upload=caf\u00e9", "is not valid"},
		{"#jetline upload=x first_line=0", "first_line=0 is not a line number"},
		{"#jetline upload=x first_line=-4", "is not a line number"},
		{"#jetline upload=x colour=red", `field "colour=red" is not known`},
		{"#jetline upload=x upload=y", "gives upload twice"},
		{"#jetline upload x", `field "upload" is not known`},
	}
	for _, tt := range tests {
		r := send(t, b.addr(t, 0), []byte(tt.header+"\n{\"i\":1}\n"))
		if r.Status != gateway.StatusError || !strings.Contains(r.Error, tt.want) || r.Lines != 0 || r.ResumeLine != 1 {
			t.Errorf("%q: receipt = %+v; want an error saying %q, resume_line 1", tt.header, r, tt.want)
		}
	}
	if n := b.msgCount(t); n != 0 {
		t.Fatalf("refused headers stored %d frames", n)
	}
	for _, data := range []string{"#jetlinex upload=x\n", "{\"i\":1}\n#jetline upload=x\n", "\n#jetline upload=x\n"} {
		if r := send(t, b.addr(t, 0), []byte(data)); r.Status != gateway.StatusOK || r.Upload != "" {
			t.Errorf("%q: receipt = %+v; want ok, no upload (data, not a header)", data, r)
		}
	}
}

// Two connections under one name on one source: the second is refused,
// saying who holds the name, on the same gateway and on another; on
// another source the name is free. Once the first ends, the name is free.
func TestUploadNameInUseIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_LISTEN": "127.0.0.1:0,logs=127.0.0.1:0"}})
	b2 := setup(t, setupOptions{server: b.srv, env: map[string]string{"GATEWAY_INSTANCE": "test-gw-2"}})
	first := dial(t, b.addr(t, 0))
	if _, err := first.Write([]byte(header("busy", 0) + "{\"i\":1}\n")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the first upload's line to be stored", func() error {
		if n := b.msgCount(t); n != 1 {
			return fmt.Errorf("%d frames", n)
		}
		return nil
	})
	for _, addr := range []string{b.addr(t, 0), b2.addr(t, 0)} {
		r := send(t, addr, []byte(header("busy", 0)+"{\"i\":2}\n"))
		if r.Status != gateway.StatusError || !strings.Contains(r.Error, `upload "busy" on source default is being sent by gateway test-gw, connection 1`) || r.Upload != "busy" {
			t.Fatalf("second sender via %s: receipt = %+v; want refused naming test-gw connection 1", addr, r)
		}
	}
	if r := send(t, b.addr(t, 1), []byte(header("busy", 0)+"{\"i\":3}\n")); r.Status != gateway.StatusOK {
		t.Fatalf("same name on source logs: receipt = %+v, want ok", r)
	}
	if err := first.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := readReceipt(t, first, 10*time.Second); r.Status != gateway.StatusOK {
		t.Fatalf("first sender: receipt = %+v", r)
	}
	if r := send(t, b2.addr(t, 0), []byte(header("busy", 0)+"{\"i\":1}\n")); r.Status != gateway.StatusOK {
		t.Fatalf("after the first ended: receipt = %+v, want ok", r)
	}
}

// A name held by a gateway that died (its key left in the bucket, never
// renewed) is refused until the lease runs out, then taken.
func TestUploadLeaseOfADeadGatewayExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_UPLOAD_LEASE": "2s"}})
	if err := b.gw.SetupUploads(t.Context(), topology.Retry{}); err != nil {
		t.Fatal(err)
	}
	kv, err := b.js.KeyValue(t.Context(), topology.UploadsBucket)
	if err != nil {
		t.Fatal(err)
	}
	held, _ := json.Marshal(map[string]any{"gateway": "dead-gw", "conn": 9, "since": time.Now()})
	if _, err := kv.Create(t.Context(), "default/orphan", held); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if r := send(t, b.addr(t, 0), []byte(header("orphan", 0)+"{\"i\":1}\n")); r.Status != gateway.StatusError || !strings.Contains(r.Error, "dead-gw, connection 9") {
		t.Fatalf("receipt = %+v, want refused naming dead-gw", r)
	}
	testenv.Eventually(t, 10*time.Second, "the dead gateway's hold to expire", func() error {
		r := send(t, b.addr(t, 0), []byte(header("orphan", 0)+"{\"i\":1}\n"))
		if r.Status != gateway.StatusOK {
			return fmt.Errorf("receipt %+v", r)
		}
		return nil
	})
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("the name was free after %s, before its 2s lease ran out", took)
	}
	// The name is given back when the upload ends.
	if _, err := kv.Get(t.Context(), "default/orphan"); err != jetstream.ErrKeyNotFound {
		t.Fatalf("after the upload: Get = %v, want the key deleted", err)
	}
}

// A long upload keeps its name past the lease: the gateway renews it.
func TestUploadHoldIsRenewed(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_UPLOAD_LEASE": "1s"}})
	c := dial(t, b.addr(t, 0))
	if _, err := c.Write([]byte(header("long", 0) + "{\"i\":1}\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if r := send(t, b.addr(t, 0), []byte(header("long", 0))); r.Status != gateway.StatusError || !strings.Contains(r.Error, "being sent by gateway test-gw") {
		t.Fatalf("after 2.5 leases: receipt = %+v, want the name still held", r)
	}
	if _, err := c.Write([]byte("{\"i\":2}\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if r := readReceipt(t, c, 10*time.Second); r.Status != gateway.StatusOK || r.Lines != 2 {
		t.Fatalf("receipt = %+v, want ok with 2 lines", r)
	}
}

// The dead letter of an oversize line of a named upload has the identity
// the line would have had and the upload's name.
func TestUploadDeadLetterKeepsTheUploadIdentity(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{env: map[string]string{"GATEWAY_MAX_LINE_BYTES": "1000", "GATEWAY_INFLIGHT_BYTES": "131072"}})
	input := header("dl", 7) + "{\"i\":7}\n{\"i\":8}\n" + strings.Repeat("z", 2000) + "\n{\"i\":10}\n"
	r := send(t, b.addr(t, 0), []byte(input))
	if r.Status != gateway.StatusOK || r.DeadLettered != 1 || r.FirstLine != 7 {
		t.Fatalf("receipt = %+v", r)
	}
	dls := b.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	h := dls[0].Header
	if h.Get(topology.HeaderLineID) != "default/dl.9" || h.Get(topology.HeaderLine) != "9" || h.Get(topology.HeaderUpload) != "dl" {
		t.Fatalf("dead letter headers = %v; want line id default/dl.9, line 9, upload dl", h)
	}
	got := storedByID(t, b)
	for _, id := range []string{"default/dl.7", "default/dl.8", "default/dl.10"} {
		if _, ok := got[id]; !ok {
			t.Fatalf("line %s is not stored (stored: %v)", id, got)
		}
	}
}
