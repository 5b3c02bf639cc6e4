package deploy_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// repoRoot is relative to this package's directory, where go test runs.
const repoRoot = ".."

// The two images this repository builds, one per service.
var serviceImages = []string{"tenantbase/control-plane", "tenantbase/tenant-plane"}

type meta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

// object is one rendered document: the generic form proves it parses, the
// raw bytes decode again into the typed views below.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	raw        []byte
}

func (o object) decode(t *testing.T, v any) {
	t.Helper()
	if err := yaml.Unmarshal(o.raw, v); err != nil {
		t.Fatalf("%s/%s: %v", o.Kind, o.Metadata.Name, err)
	}
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type envFrom struct {
	ConfigMapRef *struct {
		Name string `yaml:"name"`
	} `yaml:"configMapRef"`
	SecretRef *struct {
		Name string `yaml:"name"`
	} `yaml:"secretRef"`
}

type container struct {
	Name           string    `yaml:"name"`
	Image          string    `yaml:"image"`
	Command        []string  `yaml:"command"`
	Args           []string  `yaml:"args"`
	Env            []envVar  `yaml:"env"`
	EnvFrom        []envFrom `yaml:"envFrom"`
	LivenessProbe  *probe    `yaml:"livenessProbe"`
	ReadinessProbe *probe    `yaml:"readinessProbe"`
	Ports          []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func (c container) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
}

type workload struct {
	Kind     string `yaml:"kind"`
	Metadata meta   `yaml:"metadata"`
	Spec     struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				SecurityContext struct {
					RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
					RunAsUser    *int64 `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				InitContainers []container `yaml:"initContainers"`
				Containers     []container `yaml:"containers"`
				Volumes        []volume    `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Projected *struct {
		Sources []struct {
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
		} `yaml:"sources"`
	} `yaml:"projected"`
}

// configMaps names the ConfigMaps a volume shows, directly or projected.
func (v volume) configMaps() []string {
	var names []string
	if v.ConfigMap != nil {
		names = append(names, v.ConfigMap.Name)
	}
	if v.Projected != nil {
		for _, src := range v.Projected.Sources {
			if src.ConfigMap != nil {
				names = append(names, src.ConfigMap.Name)
			}
		}
	}
	return names
}

type service struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Ports []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"port"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

// rendered is one kustomization's output.
type rendered []object

func (r rendered) find(kind, name string) (object, bool) {
	for _, o := range r {
		if o.Kind == kind && o.Metadata.Name == name {
			return o, true
		}
	}
	return object{}, false
}

var nameHash = regexp.MustCompile(`^-[a-z0-9]{10}$`)

// generated finds an object a kustomize generator made from name, which
// carries a content hash suffix.
func (r rendered) generated(kind, name string) (object, bool) {
	for _, o := range r {
		if rest, ok := strings.CutPrefix(o.Metadata.Name, name); o.Kind == kind && ok && nameHash.MatchString(rest) {
			return o, true
		}
	}
	return object{}, false
}

func (r rendered) must(t *testing.T, kind, name string) object {
	t.Helper()
	o, ok := r.find(kind, name)
	if !ok {
		t.Fatalf("no %s %q rendered", kind, name)
	}
	return o
}

func (r rendered) workloads(t *testing.T) []workload {
	t.Helper()
	var ws []workload
	for _, o := range r {
		if o.Kind == "Deployment" || o.Kind == "StatefulSet" {
			var w workload
			o.decode(t, &w)
			ws = append(ws, w)
		}
	}
	return ws
}

func (r rendered) workload(t *testing.T, kind, name string) workload {
	t.Helper()
	var w workload
	r.must(t, kind, name).decode(t, &w)
	return w
}

func (r rendered) configMapData(t *testing.T, name string) map[string]string {
	t.Helper()
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	r.must(t, "ConfigMap", name).decode(t, &cm)
	return cm.Data
}

// render builds a kustomization the way `kubectl kustomize` does (load
// restrictions on), so a file reference that a cluster tool would refuse
// fails here too.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out rendered
	for _, res := range m.Resources() {
		raw, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		var generic map[string]any
		if err := yaml.Unmarshal(raw, &generic); err != nil {
			t.Fatalf("%s: rendered document does not parse: %v\n%s", dir, err, raw)
		}
		o := object{raw: raw}
		if err := yaml.Unmarshal(raw, &o); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		out = append(out, o)
	}
	return out
}

var overlays = []struct {
	name, dir    string
	natsReplicas int
}{
	{name: "base", dir: "deploy/k8s/base", natsReplicas: 3},
	{name: "dev", dir: "deploy/k8s/overlays/dev", natsReplicas: 1},
}

func TestManifestsRender(t *testing.T) {
	tests := []struct {
		dir           string
		want          []string // kind/name
		wantGenerated []string // kind/name before the hash suffix
		wantNot       []string
		namespace     string
	}{
		{
			dir: "deploy/k8s/base",
			want: []string{
				"Deployment/control-plane", "Service/control-plane",
				"Deployment/tenant-plane", "Service/tenant-plane",
				"Deployment/ingress", "Service/ingress",
				"StatefulSet/nats", "Service/nats", "Service/nats-cluster",
				"HTTPRoute/tenantbase",
				"NetworkPolicy/control-plane", "NetworkPolicy/tenant-plane", "NetworkPolicy/nats",
				"NetworkPolicy/postgres", "NetworkPolicy/ingress",
			},
			wantNot: []string{"StatefulSet/postgres", "Deployment/mailpit", "Namespace/tenantbase"},
			wantGenerated: []string{
				"ConfigMap/control-plane-env", "ConfigMap/tenant-plane-env", "ConfigMap/nats-config", "ConfigMap/ingress-nginx",
			},
		},
		{
			dir: "deploy/k8s/overlays/dev",
			want: []string{
				"Namespace/tenantbase",
				"Deployment/control-plane", "Deployment/tenant-plane", "Deployment/ingress",
				"StatefulSet/nats", "StatefulSet/postgres", "Service/postgres",
				"Deployment/mailpit", "Service/mailpit",
				"NetworkPolicy/control-plane", "NetworkPolicy/tenant-plane", "NetworkPolicy/nats",
				"NetworkPolicy/postgres", "NetworkPolicy/ingress",
			},
			wantGenerated: []string{
				"Secret/control-plane", "Secret/tenant-plane", "Secret/service-token", "Secret/postgres",
				"ConfigMap/control-plane-env", "ConfigMap/tenant-plane-env", "ConfigMap/nats-config", "ConfigMap/ingress-nginx",
			},
			wantNot:   []string{"HTTPRoute/tenantbase"},
			namespace: "tenantbase",
		},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			r := render(t, tt.dir)
			have := map[string]bool{}
			for _, o := range r {
				if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
					t.Errorf("document without apiVersion, kind or name:\n%s", o.raw)
				}
				have[o.Kind+"/"+o.Metadata.Name] = true
				if tt.namespace != "" && o.Kind != "Namespace" && o.Metadata.Namespace != tt.namespace {
					t.Errorf("%s/%s: namespace %q, want %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, tt.namespace)
				}
			}
			for _, w := range tt.want {
				if !have[w] {
					t.Errorf("missing %s", w)
				}
			}
			for _, w := range tt.wantGenerated {
				kind, name, _ := strings.Cut(w, "/")
				if _, ok := r.generated(kind, name); !ok {
					t.Errorf("missing generated %s", w)
				}
			}
			for _, w := range tt.wantNot {
				if have[w] {
					t.Errorf("unexpected %s", w)
				}
			}
		})
	}
}

// Go programs (our services and nats-server) get a soft memory limit below
// the container's hard one.
func isGoProgram(image string) bool {
	return strings.HasPrefix(image, "tenantbase/") || strings.HasPrefix(image, "nats:")
}

func TestManifestWorkloadsAreHardened(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.name, func(t *testing.T) {
			for _, w := range render(t, ov.dir).workloads(t) {
				pod := w.Spec.Template.Spec
				if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
					t.Errorf("%s %s: pod securityContext.runAsNonRoot is not true", w.Kind, w.Metadata.Name)
				}
				if u := pod.SecurityContext.RunAsUser; u == nil || *u == 0 {
					t.Errorf("%s %s: pod securityContext.runAsUser is not a non-root uid", w.Kind, w.Metadata.Name)
				}
				all := append(slices.Clone(pod.InitContainers), pod.Containers...)
				for i, c := range all {
					where := fmt.Sprintf("%s %s container %s", w.Kind, w.Metadata.Name, c.Name)
					serving := i >= len(pod.InitContainers)
					if serving && (c.LivenessProbe == nil || c.ReadinessProbe == nil) {
						t.Errorf("%s: needs a liveness and a readiness probe", where)
					}
					for _, res := range []string{"cpu", "memory"} {
						if c.Resources.Requests[res] == "" || c.Resources.Limits[res] == "" {
							t.Errorf("%s: needs a %s request and limit", where, res)
						}
					}
					if sc := c.SecurityContext; sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("%s: readOnlyRootFilesystem is not true", where)
					}
					if sc := c.SecurityContext; sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("%s: allowPrivilegeEscalation is not false", where)
					}
					if !isGoProgram(c.Image) {
						continue
					}
					soft, ok := c.env("GOMEMLIMIT")
					if !ok {
						t.Errorf("%s: no GOMEMLIMIT", where)
						continue
					}
					softBytes, err := parseGoMemLimit(soft)
					if err != nil {
						t.Errorf("%s: GOMEMLIMIT %q: %v", where, soft, err)
						continue
					}
					hardBytes, err := parseQuantity(c.Resources.Limits["memory"])
					if err != nil {
						t.Errorf("%s: memory limit: %v", where, err)
						continue
					}
					if softBytes >= hardBytes || softBytes < hardBytes*3/4 {
						t.Errorf("%s: GOMEMLIMIT %s should sit a little below the memory limit %s", where, soft, c.Resources.Limits["memory"])
					}
				}
			}
		})
	}
}

var binaryUnits = []struct {
	suffix string
	factor int64
}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}}

// parseQuantity reads the binary-suffixed Kubernetes quantities used here.
func parseQuantity(q string) (int64, error) {
	for _, u := range binaryUnits {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.factor, err
		}
	}
	return strconv.ParseInt(q, 10, 64)
}

// parseGoMemLimit reads GOMEMLIMIT's syntax (a number with B, KiB, MiB or GiB).
func parseGoMemLimit(s string) (int64, error) {
	if n, ok := strings.CutSuffix(s, "B"); ok && n != "" && (n[len(n)-1] < '0' || n[len(n)-1] > '9') {
		return parseQuantity(n)
	}
	return strconv.ParseInt(strings.TrimSuffix(s, "B"), 10, 64)
}

func TestManifestControlPlaneMigratesBeforeServing(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.name, func(t *testing.T) {
			w := render(t, ov.dir).workload(t, "Deployment", "control-plane")
			pod := w.Spec.Template.Spec
			if len(pod.InitContainers) != 1 {
				t.Fatalf("want one init container, got %d", len(pod.InitContainers))
			}
			migrate, serve := pod.InitContainers[0], pod.Containers[0]
			if migrate.Image != serve.Image {
				t.Errorf("migrations run from %q, the server from %q", migrate.Image, serve.Image)
			}
			if !reflect.DeepEqual(migrate.Args, []string{"migrate"}) || migrate.Command != nil {
				t.Errorf("init container runs %v %v, want the image's binary with [migrate]", migrate.Command, migrate.Args)
			}
			if !reflect.DeepEqual(migrate.EnvFrom, serve.EnvFrom) {
				t.Errorf("init container reads other configuration than the server")
			}
		})
	}
}

func TestManifestProbesUseServiceEndpoints(t *testing.T) {
	tests := []struct {
		name, liveness, readiness string
	}{
		{name: "control-plane", liveness: "/health", readiness: "/health/db"},
		{name: "tenant-plane", liveness: "/health", readiness: "/health"},
		{name: "ingress", liveness: "/healthz", readiness: "/healthz"},
	}
	r := render(t, "deploy/k8s/base")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := r.workload(t, "Deployment", tt.name).Spec.Template.Spec.Containers[0]
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != tt.liveness || c.LivenessProbe.HTTPGet.Port != "http" {
				t.Errorf("liveness probe %+v, want GET %s on the http port", c.LivenessProbe, tt.liveness)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != tt.readiness || c.ReadinessProbe.HTTPGet.Port != "http" {
				t.Errorf("readiness probe %+v, want GET %s on the http port", c.ReadinessProbe, tt.readiness)
			}
		})
	}
}

// servicePorts maps a Service's port names to numbers.
func servicePorts(t *testing.T, r rendered, name string) map[string]int {
	t.Helper()
	var s service
	r.must(t, "Service", name).decode(t, &s)
	ports := map[string]int{}
	for _, p := range s.Spec.Ports {
		ports[p.Name] = p.Port
	}
	return ports
}

func TestManifestHTTPRouteMatchesTenantHeader(t *testing.T) {
	r := render(t, "deploy/k8s/base")
	var route struct {
		APIVersion string `yaml:"apiVersion"`
		Spec       struct {
			ParentRefs []struct {
				Name string `yaml:"name"`
			} `yaml:"parentRefs"`
			Rules []struct {
				Matches []struct {
					Path struct {
						Type  string `yaml:"type"`
						Value string `yaml:"value"`
					} `yaml:"path"`
					Headers []struct {
						Type  string `yaml:"type"`
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"headers"`
				} `yaml:"matches"`
				BackendRefs []struct {
					Name string `yaml:"name"`
					Port int    `yaml:"port"`
				} `yaml:"backendRefs"`
			} `yaml:"rules"`
		} `yaml:"spec"`
	}
	r.must(t, "HTTPRoute", "tenantbase").decode(t, &route)
	if route.APIVersion != "gateway.networking.k8s.io/v1" {
		t.Errorf("apiVersion %q", route.APIVersion)
	}
	if len(route.Spec.ParentRefs) != 1 {
		t.Errorf("parentRefs %+v, want the one Gateway", route.Spec.ParentRefs)
	}

	var tenantRE string
	backendFor := map[bool]string{} // keyed by "matches on X-TENANT"
	for _, rule := range route.Spec.Rules {
		if len(rule.Matches) != 1 || len(rule.BackendRefs) != 1 {
			t.Fatalf("rule %+v: want one match and one backend", rule)
		}
		m, b := rule.Matches[0], rule.BackendRefs[0]
		if m.Path.Type != "PathPrefix" || m.Path.Value != "/" {
			t.Errorf("rule for %s matches path %+v, want every path", b.Name, m.Path)
		}
		onHeader := false
		for _, h := range m.Headers {
			if strings.EqualFold(h.Name, "X-TENANT") {
				onHeader = true
				tenantRE = h.Value
				if h.Type != "RegularExpression" {
					t.Errorf("X-TENANT match type %q", h.Type)
				}
			}
		}
		if _, dup := backendFor[onHeader]; dup {
			t.Errorf("two rules with X-TENANT match = %v", onHeader)
		}
		backendFor[onHeader] = b.Name
		// Only a Service's public port may be a backend.
		if ports := servicePorts(t, r, b.Name); ports["http"] != b.Port {
			t.Errorf("backend %s:%d is not the Service's public port %d", b.Name, b.Port, ports["http"])
		}
	}
	if backendFor[true] != "tenant-plane" || backendFor[false] != "control-plane" {
		t.Errorf("X-TENANT routes to %q, the rest to %q", backendFor[true], backendFor[false])
	}
	re, err := regexp.Compile("^(?:" + tenantRE + ")$")
	if err != nil {
		t.Fatalf("X-TENANT regexp: %v", err)
	}
	for value, want := range map[string]bool{"42": true, "abc": true, "": false} {
		if re.MatchString(value) != want {
			t.Errorf("X-TENANT %q matches = %v, want %v", value, !want, want)
		}
	}
}

func TestManifestServicesExposeConfiguredPorts(t *testing.T) {
	tests := []struct {
		name              string
		env               string // the plane's env ConfigMap
		public, internal  int
		nginxUpstreamName string
	}{
		{name: "control-plane", env: "control-plane-env", public: 8081, internal: 8082, nginxUpstreamName: "control_plane"},
		{name: "tenant-plane", env: "tenant-plane-env", public: 8083, internal: 8084, nginxUpstreamName: "tenant_plane"},
	}
	upstreams := nginxUpstreams(t, filepath.Join(repoRoot, "deploy/nginx/upstreams.conf"))
	for _, ov := range overlays {
		r := render(t, ov.dir)
		for _, tt := range tests {
			t.Run(ov.name+"/"+tt.name, func(t *testing.T) {
				ports := servicePorts(t, r, tt.name)
				if ports["http"] != tt.public || ports["internal"] != tt.internal {
					t.Errorf("Service ports %v, want http %d and internal %d", ports, tt.public, tt.internal)
				}
				env := r.configMapData(t, envConfigMapName(t, r, tt.name, tt.env))
				for key, port := range map[string]int{"HTTP_ADDR": tt.public, "INTERNAL_ADDR": tt.internal} {
					if want := fmt.Sprintf("0.0.0.0:%d", port); env[key] != want {
						t.Errorf("%s = %q, want %q", key, env[key], want)
					}
				}
				if want := fmt.Sprintf("%s:%d", tt.name, tt.public); !slices.Equal(upstreams[tt.nginxUpstreamName], []string{want}) {
					t.Errorf("nginx upstream %s = %v, want [%s]", tt.nginxUpstreamName, upstreams[tt.nginxUpstreamName], want)
				}
			})
		}
	}
}

// envConfigMapName finds the generated (hash-suffixed) name of a
// deployment's env ConfigMap.
func envConfigMapName(t *testing.T, r rendered, deployment, prefix string) string {
	t.Helper()
	for _, ef := range r.workload(t, "Deployment", deployment).Spec.Template.Spec.Containers[0].EnvFrom {
		if ef.ConfigMapRef != nil && strings.HasPrefix(ef.ConfigMapRef.Name, prefix) {
			return ef.ConfigMapRef.Name
		}
	}
	t.Fatalf("%s reads no ConfigMap %s", deployment, prefix)
	return ""
}

var upstreamRE = regexp.MustCompile(`(?s)upstream\s+(\w+)\s*\{(.*?)\}`)
var serverRE = regexp.MustCompile(`(?m)^\s*server\s+(\S+?)[\s;]`)

// nginxUpstreams maps each upstream block of an nginx file to its servers.
func nginxUpstreams(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, m := range upstreamRE.FindAllSubmatch(b, -1) {
		for _, s := range serverRE.FindAllSubmatch(m[2], -1) {
			out[string(m[1])] = append(out[string(m[1])], string(s[1]))
		}
	}
	return out
}

func TestManifestIngressRunsTheSharedNginxConfig(t *testing.T) {
	r := render(t, "deploy/k8s/base")
	w := r.workload(t, "Deployment", "ingress")
	pod := w.Spec.Template.Spec
	var cmName, mountPath string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
			for _, m := range pod.Containers[0].VolumeMounts {
				if m.Name == v.Name {
					mountPath = m.MountPath
				}
			}
		}
	}
	data := r.configMapData(t, cmName)
	for _, f := range []string{"nginx.conf", "upstreams.conf", "listen.conf"} {
		want, err := os.ReadFile(filepath.Join(repoRoot, "deploy/nginx", f))
		if err != nil {
			t.Fatal(err)
		}
		if data[f] != string(want) {
			t.Errorf("ConfigMap %s key %s differs from deploy/nginx/%s", cmName, f, f)
		}
	}
	args := strings.Join(append(pod.Containers[0].Command, pod.Containers[0].Args...), " ")
	if want := "-c " + mountPath + "/nginx.conf"; mountPath == "" || !strings.Contains(args, want) {
		t.Errorf("nginx runs %q, want it to load %q", args, want)
	}
	if ports := servicePorts(t, r, "ingress"); ports["http"] != 8000 {
		t.Errorf("ingress Service ports %v, want http 8000", ports)
	}
}

func TestManifestNATSJetStream(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.name, func(t *testing.T) {
			r := render(t, ov.dir)
			sts := r.workload(t, "StatefulSet", "nats")
			if sts.Spec.Replicas == nil || *sts.Spec.Replicas != ov.natsReplicas {
				t.Fatalf("nats replicas %v, want %d", sts.Spec.Replicas, ov.natsReplicas)
			}
			opts := natsPodConfig(t, r, sts)
			if !opts.JetStream || opts.StoreDir != "/data" {
				t.Errorf("jetstream %v store_dir %q, want JetStream on the data volume", opts.JetStream, opts.StoreDir)
			}
			if opts.ServerName != "nats-0" {
				t.Errorf("server_name %q, want the pod name", opts.ServerName)
			}
			// Every server lists all peers, itself included.
			if ov.natsReplicas > 1 {
				if len(opts.Routes) != ov.natsReplicas || !opts.SyncAlways {
					t.Errorf("routes %v sync_always %v, want %d routes and fsync on every write", opts.Routes, opts.SyncAlways, ov.natsReplicas)
				}
			} else if len(opts.Routes) != 0 {
				t.Errorf("a single server lists routes %v", opts.Routes)
			}
			c := sts.Spec.Template.Spec.Containers[0]
			if !slices.Contains(c.Args, "/etc/nats/nats.conf") {
				t.Errorf("nats args %v do not load the mounted config", c.Args)
			}
			env := r.configMapData(t, envConfigMapName(t, r, "control-plane", "control-plane-env"))
			if env["EVENTS_REPLICAS"] != strconv.Itoa(ov.natsReplicas) {
				t.Errorf("EVENTS_REPLICAS=%s with %d NATS servers", env["EVENTS_REPLICAS"], ov.natsReplicas)
			}
		})
	}
}

func TestManifestImagesAreTheBuiltOnes(t *testing.T) {
	built := composeBuiltImages(t)
	tilt := tiltImages(t)
	for _, ov := range overlays {
		t.Run(ov.name, func(t *testing.T) {
			var ours []string
			for _, w := range render(t, ov.dir).workloads(t) {
				pod := w.Spec.Template.Spec
				for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
					if strings.HasPrefix(c.Image, "tenantbase/") && !slices.Contains(ours, c.Image) {
						ours = append(ours, c.Image)
					}
				}
			}
			slices.Sort(ours)
			if !slices.Equal(ours, serviceImages) {
				t.Errorf("manifests name images %v, want %v", ours, serviceImages)
			}
			for _, img := range ours {
				if built[img] == "" {
					t.Errorf("%s: no compose service builds it", img)
				}
				if !slices.Contains(tilt, img) {
					t.Errorf("%s: the Tiltfile does not build it", img)
				}
			}
		})
	}
}

// tiltImages lists the images the Tiltfile builds: go_service builds
// tenantbase/<name> for each name in GO_SERVICES.
func tiltImages(t *testing.T) []string {
	t.Helper()
	src := readFile(t, "Tiltfile")
	if !strings.Contains(src, "docker_build_with_restart(\n        'tenantbase/%s' % name,") {
		t.Fatal("the Tiltfile's go_service builds no tenantbase/<name> image")
	}
	m := regexp.MustCompile(`(?m)^GO_SERVICES = \[(.*)\]$`).FindStringSubmatch(src)
	if m == nil {
		t.Fatal("no GO_SERVICES in the Tiltfile")
	}
	var images []string
	for _, name := range strings.Split(m[1], ",") {
		images = append(images, "tenantbase/"+strings.Trim(strings.TrimSpace(name), `'"`))
	}
	return images
}

func TestTiltfileMatchesManifests(t *testing.T) {
	src := readFile(t, "Tiltfile")
	if !strings.Contains(src, "kustomize(OVERLAY)") || !strings.Contains(src, "OVERLAY = 'deploy/k8s/overlays/dev'") {
		t.Error("the Tiltfile does not apply the dev overlay")
	}
	r := render(t, "deploy/k8s/overlays/dev")
	resources := map[string]bool{}
	for _, w := range r.workloads(t) {
		resources[w.Metadata.Name] = true
	}
	for _, m := range regexp.MustCompile(`local_resource\(\s*'([^']+)'`).FindAllStringSubmatch(src, -1) {
		resources[m[1]] = true
	}
	for _, img := range tiltImages(t) {
		resources[strings.TrimPrefix(img, "tenantbase/")+"-compile"] = true
	}
	named := regexp.MustCompile(`k8s_resource\(\s*'([^']+)'`).FindAllStringSubmatch(src, -1)
	if len(named) == 0 {
		t.Fatal("no k8s_resource in the Tiltfile")
	}
	seen := map[string]bool{}
	for _, m := range named {
		seen[m[1]] = true
		if !resources[m[1]] {
			t.Errorf("k8s_resource %q names no workload of the dev overlay", m[1])
		}
	}
	for name := range resources {
		if !strings.HasSuffix(name, "-compile") && !seen[name] {
			t.Errorf("workload %q has no k8s_resource (labels, ordering)", name)
		}
	}
	for _, deps := range regexp.MustCompile(`resource_deps=\[([^\]]*)\]`).FindAllStringSubmatch(src, -1) {
		for _, d := range regexp.MustCompile(`'([^']+)'`).FindAllStringSubmatch(deps[1], -1) {
			if !resources[d[1]] {
				t.Errorf("resource_deps names unknown resource %q", d[1])
			}
		}
	}
	for _, m := range regexp.MustCompile(`SHARED_SOURCES = \[([^\]]*)\]`).FindAllStringSubmatch(src, -1) {
		for _, p := range regexp.MustCompile(`'([^']+)'`).FindAllStringSubmatch(m[1], -1) {
			if _, err := os.Stat(filepath.Join(repoRoot, p[1])); err != nil {
				t.Errorf("Tiltfile watches %s: %v", p[1], err)
			}
		}
	}
	if !strings.Contains(src, "port_forwards=['8000:8000']") {
		t.Error("the Tiltfile does not forward the ingress port 8000")
	}
}

func TestManifestSecretsExample(t *testing.T) {
	var example []struct {
		Metadata   meta              `yaml:"metadata"`
		StringData map[string]string `yaml:"stringData"`
	}
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, "deploy/k8s/base/secrets.example.yaml")))
	for {
		var s struct {
			Metadata   meta              `yaml:"metadata"`
			StringData map[string]string `yaml:"stringData"`
		}
		if err := dec.Decode(&s); err != nil {
			break
		}
		example = append(example, s)
	}
	exampleKeys := map[string][]string{}
	for _, s := range example {
		for k := range s.StringData {
			exampleKeys[s.Metadata.Name] = append(exampleKeys[s.Metadata.Name], k)
		}
		slices.Sort(exampleKeys[s.Metadata.Name])
	}

	// Every Secret the base reads is in the example, with the keys the dev
	// overlay fills in.
	base := render(t, "deploy/k8s/base")
	dev := render(t, "deploy/k8s/overlays/dev")
	for _, w := range base.workloads(t) {
		for _, c := range w.Spec.Template.Spec.Containers {
			for _, ef := range c.EnvFrom {
				if ef.SecretRef == nil {
					continue
				}
				name := ef.SecretRef.Name
				var s struct {
					Data map[string]string `yaml:"data"`
				}
				o, ok := dev.generated("Secret", name)
				if !ok {
					t.Fatalf("dev overlay generates no Secret %s", name)
				}
				o.decode(t, &s)
				var devKeys []string
				for k := range s.Data {
					devKeys = append(devKeys, k)
				}
				slices.Sort(devKeys)
				if !slices.Equal(exampleKeys[name], devKeys) {
					t.Errorf("Secret %s: example has keys %v, dev overlay %v", name, exampleKeys[name], devKeys)
				}
			}
		}
	}
}

func TestManifestEnvNamesAreServiceSettings(t *testing.T) {
	tests := []struct {
		deployment, config string
	}{
		{deployment: "control-plane", config: "services/control-plane/app/config.go"},
		{deployment: "tenant-plane", config: "services/tenant-plane/app/config.go"},
	}
	for _, ov := range overlays {
		r := render(t, ov.dir)
		for _, tt := range tests {
			t.Run(ov.name+"/"+tt.deployment, func(t *testing.T) {
				known := envconfigNames(t, tt.config)
				c := r.workload(t, "Deployment", tt.deployment).Spec.Template.Spec.Containers[0]
				var names []string
				for _, e := range c.Env {
					names = append(names, e.Name)
				}
				for _, ef := range c.EnvFrom {
					switch {
					case ef.ConfigMapRef != nil:
						for k := range r.configMapData(t, ef.ConfigMapRef.Name) {
							names = append(names, k)
						}
					case ef.SecretRef != nil:
						if o, ok := r.find("Secret", ef.SecretRef.Name); ok {
							var s struct {
								Data map[string]string `yaml:"data"`
							}
							o.decode(t, &s)
							for k := range s.Data {
								names = append(names, k)
							}
						}
					}
				}
				for _, n := range names {
					if !known[n] && n != "GOMEMLIMIT" {
						t.Errorf("%s is set but %s reads no such variable", n, tt.config)
					}
				}
			})
		}
	}
}

// envconfigNames lists the variables a service's Config reads, from the
// envconfig tags in its source.
func envconfigNames(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, path), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		field, ok := n.(*ast.Field)
		if !ok || field.Tag == nil {
			return true
		}
		tag, err := strconv.Unquote(field.Tag.Value)
		if err != nil {
			t.Fatal(err)
		}
		if name := reflect.StructTag(tag).Get("envconfig"); name != "" {
			names[name] = true
		}
		return true
	})
	if len(names) == 0 {
		t.Fatalf("%s declares no envconfig variables", path)
	}
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// labelSelector is the matchLabels form of a selector, the only one the
// manifests use.
type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []any             `yaml:"matchExpressions"`
}

func (s labelSelector) matches(t *testing.T, labels map[string]string) bool {
	t.Helper()
	if len(s.MatchExpressions) > 0 {
		t.Fatal("matchExpressions in a NetworkPolicy: extend this test")
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type networkPolicy struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			From []struct {
				PodSelector       *labelSelector `yaml:"podSelector"`
				NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
				IPBlock           any            `yaml:"ipBlock"`
			} `yaml:"from"`
			Ports []struct {
				Protocol string `yaml:"protocol"`
				Port     any    `yaml:"port"`
				EndPort  any    `yaml:"endPort"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
	} `yaml:"spec"`
}

// peer is a connection's source: a pod of this namespace (its labels), or
// anything else (nil labels: other namespaces, nodes, the internet).
type peer struct {
	name   string
	labels map[string]string
}

// admits tells whether the ingress NetworkPolicies let from connect to the
// pod with labels and container ports ports, on port: a pod no policy
// selects admits everything; a selected one only what a rule of a policy
// selecting it allows. Peers that are not pod selectors of this namespace
// count as admitting everyone, so such a rule shows up as too open.
func admits(t *testing.T, policies []networkPolicy, labels map[string]string, ports map[string]int, port int, from peer) bool {
	t.Helper()
	isolated := false
	for _, np := range policies {
		if !np.Spec.PodSelector.matches(t, labels) {
			continue
		}
		if !slices.Equal(np.Spec.PolicyTypes, []string{"Ingress"}) {
			t.Fatalf("NetworkPolicy %s: policyTypes %v, want [Ingress]", np.Metadata.Name, np.Spec.PolicyTypes)
		}
		isolated = true
		for _, rule := range np.Spec.Ingress {
			portOK := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				if p.EndPort != nil || (p.Protocol != "" && p.Protocol != "TCP") {
					t.Fatalf("NetworkPolicy %s: port %+v: extend this test", np.Metadata.Name, p)
				}
				switch v := p.Port.(type) {
				case int:
					portOK = portOK || v == port
				case string:
					portOK = portOK || ports[v] == port
				default:
					t.Fatalf("NetworkPolicy %s: port %v", np.Metadata.Name, p.Port)
				}
			}
			peerOK := len(rule.From) == 0
			for _, f := range rule.From {
				switch {
				case f.NamespaceSelector != nil || f.IPBlock != nil:
					peerOK = true
				case f.PodSelector != nil:
					peerOK = peerOK || (from.labels != nil && f.PodSelector.matches(t, from.labels))
				}
			}
			if portOK && peerOK {
				return true
			}
		}
	}
	return !isolated
}

func TestManifestNetworkPolicies(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.name, func(t *testing.T) {
			r := render(t, ov.dir)
			var policies []networkPolicy
			for _, o := range r {
				if o.Kind == "NetworkPolicy" {
					if o.APIVersion != "networking.k8s.io/v1" {
						t.Errorf("NetworkPolicy %s: apiVersion %s", o.Metadata.Name, o.APIVersion)
					}
					var np networkPolicy
					o.decode(t, &np)
					policies = append(policies, np)
				}
			}
			pods := map[string]workload{}
			peers := []peer{{name: "outside the namespace"}, {name: "another pod", labels: map[string]string{"app.kubernetes.io/name": "intruder"}}}
			for _, w := range r.workloads(t) {
				pods[w.Metadata.Name] = w
				peers = append(peers, peer{name: w.Metadata.Name, labels: w.Spec.Template.Metadata.Labels})
			}
			cpPorts, tpPorts := servicePorts(t, r, "control-plane"), servicePorts(t, r, "tenant-plane")
			natsPorts, natsCluster := servicePorts(t, r, "nats"), servicePorts(t, r, "nats-cluster")
			cpEnv := r.configMapData(t, envConfigMapName(t, r, "control-plane", "control-plane-env"))
			if !strings.HasSuffix(cpEnv["INTERNAL_ADDR"], fmt.Sprintf(":%d", cpPorts["internal"])) {
				t.Fatalf("INTERNAL_ADDR %s is not the Service's internal port %d", cpEnv["INTERNAL_ADDR"], cpPorts["internal"])
			}
			tests := []struct {
				target, port string
				number       int
				only         []string // the peers admitted; "*" for every one
			}{
				{target: "control-plane", port: "public", number: cpPorts["http"], only: []string{"ingress"}},
				{target: "control-plane", port: "internal", number: cpPorts["internal"], only: []string{"tenant-plane"}},
				{target: "tenant-plane", port: "public", number: tpPorts["http"], only: []string{"ingress"}},
				{target: "tenant-plane", port: "internal", number: tpPorts["internal"]},
				{target: "nats", port: "client", number: natsPorts["client"], only: []string{"control-plane", "tenant-plane"}},
				{target: "nats", port: "cluster", number: natsCluster["cluster"], only: []string{"nats"}},
				{target: "nats", port: "monitor", number: natsCluster["monitor"]},
				{target: "postgres", port: "postgres", number: 5432, only: []string{"control-plane", "tenant-plane"}},
				{target: "ingress", port: "public", number: servicePorts(t, r, "ingress")["http"], only: []string{"*"}},
			}
			for _, tt := range tests {
				w, ok := pods[tt.target]
				labels := map[string]string{"app.kubernetes.io/name": tt.target}
				ports := map[string]int{}
				if ok {
					labels = w.Spec.Template.Metadata.Labels
					for _, p := range w.Spec.Template.Spec.Containers[0].Ports {
						ports[p.Name] = p.ContainerPort
					}
				}
				if tt.number == 0 {
					t.Fatalf("%s: no %s port", tt.target, tt.port)
				}
				for _, from := range peers {
					want := slices.Contains(tt.only, "*") || slices.Contains(tt.only, from.name)
					if got := admits(t, policies, labels, ports, tt.number, from); got != want {
						t.Errorf("%s's %s port %d admits %s: %v, want %v", tt.target, tt.port, tt.number, from.name, got, want)
					}
				}
			}
		})
	}
}
