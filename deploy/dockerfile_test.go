package deploy

import (
	"bufio"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/worker"
)

// dockerfileInfo is what the tests need to know about a Dockerfile.
type dockerfileInfo struct {
	stages      []string            // stage names, in order
	entrypoints map[string]string   // stage → ENTRYPOINT as written
	exposes     map[string][]string // stage → EXPOSEd ports
	text        string
}

func (d dockerfileInfo) hasStage(name string) bool { return slices.Contains(d.stages, name) }

var fromLine = regexp.MustCompile(`(?i)^FROM\s+(?:--platform=\S+\s+)?\S+(?:\s+AS\s+(\S+))?\s*$`)

// dockerfile reads the Dockerfile at path, joining continued lines.
func dockerfile(t *testing.T, path string) dockerfileInfo {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	d := dockerfileInfo{entrypoints: map[string]string{}, exposes: map[string][]string{}, text: string(b)}
	var stage, cont string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cont += l + " "
			continue
		}
		line, cont = cont+line, ""
		instr, args, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			m := fromLine.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("cannot parse %q", line)
			}
			stage = m[1]
			d.stages = append(d.stages, stage)
		case "ENTRYPOINT":
			d.entrypoints[stage] = strings.TrimSpace(args)
		case "EXPOSE":
			d.exposes[stage] = append(d.exposes[stage], strings.Fields(args)...)
		}
	}
	return d
}

func TestDockerfileTargets(t *testing.T) {
	t.Parallel()
	d := dockerfile(t, "Dockerfile")
	// The images expose the ports the programs listen on by default.
	var gw gateway.Config
	var wk worker.Config
	for _, c := range []any{&gw, &wk} {
		if err := env.ParseWithOptions(c, env.Options{Environment: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		stage      string
		entrypoint string
		ports      []string
	}{
		{"gateway", `["/gateway"]`, []string{port(t, gw.Listen), port(t, gw.HealthAddr)}},
		{"worker", `["/worker"]`, []string{port(t, wk.HealthAddr)}},
	}
	for _, tt := range tests {
		if !d.hasStage(tt.stage) {
			t.Errorf("no stage %q; stages: %v", tt.stage, d.stages)
			continue
		}
		if got := d.entrypoints[tt.stage]; got != tt.entrypoint {
			t.Errorf("stage %s ENTRYPOINT %s, want %s", tt.stage, got, tt.entrypoint)
		}
		if got := d.exposes[tt.stage]; !slices.Equal(got, tt.ports) {
			t.Errorf("stage %s EXPOSE %v, want %v", tt.stage, got, tt.ports)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "gcr.io/distroless/static-debian12:nonroot",
		"type=cache,target=/go/pkg/mod", "type=cache,target=/root/.cache/go-build", "./gateway/cmd/gateway", "./worker/cmd/worker"} {
		if !strings.Contains(d.text, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// port returns the port of a host:port address.
func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("default address %q: %v", addr, err)
	}
	return p
}

// TestDockerfileGoVersion keeps the builder image on the Go release go.mod
// asks for.
func TestDockerfileGoVersion(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("no go directive in go.mod")
	}
	d := dockerfile(t, "Dockerfile")
	if want := "ARG GO_VERSION=" + string(m[1]) + "\n"; !strings.Contains(d.text, want) {
		t.Errorf("Dockerfile should build with Go %s (go.mod): want %q", m[1], strings.TrimSpace(want))
	}
}

// TestDockerignoreKeepsDataOut guards the build context: .data holds the
// NATS store and the Postgres data of `make run` and can be huge.
func TestDockerignoreKeepsDataOut(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatalf("read Dockerfile.dockerignore: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	if !slices.Contains(lines, "*") {
		t.Error("Dockerfile.dockerignore should exclude everything (*) and allow what the build needs")
	}
	for _, need := range []string{"!go.mod", "!go.sum", "!gateway/", "!worker/", "!shared/", "!deploy/pipelines/"} {
		if !slices.Contains(lines, need) {
			t.Errorf("Dockerfile.dockerignore does not let %s in", strings.TrimPrefix(need, "!"))
		}
	}
}
