package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// summary describes a sample of durations.
type summary struct {
	N      int
	Median time.Duration
	P95    time.Duration // nearest rank: the smallest value with at least 95 % of the sample at or below it
	Min    time.Duration
	Max    time.Duration
	Mean   time.Duration
}

// summarize returns the summary of xs (zero for an empty sample). The
// median of an even sample is the mean of its two middle values.
func summarize(xs []time.Duration) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	var total time.Duration
	for _, x := range s {
		total += x
	}
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.95 * float64(n)))
	return summary{
		N: n, Median: med, P95: s[max(rank, 1)-1], Min: s[0], Max: s[n-1],
		Mean: total / time.Duration(n),
	}
}

// ms formats d in milliseconds, e.g. "312 ms".
func ms(d time.Duration) string {
	return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
}

// markers returns the opening and closing markers of section name.
func markers(name string) (open, close string) {
	return "<!-- bench:" + name + " -->", "<!-- /bench:" + name + " -->"
}

// replaceSection returns doc with the text between the markers of section
// name replaced by body. A section that is not in doc yet is appended. It
// fails when the markers are there but broken (a closing marker before the
// opening one, or one without the other, or either twice), rather than
// guessing what to overwrite.
func replaceSection(doc, name, body string) (string, error) {
	open, close := markers(name)
	no, nc := strings.Count(doc, open), strings.Count(doc, close)
	block := open + "\n" + strings.TrimRight(body, "\n") + "\n" + close
	switch {
	case no == 0 && nc == 0:
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if doc != "" {
			doc += "\n"
		}
		return doc + block + "\n", nil
	case no != 1 || nc != 1:
		return "", fmt.Errorf("section %s: want one %q and one %q, found %d and %d", name, open, close, no, nc)
	}
	i, j := strings.Index(doc, open), strings.Index(doc, close)
	if j < i {
		return "", fmt.Errorf("section %s: %q comes before %q", name, close, open)
	}
	return doc[:i] + block + doc[j+len(close):], nil
}

// writeSection replaces section name of the Markdown file at path with body
// (see replaceSection), creating the file with header first if it does not
// exist. The file is replaced atomically (temp file + rename).
func writeSection(path, header, name, body string) error {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		b = []byte(header)
	case err != nil:
		return fmt.Errorf("write section %s: %w", name, err)
	}
	doc, err := replaceSection(string(b), name, body)
	if err != nil {
		return fmt.Errorf("write section %s of %s: %w", name, path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".benchmarks-*.md")
	if err != nil {
		return fmt.Errorf("write section %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.WriteString(doc); err != nil {
		tmp.Close()
		return fmt.Errorf("write section %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write section %s: %w", name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write section %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write section %s: %w", name, err)
	}
	return nil
}

// verdict returns "met" or "MISSED" for a target.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**MISSED**"
}
