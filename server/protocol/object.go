package protocol

// ObjectMember is one top-level member of a JSON object as ScanObject
// walks it: the raw text of its key (between the quotes; KeyEscaped says it
// contains escapes) and of its value.
type ObjectMember struct {
	Key        []byte
	KeyEscaped bool
	Value      []byte
}

// MaxObjectMembers is the most top-level members ScanObject accepts.
const MaxObjectMembers = maxMembers

// ScanObject is the client decoder's walker, for relays that must read the
// top level of upstream events without decoding them: it checks that data
// is exactly one JSON object of at most MaxObjectMembers members, with
// every nested value valid JSON, and calls fn for each top-level member in
// order. It returns false when data is not such an object or fn returns
// false. data must be valid UTF-8 (utf8.Valid); the walk does not check.
// It does not allocate.
func ScanObject(data []byte, fn func(m ObjectMember) bool) bool {
	return scanObject(data, func(m member) bool {
		return fn(ObjectMember{Key: m.key, KeyEscaped: m.keyEscaped, Value: m.value})
	})
}
