#!/usr/bin/env bash
# DHCP server throughput: Kea's perfdhcp against guestnet, dnsmasq and Kea's
# own kea-dhcp4, in the same run, same namespace layout (a server namespace
# with bridge br0 = 10.48.0.1/14, a client namespace on a veth port of it),
# same pool (10.48.0.10-10.51.255.250), each server started fresh with an
# empty lease file for every offered rate. Prints a markdown table.
#
#   sudo bench/dhcp.sh [RATES] [SECONDS]     e.g. bench/dhcp.sh "1000 4000 8000 16000" 5
#
# Needs root, perfdhcp (kea-admin), dnsmasq(-base), kea-dhcp4-server, and
# bin/guestnet (make build). Creates and removes its own namespaces only.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-"1000 2000 4000 8000 12000 16000"}
SECS=${2:-5}
P="gnpd$$"; S=$P-srv; C=$P-cli
WORK=$(mktemp -d)
SRVPID=""
stop_server() { if [ -n "$SRVPID" ]; then kill "$SRVPID" 2>/dev/null || true; wait "$SRVPID" 2>/dev/null || true; SRVPID=""; fi; }
cleanup() { stop_server; ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
[ -x bin/guestnet ] || go build -o bin/guestnet ./cmd/guestnet

lab() { # fresh namespaces; $1=yes makes br0 by hand (guestnet makes its own)
  ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true
  ip netns add $S; ip netns add $C
  ip -n $S link set lo up; ip -n $C link set lo up
  if [ "$1" = yes ]; then
    ip -n $S link add br0 type bridge; ip -n $S addr add 10.48.0.1/14 dev br0; ip -n $S link set br0 up
  fi
}
port() { # the client's veth, once br0 exists
  ip -n $S link add vc type veth peer name eth0 netns $C
  ip -n $S link set vc master br0 up
  ip -n $C addr add 10.48.0.5/14 dev eth0; ip -n $C link set eth0 up
}
wait_port67() { for _ in $(seq 100); do ip netns exec $S ss -Hlun 'sport = :67' | grep -q . && return; sleep 0.05; done; echo "server did not listen" >&2; exit 1; }

start_guestnet() {
  lab no
  cat > "$WORK/g.yaml" <<'EOF'
networks:
  bench:
    mode: isolated
    bridge: br0
    ipv4: 10.48.0.1/14
    dhcp:
      range: 10.48.0.10-10.51.255.250
      lease: 1h
EOF
  rm -rf "$WORK/gstate"
  bin/guestnet --netns $S --state-dir "$WORK/gstate" serve --config "$WORK/g.yaml" --log-level error >"$WORK/server.log" 2>&1 &
  SRVPID=$!
  for _ in $(seq 100); do ip -n $S link show br0 >/dev/null 2>&1 && break; sleep 0.05; done
  port; wait_port67
}
start_dnsmasq() {
  lab yes; port; rm -f "$WORK/dnsmasq.leases"
  ip netns exec $S dnsmasq -k -C /dev/null --no-resolv --port=0 --interface=br0 --bind-interfaces \
    --dhcp-range=10.48.0.10,10.51.255.250,1h --dhcp-authoritative --no-ping --quiet-dhcp \
    --dhcp-leasefile="$WORK/dnsmasq.leases" --dhcp-lease-max=300000 --user=root --pid-file= >"$WORK/server.log" 2>&1 &
  SRVPID=$!; wait_port67
}
start_kea() {
  lab yes; port; rm -f "$WORK"/kea-leases4.csv*
  cat > "$WORK/kea.json" <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["br0"]},
  "lease-database": {"type": "memfile", "persist": true, "name": "$WORK/kea-leases4.csv", "lfc-interval": 0},
  "multi-threading": {"enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64},
  "valid-lifetime": 3600,
  "subnet4": [{"id": 1, "subnet": "10.48.0.0/14", "pools": [{"pool": "10.48.0.10 - 10.51.255.250"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stderr"}], "severity": "ERROR"}]
}}
EOF
  KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK ip netns exec $S kea-dhcp4 -c "$WORK/kea.json" >"$WORK/server.log" 2>&1 &
  SRVPID=$!; wait_port67
}

# run SERVER RATE -> "achieved do_drops% ra_drops% ra_avg_ms ra_max_ms nonunique"
run() {
  "start_$1"
  out=$(timeout $((SECS + 30)) ip netns exec $C perfdhcp -4 -l eth0 -r "$2" -p "$SECS" -R 1000000 -W 1000000 2>&1 || true)
  stop_server
  echo "$out" | awk -v secs="$SECS" '
    /^received packets:/ {recv[sec]=$3}
    /Statistics for: DISCOVER-OFFER/ {sec="do"} /Statistics for: REQUEST-ACK/ {sec="ra"}
    /^drops ratio:/ {d[sec]=$3}
    /^avg delay:/ {a[sec]=$3} /^max delay:/ {m[sec]=$3}
    /^non unique addresses:/ {nu+=$4}
    END {printf "%.0f %s %s %s %s %d\n", recv["ra"]/secs, d["do"], d["ra"], a["ra"], m["ra"], nu}'
}

echo "| server | lease sync | offered/s | achieved 4-way/s | drops D-O | drops R-A | R-A avg ms | R-A max ms | non-unique |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A best
for srv in ${SERVERS:-guestnet kea dnsmasq}; do
  case $srv in
    guestnet) sync="fsync before each ACK (group commit)";;
    kea) sync="no: memfile appends, no fsync";;
    dnsmasq) sync="no: rewrites its lease file, no fsync";;
  esac
  best[$srv]=0
  for r in $RATES; do
    read -r got do ra avg max nu < <(run $srv "$r")
    echo "| $srv | $sync | $r | $got | $do % | $ra % | $avg | $max | $nu |"
    if awk -v a="$do" -v b="$ra" 'BEGIN{exit !(a<=0.01 && b<=0.01)}'; then best[$srv]=$got; fi
  done
done
echo
echo "Sustained rate at <= 0.01 % drops (highest offered step that held): guestnet ${best[guestnet]}/s, kea ${best[kea]}/s, dnsmasq ${best[dnsmasq]}/s"
echo "achieved = ACKs received / test seconds (perfdhcp waits 1 s more for late replies, -W, so the tail is not counted as drops)."
echo "perfdhcp reports min/avg/max delay, not percentiles; the table gives avg and max of REQUEST-ACK."
