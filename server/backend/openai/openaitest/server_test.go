package openaitest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
)

const key = "sk-stand-in-key"

func dial(t *testing.T, s *openaitest.Server, bearer string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, s.URL+"?model=gpt-realtime", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + bearer}},
	})
	if c != nil {
		c.SetReadLimit(8 << 20)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func readEvent(t *testing.T, c *websocket.Conn) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		return nil, err
	}
	var ev map[string]any
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("not JSON: %q", data)
	}
	return ev, nil
}

func write(t *testing.T, c *websocket.Conn, ev map[string]any) {
	t.Helper()
	data, _ := json.Marshal(ev)
	if err := c.Write(context.Background(), websocket.MessageText, data); err != nil {
		t.Fatal(err)
	}
}

// readTypes reads events until one of type last and returns their types.
func readTypes(t *testing.T, c *websocket.Conn, last string) ([]string, []map[string]any) {
	t.Helper()
	var types []string
	var events []map[string]any
	for {
		ev, err := readEvent(t, c)
		if err != nil {
			t.Fatalf("reading until %s: %v (got %v)", last, err, types)
		}
		types = append(types, ev["type"].(string))
		events = append(events, ev)
		if ev["type"] == last {
			return types, events
		}
	}
}

// TestGAFlow: the documented event flow of one turn, in order.
func TestGAFlow(t *testing.T) {
	s := openaitest.New(openaitest.Options{Keys: []string{key}, ChunkBytes: 4800})
	defer s.Close()
	c, _, err := dial(t, s, key)
	if err != nil {
		t.Fatal(err)
	}
	created, _ := readEvent(t, c)
	if created["type"] != "session.created" || created["session"].(map[string]any)["model"] != "gpt-realtime" {
		t.Fatalf("first event = %v", created)
	}

	write(t, c, map[string]any{"type": "input_audio_buffer.commit", "event_id": "c1"})
	if ev, _ := readEvent(t, c); ev["type"] != "error" || ev["error"].(map[string]any)["event_id"] != "c1" {
		t.Errorf("empty commit = %v", ev)
	}
	write(t, c, map[string]any{"type": "session.update", "session": map[string]any{"instructions": "x"}})
	if ev, _ := readEvent(t, c); ev["type"] != "session.updated" {
		t.Errorf("session.update answered %v", ev)
	}
	pcm := make([]byte, 9600)
	for i := range pcm {
		pcm[i] = byte(i)
	}
	write(t, c, map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(pcm)})
	write(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	types, _ := readTypes(t, c, "conversation.item.done")
	if want := []string{"input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"}; !reflect.DeepEqual(types, want) {
		t.Errorf("commit answered %v", types)
	}
	write(t, c, map[string]any{"type": "response.create"})
	types, events := readTypes(t, c, "rate_limits.updated")
	want := []string{"response.created", "response.output_item.added", "response.content_part.added",
		"response.output_audio.delta", "response.output_audio.delta", "response.output_audio.done",
		"response.output_audio_transcript.delta", "response.output_audio_transcript.done",
		"response.content_part.done", "response.output_item.done", "response.done", "rate_limits.updated"}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("response.create answered\n%v\nwant\n%v", types, want)
	}
	var echoed []byte
	for _, ev := range events {
		if ev["type"] == "response.output_audio.delta" {
			b, _ := base64.StdEncoding.DecodeString(ev["delta"].(string))
			echoed = append(echoed, b...)
		}
	}
	if !reflect.DeepEqual(echoed, pcm) {
		t.Error("the response is not the committed audio")
	}
	conn := s.WaitConn(1, time.Second)
	if got := conn.Appended(); !reflect.DeepEqual(got, pcm) {
		t.Error("Appended does not hold the audio")
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	<-conn.Done()
	if conn.CloseStatus() != websocket.StatusNormalClosure || s.OpenConns() != 0 {
		t.Errorf("close status %d, %d open", conn.CloseStatus(), s.OpenConns())
	}
}

func TestAuthFailures(t *testing.T) {
	t.Run("event", func(t *testing.T) {
		s := openaitest.New(openaitest.Options{Keys: []string{key}})
		defer s.Close()
		c, _, err := dial(t, s, "sk-wrong")
		if err != nil {
			t.Fatal(err)
		}
		ev, _ := readEvent(t, c)
		if ev["type"] != "error" || ev["error"].(map[string]any)["code"] != "invalid_api_key" {
			t.Errorf("first event = %v", ev)
		}
		_, err = readEvent(t, c)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 3000 {
			t.Errorf("then %v, want a 3000 close", err)
		}
	})
	t.Run("http", func(t *testing.T) {
		s := openaitest.New(openaitest.Options{Keys: []string{key}, AuthFailure: openaitest.AuthFailureHTTP})
		defer s.Close()
		_, resp, err := dial(t, s, "sk-wrong")
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("dial = %v, %v; want 401", resp, err)
		}
	})
}

// TestFaults: each fault does what it says on the wire.
func TestFaults(t *testing.T) {
	tests := []struct {
		fault openaitest.Fault
		// completesOnRead: Inject returns only once this client reads
		// (a close handshake), so the check runs while it is under way.
		completesOnRead bool
		check           func(t *testing.T, c *websocket.Conn)
	}{
		{fault: openaitest.FaultClose, completesOnRead: true, check: func(t *testing.T, c *websocket.Conn) {
			if _, err := readEvent(t, c); websocket.CloseStatus(err) != websocket.StatusInternalError {
				t.Errorf("read = %v, want a 1011 close", err)
			}
		}},
		{fault: openaitest.FaultDrop, check: func(t *testing.T, c *websocket.Conn) {
			if _, err := readEvent(t, c); err == nil || websocket.CloseStatus(err) != -1 {
				t.Errorf("read = %v, want the connection gone without a close frame", err)
			}
		}},
		{fault: openaitest.FaultSessionExpired, check: func(t *testing.T, c *websocket.Conn) {
			if ev, _ := readEvent(t, c); ev["error"].(map[string]any)["code"] != "session_expired" {
				t.Errorf("event = %v", ev)
			}
		}},
		{fault: openaitest.FaultStall, check: func(t *testing.T, c *websocket.Conn) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			go func() { _, _, _ = c.Read(context.Background()) }() // reads for Ping
			if err := c.Ping(ctx); err == nil {
				t.Error("a stalled upstream answered a ping")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			s := openaitest.New(openaitest.Options{})
			defer s.Close()
			c, _, err := dial(t, s, key)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = readEvent(t, c) // session.created
			injected := make(chan time.Time, 1)
			go func() { injected <- s.WaitConn(1, time.Second).Inject(tt.fault) }()
			if !tt.completesOnRead {
				if at := <-injected; at.IsZero() {
					t.Fatal("Inject did not apply")
				}
			}
			tt.check(t, c)
			if tt.completesOnRead {
				if at := <-injected; at.IsZero() {
					t.Fatal("Inject did not apply")
				}
			}
			c.CloseNow()
		})
	}
}

// TestDeaf: a deaf connection reads nothing the client sends until it
// hears again, and then reads it all, in order.
func TestDeaf(t *testing.T) {
	s := openaitest.New(openaitest.Options{Keys: []string{key}})
	defer s.Close()
	c, _, err := dial(t, s, key)
	if err != nil {
		t.Fatal(err)
	}
	readTypes(t, c, "session.created")
	up := s.WaitConn(1, 5*time.Second)
	up.SetDeaf(true)
	for i := range 3 {
		write(t, c, map[string]any{"type": "input_audio_buffer.clear", "event_id": "c-" + string(rune('1'+i))})
	}
	time.Sleep(50 * time.Millisecond) // time enough to read, were it reading
	if got := up.Received(); len(got) != 0 {
		t.Fatalf("a deaf connection read %d messages", len(got))
	}
	up.SetDeaf(false)
	types, _ := readTypes(t, c, "input_audio_buffer.cleared")
	for len(types) < 3 {
		more, _ := readTypes(t, c, "input_audio_buffer.cleared")
		types = append(types, more...)
	}
	var ids []string
	for _, r := range up.Received() {
		ids = append(ids, r.EventID)
	}
	if want := []string{"c-1", "c-2", "c-3"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("read %v after hearing again, want %v", ids, want)
	}
}

// TestStreamEcho: every append comes straight back as one delta with the
// same audio, and a NoRecord server keeps nothing of the exchange.
func TestStreamEcho(t *testing.T) {
	s := openaitest.New(openaitest.Options{StreamEcho: true, NoRecord: true})
	defer s.Close()
	c, _, err := dial(t, s, key)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := readEvent(t, c); err != nil || ev["type"] != "session.created" {
		t.Fatalf("first event %v, %v; want session.created", ev, err)
	}
	for i := range 3 {
		pcm := []byte{byte(i), 1, 2, 3, 4, 5}
		write(t, c, map[string]any{"type": "input_audio_buffer.append", "audio": base64.StdEncoding.EncodeToString(pcm)})
		ev, err := readEvent(t, c)
		if err != nil {
			t.Fatal(err)
		}
		if ev["type"] != "response.output_audio.delta" || ev["delta"] != base64.StdEncoding.EncodeToString(pcm) ||
			ev["response_id"] != "resp_stream" || ev["item_id"] != "item_stream" || ev["event_id"] == nil {
			t.Fatalf("append %d answered with %v; want a delta of the same audio", i, ev)
		}
	}
	write(t, c, map[string]any{"type": "input_audio_buffer.append", "audio": "not base64!"})
	if ev, err := readEvent(t, c); err != nil || ev["type"] != "error" {
		t.Fatalf("bad audio answered with %v, %v; want an error", ev, err)
	}
	conn := s.WaitConn(1, time.Second)
	if n, m, a := len(conn.Received()), len(conn.Sent()), len(conn.Appended()); n+m+a != 0 {
		t.Errorf("NoRecord kept %d received, %d sent, %d bytes appended", n, m, a)
	}
}
