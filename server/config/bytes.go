package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteSuffixes are the suffixes ParseBytes takes, as Kubernetes writes
// memory quantities: binary (Ki, Mi, Gi, Ti) and decimal (k, M, G, T).
var byteSuffixes = []struct {
	suffix string
	factor int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// ParseBytes reads a size in bytes: a whole number (what the downward API
// gives for limits.memory), optionally followed by one of Ki, Mi, Gi, Ti,
// k, M, G or T, e.g. 512Mi. Fractions, signs, exponents and sizes over
// 2^62 are refused.
func ParseBytes(raw string) (int64, error) {
	s := strings.TrimSpace(raw)
	factor := int64(1)
	for _, sfx := range byteSuffixes {
		if rest, ok := strings.CutSuffix(s, sfx.suffix); ok {
			s, factor = rest, sfx.factor
			break
		}
	}
	if s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a size; write whole bytes or use Ki, Mi, Gi (e.g. 512Mi)", raw)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > (1<<62)/factor {
		return 0, fmt.Errorf("%q is too large a size", raw)
	}
	return n * factor, nil
}

// FormatBytes writes n in the largest binary unit that divides it (512Mi),
// or as whole bytes; ParseBytes reads it back to n.
func FormatBytes(n int64) string {
	if n > 0 {
		for i := 3; i >= 0; i-- {
			if f := byteSuffixes[i].factor; n%f == 0 && n/f < math.MaxInt32 {
				return strconv.FormatInt(n/f, 10) + byteSuffixes[i].suffix
			}
		}
	}
	return strconv.FormatInt(n, 10)
}
