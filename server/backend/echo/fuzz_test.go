package echo

import (
	"encoding/json"
	"testing"
)

// FuzzTurnDetection: whatever a client sends as turn_detection, the parser
// answers a configuration within the documented bounds or a refusal naming
// a field, and never panics.
func FuzzTurnDetection(f *testing.F) {
	for _, seed := range []string{
		`null`, `{}`, `{"type":"server_vad"}`, `{"type":"semantic_vad","eagerness":"low"}`,
		`{"threshold":0.9,"prefix_padding_ms":0,"silence_duration_ms":10000,"create_response":false,"interrupt_response":false}`,
		`{"threshold":-1}`, `{"threshold":1e400}`, `{"silence_duration_ms":9}`, `{"prefix_padding_ms":5001}`,
		`"server_vad"`, `[]`, `{"type":7}`, `{"idle_timeout_ms":"x"}`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, current := range []*vadConfig{nil, &defaultVAD} {
			cfg, err := parseTurnDetection(json.RawMessage(raw), current, "turn_detection")
			if err != nil {
				if err.Fatal || err.Param == "" || err.Message == "" {
					t.Fatalf("refusal %+v", err)
				}
				continue
			}
			if cfg == nil {
				continue
			}
			if cfg.Threshold < 0 || cfg.Threshold > 1 || cfg.PrefixPaddingMS < 0 || cfg.PrefixPaddingMS > maxPrefixPaddingMS ||
				cfg.SilenceDurationMS < vadFrame || cfg.SilenceDurationMS > maxSilenceDurationMS ||
				(cfg.Type != "server_vad" && cfg.Type != "semantic_vad") {
				t.Fatalf("configuration out of bounds: %+v", cfg)
			}
			d := newDetector(24000, *cfg)
			d.feed(make([]byte, 960), *cfg)
		}
	})
}
