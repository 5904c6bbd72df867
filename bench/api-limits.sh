#!/usr/bin/env bash
# Can one address blind the API? Opens IDLE idle TCP connections from 127.0.0.1 to a
# `bulkhead server` (they send nothing), then asks /healthz from another loopback
# address (127.0.0.2) and measures: whether it is answered and how fast, how many of
# the idle connections the server closed at once (its per-address cap), how many it
# still holds after the header-read timeout, and the server's CPU while they sit there
# (an accept loop that spins on EMFILE burns a core).
#
#   bench/api-limits.sh                              # this build (debug is fine)
#   BULKHEAD=/path/to/older/bulkhead bench/api-limits.sh   # a peer: an older build
#
# The server runs with `ulimit -n FDS` so that the file descriptor limit is reached on a
# small machine. Everything stays on 127.0.0.0/8; every loop is bounded; the server is
# stopped by PID on exit.
#
# Output: progress on stderr; on stdout one markdown table row: connections opened,
# /healthz from 127.0.0.2 after 1 s and after HOLD s, the server's open file descriptors
# at those times, and its CPU while the connections sit there.
set -euo pipefail
cd "$(dirname "$0")/.."

IDLE=${IDLE:-5000}     # idle connections opened from 127.0.0.1
FDS=${FDS:-4096}       # the server's file descriptor limit
HOLD=${HOLD:-20}       # seconds the idle connections are held before the last count

if [ -z "${BULKHEAD:-}" ]; then
  cargo build --locked -q -p bulkhead
  BULKHEAD=target/debug/bulkhead
fi
TMP=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(ulimit -n "$FDS"; exec "$BULKHEAD" server --data "$TMP/data" --listen "127.0.0.1:$PORT") \
  >"$TMP/out" 2>"$TMP/err" &
PID=$!
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break
  sleep 0.1
done

python3 - "$PORT" "$PID" "$IDLE" "$HOLD" "$FDS" <<'PY'
import os, socket, sys, time

port, pid, idle, hold, fds = (int(a) for a in sys.argv[1:])
hz = 100  # clock ticks per second (getconf CLK_TCK on Linux)

def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz

def healthz(source):
    s = socket.socket()
    s.settimeout(5)
    start = time.monotonic()
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answer = s.recv(64)
        ok = answer.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    finally:
        s.close()
    return ok, (time.monotonic() - start) * 1000

conns = []
# Non-blocking connects with one deadline: a server that stopped accepting leaves the
# kernel's backlog full and later connects pending, which must not stall the bench.
deadline = time.monotonic() + 20
for _ in range(idle):
    if time.monotonic() > deadline:
        break
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        continue
    conns.append(s)
time.sleep(1)
def server_fds():
    return len(os.listdir(f"/proc/{pid}/fd"))
held = server_fds()
cpu0 = cpu_seconds()
t0 = time.monotonic()
ok_other, ms_other = healthz("127.0.0.2")
time.sleep(5)
cpu = (cpu_seconds() - cpu0) / (time.monotonic() - t0) * 100
time.sleep(max(0, hold - 6))
left = server_fds()
ok_late, ms_late = healthz("127.0.0.2")
said = lambda ok, ms: f"{'answered' if ok else 'NOT answered'} ({ms:.0f} ms)"
print(f"healthz from 127.0.0.2: after 1 s {said(ok_other, ms_other)}, after {hold} s "
      f"{said(ok_late, ms_late)}; server file descriptors with {len(conns)} idle connections "
      f"open: {held} after 1 s, {left} after {hold} s (limit {fds}); server CPU while "
      f"held: {cpu:.0f} %", file=sys.stderr)
yes = lambda ok, ms: f"{'yes' if ok else 'no'} ({ms:.0f} ms)"
print(f"| {len(conns)} | {yes(ok_other, ms_other)} | {yes(ok_late, ms_late)} | {held} | {left} | {cpu:.0f} % |")
for s in conns:
    s.close()
PY
