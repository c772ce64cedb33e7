package openai

import (
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// fault is one kind of upstream trouble: the metrics label it is counted
// under, what the client is told, and whether the upstream connection is
// past saving.
type fault struct {
	kind string // a metrics.UpstreamErrorKinds label
	err  *protocol.Error
	// broken means the connection is unusable (gone, hung, or speaking
	// something else): it is cut at once, with no close handshake to wait
	// for. An upstream that is well but ended the session itself gets the
	// normal close at Close.
	broken bool
}

func backendFailure(kind string, code protocol.Code, message string) fault {
	return fault{kind: kind, err: protocol.Fatal(code, protocol.CloseInternalError, message), broken: true}
}

// Failures to open the upstream, reported by Open.

func dialUnauthorized(status int) fault {
	return backendFailure("unauthorized", protocol.CodeUpstreamUnauthorized,
		"the upstream refused the gateway's credentials (HTTP "+strconv.Itoa(status)+")")
}

func dialRefused(status int) fault {
	return backendFailure("refused", protocol.CodeBackendUnavailable,
		"the upstream refused the session (HTTP "+strconv.Itoa(status)+")")
}

func dialTimedOut(timeout time.Duration) fault {
	return backendFailure("dial_timeout", protocol.CodeBackendUnavailable,
		"the upstream did not answer within "+timeout.String())
}

func dialUnreachable() fault {
	return backendFailure("unreachable", protocol.CodeBackendUnavailable, "the upstream could not be reached")
}

// Failures of an open upstream.

// upstreamUnauthorized is the OpenAI way of refusing a key: accept the
// WebSocket, send an invalid_api_key error, close with 3000.
func upstreamUnauthorized() fault {
	return backendFailure("unauthorized", protocol.CodeUpstreamUnauthorized, "the upstream refused the gateway's credentials")
}

func upstreamClosed(code websocket.StatusCode) fault {
	return backendFailure("closed", protocol.CodeUpstreamClosed,
		"the upstream closed the connection ("+strconv.Itoa(int(code))+")")
}

func upstreamLost() fault {
	return backendFailure("closed", protocol.CodeUpstreamClosed, "the upstream connection was lost")
}

func upstreamSilent(stall time.Duration) fault {
	return backendFailure("stalled", protocol.CodeUpstreamStalled,
		"the upstream sent nothing and answered no ping for "+stall.String())
}

func upstreamNotTaking() fault {
	return backendFailure("stalled", protocol.CodeUpstreamStalled, "the upstream stopped taking client messages")
}

func upstreamMalformed(why string) fault {
	return backendFailure("malformed", protocol.CodeUpstreamProtocolError, "the upstream sent a malformed message: "+why)
}

func upstreamTooLarge(limit int64) fault {
	return backendFailure("too_large", protocol.CodeUpstreamProtocolError,
		"the upstream sent a message larger than "+strconv.FormatInt(limit, 10)+" bytes")
}

// upstreamExpired ends the session like max_duration does (1008): the
// upstream session reached its own maximum duration and the client may
// start a new one. The upstream is well, so it is closed normally.
func upstreamExpired() fault {
	return fault{
		kind: "session_expired",
		err: protocol.Fatal(protocol.CodeSessionExpired, protocol.ClosePolicyViolation,
			"the upstream session reached its maximum duration; open a new session"),
	}
}

// authCloseCode is the close code the OpenAI Realtime API uses to refuse a
// key after accepting the WebSocket (with reason
// "invalid_request_error.invalid_api_key").
const authCloseCode websocket.StatusCode = 3000

// closeFault classifies the upstream closing the connection.
func closeFault(ce websocket.CloseError) fault {
	if ce.Code == authCloseCode || strings.Contains(ce.Reason, upstreamCodeInvalidAPIKey) {
		return upstreamUnauthorized()
	}
	return upstreamClosed(ce.Code)
}

// Upstream error codes the relay acts on.
const (
	upstreamCodeSessionExpired = "session_expired"
	upstreamCodeInvalidAPIKey  = "invalid_api_key"
)
