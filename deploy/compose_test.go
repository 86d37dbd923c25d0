package deploy

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/worker"
)

// repoRoot is the project directory docker-compose.yml is loaded from.
const repoRoot = ".."

// loadCompose loads docker-compose.yml as `docker compose` would, with an
// empty environment (so every ${VAR:-default} takes its default) and the
// given profiles enabled. No Docker engine is involved.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnv(nil),
		cli.WithProfiles(profiles),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	for _, name := range []string{"nats", "postgres", "gateway", "worker"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s missing; have %v", name, p.ServiceNames())
		}
	}
	// The cluster belongs to its profile; without it only the main
	// services run.
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		if _, ok := p.Services[name]; ok {
			t.Errorf("service %s runs without the cluster profile", name)
		}
	}
}

func TestComposeGatewayPublishes4000(t *testing.T) {
	t.Parallel()
	gw := loadCompose(t).Services["gateway"]
	if !slices.ContainsFunc(gw.Ports, func(p types.ServicePortConfig) bool {
		return p.Target == 4000 && p.Published == "4000" && (p.Protocol == "" || p.Protocol == "tcp")
	}) {
		t.Errorf("gateway does not publish 4000:4000/tcp; ports: %+v", gw.Ports)
	}
}

func TestComposeWorkerScales(t *testing.T) {
	t.Parallel()
	w := loadCompose(t).Services["worker"]
	if replicas := w.GetScale(); replicas != 2 || w.Deploy == nil || w.Deploy.Replicas == nil {
		t.Errorf("worker should set deploy.replicas: 2; it runs %d", replicas)
	}
	// A fixed host port would make `--scale worker=N` fail for N > 1.
	if len(w.Ports) > 0 {
		t.Errorf("worker publishes ports %+v; it must not, so it can be scaled", w.Ports)
	}
	if w.ContainerName != "" {
		t.Errorf("worker has container_name %q; it must not, so it can be scaled", w.ContainerName)
	}
}

// TestComposeEnvironmentIsKnown catches a variable in docker-compose.yml that
// no program reads, such as a typo or a setting that was renamed.
func TestComposeEnvironmentIsKnown(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	tests := []struct {
		service string
		known   map[string]bool
	}{
		{"gateway", envVars(reflect.TypeFor[gateway.Config]())},
		{"worker", envVars(reflect.TypeFor[worker.Config]())},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			t.Parallel()
			if len(tt.known) < 5 {
				t.Fatalf("found only %d env tags in the %s config: %v", len(tt.known), tt.service, tt.known)
			}
			svc := p.Services[tt.service]
			if len(svc.Environment) == 0 {
				t.Fatalf("%s sets no environment", tt.service)
			}
			for name := range svc.Environment {
				if !tt.known[name] {
					t.Errorf("%s sets %s, which its Config does not read", tt.service, name)
				}
			}
		})
	}
}

// envVars returns every variable named by an `env` tag in struct type t,
// descending into nested structs (with their envPrefix) that carry no tag of
// their own.
func envVars(t reflect.Type) map[string]bool {
	vars := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for f := range t.Fields() {
			if !f.IsExported() {
				continue
			}
			if tag := f.Tag.Get("env"); tag != "" {
				name, _, _ := strings.Cut(tag, ",")
				vars[prefix+name] = true
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, prefix+f.Tag.Get("envPrefix"))
			}
		}
	}
	walk(t, "")
	return vars
}

func TestComposeEnvironmentParses(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	tests := []struct {
		service string
		parse   func(map[string]string) error
	}{
		{"gateway", func(e map[string]string) error {
			var c gateway.Config
			if err := env.ParseWithOptions(&c, env.Options{Environment: e}); err != nil {
				return err
			}
			return c.Validate()
		}},
		{"worker", func(e map[string]string) error {
			var c worker.Config
			if err := env.ParseWithOptions(&c, env.Options{Environment: e}); err != nil {
				return err
			}
			return c.Validate()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			t.Parallel()
			e := map[string]string{}
			for k, v := range p.Services[tt.service].Environment {
				if v != nil {
					e[k] = *v
				}
			}
			if err := tt.parse(e); err != nil {
				t.Errorf("%s's compose environment is not a valid configuration: %v", tt.service, err)
			}
		})
	}
}

func TestComposeHealthchecks(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, "cluster")
	for name, svc := range p.Services {
		hc := svc.HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 || hc.Test[0] == "NONE" {
			t.Errorf("service %s has no healthcheck: %+v", name, hc)
		}
	}
	// The programs' images have no shell or curl: the check must exec the
	// program itself, at the path the Dockerfile puts it.
	for _, name := range []string{"gateway", "worker"} {
		want := types.HealthCheckTest{"CMD", "/" + name, "healthcheck"}
		if got := p.Services[name].HealthCheck.Test; !slices.Equal(got, want) {
			t.Errorf("%s healthcheck = %q, want %q", name, got, want)
		}
	}
	// NATS must report JetStream ready, not just the process up.
	for _, name := range []string{"nats", "nats-1", "nats-2", "nats-3"} {
		if test := strings.Join(p.Services[name].HealthCheck.Test, " "); !strings.Contains(test, "/healthz?js-enabled-only=true") {
			t.Errorf("%s healthcheck %q does not check JetStream", name, test)
		}
	}
}

func TestComposeDependsOnHealthy(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	want := map[string][]string{
		"gateway": {"nats"},
		"worker":  {"nats", "postgres"},
	}
	for name, svc := range p.Services {
		for dep, d := range svc.DependsOn {
			if d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s depends on %s with condition %q, want %s", name, dep, d.Condition, types.ServiceConditionHealthy)
			}
		}
	}
	for name, deps := range want {
		for _, dep := range deps {
			if _, ok := p.Services[name].DependsOn[dep]; !ok {
				t.Errorf("%s does not depend on %s", name, dep)
			}
		}
	}
}

func TestComposeBuildsFromDockerfile(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	for _, name := range []string{"gateway", "worker"} {
		svc := p.Services[name]
		if svc.Build == nil {
			t.Errorf("%s has no build section", name)
			continue
		}
		root, _ := filepath.Abs(repoRoot)
		if svc.Build.Context != root {
			t.Errorf("%s builds in %s, want the repository root %s", name, svc.Build.Context, root)
		}
		df := dockerfile(t, filepath.Join(svc.Build.Context, svc.Build.Dockerfile))
		if svc.Build.Target != name || !df.hasStage(name) {
			t.Errorf("%s builds target %q; want %q, a stage of the Dockerfile (stages %v)", name, svc.Build.Target, name, df.stages)
		}
		if svc.Image == "" || strings.HasSuffix(svc.Image, ":latest") {
			t.Errorf("%s image %q: give it a name and a tag other than latest", name, svc.Image)
		}
	}
	if p.Services["gateway"].Image == p.Services["worker"].Image {
		t.Error("gateway and worker build different targets into the same image name")
	}
}

func TestComposeImagesPinned(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, "cluster")
	for name, svc := range p.Services {
		if svc.Build != nil {
			continue
		}
		_, tag, ok := strings.Cut(svc.Image, ":")
		if !ok || tag == "" || tag == "latest" {
			t.Errorf("%s uses image %q; pin a version", name, svc.Image)
		}
	}
}

func TestComposeMountsExist(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, "cluster")
	for name, svc := range p.Services {
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist: %v", name, v.Source, err)
			}
		}
	}
	// Each NATS server is started with a config file from its mount.
	for _, name := range []string{"nats", "nats-1", "nats-2", "nats-3"} {
		svc := p.Services[name]
		cmd := []string(svc.Command)
		i := slices.Index(cmd, "-c")
		if i < 0 || i+1 >= len(cmd) {
			t.Errorf("%s command %q does not name a config file", name, cmd)
			continue
		}
		if host := hostPath(svc, cmd[i+1]); host == "" {
			t.Errorf("%s: config %s is not in a mounted directory", name, cmd[i+1])
		} else if _, err := os.Stat(host); err != nil {
			t.Errorf("%s: config %s (%s on the host) is missing: %v", name, cmd[i+1], host, err)
		}
	}
}

// hostPath maps a path inside svc's container to the host path of the bind
// mount holding it, or "".
func hostPath(svc types.ServiceConfig, inContainer string) string {
	for _, v := range svc.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		if inContainer == v.Target {
			return v.Source
		}
		if rest, ok := strings.CutPrefix(inContainer, v.Target+"/"); ok {
			return filepath.Join(v.Source, rest)
		}
	}
	return ""
}

// TestComposeStopGracePeriods checks that compose waits longer than the
// programs' own shutdown timeouts before it kills them.
func TestComposeStopGracePeriods(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	var gw gateway.Config
	var wk worker.Config
	for _, c := range []any{&gw, &wk} {
		if err := env.ParseWithOptions(c, env.Options{Environment: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	for name, shutdown := range map[string]time.Duration{"gateway": gw.ShutdownTimeout, "worker": wk.ShutdownTimeout} {
		grace := p.Services[name].StopGracePeriod
		if grace == nil || time.Duration(*grace) <= shutdown {
			t.Errorf("%s stop_grace_period %v must exceed its shutdown timeout %s", name, grace, shutdown)
		}
	}
}

func TestComposeClusterProfile(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, "cluster")
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		svc, ok := p.Services[name]
		if !ok {
			t.Errorf("cluster profile lacks %s", name)
			continue
		}
		if !slices.Contains(svc.Profiles, "cluster") {
			t.Errorf("%s profiles = %v, want cluster", name, svc.Profiles)
		}
	}
}

// TestComposePipelinesShipInTheImage checks that the specs the compose file
// names are in deploy/pipelines, which the worker image copies to
// /etc/jetline/pipelines.
func TestComposePipelinesShipInTheImage(t *testing.T) {
	t.Parallel()
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dockerfile), "COPY deploy/pipelines /etc/jetline/pipelines") {
		t.Fatal("the worker image does not copy deploy/pipelines to /etc/jetline/pipelines")
	}
	p := loadCompose(t)
	v := p.Services["worker"].Environment["WORKER_PIPELINES"]
	if v == nil || *v == "" {
		t.Fatal("worker has no WORKER_PIPELINES")
	}
	for _, spec := range strings.Split(*v, ",") {
		rel, ok := strings.CutPrefix(spec, "/etc/jetline/pipelines/")
		if !ok {
			t.Errorf("WORKER_PIPELINES entry %q is not under /etc/jetline/pipelines", spec)
			continue
		}
		if _, err := os.Stat(filepath.Join("pipelines", rel)); err != nil {
			t.Errorf("WORKER_PIPELINES names %s, but deploy/pipelines/%s is missing: %v", spec, rel, err)
		}
	}
}
