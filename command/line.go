package command

import (
	"strings"
	"unicode"
)

// DefaultCountryCode is assumed for a phone number written without "+":
// ten digits are a North American number (+1 and the ten digits), eleven
// digits starting with 1 are the same with the trunk prefix. Any other
// digit string without "+" is kept as written, since guessing its country
// would route it to a stranger; only the international prefix "00" is read
// as "+" (0044 20 7946 0958 is +442079460958).
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
	case strings.HasPrefix(stripped, "00") && len(stripped) >= 2+minE164Digits && len(stripped) <= 2+maxE164Digits:
		return "+" + stripped[2:]
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

// The digits of an E.164 number after its "+".
const (
	minE164Digits = 7
	maxE164Digits = 15
)

// CheckHandle refuses what cannot be a line or a handle: after
// NormalizeLine it must be a phone number ("+" and 7 to 15 digits, E.164,
// whose country code does not start with 0; or 3 to 15 digits without "+",
// for short codes) or a bare email address (something, "@", a domain with
// a dot and no empty label), at most MaxHandleBytes, with no spaces,
// control characters or the characters of a display name or a list
// (<>"(),;:[]\). The message names the problem, not the value. It is the
// one handle rule of every door and driver: use NormalizeHandle to check
// and spell a handle in one step.
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
			strings.Contains(domain, "..") || strings.Contains(domain, "@") || strings.IndexFunc(n, badHandleRune) >= 0 {
			return invalid("a handle is not a valid email address")
		}
		return nil
	case isPhone(n):
		digits := strings.TrimPrefix(n, "+")
		if strings.HasPrefix(n, "+") && (len(digits) < minE164Digits || len(digits) > maxE164Digits) {
			return invalid("a phone number must have %d to %d digits after +", minE164Digits, maxE164Digits)
		}
		if strings.HasPrefix(n, "+0") {
			return invalid("a phone number's country code after + never starts with 0")
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

// NormalizeHandle checks h with CheckHandle and returns its one spelling
// (NormalizeLine), the form to send onward and to compare.
func NormalizeHandle(h string) (string, *Error) {
	if err := CheckHandle(h); err != nil {
		return "", err
	}
	return NormalizeLine(h), nil
}

// NormalizeHandles is NormalizeHandle for a command's participants, in a
// new slice; none at all is refused too.
func NormalizeHandles(hs []string) ([]string, *Error) {
	if len(hs) == 0 {
		return nil, invalid("participants is empty")
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		n, err := NormalizeHandle(h)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

func badHandleRune(r rune) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`<>"(),;:[]\`, r)
}
