package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/childproc"
	"github.com/voicegateway/voicegateway/internal/voiceclient"
)

// startPeer starts bench/node-peer as make bench-compare does, installing
// its locked dependencies first if they are not; skipped without Node.
func startPeer(t *testing.T) *childproc.Process {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Node")
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH", tool)
		}
	}
	dir := filepath.Join("..", "..", "bench", "node-peer")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := ensurePeerInstalled(ctx, "npm", dir, os.Stderr); err != nil {
		t.Fatal(err)
	}
	peer, err := childproc.Start(ctx, exec.Command("node", filepath.Join(dir, "peer.mjs"), "--listen", "127.0.0.1:0"), childproc.Options{
		OnLine: func(line string, _ map[string]any) { t.Log("peer:", line) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Stop(5 * time.Second) })
	return peer
}

// TestPeerEchoesTurnsByteForByte: the peer speaks what vgload's client
// needs (session.created at 24 kHz, binary audio) and plays each committed
// turn back exactly, in 20 ms chunks, turns in the order committed — also
// a turn committed while the one before it still plays.
func TestPeerEchoesTurnsByteForByte(t *testing.T) {
	peer := startPeer(t)
	var mu sync.Mutex
	var echoed bytes.Buffer
	var chunkSizes []int
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := voiceclient.Open(ctx, voiceclient.Options{
		URL: "ws://" + peer.Public + "/v1/realtime", Binary: true, SampleRate: 24000,
		OnAudio: func(a voiceclient.Audio) {
			mu.Lock()
			defer mu.Unlock()
			echoed.Write(a.PCM)
			chunkSizes = append(chunkSizes, len(a.PCM))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if s := conn.Session(); s.AudioTransport != "binary" || s.SampleRate != 24000 {
		t.Fatalf("session.created said %+v, want binary audio at 24000 Hz", s)
	}

	const chunk = 960 // 20 ms at 24 kHz
	// Two turns sent back to back: 3 frames, then 2 frames and a half.
	turns := [][]int{{chunk, chunk, chunk}, {chunk, chunk, chunk / 2}}
	var sent bytes.Buffer
	var wantSizes []int
	next := byte(1)
	for _, frames := range turns {
		turn := 0
		for _, size := range frames {
			frame := bytes.Repeat([]byte{next}, size)
			frame[size-1] = byte(sent.Len()) // bytes differ within a frame too
			next++
			if err := conn.SendAudio(ctx, frame); err != nil {
				t.Fatal(err)
			}
			sent.Write(frame)
			turn += size
		}
		if err := conn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for ; turn > 0; turn -= min(turn, chunk) {
			wantSizes = append(wantSizes, min(turn, chunk))
		}
	}
	for {
		mu.Lock()
		n := echoed.Len()
		mu.Unlock()
		if n >= sent.Len() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d bytes echoed", n, sent.Len())
		case <-conn.Done():
			t.Fatalf("the peer closed the session after echoing %d of %d bytes: %+v", n, sent.Len(), conn.End())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(echoed.Bytes(), sent.Bytes()) {
		t.Errorf("echo differs from what was sent (%d bytes echoed, %d sent)", echoed.Len(), sent.Len())
	}
	if len(chunkSizes) != len(wantSizes) {
		t.Fatalf("echo came in chunks of %v bytes, want %v", chunkSizes, wantSizes)
	}
	for i := range wantSizes {
		if chunkSizes[i] != wantSizes[i] {
			t.Fatalf("echo came in chunks of %v bytes, want %v", chunkSizes, wantSizes)
		}
	}
}
