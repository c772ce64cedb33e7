// Command voice-server is voicegateway's data plane: it serves realtime voice
// sessions over WebSocket and drains them gracefully on SIGTERM. Two
// subcommands serve its pods and their operators: `drain` (the preStop
// hook) and `fleet-secret` (writes or rotates a fleet Secret's files).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/gateway"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/logging"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/version"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if wantsVersion(args) {
		fmt.Println(version.String("voice-server"))
		return 0
	}
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			return sub(args[1:], os.Stdout, os.Stderr)
		}
	}
	cfg, err := config.Load(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		config.Usage(os.Stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "voice-server: %v\n", err)
		return 2
	}
	format := cfg.LogFormat
	if cfg.Dev {
		format = logging.FormatConsole
	}
	log, flush, err := logging.New(format, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "voice-server: %v\n", err)
		return 2
	}
	defer flush()
	log.Info("starting voice server", "version", version.Version, "commit", version.Commit, "config", cfg.Redacted())
	// The memory limit is settled once, for the process: --memory-limit
	// (the operator's downward API), else GOMEMLIMIT.
	var limitSource string
	cfg.MemoryLimit, limitSource = memory.ProcessLimit(cfg.MemoryLimit, os.Getenv("GOMEMLIMIT") != "")
	if cfg.MemoryLimit > 0 {
		log.Info("memory limit", "limit", config.FormatBytes(cfg.MemoryLimit), "from", limitSource,
			"goRuntimeSoftLimit", config.FormatBytes(debug.SetMemoryLimit(-1)))
	}

	srv, err := gateway.New(cfg, log, clock.RealClock{})
	if err != nil {
		log.Error(err, "cannot start")
		return 1
	}
	// The first SIGTERM/SIGINT drains; a second one forces a fast, still
	// orderly exit.
	stopSignals := lifecycle.NotifySignals(srv.Drainer(), log)
	err = srv.ListenAndServe(context.Background())
	stopSignals()
	if err != nil {
		log.Error(err, "server stopped with an error")
		return 1
	}
	log.Info("stopped cleanly")
	return 0
}

// wantsVersion: --version (or -version) anywhere before a "--", or the
// version subcommand.
func wantsVersion(args []string) bool {
	if len(args) > 0 && args[0] == "version" {
		return true
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version":
			return true
		}
	}
	return false
}
