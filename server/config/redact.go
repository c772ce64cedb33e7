package config

import (
	"net/url"
	"regexp"
	"strings"
)

// Redacted is what RedactURL and RedactArgs put in place of a value that
// may be a credential.
const Redacted = "REDACTED"

// RedactURL returns rawURL with the password of its userinfo and every
// query value replaced by REDACTED, for logs and served command lines: an
// upstream URL may carry a key in its query (?api_key=…) or its userinfo,
// and neither may leave the process. Text that is not a URL with a scheme
// and host is returned as it is; one that fails to parse is replaced
// whole.
func RedactURL(rawURL string) string {
	if !strings.Contains(rawURL, "://") {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return Redacted
	}
	if u.User != nil {
		u.User = url.User(Redacted)
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			for i := range vs {
				vs[i] = Redacted
			}
			q[k] = vs
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// RedactArgs returns a command line with every URL in it redacted
// (RedactURL), whether it stands alone (--openai-url wss://…) or after
// an equals sign (--openai-url=wss://…): what /debug/pprof/cmdline serves.
func RedactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, arg := range args {
		if name, value, ok := strings.Cut(arg, "="); ok && strings.HasPrefix(name, "-") {
			out[i] = name + "=" + RedactURL(value)
			continue
		}
		out[i] = RedactURL(arg)
	}
	return out
}

// urlInText finds URLs in free text, as an error message quotes them.
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)

// RedactIn returns text with every URL in it redacted (RedactURL), and
// every secret rawURL carries — its query values and userinfo, of at least
// minSecretLen characters — replaced by REDACTED wherever else it appears:
// a library's error quotes the URL it dialled, often with another scheme.
func RedactIn(text, rawURL string) string {
	text = urlInText.ReplaceAllStringFunc(text, RedactURL)
	u, err := url.Parse(rawURL)
	if err != nil {
		return text
	}
	var secrets []string
	if u.User != nil {
		secrets = append(secrets, u.User.Username())
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
	}
	for _, pair := range strings.Split(u.RawQuery, "&") {
		if _, v, ok := strings.Cut(pair, "="); ok {
			secrets = append(secrets, v)
			if d, err := url.QueryUnescape(v); err == nil {
				secrets = append(secrets, d)
			}
		}
	}
	for _, s := range secrets {
		if len(s) >= minSecretLen {
			text = strings.ReplaceAll(text, s, Redacted)
		}
	}
	return text
}

// minSecretLen: shorter query values (a model name, a flag) are not
// credentials, and replacing them everywhere would garble the text.
const minSecretLen = 8
