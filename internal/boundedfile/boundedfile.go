// Package boundedfile reads files that should be small — key files,
// mounted Secrets, settings named by a flag — without trusting them to be:
// a wrong mount (a log file, /dev/zero) fails with an error instead of
// making the process read and allocate without end.
package boundedfile

import (
	"fmt"
	"io"
	"os"
)

// Read returns the content of path, or an error when it holds more than
// limit bytes. It reads at most limit+1 bytes whatever the file is.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
