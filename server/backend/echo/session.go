package echo

import (
	"encoding/json"
	"fmt"

	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// sessionObject is the session as session.created and session.updated
// report it: the GA shape, with turn detection as configured.
type sessionObject struct {
	Type             string       `json:"type"`
	Object           string       `json:"object"`
	ID               string       `json:"id"`
	Model            string       `json:"model"`
	OutputModalities []string     `json:"output_modalities"`
	Instructions     string       `json:"instructions"`
	Audio            sessionAudio `json:"audio"`
}

type sessionAudio struct {
	Input struct {
		Format        protocol.AudioFormat `json:"format"`
		TurnDetection *vadConfig           `json:"turn_detection"`
	} `json:"input"`
	Output struct {
		Format protocol.AudioFormat `json:"format"`
		Voice  string               `json:"voice"`
	} `json:"output"`
}

// echoVoice is the voice the echo "speaks" in: the caller's own.
const echoVoice = "echo"

func (c *conn) sessionObject() sessionObject {
	s := sessionObject{
		Type: "realtime", Object: "realtime.session", ID: c.info.SessionID, Model: c.model,
		OutputModalities: []string{"audio"}, Instructions: c.instructions,
	}
	format := protocol.AudioFormat{Type: protocol.AudioFormatPCM, Rate: c.info.SampleRate}
	s.Audio.Input.Format, s.Audio.Output.Format = format, format
	s.Audio.Input.TurnDetection = c.vad
	s.Audio.Output.Voice = echoVoice
	return s
}

// sessionUpdate applies what the echo backend understands of an update —
// instructions, turn detection, the audio format (PCM at the session's
// rate only: the echo plays back what it was given) — and answers with
// session.updated. Other fields (tools, voice, …) are accepted and have no
// effect on an echo. A refused update changes nothing.
func (c *conn) sessionUpdate(ev *protocol.ClientEvent) *protocol.Error {
	type direction struct {
		Format        *protocol.AudioFormat `json:"format"`
		TurnDetection json.RawMessage       `json:"turn_detection"`
	}
	var update struct {
		Instructions *string `json:"instructions"`
		Audio        *struct {
			Input  *direction `json:"input"`
			Output *direction `json:"output"`
		} `json:"audio"`
		TurnDetection json.RawMessage `json:"turn_detection"` // the beta name
	}
	if err := json.Unmarshal(ev.Session, &update); err != nil {
		return protocol.Invalid("session", "session object has a field of the wrong type")
	}
	vad, vadParam := update.TurnDetection, "session.turn_detection"
	if update.Audio != nil {
		for _, d := range []*direction{update.Audio.Input, update.Audio.Output} {
			if d == nil || d.Format == nil {
				continue
			}
			f := d.Format
			if (f.Type != "" && f.Type != protocol.AudioFormatPCM) || (f.Rate != 0 && f.Rate != c.info.SampleRate) {
				return protocol.Invalid("session.audio", fmt.Sprintf("the echo backend carries %s at %d Hz only", protocol.AudioFormatPCM, c.info.SampleRate))
			}
		}
		if in := update.Audio.Input; in != nil && len(in.TurnDetection) > 0 {
			vad, vadParam = in.TurnDetection, "session.audio.input.turn_detection"
		}
	}
	nextVAD := c.vad
	if len(vad) > 0 {
		var err *protocol.Error
		if nextVAD, err = parseTurnDetection(vad, c.vad, vadParam); err != nil {
			return err
		}
	}
	if update.Instructions != nil {
		// The instructions are kept for the session (and repeated in every
		// session.updated): what they hold is charged to its account.
		grown := int64(len(*update.Instructions) - len(c.instructions))
		if !c.info.Memory.Reserve(memory.Session, grown) {
			return protocol.BufferFull("session not updated: keeping these instructions would pass this server's memory budget; send shorter ones, or retry shortly")
		}
		c.info.Memory.Release(memory.Session, -grown)
		c.instructions = *update.Instructions
	}
	if len(vad) > 0 {
		c.vad = nextVAD
		position := c.det.positionMS // audio_start_ms counts from the session's start
		c.det = detector{positionMS: position}
		if c.vad != nil {
			c.det = newDetector(c.info.SampleRate, *c.vad)
			c.det.positionMS = position
		}
	}
	return c.emit(&protocol.SessionEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSessionUpdated}, Session: c.sessionObject()})
}
