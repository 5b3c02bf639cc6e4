package deploy_test

import (
	"encoding/base64"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"tenantbase/libs/events"
)

// natsRoles are the NATS users the repository ships, each with the
// permissions of its role on the default channel, and the plane that logs
// in as it.
var natsRoles = []struct {
	user, plane string
	perms       events.Permissions
}{
	{user: "control-plane", plane: "control-plane", perms: events.DefaultChannel.PublisherPermissions()},
	{user: "tenant-plane", plane: "tenant-plane", perms: events.DefaultChannel.FollowerPermissions()},
}

// checkNATSUsers checks that a NATS server configuration has exactly the
// shipped users, each restricted to its role's permissions, and returns
// their passwords.
func checkNATSUsers(t *testing.T, opts *server.Options) map[string]string {
	t.Helper()
	passwords := map[string]string{}
	for _, u := range opts.Users {
		passwords[u.Username] = u.Password
	}
	if len(opts.Users) != len(natsRoles) || len(opts.Nkeys) != 0 || opts.Username != "" || opts.Authorization != "" || opts.NoAuthUser != "" {
		t.Errorf("NATS logins %v (nkeys %d, single user %q, token set %v, no-auth user %q), want exactly the users of %d roles",
			slices.Sorted(maps.Keys(passwords)), len(opts.Nkeys), opts.Username, opts.Authorization != "", opts.NoAuthUser, len(natsRoles))
	}
	for _, role := range natsRoles {
		i := slices.IndexFunc(opts.Users, func(u *server.User) bool { return u.Username == role.user })
		if i < 0 {
			t.Errorf("no NATS user %s", role.user)
			continue
		}
		u := opts.Users[i]
		if u.Password == "" {
			t.Errorf("NATS user %s has no password", role.user)
		}
		p := u.Permissions
		if p == nil || p.Publish == nil || p.Subscribe == nil {
			t.Errorf("NATS user %s may publish or subscribe without restriction", role.user)
			continue
		}
		if !slices.Equal(p.Publish.Allow, role.perms.Publish) || len(p.Publish.Deny) != 0 {
			t.Errorf("NATS user %s may publish to %v, want %v", role.user, p.Publish.Allow, role.perms.Publish)
		}
		if !slices.Equal(p.Subscribe.Allow, role.perms.Subscribe) || len(p.Subscribe.Deny) != 0 {
			t.Errorf("NATS user %s may subscribe to %v, want %v", role.user, p.Subscribe.Allow, role.perms.Subscribe)
		}
	}
	return passwords
}

// secretData is the content of the Secret a workload names: as rendered
// (the dev overlay generates them), else from secrets.example.yaml.
func secretData(t *testing.T, r rendered, name string) map[string]string {
	t.Helper()
	if o, ok := r.find("Secret", name); ok {
		var s struct {
			Data map[string]string `yaml:"data"`
		}
		o.decode(t, &s)
		out := map[string]string{}
		for k, v := range s.Data {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				t.Fatalf("Secret %s key %s: %v", name, k, err)
			}
			out[k] = string(b)
		}
		return out
	}
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, "deploy/k8s/base/secrets.example.yaml")))
	for {
		var s struct {
			Metadata   meta              `yaml:"metadata"`
			StringData map[string]string `yaml:"stringData"`
		}
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("no Secret %s rendered nor in secrets.example.yaml", name)
		}
		if s.Metadata.Name == name {
			return s.StringData
		}
	}
}

// natsPodConfig loads the configuration a NATS pod runs with, the way
// nats-server does: the files of the ConfigMaps mounted at /etc/nats side by
// side, the environment from the pod's Secrets, SERVER_NAME nats-0.
func natsPodConfig(t *testing.T, r rendered, sts workload) *server.Options {
	t.Helper()
	c := sts.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "/etc/nats/nats.conf") {
		t.Fatalf("nats args %v do not load the mounted config", c.Args)
	}
	dir := t.TempDir()
	mounted := false
	for _, v := range sts.Spec.Template.Spec.Volumes {
		atConfigDir := false
		for _, m := range c.VolumeMounts {
			atConfigDir = atConfigDir || (m.Name == v.Name && m.MountPath == "/etc/nats")
		}
		if !atConfigDir {
			continue
		}
		mounted = true
		for _, cm := range v.configMaps() {
			for file, content := range r.configMapData(t, cm) {
				if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if !mounted {
		t.Fatal("nothing is mounted at /etc/nats")
	}
	t.Setenv("SERVER_NAME", "nats-0")
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			for k, v := range secretData(t, r, ef.SecretRef.Name) {
				t.Setenv(k, v)
			}
		}
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	if err != nil {
		t.Fatalf("nats-server rejects the mounted configuration: %v", err)
	}
	return opts
}

func TestManifestNATSUsers(t *testing.T) {
	for _, ov := range overlays {
		t.Run(ov.name, func(t *testing.T) {
			r := render(t, ov.dir)
			passwords := checkNATSUsers(t, natsPodConfig(t, r, r.workload(t, "StatefulSet", "nats")))
			for _, role := range natsRoles {
				c := r.workload(t, "Deployment", role.plane).Spec.Template.Spec.Containers[0]
				env := r.configMapData(t, envConfigMapName(t, r, role.plane, role.plane+"-env"))
				if env["NATS_USER"] != role.user {
					t.Errorf("%s: NATS_USER=%q, want %s", role.plane, env["NATS_USER"], role.user)
				}
				i := slices.IndexFunc(c.Env, func(e envVar) bool { return e.Name == "NATS_PASSWORD" })
				if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil {
					t.Errorf("%s: NATS_PASSWORD does not come from a Secret", role.plane)
					continue
				}
				ref := c.Env[i].ValueFrom.SecretKeyRef
				got, ok := secretData(t, r, ref.Name)[ref.Key]
				if !ok || got != passwords[role.user] {
					t.Errorf("%s: NATS_PASSWORD is Secret %s key %s, which is not the password the NATS servers give %s",
						role.plane, ref.Name, ref.Key, role.user)
				}
			}
		})
	}
}

func TestComposeNATSUsers(t *testing.T) {
	p := mustLoadCompose(t)
	nats, err := p.GetService("nats")
	if err != nil {
		t.Fatal(err)
	}
	var mount string
	for _, v := range nats.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == mustAbs(t, filepath.Join(repoRoot, "deploy/nats")) {
			mount = v.Target
			if !v.ReadOnly {
				t.Error("the NATS users are mounted writable")
			}
		}
	}
	if mount == "" || !slices.Contains(nats.Command, "--config="+mount+"/auth.conf") {
		t.Fatalf("nats runs %v with volumes %+v, want it to load deploy/nats/auth.conf", nats.Command, nats.Volumes)
	}
	for k, v := range nats.Environment {
		if v != nil {
			t.Setenv(k, *v)
		}
	}
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, "deploy/nats/auth.conf"))
	if err != nil {
		t.Fatalf("nats-server rejects deploy/nats/auth.conf with the compose environment: %v", err)
	}
	passwords := checkNATSUsers(t, opts)
	for _, role := range natsRoles {
		plane, err := p.GetService(role.plane)
		if err != nil {
			t.Fatal(err)
		}
		env := func(k string) string {
			if v := plane.Environment[k]; v != nil {
				return *v
			}
			return ""
		}
		if env("NATS_USER") != role.user || env("NATS_PASSWORD") != passwords[role.user] {
			t.Errorf("%s logs in to NATS as %q with a password that is %s", role.plane, env("NATS_USER"),
				map[bool]string{true: "its own", false: "not the server's"}[env("NATS_PASSWORD") == passwords[role.user]])
		}
	}
	if passwords["control-plane"] == passwords["tenant-plane"] {
		t.Error("both NATS users have the same password")
	}
}
