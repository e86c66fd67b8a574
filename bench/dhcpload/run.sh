#!/usr/bin/env bash
# DHCP latency percentiles under load, from many bridge ports: the Go
# generator of this folder (dhcpload) against guestnet and Kea's kea-dhcp4,
# in the same run, same layout: a server namespace with bridge br0 =
# 10.48.0.1/14 and PORTS veth ports, whose client ends sit in a client
# namespace; each client sends from its own MAC on its own port. Each
# server starts fresh with an empty lease store for every rate. Beside the
# clients, dhcpload times write+fsync of a small file in the lease store's
# folder. Prints one markdown table.
#
#   sudo bench/dhcpload/run.sh [RATES] [SECONDS] [PORTS]   e.g. bench/dhcpload/run.sh "1000 4000" 20 64
#
# PORTS defaults to 64: every broadcast (each DISCOVER and REQUEST, and
# guestnet's replies and ARP probes) is copied to every port, and at 256
# ports those copies overflow the kernel's per-CPU backlog
# (net.core.netdev_max_backlog, 1000: a host setting this bench leaves
# alone), so the generator's own sends fail with ENOBUFS.
#
# SERVERS="guestnet kea" picks the servers; DEBUG=1 adds the server
# namespace's UDP counters (receive-buffer drops) after each row.
#
# Needs root, kea-dhcp4-server. Creates and removes its own namespaces only.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${1:-"1000 4000"}
SECS=${2:-20}
PORTS=${3:-64}
P="gndl$$"; S=$P-srv; C=$P-cli
WORK=$(mktemp -d)
SRVPID=""
stop_server() { if [ -n "$SRVPID" ]; then kill "$SRVPID" 2>/dev/null || true; wait "$SRVPID" 2>/dev/null || true; SRVPID=""; fi; }
cleanup() { stop_server; ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
# GUESTNET=/path/to/guestnet benchmarks another build (A/B in one sitting).
if [ -n "${GUESTNET:-}" ]; then cp "$GUESTNET" "$WORK/guestnet"; else go build -o "$WORK/guestnet" ./cmd/guestnet; fi
go build -o "$WORK/dhcpload" ./bench/dhcpload

lab() { # fresh namespaces; $1=yes makes br0 by hand (guestnet makes its own)
  ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true
  ip netns add $S; ip netns add $C
  ip -n $S link set lo up; ip -n $C link set lo up
  # The clients speak DHCP only: no IPv6 chatter from 256 client ports.
  ip netns exec $C sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1
  if [ "$1" = yes ]; then
    ip -n $S link add br0 type bridge; ip -n $S addr add 10.48.0.1/14 dev br0; ip -n $S link set br0 up
  fi
}
ports() { # PORTS veth pairs: vN a port of br0, pN its client end
  local b="$WORK/ports.batch"; : >"$b"
  for ((i = 0; i < PORTS; i++)); do
    echo "link add v$i type veth peer name p$i netns $C" >>"$b"
    echo "link set v$i master br0 up" >>"$b"
  done
  ip -n $S -batch "$b"
  : >"$b"
  for ((i = 0; i < PORTS; i++)); do echo "link set p$i up" >>"$b"; done
  ip -n $C -batch "$b"
}
wait_port67() { for _ in $(seq 100); do ip netns exec $S ss -Hlun 'sport = :67' | grep -q . && return; sleep 0.05; done; echo "server did not listen" >&2; cat "$WORK/server.log" >&2; exit 1; }

start_guestnet() {
  lab no
  cat > "$WORK/g.yaml" <<'YAML'
networks:
  bench:
    mode: isolated
    bridge: br0
    ipv4: 10.48.0.1/14
    dhcp:
      range: 10.48.0.10-10.51.255.250
      lease: 1h
      per_port: 4096
YAML
  rm -rf "$WORK/gstate"
  "$WORK/guestnet" --netns $S --state-dir "$WORK/gstate" serve --config "$WORK/g.yaml" --log-level error >"$WORK/server.log" 2>&1 &
  SRVPID=$!
  for _ in $(seq 100); do ip -n $S link show br0 >/dev/null 2>&1 && break; sleep 0.05; done
  ports; wait_port67
  STORE_DIR="$WORK/gstate"
}
start_kea() {
  lab yes; ports; rm -f "$WORK"/kea-leases4.csv*
  cat > "$WORK/kea.json" <<JSON
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["br0"]},
  "lease-database": {"type": "memfile", "persist": true, "name": "$WORK/kea-leases4.csv", "lfc-interval": 0},
  "multi-threading": {"enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64},
  "valid-lifetime": 3600,
  "subnet4": [{"id": 1, "subnet": "10.48.0.0/14", "pools": [{"pool": "10.48.0.10 - 10.51.255.250"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stderr"}], "severity": "ERROR"}]
}}
JSON
  KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK ip netns exec $S kea-dhcp4 -c "$WORK/kea.json" >"$WORK/server.log" 2>&1 &
  SRVPID=$!; wait_port67
  STORE_DIR="$WORK"
}

"$WORK/dhcpload" -header
for srv in ${SERVERS:-guestnet kea}; do
  for r in $RATES; do
    "start_$srv"
    sleep 1 # let the server see its ports (guestnet syncs on link events)
    ip netns exec $C "$WORK/dhcpload" -ports "$PORTS" -prefix p -rate "$r" -duration "${SECS}s" \
      -fsync-dir "$STORE_DIR" -label "$srv" || { echo "dhcpload failed; server log:" >&2; tail -20 "$WORK/server.log" >&2; }
    # Where lost clients went: datagrams the server's socket had no room for.
    [ -n "${DEBUG:-}" ] && ip netns exec $S nstat -az UdpRcvbufErrors UdpInDatagrams UdpOutDatagrams >&2
    stop_server
  done
done
