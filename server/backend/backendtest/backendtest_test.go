package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// recorder is a testing.TB that keeps what Error and Errorf report, so that
// a test can show the kit's checks fire.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// fakeBackend hands every session to fakeConn, which keeps the audio it is
// handed without copying it and answers as its test says.
type fakeBackend struct {
	openErr error
	conn    *fakeConn
	handle  func(ev *protocol.ClientEvent) *protocol.Error
}

func (b *fakeBackend) Name() string { return "fake" }

func (b *fakeBackend) Open(_ context.Context, _ backend.Info, sink backend.Sink) (backend.Conn, error) {
	if b.openErr != nil {
		return nil, b.openErr
	}
	b.conn = &fakeConn{sink: sink, handle: b.handle}
	return b.conn, nil
}

type fakeConn struct {
	sink   backend.Sink
	handle func(ev *protocol.ClientEvent) *protocol.Error
	kept   [][]byte
	closes int
}

func (c *fakeConn) Handle(_ context.Context, ev *protocol.ClientEvent) *protocol.Error {
	c.kept = append(c.kept, ev.Audio)
	if c.handle != nil {
		return c.handle(ev)
	}
	return nil
}

func (c *fakeConn) Close() error {
	c.closes++
	return nil
}

func TestSinkRecords(t *testing.T) {
	s := NewSink()
	ref := protocol.ContentRef{ResponseID: "resp_1", ItemID: "item_1"}
	pcm := []byte{1, 2, 3, 4}
	if err := s.Event(&protocol.ResponseEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeResponseCreated}, Response: protocol.NewResponse("resp_1", protocol.ResponseStatusInProgress)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audio(ref, pcm); err != nil {
		t.Fatal(err)
	}
	pcm[0] = 99 // the sink kept a copy
	raw := `{"type":"response.output_audio.delta","response_id":"resp_2","delta":"BQYHCA==","x":[1]}`
	if err := s.Raw([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	if err := s.Event(&protocol.AudioCleared{EventHeader: protocol.EventHeader{Type: protocol.TypeInputAudioCleared}}); err != nil {
		t.Fatal(err)
	}

	if got, want := s.Types(), []string{protocol.TypeResponseCreated, protocol.TypeOutputAudioDelta, protocol.TypeInputAudioCleared}; !reflect.DeepEqual(got, want) {
		t.Errorf("Types = %v, want %v", got, want)
	}
	records := s.Records()
	if len(records) != 4 || records[0].Kind != KindEvent || records[1].Kind != KindAudio || records[2].Kind != KindRaw {
		t.Fatalf("Records = %+v", records)
	}
	// Events are stamped as the session stamps them; raw JSON is kept.
	if records[0].Object["event_id"] != "event_1" || s.Last().Object["event_id"] != "event_2" {
		t.Errorf("event ids %v, %v; want event_1, event_2", records[0].Object["event_id"], s.Last().Object["event_id"])
	}
	if string(records[2].JSON) != raw {
		t.Errorf("raw = %s, want it unchanged", records[2].JSON)
	}
	if chunks := s.Chunks(); len(chunks) != 1 || chunks[0].Ref != ref || !bytes.Equal(chunks[0].PCM, []byte{1, 2, 3, 4}) {
		t.Errorf("Chunks = %+v", chunks)
	}
	if n := s.Count(protocol.TypeInputAudioCleared); n != 1 {
		t.Errorf("Count = %d", n)
	}
	for respID, want := range map[string][]byte{"": {1, 2, 3, 4, 5, 6, 7, 8}, "resp_1": {1, 2, 3, 4}, "resp_2": {5, 6, 7, 8}, "resp_3": nil} {
		if got := s.OutputAudio(respID); !bytes.Equal(got, want) {
			t.Errorf("OutputAudio(%q) = %v, want %v", respID, got, want)
		}
	}
	if v := s.Violations(); len(v) != 0 {
		t.Errorf("violations: %v", v)
	}
}

func TestSinkClose(t *testing.T) {
	s := NewSink()
	s.CloseWhen(func(kind string, chunks int) bool { return kind == "audio" && chunks == 2 })
	for i := range 2 {
		if err := s.Audio(protocol.ContentRef{}, []byte{0, 0}); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if s.Closed() {
		t.Fatal("closed before the third chunk")
	}
	if err := s.Audio(protocol.ContentRef{}, []byte{0, 0}); !errors.Is(err, backend.ErrSessionClosed) {
		t.Fatalf("third chunk = %v, want ErrSessionClosed", err)
	}
	broken := errors.New("queue broken")
	s.SetCloseErr(broken)
	if err := s.Raw([]byte(`{"type":"x"}`)); err != broken {
		t.Errorf("Raw on a closed sink = %v, want %v", err, broken)
	}
	if n := len(s.Records()); !s.Closed() || n != 2 {
		t.Errorf("closed %v with %d records, want closed with 2", s.Closed(), n)
	}
}

func TestSinkViolations(t *testing.T) {
	tests := map[string]struct {
		call func(s *Sink)
		want string // empty: no violation
	}{
		"valid raw":           {call: func(s *Sink) { _ = s.Raw([]byte(`{"type":"a"}`)) }},
		"raw not JSON":        {call: func(s *Sink) { _ = s.Raw([]byte(`{"type":`)) }, want: "not one JSON object"},
		"raw without a type":  {call: func(s *Sink) { _ = s.Raw([]byte(`{"kind":"a"}`)) }, want: "not one JSON object"},
		"odd audio":           {call: func(s *Sink) { _ = s.Audio(protocol.ContentRef{}, []byte{1, 2, 3}) }, want: "whole PCM16 samples"},
		"valid fail":          {call: func(s *Sink) { s.Fail(protocol.Fatal(protocol.CodeUpstreamClosed, protocol.CloseInternalError, "x")) }},
		"non-fatal fail":      {call: func(s *Sink) { s.Fail(protocol.Invalid("", "x")) }, want: "fatal error"},
		"undocumented code":   {call: func(s *Sink) { s.Fail(protocol.Fatal("made_up", protocol.CloseInternalError, "x")) }, want: "documented code"},
		"no close code":       {call: func(s *Sink) { s.Fail(&protocol.Error{Code: protocol.CodeInternal, Fatal: true}) }, want: "close code"},
		"event after close":   {call: func(s *Sink) { s.seal(); _ = s.Raw([]byte(`{"type":"a"}`)) }, want: "after the connection's Close"},
		"closed, then called": {call: func(s *Sink) { s.Close(); _ = s.Audio(protocol.ContentRef{}, nil) }},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			s := NewSink()
			tt.call(s)
			v := s.Violations()
			switch {
			case tt.want == "" && len(v) != 0:
				t.Errorf("violations %v, want none", v)
			case tt.want != "" && (len(v) != 1 || !strings.Contains(v[0], tt.want)):
				t.Errorf("violations %v, want one about %q", v, tt.want)
			}
		})
	}
}

// TestSessionEndsOnFail: a backend's Fail ends the session as a session
// ends: its context is cancelled and the sink refuses output.
func TestSessionEndsOnFail(t *testing.T) {
	b := &fakeBackend{}
	s := Open(t, b, DefaultInfo())
	b.conn.sink.Fail(protocol.Fatal(protocol.CodeBackendError, protocol.CloseInternalError, "gone"))
	if s.Context().Err() == nil || !s.Sink.Closed() {
		t.Errorf("after Fail: context %v, sink closed %v; want both ended", s.Context().Err(), s.Sink.Closed())
	}
	s.Close()
	s.Close()
	if b.conn.closes != 1 {
		t.Errorf("Close called %d times, want once", b.conn.closes)
	}
}

// TestSessionOverwritesBuffers: what Handle was given is overwritten once
// it returns, as the session's pooled buffers are, so a backend that keeps
// it without copying is found out.
func TestSessionOverwritesBuffers(t *testing.T) {
	b := &fakeBackend{}
	s := Open(t, b, DefaultInfo())
	audio := []byte{1, 2, 3, 4}
	s.MustSend(appendMsg(audio))
	if err := s.SendBinary(audio); err != nil {
		t.Fatal(err)
	}
	for i, kept := range b.conn.kept {
		if bytes.Equal(kept, audio) {
			t.Errorf("message %d: the audio kept past Handle is intact, want it overwritten", i)
		}
	}
}

// TestSessionChecksHandle: Handle's errors must carry documented codes; a
// fatal one ends the session; the event's id is filled in as the session
// does.
func TestSessionChecksHandle(t *testing.T) {
	var rec *recorder
	t.Run("inner", func(t *testing.T) {
		rec = &recorder{TB: t}
		b := &fakeBackend{handle: func(ev *protocol.ClientEvent) *protocol.Error {
			if ev.Type == protocol.TypeInputAudioClear {
				return &protocol.Error{Code: "made_up", Message: "x"}
			}
			return protocol.Fatal(protocol.CodeInternal, protocol.CloseInternalError, "x")
		}}
		s, err := TryOpen(rec, context.Background(), b, DefaultInfo(), NewSink())
		if err != nil {
			t.Fatal(err)
		}
		s.Send(clearMsg)
		if s.Context().Err() != nil {
			t.Error("a non-fatal error ended the session")
		}
		perr := s.Send(`{"type":"input_audio_buffer.commit","event_id":"c-7"}`)
		if perr.EventID != "c-7" {
			t.Errorf("EventID = %q, want the event's", perr.EventID)
		}
		if s.Context().Err() == nil || !s.Sink.Closed() {
			t.Error("a fatal error left the session running")
		}
	})
	if errs := rec.errors(); len(errs) != 1 || !strings.Contains(errs[0], "not a documented one") {
		t.Errorf("reported %q, want the undocumented code only", errs)
	}
}

// TestTryOpenChecksErrors: an error from Open that is a *protocol.Error
// must be one a session can end with.
func TestTryOpenChecksErrors(t *testing.T) {
	tests := map[string]struct {
		err     error
		wantBad bool
	}{
		"plain error":       {err: errors.New("dial tcp: refused")},
		"fatal, documented": {err: fmt.Errorf("dial: %w", protocol.Fatal(protocol.CodeUpstreamUnauthorized, protocol.CloseInternalError, "x"))},
		"non-fatal":         {err: protocol.Invalid("", "x"), wantBad: true},
		"undocumented":      {err: protocol.Fatal("made_up", protocol.CloseInternalError, "x"), wantBad: true},
	}
	for name, tt := range tests {
		var rec *recorder
		t.Run(name, func(t *testing.T) {
			rec = &recorder{TB: t}
			if s, err := TryOpen(rec, context.Background(), &fakeBackend{openErr: tt.err}, DefaultInfo(), NewSink()); s != nil || err != tt.err {
				t.Errorf("TryOpen = %v, %v; want nil, %v", s, err, tt.err)
			}
		})
		if bad := len(rec.errors()) > 0; bad != tt.wantBad {
			t.Errorf("%s: reported %q, want a report: %v", name, rec.errors(), tt.wantBad)
		}
	}
}

// TestViolationsFailTheTest: what the sink notes is reported when the
// test ends.
func TestViolationsFailTheTest(t *testing.T) {
	var rec *recorder
	t.Run("inner", func(t *testing.T) {
		rec = &recorder{TB: t}
		b := &fakeBackend{}
		if _, err := TryOpen(rec, context.Background(), b, DefaultInfo(), NewSink()); err != nil {
			t.Fatal(err)
		}
		_ = b.conn.sink.Raw([]byte("not json"))
	})
	if errs := rec.errors(); len(errs) != 1 || !strings.Contains(errs[0], "broke the Sink contract") {
		t.Errorf("reported %q, want the Raw violation", errs)
	}
}
