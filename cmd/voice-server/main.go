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
	"net"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/gateway"
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
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "voice-server: invalid configuration:\n%v\n", err)
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
	public, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error(err, "cannot listen", "address", cfg.Listen)
		return 1
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		public.Close()
		log.Error(err, "cannot listen", "address", cfg.AdminListen)
		return 1
	}
	log.Info("listening", "public", public.Addr().String(), "admin", adminLn.Addr().String())

	// The first SIGTERM/SIGINT drains; a second one forces a fast, still
	// orderly exit. The signal goroutine ends when Serve has returned.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	signalsDone := make(chan struct{})
	go func() {
		defer close(signalsDone)
		count := 0
		for {
			select {
			case sig := <-signals:
				count++
				log.Info("signal received", "signal", sig.String(), "count", count)
				if count == 1 {
					srv.BeginDrain()
				} else {
					srv.ForceDrain()
				}
			case <-served:
				return
			}
		}
	}()
	err = srv.Serve(ctx, public, adminLn)
	close(served)
	<-signalsDone
	if err != nil {
		log.Error(err, "server stopped with an error")
		return 1
	}
	log.Info("stopped cleanly")
	return 0
}
