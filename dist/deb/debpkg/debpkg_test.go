package debpkg_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sundown-ups/sundown/dist/deb/debpkg"
	"github.com/sundown-ups/sundown/dist/deb/manpage"
	"github.com/sundown-ups/sundown/internal/peer"
)

// repo is the sundown source tree this module lives in.
const repo = "../../.."

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":              "1.2.3",
		"1.2.3":               "1.2.3",
		"v1.2.3-4-gabc1234":   "1.2.3+git4.abc1234",
		"v1.2.3-dirty":        "1.2.3+dirty",
		"v1.2.3-4-gabc-dirty": "1.2.3+git4.abc+dirty",
		"v1.3.0-rc1":          "1.3.0~rc1",
		"dev":                 "0.0.0~dev",
		"80d6804-dirty":       "0.0.0~80d6804.dirty",
		"":                    "0.0.0~unknown",
		"feature/x y":         "0.0.0~feature.x.y",
	} {
		if got := debpkg.DebVersion(in); got != want {
			t.Errorf("DebVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPackage builds sundown as `make deb` does, packages it, and inspects
// the .deb with dpkg-deb: files, modes, conffile, control fields, scripts,
// and that the packaged binary runs and knows its version.
func TestPackage(t *testing.T) {
	dpkgDeb := peer.NeedBinary(t, "/usr/bin/dpkg-deb", "apt-get install -y dpkg")
	dir := t.TempDir()
	const version = "v9.8.7"

	bin := filepath.Join(dir, "sundown")
	build := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -X github.com/sundown-ups/sundown/internal/cli.Version="+version,
		"-o", bin, "./cmd/sundown")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	comp := map[string]string{}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, err := exec.Command(bin, "completion", sh).Output()
		if err != nil || !bytes.Contains(out, []byte("sundown")) {
			t.Fatalf("sundown completion %s: %v (%d bytes)", sh, err, len(out))
		}
		p := filepath.Join(dir, "completion."+sh)
		if err := os.WriteFile(p, out, 0o644); err != nil {
			t.Fatal(err)
		}
		comp[sh] = p
	}

	manDir := filepath.Join(dir, "man")
	if err := manpage.Generate(manDir, version, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	pages, err := debpkg.ManPages(manDir)
	if err != nil {
		t.Fatal(err)
	}

	examples, _ := filepath.Glob(filepath.Join(repo, "examples", "*.yaml"))
	opts := debpkg.Options{
		Version: version, Arch: "amd64", Binary: bin,
		Unit:     filepath.Join(repo, "dist", "sundown.service"),
		Config:   filepath.Join(repo, "examples", "minimal.yaml"),
		Examples: examples, ManPages: pages,
		Bash: comp["bash"], Zsh: comp["zsh"], Fish: comp["fish"],
		MTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Out:   dir,
	}
	deb, err := debpkg.Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(deb) != "sundown_9.8.7_amd64.deb" {
		t.Errorf("package file %s, want sundown_9.8.7_amd64.deb", filepath.Base(deb))
	}

	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(dpkgDeb, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	contents := run("-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root", // the binary
		" ./usr/bin/sundown\n",
		" ./lib/systemd/system/sundown.service\n",
		"-rw-r----- root/root",
		" ./etc/sundown/sundown.yaml\n",
		" ./usr/share/man/man1/sundown.1.gz\n",
		" ./usr/share/man/man1/sundown-run.1.gz\n",
		" ./usr/share/man/man1/sundown-completion.1.gz\n",
		" ./usr/share/bash-completion/completions/sundown\n",
		" ./usr/share/zsh/vendor-completions/_sundown\n",
		" ./usr/share/fish/vendor_completions.d/sundown.fish\n",
		" ./usr/share/doc/sundown/examples/vsphere.yaml\n",
		"2026-01-02 03:04",
	} {
		if !strings.Contains(contents, want) {
			t.Errorf("dpkg-deb -c lacks %q:\n%s", want, contents)
		}
	}
	for _, l := range strings.Split(contents, "\n") {
		if strings.HasSuffix(l, "./usr/bin/sundown") && !strings.HasPrefix(l, "-rwxr-xr-x root/root") {
			t.Errorf("binary entry %q: want -rwxr-xr-x root/root", l)
		}
		if strings.HasSuffix(l, "./etc/sundown/sundown.yaml") && !strings.HasPrefix(l, "-rw-r----- root/root") {
			t.Errorf("config entry %q: want -rw-r----- root/root", l)
		}
	}

	info := run("-I", deb)
	for _, want := range []string{"Package: sundown\n", "Version: 9.8.7\n", "Architecture: amd64\n", "Section: admin\n", " conffiles", " postinst", " prerm", " postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	if got := run("-I", deb, "conffiles"); got != "/etc/sundown/sundown.yaml\n" {
		t.Errorf("conffiles = %q, want only /etc/sundown/sundown.yaml", got)
	}
	checkPostinst(t, dir, run("-I", deb, "postinst"))

	root := filepath.Join(dir, "root")
	run("-x", deb, root)
	out, err := exec.Command(filepath.Join(root, "usr", "bin", "sundown"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), version) {
		t.Errorf("packaged sundown --version: %v %q, want %s", err, out, version)
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib", "systemd", "system", "sundown.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/sundown run -c /etc/sundown/sundown.yaml", "Restart=on-failure", "StateDirectory=sundown", "ConfigurationDirectory=sundown"} {
		if !bytes.Contains(unit, []byte(want+"\n")) {
			t.Errorf("unit lacks %q", want)
		}
	}

	// Same inputs, same bytes.
	opts.Out = filepath.Join(dir, "again.deb")
	again, err := debpkg.Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(deb)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("two builds from the same inputs differ: the package is not reproducible")
	}
	if runtime.GOARCH != "amd64" {
		t.Logf("built an amd64-labelled package on %s: fine for inspection only", runtime.GOARCH)
	}
}

func TestBuildNeedsInputs(t *testing.T) {
	if _, err := debpkg.Build(debpkg.Options{}); err == nil {
		t.Error("no inputs: want an error")
	}
	if _, err := debpkg.ManPages(t.TempDir()); err == nil {
		t.Error("empty man folder: want an error")
	}
}

// checkPostinst runs the package's postinst against a fake systemctl: a
// fresh install must neither enable nor start sundown (it would act on a
// config nobody wrote); an upgrade restarts it only if it was running.
func checkPostinst(t *testing.T, dir, script string) {
	t.Helper()
	fake := filepath.Join(dir, "fakebin")
	sysd := filepath.Join(dir, "run-systemd-system")
	for _, d := range []string{fake, sysd} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "systemctl.log")
	stub := "#!/bin/sh\necho \"$*\" >> " + log + "\n[ \"$1\" = is-active ] && exit \"${FAKE_ACTIVE:-3}\"\nexit 0\n"
	if err := os.WriteFile(filepath.Join(fake, "systemctl"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(script, "/run/systemd/system") {
		t.Fatalf("postinst does not check for systemd the usual way:\n%s", script)
	}
	p := filepath.Join(dir, "postinst")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(script, "/run/systemd/system", sysd)), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		active string
		calls  string
		stdout string
	}{
		{"fresh install", []string{"configure"}, "0", "daemon-reload\n", "not started"},
		{"upgrade, running", []string{"configure", "0.9.0"}, "0", "daemon-reload\nis-active --quiet sundown.service\ntry-restart sundown.service\n", ""},
		{"upgrade, stopped", []string{"configure", "0.9.0"}, "3", "daemon-reload\nis-active --quiet sundown.service\n", ""},
	} {
		_ = os.Remove(log)
		cmd := exec.Command("/bin/sh", append([]string{p}, tc.args...)...)
		cmd.Env = append(os.Environ(), "PATH="+fake+":/usr/bin:/bin", "FAKE_ACTIVE="+tc.active)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: postinst failed: %v\n%s", tc.name, err, out)
			continue
		}
		calls, _ := os.ReadFile(log)
		if string(calls) != tc.calls {
			t.Errorf("%s: systemctl calls %q, want %q", tc.name, calls, tc.calls)
		}
		if !strings.Contains(string(out), tc.stdout) {
			t.Errorf("%s: output %q lacks %q", tc.name, out, tc.stdout)
		}
	}
}
