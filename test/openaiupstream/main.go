// Command openaiupstream runs the local stand-in for the OpenAI Realtime API
// (server/backend/openai/openaitest) as a process of its own, for
// hack/relay-overhead.sh: the same load runs once through a voice server's
// openai backend to it and once directly to it. It answers every
// input_audio_buffer.append at once with a delta of the same audio, keeps
// no record of the traffic, and prints its URL on stdout; SIGINT or
// SIGTERM stops it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
)

func main() {
	key := flag.String("key", "", "the only bearer key accepted; empty accepts any")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := openaitest.Options{StreamEcho: true, NoRecord: true}
	if *key != "" {
		opts.Keys = []string{*key}
	}
	s := openaitest.New(opts)
	defer s.Close()
	fmt.Println(s.URL)
	<-ctx.Done()
}
