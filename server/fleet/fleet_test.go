package fleet

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var epoch = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := epoch.Add(d)
	return &t
}

func secret(b byte) string {
	return b64.EncodeToString(bytes.Repeat([]byte{b}, MinTokenSecretBytes))
}

func TestParseTokenKeys(t *testing.T) {
	valid := `{"keys":[{"id":"abc123","secret":"` + secret(1) + `","created":"2026-03-01T12:00:00Z"}]}`
	tests := map[string]struct {
		input   string
		wantErr string // empty: valid
	}{
		"one key":             {input: valid},
		"trailing newline":    {input: valid + "\n"},
		"empty":               {input: ``, wantErr: "empty or cut short"},
		"not json":            {input: `keys`, wantErr: "syntax error"},
		"unknown field":       {input: `{"keys":[],"extra":1}`, wantErr: `unknown field "extra"`},
		"no keys":             {input: `{"keys":[]}`, wantErr: "holds no key"},
		"trailing object":     {input: valid + `{}`, wantErr: "after the JSON object"},
		"uppercase id":        {input: `{"keys":[{"id":"ABC","secret":"` + secret(1) + `"}]}`, wantErr: "lowercase letters and digits"},
		"long id":             {input: `{"keys":[{"id":"abcdefghijklmnopq","secret":"` + secret(1) + `"}]}`, wantErr: "1 to 16"},
		"duplicate id":        {input: `{"keys":[{"id":"a","secret":"` + secret(1) + `"},{"id":"a","secret":"` + secret(2) + `"}]}`, wantErr: "appears twice"},
		"short secret":        {input: `{"keys":[{"id":"a","secret":"` + b64.EncodeToString(make([]byte, 31)) + `"}]}`, wantErr: "at least 32 bytes, got 31"},
		"long secret":         {input: `{"keys":[{"id":"a","secret":"` + b64.EncodeToString(make([]byte, 65)) + `"}]}`, wantErr: "longer than 64"},
		"padded secret":       {input: `{"keys":[{"id":"a","secret":"` + base64.URLEncoding.EncodeToString(make([]byte, 32)) + `"}]}`, wantErr: "not unpadded base64url"},
		"secret wrong type":   {input: `{"keys":[{"id":"a","secret":12}]}`, wantErr: `field "keys.secret" has the wrong type`},
		"verify before sign":  {input: `{"keys":[{"id":"a","secret":"` + secret(1) + `","sign_from":"2026-03-01T12:00:00Z","verify_until":"2026-03-01T12:00:00Z"}]}`, wantErr: "verify_until must be after sign_from"},
		"seventeen keys":      {input: manyKeys(MaxTokenKeys + 1), wantErr: "at most 16"},
		"too large":           {input: valid + strings.Repeat(" ", MaxFileSize), wantErr: "larger than"},
		"invalid time format": {input: `{"keys":[{"id":"a","secret":"` + secret(1) + `","created":"yesterday"}]}`, wantErr: "malformed"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			keys, err := ParseTokenKeys([]byte(tt.input))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseTokenKeys: %v", err)
				}
				if len(keys.Keys) == 0 {
					t.Fatal("no keys parsed")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret(1)) {
				t.Fatalf("error quotes the secret: %v", err)
			}
		})
	}
}

func TestSigning(t *testing.T) {
	old := TokenKey{ID: "old", Secret: secret(1), VerifyUntil: at(15 * time.Minute)}
	fresh := TokenKey{ID: "new", Secret: secret(2), SignFrom: at(2 * time.Minute)}
	keys := TokenKeys{Keys: []TokenKey{fresh, old}}
	tests := map[string]struct {
		now        time.Duration
		wantSigner string
		verifies   []string
	}{
		"before activation the old key signs": {now: time.Minute, wantSigner: "old", verifies: []string{"new", "old"}},
		"at activation the new key signs":     {now: 2 * time.Minute, wantSigner: "new", verifies: []string{"new", "old"}},
		"after retirement only the new":       {now: 15 * time.Minute, wantSigner: "new", verifies: []string{"new"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			now := epoch.Add(tt.now)
			got, ok := keys.Signing(now)
			if !ok || got.ID != tt.wantSigner {
				t.Fatalf("Signing = %q, %v; want %q", got.ID, ok, tt.wantSigner)
			}
			var verifying []string
			for _, k := range keys.Keys {
				if k.Verifies(now) {
					verifying = append(verifying, k.ID)
				}
			}
			if strings.Join(verifying, ",") != strings.Join(tt.verifies, ",") {
				t.Fatalf("verifying %v, want %v", verifying, tt.verifies)
			}
		})
	}
	t.Run("no key may sign", func(t *testing.T) {
		if _, ok := (TokenKeys{Keys: []TokenKey{fresh}}).Signing(epoch); ok {
			t.Fatal("a key before its sign_from signed")
		}
	})
	t.Run("tie goes to the first listed", func(t *testing.T) {
		a := TokenKey{ID: "a", Secret: secret(1)}
		b := TokenKey{ID: "b", Secret: secret(2)}
		if got, _ := (TokenKeys{Keys: []TokenKey{a, b}}).Signing(epoch); got.ID != "a" {
			t.Fatalf("Signing = %q, want a", got.ID)
		}
	})
}

func TestRotate(t *testing.T) {
	data, err := Generate(rand.Reader, epoch, false)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ParseTokenKeys(data[TokenKeysFile])
	if err != nil {
		t.Fatal(err)
	}
	r := Rotation{Activation: 2 * time.Minute, Retain: 11 * time.Minute}
	second, err := first.Rotate(rand.Reader, epoch.Add(time.Hour), r)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Validate(); err != nil {
		t.Fatalf("rotated keys invalid: %v", err)
	}
	if len(second.Keys) != 2 || second.Keys[1].ID != first.Keys[0].ID || second.Keys[1].Secret != first.Keys[0].Secret {
		t.Fatalf("rotation did not keep the previous key: %+v", second.Keys)
	}
	signFrom := epoch.Add(time.Hour + 2*time.Minute)
	if got := second.Keys[0].SignFrom; got == nil || !got.Equal(signFrom) {
		t.Fatalf("new key signs from %v, want %v", got, signFrom)
	}
	retire := signFrom.Add(11 * time.Minute)
	if got := second.Keys[1].VerifyUntil; got == nil || !got.Equal(retire) {
		t.Fatalf("previous key verifies until %v, want %v", got, retire)
	}
	if next, ok := second.NextPrune(); !ok || !next.Equal(retire) {
		t.Fatalf("NextPrune = %v, %v; want %v", next, ok, retire)
	}
	// Before activation the old key still signs; after it, the new one.
	if k, _ := second.Signing(signFrom.Add(-time.Second)); k.ID != first.Keys[0].ID {
		t.Fatalf("signing before activation with %q", k.ID)
	}
	if k, _ := second.Signing(signFrom); k.ID != second.Keys[0].ID {
		t.Fatalf("signing after activation with %q", k.ID)
	}

	t.Run("a second rotation before the first settled", func(t *testing.T) {
		later := epoch.Add(time.Hour + time.Minute)
		third, err := second.Rotate(rand.Reader, later, r)
		if err != nil {
			t.Fatal(err)
		}
		// The pending key signed nothing and is replaced; the key still
		// signing verifies until Retain after the newest key takes over.
		if len(third.Keys) != 2 || third.Keys[1].ID != first.Keys[0].ID {
			t.Fatalf("want the new key and the first, got %v", third.Keys)
		}
		newSignFrom := later.Add(r.Activation)
		if got := third.Keys[1].VerifyUntil; !got.Equal(newSignFrom.Add(r.Retain)) {
			t.Fatalf("first key verifies until %v, want %v", got, newSignFrom.Add(r.Retain))
		}
		if k, _ := third.Signing(newSignFrom.Add(-time.Second)); k.ID != first.Keys[0].ID {
			t.Fatalf("before the newest key's sign_from %q signs, want the first key", k.ID)
		}
	})

	t.Run("pruning", func(t *testing.T) {
		if got := second.Pruned(retire.Add(-time.Second)); len(got.Keys) != 2 {
			t.Fatalf("pruned a key before its end: %d left", len(got.Keys))
		}
		pruned := second.Pruned(retire)
		if len(pruned.Keys) != 1 || pruned.Keys[0].ID != second.Keys[0].ID {
			t.Fatalf("after the end want only the new key, got %+v", pruned.Keys)
		}
		if _, ok := pruned.NextPrune(); ok {
			t.Fatal("a set without ends has a next prune")
		}
		// Even a set whose every key ended keeps the newest one.
		ended := TokenKeys{Keys: []TokenKey{{ID: "a", Secret: secret(1), Created: epoch, VerifyUntil: at(time.Minute)}}}
		if got := ended.Pruned(epoch.Add(time.Hour)); len(got.Keys) != 1 {
			t.Fatal("pruning emptied the set")
		}
	})

	t.Run("bounded, and never dropping a key that verifies", func(t *testing.T) {
		// A rotation every Activation + 1 s, for two hours, with keys kept
		// for an hour: each adds a replaced key that still verifies, until
		// the file is full; then rotations wait, and no key is ever
		// dropped early.
		r := Rotation{Activation: r.Activation, Retain: time.Hour}
		keys, now := first, epoch
		refused := 0
		for i := 0; i < 60; i++ {
			now = now.Add(r.Activation + time.Second)
			next, err := keys.Rotate(rand.Reader, now, r)
			switch {
			case errors.Is(err, ErrTooManyKeys):
				refused++
				if !next.Equal(keys) {
					t.Fatal("a refused rotation changed the keys")
				}
			case err != nil:
				t.Fatal(err)
			}
			if err := next.Validate(); err != nil {
				t.Fatal(err)
			}
			if _, ok := next.Signing(now); !ok {
				t.Fatalf("rotation %d: no key signs", i)
			}
			for _, k := range keys.Keys {
				if k.Verifies(now) && !slices.ContainsFunc(next.Keys, func(n TokenKey) bool { return n.ID == k.ID }) {
					t.Fatalf("rotation %d dropped key %s, which still verifies", i, k.ID)
				}
			}
			keys = next
		}
		t.Logf("60 rotations %s apart: %d keys at the end, %d rotations deferred", r.Activation+time.Second, len(keys.Keys), refused)
		if len(keys.Keys) > MaxTokenKeys || refused == 0 {
			t.Fatalf("%d keys, %d rotations deferred; want the cap reached and rotations deferred", len(keys.Keys), refused)
		}
	})

	t.Run("a burst of requests makes one key", func(t *testing.T) {
		keys := first
		for i := 0; i < 3*MaxTokenKeys; i++ {
			var err error
			if keys, err = keys.Rotate(rand.Reader, epoch.Add(time.Duration(i)*time.Second), r); err != nil {
				t.Fatal(err)
			}
		}
		if len(keys.Keys) != 2 {
			t.Fatalf("%d keys after a burst of rotations, want the first and one new", len(keys.Keys))
		}
	})
}

func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString(`{"keys":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":"k%d","secret":"%s"}`, i, secret(byte(i)))
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestTokenKeyRedacts(t *testing.T) {
	key := TokenKey{ID: "abc", Secret: secret(7), Created: epoch}
	for _, text := range []string{fmt.Sprint(key), fmt.Sprintf("%v %+v %#v", key, key, key), fmt.Sprint(key.MarshalLog())} {
		if strings.Contains(text, key.Secret) {
			t.Fatalf("formatting shows the secret: %s", text)
		}
	}
}

func TestGenerateCheckFill(t *testing.T) {
	data, err := Generate(nil, epoch, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(data, true); err != nil {
		t.Fatalf("generated data does not pass Check: %v", err)
	}
	if !strings.HasPrefix(string(data[AdminTokenFile]), AdminTokenPrefix) || !strings.HasPrefix(string(data[APIKeysFile]), APIKeyPrefix) {
		t.Fatal("generated credentials lack their prefixes")
	}
	other, _ := Generate(nil, epoch, true)
	for _, file := range []string{TokenKeysFile, AdminTokenFile, FleetKeyFile, APIKeysFile} {
		if bytes.Equal(data[file], other[file]) {
			t.Fatalf("two generations made the same %s", file)
		}
	}

	t.Run("check names every problem", func(t *testing.T) {
		err := Check(map[string][]byte{AdminTokenFile: []byte("short")}, true)
		for _, want := range []string{"token-keys.json: missing", "admin-token: the token must be at least 32", "fleet-key: missing", "api-keys: missing"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Check error %v lacks %q", err, want)
			}
		}
	})

	t.Run("fill keeps what is valid", func(t *testing.T) {
		partial := map[string][]byte{
			TokenKeysFile:  data[TokenKeysFile],
			AdminTokenFile: []byte("too short"),
			"unrelated":    []byte("kept"),
		}
		filled, made, err := Fill(partial, nil, epoch, false)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(made, ",") != "admin-token,fleet-key" {
			t.Fatalf("made %v, want admin-token and fleet-key", made)
		}
		if !bytes.Equal(filled[TokenKeysFile], data[TokenKeysFile]) || string(filled["unrelated"]) != "kept" {
			t.Fatal("Fill replaced a valid or foreign file")
		}
		if err := Check(filled, false); err != nil {
			t.Fatal(err)
		}
		if _, made, _ := Fill(filled, nil, epoch, false); len(made) != 0 {
			t.Fatalf("Fill of complete data made %v", made)
		}
	})
}

func TestParseAdminTokenAndFleetKey(t *testing.T) {
	token := AdminTokenPrefix + strings.Repeat("x", 30)
	if got, err := ParseAdminToken([]byte(token + "\n")); err != nil || got != token {
		t.Fatalf("ParseAdminToken = %q, %v", got, err)
	}
	for name, input := range map[string]string{
		"short": "abc", "space": strings.Repeat("a", 20) + " " + strings.Repeat("b", 20),
		"non-ascii": strings.Repeat("é", 20), "long": strings.Repeat("a", MaxAdminTokenLen+1),
	} {
		if _, err := ParseAdminToken([]byte(input)); err == nil {
			t.Errorf("%s admin token accepted", name)
		}
	}
	key := base64.StdEncoding.EncodeToString(make([]byte, FleetKeyBytes))
	if got, err := ParseFleetKey([]byte(key + "\n")); err != nil || len(got) != FleetKeyBytes {
		t.Fatalf("ParseFleetKey = %d bytes, %v", len(got), err)
	}
	for name, input := range map[string]string{
		"16 bytes": base64.StdEncoding.EncodeToString(make([]byte, 16)), "url alphabet": strings.Repeat("_", 44), "empty": "",
	} {
		if _, err := ParseFleetKey([]byte(input)); err == nil {
			t.Errorf("%s fleet key accepted", name)
		}
	}
}

func FuzzParseTokenKeys(f *testing.F) {
	data, _ := Generate(rand.Reader, epoch, false)
	f.Add(data[TokenKeysFile])
	f.Add([]byte(`{"keys":[{"id":"a","secret":"` + secret(3) + `","sign_from":"2026-03-01T12:00:00Z","verify_until":"2026-03-01T13:00:00Z"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, input []byte) {
		keys, err := ParseTokenKeys(input)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// What parses re-renders to something that parses the same.
		out, err := keys.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseTokenKeys(out)
		if err != nil || !again.Equal(keys) {
			t.Fatalf("round trip changed the keys: %v", err)
		}
		for _, k := range keys.Keys {
			if s, err := k.SecretBytes(); err != nil || len(s) < MinTokenSecretBytes || len(s) > MaxTokenSecretBytes {
				t.Fatalf("accepted key %q with a bad secret", k.ID)
			}
		}
	})
}
