package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
	"github.com/voicegateway/voicegateway/server/internal/ticker"
)

// fileWatch describes one file that watchFile polls: what to call, and
// what to log. The messages are constants of the caller.
type fileWatch struct {
	path       string
	cannotRead string
	invalid    string
	reloaded   string
	// countedWhat names the number poll returns in the reload log line;
	// empty leaves it out.
	countedWhat string
	// poll reads the file and swaps in its content when it changed.
	// changed reports a new content whether or not it was valid; an error
	// with changed false means the file could not be read at all.
	poll func() (changed bool, count int, err error)
}

// watchFile is the poll loop behind KeyStore.Watch and SecretFile.Watch:
// every interval it polls, until ctx is done; then it stops its ticker and
// returns nil. A missing file usually is a Secret being swapped, so each
// distinct read error is logged once rather than at every poll.
func watchFile(ctx context.Context, interval time.Duration, clk clock.Clock, log logr.Logger, w fileWatch) error {
	if interval <= 0 {
		return fmt.Errorf("file watch interval must be positive, got %s", interval)
	}
	ticks := ticker.New(clk, interval)
	defer ticks.Stop()

	lastReadErr := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks.C():
		}
		ticks.Ticked()

		changed, count, err := w.poll()
		switch {
		case err != nil && !changed:
			if msg := err.Error(); msg != lastReadErr {
				lastReadErr = msg
				log.Error(err, w.cannotRead, "path", w.path)
			}
		case err != nil:
			lastReadErr = ""
			log.Error(err, w.invalid, "path", w.path)
		case changed:
			lastReadErr = ""
			if w.countedWhat != "" {
				log.Info(w.reloaded, "path", w.path, w.countedWhat, count)
			} else {
				log.Info(w.reloaded, "path", w.path)
			}
		default:
			lastReadErr = ""
		}
	}
}

// maxSecretValueSize bounds a SecretFile: it holds one credential or one
// small key file.
const maxSecretValueSize = 64 << 10

// SecretFile holds one secret read from a file, typically a mounted
// Kubernetes Secret, parsed into T, and can follow the file as it is
// rotated: Watch polls it and swaps in a changed value, so that a new
// credential takes effect without a restart. Readers call Value without
// locking.
type SecretFile[T any] struct {
	path  string
	parse func([]byte) (T, error)
	value atomic.Pointer[T]
	// optional: a missing file is a state (the zero value), not an error.
	optional bool
	// lastRefresh is when Refresh last read the file, in Unix nanoseconds.
	lastRefresh atomic.Int64

	mu      sync.Mutex
	lastSum [sha256.Size]byte
}

// NewSecretFile reads path and keeps its content as parse returns it. It
// fails when the file cannot be read or parse rejects it: a server that
// starts without its credential would fail every request. parse must not
// put the secret into its error.
func NewSecretFile[T any](path string, parse func([]byte) (T, error)) (*SecretFile[T], error) {
	f := &SecretFile[T]{path: path, parse: parse}
	if _, _, err := f.reloadIfChanged(); err != nil {
		return nil, err
	}
	return f, nil
}

// NewOptionalSecretFile is NewSecretFile for a file that may be absent: its
// value is then T's zero value, and Watch picks the file up once it
// appears. A file that was there and goes away keeps its last value, as a
// Secret being swapped would.
func NewOptionalSecretFile[T any](path string, parse func([]byte) (T, error)) (*SecretFile[T], error) {
	f := &SecretFile[T]{path: path, parse: parse, optional: true}
	if _, _, err := f.reloadIfChanged(); err != nil {
		return nil, err
	}
	if f.value.Load() == nil {
		var zero T
		f.value.Store(&zero)
	}
	return f, nil
}

// Path is the file the secret is read from.
func (f *SecretFile[T]) Path() string { return f.path }

// Value returns the current secret.
func (f *SecretFile[T]) Value() T { return *f.value.Load() }

// Reload reads the file now rather than at the next poll, and reports
// whether its content changed.
func (f *SecretFile[T]) Reload() (changed bool, err error) {
	changed, _, err = f.reloadIfChanged()
	return changed, err
}

// Refresh is Reload for request paths: when a request suggests that the
// file moved on before the next poll (a token signed with a key this
// process does not hold yet, an admin token that differs), it reads the
// file, but at most once per minInterval however many requests ask, so
// that clients cannot turn bad credentials into disk reads. It reports
// whether the value changed.
func (f *SecretFile[T]) Refresh(now time.Time, minInterval time.Duration) bool {
	last := f.lastRefresh.Load()
	if last != 0 && now.UnixNano()-last < int64(minInterval) {
		return false
	}
	if !f.lastRefresh.CompareAndSwap(last, now.UnixNano()) {
		return false // another request is refreshing
	}
	changed, _, err := f.reloadIfChanged()
	return err == nil && changed
}

// reloadIfChanged reads the file and swaps in its parsed value when the
// content changed since the last look. An invalid value keeps the
// previous one in force.
func (f *SecretFile[T]) reloadIfChanged() (changed bool, count int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := boundedfile.Read(f.path, maxSecretValueSize)
	if err != nil {
		if f.optional && errors.Is(err, fs.ErrNotExist) {
			return false, 0, nil
		}
		return false, 0, err
	}
	sum := sha256.Sum256(data)
	if sum == f.lastSum && f.value.Load() != nil {
		return false, 0, nil
	}
	f.lastSum = sum
	value, err := f.parse(data)
	if err != nil {
		return true, 0, fmt.Errorf("secret file %s: %w", f.path, err)
	}
	f.value.Store(&value)
	return true, 1, nil
}

// Watch polls the file every interval and swaps in a changed, valid value,
// until ctx is done; then it returns nil. A missing or invalid file is
// logged (the error, never the secret) and the previous value stays in
// force. The caller owns the goroutine that runs it.
func (f *SecretFile[T]) Watch(ctx context.Context, interval time.Duration, clk clock.Clock, log logr.Logger) error {
	return watchFile(ctx, interval, clk, log, fileWatch{
		path:       f.path,
		cannotRead: "Cannot read secret file, keeping the previous value",
		invalid:    "Secret file is invalid, keeping the previous value",
		reloaded:   "Reloaded secret file",
		poll:       f.reloadIfChanged,
	})
}

// ParseBearerSecret accepts a file holding one credential meant for an
// Authorization: Bearer header, such as an upstream API key: surrounding
// whitespace (a trailing newline) is trimmed, and the rest must be printable
// ASCII without spaces, at most MaxKeyLen bytes. Errors never include the
// file's content.
func ParseBearerSecret(data []byte) (string, error) {
	value := strings.TrimSpace(string(data))
	switch {
	case value == "":
		return "", errors.New("the file is empty")
	case len(value) > MaxKeyLen:
		return "", fmt.Errorf("the credential is longer than %d bytes", MaxKeyLen)
	case !isVisibleASCII(value):
		return "", errors.New("the credential contains a space, control or non-ASCII character")
	}
	return value, nil
}
