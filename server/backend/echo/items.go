package echo

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// The conversation the echo keeps, for conversation.item.retrieve, .delete
// and .truncate and for previous_item_id: the latest items only, each
// charged to the session's memory account.
const (
	maxConversationItems = 64
	maxItemText          = 1 << 10 // text kept per item; the rest is cut
	itemCost             = 256     // what an item costs besides its text
	maxItemIDLength      = 64
)

type conversation struct {
	items  []protocol.Item
	costs  []int64
	lastID string
}

// add appends item (mu held) and returns the id of the item before it.
func (v *conversation) add(item protocol.Item, acct *memory.Account) *string {
	var previous *string
	if v.lastID != "" {
		p := v.lastID
		previous = &p
	}
	v.lastID = item.ID
	cost := int64(itemCost)
	for _, p := range item.Content {
		if p.Text != nil {
			cost += int64(len(*p.Text))
		}
		if p.Transcript != nil {
			cost += int64(len(*p.Transcript))
		}
	}
	if !acct.Reserve(memory.Session, cost) {
		return previous // told, not kept: retrieve will not find it
	}
	if len(v.items) == maxConversationItems {
		acct.Release(memory.Session, v.costs[0])
		v.items[0] = protocol.Item{}
		v.items, v.costs = v.items[1:], v.costs[1:]
	}
	v.items = append(v.items, item)
	v.costs = append(v.costs, cost)
	return previous
}

func (v *conversation) find(id string) int {
	for i := range v.items {
		if v.items[i].ID == id {
			return i
		}
	}
	return -1
}

// update replaces a kept item (its cost is what it was first charged:
// only the speaker updates items, with a transcript of bounded length).
func (v *conversation) update(item protocol.Item) {
	if i := v.find(item.ID); i >= 0 {
		v.items[i] = item
	}
}

func (v *conversation) remove(i int, acct *memory.Account) {
	acct.Release(memory.Session, v.costs[i])
	v.items = append(v.items[:i], v.items[i+1:]...)
	v.costs = append(v.costs[:i], v.costs[i+1:]...)
}

func (v *conversation) drop(acct *memory.Account) {
	for _, cost := range v.costs {
		acct.Release(memory.Session, cost)
	}
	v.items, v.costs = nil, nil
}

// addItem adds an item to the conversation and returns its previous_item_id.
func (c *conn) addItem(item protocol.Item) *string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conv.add(item, c.info.Memory)
}

// emitItems sends conversation.item.added and conversation.item.done.
func (c *conn) emitItems(previous *string, item protocol.Item) *protocol.Error {
	for _, typ := range []string{protocol.TypeItemAdded, protocol.TypeItemDone} {
		if err := c.emit(&protocol.ItemEvent{EventHeader: protocol.EventHeader{Type: typ}, PreviousItemID: previous, Item: item}); err != nil {
			return err
		}
	}
	return nil
}

// itemCreate answers conversation.item.create as the API does: the item is
// added and done. A user message's content becomes what the next
// response.create echoes: its input_audio, or its input_text said back as
// a transcript. previous_item_id is checked but the item is always added at
// the end (the echo's conversation is a line).
func (c *conn) itemCreate(raw []byte) *protocol.Error {
	var ev struct {
		PreviousItemID *string `json:"previous_item_id"`
		Item           *struct {
			ID      *string `json:"id"`
			Type    string  `json:"type"`
			Role    string  `json:"role"`
			Content []struct {
				Type       string  `json:"type"`
				Text       *string `json:"text"`
				Audio      *string `json:"audio"`
				Transcript *string `json:"transcript"`
			} `json:"content"`
		} `json:"item"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.Item == nil {
		return protocol.Invalid("item", "conversation.item.create needs an item object")
	}
	it := ev.Item
	if it.Type != "message" {
		return protocol.Invalid("item.type", "the echo backend holds message items only (not yet "+strconv.Quote(truncate(it.Type, 64))+")")
	}
	switch it.Role {
	case protocol.RoleUser, protocol.RoleAssistant, protocol.RoleSystem:
	default:
		return protocol.Invalid("item.role", "item.role must be user, assistant or system")
	}
	if p := ev.PreviousItemID; p != nil && *p != "root" {
		c.mu.Lock()
		found := c.conv.find(*p) >= 0
		c.mu.Unlock()
		if !found {
			return protocol.Invalid("previous_item_id", "no item with this id in the conversation")
		}
	}
	id := ""
	if it.ID != nil {
		if len(*it.ID) == 0 || len(*it.ID) > maxItemIDLength || !validID(*it.ID) {
			return protocol.Invalid("item.id", "item.id must be 1 to 64 letters, digits, _ or -")
		}
		id = *it.ID
	} else {
		c.userItems++
		c.counters.userItems.Store(int64(c.userItems))
		id = "item_" + strconv.Itoa(c.userItems)
	}
	var parts []protocol.ContentPart
	var audio []byte
	var text string
	for i, p := range it.Content {
		param := "item.content[" + strconv.Itoa(i) + "]"
		part := protocol.ContentPart{Type: p.Type}
		switch p.Type {
		case protocol.ContentInputText, "text", "output_text":
			if p.Text == nil {
				return protocol.Invalid(param+".text", "a text part needs text")
			}
			t := truncate(*p.Text, maxItemText)
			part.Text, text = &t, t
		case protocol.ContentInputAudio, protocol.ContentOutputAudio, protocol.ContentPartAudio:
			if p.Audio != nil {
				pcm, err := base64.StdEncoding.Strict().DecodeString(*p.Audio)
				if err != nil || len(pcm)%2 != 0 {
					return protocol.Invalid(param+".audio", "audio must be base64 PCM16")
				}
				audio = pcm
			}
			if p.Transcript != nil {
				t := truncate(*p.Transcript, maxItemText)
				part.Transcript = &t
			}
		default:
			return protocol.Invalid(param+".type", "content part type must be input_text, input_audio, text or audio")
		}
		parts = append(parts, part)
	}
	if it.Role == protocol.RoleUser && (audio != nil || text != "") {
		if !c.info.Memory.Reserve(memory.Audio, int64(cap(audio)+len(text))) {
			return protocol.BufferFull("item not added: this server's memory budget is spent; retry shortly")
		}
		c.setLast(&clip{audio: audio, text: text, refs: 1})
	}
	item := protocol.NewItem(id, it.Role, protocol.ItemStatusCompleted, parts...)
	previous := c.addItem(item)
	return c.emitItems(previous, item)
}

// itemByID answers conversation.item.retrieve, .delete and .truncate.
func (c *conn) itemByID(typ string, raw []byte) *protocol.Error {
	var ev struct {
		ItemID       string `json:"item_id"`
		ContentIndex *int   `json:"content_index"`
		AudioEndMS   *int64 `json:"audio_end_ms"`
	}
	if json.Unmarshal(raw, &ev) != nil || ev.ItemID == "" {
		return protocol.Invalid("item_id", typ+" needs an item_id")
	}
	c.mu.Lock()
	i := c.conv.find(ev.ItemID)
	var item protocol.Item
	if i >= 0 {
		item = c.conv.items[i]
		if typ == protocol.TypeItemDelete {
			c.conv.remove(i, c.info.Memory)
		}
	}
	c.mu.Unlock()
	if i < 0 {
		return protocol.Invalid("item_id", "no item with this id in the conversation (the echo backend keeps the last "+strconv.Itoa(maxConversationItems)+")")
	}
	switch typ {
	case protocol.TypeItemRetrieve:
		return c.emit(&protocol.ItemEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeItemRetrieved}, Item: item})
	case protocol.TypeItemDelete:
		return c.emit(&protocol.ItemIDEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeItemDeleted}, ItemID: ev.ItemID})
	}
	if item.Role != protocol.RoleAssistant || ev.ContentIndex == nil || ev.AudioEndMS == nil || *ev.AudioEndMS < 0 {
		return protocol.Invalid("item_id", "conversation.item.truncate needs an assistant item, content_index and audio_end_ms")
	}
	return c.emit(&protocol.ItemIDEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeItemTruncated},
		ItemID: ev.ItemID, ContentIndex: ev.ContentIndex, AudioEndMS: ev.AudioEndMS})
}

func validID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
