package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	d := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		want summary
	}{
		{"empty", nil, summary{}},
		{"one", d(7), summary{N: 1, Median: 7 * time.Millisecond, P95: 7 * time.Millisecond, Min: 7 * time.Millisecond, Max: 7 * time.Millisecond, Mean: 7 * time.Millisecond}},
		{"odd, unsorted", d(30, 10, 20), summary{N: 3, Median: 20 * time.Millisecond, P95: 30 * time.Millisecond, Min: 10 * time.Millisecond, Max: 30 * time.Millisecond, Mean: 20 * time.Millisecond}},
		{"even: mean of the middle two", d(40, 10, 30, 20), summary{N: 4, Median: 25 * time.Millisecond, P95: 40 * time.Millisecond, Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, Mean: 25 * time.Millisecond}},
		// 20 values 1..20: the 95th percentile by nearest rank is the 19th.
		{"twenty", d(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1),
			summary{N: 20, Median: 10500 * time.Microsecond, P95: 19 * time.Millisecond, Min: time.Millisecond, Max: 20 * time.Millisecond, Mean: 10500 * time.Microsecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if diff := cmp.Diff(tt.want, summarize(tt.in)); diff != "" {
				t.Errorf("summarize (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(in, tt.in); diff != "" {
				t.Errorf("summarize changed its input:\n%s", diff)
			}
		})
	}
}

func TestReplaceSection(t *testing.T) {
	tests := []struct {
		name, doc, want, err string
	}{
		{name: "empty doc", doc: "", want: "<!-- bench:x -->\nnew\n<!-- /bench:x -->\n"},
		{name: "appended", doc: "# T\n\ntext", want: "# T\n\ntext\n\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\n"},
		{name: "in place, rest kept",
			doc:  "# T\n<!-- bench:y -->\nY\n<!-- /bench:y -->\n<!-- bench:x -->\nold\nlines\n<!-- /bench:x -->\ntail\n",
			want: "# T\n<!-- bench:y -->\nY\n<!-- /bench:y -->\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\ntail\n"},
		{name: "similar name untouched",
			doc:  "<!-- bench:xy -->\nXY\n<!-- /bench:xy -->\n",
			want: "<!-- bench:xy -->\nXY\n<!-- /bench:xy -->\n\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\n"},
		{name: "closing only", doc: "a\n<!-- /bench:x -->\n", err: "want one"},
		{name: "twice", doc: "<!-- bench:x -->\n<!-- /bench:x -->\n<!-- bench:x -->\n<!-- /bench:x -->\n", err: "found 2 and 2"},
		{name: "reversed", doc: "<!-- /bench:x -->\n<!-- bench:x -->\n", err: "comes before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replaceSection(tt.doc, "x", "new\n\n")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q (doc %q)", err, tt.err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("replaceSection (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	if err := writeSection(path, "# Header\n", "a", "first"); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "# ignored once the file exists\n", "b", "bee"); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "", "a", "second"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Header\n\n<!-- bench:a -->\nsecond\n<!-- /bench:a -->\n\n<!-- bench:b -->\nbee\n<!-- /bench:b -->\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
	// A broken file is left as it is.
	broken := "<!-- /bench:a -->\n<!-- bench:a -->\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "", "a", "x"); err == nil {
		t.Fatal("writeSection on a broken file: no error")
	}
	if got, _ := os.ReadFile(path); string(got) != broken {
		t.Errorf("broken file changed to %q", got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".benchmarks-*")); len(left) != 0 {
		t.Errorf("temp files left behind: %v", left)
	}
}

func TestCPUTicks(t *testing.T) {
	// A real line of /proc/PID/stat, with a command name that holds ") (".
	stat := "4242 (we) (ird) S 1 4242 4242 0 -1 4194560 1234 0 0 0 317 52 0 0 20 0 9 0 123456 1290000000 4321 18446744073709551615\n"
	got, err := cpuTicks([]byte(stat))
	if err != nil || got != 369 {
		t.Errorf("cpuTicks = %d, %v; want 317+52 = 369", got, err)
	}
	for _, bad := range []string{"", "4242 noparen S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 ab 52 0"} {
		if _, err := cpuTicks([]byte(bad)); err == nil {
			t.Errorf("cpuTicks(%q): no error", bad)
		}
	}
	// And this process's own.
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if _, err := cpuTicks(b); err != nil {
		t.Errorf("own /proc/self/stat: %v", err)
	}
}

func TestMemKB(t *testing.T) {
	status := "Name:\tsundown\nVmPeak:\t  800000 kB\nVmHWM:\t   14336 kB\nVmRSS:\t   12288 kB\nThreads:\t7\n"
	rss, hwm, err := memKB([]byte(status))
	if err != nil || rss != 12288 || hwm != 14336 {
		t.Errorf("memKB = %d, %d, %v; want 12288, 14336", rss, hwm, err)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmRSS:\t12 MB\nVmHWM:\t1 kB\n", "VmRSS:\tx kB\nVmHWM:\t1 kB\n"} {
		if _, _, err := memKB([]byte(bad)); err == nil {
			t.Errorf("memKB(%q): no error", bad)
		}
	}
	if _, err := sampleProc(os.Getpid()); err != nil {
		t.Errorf("sampleProc(self): %v", err)
	}
}
