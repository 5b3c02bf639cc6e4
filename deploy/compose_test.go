package deploy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads docker-compose.yml as `docker compose` would, with
// envFile instead of .env and nothing from the caller's environment.
func loadCompose(t *testing.T, envFile string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(repoRoot, "docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithEnvFiles(envFile),
		cli.WithDotEnv,
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func mustLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	p, err := loadCompose(t, filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatalf("docker-compose.yml with .env.example: %v", err)
	}
	return p
}

// composeBuiltImages maps each image a compose service builds to its Dockerfile.
func composeBuiltImages(t *testing.T) map[string]string {
	t.Helper()
	built := map[string]string{}
	for _, s := range mustLoadCompose(t).Services {
		if s.Build == nil {
			continue
		}
		dockerfile := s.Build.Dockerfile
		if !filepath.IsAbs(dockerfile) {
			dockerfile = filepath.Join(s.Build.Context, dockerfile)
		}
		built[s.Image] = dockerfile
	}
	return built
}

func TestComposeServices(t *testing.T) {
	p := mustLoadCompose(t)
	tests := []struct {
		service   string
		dependsOn []string // each with condition service_healthy
		volume    string   // a named volume it keeps its data in
		replicas  int
		published string // host port of a published container port, "target->published"
	}{
		{service: "postgres", volume: "postgres-data"},
		{service: "nats", volume: "nats-data"},
		{service: "mailpit", volume: "mailpit-data", published: "8025->8025"},
		{service: "control-plane", dependsOn: []string{"postgres", "nats", "mailpit"}, replicas: 2},
		{service: "tenant-plane", dependsOn: []string{"control-plane", "nats", "postgres"}, replicas: 2},
		{service: "ingress", dependsOn: []string{"control-plane", "tenant-plane"}, published: "8000->8000"},
	}
	var names []string
	for name := range p.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"control-plane", "ingress", "mailpit", "nats", "postgres", "tenant-plane"}; !slices.Equal(names, want) {
		t.Errorf("services %v, want %v", names, want)
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			s, err := p.GetService(tt.service)
			if err != nil {
				t.Fatal(err)
			}
			if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
				t.Errorf("no health check")
			}
			for _, dep := range tt.dependsOn {
				if d, ok := s.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
					t.Errorf("does not wait for %s to be healthy", dep)
				}
			}
			if tt.volume != "" {
				if _, ok := p.Volumes[tt.volume]; !ok {
					t.Errorf("volume %s is not a named volume", tt.volume)
				}
				if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
					return v.Type == types.VolumeTypeVolume && v.Source == tt.volume
				}) {
					t.Errorf("does not mount %s", tt.volume)
				}
			}
			if tt.replicas > 0 && s.GetScale() != tt.replicas {
				t.Errorf("%d replicas, want %d", s.GetScale(), tt.replicas)
			}
			var published []string
			for _, port := range s.Ports {
				published = append(published, fmt.Sprintf("%d->%s", port.Target, port.Published))
			}
			if tt.published != "" && !slices.Equal(published, []string{tt.published}) {
				t.Errorf("publishes %v, want %s", published, tt.published)
			}
			if tt.published == "" && len(published) > 0 {
				t.Errorf("publishes %v; only the ingress and the mail inbox are public", published)
			}
		})
	}
}

func TestComposePlanesConfiguration(t *testing.T) {
	p := mustLoadCompose(t)
	env := func(service, key string) string {
		s, err := p.GetService(service)
		if err != nil {
			t.Fatal(err)
		}
		if v := s.Environment[key]; v != nil {
			return *v
		}
		return ""
	}
	for _, tt := range []struct {
		service, config string
		secrets         []string
	}{
		{
			service: "control-plane", config: "services/control-plane/app/config.go",
			secrets: []string{"DATABASE_URL", "TENANT_DB_ADMIN_URL", "CREDENTIALS_KEY", "JWT_SIGNING_KEY", "SERVICE_TOKEN", "BOOTSTRAP_ADMIN_PASSWORD", "NATS_PASSWORD"},
		},
		{
			service: "tenant-plane", config: "services/tenant-plane/app/config.go",
			secrets: []string{"JWT_SIGNING_KEY", "SERVICE_TOKEN", "NATS_PASSWORD"},
		},
	} {
		t.Run(tt.service, func(t *testing.T) {
			s, _ := p.GetService(tt.service)
			known := envconfigNames(t, tt.config)
			for k := range s.Environment {
				if !known[k] && k != "GOMEMLIMIT" {
					t.Errorf("%s is set but %s reads no such variable", k, tt.config)
				}
			}
			for _, k := range tt.secrets {
				if env(tt.service, k) == "" {
					t.Errorf("secret %s is empty with .env.example", k)
				}
			}
			if env(tt.service, "ENV") != "production" {
				t.Errorf("ENV=%q, want production", env(tt.service, "ENV"))
			}
			if !s.ReadOnly {
				t.Error("root filesystem is writable")
			}
		})
	}
	if env("control-plane", "JWT_SIGNING_KEY") == env("tenant-plane", "JWT_SIGNING_KEY") {
		t.Error("both planes sign tokens with the same key")
	}
	if env("control-plane", "SERVICE_TOKEN") != env("tenant-plane", "SERVICE_TOKEN") {
		t.Error("the planes hold different service tokens")
	}
	if got := env("tenant-plane", "CONTROL_PLANE_URL"); got != "http://control-plane:8082" {
		t.Errorf("tenant plane reaches the control plane at %q, want its internal listener", got)
	}
	if got := env("control-plane", "SMTP_ADDR"); got != "mailpit:1025" {
		t.Errorf("SMTP_ADDR=%q, want Mailpit", got)
	}
	if got := env("control-plane", "TENANT_DB_HOST"); got != "postgres" {
		t.Errorf("TENANT_DB_HOST=%q, want the compose Postgres", got)
	}
	pg, _ := p.GetService("postgres")
	if pw := *pg.Environment["POSTGRES_PASSWORD"]; !strings.Contains(env("control-plane", "DATABASE_URL"), ":"+pw+"@postgres:") {
		t.Error("DATABASE_URL does not use the Postgres password")
	}
}

func TestComposeIngressRunsTheSharedNginxConfig(t *testing.T) {
	p := mustLoadCompose(t)
	s, err := p.GetService("ingress")
	if err != nil {
		t.Fatal(err)
	}
	var mount string
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == mustAbs(t, filepath.Join(repoRoot, "deploy/nginx")) {
			mount = v.Target
			if !v.ReadOnly {
				t.Error("nginx config is mounted writable")
			}
		}
	}
	if mount == "" {
		t.Fatalf("deploy/nginx is not mounted: %+v", s.Volumes)
	}
	if cmd := strings.Join(s.Entrypoint, " "); !strings.Contains(cmd, "-c "+mount+"/nginx.conf") {
		t.Errorf("ingress runs %q, want it to load %s/nginx.conf", cmd, mount)
	}
	if !s.ReadOnly {
		t.Error("root filesystem is writable")
	}
	upstreams := nginxUpstreams(t, filepath.Join(repoRoot, "deploy/nginx/upstreams.conf"))
	for upstream, svc := range map[string]string{"control_plane": "control-plane", "tenant_plane": "tenant-plane"} {
		plane, _ := p.GetService(svc)
		addr := *plane.Environment["HTTP_ADDR"]
		_, port, _ := strings.Cut(addr, ":")
		if want := svc + ":" + port; !slices.Equal(upstreams[upstream], []string{want}) {
			t.Errorf("upstream %s = %v, want [%s] (HTTP_ADDR %s)", upstream, upstreams[upstream], want, addr)
		}
	}
}

func mustAbs(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func TestComposeRefusesMissingSecrets(t *testing.T) {
	example := readFile(t, ".env.example")
	required := []string{
		"POSTGRES_PASSWORD", "CREDENTIALS_KEY", "CONTROL_PLANE_JWT_SIGNING_KEY",
		"TENANT_PLANE_JWT_SIGNING_KEY", "SERVICE_TOKEN", "NATS_CONTROL_PLANE_PASSWORD", "NATS_TENANT_PLANE_PASSWORD",
	}
	for _, key := range required {
		t.Run(key, func(t *testing.T) {
			line := regexp.MustCompile(`(?m)^` + key + `=.*$`)
			if !line.MatchString(example) {
				t.Fatalf(".env.example does not document %s", key)
			}
			path := filepath.Join(t.TempDir(), ".env")
			if err := os.WriteFile(path, []byte(line.ReplaceAllString(example, "")), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadCompose(t, path)
			if err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("compose without %s: err = %v, want it named", key, err)
			}
		})
	}
}

func TestComposeInfrastructureImagesMatchManifests(t *testing.T) {
	compose := map[string]bool{}
	for _, s := range mustLoadCompose(t).Services {
		compose[s.Image] = true
	}
	for _, ov := range overlays {
		for _, w := range render(t, ov.dir).workloads(t) {
			for _, c := range w.Spec.Template.Spec.Containers {
				if !compose[c.Image] {
					t.Errorf("%s %s runs %s, which docker-compose.yml does not", ov.name, w.Metadata.Name, c.Image)
				}
			}
		}
	}
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
}

func parseDockerfile(t *testing.T, path string) [][]instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]instruction
	var preamble []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if next, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(next + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " ")}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, []instruction{in})
		case len(stages) == 0:
			preamble = append(preamble, in)
		default:
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	if len(stages) > 0 {
		stages[0] = append(preamble, stages[0]...)
	}
	return stages
}

func TestDockerfiles(t *testing.T) {
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(readFile(t, "go.work"))
	if goVersion == nil {
		t.Fatal("go.work names no Go version")
	}
	built := composeBuiltImages(t)
	for _, image := range serviceImages {
		name := strings.TrimPrefix(image, "tenantbase/")
		t.Run(name, func(t *testing.T) {
			path := built[image]
			if want := mustAbs(t, filepath.Join(repoRoot, "services", name, "Dockerfile")); path != want {
				t.Fatalf("compose builds %s from %q, want %s", image, path, want)
			}
			stages := parseDockerfile(t, path)
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
			}
			build, final := stages[0], stages[len(stages)-1]

			has := func(stage []instruction, cmd, args string) bool {
				return slices.ContainsFunc(stage, func(in instruction) bool {
					return in.cmd == cmd && strings.Contains(in.args, args)
				})
			}
			if !has(build, "ARG", "GO_VERSION="+goVersion[1]) {
				t.Errorf("build stage is not pinned to go.work's Go %s", goVersion[1])
			}
			if !has(build, "COPY", ". .") {
				t.Error("build stage does not copy the repository root (go.work, libs, migrations)")
			}
			if !has(build, "RUN", "cd services/"+name+" && CGO_ENABLED=0 go build") ||
				!has(build, "RUN", "-o /out/"+name+" .") {
				t.Error("build stage does not build a static binary of the service's main package")
			}
			from := final[0].args
			if name == "control-plane" {
				// Moves between database servers run pg_dump and pg_restore.
				if !strings.HasPrefix(from, "alpine:") || !has(final, "RUN", "apk add --no-cache postgresql") {
					t.Errorf("runtime image %q, want Alpine with the PostgreSQL client tools", from)
				}
			} else if !strings.HasPrefix(from, "gcr.io/distroless/static") && from != "scratch" {
				t.Errorf("runtime image %q, want distroless/static or scratch", from)
			}
			if !has(final, "COPY", "--from=build /out/"+name+" /"+name) {
				t.Error("runtime stage does not take the binary from the build stage")
			}
			if !has(final, "USER", "65532:65532") {
				t.Error("runtime stage does not run as the non-root user 65532")
			}
			if !has(final, "HEALTHCHECK", `CMD ["/`+name+`", "healthcheck"]`) {
				t.Error("no health check through the binary's healthcheck command")
			}
			if !has(final, "ENTRYPOINT", `["/`+name+`"]`) {
				t.Error("entrypoint is not the service binary")
			}
		})
	}
}
