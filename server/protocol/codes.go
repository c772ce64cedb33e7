package protocol

import (
	"strconv"

	"github.com/coder/websocket"
)

// Code is a stable, documented error code carried in error events, close
// reasons and metrics labels. Clients switch on it, so values never change.
type Code string

// The documented error codes (docs/protocol.md lists what each means, which
// HTTP status or close code accompanies it, and whether the session survives).
const (
	CodeUnauthorized        Code = "unauthorized"
	CodeRateLimited         Code = "rate_limited"
	CodeSessionLimit        Code = "session_limit"
	CodeServerDraining      Code = "server_draining"
	CodeInvalidEvent        Code = "invalid_event"
	CodeFrameTooLarge       Code = "frame_too_large"
	CodeInboundRateExceeded Code = "inbound_rate_exceeded"
	CodeSlowConsumer        Code = "slow_consumer"
	CodeBackendUnavailable  Code = "backend_unavailable"
	CodeBackendError        Code = "backend_error"
	CodeIdleTimeout         Code = "idle_timeout"
	CodeMaxDuration         Code = "max_duration"
	CodeDrainDeadline       Code = "drain_deadline"
	CodeWriteFailed         Code = "write_failed"
	CodeInternal            Code = "internal"

	// Upstream trouble of a relaying backend (the openai backend). An
	// upstream that cannot be reached at all is backend_unavailable.
	CodeUpstreamUnauthorized  Code = "upstream_unauthorized"
	CodeUpstreamClosed        Code = "upstream_closed"
	CodeUpstreamStalled       Code = "upstream_stalled"
	CodeUpstreamProtocolError Code = "upstream_protocol_error"
	CodeSessionExpired        Code = "session_expired"

	// Admission and per-credential limits (docs/protocol.md): what keeps
	// one pod standing and one credential within its share.
	CodeServerBusy           Code = "server_busy"             // HTTP 503: too many handshakes in progress
	CodeMemoryLimit          Code = "memory_limit"            // 1013: the memory budget cannot promise a new session its bytes
	CodeBufferFull           Code = "buffer_full"             // non-fatal: buffering refused (the session's bound or the memory budget)
	CodeAPIKeySessionLimit   Code = "api_key_session_limit"   // 1008: the API key holds --max-sessions-per-key sessions here
	CodeClientIPSessionLimit Code = "client_ip_session_limit" // 1008: the client address (IPv6: its /64) holds --max-sessions-per-ip
	CodeCredentialRevoked    Code = "credential_revoked"      // 1008: the API key the session was opened with was removed
	CodeModelNotAllowed      Code = "model_not_allowed"       // 1008 (or HTTP 400 at a mint): a model outside --openai-models
	// OpenAI's own code for a response.cancel with no response active
	// (echo; the openai backend passes the upstream's on).
	CodeResponseCancelNotActive Code = "response_cancel_not_active"

	// Resume handles (docs/protocol.md, "Resuming a session"): each is
	// non-fatal; the session goes on as a fresh conversation.
	CodeResumeInvalid  Code = "resume_invalid"   // not a handle this fleet sealed (forged, corrupted, an unknown key)
	CodeResumeExpired  Code = "resume_expired"   // past its expiry (the drain deadline and a minute)
	CodeResumeForeign  Code = "resume_foreign"   // sealed for another credential
	CodeResumeTooLarge Code = "resume_too_large" // longer than the handle bound
)

// AllCodes lists every code, for metrics pre-registration and documentation tests.
var AllCodes = []Code{
	CodeUnauthorized, CodeRateLimited, CodeSessionLimit, CodeServerDraining,
	CodeInvalidEvent, CodeFrameTooLarge, CodeInboundRateExceeded, CodeSlowConsumer,
	CodeBackendUnavailable, CodeBackendError, CodeIdleTimeout, CodeMaxDuration,
	CodeDrainDeadline, CodeWriteFailed, CodeInternal,
	CodeUpstreamUnauthorized, CodeUpstreamClosed, CodeUpstreamStalled,
	CodeUpstreamProtocolError, CodeSessionExpired,
	CodeServerBusy, CodeMemoryLimit, CodeBufferFull, CodeAPIKeySessionLimit,
	CodeClientIPSessionLimit, CodeCredentialRevoked, CodeModelNotAllowed, CodeResponseCancelNotActive,
	CodeResumeInvalid, CodeResumeExpired, CodeResumeForeign, CodeResumeTooLarge,
}

// Close codes the gateway uses (RFC 6455 section 7.4 and the IANA registry).
const (
	CloseNormal          = websocket.StatusNormalClosure   // 1000: the client or the backend ended the session
	CloseGoingAway       = websocket.StatusGoingAway       // 1001
	ClosePolicyViolation = websocket.StatusPolicyViolation // 1008: a limit the client broke
	CloseMessageTooBig   = websocket.StatusMessageTooBig   // 1009
	CloseInternalError   = websocket.StatusInternalError   // 1011: backend or gateway failure
	CloseServiceRestart  = websocket.StatusServiceRestart  // 1012: drain deadline reached, reconnect
	CloseTryAgainLater   = websocket.StatusTryAgainLater   // 1013: session limit reached
)

// ErrorType is the OpenAI-compatible error.type field.
type ErrorType string

const (
	ErrorTypeInvalidRequest ErrorType = "invalid_request_error"
	ErrorTypeServer         ErrorType = "server_error"
)

// Error is a failure reported to a client: an error event, possibly followed
// by a close. Fatal errors end the session with CloseCode.
type Error struct {
	Code      Code
	Type      ErrorType
	Message   string
	Param     string // the offending field, when one is to blame
	EventID   string // the client event that caused it, when known
	Fatal     bool
	CloseCode websocket.StatusCode
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Invalid reports a client event the gateway rejects; the session goes on.
func Invalid(param, message string) *Error {
	return &Error{Code: CodeInvalidEvent, Type: ErrorTypeInvalidRequest, Param: param, Message: message}
}

// BufferFull reports buffering a session was refused (its own bound or the
// process's memory budget); the message was dropped and the session goes on.
func BufferFull(message string) *Error {
	return &Error{Code: CodeBufferFull, Type: ErrorTypeInvalidRequest, Message: message}
}

// Fatal builds an error that ends the session with closeCode.
func Fatal(code Code, closeCode websocket.StatusCode, message string) *Error {
	t := ErrorTypeInvalidRequest
	if closeCode == CloseInternalError || closeCode == CloseServiceRestart || closeCode == CloseTryAgainLater {
		t = ErrorTypeServer
	}
	return &Error{Code: code, Type: t, Message: message, Fatal: true, CloseCode: closeCode}
}

// ModelNotAllowedMessage is the message of a model_not_allowed refusal; it
// quotes the model only when it is short enough to be one.
func ModelNotAllowedMessage(model string) string {
	name := "this model"
	if len(model) <= 64 {
		name = "the model " + strconv.Quote(model)
	}
	return name + " is not served by this gateway; ask for one of the models its operator allows (--openai-models)"
}
