package main

import (
	"strings"
	"testing"
)

// A host name from an old store with a newline and ANSI escapes must not
// forge a row of `guestnet leases` nor color the terminal.
func TestPrintableEscapesNames(t *testing.T) {
	for in, want := range map[string]string{
		"vm1":                     "vm1",
		"":                        "",
		"evil\n10.99.0.5\x1b[31m": `"evil\n10.99.0.5\x1b[31m"`,
		"two words":               `"two words"`,
		"tab\there":               `"tab\there"`,
		"caf\xc3\xa9":             `"caf\u00e9"`,
	} {
		got := printable(in)
		if got != want {
			t.Errorf("printable(%q) = %s, want %s", in, got, want)
		}
		if strings.ContainsAny(got, "\n\r\x1b\t") {
			t.Errorf("printable(%q) = %q still holds a control byte", in, got)
		}
	}
}
