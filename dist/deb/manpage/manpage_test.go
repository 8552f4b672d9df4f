package manpage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	date := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	if err := Generate(dir, "v1.2.3", date); err != nil {
		t.Fatal(err)
	}
	for _, page := range []string{"sundown.1", "sundown-run.1", "sundown-check.1", "sundown-plan.1", "sundown-completion.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		s := string(b)
		title := strings.ToUpper(strings.TrimSuffix(page, ".1"))
		for _, want := range []string{`.TH "` + title + `" "1" "Jan 2026" "sundown v1.2.3" "sundown manual"`, ".SH NAME"} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %q:\n%s", page, want, s)
			}
		}
		if strings.Contains(s, "Auto generated") {
			t.Errorf("%s carries a generation stamp (not reproducible)", page)
		}
	}
}
