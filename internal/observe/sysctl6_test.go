package observe

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCompared: IPv6 link-local addresses and IPv6 addresses with a
// lifetime (SLAAC, privacy, DHCPv6) stay out of the compared host; IPv4
// addresses and permanent IPv6 ones (guestnet's, a person's) go in.
func TestCompared(t *testing.T) {
	for _, c := range []struct {
		addr  string
		flags int
		want  bool
	}{
		{"10.99.0.1/24", unix.IFA_F_PERMANENT, true},
		{"10.99.0.9/24", 0, true}, // an IPv4 DHCP address: compared, as before IPv6
		{"2001:db8:71::1/64", unix.IFA_F_PERMANENT | unix.IFA_F_NODAD, true},
		{"fe80::1/64", unix.IFA_F_PERMANENT, false},
		{"2001:db8:1::5054:ff:fe00:1/64", unix.IFA_F_MANAGETEMPADDR, false}, // SLAAC
		{"2001:db8:1::1234/64", unix.IFA_F_TEMPORARY, false},
	} {
		if got := compared(netip.MustParsePrefix(c.addr), c.flags); got != c.want {
			t.Errorf("%s flags %#x: compared %v, want %v", c.addr, c.flags, got, c.want)
		}
	}
}

func TestAcceptRAKey(t *testing.T) {
	for ifname, want := range map[string]string{
		"eth0":     "net.ipv6.conf.eth0.accept_ra",
		"eth0.100": "net.ipv6.conf.eth0/100.accept_ra", // sysctl(8)'s notation for a dot in a name
	} {
		if got := AcceptRAKey(ifname); got != want {
			t.Errorf("%s: %s, want %s", ifname, got, want)
		}
	}
}
