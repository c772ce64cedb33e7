package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/internal/boundedfile"
)

const (
	// MinKeyLen rejects keys short enough to guess: every key in the file
	// must have at least this many bytes.
	MinKeyLen = 16
	// MaxKeyLen keeps every key presentable in an Authorization header that
	// fits maxHeaderValueLen.
	MaxKeyLen      = 1024
	maxKeyFileSize = 1 << 20
)

// keyIDLen is the number of hex characters of a key's SHA-256 used as its
// public name: enough to tell the keys in one file apart in logs, far too
// few to help anyone guess the key.
const keyIDLen = 8

// KeyID returns the non-secret name of an API key: the first 8 hex
// characters of its SHA-256. Logs, metrics and tokens refer to keys by it.
func KeyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:keyIDLen/2])
}

// KeySet is an immutable set of API keys. Only digests are kept, so a heap
// dump or a stray %v shows no key.
type KeySet struct {
	digests [][sha256.Size]byte
	ids     map[string]struct{}
}

// parseKeys reads one key per line. Blank lines and lines starting with '#'
// are skipped and surrounding whitespace (including the CR of CRLF files) is
// trimmed, because Secrets are often written by hand or by tools that add
// either. Errors name the line, never its content.
func parseKeys(data []byte) (*KeySet, error) {
	set := &KeySet{ids: map[string]struct{}{}}
	seen := map[[sha256.Size]byte]struct{}{}
	for i, raw := range bytes.Split(data, []byte("\n")) {
		text := string(bytes.TrimSpace(raw))
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := validateKey(text); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		digest := sha256.Sum256([]byte(text))
		if _, dup := seen[digest]; dup {
			continue
		}
		seen[digest] = struct{}{}
		set.digests = append(set.digests, digest)
		set.ids[hex.EncodeToString(digest[:keyIDLen/2])] = struct{}{}
	}
	if len(set.digests) == 0 {
		return nil, errors.New("the key file has no keys (only blank lines or comments)")
	}
	return set, nil
}

func validateKey(key string) error {
	if len(key) < MinKeyLen {
		return fmt.Errorf("key shorter than %d bytes", MinKeyLen)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("key longer than %d bytes", MaxKeyLen)
	}
	if prefix := tokenPrefix(key); prefix != "" {
		// It could never be presented: the request parser reads it as a
		// client token.
		return fmt.Errorf("key starts with the client token prefix %q", prefix)
	}
	if !isVisibleASCII(key) {
		return errors.New("key contains a space, control or non-ASCII character")
	}
	return nil
}

// LoadKeyFile reads and parses an API key file.
func LoadKeyFile(path string) (*KeySet, error) {
	set, _, err := loadKeyFile(path)
	return set, err
}

// loadKeyFile also returns the SHA-256 of the file's bytes so that the
// watcher can tell whether anything changed without parsing again.
func loadKeyFile(path string) (*KeySet, [sha256.Size]byte, error) {
	data, err := boundedfile.Read(path, maxKeyFileSize)
	if err != nil {
		return nil, [sha256.Size]byte{}, err
	}
	sum := sha256.Sum256(data)
	set, err := parseKeys(data)
	if err != nil {
		return nil, sum, fmt.Errorf("key file %s: %w", path, err)
	}
	return set, sum, nil
}

// Len reports how many distinct keys the set holds.
func (s *KeySet) Len() int { return len(s.digests) }

// Match reports whether key is in the set, and its KeyID when it is.
//
// The presented key is hashed and its digest compared with every stored
// digest, all of them, in constant time: how long Match takes depends on the
// number of keys and the presented length only, never on which key matched
// or how much of it was right.
func (s *KeySet) Match(key string) (keyID string, ok bool) {
	if s == nil {
		return "", false
	}
	digest := sha256.Sum256([]byte(key))
	found := 0
	for i := range s.digests {
		found |= subtle.ConstantTimeCompare(digest[:], s.digests[i][:])
	}
	if found != 1 {
		return "", false
	}
	return hex.EncodeToString(digest[:keyIDLen/2]), true
}

// HasID reports whether a key with this KeyID is in the set; tokens minted
// by a key that has since been removed stop working through it.
func (s *KeySet) HasID(keyID string) bool {
	if s == nil {
		return false
	}
	_, ok := s.ids[keyID]
	return ok
}

// KeyStore holds the current key set of a key file. Requests read it
// without locking while a reload swaps it.
type KeyStore struct {
	path    string
	current atomic.Pointer[KeySet]

	// reloadMu keeps a SIGHUP-triggered Reload and Watch from interleaving
	// their read-parse-swap steps and from racing on lastSum.
	reloadMu sync.Mutex
	// lastSum is the hash of the file content last looked at, valid or not,
	// so that an invalid file is reported once rather than at every poll.
	lastSum [sha256.Size]byte
	// onChange is called with each new key set swapped in (SetOnChange).
	onChange func(*KeySet)
}

// SetOnChange makes the store call fn with every new key set it swaps in,
// after the swap, so that what was opened with a key that is gone can end.
// Call it before Watch or Reload; fn must not call them.
func (s *KeyStore) SetOnChange(fn func(*KeySet)) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.onChange = fn
}

// swap makes set current (with reloadMu held) and tells onChange.
func (s *KeyStore) swap(set *KeySet) {
	s.current.Store(set)
	if s.onChange != nil {
		s.onChange(set)
	}
}

// NewKeyStore loads path and fails if it holds no valid key: a server
// that starts without keys would reject everybody.
func NewKeyStore(path string) (*KeyStore, error) {
	set, sum, err := loadKeyFile(path)
	if err != nil {
		return nil, err
	}
	s := &KeyStore{path: path, lastSum: sum}
	s.current.Store(set)
	return s, nil
}

// Path is the file the store reads.
func (s *KeyStore) Path() string { return s.path }

// Keys returns the current key set; it is nil only for a nil store.
func (s *KeyStore) Keys() *KeySet {
	if s == nil {
		return nil
	}
	return s.current.Load()
}

// Reload reads the file again and swaps in its keys. When the file is
// missing or invalid the previous keys stay in force and the error is
// returned: a half-written Secret must not lock every client out.
func (s *KeyStore) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	set, sum, err := loadKeyFile(s.path)
	s.lastSum = sum
	if err != nil {
		return err
	}
	s.swap(set)
	return nil
}

// reloadIfChanged is one poll of Watch. It compares content hashes rather
// than trusting mtime and size alone: an edit within the filesystem's
// timestamp granularity keeps both, and a Kubernetes Secret update swaps a
// symlink whose target may carry any mtime. The file is small, so reading
// it every interval costs nothing worth saving.
func (s *KeyStore) reloadIfChanged() (changed bool, keys int, err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	data, err := boundedfile.Read(s.path, maxKeyFileSize)
	if err != nil {
		return false, 0, err
	}
	sum := sha256.Sum256(data)
	if sum == s.lastSum {
		return false, 0, nil
	}
	s.lastSum = sum
	set, err := parseKeys(data)
	if err != nil {
		return true, 0, fmt.Errorf("key file %s: %w", s.path, err)
	}
	s.swap(set)
	return true, set.Len(), nil
}

// Watch polls the key file every interval and reloads it when its content
// changes, until ctx is done; then it stops its ticker and returns nil. An
// unreadable or invalid file is logged (the error, never a key) and the
// previous keys stay in force. The caller owns the goroutine that runs it.
func (s *KeyStore) Watch(ctx context.Context, interval time.Duration, clk clock.Clock, log logr.Logger) error {
	return watchFile(ctx, interval, clk, log, fileWatch{
		path:        s.path,
		cannotRead:  "Cannot read API key file, keeping the previous keys",
		invalid:     "API key file is invalid, keeping the previous keys",
		reloaded:    "Reloaded API keys",
		countedWhat: "keys",
		poll:        s.reloadIfChanged,
	})
}
