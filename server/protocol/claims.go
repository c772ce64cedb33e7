package protocol

import (
	"bytes"
	"strconv"
	"strings"
)

// SessionClaims are the settings a client token fixes for its session
// (the "model" and "voice" its minter chose); empty means not fixed.
type SessionClaims struct {
	Model, Voice string
}

// claimed is where the claims are read, in a session object
// (session.update) and in a response object (response.create, the
// settings of one response): the model, and the voice where both API
// generations put it (beta voice, GA audio.output.voice).
var claimed = []struct {
	voice bool
	path  []string
}{
	{false, []string{"model"}},
	{true, []string{"voice"}},
	{true, []string{"audio", "output", "voice"}},
}

// CheckClaims refuses a client event that would change what the claims
// fix: a session.update whose session object, or a response.create whose
// response object, names another model or voice. A page holding a token
// may not choose a costlier model or another voice than the backend that
// minted it allowed, for the session or for one response. Fields are
// found by their exact names, as an upstream that reads JSON
// case-sensitively finds them (LookupExact): a claimed field given twice,
// or under another case ("Voice"), which encoding/json would read as the
// field, is refused too, so no reader sees another value than the one
// checked. Fields that name the claimed value, are null or absent pass;
// so do other events. The error is non-fatal (invalid_event, param naming
// the field).
func CheckClaims(ev *ClientEvent, claims SessionClaims) *Error {
	if claims == (SessionClaims{}) {
		return nil
	}
	var obj []byte
	var name string
	switch ev.Type {
	case TypeSessionUpdate:
		obj, name = ev.Session, "session"
	case TypeResponseCreate:
		obj, name = ev.Response, "response"
	default:
		return nil
	}
	if len(obj) == 0 || string(obj) == "null" {
		return nil
	}
	for _, c := range claimed {
		want, what := claims.Model, "model"
		if c.voice {
			want, what = claims.Voice, "voice"
		}
		if want == "" {
			continue
		}
		raw, err := LookupExact(obj, name, c.path...)
		if err != nil {
			return err
		}
		if raw == nil {
			continue
		}
		param := name + "." + strings.Join(c.path, ".")
		got, _, ok := stringValue(raw)
		if !ok {
			return Invalid(param, param+" must be a string")
		}
		if string(got) != want {
			return Invalid(param, "this session's client token allows the "+what+" "+strconv.Quote(want)+" only")
		}
	}
	return nil
}

// LookupExact follows path through the JSON object obj, each name matched
// exactly, and returns the value found there; nil when a member on the way
// is absent or null. A member on the way given twice, or under a name that
// differs from it only in case (encoding/json folds case, an upstream may
// not), is refused, and so is a member on the way that is not an object
// (of at most 64 members). param names obj in the errors ("session"
// names session.audio.output "session.audio.output").
func LookupExact(obj []byte, param string, path ...string) ([]byte, *Error) {
	cur := obj
	for _, name := range path {
		if len(cur) == 0 || string(cur) == "null" {
			return nil, nil
		}
		parent := param
		param += "." + name
		var found []byte
		var problem *Error
		ok := scanObject(cur, func(m member) bool {
			key := m.key
			if m.keyEscaped {
				k, _, ok := stringValue(append(append([]byte{'"'}, key...), '"'))
				if !ok {
					return false
				}
				key = k
			}
			switch {
			case string(key) == name:
				if found != nil {
					problem = Invalid(param, "field "+param+" is given more than once")
					return false
				}
				found = m.value
			case bytes.EqualFold(key, []byte(name)):
				problem = Invalid(param, "field names are case-sensitive: write "+strconv.Quote(name)+", not "+strconv.Quote(string(key)))
				return false
			}
			return true
		})
		if problem != nil {
			return nil, problem
		}
		if !ok {
			return nil, Invalid(parent, parent+" must be a JSON object of at most 64 fields")
		}
		cur = found
	}
	if string(cur) == "null" {
		return nil, nil
	}
	return cur, nil
}
