package e2e

import (
	"strings"
	"testing"
)

// dockerLike makes the host's iptables-nft FORWARD chain drop by policy, as
// Docker does; withUser also makes Docker's DOCKER-USER chain, jumped to
// first, with Docker's own RETURN rule in it.
func dockerLike(l *Lab, host string, withUser bool) {
	l.In(host, "iptables", "-P", "FORWARD", "DROP")
	if withUser {
		l.In(host, "iptables", "-N", "DOCKER-USER")
		l.In(host, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
		l.In(host, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
	}
}

func TestForwardDropWithoutDockerUserIsRefused(t *testing.T) {
	l := newLab(t)
	host, _ := natHost(l)
	dockerLike(l, host, false)
	before := l.snapshot(host)
	out, errs, code := l.Run(host, "apply", l.Spec(natSpec))
	if code != 1 || !strings.Contains(errs, "table ip filter chain FORWARD drops by policy") ||
		!strings.Contains(errs, "iptables -I FORWARD -i gnat0 -j ACCEPT") {
		t.Fatalf("apply: exit %d, want 1 and an error naming the chain and the fix\n%s%s", code, out, errs)
	}
	t.Logf("apply refused: %s", strings.TrimSpace(errs))
	if after := l.snapshot(host); after != before {
		t.Errorf("a refused apply changed the host:\n%s", diffLines(before, after))
	}
	// A person who already let the bridge through is not refused.
	l.In(host, "iptables", "-I", "FORWARD", "-i", "gnat0", "-j", "ACCEPT")
	l.In(host, "iptables", "-I", "FORWARD", "-o", "gnat0", "-j", "ACCEPT")
	l.Guestnet(host, "apply", l.Spec(natSpec))
}

func TestForwardDropWithDockerUser(t *testing.T) {
	l := newLab(t)
	host, inet := natHost(l)
	dockerLike(l, host, true)
	spec := l.Spec(natSpec)
	l.Guestnet(host, "apply", spec)
	g1 := l.Guest(host, "default", "g1", "vg1", "10.99.0.10/24", "10.99.0.1")
	l.Serve(inet, "203.0.113.10:8080")
	_, err := l.Dial(g1, "203.0.113.10:8080")
	l.expect("guest -> internet through Docker's FORWARD DROP", true, err == nil)

	rules := l.In(host, "iptables", "-S", "DOCKER-USER")
	for _, want := range []string{"-i gnat0", "-o gnat0", "guestnet:default", "-A DOCKER-USER -j RETURN"} {
		if !strings.Contains(rules, want) {
			t.Errorf("DOCKER-USER lacks %q:\n%s", want, rules)
		}
	}
	if _, _, code := l.Run(host, "plan", spec); code != 0 {
		t.Errorf("plan after apply with DOCKER-USER: exit %d, want 0", code)
	}
	l.Guestnet(host, "destroy", spec)
	rules = l.In(host, "iptables", "-S", "DOCKER-USER")
	if strings.Contains(rules, "guestnet") || !strings.Contains(rules, "-A DOCKER-USER -j RETURN") {
		t.Errorf("destroy must remove exactly guestnet's DOCKER-USER rules:\n%s", rules)
	}
}

// With br_netfilter on (bridge-nf-call-iptables=1, the default in a new
// namespace), bridged frames of a bridge-mode network cross FORWARD too.
func TestBridgeModeUnderBrNetfilter(t *testing.T) {
	l := newLab(t)
	host, lan := l.NS("host"), l.NS("lan")
	l.Veth(host, "eth0", "172.16.5.10/24", lan, "eth0", "172.16.5.1/24")
	if v := strings.TrimSpace(l.In(host, "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")); v != "1" {
		t.Skipf("SKIPPED: bridge-nf-call-iptables is %q in a new namespace here; this case needs 1", v)
	}
	spec := l.Spec("networks:\n  lan:\n    mode: bridge\n    bridge: br0\n    uplink: eth0\n")
	dockerLike(l, host, false)
	_, errs, code := l.Run(host, "apply", spec)
	if code != 1 || !strings.Contains(errs, "bridge-nf-call-iptables=1 sends the bridged frames of network lan") {
		t.Fatalf("apply: exit %d, want 1 and the br_netfilter conflict\n%s", code, errs)
	}
	l.In(host, "iptables", "-N", "DOCKER-USER")
	l.In(host, "iptables", "-I", "FORWARD", "-j", "DOCKER-USER")
	l.Guestnet(host, "apply", spec)
	g1 := l.Guest(host, "lan", "g1", "vg1", "172.16.5.50/24", "")
	l.expect("guest -> LAN router across br_netfilter + FORWARD DROP", true, l.Ping(g1, "172.16.5.1"))
	// Proof the conflict is real: without guestnet's rule the frames drop.
	l.In(host, "iptables", "-F", "DOCKER-USER")
	l.expect("same, after DOCKER-USER is flushed by hand", false, l.Ping(g1, "172.16.5.1"))
}
