package main

import (
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// fakeMachine is a machine for ensure: the executables it has, its
// environment, and whether apt-get can install each package.
type fakeMachine struct {
	env        map[string]string
	onPath     map[string]string // name -> path
	files      []string          // executable files
	root       bool
	installErr map[string]error // package -> apt-get failure
	updateErr  error
	calls      []string
}

func (m *fakeMachine) system() system {
	return system{
		getenv: func(k string) string { return m.env[k] },
		lookPath: func(name string) (string, error) {
			if p, ok := m.onPath[name]; ok {
				return p, nil
			}
			return "", exec.ErrNotFound
		},
		isExec: func(path string) bool { return slices.Contains(m.files, path) },
		isRoot: m.root,
		aptGet: func(args ...string) error {
			m.calls = append(m.calls, strings.Join(args, " "))
			if args[0] == "update" {
				return m.updateErr
			}
			pkg := args[len(args)-1]
			if err := m.installErr[pkg]; err != nil {
				return err
			}
			m.files = append(m.files, sbinNginx)
			return nil
		},
		stderr: io.Discard,
	}
}

func TestEnsure(t *testing.T) {
	apt := map[string]string{"apt-get": "/usr/bin/apt-get"}
	exit100 := errors.New("exit status 100")
	for _, c := range []struct {
		name    string
		machine fakeMachine
		want    string
		// wantErr is part of the one-line failure; "" when ensure succeeds.
		wantErr   string
		wantCalls []string
	}{
		{
			name:    "NGINX_BIN first",
			machine: fakeMachine{env: map[string]string{"NGINX_BIN": "/opt/nginx/sbin/nginx"}, files: []string{"/opt/nginx/sbin/nginx", sbinNginx}, onPath: map[string]string{"nginx": "/usr/bin/nginx"}},
			want:    "/opt/nginx/sbin/nginx",
		},
		{
			name:    "NGINX_BIN that is no executable is an error, not a fallback",
			machine: fakeMachine{env: map[string]string{"NGINX_BIN": "/nope"}, files: []string{sbinNginx}},
			wantErr: "NGINX_BIN=/nope is not an executable file",
		},
		{
			name:    "PATH before /usr/sbin",
			machine: fakeMachine{onPath: map[string]string{"nginx": "/usr/local/bin/nginx"}, files: []string{sbinNginx}},
			want:    "/usr/local/bin/nginx",
		},
		{
			name:    "/usr/sbin/nginx outside PATH",
			machine: fakeMachine{files: []string{sbinNginx}, root: true, onPath: apt},
			want:    sbinNginx,
		},
		{
			name:      "root with apt-get installs nginx-light",
			machine:   fakeMachine{root: true, onPath: apt},
			want:      sbinNginx,
			wantCalls: []string{"update -qq", "install -y -qq nginx-light"},
		},
		{
			name:      "nginx where nginx-light is gone, even after a failed update",
			machine:   fakeMachine{root: true, onPath: apt, updateErr: exit100, installErr: map[string]error{"nginx-light": exit100}},
			want:      sbinNginx,
			wantCalls: []string{"update -qq", "install -y -qq nginx-light", "install -y -qq nginx"},
		},
		{
			name:      "both packages fail",
			machine:   fakeMachine{root: true, onPath: apt, installErr: map[string]error{"nginx-light": exit100, "nginx": exit100}},
			wantErr:   "installing it failed (apt-get install nginx-light: exit status 100; apt-get install nginx: exit status 100)",
			wantCalls: []string{"update -qq", "install -y -qq nginx-light", "install -y -qq nginx"},
		},
		{
			name:    "not root",
			machine: fakeMachine{onPath: apt},
			wantErr: "installing it needs root",
		},
		{
			name:    "root without apt-get",
			machine: fakeMachine{root: true},
			wantErr: "there is no apt-get on PATH",
		},
		{
			name:    "installing switched off",
			machine: fakeMachine{root: true, onPath: apt, env: map[string]string{"ENSURENGINX_NO_INSTALL": "1"}},
			wantErr: "installing is switched off",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := c.machine
			got, err := ensure(m.system())
			if !slices.Equal(m.calls, c.wantCalls) {
				t.Errorf("apt-get calls %q, want %q", m.calls, c.wantCalls)
			}
			if c.wantErr == "" {
				if err != nil || got != c.want {
					t.Fatalf("ensure = %q, %v; want %q", got, err, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ensure = %q, want an error saying %q", got, c.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.wantErr) || !strings.Contains(msg, "nginx") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q, want one line containing %q", msg, c.wantErr)
			}
			if !strings.Contains(msg, "set NGINX_BIN") {
				t.Errorf("error %q does not say what to do", msg)
			}
		})
	}
}
