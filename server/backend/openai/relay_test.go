package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

func appendMsg(pcm []byte) string {
	return `{"type":"input_audio_buffer.append","audio":"` + base64.StdEncoding.EncodeToString(pcm) + `"}`
}

// TestOpenRelaysSessionCreated: the client's first event is the upstream's
// session.created, unchanged but for the gateway object the gateway adds,
// and the upstream was asked the way the OpenAI API expects.
func TestOpenRelaysSessionCreated(t *testing.T) {
	tests := []struct {
		name          string
		binary        bool
		wantTransport string
	}{
		{name: "base64 audio", wantTransport: "base64"},
		{name: "binary audio", binary: true, wantTransport: "binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, openaitest.Options{}, nil)
			s := e.open(defaultInfo(tt.binary))
			created := s.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
			up := e.upstreamConn(1)

			if got := up.Header.Get("Authorization"); got != "Bearer "+testKey {
				t.Errorf("Authorization = %q", got)
			}
			if got := up.Query.Get("model"); got != e.cfg.Model {
				t.Errorf("model = %q, want %q", got, e.cfg.Model)
			}
			if got := up.Header.Get("OpenAI-Beta"); got != "" {
				t.Errorf("OpenAI-Beta = %q; the GA API takes none", got)
			}
			if ua := up.Header.Get("User-Agent"); !strings.HasPrefix(ua, "voicegateway/") {
				t.Errorf("User-Agent = %q", ua)
			}

			if sent := up.Sent()[0]; created.Object["event_id"] != sent.EventID {
				t.Errorf("event_id = %v, want the upstream's %q", created.Object["event_id"], sent.EventID)
			}
			gateway, _ := created.Object["gateway"].(map[string]any)
			want := map[string]any{"session_id": "sess_test", "audio_transport": tt.wantTransport, "sample_rate": float64(24000), "max_message_bytes": float64(256 << 10)}
			if !reflect.DeepEqual(gateway, want) {
				t.Errorf("gateway = %v, want %v", gateway, want)
			}
			// Everything else is the upstream's, byte for byte: the
			// gateway member is appended to the upstream's message.
			upstreamRaw := up.Sent()[0].Raw
			if !bytes.HasPrefix(created.JSON, upstreamRaw[:len(upstreamRaw)-1]) ||
				!bytes.HasPrefix(created.JSON[len(upstreamRaw)-1:], []byte(`,"gateway":{`)) {
				t.Errorf("session.created\n%s\nis not the upstream's\n%s\nwith the gateway member appended", created.JSON, upstreamRaw)
			}
			if created.Kind != backendtest.KindRaw {
				t.Errorf("session.created was re-encoded (%s), want it relayed", created.Kind)
			}
		})
	}
}

// TestFullTurn: audio in, audio and transcript out, in every combination
// of client audio transport and upstream event names.
func TestFullTurn(t *testing.T) {
	tests := []struct {
		name      string
		binary    bool
		betaNames bool
	}{
		{name: "base64, GA names"},
		{name: "binary, GA names", binary: true},
		{name: "base64, beta names", betaNames: true},
		{name: "binary, beta names", binary: true, betaNames: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, openaitest.Options{BetaNames: tt.betaNames, ChunkBytes: 4800}, nil)
			s := e.open(defaultInfo(tt.binary))
			s.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
			up := e.upstreamConn(1)

			s.MustSend(`{"type":"session.update","event_id":"c-1","session":{"type":"realtime","instructions":"be brief","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}}}}}`)
			updated := s.Sink.WaitType(t, protocol.TypeSessionUpdated, 1)
			if session, _ := updated.Object["session"].(map[string]any); session["instructions"] != "be brief" {
				t.Errorf("session.updated = %s", updated.JSON)
			}

			pcm := pcmOf(24000*2/2, 3) // 500 ms
			for off := 0; off < len(pcm); off += 960 {
				if tt.binary {
					if err := s.SendBinary(pcm[off : off+960]); err != nil {
						t.Fatal(err)
					}
				} else {
					s.MustSend(appendMsg(pcm[off : off+960]))
				}
			}
			s.MustSend(`{"type":"input_audio_buffer.commit","event_id":"c-2"}`)
			s.Sink.WaitType(t, protocol.TypeInputAudioCommitted, 1)
			s.MustSend(`{"type":"response.create","event_id":"c-3"}`)
			s.Sink.WaitType(t, "rate_limits.updated", 1)

			if got := up.Appended(); !bytes.Equal(got, pcm) {
				t.Fatalf("upstream got %d bytes of audio, want the %d sent", len(got), len(pcm))
			}
			deltaType := protocol.TypeOutputAudioDelta
			transcriptType := protocol.TypeOutputTranscriptDone
			if tt.betaNames {
				deltaType, transcriptType = "response.audio.delta", "response.audio_transcript.done"
			}
			var got []byte
			if tt.binary {
				got = s.Sink.OutputAudio("")
				for _, r := range s.Sink.Records() {
					if r.Type == deltaType {
						t.Fatalf("a %s reached a binary client as JSON", deltaType)
					}
					if r.Kind == backendtest.KindAudio && (r.Ref.ResponseID != "resp_U1" || r.Ref.ItemID == "") {
						t.Errorf("audio ref = %+v", r.Ref)
					}
				}
			} else {
				for _, r := range s.Sink.Records() {
					if r.Type == deltaType {
						b, _ := base64.StdEncoding.DecodeString(r.Object["delta"].(string))
						got = append(got, b...)
					}
				}
				if n := testutil.ToFloat64(e.metrics.AudioFramesOut); n != 5 {
					t.Errorf("audio_frames_out_total = %v, want 5", n)
				}
			}
			if !bytes.Equal(got, pcm) {
				t.Errorf("client got %d bytes of audio back, want %d", len(got), len(pcm))
			}
			if tr := s.Sink.WaitType(t, transcriptType, 1); tr.Object["transcript"] != "echo of 24000 bytes" {
				t.Errorf("transcript = %v", tr.Object["transcript"])
			}
			s.Sink.WaitType(t, protocol.TypeResponseDone, 1)

			// Every upstream event reached the client with its event_id
			// and in order, unknown types included; in binary mode the
			// audio deltas became binary messages instead.
			var wantIDs, gotIDs []string
			for _, sent := range up.Sent() {
				if !(tt.binary && sent.Type == deltaType) {
					wantIDs = append(wantIDs, sent.Type+"/"+sent.EventID)
				}
			}
			for _, r := range s.Sink.Records() {
				if r.Kind == backendtest.KindRaw {
					gotIDs = append(gotIDs, r.Type+"/"+r.Object["event_id"].(string))
				}
			}
			if !reflect.DeepEqual(gotIDs, wantIDs) {
				t.Errorf("client got\n%v\nupstream sent\n%v", gotIDs, wantIDs)
			}
			if fails := s.Sink.Failures(); len(fails) > 0 {
				t.Errorf("session failed: %v", fails)
			}
		})
	}
}

// TestClientEventsPassUnchanged: the upstream receives the client's text
// events byte for byte, unknown types and event_ids included; a binary
// message arrives as an input_audio_buffer.append.
func TestClientEventsPassUnchanged(t *testing.T) {
	tests := []struct {
		name    string
		msg     string
		binary  []byte
		wantRaw string
	}{
		{name: "append keeps its event_id", msg: `{"type":"input_audio_buffer.append","event_id":"c-7","audio":"AAECAw=="}`},
		{name: "unknown type", msg: `{"type":"conversation.item.create","event_id":"c-8","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}`},
		{name: "future type with odd spacing", msg: ` {"type" : "output_audio_buffer.clear", "x":[1,2,{"y":null}]}`},
		{name: "response.create with a response object", msg: `{"type":"response.create","response":{"instructions":"shout","metadata":{"k":"v"}}}`},
		{name: "binary audio", binary: []byte{1, 2, 3, 4, 5, 6}, wantRaw: `{"type":"input_audio_buffer.append","audio":"AQIDBAUG"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, openaitest.Options{}, nil)
			s := e.open(defaultInfo(tt.binary != nil))
			up := e.upstreamConn(1)
			want := tt.msg
			if tt.binary != nil {
				if err := s.SendBinary(tt.binary); err != nil {
					t.Fatal(err)
				}
				want = tt.wantRaw
			} else {
				s.MustSend(tt.msg)
			}
			var head struct{ Type string }
			_ = json.Unmarshal([]byte(want), &head)
			got, ok := up.WaitReceived(head.Type, waitTimeout)
			if !ok {
				t.Fatalf("upstream never received %s", head.Type)
			}
			if string(got.Raw) != want {
				t.Errorf("upstream received\n%s\nwant\n%s", got.Raw, want)
			}
		})
	}
}

// TestSessionUpdateOwnedFields: a session.update that would change the
// audio format or the model is refused and never reaches the upstream; one
// that leaves them as the gateway has them passes unchanged.
func TestSessionUpdateOwnedFields(t *testing.T) {
	tests := []struct {
		name      string
		session   string
		wantParam string // empty: relayed
		wantCode  protocol.Code
	}{
		{name: "instructions only", session: `{"type":"realtime","instructions":"hi"}`},
		{name: "the gateway's format", session: `{"audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},"output":{"format":{"type":"audio/pcm"},"voice":"marin"}}}`},
		{name: "the gateway's model", session: `{"model":"gpt-realtime"}`},
		{name: "beta pcm16", session: `{"input_audio_format":"pcm16","output_audio_format":"pcm16"}`},
		{name: "input at 16 kHz", session: `{"audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}`, wantParam: "session.audio.input.format"},
		{name: "output in G.711", session: `{"audio":{"output":{"format":{"type":"audio/pcmu"}}}}`},
		{name: "input in G.711 A-law", session: `{"audio":{"input":{"format":{"type":"audio/pcma"}}}}`},
		{name: "an unknown format", session: `{"audio":{"output":{"format":{"type":"audio/opus"}}}}`, wantParam: "session.audio.output.format"},
		{name: "format of the wrong shape", session: `{"audio":{"input":{"format":"pcm16"}}}`, wantParam: "session.audio.input.format"},
		{name: "beta G.711", session: `{"input_audio_format":"g711_ulaw"}`},
		{name: "beta of another kind", session: `{"input_audio_format":"opus"}`, wantParam: "session.input_audio_format"},
		{name: "another model", session: `{"model":"gpt-realtime-mini"}`, wantParam: "session.model", wantCode: protocol.CodeModelNotAllowed},
		{name: "model of the wrong type", session: `{"model":7}`, wantParam: "session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, openaitest.Options{}, nil)
			s := e.open(defaultInfo(false))
			up := e.upstreamConn(1)
			msg := `{"type":"session.update","event_id":"c-1","session":` + tt.session + `}`
			err := s.Send(msg)
			// A marker event shows what reached the upstream before it.
			s.MustSend(`{"type":"input_audio_buffer.clear"}`)
			if _, ok := up.WaitReceived("input_audio_buffer.clear", waitTimeout); !ok {
				t.Fatal("the marker never reached the upstream")
			}
			_, relayed := up.WaitReceived("session.update", 0)
			if tt.wantParam == "" {
				if err != nil || !relayed {
					t.Fatalf("Handle = %v, relayed = %v; want it relayed", err, relayed)
				}
				return
			}
			wantCode := tt.wantCode
			if wantCode == "" {
				wantCode = protocol.CodeInvalidEvent
			}
			if err == nil || err.Fatal || err.Code != wantCode || err.Param != tt.wantParam {
				t.Fatalf("Handle = %+v, want a non-fatal invalid_event for %s", err, tt.wantParam)
			}
			if relayed {
				t.Error("a refused session.update reached the upstream")
			}
		})
	}
}

// TestLargeBinaryAudioIsSplit: a binary message larger than one append may
// carry goes up as several appends, in order.
func TestLargeBinaryAudioIsSplit(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, nil)
	info := defaultInfo(true)
	info.MaxMessageBytes = 4 * maxAppendPCM
	s := e.open(info)
	up := e.upstreamConn(1)
	// The largest message the client may send: after base64 it is more
	// than the message limit, and it must still fit the relay queue.
	pcm := pcmOf(int(info.MaxMessageBytes), 9)
	if err := s.SendBinary(pcm); err != nil {
		t.Fatal(err)
	}
	s.MustSend(`{"type":"input_audio_buffer.commit"}`)
	if _, ok := up.WaitReceived("input_audio_buffer.commit", waitTimeout); !ok {
		t.Fatal("commit never arrived")
	}
	appends := 0
	for _, r := range up.Received() {
		if r.Type == "input_audio_buffer.append" {
			appends++
		}
	}
	if appends != 4 {
		t.Errorf("%d appends, want 4", appends)
	}
	if !bytes.Equal(up.Appended(), pcm) {
		t.Error("the audio arrived changed")
	}
}

// TestSplitAudioIsRefusedWhole: a binary message that goes up as several
// appends is charged to the session's account as a whole before any part
// is queued, so a spent budget refuses all of it (buffer_full, the session
// goes on), never the rest of a message whose first part went up.
func TestSplitAudioIsRefusedWhole(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, nil)
	// Beyond its promise the session may hold 2 MiB: one append of a
	// 2 MiB message fits, both do not.
	budget := memory.NewBudget((2<<20+memory.Promised)*8/7+8, metrics.New()) // AdmitShare is 7/8
	acct, _ := budget.Open()
	defer acct.Close()
	info := defaultInfo(true)
	info.MaxMessageBytes = 2 * maxAppendPCM
	info.Memory = acct
	s := e.open(info)
	up := e.upstreamConn(1)
	err := s.SendBinary(pcmOf(2*maxAppendPCM, 5))
	if err == nil || err.Code != protocol.CodeBufferFull || err.Fatal {
		t.Fatalf("a message the budget cannot hold: %v, want a non-fatal buffer_full", err)
	}
	s.MustSend(`{"type":"input_audio_buffer.commit"}`)
	if _, ok := up.WaitReceived("input_audio_buffer.commit", waitTimeout); !ok {
		t.Fatal("commit never arrived")
	}
	if got := up.Appended(); len(got) != 0 {
		t.Fatalf("%d bytes of the refused message reached the upstream", len(got))
	}
	// A message that fits still goes up whole.
	pcm := pcmOf(maxAppendPCM+4800, 6)
	if err := s.SendBinary(pcm); err != nil {
		t.Fatalf("a message that fits: %v", err)
	}
	s.MustSend(`{"type":"input_audio_buffer.commit"}`)
	testkit.Eventually(t, waitTimeout, testkit.That("the audio to reach the upstream", func() bool { return bytes.Equal(up.Appended(), pcm) }))
	testkit.Eventually(t, waitTimeout, testkit.That("the relayed audio given back", func() bool { return acct.Held(memory.Upstream) == 0 }))
}

// TestUpstreamErrorsPassThrough: an upstream error that does not end the
// session reaches the client unchanged, and the session goes on.
func TestUpstreamErrorsPassThrough(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, nil)
	s := e.open(defaultInfo(false))
	s.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
	up := e.upstreamConn(1)

	s.MustSend(`{"type":"no.such.event","event_id":"c-9"}`)
	refusal := s.Sink.WaitType(t, protocol.TypeError, 1)
	body, _ := refusal.Object["error"].(map[string]any)
	if body["code"] != "invalid_value" || body["event_id"] != "c-9" || refusal.Kind != backendtest.KindRaw {
		t.Errorf("upstream refusal reached the client as %s %s", refusal.Kind, refusal.JSON)
	}
	up.Inject(openaitest.FaultError)
	injected := s.Sink.WaitType(t, protocol.TypeError, 2)
	if body, _ := injected.Object["error"].(map[string]any); body["param"] != "session.audio.output.voice" {
		t.Errorf("second error = %s", injected.JSON)
	}
	s.MustSend(`{"type":"input_audio_buffer.clear"}`)
	s.Sink.WaitType(t, protocol.TypeInputAudioCleared, 1)
	if fails := s.Sink.Failures(); len(fails) > 0 {
		t.Errorf("session failed: %v", fails)
	}
}
