package command

import (
	"strings"
)

// DefaultCountryCode is assumed for a phone number written without "+":
// ten digits are a North American number (+1 and the ten digits), eleven
// digits starting with 1 are the same with the trunk prefix. Any other
// digit string without "+" is kept as written, since guessing its country
// would route it to a stranger.
const DefaultCountryCode = "1"

// NormalizeLine returns the one spelling of a line (the phone number or
// handle a Mac sends through) or of a participant handle, so that "+1
// 555-000-0001", "+15550000001" and "(555) 000-0001" are one key, and an
// email handle matches in any case, as Messages matches it. Surrounding
// spaces never matter. A value that is neither a phone number nor an email
// (a stray word) is returned trimmed, unchanged otherwise; validation, not
// normalisation, refuses it.
func NormalizeLine(s string) string {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "@") {
		return strings.ToLower(s)
	}
	stripped := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '.', '(', ')', '\u00a0':
			return -1
		}
		return r
	}, s)
	if stripped == "" || !isPhone(stripped) {
		return s
	}
	if strings.HasPrefix(stripped, "+") {
		return stripped
	}
	switch {
	case len(stripped) == 10:
		return "+" + DefaultCountryCode + stripped
	case len(stripped) == 11 && strings.HasPrefix(stripped, DefaultCountryCode):
		return "+" + stripped
	}
	return stripped
}

// isPhone reports whether s is an optional "+" and digits only.
func isPhone(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// CheckHandle refuses what cannot be a line or a handle: after
// NormalizeLine it must be a phone number ("+" and 7 to 15 digits, E.164;
// or 3 to 15 digits without "+", for short codes) or an email address
// (something, "@", a domain with a dot), at most MaxHandleBytes, with no
// spaces or control characters. The message names the problem, not the
// value.
func CheckHandle(h string) *Error {
	n := NormalizeLine(h)
	switch {
	case n == "":
		return invalid("a handle is empty")
	case len(n) > MaxHandleBytes:
		return invalid("a handle is %d bytes; at most %d are accepted", len(n), MaxHandleBytes)
	case strings.Contains(n, "@"):
		local, domain, _ := strings.Cut(n, "@")
		if local == "" || !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") ||
			strings.Contains(domain, "@") || strings.IndexFunc(n, badHandleRune) >= 0 {
			return invalid("a handle is not a valid email address")
		}
		return nil
	case isPhone(n):
		digits := strings.TrimPrefix(n, "+")
		if strings.HasPrefix(n, "+") && (len(digits) < 7 || len(digits) > 15) {
			return invalid("a phone number must have 7 to 15 digits after +")
		}
		if !strings.HasPrefix(n, "+") && (len(digits) < 3 || len(digits) > 15) {
			return invalid("a phone number must have 3 to 15 digits")
		}
		return nil
	}
	return invalid("a handle must be a phone number (E.164, e.g. +15550000001) or an email address")
}

// CheckLine is CheckHandle for the line a Mac sends through.
func CheckLine(l string) *Error {
	if err := CheckHandle(l); err != nil {
		return Errorf(err.Code, "line: %s", err.Msg)
	}
	return nil
}

func badHandleRune(r rune) bool {
	return r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == '"' || r == ',' || r == ';'
}
