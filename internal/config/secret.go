package config

import (
	"fmt"
	"log/slog"
)

// Secret holds a password or token. It never prints its value: fmt, %v, %#v,
// JSON, YAML and slog all render it as "<secret>". Use Reveal where the value
// must be sent to a peer.
type Secret struct{ v string }

// NewSecret wraps a value (used by tests and by Load).
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the secret's value. Call it only at the point of use.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether no secret is set.
func (s Secret) IsZero() bool { return s.v == "" }

const redacted = "<secret>"

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// Format implements fmt.Formatter so no verb can reveal the value.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalYAML implements yaml.Marshaler.
func (s Secret) MarshalYAML() (any, error) { return redacted, nil }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
