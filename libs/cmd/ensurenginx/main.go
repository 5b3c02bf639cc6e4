// Command ensurenginx prints the path of an nginx binary for the test of the
// ingress configuration (deploy/ingress_e2e_test.go): NGINX_BIN when it is
// set, else nginx on PATH, else /usr/sbin/nginx (where Debian puts it, often
// outside a user's PATH). When there is none and this machine can install it
// (root, with apt-get), it installs Debian's nginx-light, or nginx where that
// package no longer exists. Otherwise it stops with one line saying what to
// install.
//
// ENSURENGINX_NO_INSTALL=1 forbids installing, to see that line on a machine
// that could install.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// sbinNginx is where Debian's packages put nginx.
const sbinNginx = "/usr/sbin/nginx"

// advice ends every failure: what a developer can do about it.
const advice = "install nginx (Debian: apt-get install nginx-light) or set NGINX_BIN to an nginx binary"

func main() {
	bin, err := ensure(hostSystem())
	if err != nil {
		fmt.Fprintln(os.Stderr, "ensurenginx: "+strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
	fmt.Println(bin)
}

// system is what the decision reads from and does to the machine, so that
// tests can stand in for a machine without nginx, root or apt-get.
type system struct {
	getenv   func(string) string
	lookPath func(string) (string, error)
	isExec   func(string) bool
	isRoot   bool
	// aptGet runs apt-get with args, its output going to stderr.
	aptGet func(args ...string) error
	// stderr hears what ensure does to the machine.
	stderr io.Writer
}

func hostSystem() system {
	return system{
		getenv:   os.Getenv,
		lookPath: exec.LookPath,
		isExec: func(path string) bool {
			fi, err := os.Stat(path)
			return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
		},
		isRoot: os.Geteuid() == 0,
		aptGet: func(args ...string) error {
			cmd := exec.Command("apt-get", args...)
			// Our stdout is the answer; apt's chatter goes with the errors.
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			return cmd.Run()
		},
		stderr: os.Stderr,
	}
}

func ensure(s system) (string, error) {
	if bin := s.getenv("NGINX_BIN"); bin != "" {
		if s.isExec(bin) {
			return bin, nil
		}
		return "", fmt.Errorf("NGINX_BIN=%s is not an executable file: %s", bin, advice)
	}
	if bin, ok := find(s); ok {
		return bin, nil
	}
	if why := cannotInstall(s); why != "" {
		return "", fmt.Errorf("nginx is not on PATH or at %s, and %s: %s", sbinNginx, why, advice)
	}
	if err := install(s); err != nil {
		return "", fmt.Errorf("nginx is not on PATH or at %s, and installing it failed (%v): %s", sbinNginx, err, advice)
	}
	if bin, ok := find(s); ok {
		return bin, nil
	}
	return "", fmt.Errorf("apt-get installed nginx, yet it is not on PATH or at %s: set NGINX_BIN to the nginx binary", sbinNginx)
}

func find(s system) (string, bool) {
	if bin, err := s.lookPath("nginx"); err == nil {
		return bin, true
	}
	if s.isExec(sbinNginx) {
		return sbinNginx, true
	}
	return "", false
}

// cannotInstall says why nginx cannot be installed here, or "" when it can.
func cannotInstall(s system) string {
	switch {
	case s.getenv("ENSURENGINX_NO_INSTALL") != "":
		return "installing is switched off (ENSURENGINX_NO_INSTALL)"
	case !s.isRoot:
		return "installing it needs root"
	}
	if _, err := s.lookPath("apt-get"); err != nil {
		return "there is no apt-get on PATH to install it with"
	}
	return ""
}

// install follows `apt-get update` (whose failure stale package lists may
// survive) with nginx-light, then nginx: Debian 13 dropped nginx-light.
func install(s system) error {
	fmt.Fprintln(s.stderr, "ensurenginx: nginx not found, installing it with apt-get")
	updateErr := s.aptGet("update", "-qq")
	var errs []string
	for _, pkg := range []string{"nginx-light", "nginx"} {
		err := s.aptGet("install", "-y", "-qq", pkg)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Sprintf("apt-get install %s: %v", pkg, err))
	}
	if updateErr != nil {
		errs = append([]string{fmt.Sprintf("apt-get update: %v", updateErr)}, errs...)
	}
	return errors.New(strings.Join(errs, "; "))
}
