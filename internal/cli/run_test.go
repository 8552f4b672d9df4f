package cli

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// A plan that cannot be built stops the daemon at startup with every
// problem listed.
func TestRunRefusesAPlanWithErrors(t *testing.T) {
	path, _ := planFixture(t)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "depends_on: [app]", "depends_on: [ap, dbb]", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, _, errs := run(t, ctx, "run", "-c", path)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, errs)
	}
	for _, want := range []string{`unknown group or guest "ap"`, `unknown group or guest "dbb"`, "the shutdown plan has errors"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}
