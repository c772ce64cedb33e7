package openaitest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// handle answers one client message the way the GA API does, with turn
// detection off: the client commits and asks for responses itself.
func (c *Conn) handle(m message) {
	if m.typ == websocket.MessageBinary {
		c.sendError("invalid_value", "Binary messages are not supported.", nil, nil)
		return
	}
	var ev struct {
		Type     string          `json:"type"`
		EventID  string          `json:"event_id"`
		Audio    string          `json:"audio"`
		Session  json.RawMessage `json:"session"`
		Item     json.RawMessage `json:"item"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(m.data, &ev); err != nil {
		c.sendError("invalid_json", "The server could not parse the event.", nil, nil)
		return
	}
	var eventID any
	if ev.EventID != "" {
		eventID = ev.EventID
	}
	switch ev.Type {
	case "session.update":
		c.sessionUpdate(ev.Session, eventID)
	case "input_audio_buffer.append":
		if c.srv.opts.StreamEcho {
			c.streamEcho(ev.Audio, eventID)
			return
		}
		pcm, err := base64.StdEncoding.DecodeString(ev.Audio)
		if err != nil {
			c.sendError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio", eventID)
			return
		}
		c.buffer = append(c.buffer, pcm...)
	case "input_audio_buffer.clear":
		c.buffer = c.buffer[:0]
		c.send(map[string]any{"type": "input_audio_buffer.cleared"})
	case "input_audio_buffer.commit":
		c.commit(eventID)
	case "conversation.item.create":
		c.items++
		id := "item_U" + strconv.Itoa(c.items)
		var item map[string]any
		_ = json.Unmarshal(ev.Item, &item)
		if item == nil {
			item = map[string]any{}
		}
		item["id"], item["object"], item["status"] = id, "realtime.item", "completed"
		c.remember(item)
		c.send(map[string]any{"type": "conversation.item.added", "previous_item_id": nilIfEmpty(c.lastItemID), "item": item})
		c.send(map[string]any{"type": "conversation.item.done", "previous_item_id": nilIfEmpty(c.lastItemID), "item": item})
		c.lastItemID = id
	case "response.create":
		c.respond()
	case "response.cancel":
		c.sendError("response_cancel_not_active", "Cancellation failed: no active response found.", nil, eventID)
	default:
		c.sendError("invalid_value", fmt.Sprintf("Invalid value: '%s'. Supported values are: 'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', 'response.create' and 'response.cancel'.", ev.Type), "type", eventID)
	}
}

// streamEcho answers an append with its audio as an output delta at once
// (Options.StreamEcho). The audio is not kept for a commit. The delta is
// written as the API writes it, without a map to encode, so that the
// stand-in spends little of a shared machine's CPU under load.
func (c *Conn) streamEcho(audio string, eventID any) {
	c.scratch = c.scratch[:0]
	if n := base64.StdEncoding.DecodedLen(len(audio)); cap(c.scratch) < n {
		c.scratch = make([]byte, 0, n)
	}
	if _, err := base64.StdEncoding.Decode(c.scratch[:base64.StdEncoding.DecodedLen(len(audio))], []byte(audio)); err != nil {
		c.sendError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio", eventID)
		return
	}
	typ := "response.output_audio.delta"
	if c.srv.opts.BetaNames {
		typ = "response.audio.delta"
	}
	c.seq++
	msg := c.out[:0]
	msg = append(msg, `{"type":"`...)
	msg = append(msg, typ...)
	msg = append(msg, `","event_id":"event_U`...)
	msg = strconv.AppendInt(msg, int64(c.seq), 10)
	msg = append(msg, `","response_id":"resp_stream","item_id":"item_stream","output_index":0,"content_index":0,"delta":"`...)
	msg = append(msg, audio...)
	msg = append(msg, `"}`...)
	c.out = msg
	if !c.srv.opts.NoRecord {
		c.mu.Lock()
		c.sent = append(c.sent, Sent{Type: typ, EventID: "event_U" + strconv.Itoa(c.seq), Raw: append([]byte(nil), msg...), At: time.Now()})
		c.mu.Unlock()
	}
	c.write(websocket.MessageText, msg)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (c *Conn) sessionUpdate(raw json.RawMessage, eventID any) {
	var update map[string]any
	if err := json.Unmarshal(raw, &update); err != nil || update == nil {
		c.sendError("invalid_value", "Invalid 'session'.", "session", eventID)
		return
	}
	if audio, ok := update["audio"].(map[string]any); ok {
		for _, dir := range []string{"input", "output"} {
			d, _ := audio[dir].(map[string]any)
			f, ok := d["format"].(map[string]any)
			if !ok {
				continue
			}
			pcm := f["type"] == "audio/pcm" && (f["rate"] == nil || f["rate"] == float64(SampleRate))
			if !pcm && f["type"] != "audio/pcmu" && f["type"] != "audio/pcma" {
				c.sendError("invalid_value", "Invalid audio format.", "session.audio."+dir+".format", eventID)
				return
			}
		}
	}
	if audio, ok := update["audio"].(map[string]any); ok {
		if in, ok := audio["input"].(map[string]any); ok {
			if tr, ok := in["transcription"]; ok {
				c.transcribe = tr != nil
			}
		}
	}
	for k, v := range update {
		if k == "audio" {
			continue // the format is the only audio setting this stand-in knows
		}
		c.session[k] = v
	}
	c.send(map[string]any{"type": "session.updated", "session": c.session})
}

func (c *Conn) commit(eventID any) {
	if len(c.buffer) == 0 {
		c.sendError("input_audio_buffer_commit_empty", "Error committing input audio buffer: buffer too small.", nil, eventID)
		return
	}
	c.items++
	id := "item_U" + strconv.Itoa(c.items)
	c.send(map[string]any{"type": "input_audio_buffer.committed", "previous_item_id": nilIfEmpty(c.lastItemID), "item_id": id})
	item := map[string]any{"id": id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
		"content": []any{map[string]any{"type": "input_audio", "transcript": nil}}}
	c.send(map[string]any{"type": "conversation.item.added", "previous_item_id": nilIfEmpty(c.lastItemID), "item": item})
	c.send(map[string]any{"type": "conversation.item.done", "previous_item_id": nilIfEmpty(c.lastItemID), "item": item})
	c.lastItemID = id
	c.lastAudio = append([]byte(nil), c.buffer...)
	c.buffer = c.buffer[:0]
	if c.transcribe {
		transcript := fmt.Sprintf("heard %d bytes", len(c.lastAudio))
		c.send(map[string]any{"type": "conversation.item.input_audio_transcription.completed", "item_id": id,
			"content_index": 0, "transcript": transcript})
		c.remember(map[string]any{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": transcript}}})
	} else {
		c.remember(item)
	}
}

// respond answers response.create with the last committed audio, in the
// GA event order.
func (c *Conn) respond() {
	c.responses++
	c.items++
	respID := "resp_U" + strconv.Itoa(c.responses)
	itemID := "item_U" + strconv.Itoa(c.items)
	names := map[string]string{
		"delta": "response.output_audio.delta", "done": "response.output_audio.done",
		"tdelta": "response.output_audio_transcript.delta", "tdone": "response.output_audio_transcript.done",
	}
	if c.srv.opts.BetaNames {
		names = map[string]string{
			"delta": "response.audio.delta", "done": "response.audio.done",
			"tdelta": "response.audio_transcript.delta", "tdone": "response.audio_transcript.done",
		}
	}
	response := func(status string, output []any) map[string]any {
		return map[string]any{"object": "realtime.response", "id": respID, "status": status,
			"output_modalities": []any{"audio"}, "output": output}
	}
	item := map[string]any{"id": itemID, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress", "content": []any{}}
	transcript := fmt.Sprintf("echo of %d bytes", len(c.lastAudio))
	ref := func(ev map[string]any) map[string]any {
		ev["response_id"], ev["item_id"], ev["output_index"], ev["content_index"] = respID, itemID, 0, 0
		return ev
	}

	if !c.srv.opts.NoRecord {
		c.mu.Lock()
		c.responseContexts = append(c.responseContexts, append([]ConversationItem(nil), c.conversation...))
		c.mu.Unlock()
	}
	c.send(map[string]any{"type": "response.created", "response": response("in_progress", []any{})})
	c.send(map[string]any{"type": "response.output_item.added", "response_id": respID, "output_index": 0, "item": item})
	c.send(ref(map[string]any{"type": "response.content_part.added", "part": map[string]any{"type": "audio", "transcript": ""}}))
	chunk := c.srv.opts.ChunkBytes
	for off := 0; off < len(c.lastAudio); off += chunk {
		end := min(off+chunk, len(c.lastAudio))
		c.send(ref(map[string]any{"type": names["delta"], "delta": base64.StdEncoding.EncodeToString(c.lastAudio[off:end])}))
	}
	c.send(ref(map[string]any{"type": names["done"]}))
	c.send(ref(map[string]any{"type": names["tdelta"], "delta": transcript}))
	c.send(ref(map[string]any{"type": names["tdone"], "transcript": transcript}))
	c.send(ref(map[string]any{"type": "response.content_part.done", "part": map[string]any{"type": "audio", "transcript": transcript}}))
	item["status"] = "completed"
	item["content"] = []any{map[string]any{"type": "output_audio", "transcript": transcript}}
	c.send(map[string]any{"type": "response.output_item.done", "response_id": respID, "output_index": 0, "item": item})
	c.remember(item)
	c.send(map[string]any{"type": "response.done", "response": response("completed", []any{item})})
	c.send(map[string]any{"type": "rate_limits.updated", "rate_limits": []any{
		map[string]any{"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5}}})
}
