#!/usr/bin/env bash
# guestnet demo: builds guestnet, makes a throwaway lab of network namespaces
# (a host, three guests, a pretend internet), applies a NAT and an isolated
# network to the host namespace, shows plan/status, proves the paths with
# ping; then a second host on a LAN, each running guestnet serve with a
# routed network and BGP: their guests reach each other with no route typed;
# and a guest that configures IPv6 by itself (SLAAC) and leaves by NAT66.
# It removes everything, and never touches this machine's own network.
# Needs: root, Go, iproute2, and ping (or busybox).
set -euo pipefail
cd "$(dirname "$0")"

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it creates network namespaces)"; exit 1; }
P="gndemo$$"
HOST=$P-host INET=$P-inet G1=$P-g1 G2=$P-g2 G3=$P-g3 HOST2=$P-h2 G4=$P-g4 G5=$P-g5 G6=$P-g6
STATE=$(mktemp -d) STATE2=$(mktemp -d)
SERVE_PIDS=()
cleanup() {
  for pid in "${SERVE_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  for ns in $HOST $INET $G1 $G2 $G3 $HOST2 $G4 $G5 $G6; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$STATE" "$STATE2"
}
trap cleanup EXIT

# Bold headings on a terminal only: piped or with NO_COLOR, plain text.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
# sudo's secure_path drops /usr/local/go/bin, where the Go project installs Go.
GO=${GO:-$(command -v go || true)}
[ -n "$GO" ] || [ ! -x /usr/local/go/bin/go ] || GO=/usr/local/go/bin/go
[ -n "$GO" ] || { echo "demo.sh: Go not found in PATH nor in /usr/local/go/bin; install it (https://go.dev/doc/install) or run GO=/path/to/go ./demo.sh"; exit 1; }
if command -v ping >/dev/null; then PING=(ping); else PING=(busybox ping); fi
check() { # check WANT NS ADDR LABEL [SOURCE]
  if ip netns exec "$2" "${PING[@]}" -c1 -W1 ${5:+-I "$5"} "$3" >/dev/null 2>&1; then got=reaches; else got=blocked; fi
  mark=ok; [ "$got" = "$1" ] || mark=UNEXPECTED
  printf '  %-44s %-8s %s\n' "$4" "$got" "$mark"
  [ "$mark" = ok ]
}

say "build"
"$GO" build -o bin/guestnet ./cmd/guestnet
GN=(./bin/guestnet --netns "$HOST" --state-dir "$STATE")

say "lab: host with an uplink to a pretend internet (203.0.113.10)"
for ns in $HOST $INET $G1 $G2 $G3; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$HOST" link add up0 type veth peer name eth0 netns "$INET"
ip -n "$HOST" addr add 198.51.100.1/24 dev up0 && ip -n "$HOST" link set up0 up
ip -n "$INET" addr add 198.51.100.254/24 dev eth0 && ip -n "$INET" link set eth0 up
ip -n "$INET" addr add 203.0.113.10/32 dev lo
ip -n "$HOST" route add default via 198.51.100.254
ip -n "$HOST" addr add 2001:db8:fe::1/64 dev up0 nodad   # and IPv6, with 2001:db8:ff::10 beyond
ip -n "$INET" addr add 2001:db8:fe::2/64 dev eth0 nodad && ip -n "$INET" addr add 2001:db8:ff::10/128 dev lo
ip -n "$HOST" -6 route add default via 2001:db8:fe::2

cat > "$STATE/demo.yaml" <<'EOF'
networks:
  default:             # like libvirt's virbr0: guests get out, nobody gets in
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
  lab:                 # guests reach each other, nothing else
    mode: isolated
    bridge: giso0
EOF
cat "$STATE/demo.yaml"

say "guestnet plan (exit 2: changes pending)"
"${GN[@]}" plan "$STATE/demo.yaml" || true
say "guestnet apply"
"${GN[@]}" apply "$STATE/demo.yaml"
say "guestnet apply again (a no-op: zero kernel writes)"
"${GN[@]}" apply "$STATE/demo.yaml"

say "guests: g1, g2 on the NAT network (g2 bound to its address); g3 on the isolated one"
guest() { # guest NS HOSTIF ADDR GW NETWORK [ATTACH FLAGS...]
  ip -n "$HOST" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$1" addr add "$3" dev eth0 && ip -n "$1" link set eth0 up
  [ -z "$4" ] || ip -n "$1" route add default via "$4"
  "${GN[@]}" attach "$5" "$2" "${@:6}"
}
guest "$G1" vg1 10.99.0.10/24 10.99.0.1 default
guest "$G2" vg2 10.99.0.11/24 10.99.0.1 default --ip 10.99.0.11
ip -n "$G2" addr add 10.99.0.99/24 dev eth0   # an address g2 is not bound to
guest "$G3" vg3 10.98.0.10/24 "" lab
ip -n "$G3" route add default dev eth0
ip -n "$INET" route add 10.99.0.0/24 via 198.51.100.1   # someone outside tries to get in

say "guestnet status"
"${GN[@]}" status

say "paths, checked with real packets"
ok=0
check reaches "$G1" 10.99.0.11   "nat guest g1 -> guest g2" || ok=1
check reaches "$G1" 203.0.113.10 "nat guest g1 -> internet (masqueraded)" || ok=1
check blocked "$INET" 10.99.0.10 "internet -> nat guest g1" || ok=1
check blocked "$G3" 203.0.113.10 "isolated guest g3 -> internet" || ok=1
check blocked "$G3" 198.51.100.1 "isolated guest g3 -> host" || ok=1
check blocked "$G3" 10.99.0.10   "isolated guest g3 -> nat guest g1" || ok=1
check reaches "$G2" 10.99.0.10   "bound guest g2 -> g1 from its own address" 10.99.0.11 || ok=1
check blocked "$G2" 10.99.0.10   "bound guest g2 -> g1 from a spoofed address" 10.99.0.99 || ok=1

say "guestnet doctor: why did g2's packet not arrive? (exit 1: findings)"
"${GN[@]}" doctor || true

say "routes announced, not typed: a second host on a LAN (10.10.0.0/24), both running guestnet serve with BGP"
GN2=(./bin/guestnet --netns "$HOST2" --state-dir "$STATE2")
for ns in $HOST2 $G4 $G5; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$HOST" link add lan0 type veth peer name lan0 netns "$HOST2"
ip -n "$HOST" addr add 10.10.0.1/24 dev lan0 && ip -n "$HOST" link set lan0 up
ip -n "$HOST2" addr add 10.10.0.2/24 dev lan0 && ip -n "$HOST2" link set lan0 up
# serve's config is the truth: host 1's keeps the networks above (the NAT
# network now dual-stack) and adds a routed one.
{ sed 's|^    ipv4: 10.99.0.1/24$|&\n    ipv6: fd42:99::1/64    # SLAAC from router advertisements; NAT66|' "$STATE/demo.yaml"; cat <<'EOF'
  dmz:                 # routed: announced over BGP, no return route typed anywhere
    mode: routed
    bridge: grt0
    ipv4: 10.71.0.1/24
bgp:
  asn: 65001
  peers: [{address: 10.10.0.2, asn: 65002}]
EOF
} > "$STATE/serve.yaml"
cat > "$STATE2/serve.yaml" <<'EOF'
networks:
  dmz:
    mode: routed
    bridge: grt0
    ipv4: 10.72.0.1/24
bgp:
  asn: 65002
  peers: [{address: 10.10.0.1, asn: 65001}]
EOF
sed -n '/dmz:/,$p' "$STATE/serve.yaml"
"${GN[@]}" serve --config "$STATE/serve.yaml" 2>"$STATE/serve.log" & SERVE_PIDS+=($!)
"${GN2[@]}" serve --config "$STATE2/serve.yaml" 2>"$STATE2/serve.log" & SERVE_PIDS+=($!)
for _ in $(seq 100); do   # until each host has the other's subnet (about 2 s)
  ip -n "$HOST" route show proto bgp | grep -q 10.72.0.0/24 && ip -n "$HOST2" route show proto bgp | grep -q 10.71.0.0/24 && break
  sleep 0.2
done
guest2() { # guest2 HOSTNS GUESTNS ADDR GW STATE
  ip -n "$1" link add "vg${2##*-}" type veth peer name eth0 netns "$2"
  ip -n "$2" addr add "$3" dev eth0 && ip -n "$2" link set eth0 up && ip -n "$2" route add default via "$4"
  ./bin/guestnet --netns "$1" --state-dir "$5" attach dmz "vg${2##*-}" >/dev/null
}
guest2 "$HOST" "$G4" 10.71.0.10/24 10.71.0.1 "$STATE"
guest2 "$HOST2" "$G5" 10.72.0.10/24 10.72.0.1 "$STATE2"
say "guestnet bgp (on host 1)"
"${GN[@]}" bgp
say "host 1's routes learned by BGP (protocol bgp, metric 186)"
ip -n "$HOST" route show proto bgp
check reaches "$G4" 10.72.0.10 "host 1's guest g4 -> host 2's guest g5" || ok=1
check reaches "$G5" 10.71.0.10 "host 2's guest g5 -> host 1's guest g4" || ok=1

say "IPv6: guest g6 configures itself (the kernel's SLAAC, from guestnet's router advertisement)"
ip netns add "$G6"; ip -n "$G6" link set lo up
ip -n "$HOST" link add vg6 type veth peer name eth0 netns "$G6"
"${GN[@]}" attach default vg6 >/dev/null
ip -n "$G6" link set eth0 up
for _ in $(seq 50); do   # the router solicitation is answered at once; DAD takes about a second
  ip -n "$G6" -6 addr show dev eth0 scope global | grep -v tentative | grep -q fd42:99:: && break
  sleep 0.2
done
ip -n "$G6" -6 addr show dev eth0 scope global | sed -n 's/^ *\(inet6 [^ ]*\).*/  g6: \1/p'
ip -n "$G6" -6 route show default | sed 's/^/  g6: /'
check reaches "$G6" 2001:db8:ff::10 "IPv6 guest g6 -> internet (NAT66)" || ok=1
ip -n "$INET" -6 route add fd42:99::/64 via 2001:db8:fe::1   # someone outside tries to get in
g6addr=$(ip -n "$G6" -6 addr show dev eth0 scope global | awk '/inet6/ {sub("/.*", "", $2); print $2; exit}')
check blocked "$INET" "${g6addr:-fd42:99::1234}" "internet -> IPv6 guest g6" || ok=1
for pid in "${SERVE_PIDS[@]}"; do kill "$pid"; wait "$pid" || true; done
SERVE_PIDS=()

say "guestnet destroy --all"
"${GN[@]}" destroy --all
say "done: the lab namespaces are removed on exit"
exit $ok
