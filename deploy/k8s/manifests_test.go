package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testcert"
	"github.com/jetline/jetline/shared/runtime/natsconn"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// repoRoot is the jetline repository, two levels up.
const repoRoot = "../.."

// natsRelease is the Helm release name nats/values.yaml is installed as;
// the chart names its Services after it.
const natsRelease = "nats"

// kustomizations are the directories `kubectl apply -k` is meant for. A
// component is checked through the overlays that use it.
var kustomizations = []string{"base", "overlays/keda", "overlays/production"}

// manifests is one kustomization built, each object decoded strictly into
// its API type.
type manifests struct {
	dir           string
	namespaces    map[string]*corev1.Namespace
	deployments   map[string]*appsv1.Deployment
	services      map[string]*corev1.Service
	pdbs          map[string]*policyv1.PodDisruptionBudget
	configMaps    map[string]*corev1.ConfigMap
	secrets       map[string]*corev1.Secret
	scaledObjects map[string]*scaledObject
	pgClusters    map[string]*pgCluster
	// namespaceOf holds every object's namespace, by "Kind/name".
	namespaceOf map[string]string
}

// kinds maps each apiVersion and kind the manifests may hold to where it
// is decoded. Anything else fails the test.
func (m *manifests) decode(apiVersion, kind, name string, doc []byte) error {
	strict := func(dst any) error {
		if err := decodeStrict(doc, dst); err != nil {
			return fmt.Errorf("%s %s does not decode strictly as %s: %w", kind, name, apiVersion, err)
		}
		return nil
	}
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return put(m.namespaces, name, strict)
	case "apps/v1 Deployment":
		return put(m.deployments, name, strict)
	case "v1 Service":
		return put(m.services, name, strict)
	case "policy/v1 PodDisruptionBudget":
		return put(m.pdbs, name, strict)
	case "v1 ConfigMap":
		return put(m.configMaps, name, strict)
	case "v1 Secret":
		return put(m.secrets, name, strict)
	case "keda.sh/v1alpha1 ScaledObject":
		return put(m.scaledObjects, name, strict)
	case "postgresql.cnpg.io/v1 Cluster":
		return put(m.pgClusters, name, strict)
	}
	return fmt.Errorf("%s %s: apiVersion %s kind %s is not one the test knows; add its API type", kind, name, apiVersion, kind)
}

// decodeStrict decodes the YAML doc into dst as the API server's strict
// field validation does: keys match field names case-sensitively, and an
// unknown or duplicate field is an error. (sigs.k8s.io/yaml's
// UnmarshalStrict alone matches keys case-insensitively, as encoding/json
// does, and so lets readOnlyRootFileSystem pass for
// readOnlyRootFilesystem.)
func decodeStrict(doc []byte, dst any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, dst)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

func put[T any](into map[string]*T, name string, decode func(any) error) error {
	if _, dup := into[name]; dup {
		return fmt.Errorf("%s is defined twice", name)
	}
	v := new(T)
	if err := decode(v); err != nil {
		return err
	}
	into[name] = v
	return nil
}

// build builds the kustomization in dir with kustomize's library, as
// `kubectl apply -k dir` does (files outside dir may not be loaded), and
// decodes what it makes.
func build(t *testing.T, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &manifests{
		dir:           dir,
		namespaces:    map[string]*corev1.Namespace{},
		deployments:   map[string]*appsv1.Deployment{},
		services:      map[string]*corev1.Service{},
		pdbs:          map[string]*policyv1.PodDisruptionBudget{},
		configMaps:    map[string]*corev1.ConfigMap{},
		secrets:       map[string]*corev1.Secret{},
		scaledObjects: map[string]*scaledObject{},
		pgClusters:    map[string]*pgCluster{},
		namespaceOf:   map[string]string{},
	}
	for _, r := range res.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
		}
		if err := m.decode(r.GetApiVersion(), r.GetKind(), r.GetName(), doc); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		m.namespaceOf[r.GetKind()+"/"+r.GetName()] = r.GetNamespace()
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

// program is what the test knows of the program a container runs.
type program struct {
	known func() map[string]bool
	// parse parses and validates e as the program does at start and
	// returns its health address and, for the worker, its config.
	parse func(e map[string]string) (healthAddr string, cfg any, err error)
}

var programs = map[string]program{
	"gateway": {
		known: func() map[string]bool { return envVars(reflect.TypeFor[gateway.Config]()) },
		parse: func(e map[string]string) (string, any, error) {
			var c gateway.Config
			if err := env.ParseWithOptions(&c, env.Options{Environment: e}); err != nil {
				return "", nil, err
			}
			return c.HealthAddr, c, c.Validate()
		},
	},
	"worker": {
		known: func() map[string]bool { return envVars(reflect.TypeFor[worker.Config]()) },
		parse: func(e map[string]string) (string, any, error) {
			var c worker.Config
			if err := env.ParseWithOptions(&c, env.Options{Environment: e}); err != nil {
				return "", nil, err
			}
			return c.HealthAddr, c, c.Validate()
		},
	},
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

// workload is one Deployment's container as the program would see it.
type workload struct {
	deploy    *appsv1.Deployment
	container *corev1.Container
	name      string            // the program: gateway or worker
	env       map[string]string // resolved, file paths pointing at real files
	health    int               // the health server's port
	cfg       any               // gateway.Config or worker.Config
}

func TestKustomizationsBuild(t *testing.T) {
	t.Parallel()
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			m := build(t, dir)
			for _, want := range []string{"jetline-gateway", "jetline-worker"} {
				if m.deployments[want] == nil {
					t.Errorf("no Deployment %s; have %v", want, slices.Sorted(maps.Keys(m.deployments)))
				}
			}
			if m.services["jetline-gateway"] == nil {
				t.Error("no Service jetline-gateway")
			}
		})
	}
}

// TestKustomizationsCoverEveryFile checks that each kustomization listed
// in [kustomizations] exists, that every component is used by one (or the
// test would never build it), and that every manifest file is listed by a
// kustomization, so none is left out of what is applied and checked.
func TestKustomizationsCoverEveryFile(t *testing.T) {
	t.Parallel()
	listed := map[string]bool{}
	var components []string
	usedComponents := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		dir := filepath.Dir(path)
		var k kustypes.Kustomization
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := decodeStrict(b, &k); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch k.Kind {
		case kustypes.ComponentKind:
			components = append(components, dir)
		case kustypes.KustomizationKind:
			if !slices.Contains(kustomizations, dir) {
				t.Errorf("%s is a kustomization the test does not build: add it to kustomizations", dir)
			}
		default:
			t.Errorf("%s: kind %q", path, k.Kind)
		}
		for _, c := range k.Components {
			usedComponents[filepath.Clean(filepath.Join(dir, c))] = true
		}
		files := slices.Clone(k.Resources)
		for _, g := range k.ConfigMapGenerator {
			files = append(files, g.FileSources...)
		}
		for _, f := range files {
			p := filepath.Clean(filepath.Join(dir, f))
			if st, err := os.Stat(p); err != nil {
				t.Errorf("%s lists %s: %v", path, f, err)
			} else if !st.IsDir() {
				listed[p] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range kustomizations {
		if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err != nil {
			t.Errorf("kustomization %s: %v", dir, err)
		}
	}
	for _, c := range components {
		if !usedComponents[c] {
			t.Errorf("component %s is used by no kustomization, so it is never built or checked", c)
		}
	}
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" || d.Name() == "kustomization.yaml" || path == "nats/values.yaml" {
			return err
		}
		if !listed[path] {
			t.Errorf("%s is listed by no kustomization", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestManifests builds every kustomization and checks what it makes
// against the programs: each set variable is one their Config reads and
// the whole environment is a valid configuration, probes hit /healthz and
// /readyz on the health address's port, Services and PodDisruptionBudgets
// select the pods they are for on ports they listen on, and the KEDA
// trigger names the real stream and consumer.
func TestManifests(t *testing.T) {
	t.Parallel()
	values := readNATSValues(t)
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			m := build(t, dir)
			ws := map[string]*workload{}
			for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
				if w := checkWorkload(t, m, m.deployments[name]); w != nil {
					ws[w.name] = w
				}
			}
			if ws["gateway"] == nil || ws["worker"] == nil {
				t.Fatalf("want a gateway and a worker Deployment; have %v", slices.Sorted(maps.Keys(ws)))
			}
			checkNamespace(t, m)
			checkServices(t, m, ws)
			checkPipelinesFed(t, m, ws)
			checkPDBs(t, m)
			checkSecretsUsed(t, m)
			checkScaledObjects(t, m, ws, values)
			checkNATSClient(t, ws, values)
		})
	}
}

// checkWorkload checks one Deployment and returns its program's view of
// it.
func checkWorkload(t *testing.T, m *manifests, d *appsv1.Deployment) *workload {
	t.Helper()
	spec := d.Spec.Template.Spec
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("Deployment %s: selector %v does not match its pod labels %v", d.Name, d.Spec.Selector, d.Spec.Template.Labels)
	}
	if len(spec.Containers) != 1 {
		t.Errorf("Deployment %s has %d containers, want one", d.Name, len(spec.Containers))
		return nil
	}
	c := &spec.Containers[0]
	prog, ok := programs[c.Name]
	if !ok {
		t.Errorf("Deployment %s: container %q runs no program the test knows (gateway, worker)", d.Name, c.Name)
		return nil
	}
	w := &workload{deploy: d, container: c, name: c.Name}
	where := "Deployment " + d.Name + " container " + c.Name

	// The image: the Dockerfile target of the same name, tagged.
	repo, tag, _ := strings.Cut(c.Image, ":")
	if repo != "jetline/"+c.Name && !strings.HasSuffix(repo, "/jetline/"+c.Name) || tag == "" || tag == "latest" {
		t.Errorf("%s: image %q; want jetline/%s (or a registry's .../jetline/%s) with a tag other than latest", where, c.Image, c.Name, c.Name)
	}

	// Non-root with a read-only root filesystem, requests set.
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("Deployment %s: pod securityContext must set runAsNonRoot: true and a non-zero runAsUser", d.Name)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: securityContext must set readOnlyRootFilesystem: true, allowPrivilegeEscalation: false and drop ALL capabilities", where)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("%s: no %s request", where, r)
		}
	}

	// The environment: every variable one the program reads, resolved as
	// the kubelet would, with the files it names written out from their
	// ConfigMaps and Secrets.
	known := prog.known()
	if len(known) < 10 {
		t.Fatalf("found only %d env tags in the %s Config", len(known), c.Name)
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom hides which variables are set from the test; list them in env", where)
	}
	w.env = map[string]string{}
	for _, e := range c.Env {
		if !known[e.Name] {
			t.Errorf("%s sets %s, which the %s's Config does not read", where, e.Name, c.Name)
		}
		if _, dup := w.env[e.Name]; dup {
			t.Errorf("%s sets %s twice", where, e.Name)
		}
		v, err := m.resolve(e)
		if err != nil {
			t.Errorf("%s: %s: %v", where, e.Name, err)
		}
		w.env[e.Name] = v
	}
	m.materialize(t, where, spec, c, w.env)

	addr, cfg, err := prog.parse(w.env)
	if err != nil {
		t.Errorf("%s: the environment is not a valid %s configuration: %v", where, c.Name, err)
		return nil
	}
	w.cfg = cfg
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: health address %q: %v", where, addr, err)
		return nil
	}
	w.health, _ = strconv.Atoi(port)

	// Probes on the health server's real endpoints.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			t.Errorf("%s: port %s is %s; the programs listen on TCP", where, p.Name, p.Protocol)
		}
		ports[p.Name] = p.ContainerPort
	}
	if !slices.Contains(slices.Collect(maps.Values(ports)), int32(w.health)) {
		t.Errorf("%s: no containerPort for the health address %s", where, addr)
	}
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"startupProbe", c.StartupProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s", where, p.kind)
			continue
		}
		if got := p.probe.HTTPGet.Path; got != p.path {
			t.Errorf("%s: %s gets %s, want %s", where, p.kind, got, p.path)
		}
		if got, ok := resolvePort(p.probe.HTTPGet.Port, ports); !ok || got != int32(w.health) {
			t.Errorf("%s: %s on port %s (%d), but the health server listens on %s", where, p.kind, p.probe.HTTPGet.Port.String(), got, addr)
		}
	}

	// Time enough to start and to stop.
	var nats natsconn.Config
	var shutdown time.Duration
	switch c := cfg.(type) {
	case gateway.Config:
		nats, shutdown = c.NATS, c.ShutdownTimeout
		listeners, err := c.Listeners()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range listeners {
			_, lp, _ := net.SplitHostPort(l.Addr)
			n, _ := strconv.Atoi(lp)
			if !slices.Contains(slices.Collect(maps.Values(ports)), int32(n)) {
				t.Errorf("%s: listener %s (source %s) has no containerPort", where, l.Addr, l.Source)
			}
		}
	case worker.Config:
		nats, shutdown = c.NATS, c.ShutdownTimeout
		for _, f := range c.Pipelines {
			if _, err := pipeline.LoadSpec(f); err != nil {
				t.Errorf("%s: WORKER_PIPELINES: %v", where, err)
			}
		}
	}
	if sp := c.StartupProbe; sp != nil {
		period, failures := sp.PeriodSeconds, sp.FailureThreshold
		if period == 0 {
			period = 10 // Kubernetes' defaults
		}
		if failures == 0 {
			failures = 3
		}
		if window := time.Duration(sp.InitialDelaySeconds+period*failures) * time.Second; window <= nats.ConnectTimeout {
			t.Errorf("%s: the startup probe gives up after %s, before NATS_CONNECT_TIMEOUT (%s): the health server starts only once NATS is reached", where, window, nats.ConnectTimeout)
		}
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= shutdown {
		t.Errorf("Deployment %s: terminationGracePeriodSeconds %v must exceed the %s's shutdown timeout %s", d.Name, g, c.Name, shutdown)
	}
	return w
}

// resolve returns the value the kubelet would give e, or an error if it
// names a ConfigMap, Secret or key the manifests do not provide.
func (m *manifests) resolve(e corev1.EnvVar) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	if e.Value != "" {
		return "", fmt.Errorf("both value and valueFrom")
	}
	switch vf := e.ValueFrom; {
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		if s := m.secrets[ref.Name]; s != nil {
			if v, ok := s.StringData[ref.Key]; ok {
				return v, nil
			}
			if v, ok := s.Data[ref.Key]; ok {
				return string(v), nil
			}
			return "", fmt.Errorf("Secret %s has no key %s", ref.Name, ref.Key)
		}
		for _, c := range m.pgClusters {
			if name, keys := c.appSecret(); name == ref.Name {
				if !slices.Contains(keys, ref.Key) {
					return "", fmt.Errorf("CloudNativePG's Secret %s has no key %s (it has %v)", ref.Name, ref.Key, keys)
				}
				if ref.Key != "uri" {
					return "", fmt.Errorf("the test knows only the uri key of %s", ref.Name)
				}
				return (&url.URL{Scheme: "postgresql", User: url.UserPassword(c.Spec.Bootstrap.InitDB.Owner, "generated"),
					Host: c.Name + "-rw:5432", Path: "/" + c.Spec.Bootstrap.InitDB.Database}).String(), nil
			}
		}
		return "", fmt.Errorf("Secret %s is neither in the manifests nor made by a CloudNativePG Cluster of them", ref.Name)
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm := m.configMaps[ref.Name]
		if cm == nil {
			return "", fmt.Errorf("ConfigMap %s is not in the manifests", ref.Name)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			return "", fmt.Errorf("ConfigMap %s has no key %s", ref.Name, ref.Key)
		}
		return v, nil
	}
	return "", fmt.Errorf("valueFrom the test does not know: %+v", e.ValueFrom)
}

// externalSecrets are Secrets the manifests mount but do not make: the
// operator creates them, as the README's Kubernetes section says. For each,
// fill writes files standing in for its keys into dir.
var externalSecrets = map[string]func(t *testing.T, dir string){
	"jetline-gateway-tls": func(t *testing.T, dir string) {
		pair := testcert.NewCA(t, "k8s-test-ca").Issue(t, "gateway.example.com")
		for name, src := range map[string]string{"tls.crt": pair.CertFile, "tls.key": pair.KeyFile} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	},
}

// materialize finds, for every variable of env whose value is an absolute
// path (or, for WORKER_PIPELINES, a list of them), the volume mounted
// there, writes the file the container would see into a temporary
// directory and points the variable at it, so the program's own checks
// read real contents.
func (m *manifests) materialize(t *testing.T, where string, spec corev1.PodSpec, c *corev1.Container, env map[string]string) {
	t.Helper()
	root := t.TempDir()
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			t.Errorf("%s mounts volume %s, which the pod does not define", where, vm.Name)
			continue
		}
		dir := filepath.Join(root, filepath.FromSlash(vm.MountPath))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case v.ConfigMap != nil:
			cm := m.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Errorf("%s: volume %s: ConfigMap %s is not in the manifests", where, v.Name, v.ConfigMap.Name)
				continue
			}
			for k, data := range cm.Data {
				if err := os.WriteFile(filepath.Join(dir, k), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		case v.Secret != nil:
			if s := m.secrets[v.Secret.SecretName]; s != nil {
				for k, data := range s.StringData {
					if err := os.WriteFile(filepath.Join(dir, k), []byte(data), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			} else if fill, ok := externalSecrets[v.Secret.SecretName]; ok {
				fill(t, dir)
			} else {
				t.Errorf("%s: volume %s: Secret %s is not in the manifests, and not one the README tells the operator to create", where, v.Name, v.Secret.SecretName)
			}
		}
		if !vm.ReadOnly && v.EmptyDir == nil {
			t.Errorf("%s mounts %s writable; mount ConfigMaps and Secrets readOnly", where, vm.MountPath)
		}
	}
	for name, value := range env {
		if !strings.HasPrefix(value, "/") {
			continue
		}
		var out []string
		for _, p := range strings.Split(value, ",") {
			var mounted bool
			for _, vm := range c.VolumeMounts {
				if strings.HasPrefix(p, strings.TrimSuffix(vm.MountPath, "/")+"/") {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("%s: %s=%s is in no volume mount; the image's own files are not meant (mount them)", where, name, p)
			}
			local := filepath.Join(root, filepath.FromSlash(p))
			out = append(out, local)
		}
		env[name] = strings.Join(out, ",")
	}
}

// resolvePort returns the number a probe or Service port names.
func resolvePort(p intstr.IntOrString, named map[string]int32) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, slices.Contains(slices.Collect(maps.Values(named)), p.IntVal)
	}
	n, ok := named[p.StrVal]
	return n, ok
}

// selects reports whether selector (matchLabels) picks pods with labels.
// An empty selector picks nothing here: the manifests never mean all pods.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// selected returns the Deployments whose pods selector picks.
func (m *manifests) selected(selector map[string]string) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		if d := m.deployments[name]; selects(selector, d.Spec.Template.Labels) {
			out = append(out, d)
		}
	}
	return out
}

func checkNamespace(t *testing.T, m *manifests) {
	t.Helper()
	if len(m.namespaces) != 1 {
		t.Fatalf("want one Namespace, have %v", slices.Sorted(maps.Keys(m.namespaces)))
	}
	var ns string
	for ns = range m.namespaces {
	}
	for obj, got := range m.namespaceOf {
		if !strings.HasPrefix(obj, "Namespace/") && got != ns {
			t.Errorf("%s is in namespace %q, not %q", obj, got, ns)
		}
	}
}

// checkServices checks that each Service selects one Deployment's pods
// and sends to ports they listen on, and that the gateway's Service
// carries every listener of GATEWAY_LISTEN and GATEWAY_TLS_LISTEN on the
// same port number.
func checkServices(t *testing.T, m *manifests, ws map[string]*workload) {
	t.Helper()
	for name, s := range m.services {
		ds := m.selected(s.Spec.Selector)
		if len(ds) != 1 {
			t.Errorf("Service %s selects %d Deployments' pods, want one (selector %v)", name, len(ds), s.Spec.Selector)
			continue
		}
		c := ds[0].Spec.Template.Spec.Containers[0]
		named := map[string]int32{}
		for _, p := range c.Ports {
			named[p.Name] = p.ContainerPort
		}
		for _, p := range s.Spec.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				t.Errorf("Service %s port %s is %s, want TCP", name, p.Name, p.Protocol)
			}
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			if _, ok := resolvePort(target, named); !ok {
				t.Errorf("Service %s port %s targets %s, which container %s of %s does not expose", name, p.Name, target.String(), c.Name, ds[0].Name)
			}
		}
	}
	gw := ws["gateway"]
	svc := m.services["jetline-gateway"]
	if svc == nil || !selects(svc.Spec.Selector, gw.deploy.Spec.Template.Labels) {
		t.Fatalf("Service jetline-gateway does not select the gateway's pods")
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("Service jetline-gateway: externalTrafficPolicy %q; want Local, so the gateway sees senders' addresses (GATEWAY_ALLOW_CIDRS, GATEWAY_MAX_CONNECTIONS_PER_IP)", svc.Spec.ExternalTrafficPolicy)
	}
	listeners, err := gw.cfg.(gateway.Config).Listeners()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range listeners {
		_, lp, _ := net.SplitHostPort(l.Addr)
		n, _ := strconv.Atoi(lp)
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(n) }) {
			t.Errorf("Service jetline-gateway has no port %d for listener %s (source %s, TLS %v)", n, l.Addr, l.Source, l.TLS)
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == int32(gw.health) {
			t.Errorf("Service jetline-gateway exposes the health port %d to senders", p.Port)
		}
	}
}

// checkPipelinesFed checks that the workers load every spec the ConfigMap
// jetline-pipelines carries, and that the gateway listens on the source of
// each: a spec no worker loads, or one whose source no port feeds, is a
// pipeline that never fills its tables.
func checkPipelinesFed(t *testing.T, m *manifests, ws map[string]*workload) {
	t.Helper()
	listeners, err := ws["gateway"].cfg.(gateway.Config).Listeners()
	if err != nil {
		t.Fatal(err)
	}
	fed := map[string]bool{}
	for _, l := range listeners {
		fed[l.Source] = true
	}
	loaded := map[string]bool{}
	for _, f := range ws["worker"].cfg.(worker.Config).Pipelines {
		loaded[filepath.Base(f)] = true
		spec, err := pipeline.LoadSpec(f)
		if err != nil {
			continue // checkWorkload reports it
		}
		if !fed[spec.Source] {
			t.Errorf("pipeline %s reads source %q, which no GATEWAY_LISTEN or GATEWAY_TLS_LISTEN entry feeds (sources fed: %v)", filepath.Base(f), spec.Source, slices.Sorted(maps.Keys(fed)))
		}
	}
	var cm *corev1.ConfigMap
	for _, v := range ws["worker"].deploy.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && strings.HasPrefix(v.ConfigMap.Name, "jetline-pipelines") {
			cm = m.configMaps[v.ConfigMap.Name]
		}
	}
	if cm == nil {
		t.Fatalf("the worker mounts no ConfigMap jetline-pipelines")
	}
	for name := range cm.Data {
		if !loaded[name] {
			t.Errorf("ConfigMap jetline-pipelines carries %s, which WORKER_PIPELINES does not load", name)
		}
	}
}

// checkPDBs checks that each program's pods are covered by exactly one
// PodDisruptionBudget, and that each budget selects one Deployment.
func checkPDBs(t *testing.T, m *manifests) {
	t.Helper()
	covered := map[string]int{}
	for name, p := range m.pdbs {
		if p.Spec.Selector == nil || len(p.Spec.Selector.MatchExpressions) > 0 {
			t.Errorf("PodDisruptionBudget %s: want a matchLabels selector", name)
			continue
		}
		ds := m.selected(p.Spec.Selector.MatchLabels)
		if len(ds) != 1 {
			t.Errorf("PodDisruptionBudget %s selects %d Deployments, want one", name, len(ds))
			continue
		}
		covered[ds[0].Name]++
		if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
			t.Errorf("PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", name)
		}
	}
	for name := range m.deployments {
		if covered[name] != 1 {
			t.Errorf("Deployment %s is covered by %d PodDisruptionBudgets, want one", name, covered[name])
		}
	}
}

// checkSecretsUsed checks that every Secret the manifests make is read by
// a container, and holds example values that say so.
func checkSecretsUsed(t *testing.T, m *manifests) {
	t.Helper()
	used := map[string]bool{}
	for _, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					used[e.ValueFrom.SecretKeyRef.Name] = true
				}
			}
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				used[v.Secret.SecretName] = true
			}
		}
	}
	for name, s := range m.secrets {
		if !used[name] {
			t.Errorf("Secret %s is read by no container", name)
		}
		if len(s.Data) > 0 {
			t.Errorf("Secret %s has data; the examples use stringData so the placeholders are readable", name)
		}
		for k, v := range s.StringData {
			if !strings.Contains(v, "CHANGE-ME") {
				t.Errorf("Secret %s key %s holds %q, which does not say CHANGE-ME: the manifests carry placeholders only", name, k, v)
			}
		}
	}
}

// checkScaledObjects checks the KEDA ScaledObjects: the target exists and
// leaves its replica count to KEDA, the trigger reads the lag of the real
// stream and consumer from the chart's monitoring endpoint, and the lag
// threshold is one round of one worker's batches.
func checkScaledObjects(t *testing.T, m *manifests, ws map[string]*workload, values *natsValues) {
	t.Helper()
	for name, so := range m.scaledObjects {
		ref := so.Spec.ScaleTargetRef
		d := m.deployments[ref.Name]
		if d == nil || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
			t.Errorf("ScaledObject %s targets %s %s %s, which is not a Deployment of the manifests", name, ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		if d.Spec.Template.Spec.Containers[0].Name != "worker" {
			t.Errorf("ScaledObject %s scales %s; only workers scale on lag", name, d.Name)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("ScaledObject %s scales Deployment %s, which sets replicas: %d; drop it, or every apply resets what KEDA chose", name, d.Name, *d.Spec.Replicas)
		}
		wc := ws["worker"].cfg.(worker.Config)
		gc := ws["gateway"].cfg.(gateway.Config)
		minR, maxR := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount
		if minR == nil || maxR == nil || *minR < 1 || *maxR < *minR {
			t.Errorf("ScaledObject %s: want 1 ≤ minReplicaCount ≤ maxReplicaCount; got %v, %v", name, minR, maxR)
		} else if perWorker := wc.BatchSize * wc.Concurrency; int(*maxR)*perWorker > wc.EffectiveMaxAckPending() {
			t.Errorf("ScaledObject %s: maxReplicaCount %d workers × WORKER_BATCH_SIZE × WORKER_CONCURRENCY (%d) exceeds the consumer's max ack pending %d (WORKER_MAX_ACK_PENDING): the extra workers would wait", name, *maxR, perWorker, wc.EffectiveMaxAckPending())
		}
		if len(so.Spec.Triggers) != 1 {
			t.Errorf("ScaledObject %s has %d triggers, want one", name, len(so.Spec.Triggers))
			continue
		}
		tr := so.Spec.Triggers[0]
		md := tr.Metadata
		if tr.Type != "nats-jetstream" {
			t.Errorf("ScaledObject %s trigger type %q, want nats-jetstream", name, tr.Type)
		}
		if md["stream"] != topology.StreamName || md["consumer"] != topology.ConsumerName {
			t.Errorf("ScaledObject %s reads stream %q consumer %q; the programs use %q and %q", name, md["stream"], md["consumer"], topology.StreamName, topology.ConsumerName)
		}
		if md["account"] != "$G" {
			t.Errorf("ScaledObject %s: account %q; the chart's servers with token authorization keep everything in $G", name, md["account"])
		}
		wantEndpoint := fmt.Sprintf("%s-headless.%s.svc.cluster.local:%d", natsRelease, m.namespaceOf["ScaledObject/"+name], values.Config.Monitor.Port)
		if md["natsServerMonitoringEndpoint"] != wantEndpoint {
			t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q, want %q: the chart's headless Service, through which KEDA reaches each server of the cluster", name, md["natsServerMonitoringEndpoint"], wantEndpoint)
		}
		// Under a backlog frames are full, so a batch holds
		// min(WORKER_BATCH_SIZE, WORKER_BATCH_BYTES / GATEWAY_FRAME_BYTES)
		// frames, and a worker works on WORKER_CONCURRENCY of them.
		framesPerBatch := min(wc.BatchSize, max(1, wc.BatchBytes/gc.FrameBytes))
		want := wc.Concurrency * framesPerBatch
		if got, err := strconv.Atoi(md["lagThreshold"]); err != nil || got != want {
			t.Errorf("ScaledObject %s: lagThreshold %q; want %d frames, WORKER_CONCURRENCY (%d) × min(WORKER_BATCH_SIZE %d, WORKER_BATCH_BYTES %d / GATEWAY_FRAME_BYTES %d)",
				name, md["lagThreshold"], want, wc.Concurrency, wc.BatchSize, wc.BatchBytes, gc.FrameBytes)
		}
	}
	if strings.Contains(m.dir, "keda") || strings.Contains(m.dir, "production") {
		if len(m.scaledObjects) == 0 {
			t.Errorf("%s has no ScaledObject", m.dir)
		}
	}
}

// checkNATSClient checks that the programs reach the servers the chart
// values make, with the token the servers expect, replicating the
// streams as many times as there are servers.
func checkNATSClient(t *testing.T, ws map[string]*workload, values *natsValues) {
	t.Helper()
	serverToken := values.Container.Env["NATS_TOKEN"]
	for _, w := range ws {
		var nc natsconn.Config
		var replicas int
		switch c := w.cfg.(type) {
		case gateway.Config:
			nc, replicas = c.NATS, c.Stream.Replicas
		case worker.Config:
			nc, replicas = c.NATS, c.Stream.Replicas
		}
		for _, s := range strings.Split(nc.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil || u.Hostname() != natsRelease || u.Port() != "4222" {
				t.Errorf("%s: NATS_URL entry %q; want nats://%s:4222, the chart's Service", w.name, s, natsRelease)
			}
		}
		if replicas != values.Config.Cluster.Replicas {
			t.Errorf("%s: INGEST_REPLICAS=%d, but the chart runs %d servers", w.name, replicas, values.Config.Cluster.Replicas)
		}
		var ref *corev1.SecretKeySelector
		for _, e := range w.container.Env {
			if e.Name == "NATS_TOKEN" && e.ValueFrom != nil {
				ref = e.ValueFrom.SecretKeyRef
			}
		}
		if ref == nil || serverToken.ValueFrom == nil || serverToken.ValueFrom.SecretKeyRef == nil ||
			ref.Name != serverToken.ValueFrom.SecretKeyRef.Name || ref.Key != serverToken.ValueFrom.SecretKeyRef.Key {
			t.Errorf("%s: NATS_TOKEN must come from the Secret and key the NATS servers read it from (nats/values.yaml container.env.NATS_TOKEN)", w.name)
		}
	}
}

// readNATSValues decodes nats/values.yaml strictly and checks it: a
// JetStream cluster of three on file storage, token authorization, the
// same sync_interval as deploy/nats/, with the README's measured cost.
func readNATSValues(t *testing.T) *natsValues {
	t.Helper()
	b, err := os.ReadFile("nats/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v natsValues
	if err := decodeStrict(b, &v); err != nil {
		t.Fatalf("nats/values.yaml: %v", err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("nats/values.yaml: cluster enabled %v with %d replicas, want 3", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	if !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled {
		t.Errorf("nats/values.yaml: want JetStream on, with file storage on a volume")
	}
	var stream topology.StreamConfig
	if err := env.ParseWithOptions(&stream, env.Options{Environment: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	if size := c.JetStream.FileStore.PVC.Size.Value(); size <= stream.MaxBytes {
		t.Errorf("nats/values.yaml: the JetStream volume (%s) must hold more than INGEST_MAX_BYTES (%d)", c.JetStream.FileStore.PVC.Size.String(), stream.MaxBytes)
	}
	if !c.Monitor.Enabled || c.Monitor.Port == 0 {
		t.Errorf("nats/values.yaml: the monitoring port must be on; KEDA reads /jsz there")
	}
	if c.Merge.Authorization.Token != "<< $NATS_TOKEN >>" {
		t.Errorf("nats/values.yaml: authorization.token %q, want << $NATS_TOKEN >> (from the container's environment)", c.Merge.Authorization.Token)
	}
	for _, env := range []map[string]corev1.EnvVar{v.Container.Env, v.NATSBox.Container.Env} {
		if e := env["NATS_TOKEN"]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("nats/values.yaml: NATS_TOKEN of the servers and nats-box must come from a Secret")
		}
	}

	// The same choice as deploy/nats/cluster.
	conf, err := os.ReadFile(filepath.Join(repoRoot, "deploy/nats/cluster/common.conf"))
	if err != nil {
		t.Fatal(err)
	}
	sm := regexp.MustCompile(`(?m)^\s*sync_interval:\s*(\S+)`).FindSubmatch(conf)
	if sm == nil {
		t.Fatal("deploy/nats/cluster/common.conf sets no sync_interval")
	}
	if got := c.JetStream.Merge.SyncInterval; got != string(sm[1]) {
		t.Errorf("nats/values.yaml: sync_interval %q, but deploy/nats/cluster/common.conf says %q", got, sm[1])
	}
	// Its measured cost, as the README's table states it.
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\s*\\| (2m \\(default\\)|1s|always)\\s*\\|\\s*([0-9,]+) lines/s\\s*\\|\\s*([0-9,]+) lines/s").FindAllSubmatch(readme, -1)
	if len(rows) != 3 {
		t.Fatalf("README: found %d of the sync_interval table's rows 2m, 1s and always", len(rows))
	}
	for _, r := range rows {
		if !bytes.Contains(b, r[3]) {
			t.Errorf("nats/values.yaml does not state the README's end-to-end rate with sync_interval %s (%s lines/s)", r[1], r[3])
		}
	}
	return &v
}

// TestPipelinesMatchTheImage checks that the pipeline specs the ConfigMap
// carries are those of deploy/pipelines, which the worker image ships and
// the ConfigMap is mounted over.
func TestPipelinesMatchTheImage(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("base/pipelines/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no specs in base/pipelines: %v", err)
	}
	for _, f := range files {
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(repoRoot, "deploy/pipelines", filepath.Base(f)))
		if err != nil {
			t.Errorf("%s has no counterpart in deploy/pipelines: %v", f, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from deploy/pipelines/%s: copy it again", f, filepath.Base(f))
		}
	}
}

// TestImagesAreTheMakefiles checks that the base runs the image names the
// Makefile's `images` target builds.
func TestImagesAreTheMakefiles(t *testing.T) {
	t.Parallel()
	mk, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	built := map[string]bool{}
	for _, m := range regexp.MustCompile(`--target (\w+) -t (\S+)`).FindAllSubmatch(mk, -1) {
		built[string(m[1])+" "+string(m[2])] = true
	}
	m := build(t, "base")
	for _, d := range m.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		if !built[c.Name+" "+c.Image] {
			t.Errorf("Deployment %s runs %s, which `make images` does not build as target %s (it builds %v)", d.Name, c.Image, c.Name, slices.Sorted(maps.Keys(built)))
		}
	}
}

// TestReadmeKubernetesSection checks that the README's Kubernetes section
// applies kustomizations that exist and names the Secrets the operator
// must create.
func TestReadmeKubernetesSection(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := bytes.Cut(readme, []byte("\n## Kubernetes\n"))
	if !ok {
		t.Fatal("README has no Kubernetes section")
	}
	section, _, _ = bytes.Cut(section, []byte("\n## "))
	applies := regexp.MustCompile(`kubectl apply -k deploy/k8s/([A-Za-z0-9_/-]+)`).FindAllSubmatch(section, -1)
	if len(applies) == 0 {
		t.Error("the README's Kubernetes section applies no kustomization")
	}
	for _, a := range applies {
		if dir := strings.TrimSuffix(string(a[1]), "/"); !slices.Contains(kustomizations, dir) {
			t.Errorf("README applies deploy/k8s/%s, which is not one of %v", dir, kustomizations)
		}
	}
	for name := range externalSecrets {
		if !bytes.Contains(section, []byte("create secret tls "+name)) {
			t.Errorf("README's Kubernetes section does not say how to create Secret %s", name)
		}
	}
	if !bytes.Contains(section, []byte("deploy/k8s/nats/values.yaml")) {
		t.Error("README's Kubernetes section does not install NATS with deploy/k8s/nats/values.yaml")
	}
}
