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

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/gateway"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/logging"
	"github.com/voicegateway/voicegateway/server/version"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
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
	log, flush, err := logging.New(cfg.Dev, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "voice-server: %v\n", err)
		return 2
	}
	defer flush()
	log.Info("starting voice server", "version", version.Version, "config", cfg.Redacted())

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
