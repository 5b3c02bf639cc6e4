package deploy_test

import "syscall"

// e2eSysProcAttr puts a started process in its own group, so a hard stop
// reaches nginx's workers too, and kills it if the test binary dies without
// running its cleanups (a timeout panic).
func e2eSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
