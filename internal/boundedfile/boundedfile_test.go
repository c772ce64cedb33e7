package boundedfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	// A symbolic link to a regular file is read (a Secret volume is links).
	link := filepath.Join(dir, "link")
	if err := os.Symlink(exact, link); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(link, 8); err != nil || string(got) != "12345678" {
		t.Fatalf("Read through a link = %q, %v", got, err)
	}
}

// TestReadRefusesWhatIsNotAFile: an endless device and a named pipe
// nobody writes to fail at once, without reading or waiting.
func TestReadRefusesWhatIsNotAFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", fifo, t.TempDir()} {
		done := make(chan error, 1)
		go func() {
			_, err := Read(path, 1<<20)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("Read(%s) = %v, want not a regular file", path, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Read(%s) still waiting after 5 s", path)
		}
	}
}
