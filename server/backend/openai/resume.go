package openai

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/resume"
)

// maxConversationBytes bounds what a session keeps of its conversation for
// a resume (the configuration and the items in their replay form); the
// oldest items are dropped first, and counted. It is charged to the
// session's memory account.
const maxConversationBytes = 256 << 10

// Upstream events the conversation record follows.
const (
	typeSessionUpdated      = "session.updated"
	typeItemDone            = "conversation.item.done"
	typeOutputItemDone      = "response.output_item.done"
	typeTranscriptCompleted = "conversation.item.input_audio_transcription.completed"
	typeItemDeleted         = "conversation.item.deleted"
)

// tracked reports whether the conversation record reads events of typ.
func tracked(typ []byte) bool {
	switch string(typ) {
	case typeSessionUpdated, typeItemDone, typeOutputItemDone, typeTranscriptCompleted, typeItemDeleted:
		return true
	}
	return false
}

// savedItem is one completed item in the form it is replayed in:
// text only (a user's audio by its transcript, an assistant's by its
// transcript), function calls and their outputs as they were.
type savedItem struct {
	id   string
	item map[string]any
	size int64
}

// conversation is what the gateway remembers of a session's conversation
// so that another server can rebuild it: the configuration as the
// upstream last acknowledged it, and the completed items in order. Audio
// is never kept. The reader goroutine writes it; the drain reads it.
type conversation struct {
	mu      sync.Mutex
	acct    *memory.Account
	config  json.RawMessage
	items   []savedItem
	bytes   int64 // config and items, as charged
	dropped int
}

// charge reserves n more bytes; a refusal (the memory budget) is answered
// by dropping the oldest items, never by holding more.
func (v *conversation) charge(n int64) bool {
	for v.bytes+n > maxConversationBytes || !v.acct.Reserve(memory.Session, n) {
		if len(v.items) == 0 {
			return false
		}
		v.dropOldest()
	}
	v.bytes += n
	return true
}

func (v *conversation) dropOldest() {
	v.release(v.items[0].size)
	v.items[0] = savedItem{}
	v.items = v.items[1:]
	v.dropped++
}

func (v *conversation) release(n int64) {
	v.bytes -= n
	v.acct.Release(memory.Session, n)
}

// close gives everything back to the account.
func (v *conversation) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.release(v.bytes)
	v.config, v.items = nil, nil
}

// observe updates the record from one upstream event of a tracked type.
func (v *conversation) observe(data []byte) {
	var ev struct {
		Type       string          `json:"type"`
		Session    json.RawMessage `json:"session"`
		Item       json.RawMessage `json:"item"`
		ItemID     string          `json:"item_id"`
		Transcript *string         `json:"transcript"`
	}
	if json.Unmarshal(data, &ev) != nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch ev.Type {
	case typeSessionUpdated:
		cfg := replayConfig(ev.Session)
		if cfg == nil {
			return
		}
		v.release(int64(len(v.config)))
		v.config = nil
		if v.charge(int64(len(cfg))) {
			v.config = cfg
		}
	case typeItemDone, typeOutputItemDone:
		id, item := replayItem(ev.Item)
		if item == nil {
			return
		}
		v.put(id, item)
	case typeTranscriptCompleted:
		if ev.Transcript == nil {
			return
		}
		for i := range v.items {
			if v.items[i].id == ev.ItemID {
				item := v.items[i].item
				item["content"] = []any{map[string]any{"type": "input_text", "text": *ev.Transcript}}
				v.replace(i, item)
				return
			}
		}
	case typeItemDeleted:
		for i := range v.items {
			if v.items[i].id == ev.ItemID {
				v.release(v.items[i].size)
				v.items = append(v.items[:i], v.items[i+1:]...)
				return
			}
		}
	}
}

// put records a completed item, or replaces it when the upstream reports
// the same item again (conversation.item.done and
// response.output_item.done both announce an answer).
func (v *conversation) put(id string, item map[string]any) {
	if id != "" {
		for i := range v.items {
			if v.items[i].id == id {
				v.replace(i, item)
				return
			}
		}
	}
	size := itemSize(item)
	if !v.charge(size) {
		v.dropped++
		return
	}
	v.items = append(v.items, savedItem{id: id, item: item, size: size})
}

func (v *conversation) replace(i int, item map[string]any) {
	size := itemSize(item)
	v.release(v.items[i].size)
	v.items[i].size, v.items[i].item = 0, nil
	if !v.charge(size) {
		// Dropping older items may have moved it: find it again.
		for j := range v.items {
			if v.items[j].item == nil {
				v.items = append(v.items[:j], v.items[j+1:]...)
				v.dropped++
				return
			}
		}
		return
	}
	for j := range v.items {
		if v.items[j].item == nil {
			v.items[j].item, v.items[j].size = item, size
			return
		}
	}
}

func itemSize(item map[string]any) int64 {
	data, _ := json.Marshal(item)
	return int64(len(data))
}

// state is the record as a resume handle carries it. Items that hold
// nothing to replay yet (a user's audio whose transcript never came) are
// left out and counted as dropped.
func (v *conversation) state() resume.State {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := resume.State{Backend: Name, Config: v.config, Dropped: v.dropped}
	for _, it := range v.items {
		if c, ok := it.item["content"].([]any); ok && len(c) == 0 {
			st.Dropped++
			continue
		}
		data, err := json.Marshal(it.item)
		if err != nil {
			st.Dropped++
			continue
		}
		st.Items = append(st.Items, data)
	}
	return st
}

// Fields of session.updated's session that describe the upstream session
// rather than configure it: a session.update does not carry them.
var notConfig = []string{"id", "object", "expires_at", "client_secret"}

// replayConfig is the session.update body for an acknowledged session.
func replayConfig(session json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(session, &m) != nil || m == nil {
		return nil
	}
	for _, k := range notConfig {
		delete(m, k)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	return data
}

// replayItem is the conversation.item.create form of a completed item;
// nil for items that are not replayed.
func replayItem(raw json.RawMessage) (id string, item map[string]any) {
	var it struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Role    string `json:"role"`
		Content []struct {
			Type       string  `json:"type"`
			Text       *string `json:"text"`
			Transcript *string `json:"transcript"`
		} `json:"content"`
		CallID    string  `json:"call_id"`
		Name      string  `json:"name"`
		Arguments string  `json:"arguments"`
		Output    *string `json:"output"`
		Status    string  `json:"status"`
	}
	if json.Unmarshal(raw, &it) != nil {
		return "", nil
	}
	if it.Status == "incomplete" || it.Status == "in_progress" {
		// An answer cut short is not part of the conversation to carry.
		return "", nil
	}
	switch it.Type {
	case "message":
		textType := "input_text"
		switch it.Role {
		case "assistant":
			textType = "output_text"
		case "user", "system":
		default:
			return "", nil
		}
		content := []any{}
		for _, p := range it.Content {
			text := p.Text
			if text == nil {
				text = p.Transcript
			}
			if text == nil || *text == "" {
				continue
			}
			content = append(content, map[string]any{"type": textType, "text": *text})
		}
		return it.ID, map[string]any{"type": "message", "role": it.Role, "content": content}
	case "function_call":
		return it.ID, map[string]any{"type": "function_call", "call_id": it.CallID, "name": it.Name, "arguments": it.Arguments}
	case "function_call_output":
		if it.Output == nil {
			return "", nil
		}
		return it.ID, map[string]any{"type": "function_call_output", "call_id": it.CallID, "output": *it.Output}
	}
	return "", nil
}

var _ backend.Resumer = (*conn)(nil)

// ResumeState implements backend.Resumer.
func (c *conn) ResumeState() resume.State { return c.conv.state() }

// replay rebuilds a resumed conversation on the new upstream: the saved
// configuration with session.update, then each item with
// conversation.item.create, in order, written before any client message
// can be. It reports how many items went up.
func (c *conn) replay(st *resume.State) (restored int, ok bool) {
	ctx, cancel := context.WithTimeout(c.ctx, c.b.cfg.DialTimeout+c.stall)
	defer cancel()
	if len(st.Config) > 0 {
		if output, perr := checkSessionUpdate(st.Config, c.b.allowed, c.info.SampleRate); perr == nil {
			c.setOutput(output)
			msg, _ := json.Marshal(map[string]any{"type": protocol.TypeSessionUpdate, "session": st.Config})
			if c.up.Write(ctx, websocket.MessageText, msg) != nil {
				return 0, false
			}
		}
	}
	for _, item := range st.Items {
		msg, _ := json.Marshal(map[string]any{"type": "conversation.item.create", "item": item})
		if c.up.Write(ctx, websocket.MessageText, msg) != nil {
			return restored, false
		}
		restored++
	}
	return restored, true
}
