// Package sundownbin builds the sundown binary for tests that run it as a
// separate process (the resume test, the chaos suites): from the module
// root, with the race detector when the calling test binary has it.
package sundownbin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
)

// Race reports whether the running test binary was built with -race.
func Race() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// Build builds ./cmd/sundown of the current module into dir/sundown and
// returns its path and how long the build took.
func Build(ctx context.Context, dir string) (string, time.Duration, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", 0, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", 0, fmt.Errorf("go env GOMOD: not in a module")
	}
	bin := filepath.Join(dir, "sundown")
	args := []string{"build", "-o", bin}
	if Race() {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/sundown")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(gomod)
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, time.Since(start), nil
}
