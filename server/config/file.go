package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// applyFile sets every setting the YAML document names. Unknown keys are
// errors, not warnings: a misspelt key in a ConfigMap would otherwise leave
// the default in force with nothing to show for it.
//
// The document is walked by hand rather than decoded into Config because a
// time.Duration decodes from a number of nanoseconds, and "30s" is what
// people write.
func applyFile(cfg *Config, data []byte) error {
	// Strict conversion rejects duplicate keys, which YAML forbids and
	// which would otherwise resolve silently to one of the two.
	asJSON, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(asJSON))
	dec.UseNumber() // keep integers exact and tell them apart from strings
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	if doc == nil {
		return nil // an empty file sets nothing
	}
	root, ok := doc.(map[string]any)
	if !ok {
		return fmt.Errorf("want a mapping of settings at the top level, got %s", describe(doc))
	}
	var errs []error
	applyMapping(cfg, "", root, &errs)
	return errors.Join(errs...)
}

func applyMapping(cfg *Config, group string, mapping map[string]any, errs *[]error) {
	for _, name := range slices.Sorted(maps.Keys(mapping)) {
		raw := mapping[name]
		key := name
		if group != "" {
			key = group + "." + name
		}
		if s, ok := settingByKey[key]; ok {
			if err := applyFileValue(cfg, s, raw); err != nil {
				*errs = append(*errs, fmt.Errorf("%s: %w", key, err))
			}
			continue
		}
		if group == "" && isGroup(name) {
			switch sub := raw.(type) {
			case nil:
			case map[string]any:
				applyMapping(cfg, name, sub, errs)
			default:
				*errs = append(*errs, fmt.Errorf("%s: want a mapping of settings, got %s", key, describe(raw)))
			}
			continue
		}
		*errs = append(*errs, unknownKeyError(group, key, name))
	}
}

func isGroup(name string) bool {
	for _, g := range groups {
		if g.key != "" && g.key == name {
			return true
		}
	}
	return false
}

// unknownKeyError points at the right key. The commonest slip is writing a
// flag name as a key, so that gets a direct answer.
func unknownKeyError(group, key, name string) error {
	if s, ok := settingByFlag[strings.ReplaceAll(name, "_", "-")]; ok {
		return fmt.Errorf("unknown key %q: --%s is written %q in the file", key, s.flag, s.key)
	}
	var known []string
	for _, s := range settings {
		if s.group() == group {
			known = append(known, strings.TrimPrefix(s.key, group+"."))
		}
	}
	if group == "" {
		for _, g := range groups {
			if g.key != "" {
				known = append(known, g.key)
			}
		}
	}
	where := "at the top level"
	if group != "" {
		where = "under " + group
	}
	return fmt.Errorf("unknown key %q; known keys %s: %s", key, where, strings.Join(known, ", "))
}

// applyFileValue checks the YAML type before parsing, so that a number where
// a duration belongs is reported instead of read as nanoseconds.
func applyFileValue(cfg *Config, s setting, raw any) error {
	if raw == nil {
		return nil // `key:` with no value leaves the setting alone
	}
	v := s.bind(cfg)
	text, ok := "", false
	switch v.kind() {
	case kindString:
		text, ok = raw.(string)
	case kindDuration:
		text, ok = raw.(string)
		if _, isNumber := raw.(json.Number); isNumber {
			return fmt.Errorf("want a duration with a unit such as \"30s\", got the number %v", raw)
		}
	case kindBool:
		var b bool
		if b, ok = raw.(bool); ok {
			text = fmt.Sprint(b)
		}
	case kindInt, kindFloat:
		var n json.Number
		if n, ok = raw.(json.Number); ok {
			text = n.String()
		}
	case kindBytes:
		// 536870912 or "512Mi".
		switch v := raw.(type) {
		case json.Number:
			text, ok = v.String(), true
		case string:
			text, ok = v, true
		}
	case kindList:
		text, ok = listText(raw)
	}
	if !ok {
		return fmt.Errorf("want a %s, got %s", v.kind(), describe(raw))
	}
	return v.Set(text)
}

// listText accepts a YAML list of strings or one comma-separated string,
// the form the flag and the environment variable take.
func listText(raw any) (string, bool) {
	switch list := raw.(type) {
	case string:
		return list, true
	case []any:
		items := make([]string, 0, len(list))
		for _, item := range list {
			s, ok := item.(string)
			if !ok {
				return "", false
			}
			items = append(items, s)
		}
		return strings.Join(items, ","), true
	}
	return "", false
}

func describe(raw any) string {
	switch v := raw.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", v)
	case json.Number:
		return "the number " + v.String()
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", raw)
}

// Redacted returns the settings in the shape of the YAML file, for the
// startup log. It holds no secret because secrets are only ever referenced
// by file path; a setting that could carry one is masked here: the values
// of --openai-url's query (RedactURL). ConfigFile is left out.
func (c Config) Redacted() map[string]any {
	out := c.settingsMap()
	if o, ok := out["openai"].(map[string]any); ok {
		o["url"] = RedactURL(c.OpenAI.URL)
	}
	return out
}

// settingsMap is every setting in the shape of the YAML file, as set.
func (c Config) settingsMap() map[string]any {
	out := map[string]any{}
	for _, s := range settings {
		mapping := out
		if group := s.group(); group != "" {
			sub, ok := out[group].(map[string]any)
			if !ok {
				sub = map[string]any{}
				out[group] = sub
			}
			mapping = sub
		}
		mapping[s.key[strings.LastIndex(s.key, ".")+1:]] = s.bind(&c).fileValue()
	}
	return out
}

// YAML renders every setting as a configuration file that Load reads back
// to the same Config, so that the operator can write the ConfigMap without
// restating key names or duration syntax.
func (c Config) YAML() ([]byte, error) {
	return yaml.Marshal(c.settingsMap())
}
