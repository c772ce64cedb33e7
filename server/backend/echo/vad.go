package echo

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// Turn detection, as the OpenAI Realtime API configures it
// (session.audio.input.turn_detection, or the beta session.turn_detection).
// The echo backend detects speech by energy: a 10 ms frame is speech when
// its RMS level is above threshold's level (see level), which is what a
// client's settings need to behave as they do against the real API:
// speech_started when the caller starts talking, speech_stopped and a
// commit after silence_duration_ms of quiet, a response when
// create_response is set.

// Bounds of the settings; a value outside them is refused with
// invalid_event naming it.
const (
	maxPrefixPaddingMS   = 5000
	maxSilenceDurationMS = 10000
	vadFrame             = 10 // ms
)

// Default turn detection: the OpenAI API's defaults for server_vad.
var defaultVAD = vadConfig{
	Type: "server_vad", Threshold: 0.5, PrefixPaddingMS: 300, SilenceDurationMS: 500,
	CreateResponse: true, InterruptResponse: true,
}

// vadConfig is turn_detection as the session reports it.
type vadConfig struct {
	Type              string  `json:"type"`
	Threshold         float64 `json:"threshold"`
	PrefixPaddingMS   int     `json:"prefix_padding_ms"`
	SilenceDurationMS int     `json:"silence_duration_ms"`
	CreateResponse    bool    `json:"create_response"`
	InterruptResponse bool    `json:"interrupt_response"`
}

// vadUpdate is the turn_detection member of a session.update: fields left
// out keep their values (or the defaults, when turn detection was off).
type vadUpdate struct {
	Type              *string  `json:"type"`
	Threshold         *float64 `json:"threshold"`
	PrefixPaddingMS   *int     `json:"prefix_padding_ms"`
	SilenceDurationMS *int     `json:"silence_duration_ms"`
	CreateResponse    *bool    `json:"create_response"`
	InterruptResponse *bool    `json:"interrupt_response"`
	// Settings of the real API that an energy detector has no use for;
	// read so that their types are checked.
	IdleTimeoutMS *int    `json:"idle_timeout_ms"`
	Eagerness     *string `json:"eagerness"`
}

// parseTurnDetection applies a turn_detection value to current (nil: off)
// and returns the result (nil: off). param names the member in errors.
func parseTurnDetection(raw json.RawMessage, current *vadConfig, param string) (*vadConfig, *protocol.Error) {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		return nil, nil
	}
	var u vadUpdate
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &u) != nil {
		return nil, protocol.Invalid(param, param+" must be null or an object like {\"type\":\"server_vad\",\"threshold\":0.5}")
	}
	next := defaultVAD
	if current != nil {
		next = *current
	}
	if u.Type != nil {
		switch *u.Type {
		case "server_vad", "semantic_vad":
			// semantic_vad is served by the same energy detector: the
			// echo backend has no model to judge a turn's meaning.
			next.Type = *u.Type
		default:
			return nil, protocol.Invalid(param+".type", "turn detection type must be server_vad or semantic_vad")
		}
	}
	if u.Threshold != nil {
		if math.IsNaN(*u.Threshold) || *u.Threshold < 0 || *u.Threshold > 1 {
			return nil, protocol.Invalid(param+".threshold", "threshold must be between 0 and 1")
		}
		next.Threshold = *u.Threshold
	}
	if u.PrefixPaddingMS != nil {
		if *u.PrefixPaddingMS < 0 || *u.PrefixPaddingMS > maxPrefixPaddingMS {
			return nil, protocol.Invalid(param+".prefix_padding_ms", "prefix_padding_ms must be between 0 and "+strconv.Itoa(maxPrefixPaddingMS))
		}
		next.PrefixPaddingMS = *u.PrefixPaddingMS
	}
	if u.SilenceDurationMS != nil {
		if *u.SilenceDurationMS < vadFrame || *u.SilenceDurationMS > maxSilenceDurationMS {
			return nil, protocol.Invalid(param+".silence_duration_ms", "silence_duration_ms must be between "+strconv.Itoa(vadFrame)+" and "+strconv.Itoa(maxSilenceDurationMS))
		}
		next.SilenceDurationMS = *u.SilenceDurationMS
	}
	if u.CreateResponse != nil {
		next.CreateResponse = *u.CreateResponse
	}
	if u.InterruptResponse != nil {
		next.InterruptResponse = *u.InterruptResponse
	}
	return &next, nil
}

// level is the RMS level, as a fraction of full scale, above which a frame
// is speech: threshold 0 is -60 dBFS (anything but digital silence and
// the faintest hiss), the default 0.5 is -40 dBFS (quiet speech at a
// distance), 1 is -20 dBFS (loud speech close to the microphone).
func level(threshold float64) float64 {
	return math.Pow(10, (-60+40*threshold)/20)
}

// detector is the energy VAD of one session: it looks at the input audio
// in 10 ms frames as it is appended, carrying a partial frame over.
type detector struct {
	frameSamples int     // samples in 10 ms
	minSquare    float64 // a frame's mean square above which it is speech
	sum          float64 // sum of squares of the partial frame
	samples      int     // samples in the partial frame
	speaking     bool
	quietMS      int   // ms of quiet since the last speech frame
	positionMS   int64 // ms of audio looked at in the session
	startMS      int64 // audio_start_ms of the current speech
}

// vadResult is what one append revealed.
type vadResult struct {
	started, stopped bool
	startMS, endMS   int64
}

func newDetector(rate int, cfg vadConfig) detector {
	lv := level(cfg.Threshold)
	return detector{frameSamples: max(1, rate/100), minSquare: lv * lv * 32768 * 32768}
}

// feed looks at pcm (PCM16 LE, whole samples) and reports the first start
// and the first stop of speech in it; a stop ends the feed (the caller
// commits, and feeds the rest again).
func (d *detector) feed(pcm []byte, cfg vadConfig) (res vadResult, used int) {
	for used+1 < len(pcm) {
		v := float64(int16(uint16(pcm[used]) | uint16(pcm[used+1])<<8))
		used += 2
		d.sum += v * v
		if d.samples++; d.samples < d.frameSamples {
			continue
		}
		speech := d.sum/float64(d.samples) > d.minSquare
		d.sum, d.samples = 0, 0
		d.positionMS += vadFrame
		switch {
		case speech && !d.speaking:
			d.speaking, d.quietMS = true, 0
			d.startMS = max(0, d.positionMS-vadFrame-int64(cfg.PrefixPaddingMS))
			res.started, res.startMS = true, d.startMS
		case speech:
			d.quietMS = 0
		case d.speaking:
			if d.quietMS += vadFrame; d.quietMS >= cfg.SilenceDurationMS {
				d.speaking, d.quietMS = false, 0
				res.stopped, res.endMS = true, d.positionMS
				return res, used
			}
		}
	}
	return res, used
}

// reset forgets a speech in progress (the buffer was committed or cleared
// by the client).
func (d *detector) reset() {
	d.speaking, d.quietMS = false, 0
}
