package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written with a unit in YAML: "90s", "2m",
// "1h30m", "500ms". A bare number other than 0 is refused, because "90"
// could mean seconds or minutes and a guess is the wrong answer here.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 90s or 2m")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ParseDuration parses a duration with a unit; "0" is accepted.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := fmt.Sscanf(s, "%f", new(float64)); nerr == nil && !strings.ContainsAny(s, "hmsuµn") {
			return 0, fmt.Errorf("duration %q needs a unit, e.g. %ss or %sm", s, s, s)
		}
		return 0, fmt.Errorf("invalid duration %q (want e.g. 90s, 2m, 1h30m)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return v, nil
}
