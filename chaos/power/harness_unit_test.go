package power

import (
	"slices"
	"testing"
)

// The helpers every scenario relies on, checked without peers.

func TestSecretScannerFindsPlantedSecrets(t *testing.T) {
	s := newSecretScanner(nutPassword, apiToken)
	out := []byte("clean line\n" +
		`{"level":"DEBUG","msg":"send","line":"PASSWORD ` + nutPassword + `"}` + "\n" +
		"Authorization: Bearer " + apiToken + "\n")
	hits := s.scan("probe", out)
	want := []string{"secret #1 in probe, line 2", "secret #2 in probe, line 3"}
	if !slices.Equal(hits, want) {
		t.Errorf("hits %q, want %q", hits, want)
	}
	if got := s.scan("clean", []byte("nutpw-Chaos and apitok-Chaos alone are not the secrets\n")); len(got) != 0 {
		t.Errorf("hits in a clean output: %q", got)
	}
	sources, n, all := s.summary()
	if len(sources) != 2 || n == 0 || len(all) != 2 {
		t.Errorf("summary: %d sources, %d bytes, %d hits; want 2, >0, 2", len(sources), n, len(all))
	}
}

func TestParseLogLineKeepsRepeatedKeys(t *testing.T) {
	l, ok := parseLogLine([]byte(`{"time":"2026-01-02T03:04:05.5Z","level":"INFO","msg":"power event","ups":"rack","event":"ONBATT","msg":"UPS rack on battery"}`))
	if !ok {
		t.Fatal("not parsed")
	}
	if l.Msg != "power event" || l.str("ups") != "rack" || l.eventText() != "UPS rack on battery" || l.Time.Nanosecond() != 5e8 {
		t.Errorf("parsed %+v (event text %q)", l, l.eventText())
	}
	if _, dup := l.dup["msg"]; !dup || len(l.dup) != 1 {
		t.Errorf("repeated keys %v, want msg only", l.dup)
	}
	for _, bad := range []string{`{"msg":`, `[1,2]`, `{"msg" "x"}`, ``} {
		if _, ok := parseLogLine([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
