package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
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
	// The cluster and the monitoring belong to their profiles; without
	// them only the main services run.
	for _, name := range []string{"nats-1", "nats-2", "nats-3", "prometheus", "grafana"} {
		if _, ok := p.Services[name]; ok {
			t.Errorf("service %s runs without its profile", name)
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

// The gateway holds one open file per connection; its container must allow
// at least as many as it accepts by default (GATEWAY_MAX_CONNECTIONS).
func TestComposeGatewayOpenFiles(t *testing.T) {
	t.Parallel()
	gw := loadCompose(t).Services["gateway"]
	cfg, err := env.ParseAsWithOptions[gateway.Config](env.Options{Environment: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	nofile := gw.Ulimits["nofile"]
	if nofile == nil || nofile.Soft < cfg.MaxConnections || nofile.Hard < nofile.Soft {
		t.Errorf("gateway ulimits nofile = %+v; want soft and hard above GATEWAY_MAX_CONNECTIONS (%d)", nofile, cfg.MaxConnections)
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

// envVars returns every variable the configuration struct type t reads,
// as caarlos0/env itself lists them (nested structs and their envPrefix
// included).
func envVars(t reflect.Type) map[string]bool {
	params, err := env.GetFieldParams(reflect.New(t).Interface())
	if err != nil {
		panic(fmt.Sprintf("list the variables of %s: %v", t, err))
	}
	vars := map[string]bool{}
	for _, p := range params {
		vars[p.Key] = true
	}
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
	p := loadCompose(t, "cluster", "monitoring")
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
	p := loadCompose(t, "monitoring")
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
	p := loadCompose(t, "cluster", "monitoring")
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
	p := loadCompose(t, "cluster", "monitoring")
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

// TestComposePipelinesHaveAPort checks that every spec the worker loads by
// default has its source among the gateway's listeners, on a port the
// gateway publishes, so each shipped pipeline can be fed from the host.
func TestComposePipelinesHaveAPort(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	gw := p.Services["gateway"]
	listen := gw.Environment["GATEWAY_LISTEN"]
	if listen == nil {
		t.Fatal("gateway has no GATEWAY_LISTEN")
	}
	listeners, err := gateway.ParseListen(*listen)
	if err != nil {
		t.Fatal(err)
	}
	specs := p.Services["worker"].Environment["WORKER_PIPELINES"]
	if specs == nil || len(strings.Split(*specs, ",")) < 2 {
		t.Fatalf("WORKER_PIPELINES = %v, want tweets.yaml and tweets-full.yaml", specs)
	}
	for _, spec := range strings.Split(*specs, ",") {
		pl, err := pipeline.Load(filepath.Join("pipelines", strings.TrimPrefix(spec, "/etc/jetline/pipelines/")))
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(listeners, func(l gateway.Listener) bool { return l.Source == pl.Source() })
		if i < 0 {
			t.Errorf("%s reads source %q, but GATEWAY_LISTEN (%s) has no listener for it", spec, pl.Source(), *listen)
			continue
		}
		_, port, _ := net.SplitHostPort(listeners[i].Addr)
		if !slices.ContainsFunc(gw.Ports, func(p types.ServicePortConfig) bool {
			return strconv.FormatUint(uint64(p.Target), 10) == port && p.Published == port
		}) {
			t.Errorf("%s is fed on port %s, which the gateway does not publish; ports: %+v", spec, port, gw.Ports)
		}
	}
}

// dashboardDir holds the Grafana dashboards the monitoring profile
// provisions.
const dashboardDir = "grafana/dashboards"

// dashboardDatasourceUID is the uid of the provisioned Prometheus data
// source, which every panel must use.
const dashboardDatasourceUID = "prometheus"

// TestComposeMonitoringProfile checks the `monitoring` profile: Prometheus
// scrapes every gateway and worker on the port their health server (which
// serves /metrics) listens on, and Grafana provisions the Prometheus data
// source and the dashboards, readable without a login.
func TestComposeMonitoringProfile(t *testing.T) {
	t.Parallel()
	p := loadCompose(t, "monitoring")
	for _, name := range []string{"prometheus", "grafana"} {
		svc, ok := p.Services[name]
		if !ok {
			t.Fatalf("monitoring profile lacks %s; have %v", name, p.ServiceNames())
		}
		if !slices.Equal(svc.Profiles, []string{"monitoring"}) {
			t.Errorf("%s profiles = %v, want [monitoring]", name, svc.Profiles)
		}
	}

	t.Run("prometheus", func(t *testing.T) {
		t.Parallel()
		prom := p.Services["prometheus"]
		var configFile string
		for _, arg := range prom.Command {
			if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
				configFile = v
			}
		}
		host := hostPath(prom, configFile)
		if configFile == "" || host == "" {
			t.Fatalf("prometheus command %q does not name a config file in a mounted directory", prom.Command)
		}
		var cfg struct {
			ScrapeConfigs []struct {
				JobName     string `yaml:"job_name"`
				MetricsPath string `yaml:"metrics_path"`
				DNSSD       []struct {
					Names []string `yaml:"names"`
					Type  string   `yaml:"type"`
					Port  int      `yaml:"port"`
				} `yaml:"dns_sd_configs"`
			} `yaml:"scrape_configs"`
		}
		readYAML(t, host, &cfg)
		want := map[string]int{"gateway": healthPort(t, p, "gateway"), "worker": healthPort(t, p, "worker")}
		for _, sc := range cfg.ScrapeConfigs {
			if sc.MetricsPath != "" && sc.MetricsPath != metrics.Path {
				t.Errorf("job %s scrapes %s; the programs serve %s", sc.JobName, sc.MetricsPath, metrics.Path)
			}
			for _, sd := range sc.DNSSD {
				for _, name := range sd.Names {
					port, ok := want[name]
					if !ok {
						continue
					}
					delete(want, name)
					// Docker's DNS answers a service name with the address of
					// every replica: type A finds them all.
					if sd.Type != "A" || sd.Port != port {
						t.Errorf("job %s finds %s by DNS type %q port %d; want type A, port %d (its health address)", sc.JobName, name, sd.Type, sd.Port, port)
					}
				}
			}
		}
		for name := range want {
			t.Errorf("prometheus.yml has no dns_sd_configs entry for service %s", name)
		}
	})

	t.Run("grafana", func(t *testing.T) {
		t.Parallel()
		g := p.Services["grafana"]
		env := map[string]string{}
		for k, v := range g.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		if env["GF_AUTH_ANONYMOUS_ENABLED"] != "true" || env["GF_AUTH_ANONYMOUS_ORG_ROLE"] != "Viewer" {
			t.Errorf("grafana should let anonymous viewers in (GF_AUTH_ANONYMOUS_ENABLED=true, GF_AUTH_ANONYMOUS_ORG_ROLE=Viewer); environment %v", env)
		}
		if _, ok := g.DependsOn["prometheus"]; !ok {
			t.Error("grafana does not depend on prometheus")
		}
		provisioning := hostPath(g, "/etc/grafana/provisioning")
		if provisioning == "" {
			t.Fatal("grafana mounts nothing at /etc/grafana/provisioning")
		}

		var ds struct {
			Datasources []struct {
				UID, Type, URL string
			} `yaml:"datasources"`
		}
		readYAML(t, filepath.Join(provisioning, "datasources", "prometheus.yaml"), &ds)
		if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].UID != dashboardDatasourceUID {
			t.Fatalf("datasources %+v: want one of type prometheus with uid %q, the uid the dashboards use", ds.Datasources, dashboardDatasourceUID)
		}
		if want := "http://prometheus:" + strconv.FormatUint(uint64(p.Services["prometheus"].Ports[0].Target), 10); ds.Datasources[0].URL != want {
			t.Errorf("datasource url %q, want %q", ds.Datasources[0].URL, want)
		}

		var dash struct {
			Providers []struct {
				Options struct{ Path string } `yaml:"options"`
			} `yaml:"providers"`
		}
		readYAML(t, filepath.Join(provisioning, "dashboards", "jetline.yaml"), &dash)
		if len(dash.Providers) != 1 {
			t.Fatalf("dashboard providers %+v, want one", dash.Providers)
		}
		dir := hostPath(g, dash.Providers[0].Options.Path)
		if dir == "" {
			t.Fatalf("dashboard provider reads %s, which is not mounted", dash.Providers[0].Options.Path)
		}
		if abs, _ := filepath.Abs(dashboardDir); dir != abs {
			t.Errorf("dashboard provider reads %s, want %s", dir, abs)
		}
		if home := env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
			if h := hostPath(g, home); h == "" {
				t.Errorf("home dashboard %s is not mounted", home)
			} else if _, err := os.Stat(h); err != nil {
				t.Errorf("home dashboard: %v", err)
			}
		}
	})
}

// healthPort returns the port of service's health server (which also
// serves /metrics): its HEALTH_ADDR from the compose environment, else
// the program's default.
func healthPort(t *testing.T, p *types.Project, service string) int {
	t.Helper()
	e := map[string]string{}
	for k, v := range p.Services[service].Environment {
		if v != nil {
			e[k] = *v
		}
	}
	var addr string
	switch service {
	case "gateway":
		var c gateway.Config
		if err := env.ParseWithOptions(&c, env.Options{Environment: e}); err != nil {
			t.Fatal(err)
		}
		addr = c.HealthAddr
	case "worker":
		var c worker.Config
		if err := env.ParseWithOptions(&c, env.Options{Environment: e}); err != nil {
			t.Fatal(err)
		}
		addr = c.HealthAddr
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s health address %q: %v", service, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s health address %q: %v", service, addr, err)
	}
	return n
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
