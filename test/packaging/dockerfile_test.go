package packaging_test

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// instruction is one Dockerfile instruction, continuation lines joined and
// comments dropped.
type instruction struct {
	keyword string // upper case: FROM, RUN, ...
	args    string
}

// parseDockerfile reads the instructions of a Dockerfile.
func parseDockerfile(text string) []instruction {
	var instructions []instruction
	var current strings.Builder
	flush := func() {
		line := strings.TrimSpace(current.String())
		current.Reset()
		if line == "" {
			return
		}
		keyword, args, _ := strings.Cut(line, " ")
		instructions = append(instructions, instruction{keyword: strings.ToUpper(keyword), args: strings.TrimSpace(args)})
	}
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			current.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		current.WriteString(trimmed)
		flush()
	}
	flush()
	return instructions
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from, name   string
	instructions []instruction
}

func stagesOf(instructions []instruction) (args map[string]string, stages []*stage) {
	args = map[string]string{}
	for _, in := range instructions {
		if in.keyword == "FROM" {
			fields := strings.Fields(in.args)
			fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--platform=") })
			s := &stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.keyword == "ARG" {
				name, value, _ := strings.Cut(in.args, "=")
				args[name] = value
			}
			continue
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
	}
	return args, stages
}

// goBuildCommand is the build stage's RUN that builds the binaries, without
// its --mount options.
func goBuildCommand(t *testing.T, s *stage) string {
	t.Helper()
	for _, in := range s.instructions {
		if in.keyword != "RUN" || !strings.Contains(in.args, "go build") {
			continue
		}
		command := in.args
		for strings.HasPrefix(command, "--") {
			_, command, _ = strings.Cut(command, " ")
			command = strings.TrimSpace(command)
		}
		return command
	}
	t.Fatalf("the %s stage has no RUN with go build", s.name)
	return ""
}

func readDockerfile(t *testing.T) (map[string]string, []*stage) {
	t.Helper()
	args, stages := stagesOf(parseDockerfile(string(readRepoFile(t, "Dockerfile"))))
	if len(stages) != 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and the final one", len(stages))
	}
	return args, stages
}

// TestDockerfile checks what the image promises without Docker (this
// machine has no engine): a Go builder at go.mod's version, one static,
// trimmed build of both binaries with the version stamped, and a distroless
// static final stage that runs /manager as the nonroot user. It also checks
// that .dockerignore keeps out what the build does not need and nothing it
// does.
func TestDockerfile(t *testing.T) {
	args, stages := readDockerfile(t)
	build, final := stages[0], stages[1]

	goMod := string(readRepoFile(t, "go.mod"))
	goDirective := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(goMod)
	if goDirective == nil {
		t.Fatal("go.mod has no go directive")
	}
	if build.from != "golang:${GO_VERSION}" || args["GO_VERSION"] != goDirective[1] {
		t.Errorf("builder %q with GO_VERSION %q, want golang:${GO_VERSION} with go.mod's %s", build.from, args["GO_VERSION"], goDirective[1])
	}
	command := goBuildCommand(t, build)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X github.com/voicegateway/voicegateway/server/version.Version=${VERSION}",
		"-X github.com/voicegateway/voicegateway/server/version.Commit=${COMMIT}",
		"./cmd/manager", "./cmd/voice-server", "-o /out/"} {
		if !strings.Contains(command, want) {
			t.Errorf("the build command lacks %q: %s", want, command)
		}
	}

	if final.from != "gcr.io/distroless/static:nonroot" {
		t.Errorf("final stage FROM %q, want gcr.io/distroless/static:nonroot", final.from)
	}
	var copies []string
	var user, entrypoint string
	for _, in := range final.instructions {
		switch in.keyword {
		case "COPY":
			copies = append(copies, in.args)
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "RUN":
			t.Errorf("the final stage runs %q: distroless has no shell", in.args)
		}
	}
	for _, want := range []string{"--from=build /out/manager /manager", "--from=build /out/voice-server /voice-server"} {
		if !slices.Contains(copies, want) {
			t.Errorf("the final stage does not COPY %s (copies %q)", want, copies)
		}
	}
	if user != "65532:65532" || entrypoint != `["/manager"]` {
		t.Errorf("USER %q ENTRYPOINT %q, want 65532:65532 and [\"/manager\"]", user, entrypoint)
	}

	// .dockerignore: the bulky and irrelevant folders stay out, and no
	// pattern drops a file the build needs.
	var patterns []string
	for _, line := range strings.Split(string(readRepoFile(t, ".dockerignore")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	for _, want := range []string{".git", "bin", "docs"} {
		if !ignored(patterns, want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
	for _, needed := range buildInputs(t) {
		if ignored(patterns, needed) {
			t.Errorf(".dockerignore excludes %s, which the build needs", needed)
		}
	}
}

// ignored reports whether a .dockerignore pattern matches the path or one of
// its parent folders (Docker's rule: an excluded folder excludes all below).
func ignored(patterns []string, file string) bool {
	for dir := file; dir != "." && dir != "/"; dir = path.Dir(dir) {
		for _, pattern := range patterns {
			if matched, _ := path.Match(pattern, dir); matched {
				return true
			}
			if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
				if matched, _ := path.Match(rest, path.Base(dir)); matched {
					return true
				}
			}
		}
	}
	return false
}

// buildInputs lists the repository's files that building both binaries
// reads: go.mod, go.sum, LICENSE (the image carries it), and every Go and
// embedded file of the module's packages they import.
func buildInputs(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module",
		"./cmd/manager", "./cmd/voice-server")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	inputs := []string{"go.mod", "go.sum", "LICENSE"}
	decoder := json.NewDecoder(strings.NewReader(string(out)))
	for decoder.More() {
		var pkg struct {
			Dir        string
			GoFiles    []string
			EmbedFiles []string
			Module     *struct{ Main bool }
		}
		if err := decoder.Decode(&pkg); err != nil {
			t.Fatal(err)
		}
		if pkg.Module == nil || !pkg.Module.Main {
			continue
		}
		rel, err := filepath.Rel(repoRoot, pkg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(pkg.GoFiles, pkg.EmbedFiles...) {
			inputs = append(inputs, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	if len(inputs) < 10 {
		t.Fatalf("go list found only %v", inputs)
	}
	return inputs
}

var (
	imageBuildOnce sync.Once
	imageBuildDir  string
	imageBuildErr  error
)

// imageBinaries runs the Dockerfile's build command on this machine, as
// the build stage would (VERSION the chart's appVersion, this machine's
// architecture, the output folder moved into the scratch folder), once per
// test run, and returns the folder holding manager and voice-server.
func imageBinaries(t *testing.T) string {
	t.Helper()
	_, stages := readDockerfile(t)
	command := goBuildCommand(t, stages[0])
	version := readChartMeta(t).AppVersion
	imageBuildOnce.Do(func() {
		imageBuildDir = filepath.Join(scratchDir, "image")
		command = strings.ReplaceAll(command, "/out/", imageBuildDir+"/")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(),
			"PATH="+filepath.Join(runtime.GOROOT(), "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
			"VERSION="+version, "COMMIT=unknown", "TARGETOS="+runtime.GOOS, "TARGETARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			imageBuildErr = fmt.Errorf("the Dockerfile's build command: %v\n%s\n%s", err, command, out)
		}
	})
	if imageBuildErr != nil {
		t.Fatal(imageBuildErr)
	}
	return imageBuildDir
}

// TestDockerfileBuildsStaticVersionedBinaries runs the Dockerfile's build
// command and checks its output: both binaries are statically linked (they
// must run on distroless/static, which has no libc), trimmed, built without
// cgo, and stamped with the version; and the operator's default voice
// server image is the chart's default image, so that a VoiceGateway without
// spec.image runs the operator's own image at the operator's version.
func TestDockerfileBuildsStaticVersionedBinaries(t *testing.T) {
	dir := imageBinaries(t)
	version := readChartMeta(t).AppVersion
	for _, name := range []string{"manager", "voice-server"} {
		bin := filepath.Join(dir, name)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked", name)
			}
		}
		_ = f.Close()
		info, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// Go does not record -ldflags with -trimpath; the version is
		// checked below by what each binary reports.
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if settings["-trimpath"] != "true" || settings["CGO_ENABLED"] != "0" || info.Main.Path != "github.com/voicegateway/voicegateway" {
			t.Errorf("%s: module %s, build settings %v", name, info.Main.Path, settings)
		}
	}
	if got := voiceServerVersion(t, filepath.Join(dir, "voice-server")); got != version {
		t.Errorf("voice-server reports version %q, want %q", got, version)
	}
	// --version on both: the version, the commit and the Go version.
	for _, name := range []string{"manager", "voice-server"} {
		out, err := exec.Command(filepath.Join(dir, name), "--version").Output()
		want := fmt.Sprintf("%s %s (commit unknown, %s %s/%s)\n", name, version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if err != nil || string(out) != want {
			t.Errorf("%s --version: %v, %q; want %q", name, err, out, want)
		}
	}

	out, err := exec.Command(filepath.Join(dir, "manager"), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("manager --help: %v\n%s", err, out)
	}
	want := `(default "ghcr.io/voicegateway/voicegateway:` + version + `")`
	m := regexp.MustCompile(`(?m)^\s+-default-image string\n.*$`).Find(out)
	if m == nil || !strings.Contains(string(m), want) {
		t.Errorf("manager --default-image %q, want the default %s\n%s", m, want, out)
	}
	rendered := renderChart(t, "voicegateway", "voicegateway-system")
	var d appsv1.Deployment
	rendered.find(t, "Deployment", "", "voicegateway-operator", &d)
	if got := operatorContainer(t, &d).Image; got != "ghcr.io/voicegateway/voicegateway:"+version {
		t.Errorf("the chart runs %s, the manager defaults the voice server to ghcr.io/voicegateway/voicegateway:%s", got, version)
	}
}

// voiceServerVersion starts the voice server on loopback and returns the
// version it logs at start, then stops it.
func voiceServerVersion(t *testing.T, bin string) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "voice-server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--insecure-no-auth",
		"--backend", "echo", "--propagation-delay", "0s", "--drain-timeout", "8s", "--exit-margin", "2s")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	var version string
	testkit.Eventually(t, 20*time.Second, func() error {
		data, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			var entry struct {
				Msg     string `json:"msg"`
				Version string `json:"version"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "starting voice server" {
				version = entry.Version
				return nil
			}
		}
		return fmt.Errorf("no start line in the voice server's log:\n%s", data)
	})
	return version
}
