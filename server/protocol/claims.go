package protocol

import (
	"encoding/json"
	"strconv"
)

// SessionClaims are the settings a client token fixes for its session
// (the "model" and "voice" its minter chose); empty means not fixed.
type SessionClaims struct {
	Model, Voice string
}

// CheckSessionClaims refuses a session.update whose session object names
// another model or voice than the claims fix: a page holding a token may
// not choose a costlier model or another voice than the backend that
// minted it allowed. The voice is read where both API generations put it
// (GA session.audio.output.voice, beta session.voice). Fields that name
// the claimed value, or are absent, pass. The error is non-fatal
// (invalid_event, param naming the field).
func CheckSessionClaims(session json.RawMessage, claims SessionClaims) *Error {
	if claims == (SessionClaims{}) || len(session) == 0 {
		return nil
	}
	var update struct {
		Model *string `json:"model"`
		Voice *string `json:"voice"`
		Audio *struct {
			Output *struct {
				Voice *string `json:"voice"`
			} `json:"output"`
		} `json:"audio"`
	}
	if err := json.Unmarshal(session, &update); err != nil {
		return Invalid("session", "session object has a field of the wrong type")
	}
	if claims.Model != "" && update.Model != nil && *update.Model != claims.Model {
		return Invalid("session.model", "this session's client token allows the model "+strconv.Quote(claims.Model)+" only")
	}
	if claims.Voice == "" {
		return nil
	}
	if update.Voice != nil && *update.Voice != claims.Voice {
		return Invalid("session.voice", "this session's client token allows the voice "+strconv.Quote(claims.Voice)+" only")
	}
	if update.Audio != nil && update.Audio.Output != nil && update.Audio.Output.Voice != nil && *update.Audio.Output.Voice != claims.Voice {
		return Invalid("session.audio.output.voice", "this session's client token allows the voice "+strconv.Quote(claims.Voice)+" only")
	}
	return nil
}
