// Package resume seals and opens resume handles: the opaque strings with
// which a client carries its conversation from a draining server to
// another one of the fleet (docs/protocol.md, "Resuming a session").
//
// A handle holds the conversation itself (the backend's saved session
// configuration and completed items), compressed, sealed with AES-256-GCM
// under a key derived with HKDF from the fleet key, so that any pod of the
// fleet, and only a pod of the fleet, can open it. The key's id travels in
// the clear inside the handle, so that a pod that knows the previous fleet
// key during a rotation still opens handles sealed before it. A handle is
// bound to the credential that opened the session (a hash of it is sealed
// inside) and expires; it is never logged.
package resume

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"time"
)

// Prefix starts every handle; it names the format's version.
const Prefix = "vgr1."

const (
	// MaxHandleBytes bounds a handle as the client presents it (the
	// ?resume= value). Longer ones are refused before any work is done.
	// It leaves room in the public listener's 32 KiB request-header
	// limit for the URL's escaping and the credentials.
	MaxHandleBytes = 16 << 10
	// MaxStateBytes bounds a handle's state once decompressed, so that a
	// handle cannot be a compression bomb.
	MaxStateBytes = 1 << 20
	// MaxItems bounds the items a handle carries.
	MaxItems = 4096

	keyIDLen   = 4
	nonceLen   = 12
	bindingLen = 16
	// header is the plaintext's fixed start: expiry (unix seconds) and
	// the credential binding.
	headerLen = 8 + bindingLen
)

// hkdfInfo separates the sealing key from every other key derived from
// the fleet key (the gossip key).
const hkdfInfo = "voicegateway resume handle v1"

// The ways a handle is refused. Each has its documented error code
// (protocol.CodeResume*).
var (
	ErrInvalid  = errors.New("resume handle is not one this fleet sealed")
	ErrExpired  = errors.New("resume handle has expired")
	ErrForeign  = errors.New("resume handle belongs to another credential")
	ErrTooLarge = errors.New("resume handle is too large")
)

// State is what a handle carries: enough to rebuild the session on
// another server.
type State struct {
	// SessionID continues on the new server.
	SessionID string `json:"sid"`
	// Backend names the backend that saved the state; a server with
	// another backend starts a fresh conversation.
	Backend string `json:"b"`
	// Turns and UserItems are the echo backend's counters of responses
	// and user items (its ids continue from them).
	Turns     int64 `json:"t,omitempty"`
	UserItems int64 `json:"u,omitempty"`
	// Config is the session configuration as the upstream last
	// acknowledged it (session.updated's session object).
	Config json.RawMessage `json:"c,omitempty"`
	// Items are the completed conversation items, in order, as they are
	// replayed with conversation.item.create.
	Items []json.RawMessage `json:"i,omitempty"`
	// Dropped counts the oldest items left out to keep the state bounded.
	Dropped int `json:"d,omitempty"`
}

type key struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// Sealer seals with the newest fleet key and opens with any key it knows.
type Sealer struct {
	keys []key
}

// NewSealer derives the sealing keys from fleet keys, newest first (a
// rotation keeps the previous one for the handles already out).
func NewSealer(fleetKeys ...[]byte) (*Sealer, error) {
	if len(fleetKeys) == 0 {
		return nil, errors.New("resume: no fleet key")
	}
	s := &Sealer{}
	for _, fk := range fleetKeys {
		if len(fk) < 16 {
			return nil, errors.New("resume: fleet key shorter than 16 bytes")
		}
		k, err := hkdf.Key(sha256.New, fk, nil, hkdfInfo, 32)
		if err != nil {
			return nil, err
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		// The id is a hash of the derived key: it says which key, and
		// nothing about it.
		sum := sha256.Sum256(append([]byte("key id\x00"), k...))
		var kk key
		copy(kk.id[:], sum[:keyIDLen])
		kk.aead = aead
		s.keys = append(s.keys, kk)
	}
	return s, nil
}

// Binding is what a handle is bound to: the credential's id (the API key's
// id, which a client token names too), hashed.
func Binding(credential string) [bindingLen]byte {
	sum := sha256.Sum256([]byte("credential\x00" + credential))
	var b [bindingLen]byte
	copy(b[:], sum[:])
	return b
}

// Seal makes a handle for st, bound to credential, valid until expires.
// When the state does not fit MaxHandleBytes, the oldest items are left
// out (counted in Dropped) until it does. It returns the state as sealed.
func (s *Sealer) Seal(st State, credential string, expires time.Time) (string, State, error) {
	if len(st.Items) > MaxItems {
		st.Dropped += len(st.Items) - MaxItems
		st.Items = st.Items[len(st.Items)-MaxItems:]
	}
	for {
		h, err := s.seal(st, credential, expires)
		if err != nil {
			return "", st, err
		}
		if len(h) <= MaxHandleBytes {
			return h, st, nil
		}
		if len(st.Items) == 0 {
			// Even the configuration alone does not fit: carry nothing
			// but the session's identity.
			st.Config = nil
			h, err := s.seal(st, credential, expires)
			return h, st, err
		}
		// Drop in proportion to the excess (at least one), oldest first.
		n := max(1, len(st.Items)*(len(h)-MaxHandleBytes)/len(h))
		st.Items = st.Items[n:]
		st.Dropped += n
	}
}

func (s *Sealer) seal(st State, credential string, expires time.Time) (string, error) {
	body, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	var plain bytes.Buffer
	var hdr [headerLen]byte
	binary.BigEndian.PutUint64(hdr[:8], uint64(expires.Unix()))
	b := Binding(credential)
	copy(hdr[8:], b[:])
	plain.Write(hdr[:])
	zw, _ := flate.NewWriter(&plain, flate.BestCompression)
	_, _ = zw.Write(body)
	_ = zw.Close()

	k := s.keys[0]
	out := make([]byte, 0, keyIDLen+nonceLen+plain.Len()+k.aead.Overhead())
	out = append(out, k.id[:]...)
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	out = append(out, nonce[:]...)
	out = k.aead.Seal(out, nonce[:], plain.Bytes(), k.id[:])
	return Prefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// Open checks and opens a handle presented with credential at now. A
// handle that does not open is ErrInvalid whatever the reason (a forgery,
// a key the fleet no longer knows, a corrupted copy), so that the answer
// tells an attacker nothing.
func (s *Sealer) Open(handle, credential string, now time.Time) (State, error) {
	if len(handle) > MaxHandleBytes {
		return State{}, ErrTooLarge
	}
	if len(handle) < len(Prefix) || handle[:len(Prefix)] != Prefix {
		return State{}, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(handle[len(Prefix):])
	if err != nil || len(raw) < keyIDLen+nonceLen {
		return State{}, ErrInvalid
	}
	id, nonce, sealed := raw[:keyIDLen], raw[keyIDLen:keyIDLen+nonceLen], raw[keyIDLen+nonceLen:]
	var plain []byte
	opened := false
	for _, k := range s.keys {
		if !bytes.Equal(k.id[:], id) {
			continue
		}
		if plain, err = k.aead.Open(nil, nonce, sealed, id); err == nil {
			opened = true
		}
		break
	}
	if !opened || len(plain) < headerLen {
		return State{}, ErrInvalid
	}
	// Authentic from here on: the fleet sealed it.
	expires := time.Unix(int64(binary.BigEndian.Uint64(plain[:8])), 0)
	if !now.Before(expires) {
		return State{}, ErrExpired
	}
	b := Binding(credential)
	if !bytes.Equal(plain[8:headerLen], b[:]) {
		return State{}, ErrForeign
	}
	body, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(plain[headerLen:])), MaxStateBytes+1))
	if err != nil {
		return State{}, ErrInvalid
	}
	if len(body) > MaxStateBytes {
		return State{}, ErrTooLarge
	}
	var st State
	if err := json.Unmarshal(body, &st); err != nil || st.SessionID == "" || len(st.Items) > MaxItems || st.Dropped < 0 {
		return State{}, ErrInvalid
	}
	return st, nil
}
