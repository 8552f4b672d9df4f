package nut

import (
	"errors"
)

// The word syntax is NUT's parseconf (common/parseconf.c), which upsd uses
// to read commands and upsclient uses to read replies:
//
//   - words are separated by white space (space, \t, \v, \f, \r, \n);
//   - a word that starts with " runs to the next unescaped "; inside it
//     a backslash takes the next byte literally (\" \\ \#). upsd 2.8.0
//     refuses an unescaped # inside quotes (it logs "Unbalanced word due
//     to unescaped # in quotes" and never answers the line), so Quote
//     escapes it; SplitLine accepts it, to read replies leniently;
//   - outside quotes a backslash also takes the next byte literally, and a
//     " inside an unquoted word is an ordinary byte;
//   - # outside quotes starts a comment that runs to the end of the line;
//   - = outside quotes is a word of its own ("a=b" is three words).
//
// Unlike parseconf, which silently accepts them, an unterminated quote and a
// trailing lone backslash are errors here: a server never sends them, so a
// line that has them is malformed.

var (
	errUnterminatedQuote = errors.New("unterminated quoted word")
	errTrailingBackslash = errors.New("backslash at end of line")
)

// tokenizer splits lines into words without allocating per word: the
// decoded bytes of all words are stored back to back in buf, and word i is
// buf[ends[i-1]:ends[i]].
type tokenizer struct {
	buf  []byte
	ends []int
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func (t *tokenizer) split(line []byte) error {
	t.buf = t.buf[:0]
	t.ends = t.ends[:0]
	n := len(line)
	for i := 0; i < n; {
		c := line[i]
		switch {
		case isSpace(c):
			i++
		case c == '#':
			return nil
		case c == '=':
			t.buf = append(t.buf, '=')
			t.ends = append(t.ends, len(t.buf))
			i++
		case c == '"':
			i++
			for {
				if i >= n {
					return errUnterminatedQuote
				}
				c = line[i]
				if c == '"' {
					i++
					break
				}
				if c == '\\' {
					if i+1 >= n {
						return errUnterminatedQuote
					}
					t.buf = append(t.buf, line[i+1])
					i += 2
					continue
				}
				t.buf = append(t.buf, c)
				i++
			}
			t.ends = append(t.ends, len(t.buf))
		default:
		word:
			for i < n {
				c = line[i]
				switch {
				case isSpace(c), c == '#', c == '=':
					break word
				case c == '\\':
					if i+1 >= n {
						return errTrailingBackslash
					}
					t.buf = append(t.buf, line[i+1])
					i += 2
				default:
					t.buf = append(t.buf, c)
					i++
				}
			}
			t.ends = append(t.ends, len(t.buf))
		}
	}
	return nil
}

func (t *tokenizer) n() int { return len(t.ends) }

func (t *tokenizer) word(i int) []byte {
	start := 0
	if i > 0 {
		start = t.ends[i-1]
	}
	return t.buf[start:t.ends[i]]
}

// is reports whether word i equals s exactly (no allocation).
func (t *tokenizer) is(i int, s string) bool {
	return i < t.n() && string(t.word(i)) == s
}

// isFold reports whether word i equals s, ASCII case-insensitively, the
// way upsd compares UPS and variable names (strcasecmp).
func (t *tokenizer) isFold(i int, s string) bool {
	return i < t.n() && equalFold(t.word(i), s)
}

func (t *tokenizer) words() []string {
	out := make([]string, t.n())
	for i := range out {
		out[i] = string(t.word(i))
	}
	return out
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// SplitLine splits one protocol line (without its line ending) into words
// the way NUT's parser does: white space separates words, "..." groups a
// word, a backslash escapes the next byte (\" and \\), # outside quotes
// starts a comment, = outside quotes is a word of its own. An unterminated
// quote or a trailing lone backslash is an error.
//
// For every string s, SplitLine(Quote(s)) returns exactly [s].
func SplitLine(line string) ([]string, error) {
	var t tokenizer
	if err := t.split([]byte(line)); err != nil {
		return nil, err
	}
	return t.words(), nil
}

// needsQuote reports whether s must be sent quoted to stay one word.
func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f || c == '"' || c == '\\' || c == '#' || c == '=' {
			return true
		}
	}
	return false
}

// Quote returns s as one protocol word: unchanged when it is a plain word,
// otherwise in double quotes with ", \ and # escaped by a backslash, the
// way upsd's pconf_encode writes values. The empty string becomes "".
func Quote(s string) string {
	if !needsQuote(s) {
		return s
	}
	return string(appendWord(make([]byte, 0, len(s)+4), s))
}

// appendWord appends s to dst as a protocol word (see Quote).
func appendWord(dst []byte, s string) []byte {
	if !needsQuote(s) {
		return append(dst, s...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' || c == '#' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// sendable reports whether s can be sent: upsd drops control characters,
// and a newline would end the command early (an injection).
func sendable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// appendCommand appends one command line (words quoted as needed, ending
// in "\n") to dst.
func appendCommand(dst []byte, words ...string) ([]byte, error) {
	for _, w := range words {
		if !sendable(w) {
			return dst, ErrBadArgument
		}
	}
	for i, w := range words {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = appendWord(dst, w)
	}
	return append(dst, '\n'), nil
}
