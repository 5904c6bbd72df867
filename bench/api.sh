#!/usr/bin/env bash
# The control plane API under load: flow-query latency and throughput with wrk against a
# server whose flow store holds DAYS days of a ~1,000-workload estate's minute and hour
# summaries, then workload import and provisioning of a ~10,000-workload estate.
#
#   bench/api.sh                              # defaults below
#   DAYS=7 FLOWS_PER_MINUTE=400 bench/api.sh  # fewer days, denser traffic
#   BACKEND=postgres SKIP_QUERIES=1 bench/api.sh  # control store in PostgreSQL (a throwaway
#                                             # cluster from Debian's package, Unix socket only)
#
# Traffic goes only to 127.0.0.1. Every process started here is stopped by PID, and
# the scratch directory is removed, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DAYS=${DAYS:-30}                          # days of simulated traffic, ending an hour ago
FLOWS_PER_MINUTE=${FLOWS_PER_MINUTE:-100}
APPS=${APPS:-100}                         # 100 applications ≈ 1,008 workloads
REPLAY_RATE=${REPLAY_RATE:-40000}         # records/s: paced so the collector drops nothing
PROV_APPS=${PROV_APPS:-1000}              # 1,000 applications ≈ 10,008 workloads
PROV_RUNS=${PROV_RUNS:-5}
IMPORT_CHUNK=${IMPORT_CHUNK:-2500}
BACKEND=${BACKEND:-sqlite}                # sqlite | postgres: where the control store lives
WRK_DURATION=${WRK_DURATION:-15s}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
BUF=$((128 << 20))

# wrk is only needed here, so it is installed here (Debian package, idempotent).
if ! command -v wrk >/dev/null; then
  apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
fi
cargo build --release --locked -q -p bulkhead
B=${CARGO_TARGET_DIR:-$PWD/target}/release/bulkhead

work=$(mktemp -d)
pids=()
old_rmem=$(cat /proc/sys/net/core/rmem_max)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -f "$work/pg/data/postmaster.pid" ]; then as_pg "$PG_BIN/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true; fi
  echo "$old_rmem" > /proc/sys/net/core/rmem_max 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# The collector asks for a large receive buffer; let it have one while history is replayed.
echo "$BUF" > /proc/sys/net/core/rmem_max 2>/dev/null || echo "note: could not raise net.core.rmem_max (not root?)" >&2

free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
wait_bound() { for _ in $(seq 100); do python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',$1))" 2>/dev/null || return 0; sleep 0.05; done; echo "port $1 never bound" >&2; return 1; }
json() { python3 -c "import json,sys; print(json.load(open('$1'))['$2'])"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# BACKEND=postgres: one cluster for the run (fsync on, as in production), a database per
# server started, so each starts empty like a new data directory.
db_args=()
if [ "$BACKEND" = postgres ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  [ -x "$PG_BIN/initdb" ] || { echo "BACKEND=postgres needs postgresql (scripts/setup)" >&2; exit 1; }
  chmod 711 "$work"; mkdir -p "$work/pg"; [ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
  as_pg "$PG_BIN/initdb" -D "$work/pg/data" -A trust -U postgres -E UTF8 >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-c listen_addresses='' -c unix_socket_directories='$work/pg'" start >/dev/null
  echo "== control store: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (Unix socket, fsync on)" >&2
fi
ndb=0

# Starts `bulkhead server` on DIR at a free port; sets URL and TOKEN.
start_server() {
  local dir=$1 port
  port=$(free_port SOCK_STREAM)
  if [ "$BACKEND" = postgres ]; then
    ndb=$((ndb + 1))
    as_pg "$PG_BIN/createdb" -h "$work/pg" -U postgres "bench$ndb"
    db_args=(--database "postgresql://postgres@${work//\//%2F}%2Fpg/bench$ndb")
  fi
  "$B" server --data "$dir" --listen "127.0.0.1:$port" "${db_args[@]}" >"$dir.out" 2>"$dir.err" &
  pids+=("$!")
  URL=http://127.0.0.1:$port
  for _ in $(seq 600); do curl -sf "$URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "$URL/readyz" >/dev/null || { echo "server on $dir never became ready" >&2; cat "$dir.err" >&2; return 1; }
  TOKEN=$(sed -n 's/^first start: admin token.*: \(bh_[A-Za-z0-9_-]*\).*/\1/p' "$dir.out" | head -1)
  [ -n "$TOKEN" ] || { echo "no admin token printed" >&2; cat "$dir.out" >&2; return 1; }
}
stop_last_server() { local p=${pids[-1]}; kill -INT "$p"; wait "$p" || true; }
api() { # METHOD PATH [curl args…]: fails on any non-2xx, prints the body
  local m=$1 p=$2; shift 2
  curl -sS --fail-with-body -X "$m" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$URL$p" "$@"
}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')" >&2

# ---------------------------------------------------------------------------------------
# 1. Flow queries under load (SKIP_QUERIES=1: only part 2)
if [ "${SKIP_QUERIES:-0}" != 1 ]; then
minutes=$((DAYS * 1440))
start=$(date -u -d "-$((minutes + 60)) minutes" +%Y-%m-%dT%H:%M:00Z)
t0=$(now)
"$B" simulate --out "$work/sim" --apps "$APPS" --minutes "$minutes" --flows-per-minute "$FLOWS_PER_MINUTE" \
  --unknown-devices 100 --attacker --seed 1 --start "$start" >&2
t1=$(now)
port=$(free_port SOCK_DGRAM)
"$B" flows collect --data "$work/q" --listen "127.0.0.1:$port" \
  --inventory "$work/sim/inventory.csv" --policy "$work/sim/policy" >"$work/collect.json" 2>"$work/collect.err" &
pid=$!; pids+=("$pid")
wait_bound "$port"
"$B" flows replay "$work/sim/export.pcap" --to "127.0.0.1:$port" --rate "$REPLAY_RATE" >"$work/sent.json"
sleep 2
kill -INT "$pid"; wait "$pid" || true
t2=$(now)
sent=$(json "$work/sent.json" records); got=$(json "$work/collect.json" records)
summaries=$(json "$work/collect.json" summaries)
rows=$(sqlite3 "$work/q/flows.sqlite" "select count(*) from summary where bucket = 0")
hrows=$(sqlite3 "$work/q/flows.sqlite" "select count(*) from summary where bucket <> 0")
echo "loaded: $DAYS days from $start, $sent records sent, $got received, $summaries summaries written" \
  "($rows minute + $hrows hour rows in the store, $(du -sh "$work/q/flows.sqlite" | cut -f1) on disk);" \
  "simulate $(secs "$t0" "$t1") s, replay + ingest $(secs "$t1" "$t2") s" >&2

start_server "$work/q"
"$B" inventory check --json "$work/sim/inventory.csv" >"$work/inventory.json"
nw=$(python3 -c "import json; print(len(json.load(open('$work/inventory.json'))))" )
api POST /api/v1/workloads/import --data-binary "@$work/inventory.json" >/dev/null
BULKHEAD_SERVER=$URL BULKHEAD_TOKEN=$TOKEN "$B" policy push "$work/sim/policy" >&2
api POST /api/v1/provision -d '{"comment": "bench"}' >/dev/null
echo "server: $nw workloads imported, policy pushed and provisioned" >&2

# One hour in the middle of the loaded days, on a minute boundary.
from_ms=$(( ($(date -u -d "$start" +%s) + minutes * 30) / 60 * 60 * 1000 ))
to_ms=$((from_ms + 3600 * 1000))
win="from_ms=$from_ms&to_ms=$to_ms&limit=100"
wl=$(python3 -c "import json; print([w['name'] for w in json.load(open('$work/inventory.json')) if w['name'].endswith('-app-p1')][0])")
queries=(
  "workload|/api/v1/flows?$win&workload=$wl"
  "labels|/api/v1/flows?$win&labels=app=shop,env=prod"
  "verdict|/api/v1/flows?$win&verdict=potentially_blocked"
)

printf '\n| query (1-hour window, limit 100) | rows returned | p50 | p99 | requests/s | non-2xx |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: |\n'
for q in "${queries[@]}"; do
  name=${q%%|*}; path=${q#*|}
  n=$(api GET "$path" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]) if isinstance(d, dict) else len(d))')
  wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$WRK_DURATION" --latency \
    -H "Authorization: Bearer $TOKEN" "$URL$path" >"$work/wrk-$name.txt"
  ms() { awk -v k="$1" '$1 == k {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    f = (u == "us") ? 0.001 : (u == "s") ? 1000 : 1; printf "%.2f ms", v * f}' "$work/wrk-$name.txt"; }
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$work/wrk-$name.txt")
  bad=$(awk '/Non-2xx/ {print $NF}' "$work/wrk-$name.txt"); bad=${bad:-0}
  printf '| `%s` | %s | %s | %s | %s | %s |\n' "${path#/api/v1/flows?"$win"&}" "$n" "$(ms 50%)" "$(ms 99%)" "$rps" "$bad"
done
echo "queries: GET /api/v1/flows?$win&… (workload $wl); wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency" >&2
stop_last_server
rm -rf "$work/q" "$work/sim"
fi

# ---------------------------------------------------------------------------------------
# 2. Import and provisioning at ~10,000 workloads
"$B" simulate --out "$work/big" --apps "$PROV_APPS" --minutes 1 --flows-per-minute 1 --seed 2 >&2
"$B" inventory check --json "$work/big/inventory.csv" >"$work/big.json"
nw=$(python3 -c "import json; print(len(json.load(open('$work/big.json'))))")
nfiles=$(find "$work/big/policy" -name '*.yaml' | wc -l)
start_server "$work/p"
# One request first; the server's JSON node budget (250,000 nodes) refuses ~5,400+
# workloads in one document with a 400, so on refusal the import goes in chunks.
code=$(curl -sS -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  --data-binary "@$work/big.json" -o "$work/import.json" -w '%{http_code} %{time_total}' "$URL/api/v1/workloads/import")
import_how="one request"; import_s=${code#* }
if [ "${code%% *}" != 200 ] && [ "${code%% *}" != 201 ]; then
  echo "single import of $(du -h "$work/big.json" | cut -f1): HTTP ${code%% *} in ${code#* } s: $(head -c 300 "$work/import.json")" >&2
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); n=int(sys.argv[2]);
[json.dump(d[i:i+n], open(f'{sys.argv[3]}/chunk-{i//n:03}.json','w')) for i in range(0, len(d), n)]" "$work/big.json" "$IMPORT_CHUNK" "$work"
  import_s=0; nchunks=0; held=0
  # The budget also applies to the stored inventory as a whole: stop at the first refusal
  # and provision with what the server holds.
  for f in "$work"/chunk-*.json; do
    r=$(curl -sS -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      --data-binary "@$f" -o "$work/import.json" -w '%{http_code} %{time_total}' "$URL/api/v1/workloads/import")
    if [ "${r%% *}" != 200 ]; then echo "chunk $f refused: HTTP $r: $(head -c 200 "$work/import.json")" >&2; continue; fi
    import_s=$(python3 -c "print($import_s + ${r#* })"); nchunks=$((nchunks + 1))
    held=$((held + $(json "$work/import.json" imported)))
  done
  nw=$held
  import_how="$nchunks accepted requests of ≤ $IMPORT_CHUNK, server holds $nw (one request: HTTP ${code%% *})"
fi
t0=$(now)
BULKHEAD_SERVER=$URL BULKHEAD_TOKEN=$TOKEN "$B" policy push "$work/big/policy" >&2
push_s=$(secs "$t0" "$(now)")
prov=()
for i in $(seq "$PROV_RUNS"); do
  # Each run provisions a real change: one rule of one ruleset gets another port.
  if [ "$i" -gt 1 ]; then
    sed -i "0,/tcp\/[0-9]*/s//tcp\/$((20000 + i))/" "$work/big/policy/40-app010-prod.yaml"
    BULKHEAD_SERVER=$URL BULKHEAD_TOKEN=$TOKEN "$B" policy push "$work/big/policy" >/dev/null 2>&1
  fi
  prov+=("$(api POST /api/v1/provision -d "{\"comment\": \"bench $i\"}" -o "$work/prov.json" -w '%{time_total}')")
done
versions=$(api GET /api/v1/versions | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["items"]) if isinstance(d, dict) else len(d))')
stop_last_server
med=$(python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])) * 1000:.0f} ms')" "${prov[@]}")
all=$(python3 -c "import sys; print(', '.join(f'{float(x) * 1000:.0f}' for x in sys.argv[1:]))" "${prov[@]}")

printf '\ncontrol store: %s\n| what (%s workloads, %s policy files) | result |\n' "$BACKEND" "$nw" "$nfiles"
printf '| --- | ---: |\n'
printf '| `POST /api/v1/workloads/import` of %s workloads, %s | %.0f ms |\n' "$nw" "$import_how" "$(python3 -c "print($import_s * 1000)")"
printf '| `bulkhead policy push` of %s files | %s s |\n' "$nfiles" "$push_s"
printf '| `POST /api/v1/provision`, median of %s (ms each: %s) | %s |\n' "$PROV_RUNS" "$all" "$med"
echo "versions after the runs: $versions" >&2
