// Package manpage writes sundown's man pages (section 1, one per command)
// from the cobra command tree, with cobra's doc generator.
package manpage

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra/doc"

	"github.com/sundown-ups/sundown/internal/cli"
)

// Generate writes sundown.1, sundown-run.1, … into dir for version; date
// goes in the pages' footer (use the commit's date for reproducible pages).
func Generate(dir, version string, date time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	root := cli.NewRoot(io.Discard, io.Discard)
	root.DisableAutoGenTag = true // no generation time in the pages
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	date = date.UTC()
	hdr := &doc.GenManHeader{
		Section: "1",
		Date:    &date,
		Source:  "sundown " + version,
		Manual:  "sundown manual",
	}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	return nil
}
