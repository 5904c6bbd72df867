#!/usr/bin/env bash
# The tamper window: how long a hand-made change to Bulkhead's table (an accept rule
# inserted with nft) stays in the kernel before the agent's guard has restored the table,
# measured by the nftables generation. The guard as it runs (woken by netlink on every
# nftables change) beside the same guard polling every 2 s, as the agent did before, in
# the same run.
#
#   bench/tamper.sh             # as root
#   ROUNDS=50 bench/tamper.sh
#
# One network namespace, created here and removed on exit whatever happens; no traffic
# at all (the table is only listed and changed).
#
# Output: progress on stderr; on stdout one markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-30}
POLL_ROUNDS=${POLL_ROUNDS:-8}

die() { echo "tamper.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (a network namespace, nftables)"
for cmd in nft ip; do command -v "$cmd" >/dev/null || die "$cmd missing: run scripts/setup"; done

cargo build --release --locked -q -p bulkhead-agent --example tamper_window
B=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/tamper_window

NS=bhtamper$$
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"

echo "| guard | rounds | window from the tamper's return: median / p90 / max (ms) | from its start, nft's start-up included: median / p90 / max (ms) |"
echo "| --- | --- | --- | --- |"
for mode in watch poll; do
  rounds=$ROUNDS
  [ "$mode" = poll ] && rounds=$POLL_ROUNDS
  echo "tamper.sh: $mode, $rounds rounds" >&2
  read -r m r l50 l90 lmax h50 h90 hmax < <(ip netns exec "$NS" "$B" "$mode" "$rounds")
  echo "| $m | $r | $l50 / $l90 / $lmax | $h50 / $h90 / $hmax |"
done
