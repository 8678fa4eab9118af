package registry

import (
	"net/http"
	"strings"
)

// challenge is one WWW-Authenticate challenge, e.g.
// Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull".
type challenge struct {
	Scheme string            // lowercased: "basic", "bearer"
	Params map[string]string // keys lowercased
}

// maxChallenges bounds what one response can make us parse.
const maxChallenges = 16

// parseChallenges parses every WWW-Authenticate header of h (RFC 7235 section 4.1: a header may
// hold several comma-separated challenges; parameter values are tokens or quoted strings).
func parseChallenges(h http.Header) []challenge {
	var out []challenge
	for _, v := range h.Values("Www-Authenticate") {
		out = append(out, parseChallengeHeader(v)...)
		if len(out) >= maxChallenges {
			return out[:maxChallenges]
		}
	}
	return out
}

func parseChallengeHeader(s string) []challenge {
	var out []challenge
	p := &headerParser{s: s}
	for len(out) < maxChallenges {
		p.skip(" \t,")
		scheme := p.token()
		if scheme == "" {
			break
		}
		c := challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
		for {
			p.skip(" \t")
			save := p.i
			p.skip(",")
			p.skip(" \t")
			key := p.token()
			p.skip(" \t")
			if key == "" || !p.consume('=') {
				// Not a parameter: the start of the next challenge (or junk to skip).
				p.i = save
				break
			}
			p.skip(" \t")
			var val string
			if p.peek() == '"' {
				val = p.quoted()
			} else {
				val = p.token()
			}
			c.Params[strings.ToLower(key)] = val
		}
		out = append(out, c)
		if p.i < len(p.s) && p.peek() != ',' && p.peek() != ' ' && p.peek() != '\t' {
			// Unparseable rest: stop rather than loop.
			break
		}
	}
	return out
}

type headerParser struct {
	s string
	i int
}

func (p *headerParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *headerParser) skip(chars string) {
	for p.i < len(p.s) && strings.IndexByte(chars, p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *headerParser) consume(c byte) bool {
	if p.peek() == c && p.i < len(p.s) {
		p.i++
		return true
	}
	return false
}

// token reads an RFC 7230 token (plus '/' and ':', which appear unquoted in the wild).
func (p *headerParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~/:", c) >= 0
}

// quoted reads a quoted-string starting at '"', undoing backslash escapes; an unterminated string
// runs to the end of the header.
func (p *headerParser) quoted() string {
	p.i++ // opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && p.i < len(p.s):
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
