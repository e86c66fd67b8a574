package e2e

import (
	"strings"
	"testing"
)

// natHost builds a host with two uplinks to a pretend internet (one router
// namespace holding 203.0.113.10) and its default route on the first.
func natHost(l *Lab) (host, inet string) {
	host, inet = l.NS("host"), l.NS("inet")
	l.Veth(host, "up0", "198.51.100.1/25", inet, "a0", "198.51.100.126/25")
	l.Veth(host, "up1", "198.51.100.129/25", inet, "a1", "198.51.100.254/25")
	l.must("ip", "-n", inet, "addr", "add", "203.0.113.10/32", "dev", "lo")
	l.must("ip", "-n", host, "route", "add", "default", "via", "198.51.100.126")
	return host, inet
}

const natSpec = `
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
`

func TestNAT(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec))
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	g2 := l.Guest(host, "default", "g2", "vg2", "10.99.0.11/24", "10.99.0.1")
	l.Serve(inet, "203.0.113.10:8080")
	l.Serve(g1, "10.99.0.10:8080")
	// Someone on the uplink's LAN who knows the guest subnet tries to get in.
	l.must("ip", "-n", inet, "route", "add", "10.99.0.0/24", "via", "198.51.100.1")

	l.expect("guest1 -> guest2 (ping)", true, l.Ping(g1, "10.99.0.11"))
	l.expect("guest1 -> internet 203.0.113.10 (ping)", true, l.Ping(g1, "203.0.113.10"))
	src, err := l.Dial(g1, "203.0.113.10:8080")
	l.expect("guest1 -> internet (tcp)", true, err == nil)
	if src != "198.51.100.1" {
		t.Errorf("internet saw source %q, want the uplink's 198.51.100.1 (masquerade)", src)
	}
	l.expect("internet -> guest1 (ping)", false, l.Ping(inet, "10.99.0.10"))
	_, err = l.Dial(inet, "10.99.0.10:8080")
	l.expect("internet -> guest1 (tcp)", false, err == nil)

	// The default route moves to the second uplink; no re-apply.
	l.must("ip", "-n", host, "route", "replace", "default", "via", "198.51.100.254")
	src, err = l.Dial(g1, "203.0.113.10:8080")
	l.expect("guest1 -> internet after the route moved (tcp)", true, err == nil)
	if err == nil && src != "198.51.100.129" {
		t.Errorf("after the move the internet saw %q, want the second uplink's 198.51.100.129", src)
	}
	l.expect("guest2 -> internet after the route moved (ping)", true, l.Ping(g2, "203.0.113.10"))
}

func TestIsolated(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	l.Guestnet(host, "apply", l.Spec(natSpec+`
  iso:
    mode: isolated
    bridge: giso0
  iso2:
    mode: isolated
    bridge: giso1
    ipv4: 10.97.0.1/24
`))
	g1 := l.Guest(host, "iso", "g1", "vg1", "10.98.0.10/24", "")
	g2 := l.Guest(host, "iso", "g2", "vg2", "10.98.0.11/24", "")
	g3 := l.Guest(host, "iso2", "g3", "vg3", "10.97.0.10/24", "10.97.0.1")
	// Guests try the host and the internet by pointing a route at the wire.
	for _, g := range []string{g1, g2} {
		l.must("ip", "-n", g, "route", "add", "default", "dev", "eth0")
	}
	l.Serve(host, "198.51.100.1:22")
	l.Serve(inet, "203.0.113.10:8080")

	l.expect("iso guest1 -> guest2 (ping)", true, l.Ping(g1, "10.98.0.11"))
	l.expect("iso guest2 -> guest1 (ping)", true, l.Ping(g2, "10.98.0.10"))
	l.expect("iso guest1 -> host 198.51.100.1 (ping)", false, l.Ping(g1, "198.51.100.1"))
	_, err := l.Dial(g1, "198.51.100.1:22")
	l.expect("iso guest1 -> host:22 (tcp)", false, err == nil)
	l.expect("iso guest1 -> internet (ping)", false, l.Ping(g1, "203.0.113.10"))
	_, err = l.Dial(g1, "203.0.113.10:8080")
	l.expect("iso guest1 -> internet (tcp)", false, err == nil)
	l.expect("iso2 guest3 -> its host address (ping)", true, l.Ping(g3, "10.97.0.1"))
	l.expect("iso2 guest3 -> internet (ping)", false, l.Ping(g3, "203.0.113.10"))
	l.expect("iso2 guest3 -> iso guest1 (ping)", false, l.Ping(g3, "10.98.0.10"))
}

// routedHost builds a host with an uplink to a peer on its LAN.
func routedHost(l *Lab) (host, peer string) {
	host, peer = l.NS("host"), l.NS("peer")
	l.Veth(host, "up0", "10.10.0.1/24", peer, "eth0", "10.10.0.2/24")
	return host, peer
}

func testRouted(t *testing.T, mode string) {
	l := newLab(t)
	host, peer := routedHost(l)
	l.Guestnet(host, "apply", l.Spec(`
networks:
  lab:
    mode: `+mode+`
    bridge: grt0
    ipv4: 10.99.1.1/24
`))
	g1 := l.Guest(host, "lab", "g1", "vg1", "10.99.1.10/24", "10.99.1.1")
	l.Serve(g1, "10.99.1.10:8080")
	l.Serve(peer, "10.10.0.2:8080")
	l.expect("peer without return route -> guest (ping)", false, l.Ping(peer, "10.99.1.10"))

	route := strings.TrimSpace(l.Guestnet(host, "routes", "lab", "--peer", "10.10.0.2"))
	if route != "ip route add 10.99.1.0/24 via 10.10.0.1" {
		t.Fatalf("guestnet routes printed %q", route)
	}
	l.In(peer, "sh", "-c", route)

	l.expect("peer -> guest (ping)", true, l.Ping(peer, "10.99.1.10"))
	src, err := l.Dial(peer, "10.99.1.10:8080")
	l.expect("peer -> guest (tcp)", true, err == nil)
	if err == nil && src != "10.10.0.2" {
		t.Errorf("guest saw %q, want the peer's own 10.10.0.2", src)
	}
	src, err = l.Dial(g1, "10.10.0.2:8080")
	l.expect("guest -> peer (tcp)", true, err == nil)
	if err == nil && src != "10.99.1.10" {
		t.Errorf("peer saw %q, want the guest's own 10.99.1.10 (no NAT)", src)
	}
	rules := l.In(host, "nft", "list", "table", "inet", "guestnet")
	has := strings.Contains(rules, `comment "lab"`)
	if mode == "open" && has {
		t.Errorf("mode open must add no rules, table has:\n%s", rules)
	}
	if mode == "routed" && !has {
		t.Errorf("mode routed must add its rules, table has:\n%s", rules)
	}
}

func TestRouted(t *testing.T) { testRouted(t, "routed") }
func TestOpen(t *testing.T)   { testRouted(t, "open") }

func TestBridgeMode(t *testing.T) {
	l := newLab(t)
	host, lan := l.NS("host"), l.NS("lan")
	l.Veth(host, "eth0", "172.16.5.10/24", lan, "eth0", "172.16.5.1/24")
	l.must("ip", "-n", host, "route", "add", "default", "via", "172.16.5.1")
	before := l.In(host, "ip", "-4", "-o", "addr", "show", "dev", "eth0") + l.In(host, "ip", "route")
	spec := l.Spec(`
networks:
  lan:
    mode: bridge
    bridge: br0
    uplink: eth0
`)
	l.Guestnet(host, "apply", spec)
	g1 := l.Guest(host, "lan", "g1", "vg1", "172.16.5.50/24", "172.16.5.1")
	l.Serve(g1, "172.16.5.50:8080")

	routes := l.In(host, "ip", "route")
	if !strings.Contains(routes, "default via 172.16.5.1 dev br0") {
		t.Errorf("default route did not move to br0:\n%s", routes)
	}
	if a := l.In(host, "ip", "-4", "-o", "addr", "show", "dev", "eth0"); a != "" {
		t.Errorf("eth0 kept addresses: %s", a)
	}
	l.expect("host -> LAN router (ping)", true, l.Ping(host, "172.16.5.1"))
	l.expect("guest -> LAN router (ping)", true, l.Ping(g1, "172.16.5.1"))
	l.expect("LAN router -> guest (ping)", true, l.Ping(lan, "172.16.5.50"))
	_, err := l.Dial(lan, "172.16.5.50:8080")
	l.expect("LAN router -> guest (tcp)", true, err == nil)
	if out, _, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after apply: exit %d\n%s", code, out)
	}

	l.Guestnet(host, "destroy", spec)
	after := l.In(host, "ip", "-4", "-o", "addr", "show", "dev", "eth0") + l.In(host, "ip", "route")
	if after != before {
		t.Errorf("destroy did not restore eth0:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	l.expect("host -> LAN router after destroy (ping)", true, l.Ping(host, "172.16.5.1"))
}
