// Package version holds the build's version and commit, set by the linker
// (-ldflags "-X github.com/voicegateway/voicegateway/server/version.Version=v0.1.0
// -X github.com/voicegateway/voicegateway/server/version.Commit=<sha>"), and
// what every binary's --version prints.
package version

import (
	"fmt"
	"runtime"
)

var (
	// Version is the released version, or "dev" for local builds.
	Version = "dev"
	// Commit is the source's commit, or "unknown" when the build did not
	// say.
	Commit = "unknown"
)

// String is the line --version prints: the program, its version and
// commit, and the Go version and platform it was built with, e.g.
// "voice-server v0.1.0 (commit 7e4a3ce, go1.26.8 linux/amd64)".
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", program, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
