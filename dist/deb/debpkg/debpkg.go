// Package debpkg builds sundown's Debian package with nfpm: the binary,
// the systemd unit, the config as a conffile, man pages, shell completions
// and maintainer scripts that never start the service before the admin has
// configured it. It lives in its own module (dist/deb) so the packaging
// library's dependencies stay out of the daemon's.
package debpkg

import (
	"bytes"
	"compress/gzip"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

//go:embed scripts/postinst scripts/prerm scripts/postrm
var scripts embed.FS

// Paths inside the package.
const (
	BinaryPath     = "/usr/bin/sundown"
	UnitPath       = "/lib/systemd/system/sundown.service"
	ConfigPath     = "/etc/sundown/sundown.yaml"
	ManDir         = "/usr/share/man/man1"
	ExamplesDir    = "/usr/share/doc/sundown/examples"
	BashCompletion = "/usr/share/bash-completion/completions/sundown"
	ZshCompletion  = "/usr/share/zsh/vendor-completions/_sundown"
	FishCompletion = "/usr/share/fish/vendor_completions.d/sundown.fish"
)

// Options say what goes into the package. Paths are on the build machine.
type Options struct {
	Version string // sundown's version: v1.2.3, or what `git describe` prints
	Arch    string // Debian architecture; runtime.GOARCH when empty
	Binary  string // the sundown binary, built for Arch
	Unit    string // the systemd unit (dist/sundown.service)
	Config  string // installed as the conffile ConfigPath (examples/minimal.yaml)
	// Examples are installed under ExamplesDir.
	Examples []string
	// ManPages are *.1 files, compressed into ManDir.
	ManPages []string
	// Completion scripts; empty ones are left out.
	Bash, Zsh, Fish string
	// MTime stamps every file (reproducible builds); SOURCE_DATE_EPOCH or
	// now when zero.
	MTime time.Time
	// Out is the .deb to write, or a folder for the conventional name.
	Out string
}

// Build writes the package and returns its path.
func Build(o Options) (string, error) {
	for name, p := range map[string]string{"binary": o.Binary, "unit": o.Unit, "config": o.Config} {
		if p == "" {
			return "", fmt.Errorf("build deb: no %s given", name)
		}
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	tmp, err := os.MkdirTemp("", "sundown-deb-")
	if err != nil {
		return "", fmt.Errorf("build deb: %w", err)
	}
	defer os.RemoveAll(tmp)

	contents := files.Contents{
		file(o.Binary, BinaryPath, 0o755),
		file(o.Unit, UnitPath, 0o644),
		{Source: o.Config, Destination: ConfigPath, Type: files.TypeConfigNoReplace, FileInfo: &files.ContentFileInfo{Mode: 0o640}},
		{Destination: "/etc/sundown", Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o755}},
	}
	for _, ex := range o.Examples {
		contents = append(contents, file(ex, ExamplesDir+"/"+filepath.Base(ex), 0o644))
	}
	for _, m := range o.ManPages {
		gz, err := gzipFile(m, tmp)
		if err != nil {
			return "", fmt.Errorf("build deb: man page: %w", err)
		}
		contents = append(contents, file(gz, ManDir+"/"+filepath.Base(gz), 0o644))
	}
	for src, dst := range map[string]string{o.Bash: BashCompletion, o.Zsh: ZshCompletion, o.Fish: FishCompletion} {
		if src != "" {
			contents = append(contents, file(src, dst, 0o644))
		}
	}
	sort.Sort(contents)

	sc := map[string]string{}
	for _, name := range []string{"postinst", "prerm", "postrm"} {
		b, err := fs.ReadFile(scripts, "scripts/"+name)
		if err != nil {
			return "", fmt.Errorf("build deb: %w", err)
		}
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			return "", fmt.Errorf("build deb: %w", err)
		}
		sc[name] = p
	}

	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          "sundown",
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       DebVersion(o.Version),
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "sundown maintainers <sundown@users.noreply.github.com>",
		Homepage:      "https://github.com/sundown-ups/sundown",
		License:       "Apache-2.0",
		Description: "ordered shutdown of a virtualized site on power failure\n" +
			"sundown watches UPSes (NUT upsd, apcupsd) and, when the power fails, shuts\n" +
			"VMs and hosts (vSphere, ESXi, libvirt, Proxmox, SSH) down in dependency\n" +
			"order within the battery's runtime, then brings them back.",
		MTime: o.MTime,
		Overridables: nfpm.Overridables{
			Contents:   contents,
			Recommends: []string{"nut-client"},
			Scripts: nfpm.Scripts{
				PostInstall: sc["postinst"],
				PreRemove:   sc["prerm"],
				PostRemove:  sc["postrm"],
			},
			Deb: nfpm.Deb{Compression: "xz"},
		},
	})
	out := o.Out
	if out == "" {
		out = "."
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		out = filepath.Join(out, deb.Default.ConventionalFileName(info))
	}
	var buf bytes.Buffer
	if err := deb.Default.Package(info, &buf); err != nil {
		return "", fmt.Errorf("build deb: %w", err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("build deb: %w", err)
	}
	return out, nil
}

func file(src, dst string, mode os.FileMode) *files.Content {
	return &files.Content{Source: src, Destination: dst, Type: files.TypeFile, FileInfo: &files.ContentFileInfo{Mode: mode}}
}

// gzipFile compresses src into dir as NAME.gz without a name or time in
// the header (reproducible, as Debian policy wants for man pages).
func gzipFile(src, dir string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := zw.Write(b); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(src)+".gz")
	return dst, os.WriteFile(dst, buf.Bytes(), 0o644)
}

var (
	semverRE   = regexp.MustCompile(`^v?(\d+\.\d+\.\d+)(?:-(\d+)-g([0-9a-f]+))?(-dirty)?$`)
	preRE      = regexp.MustCompile(`^v?(\d+\.\d+\.\d+)-([0-9A-Za-z.]+)$`)
	notDebChar = regexp.MustCompile(`[^0-9A-Za-z.+~]+`)
)

// DebVersion turns a sundown version into a Debian one that sorts right:
// v1.2.3 → 1.2.3; v1.2.3-4-gabc (git describe) → 1.2.3+git4.abc;
// v1.2.0-rc1 → 1.2.0~rc1; anything else ("dev", a bare commit) →
// 0.0.0~VERSION, which sorts before every release.
func DebVersion(v string) string {
	if m := semverRE.FindStringSubmatch(v); m != nil {
		out := m[1]
		if m[2] != "" {
			out += "+git" + m[2] + "." + m[3]
		}
		if m[4] != "" {
			out += "+dirty"
		}
		return out
	}
	if m := preRE.FindStringSubmatch(v); m != nil {
		return m[1] + "~" + m[2]
	}
	s := strings.Trim(notDebChar.ReplaceAllString(v, "."), ".")
	if s == "" {
		s = "unknown"
	}
	return "0.0.0~" + s
}

// ErrNoManPages is returned by ManPages when a folder holds none.
var ErrNoManPages = errors.New("no man pages (*.1)")

// ManPages lists the *.1 files of dir.
func ManPages(dir string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoManPages)
	}
	sort.Strings(m)
	return m, nil
}
