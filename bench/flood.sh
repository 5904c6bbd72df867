#!/usr/bin/env bash
# The collector under a mixed flood: garbage (five kinds of malformed datagrams and
# well-formed IPFIX of reserved and never-announced sets), truncated vendor templates,
# template storms past the decoder's caps (64 observation domains x 1024 template ids
# per exporter), data sets whose template never comes, and valid NetFlow v5, v9 and
# IPFIX fixture traffic, from ~3,800 source addresses of 127.0.0.0/8. Records the
# collector's peak RSS (VmHWM, /proc/PID/status) and RSS, its counters before and
# after, the send rate, and whether every record of the valid exporters was counted.
#
#   bench/flood.sh
#   DATAGRAMS=600000 RATE=0 STORM_FIELDS=30 STORM_HOSTS=16 bench/flood.sh
#
# The collector is crates/collector/examples/flood.rs (the bulkhead-collector crate:
# decode, aggregate, enrich; summaries counted, not stored). Traffic goes only to
# 127.0.0.1; every process started here is stopped by PID and the scratch directory
# removed, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DATAGRAMS=${DATAGRAMS:-300000}
RATE=${RATE:-50000}             # datagrams/s offered; 0 = as fast as the sender goes
STORM_FIELDS=${STORM_FIELDS:-"1 30"}     # fields per storm template, one run each
STORM_HOSTS=${STORM_HOSTS:-4}
WORKERS=${WORKERS:-2}
BUF=$((64 << 20))

cargo build --release --locked -q -p bulkhead-collector --example flood
F=$PWD/target/release/examples/flood

work=$(mktemp -d)
pids=()
old_rmem=$(cat /proc/sys/net/core/rmem_max)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  echo "$old_rmem" > /proc/sys/net/core/rmem_max 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "$BUF" > /proc/sys/net/core/rmem_max 2>/dev/null || echo "note: could not raise net.core.rmem_max (not root?)" >&2

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kb() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$2/status"; }

echo "machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
printf '| storm hosts x fields | offered rate | achieved (datagrams/s) | sent | received | kernel drops | malformed | no_template | exporters | templates (max/exporter) | held sets (max/exporter) | RSS idle → after flood (MiB) | peak RSS (MiB) | valid records (expected / counted) |\n'
printf '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :--- |\n'
for fields in $STORM_FIELDS; do
  port=$(free_port)
  rm -f "$work/stop" "$work/status.jsonl"
  "$F" collect --listen "127.0.0.1:$port" --workers "$WORKERS" --stop-file "$work/stop" \
    --status "$work/status.jsonl" >"$work/report.json" 2>"$work/collect.err" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 100); do grep -q listening "$work/collect.err" && break; sleep 0.05; done
  # Warm-up: the valid exporters alone, so they are known (and protected) before the flood.
  "$F" send --to "127.0.0.1:$port" --valid-only --datagrams 300 --rate 1000 >"$work/warm.json"
  sleep 2
  idle_rss=$(kb VmRSS "$pid")
  tail -n 1 "$work/status.jsonl" >"$work/before.json"
  "$F" send --to "127.0.0.1:$port" --datagrams "$DATAGRAMS" --rate "$RATE" --storm-fields "$fields" --storm-hosts "$STORM_HOSTS" >"$work/sent.json"
  sleep 3
  after_rss=$(kb VmRSS "$pid"); hwm=$(kb VmHWM "$pid")
  touch "$work/stop"; wait "$pid" || true
  python3 - "$work" "$STORM_HOSTS x $fields" "$RATE" "$idle_rss" "$after_rss" "$hwm" <<'EOF'
import json, sys
work, fields, rate, idle, after, hwm = sys.argv[1:]
load = lambda n: json.load(open(f"{work}/{n}"))
warm, sent, rep, before = load("warm.json"), load("sent.json"), load("report.json"), load("before.json")
m = rep["metrics"]
expected = {ip: warm["valid_records"].get(ip, 0) + sent["valid_records"].get(ip, 0)
            for ip in set(warm["valid_records"]) | set(sent["valid_records"])}
counted = rep["valid_records"]
ok = all(counted.get(ip) == n for ip, n in expected.items())
mib = lambda kb: f"{int(kb) / 1024:.0f}"
print(f"| {fields} | {rate} | {sent['datagrams_per_second']} | {sent['datagrams'] + warm['datagrams']} | {m['datagrams']} "
      f"| {m['dropped']} | {m['malformed']} | {m['no_template']} | {rep['exporters']} "
      f"| {rep['templates_total']} ({rep['templates_max_per_exporter']}) | {rep['pending_sets_total']} ({rep['pending_sets_max_per_exporter']}) "
      f"| {mib(idle)} → {mib(after)} | {mib(hwm)} | {sum(expected.values())} / {sum(counted.values())} {'all counted' if ok else 'MISSING'} |")
print(f"  before the flood: {json.dumps(before['metrics'])}", file=sys.stderr)
print(f"  after:            {json.dumps(m)}", file=sys.stderr)
print(f"  sent by kind:     {json.dumps(sent['by_kind'])}, {sent['bytes']} bytes in {sent['seconds']} s", file=sys.stderr)
print(f"  table: {json.dumps(rep['table'])}; valid per exporter expected {json.dumps(expected, sort_keys=True)} counted {json.dumps(counted, sort_keys=True)}", file=sys.stderr)
EOF
done
