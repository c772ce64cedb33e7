//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing where the kernel cannot tie a child's life to
// its parent's; vgload's own cleanups stop the server.
func dieWithParent(*exec.Cmd) {}
