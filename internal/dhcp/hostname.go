package dhcp

import (
	"strings"
)

// A guest names itself (option 12), and guestnet publishes that name in
// its DNS (NAME.DOMAIN and the PTR of the address) and prints it in
// `guestnet leases`. So a name is kept only if it is one RFC 1123 label:
// letters, digits and '-', 1 to 63 bytes, not starting or ending with
// '-'. Anything else (spaces, control bytes, escape sequences, '*', 300
// bytes) would forge output or break the DNS answer; the lease is granted
// without a name.
//
// A name with dots keeps its first label when that label is valid: a
// guest that sends its FQDN (vm1.lab.internal) gets vm1, as with dnsmasq,
// which drops the domain part of a DHCP host name. The name is kept as the
// guest wrote it (dnsmasq does the same); every comparison is
// case-insensitive.
//
// A few names must never point at a guest, whatever it asks: wpad (a
// browser that auto-detects its proxy asks wpad.DOMAIN and would send
// its traffic through the guest: dnsmasq refuses it by default), isatap
// (same trap for IPv6 tunnels, also refused by dnsmasq's default
// config) and the names the hosts file gives loopback.

// reservedNames are refused as host names, lower case.
var reservedNames = map[string]bool{
	"wpad": true, "isatap": true,
	"localhost": true, "localhost4": true, "localhost6": true,
	"ip6-localhost": true, "ip6-loopback": true, "localdomain": true, "broadcasthost": true,
}

// CleanHostname returns the host name guestnet keeps from what a client
// asked for, or "" with the reason it refused it. An empty name is kept
// as "" with no reason.
func CleanHostname(name string) (kept, refused string) {
	if name == "" {
		return "", ""
	}
	label, _, dotted := strings.Cut(name, ".")
	switch {
	case !ValidLabel(label) && dotted:
		return "", "not a host name (its first label is not letters, digits and '-', 1 to 63 long)"
	case !ValidLabel(label):
		return "", "not a host name (want letters, digits and '-', 1 to 63 long, not starting or ending with '-')"
	case reservedNames[strings.ToLower(label)]:
		return "", "a reserved name (wpad, isatap and localhost never point at a guest)"
	}
	return label, ""
}

// ValidLabel reports whether s is one RFC 1123 label: 1 to 63 letters,
// digits or '-', not starting or ending with '-'.
func ValidLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
