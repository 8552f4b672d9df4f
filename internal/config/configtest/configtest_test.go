package configtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestStageExampleIsStrict(t *testing.T) {
	src := filepath.Join(t.TempDir(), "x.yaml")
	body := "a: {key_file: /etc/sundown/k/id, known_hosts_file: \"/etc/sundown/kh\"}\n" +
		"password_file: '/etc/sundown/p' # password_file: /etc/sundown/commented\n" +
		"ca_file: /etc/sundwn/typo\n"
	if err := os.WriteFile(src, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, data := StageExample(t, src)
	got := string(data)
	m := regexp.MustCompile(`key_file: (\S+)/k/id,`).FindStringSubmatch(got)
	if m == nil || strings.Contains(got, exampleDir) {
		t.Fatalf("not rewritten:\n%s", got)
	}
	for _, f := range []string{"k/id", "kh", "p"} {
		if _, err := os.Stat(filepath.Join(m[1], f)); err != nil {
			t.Errorf("not created: %v", err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(m[1], "p")); strings.TrimSpace(string(b)) == "" {
		t.Error("a secret file was left empty")
	}
	if _, err := os.Stat(filepath.Join(m[1], "commented")); err == nil {
		t.Error("a path named in a comment was created")
	}
	if !strings.Contains(got, "ca_file: /etc/sundwn/typo") {
		t.Errorf("a path outside %s was changed:\n%s", exampleDir, got)
	}
}
