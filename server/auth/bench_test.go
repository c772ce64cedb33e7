package auth

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func BenchmarkVerify(b *testing.B) {
	issuer := newTestIssuer(b, newFakeClock())
	token, _, err := issuer.Mint(time.Minute, Claims{KeyID: KeyID(keyAlpha), Session: SessionClaims{AudioMode: "pcm16"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := issuer.Verify(token); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Change the MAC's first character: still well-formed, never valid.
	dot := strings.LastIndexByte(token, '.')
	swapped := byte('A')
	if token[dot+1] == 'A' {
		swapped = 'B'
	}
	forged := token[:dot+1] + string(swapped) + token[dot+2:]
	b.Run("forged", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := issuer.Verify(forged); err == nil {
				b.Fatal("forged token verified")
			}
		}
	})
}

func BenchmarkMint(b *testing.B) {
	issuer := newTestIssuer(b, newFakeClock())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := issuer.Mint(time.Minute, Claims{KeyID: KeyID(keyAlpha)}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKeySetMatch(b *testing.B) {
	for _, n := range []int{1, 100} {
		var file strings.Builder
		for i := range n {
			fmt.Fprintf(&file, "sk-bench-%024d\n", i)
		}
		set, err := parseKeys([]byte(file.String()))
		if err != nil {
			b.Fatal(err)
		}
		last := fmt.Sprintf("sk-bench-%024d", n-1)
		b.Run(fmt.Sprintf("keys=%d/hit", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := set.Match(last); !ok {
					b.Fatal("no match")
				}
			}
		})
		b.Run(fmt.Sprintf("keys=%d/miss", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := set.Match(keyGamma); ok {
					b.Fatal("match")
				}
			}
		})
	}
}

func BenchmarkCredentialsFromRequest(b *testing.B) {
	cases := []struct {
		name                    string
		authorization, protocol []string
		rawQuery                string
	}{
		{name: "header", authorization: []string{"Bearer " + keyAlpha}},
		{name: "subprotocol", protocol: []string{"realtime, " + SubprotocolOpenAIKeyPrefix + tokenLike}},
		{name: "query", rawQuery: "model=gpt-realtime&token=" + tokenLike},
	}
	for _, c := range cases {
		r := request(c.authorization, c.protocol, c.rawQuery)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CredentialsFromRequest(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
