// Package configtest helps tests load the example configs: the files an
// example names under /etc/sundown/ are staged in a temporary folder.
package configtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exampleDir is where the examples keep the files they name (keys, known
// hosts, CA certificates, secrets).
const exampleDir = "/etc/sundown/"

// exampleFiles maps each *_file key the loader checks to the content the
// test gives the file: the loader only stats keys, known_hosts files and CA
// files, and reads secrets, which must not be empty.
var exampleFiles = map[string]string{
	"key_file":         "",
	"known_hosts_file": "",
	"ca_file":          "",
	"password_file":    "example-secret\n",
	"secret_file":      "example-secret\n",
	"token_file":       "example-token\n",
}

// fileKeyRE finds "KEY_file: VALUE" in block and flow style, the value
// plain or quoted.
var fileKeyRE = regexp.MustCompile(`\b([a-z_]+_file)\s*:\s*(?:"([^"]*)"|'([^']*)'|([^\s,}\]]+))`)

// commentRE is a YAML comment: # at the start of a line or after white
// space. (A quoted " #" would be cut too: the file it names would then not
// be created and the example would fail, never pass by mistake.)
var commentRE = regexp.MustCompile(`(^|[ \t])#.*$`)

// StageExample copies the example at path for loading: every /etc/sundown/
// becomes a new temporary folder, and each file the example names there
// under a key of exampleFiles is created. Nothing else is touched, so a
// misspelt path or key still fails to load. It returns the staged copy's
// file name and data.
func StageExample(t testing.TB, path string) (string, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, line := range strings.Split(string(data), "\n") {
		for _, m := range fileKeyRE.FindAllStringSubmatch(commentRE.ReplaceAllString(line, ""), -1) {
			key, value := m[1], m[2]+m[3]+m[4]
			content, known := exampleFiles[key]
			if !known {
				t.Fatalf("%s: key %s is not one the test knows how to stage (add it to exampleFiles)", path, key)
			}
			rel, ok := strings.CutPrefix(value, exampleDir)
			if !ok {
				continue // not ours to create: it must exist as written
			}
			if !filepath.IsLocal(rel) || filepath.Clean(rel) != rel {
				t.Fatalf("%s: %s %q is not a plain path under %s", path, key, value, exampleDir)
			}
			f := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := []byte(strings.ReplaceAll(string(data), exampleDir, dir+string(filepath.Separator)))
	file := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return file, out
}
