// Package modules_test keeps the product's Go module to what the product is built from. The
// real Dragonfly scheduler the tests run is built from a module of its own (tools/), because its
// dependencies (databases, web frameworks, job queues: ~150 modules) would otherwise be resolved,
// downloaded and audited as the product's.
package modules_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return stdout.String()
}

// TestProductModuleGraphHasNoSchedulerDependencies: no module of the scheduler's own stack appears
// anywhere in the product's module graph (`go mod graph`, which lists requirements of
// requirements too, not only what is built).
func TestProductModuleGraphHasNoSchedulerDependencies(t *testing.T) {
	graph := goCmd(t, testenv.RepoRoot(), "mod", "graph")
	forbidden := []struct {
		match string // substring of a module path
		what  string
	}{
		{"d7y.io/dragonfly/v2@", "the Dragonfly scheduler's module; the ids we need are in scheduler-client/ids.go, the scheduler tool in tools/go.mod"},
		{"gorm", "the scheduler's database layer (gorm and its drivers)"},
		{"gin-gonic", "the manager's web framework"},
		{"machinery", "the scheduler's job queue"},
	}
	if !strings.Contains(graph, "github.com/dfnydus/dfnydus ") {
		t.Fatalf("go mod graph does not list the main module's requirements:\n%s", graph)
	}
	for _, f := range forbidden {
		for line := range strings.Lines(graph) {
			// "A B": module A requires module B.
			if strings.Contains(line, f.match) {
				t.Errorf("%s is in the module graph (%s): %s", f.match, f.what, strings.TrimSpace(line))
				break
			}
		}
	}
}

// TestModulesAreTidy: go.mod and go.sum of both modules are what `go mod tidy` makes them. For the
// tools module this is also the check that it still agrees with the product's: it replaces the
// product's module with this checkout (its tests compare our ids with the scheduler's), so a
// requirement raised in go.mod must be raised in tools/go.mod as well, or the tools module's
// tests no longer build. The fix is the command in the message.
func TestModulesAreTidy(t *testing.T) {
	for _, tc := range []struct {
		name, dir string
	}{
		{"product module", "."},
		{"tools module", "tools"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(testenv.RepoRoot(), tc.dir)
			var stdout, stderr bytes.Buffer
			cmd := exec.Command("go", "mod", "tidy", "-diff")
			cmd.Dir = dir
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Errorf("%s is not tidy (run: cd %s && go mod tidy): %v\n%s%s", tc.dir, tc.dir, err, stdout.String(), stderr.String())
			}
		})
	}
}

// TestToolsModuleBuildsTheScheduler: scripts/tools.sh builds bin/scheduler from the tools module.
func TestToolsModuleBuildsTheScheduler(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "tools")
	var mod struct{ Tool []struct{ Path string } }
	if err := json.Unmarshal([]byte(goCmd(t, dir, "mod", "edit", "-json")), &mod); err != nil {
		t.Fatalf("go mod edit -json in tools: %v", err)
	}
	if !slices.ContainsFunc(mod.Tool, func(tl struct{ Path string }) bool { return tl.Path == "d7y.io/dragonfly/v2/cmd/scheduler" }) {
		t.Errorf("tools/go.mod has no `tool d7y.io/dragonfly/v2/cmd/scheduler`; tools: %v", mod.Tool)
	}
}
