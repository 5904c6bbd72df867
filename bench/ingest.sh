#!/usr/bin/env bash
# Sustained IPFIX ingest over UDP loopback at rising rates: Bulkhead's collector
# (decode + provider inference + enrichment + aggregation + verdicts + SQLite store)
# beside nfdump's nfcapd (decode + store), fed by the same generator in the same run.
#
#   bench/ingest.sh                     # default rates
#   RATES="500000 1000000" bench/ingest.sh
#
# Traffic goes only to 127.0.0.1. Every process started here is stopped by PID, and
# the scratch directory is removed, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"500000 1000000 2000000 2500000 3000000 4000000"}
SENDERS=${SENDERS:-8}
FLOWS_PER_MINUTE=${FLOWS_PER_MINUTE:-50000}
MINUTES=${MINUTES:-20}
BUF=$((128 << 20))

./scripts/setup >/dev/null
cargo build --release --locked -q -p bulkhead
B=$PWD/target/release/bulkhead

work=$(mktemp -d)
pids=()
old_rmem=$(cat /proc/sys/net/core/rmem_max)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  echo "$old_rmem" > /proc/sys/net/core/rmem_max 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Both collectors get the same large receive buffer.
echo "$BUF" > /proc/sys/net/core/rmem_max 2>/dev/null || echo "note: could not raise net.core.rmem_max (not root?)" >&2

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_bound() { for _ in $(seq 100); do python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',$1))" 2>/dev/null || return 0; sleep 0.05; done; echo "port $1 never bound" >&2; return 1; }
json() { python3 -c "import json,sys; print(json.load(open('$1'))['$2'])"; }

"$B" simulate --out "$work/sim" --apps 100 --minutes "$MINUTES" --flows-per-minute "$FLOWS_PER_MINUTE" \
  --unknown-devices 100 --attacker --seed 1 >&2
per_capture=$("$B" flows decode "$work/sim/export.pcap" 2>&1 >/dev/null | awk '{print $3}')
echo "capture: $per_capture records; each of $SENDERS senders replays it whole" >&2

printf '| offered rate (records/s) | achieved send rate | sent | Bulkhead received | Bulkhead loss | nfcapd received | nfcapd loss |\n'
printf '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for rate in $RATES; do
  # Bulkhead
  port=$(free_port)
  "$B" flows collect --data "$work/data-$rate" --listen "127.0.0.1:$port" \
    --inventory "$work/sim/inventory.csv" --policy "$work/sim/policy" >"$work/ours.json" 2>"$work/ours.err" &
  pid=$!; pids+=("$pid")
  wait_bound "$port"
  "$B" flows replay "$work/sim/export.pcap" --to "127.0.0.1:$port" --rate "$rate" --senders "$SENDERS" >"$work/sent.json"
  sleep 2
  kill -INT "$pid"; wait "$pid" || true
  sent=$(json "$work/sent.json" records)
  ours=$(json "$work/ours.json" records)

  # nfcapd
  port=$(free_port)
  mkdir -p "$work/nf-$rate"
  nfcapd -w "$work/nf-$rate" -p "$port" -b 127.0.0.1 -B "$BUF" >/dev/null 2>&1 &
  pid=$!; pids+=("$pid")
  wait_bound "$port"
  "$B" flows replay "$work/sim/export.pcap" --to "127.0.0.1:$port" --rate "$rate" --senders "$SENDERS" >"$work/sent2.json"
  sleep 2
  kill -TERM "$pid"; wait "$pid" || true
  sent2=$(json "$work/sent2.json" records)
  theirs=$(nfdump -R "$work/nf-$rate" -I | awk '/^Flows:/ {print $2}')
  rm -rf "$work/nf-$rate" "$work/data-$rate"

  loss() { python3 -c "print(f'{max(0.0, 1 - $2 / $1) * 100:.3f} %')"; }
  achieved=$(json "$work/sent.json" records_per_second)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$rate" "$achieved" "$sent" "$ours" "$(loss "$sent" "$ours")" "$theirs" "$(loss "$sent2" "$theirs")"
done
