// Package protocol defines what travels on a voicegateway WebSocket: the client
// events the gateway understands (OpenAI Realtime GA shapes), the server events
// it emits, the gateway's own gateway.* events, and the stable error and close
// codes that clients program against.
//
// It is the only place that parses untrusted client messages, so it validates
// everything it decodes and reports every rejection as an *Error carrying a
// documented code (docs/protocol.md). Hot-path server events (audio deltas)
// are appended to caller-owned buffers by hand so that relaying a 20 ms frame
// does not allocate.
package protocol
