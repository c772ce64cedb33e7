package boundedfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	exact := filepath.Join(dir, "exact")
	if err := os.WriteFile(exact, []byte("12345678"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(exact, 8); err != nil || string(got) != "12345678" {
		t.Fatalf("Read at the limit = %q, %v", got, err)
	}
	if _, err := Read(exact, 7); err == nil || !strings.Contains(err.Error(), "larger than 7 bytes") {
		t.Fatalf("Read over the limit: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "absent"), 8); !os.IsNotExist(err) {
		t.Fatalf("Read of a missing file: %v", err)
	}
	// An endless file ends the read at the limit.
	if _, err := Read("/dev/zero", 1<<10); err == nil {
		t.Fatal("Read of /dev/zero succeeded")
	}
}
