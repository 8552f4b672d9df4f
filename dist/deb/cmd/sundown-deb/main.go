// Command sundown-deb builds sundown's Debian package from files built
// beforehand (see the Makefile's deb target):
//
//	sundown-deb -binary dist/build/sundown -version v1.2.3 -man dist/build/man \
//	  -completions dist/build/completions -out dist/build
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/sundown-ups/sundown/dist/deb/debpkg"
)

func main() {
	var o debpkg.Options
	root := flag.String("root", ".", "the sundown source tree (for dist/sundown.service and examples/)")
	man := flag.String("man", "", "folder of *.1 man pages (sundown-man's output)")
	comp := flag.String("completions", "", "folder with sundown.bash, _sundown (zsh) and sundown.fish")
	flag.StringVar(&o.Binary, "binary", "", "the sundown binary")
	flag.StringVar(&o.Version, "version", "dev", "sundown version")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "Debian architecture of the binary")
	flag.StringVar(&o.Out, "out", ".", "the .deb to write, or a folder")
	flag.Parse()

	o.Unit = filepath.Join(*root, "dist", "sundown.service")
	o.Config = filepath.Join(*root, "examples", "minimal.yaml")
	ex, err := filepath.Glob(filepath.Join(*root, "examples", "*.yaml"))
	if err != nil {
		fail(err)
	}
	o.Examples = ex
	if *man != "" {
		if o.ManPages, err = debpkg.ManPages(*man); err != nil {
			fail(err)
		}
	}
	if *comp != "" {
		o.Bash = filepath.Join(*comp, "sundown.bash")
		o.Zsh = filepath.Join(*comp, "_sundown")
		o.Fish = filepath.Join(*comp, "sundown.fish")
	}
	p, err := debpkg.Build(o)
	if err != nil {
		fail(err)
	}
	fmt.Println(p)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sundown-deb:", err)
	os.Exit(1)
}
