// Package testbin builds a command of this module once per test binary, for
// end-to-end tests that run the real program, and removes it afterwards so
// that test runs leave no binaries behind.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Binary is one command's build, made on first use.
type Binary struct {
	pkg  string
	once sync.Once
	dir  string
	path string
	err  error
}

// New returns the build of the command with import path pkg.
func New(pkg string) *Binary { return &Binary{pkg: pkg} }

// Path builds the command the first time it is called and returns the
// executable's path; a failed build fails t.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "vgw-testbin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, path.Base(b.pkg))
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if out, err := exec.Command(gobin, "build", "-o", b.path, b.pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Remove deletes the build; TestMain calls it once every test has run. Its
// argument is the tests' exit code, so that it fits goleak.Cleanup.
func (b *Binary) Remove(int) {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}
