package packaging_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

var (
	imageProgramOnce sync.Once
	imageProgramPath string
	imageProgramErr  error
)

// imageProgram builds hack/image once per test run.
func imageProgram(t *testing.T) string {
	t.Helper()
	imageProgramOnce.Do(func() {
		imageProgramPath = filepath.Join(scratchDir, "image-program")
		cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", imageProgramPath, "./hack/image")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			imageProgramErr = fmt.Errorf("go build ./hack/image: %v\n%s", err, out)
		}
	})
	if imageProgramErr != nil {
		t.Fatal(imageProgramErr)
	}
	return imageProgramPath
}

// buildImage runs hack/image into an OCI layout and returns its folder.
func buildImage(t *testing.T, platforms string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := runImageProgram(t, platforms, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runImageProgram(t *testing.T, platforms, dir string) error {
	t.Helper()
	version := readChartMeta(t).AppVersion
	cmd := exec.Command(imageProgram(t), "--version", version, "--commit", "unknown", "--platform", platforms, "--base", "scratch",
		"--tag", "ghcr.io/voicegateway/voicegateway:"+version, "--oci-layout", dir)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("hack/image: %v\n%s", err, out)
	}
	return nil
}

var (
	bothPlatformsOnce sync.Once
	bothPlatformsDir  string
	bothPlatformsErr  error
)

// bothPlatforms is hack/image's layout for linux/amd64 and linux/arm64,
// built once per test run (each build links both binaries for both
// architectures) and shared by the tests that read it.
func bothPlatforms(t *testing.T) string {
	t.Helper()
	bothPlatformsOnce.Do(func() {
		bothPlatformsDir = filepath.Join(scratchDir, "layout-both-platforms")
		bothPlatformsErr = runImageProgram(t, "linux/amd64,linux/arm64", bothPlatformsDir)
	})
	if bothPlatformsErr != nil {
		t.Fatal(bothPlatformsErr)
	}
	return bothPlatformsDir
}

// platformImage is the image for one platform in a layout written by
// hack/image (an index per tag, holding an image per platform).
func platformImage(t *testing.T, dir, arch string) v1.Image {
	t.Helper()
	outer, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := outer.IndexManifest()
	if err != nil || len(manifest.Manifests) != 1 {
		t.Fatalf("index.json: %v, %+v", err, manifest)
	}
	index, err := outer.ImageIndex(manifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	images, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range images.Manifests {
		if m.Platform != nil && m.Platform.OS == "linux" && m.Platform.Architecture == arch {
			img, err := index.Image(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("no linux/%s image in %+v", arch, images.Manifests)
	return nil
}

// layerFiles reads a layer's regular files: path -> content, and modes.
func layerFiles(t *testing.T, layer v1.Layer) (map[string][]byte, map[string]int64) {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files, modes := map[string][]byte{}, map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, modes
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimPrefix(h.Name, "/")] = data
		modes["/"+strings.TrimPrefix(h.Name, "/")] = h.Mode
	}
}

// TestImageProgramMatchesDockerfile: hack/image (go-containerregistry) puts
// in the image exactly the files the Dockerfile's final stage copies — the
// same paths, the LICENSE, and binaries equal byte for byte to those of the
// Dockerfile's own build command — with its USER, ENTRYPOINT and LABELs,
// and defaults to its base image.
func TestImageProgramMatchesDockerfile(t *testing.T) {
	_, stages := readDockerfile(t)
	final := stages[1]
	version := readChartMeta(t).AppVersion
	binaries := imageBinaries(t)

	// What the Dockerfile copies into the final stage, and from where.
	want := map[string][]byte{}
	var user, entrypoint string
	labels := map[string]string{}
	for _, in := range final.instructions {
		switch in.keyword {
		case "COPY":
			fields := strings.Fields(in.args)
			src, dst := fields[len(fields)-2], fields[len(fields)-1]
			from := filepath.Join(repoRoot, src)
			if slices.Contains(fields, "--from=build") {
				from = filepath.Join(binaries, strings.TrimPrefix(src, "/out/"))
			}
			data, err := os.ReadFile(from)
			if err != nil {
				t.Fatalf("COPY %s: %v", in.args, err)
			}
			want[dst] = data
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "LABEL":
			for _, m := range regexp.MustCompile(`([\w.]+)="([^"]*)"`).FindAllStringSubmatch(in.args, -1) {
				labels[m[1]] = strings.ReplaceAll(m[2], "${VERSION}", version)
			}
		}
	}
	if len(want) != 3 || len(labels) == 0 {
		t.Fatalf("the Dockerfile's final stage copies %d files, labels %v", len(want), labels)
	}

	img := platformImage(t, bothPlatforms(t), runtime.GOARCH)
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers: %v, %d; want the base and the application layer", err, len(layers))
	}
	got, modes := layerFiles(t, layers[1])
	var gotPaths, wantPaths []string
	for p := range got {
		gotPaths = append(gotPaths, p)
	}
	for p := range want {
		wantPaths = append(wantPaths, p)
	}
	slices.Sort(gotPaths)
	slices.Sort(wantPaths)
	if !slices.Equal(gotPaths, wantPaths) {
		t.Fatalf("hack/image's layer holds %v, the Dockerfile copies %v", gotPaths, wantPaths)
	}
	for p, data := range want {
		if !bytes.Equal(got[p], data) {
			t.Errorf("%s differs from the Dockerfile's (%d bytes, want %d)", p, len(got[p]), len(data))
		}
	}
	if modes["/manager"]&0o111 == 0 || modes["/voice-server"]&0o111 == 0 {
		t.Errorf("binaries not executable: %o %o", modes["/manager"], modes["/voice-server"])
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var wantEntrypoint []string
	if err := json.Unmarshal([]byte(entrypoint), &wantEntrypoint); err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != user || !slices.Equal(cf.Config.Entrypoint, wantEntrypoint) || cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("config: user %q entrypoint %v %s/%s; the Dockerfile says %q %v", cf.Config.User, cf.Config.Entrypoint, cf.OS, cf.Architecture, user, wantEntrypoint)
	}
	for k, v := range labels {
		if cf.Config.Labels[k] != v {
			t.Errorf("label %s = %q, the Dockerfile's is %q", k, cf.Config.Labels[k], v)
		}
	}
	// The scratch base holds the nonroot user that USER names.
	base, _ := layerFiles(t, layers[0])
	if !strings.Contains(string(base["/etc/passwd"]), "nonroot:x:65532:65532:") {
		t.Errorf("the scratch base's /etc/passwd: %q", base["/etc/passwd"])
	}

	out, _ := exec.Command(imageProgram(t), "-h").CombinedOutput()
	if !strings.Contains(string(out), `(default "`+final.from+`")`) {
		t.Errorf("hack/image's default base is not the Dockerfile's %s:\n%s", final.from, out)
	}
}

// TestImageIsReproducibleForBothPlatforms: two builds of linux/amd64 and
// linux/arm64 from the same sources give the same index, byte for byte; the
// arm64 image carries arm64 binaries.
func TestImageIsReproducibleForBothPlatforms(t *testing.T) {
	// The shared build and a second one: reproducible means the two agree.
	first := bothPlatforms(t)
	second := buildImage(t, "linux/amd64,linux/arm64")
	a, err := os.ReadFile(filepath.Join(first, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(second, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two builds differ:\n%s\n%s", a, b)
	}
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		img := platformImage(t, first, arch)
		cf, err := img.ConfigFile()
		if err != nil || cf.Architecture != arch {
			t.Fatalf("%s: config %v %+v", arch, err, cf)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		files, _ := layerFiles(t, layers[len(layers)-1])
		f, err := elf.NewFile(bytes.NewReader(files["/voice-server"]))
		if err != nil {
			t.Fatalf("%s voice-server: %v", arch, err)
		}
		if f.Machine != machine {
			t.Errorf("the %s image's voice-server is built for %v", arch, f.Machine)
		}
	}
}
