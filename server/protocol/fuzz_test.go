package protocol

import (
	"bytes"
	"strings"
	"testing"
)

func FuzzDecodeText(f *testing.F) {
	for _, seed := range []string{
		`{"type":"session.update","event_id":"evt_1","session":{"instructions":"hi","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}}}}}`,
		appendJSON(pcmFrame(960)),
		appendJSON(pcmFrame(2)),
		`{"type":"input_audio_buffer.append","audio":"\/\/\/\/\/\/\/\/"}`,
		`{"type":"input_audio_buffer.append","audio":""}`,
		`{"type":"input_audio_buffer.commit"}`,
		`{"type":"input_audio_buffer.clear","event_id":"e"}`,
		`{"type":"response.create"}`,
		`{"type":"response.create","response":{"instructions":"x"}}`,
		`{"type":"response.create","response":null}`,
		`{"type":"response.cancel","response_id":"resp_1"}`,
		`{"type":"conversation.item.create","item":{"type":"message"}}`,
		// Broken ones.
		``,
		`[]`,
		`null`,
		`{"type":`,
		`{"type":5}`,
		`{"TYPE":"input_audio_buffer.append","Audio":"AQI="}`,
		`{"type":"input_audio_buffer.append","audio":"AQ=="}`,
		`{"type":"input_audio_buffer.append","audio":"!!"}`,
		`{"type":"input_audio_buffer.append","audio":null}`,
		`{"type":"session.update","session":[]}`,
		`{"type":"response.create","response":"x"}`,
		`{"type":"response.cancel","response_id":"` + strings.Repeat("r", 129) + `"}`,
		`{"type":"` + strings.Repeat("t", 129) + `"}`,
		"{\"type\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	var d Decoder // reused across inputs, as a session's reader reuses it
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		ev, err := d.DecodeText(data)
		if !bytes.Equal(in, data) {
			t.Fatal("DecodeText modified its input")
		}
		if err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			if err.Code != CodeInvalidEvent || err.Fatal {
				t.Fatalf("unexpected error kind: %+v", err)
			}
			if len(ev.Type) > maxTypeLength || len(ev.EventID) > maxEventIDLength {
				t.Fatalf("rejected event keeps over-long fields: %d/%d bytes", len(ev.Type), len(ev.EventID))
			}
			return
		}
		if ev.Type == "" {
			t.Fatal("accepted an event without a type")
		}
		if len(ev.Type) > maxTypeLength || len(ev.EventID) > maxEventIDLength || len(ev.ResponseID) > maxResponseIDLength {
			t.Fatalf("accepted over-long fields: %+v", ev)
		}
		if !bytes.Equal(ev.Raw, data) {
			t.Fatal("Raw is not the message")
		}
		switch ev.Type {
		case TypeInputAudioAppend:
			// Whole samples are the backend's concern (G.711 has one
			// byte a sample); the audio is never more than the message.
			if len(ev.Audio) > len(data) {
				t.Fatalf("decoded %d bytes of audio from a %d-byte message", len(ev.Audio), len(data))
			}
		case TypeSessionUpdate:
			if !isJSONObject(ev.Session) || len(ev.Session) > maxSessionObjectLength {
				t.Fatalf("accepted session %q", ev.Session)
			}
		}
	})
}

func FuzzDecodeBinary(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 2})
	f.Add(pcmFrame(960))
	var d Decoder
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := d.DecodeBinary(data)
		if (err == nil) != (len(data)%2 == 0) {
			t.Fatalf("%d bytes: err = %v", len(data), err)
		}
		if err == nil && (!ev.Binary || !bytes.Equal(ev.Audio, data) || ev.Type != TypeInputAudioAppend) {
			t.Fatalf("event = %+v", ev)
		}
	})
}

// FuzzAppendAudioDelta checks that the hand-written encoder matches
// encoding/json and stays within AudioDeltaSize for any ids and numbers.
func FuzzAppendAudioDelta(f *testing.F) {
	f.Add(uint64(1), "resp_1", "item_1_echo", 0, 0, []byte{1, 2, 3, 4})
	f.Add(uint64(0), "", "", -1, 1<<40, []byte{})
	f.Add(uint64(1<<63), "a\"b\\c\x00\x7f", "\xff\u2028", 3, 7, pcmFrame(33))
	f.Fuzz(func(t *testing.T, seq uint64, responseID, itemID string, outputIndex, contentIndex int, pcm []byte) {
		ref := ContentRef{ResponseID: responseID, ItemID: itemID, OutputIndex: outputIndex, ContentIndex: contentIndex}
		checkAudioDelta(t, seq, ref, pcm)
	})
}
