package protocol

import (
	"os"
	"strings"
	"testing"
)

// TestEveryCodeDocumented keeps docs/protocol.md's table of error codes
// complete: clients program against it.
func TestEveryCodeDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range AllCodes {
		if !strings.Contains(string(doc), "| `"+string(c)+"`") && !strings.Contains(string(doc), ", `"+string(c)+"` |") {
			t.Errorf("docs/protocol.md has no row for %q", c)
		}
	}
}
