// Package boundedfile reads files that should be small — key files,
// mounted Secrets, settings named by a flag — without trusting them to be:
// a wrong mount (a log file, /dev/zero, a named pipe) fails with an error
// instead of making the process read and allocate without end, or wait
// forever for a writer.
package boundedfile

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Read returns the content of path, or an error when it holds more than
// limit bytes or is not a regular file (a device or a named pipe, which
// could be endless or block). It reads at most limit+1 bytes whatever the
// file is. Symbolic links are followed, as a Kubernetes Secret volume
// needs.
func Read(path string, limit int64) ([]byte, error) {
	// O_NONBLOCK: opening a named pipe for reading would otherwise wait
	// for a writer before Stat could tell what it is. It changes nothing
	// for a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, info.Mode().Type())
	}
	if info.Size() > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
