#!/usr/bin/env bash
# Enforcement with real nftables: how long Bulkhead's table takes to render and apply with
# 10 … 100,000 peer addresses, and the TCP connection-setup rate through it, beside the
# same rules as a linear iptables chain (iptables-nft, Debian's default, and
# iptables-legacy) and beside no firewall at all, all in the same run.
#
#   bench/enforce.sh                                  # as root; defaults below
#   SIZES="10 1000" ROUNDS=1 SECS=2 bench/enforce.sh  # a quick look
#
# Five network namespaces, all created here and removed on exit whatever happens: a
# client, and one server per configuration (none, bulkhead, iptables-nft, iptables-legacy),
# each joined to the client by its own veth pair on its own 192.168.7x.0/24, with no other
# route. Peer addresses (10.0.0.0/8, fd00::/8) are set and rule elements only: the only
# traffic is client ↔ server inside those namespaces. Sysctls are set inside them only.
#
# Output: progress on stderr; on stdout one markdown table of medians.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"10 1000 10000 100000"}
RUNS=${RUNS:-5}        # apply timings: median of RUNS
ROUNDS=${ROUNDS:-3}    # connection-rate rounds, the configurations interleaved; median
SECS=${SECS:-5}        # seconds per connection-rate measurement
THREADS=${THREADS:-2}  # client threads
PORT=8008              # the port of the rule the client is in (see enforce_bench.rs)

die() { echo "enforce.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, nftables)"
# iptables (Debian 12: iptables-nft by default, iptables-legacy alongside) is the peer.
for cmd in nft ip python3 iptables-nft-restore iptables-legacy-restore; do
  command -v "$cmd" >/dev/null || die "$cmd missing: run scripts/setup"
done

# ENFORCE_BENCH=path: a binary built earlier (e.g. while the workspace does not build).
if [ -z "${ENFORCE_BENCH:-}" ]; then
  cargo build --release --locked -q -p bulkhead-nft --example enforce_bench
fi
B=${ENFORCE_BENCH:-${CARGO_TARGET_DIR:-$PWD/target}/release/examples/enforce_bench}

P=bhb$$
CLI=$P-cli
CONFIGS=(none bulkhead iptnft iptleg)
declare -A SRV NET
for i in "${!CONFIGS[@]}"; do
  SRV[${CONFIGS[$i]}]=$P-${CONFIGS[$i]}
  NET[${CONFIGS[$i]}]=192.168.$((70 + i))
done
namespaces=("$CLI" "${SRV[@]}")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do
    # Anything still running in a namespace of ours is ours too.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true # also removes its veth ends, hence the pairs
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ns() { date +%s%N; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

for ns in "${namespaces[@]}"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# The client closes first; without TIME_WAIT sockets it never runs out of ports.
in_ns "$CLI" sysctl -q -w net.ipv4.tcp_max_tw_buckets=0 net.ipv4.ip_local_port_range="1024 65535"
for i in "${!CONFIGS[@]}"; do
  c=${CONFIGS[$i]} s=${SRV[${CONFIGS[$i]}]} n=${NET[${CONFIGS[$i]}]}
  # Created inside the namespaces: no interface ever appears on the host.
  ip link add "v$i" netns "$CLI" type veth peer name v0 netns "$s"
  ip -n "$CLI" addr add "$n.2/24" dev "v$i"
  ip -n "$s" addr add "$n.1/24" dev v0
  # A second client address that no rule admits, to check that the tables do drop.
  ip -n "$CLI" addr add "$n.3/24" dev "v$i"
  ip -n "$CLI" link set "v$i" up
  ip -n "$s" link set v0 up
  in_ns "$s" sysctl -q -w net.ipv4.tcp_max_tw_buckets=0 net.core.somaxconn=4096
  in_ns "$s" "$B" serve "$n.1:$PORT" >"$work/serve-$c" &
  pids+=("$!") # `ip netns exec` execs in place: this is the server's pid
done
for c in "${CONFIGS[@]}"; do
  for _ in $(seq 50); do grep -q ready "$work/serve-$c" && break; sleep 0.1; done
  grep -q ready "$work/serve-$c" || die "server for $c did not start"
done

# Conntrack keeps closed connections for 2 minutes by default; at tens of thousands of
# connections a second that would fill its table. Per namespace, once conntrack is in use.
short_conntrack() {
  in_ns "$1" sysctl -q -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 \
    net.netfilter.nf_conntrack_tcp_timeout_close=1 net.netfilter.nf_conntrack_tcp_timeout_fin_wait=1 \
    net.netfilter.nf_conntrack_tcp_timeout_last_ack=1 net.netfilter.nf_conntrack_tcp_timeout_close_wait=1
}

# probe CONFIG SRC: "connected", "timeout" or "refused", from SRC in the client namespace.
probe() {
  in_ns "$CLI" python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(1); s.bind((sys.argv[1], 0))
try: s.connect((sys.argv[2], int(sys.argv[3]))); print("connected")
except socket.timeout: print("timeout")
except ConnectionRefusedError: print("refused")' "$2" "${NET[$1]}.1" "$PORT"
}
expect() { # CONFIG: the client is let in, the other address is not (or is, with no table)
  local c=$1 want_other=timeout
  [ "$c" = none ] && want_other=connected
  [ "$(probe "$c" "${NET[$c]}.2")" = connected ] || die "$c: the admitted client cannot connect"
  [ "$(probe "$c" "${NET[$c]}.3")" = "$want_other" ] || die "$c: an address no rule admits was not dropped"
}

# Loads an iptables-restore file RUNS times with TOOL; prints the median in ms.
load_iptables() {
  local tool=$1 ns=$2 file=$3 t0 t1
  for _ in $(seq "$RUNS"); do
    t0=$(now_ns); in_ns "$ns" "$tool" <"$file"; t1=$(now_ns)
    echo $(((t1 - t0) / 1000)) # µs
  done | median | awk '{printf "%.1f", $1 / 1000}'
}

echo "== $(nproc) cores, $(uname -r), $(nft --version), $(iptables-nft --version), iptables-legacy $(iptables-legacy --version | awk '{print $2}')" >&2
echo "== load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
results=$work/results
for n in $SIZES; do
  echo "== $n peers (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  # Bulkhead: render, apply into an empty table, apply over it, read back, drift check.
  bh_times=$("$B" apply "${SRV[bulkhead]}" "$n" "${NET[bulkhead]}.2" "$PORT" "$RUNS")
  short_conntrack "${SRV[bulkhead]}"
  # The same IPv4 rules as linear chains, in the same order; the client's rule is last.
  "$B" iptables "$n" "${NET[iptnft]}.2" "$PORT" >"$work/iptnft"
  "$B" iptables "$n" "${NET[iptleg]}.2" "$PORT" >"$work/iptleg"
  ipt_rules=$(grep -c -- '^-A' "$work/iptnft")
  nft_load=$(load_iptables iptables-nft-restore "${SRV[iptnft]}" "$work/iptnft")
  leg_load=$(load_iptables iptables-legacy-restore "${SRV[iptleg]}" "$work/iptleg")
  short_conntrack "${SRV[iptnft]}"
  short_conntrack "${SRV[iptleg]}"
  for c in "${CONFIGS[@]}"; do expect "$c"; done
  # rates: every round's conn/s; shares: each one as a percentage of the same round's
  # no-table rate, which cancels most of the noise from other load on the machine.
  declare -A rates=() shares=()
  for r in $(seq "$ROUNDS"); do
    declare -A this=()
    for c in "${CONFIGS[@]}"; do
      read -r rate count failed < <(in_ns "$CLI" "$B" connect "${NET[$c]}.1:$PORT" "$SECS" "$THREADS")
      echo "   round $r $c: $rate conn/s ($count connections, $failed failed)" >&2
      rates[$c]+="$rate "
      this[$c]=$rate
    done
    for c in "${CONFIGS[@]}"; do
      shares[$c]+="$(awk -v a="${this[$c]}" -v b="${this[none]}" 'BEGIN {printf "%.1f", 100 * a / b}') "
    done
    unset this
  done
  med() { tr ' ' '\n' <<<"${rates[$1]}" | grep . | median; }
  share() { tr ' ' '\n' <<<"${shares[$1]}" | grep . | median; }
  echo -e "$bh_times\t$ipt_rules\t$nft_load\t$leg_load\t$(med bulkhead)\t$(med iptnft)\t$(med iptleg)\t$(med none)\t$(share bulkhead)\t$(share iptnft)\t$(share iptleg)" >>"$results"
  unset rates shares
done
echo "== load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

echo "| peers | nft text | render | apply (new) | apply (replace) | read-back (snapshot) | drift check | iptables rules | load iptables-nft | load iptables-legacy | conn/s no table | conn/s bulkhead | conn/s iptables-nft linear | conn/s iptables-legacy linear |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
while IFS=$'\t' read -r peers bytes render new replace snap drift rules nload lload bh inft ileg none sbh sinft sileg; do
  echo "| $peers | $((bytes / 1024)) KiB | $render ms | $new ms | $replace ms | $snap ms | $drift ms | $rules | $nload ms | $lload ms | $none | $bh ($sbh %) | $inft ($sinft %) | $ileg ($sileg %) |"
done <"$results"
