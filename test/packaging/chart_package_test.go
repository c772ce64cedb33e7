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
// version helm push publishes), and a non-release VERSION as Chart.yaml's.
func TestChartVersionIsTheAppVersion(t *testing.T) {
	meta := readChartMeta(t)
	if meta.Version != strings.TrimPrefix(meta.AppVersion, "v") {
		t.Errorf("Chart.yaml: version %s, appVersion %s; the version is the appVersion without its v", meta.Version, meta.AppVersion)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	for version, want := range map[string]chartMeta{
		"v9.8.7":        {Name: "voicegateway-operator", Version: "9.8.7", AppVersion: "v9.8.7"},
		"7e4a3ce-dirty": {Name: "voicegateway-operator", Version: meta.Version, AppVersion: meta.AppVersion},
		"v1.2.3-rc.1":   {Name: "voicegateway-operator", Version: "1.2.3-rc.1", AppVersion: "v1.2.3-rc.1"},
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
