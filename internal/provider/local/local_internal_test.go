package local

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadUUID(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, content, want string
	}{
		{"upper case with newline", "4C4C4544-0042-3510-8052-B4C04F4E4B32\n", "4c4c4544-0042-3510-8052-b4c04f4e4b32"},
		{"lower case", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
		{"empty", "", ""},
		{"not settable", "Not Settable\n", ""},
		{"wrong dashes", "4c4c45440-042-3510-8052-b4c04f4e4b32", ""},
		{"not hex", "4c4c4544-0042-3510-8052-b4c04f4e4bzz", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := readUUID(path); got != tt.want {
				t.Errorf("readUUID(%q) = %q, want %q", tt.content, got, tt.want)
			}
		})
	}
	if got := readUUID(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("readUUID(missing file) = %q, want empty", got)
	}
}

func TestLastLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "(no output on stderr)",
		"\n  \n":                    "(no output on stderr)",
		"one":                       "one",
		"first\nsecond\n\n":         "second",
		"a\n  Access denied  \r\n ": "Access denied",
	} {
		if got := lastLine(in); got != want {
			t.Errorf("lastLine(%q) = %q, want %q", in, got, want)
		}
	}
}
