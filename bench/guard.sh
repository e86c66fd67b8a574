#!/usr/bin/env bash
# What anti-spoofing costs: traffic from a bound guest port to a neighbour
# on the same bridge, with guestnet's anti-spoofing table (the sender's port
# bound by attach --ip --mac, every frame looked up in the sets) against the
# same network with anti_spoofing: false (no bridge table at all), same
# namespaces, same run, alternating, median of ROUNDS. TCP throughput
# (iperf3) and small-datagram rate (iperf3 -u -l 64, unlimited).
#
#   sudo bench/guard.sh [ROUNDS] [SECONDS]
#
# Needs root, iperf3, python3 and bin/guestnet (make build). Creates and
# removes its own namespaces only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-4}
P="gngd$$"; H=$P-host; A=$P-a; B=$P-b
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
    anti_spoofing: $1
EOF
  $GN apply "$WORK/spec.yaml" >/dev/null
}
spec true
ip -n $H link add va type veth peer name eth0 netns $A
ip -n $H link add vb type veth peer name eth0 netns $B
ip -n $A link set eth0 address 02:00:00:00:00:20
ip -n $A addr add 10.99.0.20/24 dev eth0; ip -n $A link set eth0 up
ip -n $B addr add 10.99.0.40/24 dev eth0; ip -n $B link set eth0 up
$GN attach default va --ip 10.99.0.20 --mac 02:00:00:00:00:20 >/dev/null
$GN attach default vb >/dev/null
ip netns exec $B iperf3 -s -B 10.99.0.40 >/dev/null 2>&1 & SRV=$!
for _ in $(seq 50); do ip netns exec $B ss -Hltn 'sport = :5201' | grep -q . && break; sleep 0.1; done

measure() { # prints "tcp_gbit udp_pps"
  local tcp udp
  tcp=$(ip netns exec $A iperf3 -c 10.99.0.40 -t "$SECS" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
  udp=$(ip netns exec $A iperf3 -c 10.99.0.40 -u -l 64 -b 0 -t "$SECS" -J | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print(e["packets"]*(1-e["lost_percent"]/100)/e["seconds"])')
  echo "$tcp $udp"
}
: > "$WORK/on"; : > "$WORK/off"; : > "$WORK/unbound"
for r in $(seq "$ROUNDS"); do
  spec true;  $GN attach default va --ip 10.99.0.20 --mac 02:00:00:00:00:20 >/dev/null
  ip netns exec $H nft list set bridge guestnet bound | grep -q 10.99.0.20 || { echo "binding missing" >&2; exit 1; }
  measure >> "$WORK/on"
  $GN detach default va >/dev/null; $GN attach default va >/dev/null
  ip netns exec $H nft list set bridge guestnet bound | grep -q 10.99.0.20 && { echo "binding still there" >&2; exit 1; }
  measure >> "$WORK/unbound"
  spec false
  ip netns exec $H nft list tables | grep -q "bridge guestnet" && { echo "bridge table still there" >&2; exit 1; }
  measure >> "$WORK/off"
  echo "round $r done" >&2
done
python3 - "$WORK/off" "$WORK/unbound" "$WORK/on" <<'EOF'
import sys, statistics as st
def load(p):
    rows = [list(map(float, l.split())) for l in open(p) if l.strip()]
    return st.median(r[0] for r in rows), st.median(r[1] for r in rows)
off, unbound, on = (load(p) for p in sys.argv[1:])
print("| setup | TCP Gbit/s | share | UDP 64-byte datagrams/s delivered | share |")
print("|---|---|---|---|---|")
for name, v in [("anti_spoofing: false (no bridge table)", off), ("anti-spoofing on, sender unbound", unbound), ("anti-spoofing on, sender bound", on)]:
    print(f"| {name} | {v[0]:.2f} | {v[0]/off[0]:.0%} | {v[1]:,.0f} | {v[1]/off[1]:.0%} |")
EOF
