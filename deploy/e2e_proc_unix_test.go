//go:build unix && !linux

package deploy_test

import "syscall"

// e2eSysProcAttr puts a started process in its own group, so a hard stop
// reaches nginx's workers too.
func e2eSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
