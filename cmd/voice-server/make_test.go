package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeRunBuildsOnlyTheVoiceServer: `make run` and `make demo-drain`
// build the voice server and nothing else (the operator takes minutes on a
// small machine), and `make run` starts it as the README says.
func TestMakeRunBuildsOnlyTheVoiceServer(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	for _, target := range []string{"run", "demo-drain"} {
		cmd := exec.Command("make", "-n", target)
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %s: %v\n%s", target, err, out)
		}
		plan := string(out)
		if strings.Count(plan, "go build") != 1 || !strings.Contains(plan, "./cmd/voice-server") ||
			strings.Contains(plan, "./cmd/manager") || strings.Contains(plan, "./cmd/vgload") {
			t.Errorf("make %s would run:\n%s\nwant one go build, of ./cmd/voice-server only", target, plan)
		}
	}
	cmd := exec.Command("make", "-n", "run")
	cmd.Dir = filepath.Join("..", "..")
	out, _ := cmd.CombinedOutput()
	for _, want := range []string{"--listen 127.0.0.1:8080", "--admin-listen 127.0.0.1:9090", "--insecure-no-auth", "--backend echo"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make run lacks %s:\n%s", want, out)
		}
	}
}

// TestVersionFlag: --version prints the program, version, commit and Go
// version and exits 0, before any setting is checked.
func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}, {"--listen", ":1", "--version"}} {
		out, err := exec.Command(voiceServer.Path(t), args...).Output()
		if err != nil || !strings.HasPrefix(string(out), "voice-server ") || !strings.Contains(string(out), "(commit ") ||
			!strings.Contains(string(out), " go1.") {
			t.Errorf("voice-server %v: %v, %q", args, err, out)
		}
	}
}

// TestDocsSayWhatTheServerDoes: the README and the docs agree with the
// binary on what a newcomer meets first: authentication off is logged as
// an error (the README said warning), kustomize installs are server-side
// (the CRD is too big for a client-side apply's annotation), and
// gateway.draining carries no resume_token (there is none).
func TestDocsSayWhatTheServerDoes(t *testing.T) {
	root := filepath.Join("..", "..")
	read := func(path string) string {
		data, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	readme := read("README.md")
	p := startBinary(t, "--insecure-no-auth")
	var level string
	for _, line := range strings.Split(p.Logs(), "\n") {
		var entry struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &entry) == nil && strings.HasPrefix(entry.Msg, "AUTHENTICATION IS OFF") {
			level = entry.Level
		}
	}
	if level != "error" || !strings.Contains(readme, "logged as an error") || strings.Contains(readme, "logged as a\nwarning") ||
		strings.Contains(readme, "logged as a warning") {
		t.Errorf("authentication off is logged at %q; the README must say so", level)
	}
	for _, doc := range []string{"README.md", "docs/operations.md", "docs/design.md", "charts/voicegateway-operator/templates/NOTES.txt"} {
		for i, line := range strings.Split(read(doc), "\n") {
			if strings.Contains(line, "kubectl apply") && strings.Contains(line, " -k ") && !strings.Contains(line, "--server-side") {
				t.Errorf("%s:%d: %q: kustomize installs need --server-side", doc, i+1, strings.TrimSpace(line))
			}
		}
	}
	if design := read("docs/design.md"); strings.Contains(design, "resume_token") {
		t.Error("docs/design.md names a resume_token, which gateway.draining does not carry")
	}
}
