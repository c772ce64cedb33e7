package protocol

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Server event types: the OpenAI Realtime GA names the gateway emits itself,
// plus the gateway's own gateway.* events.
const (
	TypeSessionCreated          = "session.created"
	TypeSessionUpdated          = "session.updated"
	TypeInputAudioCommitted     = "input_audio_buffer.committed"
	TypeInputAudioCleared       = "input_audio_buffer.cleared"
	TypeResponseCreated         = "response.created"
	TypeResponseDone            = "response.done"
	TypeOutputAudioDelta        = "response.output_audio.delta"
	TypeOutputAudioDone         = "response.output_audio.done"
	TypeOutputTranscriptDelta   = "response.output_audio_transcript.delta"
	TypeOutputTranscriptDone    = "response.output_audio_transcript.done"
	TypeError                   = "error"
	TypeGatewayDraining         = "gateway.draining"
	TypeGatewayResumed          = "gateway.resumed"
	AudioFormatPCM              = "audio/pcm"
	AudioFormatPCMU             = "audio/pcmu" // G.711 µ-law, 8 kHz, one byte a sample
	AudioFormatPCMA             = "audio/pcma" // G.711 A-law
	ResponseStatusInProgress    = "in_progress"
	ResponseStatusCompleted     = "completed"
	ResponseStatusCancelled     = "cancelled"
	AudioTransportBinary        = "binary"
	AudioTransportBase64        = "base64"
	responseObject              = "realtime.response"
	sessionObjectType           = "realtime"
	maxEventIDDigits            = 20
	audioDeltaFixedOverheadSize = 192
)

// Event is implemented by every server event struct; the session stamps the
// event_id just before encoding so ids are ordered per session.
type Event interface {
	header() *EventHeader
}

// EventHeader is the part every server event shares.
type EventHeader struct {
	Type    string `json:"type"`
	EventID string `json:"event_id"`
}

func (h *EventHeader) header() *EventHeader { return h }

// Marshal stamps eventID into ev and encodes it.
func Marshal(ev Event, eventID string) ([]byte, error) {
	ev.header().EventID = eventID
	return json.Marshal(ev)
}

// EventID formats a per-session sequence number as an event id.
func EventID(seq uint64) string { return "event_" + strconv.FormatUint(seq, 10) }

// AudioFormat is the Realtime audio format object.
type AudioFormat struct {
	Type string `json:"type"`
	Rate int    `json:"rate"`
}

// SessionConfig is the part of the Realtime session object the gateway itself
// answers for when no upstream does (the echo backend).
type SessionConfig struct {
	Type             string          `json:"type"`
	Object           string          `json:"object,omitempty"`
	ID               string          `json:"id"`
	Model            string          `json:"model"`
	OutputModalities []string        `json:"output_modalities"`
	Instructions     string          `json:"instructions"`
	Audio            SessionAudio    `json:"audio"`
	Extra            json.RawMessage `json:"-"`
}

// SessionAudio holds the input and output audio formats.
type SessionAudio struct {
	Input  SessionAudioDirection `json:"input"`
	Output SessionAudioDirection `json:"output"`
}

// SessionAudioDirection is one direction's audio settings.
type SessionAudioDirection struct {
	Format AudioFormat `json:"format"`
}

// GatewayInfo tells the client what the gateway negotiated. It rides on
// session.created as an extra top-level field that Realtime clients ignore.
type GatewayInfo struct {
	SessionID      string `json:"session_id"`
	AudioTransport string `json:"audio_transport"`
	SampleRate     int    `json:"sample_rate"`
	MaxMessageSize int64  `json:"max_message_bytes"`
}

// SessionEvent is session.created or session.updated.
type SessionEvent struct {
	EventHeader
	Session any          `json:"session"`
	Gateway *GatewayInfo `json:"gateway,omitempty"`
}

// AudioCommitted is input_audio_buffer.committed.
type AudioCommitted struct {
	EventHeader
	PreviousItemID *string `json:"previous_item_id"`
	ItemID         string  `json:"item_id"`
}

// AudioCleared is input_audio_buffer.cleared.
type AudioCleared struct {
	EventHeader
}

// Response is the Realtime response object, reduced to what clients read.
type Response struct {
	Object           string   `json:"object"`
	ID               string   `json:"id"`
	Status           string   `json:"status"`
	OutputModalities []string `json:"output_modalities"`
	Output           []any    `json:"output"`
}

// ResponseEvent is response.created or response.done.
type ResponseEvent struct {
	EventHeader
	Response Response `json:"response"`
}

// NewResponse returns a response object in the given status.
func NewResponse(id, status string) Response {
	return Response{Object: responseObject, ID: id, Status: status, OutputModalities: []string{"audio"}, Output: []any{}}
}

// ContentRef locates output content, as every output_audio event carries it.
type ContentRef struct {
	ResponseID   string `json:"response_id"`
	ItemID       string `json:"item_id"`
	OutputIndex  int    `json:"output_index"`
	ContentIndex int    `json:"content_index"`
}

// AudioDone is response.output_audio.done.
type AudioDone struct {
	EventHeader
	ContentRef
}

// TranscriptDelta is response.output_audio_transcript.delta.
type TranscriptDelta struct {
	EventHeader
	ContentRef
	Delta string `json:"delta"`
}

// TranscriptDone is response.output_audio_transcript.done.
type TranscriptDone struct {
	EventHeader
	ContentRef
	Transcript string `json:"transcript"`
}

// ErrorBody is the error object of an error event. session_id is the
// gateway's addition so that a logged client error can be matched to the
// server's logs.
type ErrorBody struct {
	Type      ErrorType `json:"type"`
	Code      Code      `json:"code"`
	Message   string    `json:"message"`
	Param     *string   `json:"param"`
	EventID   *string   `json:"event_id"`
	SessionID string    `json:"session_id,omitempty"`
}

// ErrorEvent is the error server event.
type ErrorEvent struct {
	EventHeader
	Error ErrorBody `json:"error"`
}

// NewErrorEvent converts an *Error into its event.
func NewErrorEvent(e *Error, sessionID string) *ErrorEvent {
	body := ErrorBody{Type: e.Type, Code: e.Code, Message: e.Message, SessionID: sessionID}
	if body.Type == "" {
		body.Type = ErrorTypeInvalidRequest
	}
	if e.Param != "" {
		p := e.Param
		body.Param = &p
	}
	if e.EventID != "" {
		id := e.EventID
		body.EventID = &id
	}
	return &ErrorEvent{EventHeader: EventHeader{Type: TypeError}, Error: body}
}

// DrainingEvent is gateway.draining: the server is shutting down; reconnect
// (to the same URL, which routes to a ready server) after ReconnectAfterMS and
// before Deadline, when the session will be closed with 1012.
type DrainingEvent struct {
	EventHeader
	ReconnectAfterMS int64     `json:"reconnect_after_ms"`
	Deadline         time.Time `json:"deadline"`
	// Reason is empty for a drain; max_duration or backend_session_cap
	// when the session itself is about to end (at Deadline).
	Reason string `json:"reason,omitempty"`
	// Resume is the sealed resume handle the client presents on
	// reconnect (?resume=) to keep its conversation; empty when the
	// session has none. It is a bearer secret of the session: never log it.
	Resume string `json:"resume,omitempty"`
}

// ResumedEvent is gateway.resumed: the session continues the conversation
// of the resume handle presented. Restored items were replayed to the
// backend; Dropped are the oldest ones left out to keep the handle bounded.
type ResumedEvent struct {
	EventHeader
	SessionID string `json:"session_id"`
	Restored  int    `json:"restored"`
	Dropped   int    `json:"dropped"`
}

// AppendAudioDelta appends a response.output_audio.delta event carrying pcm
// as base64. It is the hot path of every response and does not allocate when
// dst has room.
func AppendAudioDelta(dst []byte, seq uint64, ref ContentRef, pcm []byte) []byte {
	dst = append(dst, `{"type":"response.output_audio.delta","event_id":"event_`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `","response_id":`...)
	dst = appendJSONString(dst, ref.ResponseID)
	dst = append(dst, `,"item_id":`...)
	dst = appendJSONString(dst, ref.ItemID)
	dst = append(dst, `,"output_index":`...)
	dst = strconv.AppendInt(dst, int64(ref.OutputIndex), 10)
	dst = append(dst, `,"content_index":`...)
	dst = strconv.AppendInt(dst, int64(ref.ContentIndex), 10)
	dst = append(dst, `,"delta":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, pcm)
	return append(dst, `"}`...)
}

// AudioDeltaSize is an upper bound of AppendAudioDelta's output, for sizing
// buffers. The fixed overhead is 132 bytes of text and quotes, up to 20 digits
// of sequence number and up to 20 characters for each index.
func AudioDeltaSize(ref ContentRef, pcmLen int) int {
	return audioDeltaFixedOverheadSize + maxJSONEscapeGrowth*(len(ref.ResponseID)+len(ref.ItemID)) + base64.StdEncoding.EncodedLen(pcmLen)
}

// maxJSONEscapeGrowth is the most bytes appendJSONString writes for one input
// byte: a control character or an invalid UTF-8 byte becomes \u00XX or \ufffd.
const maxJSONEscapeGrowth = 6

// appendJSONString appends s as a JSON string. Like encoding/json it turns
// invalid UTF-8 into U+FFFD; unlike it, it leaves <, >, &, U+2028 and U+2029
// as they are, which JSON allows. strconv.AppendQuote is not a JSON encoder:
// it writes \x, \a and \v escapes that JSON parsers reject.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			if b == '"' || b == '\\' {
				dst = append(dst, '\\', b)
			} else {
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

// Server event types of the conversation and of a response's parts, as the
// GA API names them (the echo backend emits them; relays pass them on).
const (
	TypeSpeechStarted    = "input_audio_buffer.speech_started"
	TypeSpeechStopped    = "input_audio_buffer.speech_stopped"
	TypeItemAdded        = "conversation.item.added"
	TypeItemDone         = "conversation.item.done"
	TypeItemRetrieved    = "conversation.item.retrieved"
	TypeItemDeleted      = "conversation.item.deleted"
	TypeItemTruncated    = "conversation.item.truncated"
	TypeOutputItemAdded  = "response.output_item.added"
	TypeOutputItemDone   = "response.output_item.done"
	TypeContentPartAdded = "response.content_part.added"
	TypeContentPartDone  = "response.content_part.done"
	ItemStatusCompleted  = "completed"
	ItemStatusInProgress = "in_progress"
	ItemStatusIncomplete = "incomplete"
	ContentInputAudio    = "input_audio"
	ContentInputText     = "input_text"
	ContentOutputAudio   = "output_audio"
	ContentPartAudio     = "audio"
	itemObject           = "realtime.item"
	itemTypeMessage      = "message"
	RoleUser             = "user"
	RoleAssistant        = "assistant"
	RoleSystem           = "system"
)

// ContentPart is one part of an item's content.
type ContentPart struct {
	Type       string  `json:"type"`
	Text       *string `json:"text,omitempty"`
	Transcript *string `json:"transcript"`
}

// Item is a conversation item (a message), reduced to what clients read.
type Item struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Type    string        `json:"type"`
	Role    string        `json:"role"`
	Status  string        `json:"status"`
	Content []ContentPart `json:"content"`
}

// NewItem returns a message item.
func NewItem(id, role, status string, content ...ContentPart) Item {
	if content == nil {
		content = []ContentPart{}
	}
	return Item{ID: id, Object: itemObject, Type: itemTypeMessage, Role: role, Status: status, Content: content}
}

// SpeechEvent is input_audio_buffer.speech_started (AudioStartMS) or
// speech_stopped (AudioEndMS).
type SpeechEvent struct {
	EventHeader
	AudioStartMS *int64 `json:"audio_start_ms,omitempty"`
	AudioEndMS   *int64 `json:"audio_end_ms,omitempty"`
	ItemID       string `json:"item_id"`
}

// ItemEvent is conversation.item.added, .done or .retrieved.
type ItemEvent struct {
	EventHeader
	PreviousItemID *string `json:"previous_item_id,omitempty"`
	Item           Item    `json:"item"`
}

// ItemIDEvent is conversation.item.deleted or .truncated.
type ItemIDEvent struct {
	EventHeader
	ItemID       string `json:"item_id"`
	ContentIndex *int   `json:"content_index,omitempty"`
	AudioEndMS   *int64 `json:"audio_end_ms,omitempty"`
}

// OutputItemEvent is response.output_item.added or .done.
type OutputItemEvent struct {
	EventHeader
	ResponseID  string `json:"response_id"`
	OutputIndex int    `json:"output_index"`
	Item        Item   `json:"item"`
}

// ContentPartEvent is response.content_part.added or .done.
type ContentPartEvent struct {
	EventHeader
	ContentRef
	Part ContentPart `json:"part"`
}
