package packaging_test

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestChartVersionIsTheAppVersion: Chart.yaml's version is its appVersion
// without the "v", and `make chart` packages a release that way (the
// version helm push publishes); a VERSION that is no release tag (a
// commit, a commit past a tag, a dirty tree) is refused with a message
// that says so, and packages nothing.
func TestChartVersionIsTheAppVersion(t *testing.T) {
	meta := readChartMeta(t)
	if meta.Version != strings.TrimPrefix(meta.AppVersion, "v") {
		t.Errorf("Chart.yaml: version %s, appVersion %s; the version is the appVersion without its v", meta.Version, meta.AppVersion)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	for version, want := range map[string]chartMeta{
		"v9.8.7":      {Name: "voicegateway-operator", Version: "9.8.7", AppVersion: "v9.8.7"},
		"v1.2.3-rc.1": {Name: "voicegateway-operator", Version: "1.2.3-rc.1", AppVersion: "v1.2.3-rc.1"},
	} {
		out := t.TempDir()
		cmd := exec.Command("make", "-s", "chart", "VERSION="+version, "CHART_OUT="+out)
		cmd.Dir = repoRoot
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make chart VERSION=%s: %v\n%s", version, err, msg)
		}
		got := packagedChart(t, filepath.Join(out, "voicegateway-operator-"+want.Version+".tgz"))
		if got != want {
			t.Errorf("make chart VERSION=%s packaged %+v, want %+v", version, got, want)
		}
	}
	for _, version := range []string{"7e4a3ce", "7e4a3ce-dirty", "v0.1.0-dirty", "v0.1.0-3-g7e4a3ce", "v0.1.0-3-g7e4a3ce-dirty", "dev", "0.1.0"} {
		out := t.TempDir()
		cmd := exec.Command("make", "-s", "chart", "VERSION="+version, "CHART_OUT="+out)
		cmd.Dir = repoRoot
		msg, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(msg), "VERSION="+version+" is not a release") {
			t.Errorf("make chart VERSION=%s: %v, want refused, saying it is not a release:\n%s", version, err, msg)
		}
		if files, _ := os.ReadDir(out); len(files) != 0 {
			t.Errorf("make chart VERSION=%s packaged %v", version, files)
		}
	}
}

// packagedChart reads Chart.yaml out of a packaged chart.
func packagedChart(t *testing.T, path string) chartMeta {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s holds no Chart.yaml", path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "voicegateway-operator/Chart.yaml" {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		var meta chartMeta
		if err := yaml.Unmarshal(data, &meta); err != nil {
			t.Fatal(err)
		}
		return meta
	}
}
