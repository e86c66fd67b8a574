#!/usr/bin/env bash
# What IPv6 anti-spoofing costs per packet, against the IPv4 path, in the
# same run: a guest sends small UDP datagrams (iperf3 -u -l 64, unlimited)
# to a neighbour on the same bridge, over IPv4 from its bound address (one
# lookup in set bound) and over IPv6 from the address it claimed first
# (chain check6: a lookup in claims6 and two set updates per packet, the
# claim's refresh), each against the same network with anti_spoofing:
# false (no bridge table). The figure of interest is each family's share of
# its own unguarded rate. Alternating, median of ROUNDS.
#
#   sudo bench/guard6.sh [ROUNDS] [SECONDS]
#
# Needs root, iperf3, python3 and bin/guestnet (make build). Creates and
# removes its own namespaces only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-4}
P="gng6$$"; H=$P-host; A=$P-a; B=$P-b
WORK=$(mktemp -d)
SRV=""
cleanup() {
  if [ -n "$SRV" ]; then kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
  for n in $H $A $B; do ip netns del $n 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
[ -x bin/guestnet ] || go build -o bin/guestnet ./cmd/guestnet
GN="bin/guestnet --netns $H --state-dir $WORK/state"

for n in $H $A $B; do ip netns add $n; ip -n $n link set lo up; done
spec() { # $1 = true|false
  cat > "$WORK/spec.yaml" <<EOF
networks:
  default:
    mode: nat
    bridge: gnat0
    ipv4: 10.99.0.1/24
    ipv6: fd42:99::1/64
    anti_spoofing: $1
EOF
  $GN apply "$WORK/spec.yaml" >/dev/null
}
spec true
ip -n $H link add va type veth peer name eth0 netns $A
ip -n $H link add vb type veth peer name eth0 netns $B
ip -n $A link set eth0 address 02:00:00:00:00:20
for x in "$A 20" "$B 40"; do
  set -- $x
  ip netns exec $1 sysctl -qw net.ipv6.conf.eth0.accept_ra=0
  ip -n $1 addr add 10.99.0.$2/24 dev eth0
  ip -n $1 addr add fd42:99::$2/64 dev eth0 nodad
  ip -n $1 link set eth0 up
done
attach() {
  $GN attach default va --ip 10.99.0.20 --mac 02:00:00:00:00:20 >/dev/null
  $GN attach default vb >/dev/null
}
attach
ip netns exec $B iperf3 -s >/dev/null 2>&1 & SRV=$!
for _ in $(seq 50); do ip netns exec $B ss -Hltn 'sport = :5201' | grep -q . && break; sleep 0.1; done

udp() { # $1 = server address; prints datagrams/s delivered (one retry: iperf3's server may still be busy)
  for _ in 1 2; do
    ip netns exec $A iperf3 -c "$1" -u -l 64 -b 0 -t "$SECS" -J 2>/dev/null | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print(e["packets"]*(1-e["lost_percent"]/100)/e["seconds"])' 2>/dev/null && return
    sleep 1
  done
  echo "iperf3 to $1 failed twice" >&2; exit 1
}
: > "$WORK/on"; : > "$WORK/off"
for r in $(seq "$ROUNDS"); do
  spec true; attach
  echo "$(udp 10.99.0.40) $(udp fd42:99::40)" >> "$WORK/on"
  # (the listing is read whole first: grep -q stopping early would make
  # nft die of SIGPIPE, and pipefail report that as a failure)
  claims=$(ip netns exec $H nft list set bridge guestnet claims6)
  grep -q '"va" . fd42:99::20' <<<"$claims" || { echo "no claim of fd42:99::20 by va:" >&2; echo "$claims" >&2; exit 1; }
  spec false
  tables=$(ip netns exec $H nft list tables)
  grep -q "bridge guestnet" <<<"$tables" && { echo "bridge table still there" >&2; exit 1; }
  echo "$(udp 10.99.0.40) $(udp fd42:99::40)" >> "$WORK/off"
  echo "round $r done" >&2
done
python3 - "$WORK/off" "$WORK/on" <<'EOF'
import sys, statistics as st
def load(p):
    rows = [list(map(float, l.split())) for l in open(p) if l.strip()]
    return st.median(r[0] for r in rows), st.median(r[1] for r in rows)
off, on = (load(p) for p in sys.argv[1:])
print("| path | anti_spoofing: false, datagrams/s | on, datagrams/s | share |")
print("|---|---|---|---|")
print(f"| IPv4, bound sender (lookup in bound) | {off[0]:,.0f} | {on[0]:,.0f} | {on[0]/off[0]:.0%} |")
print(f"| IPv6, first-come claim (lookup + 2 updates) | {off[1]:,.0f} | {on[1]:,.0f} | {on[1]/off[1]:.0%} |")
print(f"IPv6 share / IPv4 share: {(on[1]/off[1])/(on[0]/off[0]):.2f}")
EOF
