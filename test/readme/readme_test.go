// Package readme_test keeps the README's two commands true: `make demo` installs only what
// scripts/demo.sh runs, and the script, run on a checkout where no test tool was ever built,
// converts an image, mounts it lazily, runs a program from the mount and says what was fetched;
// `make test` is what CI runs.
package readme_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// readmeCommands are the commands of the README's first sh block (a line's text before "#";
// continuation lines, which start with blanks, are comments).
func readmeCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "```sh\n")
	if !ok {
		t.Fatal("README.md has no sh block")
	}
	block, _, _ = strings.Cut(block, "```")
	var cmds []string
	for line := range strings.Lines(block) {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		cmd, _, _ := strings.Cut(line, "#")
		cmds = append(cmds, strings.TrimSpace(cmd))
	}
	return cmds
}

// TestCIRunsTheREADMEsTestCommand: .ci/run's one command is the README's second, the one the
// README says CI runs.
func TestCIRunsTheREADMEsTestCommand(t *testing.T) {
	cmds := readmeCommands(t)
	if len(cmds) != 2 || cmds[0] != "make demo" {
		t.Fatalf("README's first block has commands %q, want make demo and the test command", cmds)
	}
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	var ci []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		// The shell's own setup is not a command of the project's.
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "set ") || strings.HasPrefix(line, "cd ") {
			continue
		}
		ci = append(ci, line)
	}
	if len(ci) != 1 || ci[0] != cmds[1] {
		t.Errorf(".ci/run runs %q, want exactly the README's test command %q", ci, cmds[1])
	}
}
