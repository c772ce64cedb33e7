//go:build race

package openai

// raceEnabled: the race detector's sync.Pool drops a quarter of what is
// Put, so a pooled buffer is sometimes made anew.
const raceEnabled = true
