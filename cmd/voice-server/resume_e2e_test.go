package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/resume"
)

const otherAPIKey = "vgw-e2e-other-key-0123456789abcdef"

// dialResume opens a session on p presenting a resume handle.
func dialResume(t *testing.T, ctx context.Context, p *process, handle string) *rtClient {
	t.Helper()
	return dialResumeAs(t, ctx, p, handle, testAPIKey)
}

// dialResumeAs is dialResume with another API key.
func dialResumeAs(t *testing.T, ctx context.Context, p *process, handle, apiKey string) *rtClient {
	t.Helper()
	u := "ws://" + p.public + "/v1/realtime?resume=" + url.QueryEscape(handle)
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + apiKey}},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial with resume: %v", err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &rtClient{t: t, c: c, ctx: ctx}
}

// TestOpenAIConversationSurvivesDrain: a conversation of three turns (one
// spoken and transcribed, one typed, one with a function call and its
// output) on server A; A drains; the client presents the handle of
// gateway.draining to server B, whose upstream session receives exactly
// the configuration A's upstream last acknowledged and the items in order,
// and whose next response is produced from the whole conversation.
func TestOpenAIConversationSurvivesDrain(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{upstreamKey}})
	defer up.Close()
	fleetDir := newFleetDir(t)
	a, _ := startOpenAIGateway(t, up.URL, "--fleet-secret-dir", fleetDir, "--notify-window", "0s", "--reconnect-after", "100ms", "--drain-timeout", "20s")
	// B also knows a second API key: a handle presented with it is
	// another credential's.
	keys := filepath.Join(t.TempDir(), "api-keys")
	if err := os.WriteFile(keys, []byte(testAPIKey+"\n"+otherAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := startOpenAIGateway(t, up.URL, "--fleet-secret-dir", fleetDir, "--api-keys-file", keys)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cl := dialGateway(t, ctx, a, false)
	created := cl.readUntil("session.created")
	sessionID := created["gateway"].(map[string]any)["session_id"].(string)
	upA := up.WaitConn(1, 10*time.Second)
	tools := []any{map[string]any{"type": "function", "name": "get_weather", "description": "weather of a city",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}}}
	cl.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "be brief",
		"tools": tools, "audio": map[string]any{"input": map[string]any{"transcription": map[string]any{"model": "whisper-1"}}}}})
	cl.readUntil("session.updated")

	// Turn 1: spoken.
	cl.sendAudio(tonePCM(24000 * 2 * 3 / 10))
	cl.send(map[string]any{"type": "input_audio_buffer.commit"})
	cl.readUntil("conversation.item.input_audio_transcription.completed")
	cl.send(map[string]any{"type": "response.create"})
	cl.readUntil("response.done")
	// Turn 2: typed.
	cl.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": "what did I just say?"}}}})
	cl.readUntil("conversation.item.done")
	cl.send(map[string]any{"type": "response.create"})
	cl.readUntil("response.done")
	// Turn 3: a function call and its output.
	cl.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "function_call", "call_id": "call_1",
		"name": "get_weather", "arguments": `{"city":"Oslo"}`}})
	cl.readUntil("conversation.item.done")
	cl.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "function_call_output", "call_id": "call_1",
		"output": `{"celsius":3}`}})
	cl.readUntil("conversation.item.done")
	cl.send(map[string]any{"type": "response.create"})
	cl.readUntil("response.done")
	cl.readUntil("rate_limits.updated")
	conversationA := upA.Conversation()
	var lastUpdated map[string]any
	for _, s := range upA.Sent() {
		if s.Type == "session.updated" {
			lastUpdated = nil
			_ = json.Unmarshal(s.Raw, &lastUpdated)
		}
	}

	// A drains: the notice carries the handle.
	a.Signal(syscall.SIGTERM)
	draining := cl.readUntil("gateway.draining")
	handle, _ := draining["resume"].(string)
	if !strings.HasPrefix(handle, "vgr1.") {
		t.Fatalf("gateway.draining carries no resume handle: %v", draining)
	}
	if strings.Contains(a.Logs(), handle[:40]) {
		t.Error("the resume handle is in A's logs")
	}
	_ = cl.c.Close(websocket.StatusNormalClosure, "moving")

	// On B.
	moved := time.Now()
	cl2 := dialResume(t, ctx, b, handle)
	resumed := cl2.readUntil("gateway.resumed")
	latency := time.Since(moved)
	want := []map[string]any{
		{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "heard 14400 bytes"}}},
		{"type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "echo of 14400 bytes"}}},
		{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "what did I just say?"}}},
		{"type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "echo of 14400 bytes"}}},
		{"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": `{"city":"Oslo"}`},
		{"type": "function_call_output", "call_id": "call_1", "output": `{"celsius":3}`},
		{"type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "echo of 14400 bytes"}}},
	}
	if resumed["restored"] != float64(len(want)) || resumed["dropped"] != 0.0 || resumed["session_id"] != sessionID {
		t.Errorf("gateway.resumed = %v, want %d restored, 0 dropped, session %s", resumed, len(want), sessionID)
	}
	upB := up.WaitConn(2, 10*time.Second)
	// The upstream records what it read on its own goroutine.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n := 0
		for _, r := range upB.Received() {
			if r.Type == "conversation.item.create" {
				n++
			}
		}
		if n >= len(want) {
			break
		}
	}
	var gotConfig map[string]any
	var gotItems []map[string]any
	for _, r := range upB.Received() {
		var ev map[string]any
		_ = json.Unmarshal(r.Raw, &ev)
		switch r.Type {
		case "session.update":
			if gotConfig != nil || gotItems != nil {
				t.Errorf("B's upstream got a second session.update or one after the items")
			}
			gotConfig, _ = ev["session"].(map[string]any)
		case "conversation.item.create":
			item, _ := ev["item"].(map[string]any)
			gotItems = append(gotItems, item)
		default:
			t.Errorf("B's upstream got %s during the rebuild", r.Type)
		}
	}
	wantConfig := lastUpdated["session"].(map[string]any)
	for _, k := range []string{"id", "object", "expires_at"} {
		delete(wantConfig, k)
	}
	if !reflect.DeepEqual(gotConfig, wantConfig) {
		t.Errorf("B's upstream got the configuration\n%v\nwant A's last acknowledged\n%v", gotConfig, wantConfig)
	}
	if !reflect.DeepEqual(gotItems, want) {
		t.Errorf("B's upstream got the items\n%v\nwant\n%v", gotItems, want)
	}

	// The next response on B is produced from the whole conversation.
	cl2.send(map[string]any{"type": "response.create"})
	cl2.readUntil("response.done")
	contexts := upB.ResponseContexts()
	if len(contexts) != 1 {
		t.Fatalf("B's upstream produced %d responses", len(contexts))
	}
	heard := contexts[0]
	if len(heard) != len(conversationA) {
		t.Fatalf("B's response answered from %d items, A's conversation had %d: %v", len(heard), len(conversationA), heard)
	}
	for i := range heard {
		if heard[i] != conversationA[i] {
			t.Errorf("item %d: B's upstream heard %+v, A's had %+v", i, heard[i], conversationA[i])
		}
	}

	// A handle may be presented again until it expires (a reconnect
	// that failed half way retries with it): same credential, same
	// conversation.
	cl3 := dialResume(t, ctx, b, handle)
	if again := cl3.readUntil("gateway.resumed"); again["restored"] != float64(len(want)) || again["session_id"] != sessionID {
		t.Errorf("the handle presented again: %v", again)
	}
	_ = cl3.c.Close(websocket.StatusNormalClosure, "")

	// Refusals, each with its code and a fresh session.
	forged := []byte(handle)
	forged[len(forged)/2] ^= 0x01
	if forged[len(forged)/2] == '-' || forged[len(forged)/2] == '_' {
		forged[len(forged)/2] = 'A'
	}
	for name, c := range map[string]struct{ handle, apiKey, code string }{
		"forged":           {string(forged), testAPIKey, "resume_invalid"},
		"garbage":          {"vgr1.not-a-handle", testAPIKey, "resume_invalid"},
		"oversized":        {"vgr1." + strings.Repeat("A", resume.MaxHandleBytes), testAPIKey, "resume_too_large"},
		"wrong credential": {handle, otherAPIKey, "resume_foreign"},
	} {
		t.Run(name, func(t *testing.T) {
			c4 := dialResumeAs(t, ctx, b, c.handle, c.apiKey)
			cr := c4.readUntil("session.created")
			if id := cr["gateway"].(map[string]any)["session_id"]; id == sessionID {
				t.Errorf("a refused handle continued the session %v", id)
			}
			if codes := c4.errorCodes(); len(codes) != 1 || codes[0] != c.code {
				t.Errorf("errors %v, want %s", codes, c.code)
			}
			_ = c4.c.Close(websocket.StatusNormalClosure, "")
		})
	}
	if strings.Contains(b.Logs(), handle[:40]) {
		t.Error("the resume handle is in B's logs")
	}
	t.Logf("handle %d bytes for %d items; reconnect to gateway.resumed %v", len(handle), len(want), latency)
}

// TestResumeHandleSizeAndLatency measures, for conversations of 10, 100
// and 1000 items (typed user turns of about 60 characters, each answered
// by the upstream's conversation.item.done), the resume handle's size and
// the time from the reconnect's dial to gateway.resumed on the second
// server, which replays every item to its upstream first. It asserts no
// speed; docs/benchmarks.md quotes its log.
func TestResumeHandleSizeAndLatency(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{upstreamKey}})
	defer up.Close()
	fleetDir := newFleetDir(t)
	limits := []string{"--fleet-secret-dir", fleetDir, "--inbound-rate", "100000", "--inbound-burst", "100000"}
	a, _ := startOpenAIGateway(t, up.URL, append(limits, "--notify-window", "0s", "--reconnect-after", "100ms", "--drain-timeout", "30s")...)
	b, _ := startOpenAIGateway(t, up.URL, limits...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sizes := []int{10, 100, 1000}
	clients := make([]*rtClient, len(sizes))
	for i, n := range sizes {
		cl := dialGateway(t, ctx, a, false)
		cl.readUntil("session.created")
		cl.send(map[string]any{"type": "session.update", "session": map[string]any{"type": "realtime", "instructions": "You are a patient assistant; answer briefly."}})
		cl.readUntil("session.updated")
		for j := range n {
			cl.send(map[string]any{"type": "conversation.item.create", "item": map[string]any{"type": "message", "role": "user",
				"content": []any{map[string]any{"type": "input_text", "text": fmt.Sprintf("turn %d: please remember that my order number is %d.", j, 100000+j*7)}}}})
			cl.readUntil("conversation.item.done")
			cl.events = cl.events[:0]
		}
		clients[i] = cl
	}
	a.Signal(syscall.SIGTERM)
	for i, n := range sizes {
		handle, _ := clients[i].readUntil("gateway.draining")["resume"].(string)
		_ = clients[i].c.Close(websocket.StatusNormalClosure, "moving")
		var took []time.Duration
		var resumed map[string]any
		for range 5 {
			start := time.Now()
			cl := dialResume(t, ctx, b, handle)
			resumed = cl.readUntil("gateway.resumed")
			took = append(took, time.Since(start))
			_ = cl.c.Close(websocket.StatusNormalClosure, "")
			for deadline := time.Now().Add(10 * time.Second); b.status().Sessions != 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
		slices.Sort(took)
		t.Logf("%4d items: handle %5d bytes; reconnect to gateway.resumed median %v (min %v, max %v); restored %v, dropped %v",
			n, len(handle), took[len(took)/2].Round(100*time.Microsecond), took[0].Round(100*time.Microsecond),
			took[len(took)-1].Round(100*time.Microsecond), resumed["restored"], resumed["dropped"])
	}
}

// TestEchoSessionsResumeThroughADrain is the rollout's resume on one
// machine: 40 echo sessions of two turns each on server A; A gets
// SIGTERM; every client presents its notice's handle to server B (which
// shares A's fleet Secret) and goes on: same session id, gateway.resumed,
// and its next response is resp_3 — the echo's turn counter continued.
func TestEchoSessionsResumeThroughADrain(t *testing.T) {
	const sessions = 40
	fleetDir := newFleetDir(t)
	a := startProcess(t, "--fleet-secret-dir", fleetDir, "--notify-window", "1s", "--reconnect-after", "100ms", "--drain-timeout", "30s")
	b := startProcess(t, "--fleet-secret-dir", fleetDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	turn := func(cl *rtClient) string {
		cl.sendAudio(tonePCM(4800))
		cl.send(map[string]any{"type": "input_audio_buffer.commit"})
		cl.send(map[string]any{"type": "response.create"})
		created := cl.readUntil("response.created")
		cl.readUntil("response.done")
		id, _ := created["response"].(map[string]any)["id"].(string)
		return id
	}
	clients := make([]*rtClient, sessions)
	ids := make([]string, sessions)
	for i := range clients {
		cl := dialGateway(t, ctx, a, false)
		created := cl.readUntil("session.created")
		ids[i] = created["gateway"].(map[string]any)["session_id"].(string)
		cl.send(map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"input": map[string]any{"turn_detection": nil}}}})
		cl.readUntil("session.updated")
		turn(cl)
		turn(cl)
		clients[i] = cl
	}
	a.Signal(syscall.SIGTERM)
	resumed, continued := 0, 0
	for i, cl := range clients {
		handle, _ := cl.readUntil("gateway.draining")["resume"].(string)
		_ = cl.c.Close(websocket.StatusNormalClosure, "moving")
		next := dialResume(t, ctx, b, handle)
		created := next.readUntil("session.created")
		ev := next.readUntil("gateway.resumed")
		if ev["session_id"] == ids[i] && created["gateway"].(map[string]any)["session_id"] == ids[i] {
			resumed++
		}
		next.send(map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{"input": map[string]any{"turn_detection": nil}}}})
		next.readUntil("session.updated")
		if id := turn(next); id == "resp_3" {
			continued++
		} else {
			t.Errorf("session %d: the first response after the move is %s, want resp_3", i, id)
		}
		_ = next.c.Close(websocket.StatusNormalClosure, "")
	}
	t.Logf("resumed %d/%d (fresh %d); echo turn counter continued on %d/%d", resumed, sessions, sessions-resumed, continued, sessions)
	if resumed != sessions || continued != sessions {
		t.Errorf("resumed %d and continued %d of %d sessions", resumed, continued, sessions)
	}
	if code := a.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("A exited %d", code)
	}
}
