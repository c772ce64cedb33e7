package config

import (
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	tests := map[string]struct {
		in   string
		want int64
		ok   bool
	}{
		"whole bytes (the downward API)": {"536870912", 512 << 20, true},
		"binary suffix":                  {"512Mi", 512 << 20, true},
		"Ki":                             {"64Ki", 64 << 10, true},
		"Gi":                             {"2Gi", 2 << 30, true},
		"decimal suffix":                 {"500M", 500_000_000, true},
		"zero":                           {"0", 0, true},
		"spaces around":                  {" 1Gi ", 1 << 30, true},
		"fraction":                       {"1.5Gi", 0, false},
		"negative":                       {"-1", 0, false},
		"plus sign":                      {"+5", 0, false},
		"exponent":                       {"1e9", 0, false},
		"unknown suffix":                 {"5MB", 0, false},
		"suffix alone":                   {"Mi", 0, false},
		"empty":                          {"", 0, false},
		"too large":                      {"9000000Ti", 0, false},
		"overflows int64":                {"99999999999999999999", 0, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseBytes(tc.in)
			if tc.ok && (err != nil || got != tc.want) {
				t.Fatalf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			if !tc.ok && err == nil {
				t.Fatalf("ParseBytes(%q) = %d, want an error", tc.in, got)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 512 << 20: "512Mi", 1 << 30: "1Gi", 1536 << 20: "1536Mi", 1000: "1000", 3 << 10: "3Ki"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// FuzzParseBytes: any input either fails or gives a size that formats and
// parses back to itself; nothing panics.
func FuzzParseBytes(f *testing.F) {
	for _, seed := range []string{"536870912", "512Mi", "1Gi", "64Ki", "500M", "0", "1.5Gi", "-1", "9223372036854775807", "4611686018427387904", "4Ti", strings.Repeat("9", 30)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := ParseBytes(raw)
		if err != nil {
			return
		}
		if n < 0 || n > 1<<62 {
			t.Fatalf("ParseBytes(%q) = %d, out of range", raw, n)
		}
		back, err := ParseBytes(FormatBytes(n))
		if err != nil || back != n {
			t.Fatalf("FormatBytes(%d) = %q reads back as %d, %v", n, FormatBytes(n), back, err)
		}
	})
}
