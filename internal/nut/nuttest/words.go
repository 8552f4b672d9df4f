package nuttest

import "strings"

// splitWords parses a command line the way upsd 2.8.0 does (NUT's
// parseconf): white space separates words, "..." groups a word, a
// backslash takes the next byte literally, # outside quotes starts a
// comment, = outside quotes is a word of its own. Like upsd, it is lenient:
// an unterminated quote or a trailing backslash ends the word. Control
// characters are dropped, as upsd's parser does. An unescaped # inside
// quotes is a parse error (ok false): upsd logs it and never answers.
func splitWords(line string) (words []string, ok bool) {
	var cur []byte
	keep := func(c byte) {
		if c >= 0x20 && c < 0x80 {
			cur = append(cur, c)
		}
	}
	end := func() {
		words = append(words, string(cur))
		cur = cur[:0]
	}
	n := len(line)
	for i := 0; i < n; {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == '\n':
			i++
		case c == '#':
			return words, true
		case c == '=':
			cur = append(cur, '=')
			end()
			i++
		case c == '"':
			i++
			for i < n && line[i] != '"' {
				if line[i] == '#' {
					return nil, false
				}
				if line[i] == '\\' && i+1 < n {
					i++
				}
				keep(line[i])
				i++
			}
			i++ // the closing quote, if any
			end()
		default:
			for i < n {
				c = line[i]
				if c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == '\n' || c == '#' || c == '=' {
					break
				}
				if c == '\\' && i+1 < n {
					i++
				}
				keep(line[i])
				i++
			}
			end()
		}
	}
	return words, true
}

// encode escapes a value for use inside "..." like upsd's pconf_encode:
// a backslash before each #, \ and ".
func encode(s string) string {
	if !strings.ContainsAny(s, "#\\\"") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '#', '\\', '"':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// clean drops the bytes upsd's parser drops (control characters and
// non-ASCII), so stored values look like what a real driver could publish.
func clean(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 {
			b := make([]byte, 0, len(s))
			for j := 0; j < len(s); j++ {
				if c := s[j]; c >= 0x20 && c < 0x80 {
					b = append(b, c)
				}
			}
			return string(b)
		}
	}
	return s
}
