#!/usr/bin/env bash
# The host agent's own cost: resident memory and CPU of `bulkhead agent` at idle and
# while its host accepts 1,000 new TCP connections a second, (a) allowed by a rule, so
# the agent sees them through conntrack only, and (b) allowed by no rule in monitor
# mode, so each one is also logged to NFLOG, read by the agent and reported as a
# potentially-blocked flow.
#
#   bench/agent.sh                       # as root; release build
#   RATE=500 SECS=10 bench/agent.sh      # a quick look
#
# Four network namespaces, created here and removed on exit whatever happens: a switch
# (a bridge), ctl (the server, 10.78.0.1), host (the agent and a listener, 10.78.0.2)
# and client (the load, 10.78.0.3). No namespace has a route out; all traffic stays
# between them. Sysctls are set inside them only.
#
# Output: progress on stderr; on stdout one markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-1000}   # new connections per second
SECS=${SECS:-30}     # seconds measured per phase (after WARMUP)
WARMUP=${WARMUP:-10} # seconds of load before measuring

die() { echo "agent.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, nftables)"
for cmd in nft ip python3 curl conntrack; do
  command -v "$cmd" >/dev/null || die "$cmd missing: run scripts/setup"
done
if [ -z "${BULKHEAD:-}" ]; then
  cargo build --release --locked -q -p bulkhead
fi
B=${BULKHEAD:-${CARGO_TARGET_DIR:-$PWD/target}/release/bulkhead}

P=bha$$
SW=$P-sw CTL=$P-ctl HOST=$P-host CLIENT=$P-cli
namespaces=("$SW" "$CTL" "$HOST" "$CLIENT")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
i=0
for pair in "$CTL 10.78.0.1" "$HOST 10.78.0.2" "$CLIENT 10.78.0.3"; do
  set -- $pair
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip link add eth0 netns "$1" type veth peer name "p$i" netns "$SW"
  ip -n "$SW" link set "p$i" master br0
  ip -n "$SW" link set "p$i" up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  i=$((i + 1))
done

echo "starting the server" >&2
ip netns exec "$CTL" "$B" server --data "$work/server" --listen 10.78.0.1:8080 \
  --agent-listen 10.78.0.1:8443 >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "admin token" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
TOKEN=$(grep "admin token" "$work/server.out" | awk '{print $NF}')
[ -n "$TOKEN" ] || die "no admin token: $(cat "$work/server.log")"
api() { # METHOD PATH [BODY]
  ip netns exec "$CTL" curl -sS --fail-with-body -m 10 -X "$1" \
    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
    ${3:+--data-binary "$3"} "http://10.78.0.1:8080$2"
}
for _ in $(seq 100); do api GET /healthz >/dev/null 2>&1 && break; sleep 0.1; done

api POST /api/v1/workloads/import '[
  {"name": "client", "kind": "vm", "managed": true, "addresses": ["10.78.0.3"], "labels": {"app": "bench", "role": "client"}, "mode": "monitor"}
]' >/dev/null
POLICY='bulkhead: v1\nkind: tier\nname: application\norder: 10\n---\nbulkhead: v1\nkind: ruleset\nname: bench\ntier: application\nscope:\n  app: bench\nrules:\n  - id: client-to-server\n    action: allow\n    from: [role=client]\n    to: [role=server]\n    services: [tcp/9000]\n'
api PUT /api/v1/draft/files "{\"files\": [{\"name\": \"bench.yaml\", \"content\": \"$POLICY\"}]}" >/dev/null
api POST /api/v1/provision '{"comment": "agent bench"}' >/dev/null
KEY=$(api POST /api/v1/pairing-profiles \
  '{"name": "bench", "labels": {"app": "bench", "role": "server"}, "mode": "monitor", "max_uses": 1}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["pairing_key"])')

echo "starting the agent" >&2
ip netns exec "$HOST" "$B" agent --server https://10.78.0.1:8443 --pairing-key "$KEY" \
  --state-dir "$work/agent" --name server 2>"$work/agent.log" &
AGENT=$!
pids+=($AGENT)
for _ in $(seq 300); do
  api GET /api/v1/agents 2>/dev/null | grep -q '"in_sync":true' && break
  sleep 0.2
done
api GET /api/v1/agents | grep -q '"in_sync":true' || die "the agent did not apply its policy: $(cat "$work/agent.log")"
# A reset connection's conntrack entry (and so its flow report) ends 10 s later
# (nf_conntrack_tcp_timeout_close); a closed one's after TIME_WAIT, 120 s by default.
ip netns exec "$HOST" sysctl -qw net.core.somaxconn=4096

ip netns exec "$HOST" python3 -c '
import selectors, socket, struct
sel = selectors.DefaultSelector()
for port in (9000, 9001):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.78.0.2", port))
    s.listen(4096)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        try:
            conn, _ = key.fileobj.accept()
        except BlockingIOError:
            continue
        # Reset rather than close: no TIME_WAIT on either side, so 42,000 connections
        # from one client address never meet a port still held by an earlier one.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
' &
pids+=($!)
sleep 0.5

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

# measure PID: its CPU share of one core and peak RSS (MiB) over SECS seconds.
measure() {
  local t0 t1 peak=0 r
  t0=$(ticks "$1")
  for _ in $(seq "$SECS"); do
    sleep 1
    r=$(rss_kb "$1"); [ "$r" -gt "$peak" ] && peak=$r
  done
  t1=$(ticks "$1")
  python3 -c "print(f'{($t1 - $t0) / $HZ / $SECS * 100:.1f} {$peak / 1024:.1f}')"
}

# load PORT SECONDS: RATE connections a second from the client, paced; prints how many
# connected.
load() {
  ip netns exec "$CLIENT" python3 -c '
import socket, sys, time
port, secs, rate = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
start = time.monotonic(); n = ok = 0
while True:
    due = start + n / rate
    now = time.monotonic()
    if due - start >= secs: break
    if due > now: time.sleep(due - now)
    n += 1
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("10.78.0.2", port)); ok += 1
    except OSError:
        pass
    s.close()
print(ok, n)
' "$1" "$2" "$RATE"
}

phase() { # PID PORT → "cpu rss connected attempted"
  local pid=$1 port=$2 m
  load "$port" $((WARMUP + SECS + 2)) >"$work/load.out" &
  local lp=$!
  sleep "$WARMUP"
  m=$(measure "$pid")
  wait "$lp"
  echo "$m $(cat "$work/load.out")"
}

echo "agent idle: ${SECS} s" >&2
sleep 5
read -r idle_cpu idle_rss < <(measure "$AGENT")
echo "agent, allowed connections at $RATE/s: ${WARMUP} s warm-up, ${SECS} s measured" >&2
read -r a_cpu a_rss a_ok a_n < <(phase "$AGENT" 9000)
echo "agent, unallowed (monitor-logged) connections at $RATE/s" >&2
read -r b_cpu b_rss b_ok b_n < <(phase "$AGENT" 9001)

count_flows() {
  api GET "/api/v1/flows?workload=server&limit=10000" | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(f.get("connections", 0) for f in items if f.get("port") == 9000),
      sum(f.get("connections", 0) for f in items if f.get("port") == 9001))'
}
# The last connections are reported when their conntrack entries expire and the next
# batch goes out: wait until the count stops moving.
flows=$(count_flows)
for _ in $(seq 20); do
  sleep 5
  now=$(count_flows)
  [ "$now" = "$flows" ] && break
  flows=$now
done
status=$(api GET /api/v1/agents)
read -r flows_a flows_b <<<"$flows"

# The peer, alone under the same load: conntrack-tools' event reader, subscribed to the
# same NEW and DESTROY events in the same namespace, printing each with its counters to
# /dev/null. The agent is stopped first (its table stays, as always), so the two never
# compete for the CPU or the events.
kill "$AGENT"; wait "$AGENT" 2>/dev/null || true
ip netns exec "$HOST" conntrack -E -e NEW,DESTROY -o timestamp,extended >/dev/null 2>&1 &
PEER=$!
pids+=($PEER)
echo "conntrack -E idle, then the same two loads" >&2
sleep 2
read -r pidle_cpu pidle_rss < <(measure "$PEER")
read -r pa_cpu pa_rss pa_ok pa_n < <(phase "$PEER" 9000)
read -r pb_cpu pb_rss pb_ok pb_n < <(phase "$PEER" 9001)
dropped=$(python3 -c 'import json,sys; a=json.load(sys.stdin)["items"][0]; print((a.get("status") or {}).get("flows_dropped", "?"))' <<<"$status")

cat <<EOF
| $RATE new connections/s offered | agent CPU (% of one core) | agent peak RSS (MiB) | connections made (client) | connections in the server's flows | \`conntrack -E\` CPU | \`conntrack -E\` RSS (MiB) | connections made (client) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| idle (policy applied, tamper check every 2 s, heartbeat every 5 s) | $idle_cpu | $idle_rss | | | $pidle_cpu | $pidle_rss | |
| allowed by a rule (conntrack only) | $a_cpu | $a_rss | $a_ok of $a_n | $flows_a | $pa_cpu | $pa_rss | $pa_ok of $pa_n |
| allowed by no rule, monitor mode (conntrack + NFLOG) | $b_cpu | $b_rss | $b_ok of $b_n | $flows_b | $pb_cpu | $pb_rss | $pb_ok of $pb_n |

Flows the agent dropped for a full buffer: $dropped.
EOF
