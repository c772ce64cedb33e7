package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestConfigWithDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{
		Window:          time.Minute,
		SuspiciousAfter: 5,
		BlockAfter:      10,
		BlockDuration:   15 * time.Minute,
		SuspiciousDelay: time.Second,
		MaxTracked:      100_000,
		CleanupInterval: time.Minute,
	}
	if got != want {
		t.Errorf("Config{}.WithDefaults() = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}

	set := testConfig()
	if got := set.WithDefaults(); got != set {
		t.Errorf("WithDefaults changed set fields: %+v, want %+v", got, set)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string // substrings; nil means valid
	}{
		{name: "valid", mutate: func(*Config) {}},
		{name: "suspicion off: SuspiciousAfter equals BlockAfter", mutate: func(c *Config) { c.SuspiciousAfter = c.BlockAfter }},
		{name: "window too short", mutate: func(c *Config) { c.Window = time.Microsecond }, wantErr: []string{"Window is 1µs; set it between 1ms and 24h0m0s"}},
		{name: "window too long", mutate: func(c *Config) { c.Window = 48 * time.Hour }, wantErr: []string{"Window is 48h0m0s"}},
		{name: "negative SuspiciousAfter", mutate: func(c *Config) { c.SuspiciousAfter = -1 }, wantErr: []string{"SuspiciousAfter is -1; set it between 1 and 65535"}},
		{name: "BlockAfter over counter range", mutate: func(c *Config) { c.BlockAfter = 70000 }, wantErr: []string{"BlockAfter is 70000; set it between 1 and 65535"}},
		{name: "suspicious above block", mutate: func(c *Config) { c.SuspiciousAfter = 6 }, wantErr: []string{"SuspiciousAfter (6) is above BlockAfter (5)"}},
		{name: "negative BlockDuration", mutate: func(c *Config) { c.BlockDuration = -time.Second }, wantErr: []string{"BlockDuration is -1s"}},
		{name: "negative SuspiciousDelay", mutate: func(c *Config) { c.SuspiciousDelay = -time.Second }, wantErr: []string{"SuspiciousDelay is -1s"}},
		{name: "negative MaxTracked", mutate: func(c *Config) { c.MaxTracked = -5 }, wantErr: []string{"MaxTracked is -5; set it to 1 or more"}},
		{name: "negative CleanupInterval", mutate: func(c *Config) { c.CleanupInterval = -time.Minute }, wantErr: []string{"CleanupInterval is -1m0s"}},
		{
			name:    "every bad field is reported",
			mutate:  func(c *Config) { c.MaxTracked, c.CleanupInterval = -1, -1 },
			wantErr: []string{"MaxTracked", "CleanupInterval"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	if _, err := New(Config{BlockAfter: -1}, nil); err == nil || !strings.Contains(err.Error(), "BlockAfter") {
		t.Errorf("New with BlockAfter -1: err = %v, want one naming BlockAfter", err)
	}
}

func TestNewNilClockUsesRealClock(t *testing.T) {
	l, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := l.Failure(nthAddr(1)); d.Verdict != Allow {
		t.Errorf("first failure = %+v, want Allow", d)
	}
}
