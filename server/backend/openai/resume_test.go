package openai

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
)

func itemDone(id, role, text string) []byte {
	data, _ := json.Marshal(map[string]any{"type": "conversation.item.done", "item": map[string]any{
		"id": id, "type": "message", "role": role, "status": "completed",
		"content": []any{map[string]any{"type": "input_text", "text": text}}}})
	return data
}

// TestConversationIsBounded: the record keeps at most
// maxConversationBytes, dropping the oldest items and counting them, holds
// what it keeps on the session's memory account, and gives it back on
// close.
func TestConversationIsBounded(t *testing.T) {
	budget := memory.NewBudget(0, metrics.New())
	acct, _ := budget.Open()
	defer acct.Close()
	v := &conversation{acct: acct}
	text := strings.Repeat("x", 1000)
	const n = 400 // about 400 KiB of items for a 256 KiB record
	for i := range n {
		v.observe(itemDone(fmt.Sprintf("item_%d", i), "user", text))
	}
	st := v.state()
	if v.bytes > maxConversationBytes || st.Dropped == 0 || st.Dropped+len(st.Items) != n {
		t.Fatalf("%d bytes kept, %d items, %d dropped", v.bytes, len(st.Items), st.Dropped)
	}
	if held := acct.Held(memory.Session); held < v.bytes {
		t.Fatalf("account holds %d bytes for the record's %d", held, v.bytes)
	}
	var last map[string]any
	_ = json.Unmarshal(st.Items[len(st.Items)-1], &last)
	if last["role"] != "user" {
		t.Fatalf("last item %v", last)
	}
	before, kept := acct.Held(memory.Session), v.bytes
	v.close()
	if after := acct.Held(memory.Session); after != before-kept {
		t.Fatalf("after close the account holds %d, want %d (%d less)", after, before-kept, kept)
	}
	t.Logf("%d items of 1000 characters: %d kept (%d bytes), %d dropped", n, len(st.Items), kept, st.Dropped)
}

// TestReplayForms: what each completed item becomes for the replay.
func TestReplayForms(t *testing.T) {
	for name, c := range map[string]struct{ item, want string }{
		"user audio with transcript": {`{"id":"a","type":"message","role":"user","content":[{"type":"input_audio","transcript":"hello"}]}`,
			`{"content":[{"text":"hello","type":"input_text"}],"role":"user","type":"message"}`},
		"assistant audio": {`{"id":"b","type":"message","role":"assistant","status":"completed","content":[{"type":"output_audio","transcript":"hi there"}]}`,
			`{"content":[{"text":"hi there","type":"output_text"}],"role":"assistant","type":"message"}`},
		"function call": {`{"id":"c","type":"function_call","call_id":"k","name":"f","arguments":"{}"}`,
			`{"arguments":"{}","call_id":"k","name":"f","type":"function_call"}`},
		"function output": {`{"id":"d","type":"function_call_output","call_id":"k","output":"42"}`,
			`{"call_id":"k","output":"42","type":"function_call_output"}`},
		"cut short":    {`{"id":"e","type":"message","role":"assistant","status":"incomplete","content":[]}`, `null`},
		"unknown type": {`{"id":"f","type":"mcp_call"}`, `null`},
	} {
		t.Run(name, func(t *testing.T) {
			_, item := replayItem(json.RawMessage(c.item))
			got, _ := json.Marshal(item)
			if string(got) != c.want {
				t.Fatalf("%s\nwant %s", got, c.want)
			}
		})
	}
}
