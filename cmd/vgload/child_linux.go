package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill a child voice server when vgload dies
// (SIGKILL included, which runs none of vgload's cleanups), so that no run
// leaves a server behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
