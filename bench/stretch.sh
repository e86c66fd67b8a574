#!/usr/bin/env bash
# DHCP on a stretched network (leases in etcd) against a local one (leases
# in leases.db), same host, same run, same client tool: bench/dhcpload's
# open-loop generator (its own MAC per client, on its own bridge port).
#
# One guestnet host (namespace S, lan0 10.10.0.1/24) serves two networks
# from one `guestnet serve`:
#   local    bridge brl, 10.48.0.1/16, dhcp range 10.48.0.10-10.48.255.250 (leases.db, fsync)
#   stretch  bridge brs, 10.52.0.1/16, vxlan vni 6000, the same range shape (leases in etcd:
#            blocks claimed by compare-and-swap, each lease written to a quorum before the ACK)
# and a three-member etcd cluster (Debian's etcd 3.4, namespaces E1-E3 =
# 10.10.0.201-203 on the LAN bridge, data in a temporary folder). The
# clients' namespace C holds PORTS veth ends into each bridge (l0.. into
# brl, s0.. into brs). For each rate and network, everything starts fresh
# (namespaces, empty leases.db, new etcd cluster, one serve with both
# networks), then dhcpload runs against that network: local, then stretch.
#
#   sudo bench/stretch.sh [RATES] [SECONDS] [PORTS]    e.g. bench/stretch.sh "250 1000 2000" 10 32
#
# BLOCK=256 sets leases.block (default: guestnet's, 16). Prints the
# dhcpload table (one row per network and rate) and a ratio table.
# Needs root and etcd-server. Creates and removes its own namespaces only.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-"250 1000 2000"}
SECS=${2:-10}
PORTS=${3:-32}
P="gnst$$"; S=$P-srv; C=$P-cli; L=$P-lan
WORK=$(mktemp -d)
SRVPID=""; ETCDPIDS=""
stop_all() {
  if [ -n "$SRVPID" ]; then kill "$SRVPID" 2>/dev/null || true; wait "$SRVPID" 2>/dev/null || true; SRVPID=""; fi
  for p in $ETCDPIDS; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; ETCDPIDS=""
}
delns() { for n in $S $C $L $P-e1 $P-e2 $P-e3; do ip netns del "$n" 2>/dev/null || true; done; }
cleanup() { stop_all; delns; rm -rf "$WORK"; }
trap cleanup EXIT
if [ -n "${GUESTNET:-}" ]; then cp "$GUESTNET" "$WORK/guestnet"; else go build -o "$WORK/guestnet" ./cmd/guestnet; fi
go build -o "$WORK/dhcpload" ./bench/dhcpload

lab() {
  delns
  for n in $S $C $L $P-e1 $P-e2 $P-e3; do ip netns add "$n"; ip -n "$n" link set lo up; done
  ip netns exec $C sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1
  ip -n $L link add br0 type bridge; ip -n $L link set br0 up
  local i=0
  for pair in "$S 10.10.0.1" "$P-e1 10.10.0.201" "$P-e2 10.10.0.202" "$P-e3 10.10.0.203"; do
    set -- $pair; i=$((i + 1))
    ip -n "$1" link add lan0 type veth peer name p$i netns $L
    ip -n "$1" addr add "$2/24" dev lan0; ip -n "$1" link set lan0 up
    ip -n $L link set p$i master br0 up
  done
}
start_etcd() {
  local cluster="e1=http://10.10.0.201:2380,e2=http://10.10.0.202:2380,e3=http://10.10.0.203:2380"
  local token=$P-$RANDOM # one per cluster: a fresh cluster for each rate
  rm -rf "$WORK/etcd"; mkdir -p "$WORK/etcd"
  for i in 1 2 3; do
    local a=10.10.0.20$i
    ip netns exec $P-e$i etcd --name e$i --data-dir "$WORK/etcd/e$i" \
      --listen-client-urls http://$a:2379 --advertise-client-urls http://$a:2379 \
      --listen-peer-urls http://$a:2380 --initial-advertise-peer-urls http://$a:2380 \
      --initial-cluster $cluster --initial-cluster-state new --initial-cluster-token $token \
      --logger zap --log-outputs stderr --log-level error >"$WORK/etcd-e$i.log" 2>&1 &
    ETCDPIDS="$ETCDPIDS $!"
  done
  local eps=http://10.10.0.201:2379,http://10.10.0.202:2379,http://10.10.0.203:2379
  for _ in $(seq 200); do
    [ "$(ip netns exec $S etcdctl --endpoints $eps --dial-timeout 1s endpoint health 2>&1 | grep -c 'is healthy')" = 3 ] && return
    sleep 0.1
  done
  echo "etcd did not become healthy" >&2; cat "$WORK"/etcd-e*.log >&2; exit 1
}
ports() { # PORTS veth pairs per network: lN/sN in C, vlN/vsN ports of brl/brs
  local b="$WORK/ports.batch"; : >"$b"
  for ((i = 0; i < PORTS; i++)); do
    echo "link add vl$i type veth peer name l$i netns $C" >>"$b"
    echo "link set vl$i master brl up" >>"$b"
    echo "link add vs$i type veth peer name s$i netns $C" >>"$b"
    echo "link set vs$i master brs up" >>"$b"
  done
  ip -n $S -batch "$b"
  : >"$b"
  for ((i = 0; i < PORTS; i++)); do echo "link set l$i up" >>"$b"; echo "link set s$i up" >>"$b"; done
  ip -n $C -batch "$b"
}
wait_dhcp() { for _ in $(seq 200); do [ "$(grep -c 'dhcp serving' "$WORK/server.log")" -ge 2 ] && return; sleep 0.05; done; echo "server did not serve DHCP on both networks" >&2; cat "$WORK/server.log" >&2; exit 1; }

start_guestnet() {
  cat > "$WORK/g.yaml" <<YAML
bgp:
  asn: 65000
  router_id: 10.10.0.1
  peers: [{address: 10.10.0.2, asn: 65000}]
leases:
  etcd: [http://10.10.0.201:2379, http://10.10.0.202:2379, http://10.10.0.203:2379]
$( [ -n "${BLOCK:-}" ] && echo "  block: $BLOCK" )
networks:
  local:
    mode: isolated
    bridge: brl
    ipv4: 10.48.0.1/16
    dhcp: {range: [10.48.0.10-10.48.255.250], lease: 1h, per_port: 4096}
  stretch:
    mode: isolated
    bridge: brs
    ipv4: 10.52.0.1/16
    vxlan: {vni: 6000}
    dhcp: {range: [10.52.0.10-10.52.255.250], lease: 1h, per_port: 4096}
YAML
  rm -rf "$WORK/gstate"
  "$WORK/guestnet" --netns $S --state-dir "$WORK/gstate" serve --config "$WORK/g.yaml" --log-level "${LOG_LEVEL:-info}" >"$WORK/server.log" 2>&1 &
  SRVPID=$!
  for _ in $(seq 200); do ip -n $S link show brs >/dev/null 2>&1 && ip -n $S link show brl >/dev/null 2>&1 && break; sleep 0.05; done
  ports; wait_dhcp
}

rows="$WORK/rows"; : >"$rows"
"$WORK/dhcpload" -header
for r in $RATES; do
  for net in local stretch; do
    # Fresh namespaces, etcd and server for each row: dhcpload's client
    # MACs depend only on the port number, and guestnet's anti-spoofing
    # remembers a MAC it saw on one port (of either bridge) as that
    # port's, so a second run on the same server would be dropped.
    lab; start_etcd; start_guestnet
    sleep 1 # let the server see its ports (guestnet syncs on link events)
    prefix=${net:0:1}
    dir="$WORK/gstate"; [ $net = stretch ] && dir="$WORK/etcd/e1"
    row=$(ip netns exec $C "$WORK/dhcpload" -ports "$PORTS" -prefix "$prefix" -rate "$r" -duration "${SECS}s" \
      -fsync-dir "$dir" -label "$net" 2>>"$WORK/dhcpload.err") || { echo "dhcpload failed on $net; server log:" >&2; tail -20 "$WORK/server.log" >&2; row=""; }
    echo "$row"
    echo "$r $net $row" >>"$rows"
    stop_all
    # SERVER_LOG=FILE keeps the server's log of the last row.
    [ -n "${SERVER_LOG:-}" ] && cp "$WORK/server.log" "$SERVER_LOG"
  done
done
echo
echo "| offered/s | local ACK/s | stretched ACK/s | stretched ÷ local | local DORA p50 ms | stretched DORA p50 ms | local DORA p99 ms | stretched DORA p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
# dhcpload's row: | label | offered | sent/s | achieved | lost | NAK | p50 | p99 | p99.9 | max | ...
awk -F'|' '
  { split($1, h, " "); rate = h[1]; net = h[2]; ack[rate, net] = $5 + 0; p50[rate, net] = $8; p99[rate, net] = $9; seen[rate] = 1; order[++n] = rate }
  END {
    for (i = 1; i <= n; i++) { r = order[i]; if (done[r]++) continue
      ratio = ack[r, "local"] > 0 ? sprintf("%.2f", ack[r, "stretch"] / ack[r, "local"]) : "-"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r, ack[r, "local"], ack[r, "stretch"], ratio, p50[r, "local"], p50[r, "stretch"], p99[r, "local"], p99[r, "stretch"] }
  }' "$rows"
