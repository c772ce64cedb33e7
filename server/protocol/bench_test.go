package protocol

import (
	"testing"
)

// 20 ms of 24 kHz PCM16 mono.
const frameBytes = 960

func BenchmarkDecodeAppend(b *testing.B) {
	msg := []byte(appendJSON(pcmFrame(frameBytes)))
	var d Decoder
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := d.DecodeText(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBinary(b *testing.B) {
	msg := pcmFrame(frameBytes)
	var d Decoder
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := d.DecodeBinary(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendAudioDelta(b *testing.B) {
	ref := ContentRef{ResponseID: "resp_12", ItemID: "item_12_echo"}
	pcm := pcmFrame(frameBytes)
	buf := make([]byte, 0, AudioDeltaSize(ref, len(pcm)))
	b.ReportAllocs()
	b.SetBytes(int64(len(pcm)))
	seq := uint64(0)
	for b.Loop() {
		seq++
		buf = AppendAudioDelta(buf[:0], seq, ref, pcm)
	}
}

func BenchmarkMarshalErrorEvent(b *testing.B) {
	e := Invalid("audio", "audio must be whole PCM16 samples (an even number of bytes)")
	e.EventID = "evt_123"
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		if _, err := Marshal(NewErrorEvent(e, "sess_0123456789"), EventID(seq)); err != nil {
			b.Fatal(err)
		}
	}
}
