import type { PageProps } from ".";
import { get, text } from "../api";
import { can } from "../session";
import { type Agent, type Alert, type Workload, quarantineReason } from "../types";
import { ErrorBox, Link, Loading, PageHeader, fmtAgo, fmtNum, useAsync } from "../ui";

interface Sprawl {
  believed: number;
  seen: number;
  seen_ratio: number;
  unknown: unknown[];
  quiet: unknown[];
  external: unknown[];
  probed_only: unknown[];
}

function metric(body: string, name: string): number | undefined {
  const m = body.match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m ? Number(m[1]) : undefined;
}

const MODE_COLOR: Record<string, string> = { enforced: "#16a34a", monitor: "#d97706", idle: "#94a3b8", unmanaged: "#cbd5e1" };

export function Dashboard({ session }: PageProps) {
  const data = useAsync(async () => {
    const [workloads, alerts, metrics, ready] = await Promise.all([
      get<{ total: number; items: Workload[] }>("/workloads?limit=10000"),
      get<{ items: Alert[] }>("/alerts?limit=10000"),
      text("/metrics"),
      text("/readyz"),
    ]);
    return { workloads, alerts: alerts.items, metrics, ready };
  }, []);
  // The sprawl report reads the whole window of flows: the rest does not wait for it.
  const sprawlQ = useAsync(() => (can.readSprawl(session) ? get<Sprawl>("/reports/sprawl").catch(() => null) : Promise.resolve(null)), []);
  const sprawl = sprawlQ.data ?? null;
  if (data.error) return <ErrorBox error={data.error} />;
  if (!data.data) return <Loading what="Loading the dashboard" />;
  const { workloads, alerts, metrics, ready } = data.data;
  const items = workloads.items;
  const managed = items.filter((w) => w.managed);
  const modes: Record<string, number> = { enforced: 0, monitor: 0, idle: 0, unmanaged: items.length - managed.length };
  for (const w of managed) modes[w.mode ?? "idle"] = (modes[w.mode ?? "idle"] ?? 0) + 1;
  const quarantined = items.filter((w) => quarantineReason(w) !== undefined).length;
  const open = alerts.filter((a) => a.state === "open");
  const critical = open.filter((a) => a.severity === "critical").length;

  // Alerts over the last 6 hours, by the quarter hour in which they were last seen.
  const now = Date.now();
  const slot = 15 * 60_000;
  const slots = 24;
  const start = Math.floor(now / slot) * slot - (slots - 1) * slot;
  const bins = Array.from({ length: slots }, () => ({ warning: 0, critical: 0 }));
  for (const a of alerts) {
    // The chart is about traffic: quarantine, rollout and agent alerts are not counted in it.
    if (a.kind !== "blocked" && a.kind !== "potentially_blocked") continue;
    const i = Math.floor((a.first_seen_ms - start) / slot);
    if (i >= 0 && i < slots) bins[i][a.severity === "critical" ? "critical" : "warning"]++;
  }
  const maxBin = Math.max(1, ...bins.map((b) => b.warning + b.critical));
  const m = metrics.ok ? metrics.body : "";
  const health = [
    ["Datagrams received", metric(m, "bulkhead_ingest_datagrams_total")],
    ["Flow records decoded", metric(m, "bulkhead_ingest_records_total")],
    ["Summaries stored", metric(m, "bulkhead_flow_store_rows")],
    ["Malformed datagrams", metric(m, "bulkhead_ingest_malformed_total")],
    ["Missing templates", metric(m, "bulkhead_ingest_no_template_total")],
    ["Kernel drops", metric(m, "bulkhead_ingest_dropped_total")],
  ] as const;
  const problems = (metric(m, "bulkhead_ingest_malformed_total") ?? 0) + (metric(m, "bulkhead_ingest_dropped_total") ?? 0);
  const receiving = (metric(m, "bulkhead_ingest_datagrams_total") ?? 0) > 0;
  const uptime = metric(m, "bulkhead_uptime_seconds");

  return (
    <>
      <PageHeader title="Dashboard" sub={session.scope ? `Your scope: ${session.scope}` : "The estate at a glance"}>
        <button type="button" class="btn" onClick={data.reload}>
          Refresh
        </button>
      </PageHeader>
      <div class="grid cols-4">
        <Link href="/inventory" class="card stat" style={{ textDecoration: "none", color: "inherit" }}>
          <span class="k">Workloads</span>
          <span class="v" data-testid="stat-workloads">{fmtNum(items.length)}</span>
          <span class="d">
            {managed.length} managed · {items.length - managed.length} unmanaged
          </span>
        </Link>
        {sprawl ? (
          <Link href="/reports/sprawl" class={`card stat ${sprawl.unknown.length ? "warn" : "ok"}`} style={{ textDecoration: "none", color: "inherit" }}>
            <span class="k">Unknown internal devices</span>
            <span class="v">{sprawl.unknown.length}</span>
            <span class="d">{Math.round(sprawl.seen_ratio * 100)}% of the inventory confirmed by traffic</span>
          </Link>
        ) : can.readSprawl(session) && sprawlQ.loading ? (
          <div class="card stat">
            <span class="k">Unknown internal devices</span>
            <Loading what="Reading the flows" />
          </div>
        ) : (
          <div class="card stat">
            <span class="k">Managed</span>
            <span class="v">{managed.length}</span>
            <span class="d">of your {items.length} workloads</span>
          </div>
        )}
        <Link href="/alerts" class={`card stat ${critical ? "bad" : open.length ? "warn" : "ok"}`} style={{ textDecoration: "none", color: "inherit" }}>
          <span class="k">Open alerts</span>
          <span class="v">{open.length}</span>
          <span class="d">
            {critical} critical · {alerts.filter((a) => a.state === "acknowledged").length} acknowledged
          </span>
        </Link>
        <div class={`card stat ${ready.ok ? "ok" : "bad"}`}>
          <span class="k">Control plane</span>
          <span class="v">{ready.ok ? "Ready" : "Not ready"}</span>
          <span class="d">{uptime !== undefined ? `up ${uptime < 3600 ? `${Math.round(uptime / 60)} min` : `${(uptime / 3600).toFixed(1)} h`}` : ready.body}</span>
        </div>
      </div>
      <div class="grid cols-2">
        <div class="card">
          <h2>Enforcement coverage</h2>
          <div class="bar" role="img" aria-label={Object.entries(modes).map(([k, v]) => `${v} ${k}`).join(", ")}>
            {Object.entries(modes).map(([k, v]) => (v ? <span style={{ width: `${(100 * v) / Math.max(1, items.length)}%`, background: MODE_COLOR[k] }} title={`${k}: ${v}`} /> : null))}
          </div>
          <div class="legend">
            {Object.entries(modes).map(([k, v]) => (
              <span>
                <i style={{ background: MODE_COLOR[k] }} />
                {k} <strong>{v}</strong> ({Math.round((100 * v) / Math.max(1, items.length))}%)
              </span>
            ))}
          </div>
          <p class="muted" style={{ marginBottom: 0 }}>
            Enforced workloads drop what the policy does not allow; in monitor mode the same traffic is reported as potentially blocked.
          </p>
          {quarantined > 0 && (
            <p style={{ marginBottom: 0 }} data-testid="quarantined">
              <Link href="/inventory?quarantined=1">
                {quarantined} workload{quarantined === 1 ? "" : "s"} in quarantine
              </Link>
            </p>
          )}
        </div>
        <div class="card">
          <h2>
            Alerts over the last 6 hours <span class="muted" style={{ fontWeight: 500, fontSize: 12 }}>new alerts per 15 min</span>
          </h2>
          <svg viewBox={`0 0 ${slots * 20} 120`} width="100%" height="140" role="img" aria-label={`${bins.reduce((s, b) => s + b.warning + b.critical, 0)} alerts first seen in the last 6 hours`}>
            <line x1="0" y1="110" x2={slots * 20} y2="110" stroke="#e2e8f0" />
            {bins.map((b, i) => {
              const hw = (100 * b.warning) / maxBin;
              const hc = (100 * b.critical) / maxBin;
              return (
                <g>
                  <rect x={i * 20 + 3} y={110 - hw - hc} width="14" height={hc} fill="#dc2626" rx="2">
                    <title>{`${b.critical} critical`}</title>
                  </rect>
                  <rect x={i * 20 + 3} y={110 - hw} width="14" height={hw} fill="#f59e0b" rx="2">
                    <title>{`${b.warning} warnings at ${new Date(start + i * slot).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}`}</title>
                  </rect>
                </g>
              );
            })}
            {[0, 8, 16, 23].map((i) => (
              <text x={i === 0 ? 0 : i === slots - 1 ? slots * 20 : i * 20 + 10} y="120" font-size="9" text-anchor={i === 0 ? "start" : i === slots - 1 ? "end" : "middle"} fill="#64748b">
                {new Date(start + i * slot).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}
              </text>
            ))}
          </svg>
          <div class="legend">
            <span>
              <i style={{ background: "#dc2626" }} />
              blocked (critical)
            </span>
            <span>
              <i style={{ background: "#f59e0b" }} />
              would be blocked (warning)
            </span>
          </div>
        </div>
      </div>
      <div class="grid cols-2">
        <div class="card">
          <h2>
            Flow collection
            <span class="health">
              <span class="dot" style={{ background: !metrics.ok ? "#94a3b8" : problems ? "#d97706" : receiving ? "#16a34a" : "#94a3b8" }} />
              {!metrics.ok ? "unknown" : problems ? "degraded" : receiving ? "healthy" : "idle"}
            </span>
          </h2>
          <dl class="kv">
            {health.map(([k, v]) => (
              <>
                <dt>{k}</dt>
                <dd>{v === undefined ? "—" : fmtNum(v)}</dd>
              </>
            ))}
          </dl>
        </div>
        <div class="card">
          <AgentHealth session={session} />
          {sprawl && (
            <dl class="kv" style={{ marginTop: 12 }}>
              <dt>Quiet workloads (no traffic in 7 days)</dt>
              <dd>{sprawl.quiet.length}</dd>
              <dt>Addresses only probed</dt>
              <dd>{sprawl.probed_only.length}</dd>
              <dt>External peers</dt>
              <dd>{sprawl.external.length}</dd>
            </dl>
          )}
        </div>
      </div>
    </>
  );
}

/** The agents card: how many report, how many are offline or behind the current policy. */
function AgentHealth({ session }: { session: PageProps["session"] }) {
  const has = session.routes.has("/api/v1/agents");
  const agents = useAsync(() => (has ? get<{ items: Agent[] }>("/agents") : Promise.resolve(null)), []);
  if (!has) {
    return (
      <>
        <h2>Agents</h2>
        <p class="muted" style={{ margin: 0 }}>
          This server has no agent API: workloads are seen through flow exports.
        </p>
      </>
    );
  }
  const items = agents.data?.items ?? [];
  const offline = items.filter((a) => !a.online);
  const behind = items.filter((a) => a.online && !a.in_sync);
  const status = !agents.data ? "unknown" : items.length === 0 ? "none" : offline.length ? "degraded" : behind.length ? "syncing" : "healthy";
  const color = { unknown: "#94a3b8", none: "#94a3b8", degraded: "#dc2626", syncing: "#d97706", healthy: "#16a34a" }[status];
  return (
    <>
      <h2>
        Agents
        <span class="health">
          <span class="dot" style={{ background: color }} />
          {status === "none" ? "none enrolled" : status}
        </span>
      </h2>
      {agents.error ? (
        <ErrorBox error={agents.error} />
      ) : !agents.data ? (
        <Loading what="Loading the agents" />
      ) : items.length === 0 ? (
        <p class="muted" style={{ margin: 0 }} data-testid="agents-none">
          No agent has enrolled: workloads are seen through flow exports only. <Link href="/agents">Enroll one</Link>
        </p>
      ) : (
        <>
          <dl class="kv" data-testid="agent-health">
            <dt>Online</dt>
            <dd>
              {items.length - offline.length} of {items.length}
            </dd>
            <dt>Offline</dt>
            <dd>{offline.length}</dd>
            <dt>Online, policy not yet applied</dt>
            <dd>{behind.length}</dd>
          </dl>
          {offline.length > 0 && (
            <p style={{ margin: "8px 0 0", fontSize: 13 }}>
              Offline:{" "}
              {offline
                .slice(0, 5)
                .map((a) => `${a.workload} (seen ${fmtAgo(a.last_seen_ms)})`)
                .join(", ")}
              {offline.length > 5 ? ` and ${offline.length - 5} more` : ""}
            </p>
          )}
          <p style={{ margin: "8px 0 0" }}>
            <Link href="/agents">See the agents</Link>
          </p>
        </>
      )}
    </>
  );
}
