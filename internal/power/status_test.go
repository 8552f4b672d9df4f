package power

import (
	"slices"
	"testing"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		unknown []string
	}{
		{"OL", "OL", nil},
		{"OB LB", "OB LB", nil},
		{"LB OB", "OB LB", nil},
		{"ob lb", "OB LB", nil},
		{"  OL \t CHRG  ", "OL CHRG", nil},
		{"OL OL", "OL", nil},
		{"FSD OL", "FSD OL", nil},
		{"OL FSD", "FSD OL", nil},
		{"", "", nil},
		{"   ", "", nil},
		{"WAIT", "", []string{"WAIT"}},
		{"OL foo BAR Foo", "OL", []string{"BAR", "FOO"}},
		{"ALARM OB DISCHRG LB RB", "ALARM OB LB RB DISCHRG", nil},
		{"OL HB CHRG BYPASS CAL OFF OVER TRIM BOOST ECO", "OL HB CHRG BYPASS CAL OFF OVER TRIM BOOST ECO", nil},
		{"OBLB", "", []string{"OBLB"}},
	}
	for _, tt := range tests {
		st, unknown := ParseStatus(tt.in)
		if got := st.String(); got != tt.want {
			t.Errorf("ParseStatus(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if !slices.Equal(unknown, tt.unknown) {
			t.Errorf("ParseStatus(%q) unknown = %q, want %q", tt.in, unknown, tt.unknown)
		}
	}
}

func TestStatusSet(t *testing.T) {
	s := NewStatus(OB, LB)
	if !s.Has(OB) || !s.Has(LB) || s.Has(OL) {
		t.Fatalf("NewStatus(OB, LB) = %v", s)
	}
	if !s.Has(Flag(OB | LB)) {
		t.Error("Has(OB|LB) should need both flags")
	}
	if s.Has(Flag(OB | OL)) {
		t.Error("Has(OB|OL) with OL missing should be false")
	}
	if s.Has(0) {
		t.Error("Has(0) should be false")
	}
	if got := s.Without(LB).With(CHRG, OL).String(); got != "OL OB CHRG" {
		t.Errorf("With/Without = %q", got)
	}
	if !Status(0).IsZero() || s.IsZero() {
		t.Error("IsZero")
	}
	if got := s.Tokens(); !slices.Equal(got, []string{"OB", "LB"}) {
		t.Errorf("Tokens = %q", got)
	}
	if got := s.Flags(); !slices.Equal(got, []Flag{OB, LB}) {
		t.Errorf("Flags = %v", got)
	}
	if Status(0).Tokens() != nil {
		t.Error("empty Tokens should be nil")
	}
}

func TestAllFlags(t *testing.T) {
	want := []string{"ALARM", "FSD", "OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG",
		"BYPASS", "CAL", "OFF", "OVER", "TRIM", "BOOST", "ECO"}
	all := AllFlags()
	if len(all) != len(want) {
		t.Fatalf("AllFlags has %d flags, want %d", len(all), len(want))
	}
	var every Status
	for i, f := range all {
		if f.String() != want[i] {
			t.Errorf("AllFlags[%d] = %s, want %s", i, f, want[i])
		}
		g, ok := ParseFlag(want[i])
		if !ok || g != f {
			t.Errorf("ParseFlag(%s) = %v, %v", want[i], g, ok)
		}
		every = every.With(f)
	}
	st, unknown := ParseStatus(every.String())
	if st != every || unknown != nil {
		t.Errorf("round trip of %q = %v %v", every, st, unknown)
	}
	if _, ok := ParseFlag("WAIT"); ok {
		t.Error("ParseFlag(WAIT) should fail")
	}
	for _, f := range []Flag{0, OB | LB, flagEnd} {
		if got, want := f.String(), "Flag(0x"; len(got) < len(want) || got[:len(want)] != want {
			t.Errorf("Flag(%d).String() = %q", uint32(f), got)
		}
	}
}
