package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sundown-ups/sundown/internal/config"
)

func runImport(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := newImport(&out, &errb)
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&errb)
	cmd.SetErr(&errb)
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func TestImportUpsmonFile(t *testing.T) {
	dir := t.TempDir()
	out, errs, err := runImport(t, "", "--password-dir", dir, "../importer/testdata/upsmon-dualfed.conf")
	if err != nil {
		t.Fatalf("import: %v\n%s", err, errs)
	}
	for _, want := range []string{
		"upsmon-dualfed.conf: line 14: NOTIFYCMD: not imported",
		"upsmon-dualfed.conf: line 29: FINALDELAY: not supported",
		filepath.Join(dir, "rack.password") + "   (UPS rack)",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	for _, secret := range []string{"s3cret", "nas-Pa55w0rd"} {
		if strings.Contains(out+errs, secret) {
			t.Errorf("the password %q was printed", secret)
		}
	}
	for _, name := range []string{"rack", "ups"} {
		if err := os.WriteFile(filepath.Join(dir, name+".password"), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := config.Parse("stdout", []byte(out), func(string) string { return "" })
	if err != nil {
		t.Fatalf("the printed config does not load: %v\n%s", err, out)
	}
	if len(c.UPS) != 2 || c.UPS[0].NUT.Mode != "primary" {
		t.Errorf("UPSes: %+v", c.UPS)
	}
}

func TestImportESXiStdin(t *testing.T) {
	in := "Value of NutUpsName is ups@nut.lan\nValue of NutUser is esxi\nValue of NutPassword is Top-Secret-1\n"
	out, errs, err := runImport(t, in, "--from", "esxi", "-")
	if err != nil {
		t.Fatalf("import: %v\n%s", err, errs)
	}
	if !strings.Contains(out, "address: nut.lan:3493") || !strings.Contains(out, "password_file: /etc/sundown/ups.password") {
		t.Errorf("stdout:\n%s", out)
	}
	if strings.Contains(out+errs, "Top-Secret-1") {
		t.Error("the password was printed")
	}
}

func TestImportNothingIsUsageError(t *testing.T) {
	out, errs, err := runImport(t, "POLLFREQ 5\nMONITOR bad\n")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("err %v, want exit code 2", err)
	}
	if out != "" {
		t.Errorf("stdout should be empty, got %q", out)
	}
	if !strings.Contains(errs, "stdin: line 2: MONITOR:") || !strings.Contains(err.Error(), "no UPS found in stdin") {
		t.Errorf("stderr %q, err %v", errs, err)
	}
	if _, _, err := runImport(t, "", "/nonexistent/upsmon.conf"); err == nil {
		t.Error("missing file: want an error")
	}
}
