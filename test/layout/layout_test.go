// Package layout checks the package map of docs/design.md against the
// module: every package is named there and nothing else, and the import
// rules the map states hold.
package layout

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

const module = "github.com/voicegateway/voicegateway"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// goPackage is what `go list -json` says of one package.
type goPackage struct {
	ImportPath  string
	Imports     []string
	TestImports []string
}

// listPackages lists the module's packages, with the e2e tag so that the
// cluster driver counts too.
func listPackages(t *testing.T, root string) map[string]goPackage {
	t.Helper()
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-tags", "e2e", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = p
	}
	return pkgs
}

// mappedPackages reads the first column of the package map's table.
func mappedPackages(t *testing.T, root string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([a-z0-9_./-]+)` \\|")
	var names []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Package map":
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case in:
			if m := row.FindStringSubmatch(line); m != nil {
				names = append(names, m[1])
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("docs/design.md has no package map")
	}
	return names
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestPackageMapMatchesTheModule(t *testing.T) {
	root := repoRoot(t)
	pkgs := listPackages(t, root)
	mapped := mappedPackages(t, root)
	for _, name := range mapped {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("docs/design.md names package %s, which does not exist", name)
		}
	}
	for name := range pkgs {
		if !slices.Contains(mapped, name) {
			t.Errorf("package %s is not in the package map of docs/design.md: say what it owns and who may import it", name)
		}
	}
}

// TestImportRules checks the rules the package map states.
func TestImportRules(t *testing.T) {
	pkgs := listPackages(t, repoRoot(t))
	own := func(imports []string) []string {
		var out []string
		for _, imp := range imports {
			if rest, ok := strings.CutPrefix(imp, module+"/"); ok {
				out = append(out, rest)
			}
		}
		return out
	}
	testOnly := []string{"internal/testkit", "internal/testbin", "server/session/sessiontest",
		"server/backend/backendtest", "server/backend/openai/openaitest"}
	for name, p := range pkgs {
		for _, imp := range own(p.Imports) {
			switch {
			case strings.HasPrefix(name, "server/") && (strings.HasPrefix(imp, "controllers") || strings.HasPrefix(imp, "api/")):
				t.Errorf("%s imports the operator's %s: the server never depends on the operator", name, imp)
			case name == "server/admin/adminapi":
				t.Errorf("server/admin/adminapi imports %s: the contract is standard library only", imp)
			case slices.Contains(testOnly, imp) && !isTestKit(name, testOnly) && !strings.HasPrefix(name, "test/") &&
				name != "internal/testenv" && !(name == "cmd/vgload" && imp == "internal/testkit"):
				t.Errorf("%s (not a test) imports the test kit %s", name, imp)
			}
		}
		if name == "controllers" {
			for _, imp := range own(p.Imports) {
				if strings.HasPrefix(imp, "server/") && !slices.Contains([]string{"server/config", "server/fleet", "server/admin/adminapi"}, imp) {
					t.Errorf("controllers imports %s: the operator imports of the server only what both sides agree on", imp)
				}
			}
		}
	}
}

func isTestKit(name string, kits []string) bool { return slices.Contains(kits, name) }
