// Package version holds the build's version, set by the linker
// (-ldflags "-X github.com/voicegateway/voicegateway/server/version.Version=v0.1.0").
package version

// Version is the released version, or "dev" for local builds.
var Version = "dev"
