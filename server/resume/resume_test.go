package resume

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	fleetKeyA = bytes.Repeat([]byte{0xA5}, 32)
	fleetKeyB = bytes.Repeat([]byte{0x5A}, 32)
	now       = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
)

func sealer(t testing.TB, keys ...[]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample(items int) State {
	st := State{SessionID: "sess_0123456789abcdef", Backend: "openai", Turns: 3,
		Config: json.RawMessage(`{"instructions":"be brief","voice":"alloy"}`)}
	for i := range items {
		st.Items = append(st.Items, json.RawMessage(`{"type":"message","role":"user","content":[{"type":"input_text","text":"turn `+strconv.Itoa(i)+`"}]}`))
	}
	return st
}

func TestRoundTrip(t *testing.T) {
	s := sealer(t, fleetKeyA)
	want := sample(3)
	h, sealed, err := s.Seal(want, "key1", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, Prefix) || sealed.Dropped != 0 {
		t.Fatalf("handle %.10q… dropped %d", h, sealed.Dropped)
	}
	got, err := s.Open(h, "key1", now)
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("opened %s, sealed %s", gj, wj)
	}
}

func TestRefusals(t *testing.T) {
	s := sealer(t, fleetKeyA)
	h, _, err := s.Seal(sample(3), "key1", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := sealer(t, fleetKeyB).Seal(sample(3), "key1", now.Add(time.Minute))
	flipped := []byte(h)
	flipped[len(flipped)-5] ^= 1
	if flipped[len(flipped)-5] == '-' || flipped[len(flipped)-5] == '_' {
		flipped[len(flipped)-5] = 'A'
	}
	for name, c := range map[string]struct {
		handle, credential string
		at                 time.Time
		want               error
	}{
		"forged: another fleet's key": {other, "key1", now, ErrInvalid},
		"forged: a bit flipped":       {string(flipped), "key1", now, ErrInvalid},
		"forged: not a handle":        {"vgr1.AAAA", "key1", now, ErrInvalid},
		"forged: no prefix":           {h[len(Prefix):], "key1", now, ErrInvalid},
		"expired":                     {h, "key1", now.Add(time.Minute), ErrExpired},
		"replayed after expiry":       {h, "key1", now.Add(time.Hour), ErrExpired},
		"wrong credential":            {h, "key2", now, ErrForeign},
		"no credential":               {h, "", now, ErrForeign},
		"oversized":                   {Prefix + strings.Repeat("A", MaxHandleBytes), "key1", now, ErrTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Open(c.handle, c.credential, c.at); !errors.Is(err, c.want) {
				t.Fatalf("Open: %v, want %v", err, c.want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	old := sealer(t, fleetKeyA)
	h, _, _ := old.Seal(sample(1), "key1", now.Add(time.Minute))
	rotated := sealer(t, fleetKeyB, fleetKeyA)
	if _, err := rotated.Open(h, "key1", now); err != nil {
		t.Fatalf("a handle sealed under the previous key: %v", err)
	}
	h2, _, _ := rotated.Seal(sample(1), "key1", now.Add(time.Minute))
	if _, err := old.Open(h2, "key1", now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("the old key opened a handle of the new one: %v", err)
	}
}

func TestSealDropsOldest(t *testing.T) {
	s := sealer(t, fleetKeyA)
	st := State{SessionID: "sess_x", Backend: "openai"}
	// Incompressible text, so that the bound is reached.
	for i := range 2000 {
		var b strings.Builder
		for j := range 40 {
			b.WriteString(strconv.FormatUint(uint64(i*7919+j*104729)*2654435761%1000003, 36))
		}
		st.Items = append(st.Items, json.RawMessage(strconv.Quote(b.String())))
	}
	h, sealed, err := s.Seal(st, "k", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(h) > MaxHandleBytes || sealed.Dropped == 0 || sealed.Dropped+len(sealed.Items) != 2000 {
		t.Fatalf("handle %d bytes, %d kept, %d dropped", len(h), len(sealed.Items), sealed.Dropped)
	}
	got, err := s.Open(h, "k", now)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Items[len(got.Items)-1]) != string(st.Items[1999]) {
		t.Fatal("the newest item was not kept")
	}
	t.Logf("2000 items: %d kept, %d dropped, handle %d bytes", len(got.Items), got.Dropped, len(h))
}

func FuzzOpen(f *testing.F) {
	s := sealer(f, fleetKeyA)
	h, _, _ := s.Seal(sample(3), "key1", now.Add(time.Minute))
	f.Add(h)
	f.Add("vgr1.")
	f.Add("vgr1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, handle string) {
		st, err := s.Open(handle, "key1", now)
		if err == nil && handle != h && st.SessionID == "" {
			t.Fatal("an opened handle without a session id")
		}
	})
}

// sealRaw seals any plaintext as the sealer would, so that the fuzzer
// reaches what Open does after the seal opened: the header, the
// decompression and the JSON, which only the fleet can write.
func sealRaw(s *Sealer, plain []byte) string {
	k := s.keys[0]
	out := append([]byte(nil), k.id[:]...)
	nonce := make([]byte, nonceLen)
	out = append(out, nonce...)
	out = k.aead.Seal(out, nonce, plain, k.id[:])
	return Prefix + base64.RawURLEncoding.EncodeToString(out)
}

func FuzzOpenSealed(f *testing.F) {
	s := sealer(f, fleetKeyA)
	var hdr [headerLen]byte
	binary.BigEndian.PutUint64(hdr[:8], uint64(now.Add(time.Minute).Unix()))
	b := Binding("key1")
	copy(hdr[8:], b[:])
	f.Add(append(hdr[:], 0x01, 0x00, 0x00, 0xff, 0xff))
	f.Add(hdr[:])
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, plain []byte) {
		st, err := s.Open(sealRaw(s, plain), "key1", now)
		if err == nil && (st.SessionID == "" || len(st.Items) > MaxItems || st.Dropped < 0) {
			t.Fatalf("opened an out-of-bounds state %+v", st)
		}
	})
}
