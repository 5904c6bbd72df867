import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { get, post, query } from "../api";
import { setParams } from "../router";
import { can, parseLabels } from "../session";
import type { Alert } from "../types";
import { touches } from "./Rollouts";
import { Badge, Empty, ErrorBox, LabelChips, Loading, PageHeader, fmtAgo, fmtNum, fmtTime, toast, useAsync } from "../ui";

export function Alerts({ session, params }: PageProps) {
  const state = params.get("state") ?? "open";
  const kind = params.get("kind") ?? "";
  // `labels`: only alerts with an end carrying all these labels (a rollout's "Review them").
  const labels = params.get("labels") ?? "";
  const alerts = useAsync(
    () => get<{ items: Alert[] }>(`/alerts${query({ state: state === "all" || state === "unresolved" ? "" : state, kind, limit: state === "unresolved" || labels ? 10000 : 1000 })}`),
    [state, kind, labels],
  );
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState<number | null>(null);
  const mayChange = can.changeAlerts(session);
  async function act(a: Alert, to: "acknowledge" | "resolve") {
    setBusy(a.id);
    setErr(null);
    try {
      await post(`/alerts/${a.id}/${to}`);
      toast(`Alert ${a.id} ${to === "acknowledge" ? "acknowledged" : "resolved"}`);
      alerts.reload();
    } catch (e) {
      setErr(e);
    } finally {
      setBusy(null);
    }
  }
  const selector = parseLabels(labels);
  const items = (alerts.data?.items ?? []).filter((a) => (state !== "unresolved" || a.state !== "resolved") && (!labels || touches(a, selector)));
  return (
    <>
      <PageHeader title="Alerts" sub="Traffic the provisioned policy blocks (enforced) or would block (monitor), one alert per source group, destination group and service." />
      <div class="toolbar">
        <div class="field">
          <label for="alert-state">State</label>
          <select id="alert-state" value={state} onChange={(e) => setParams({ state: (e.target as HTMLSelectElement).value })}>
            <option value="open">Open</option>
            <option value="acknowledged">Acknowledged</option>
            <option value="resolved">Resolved</option>
            <option value="unresolved">Open or acknowledged</option>
            <option value="all">All</option>
          </select>
        </div>
        <div class="field">
          <label for="alert-kind">Kind</label>
          <select id="alert-kind" value={kind} onChange={(e) => setParams({ kind: (e.target as HTMLSelectElement).value })}>
            <option value="">Any</option>
            <option value="potentially_blocked">Would be blocked</option>
            <option value="blocked">Blocked</option>
            <option value="quarantine">Quarantine</option>
            <option value="quarantine_released">Released from quarantine</option>
            <option value="rollout">Rollout notices</option>
            <option value="agent_offline">Agent offline</option>
            <option value="tamper">Firewall tampered with</option>
            <option value="enforcement_breach">Enforcement breach (blocked, yet established)</option>
            <option value="policy_rejected">Policy rejected by an agent</option>
            <option value="exporter_loss">Exporter losing records</option>
            <option value="exporter_table_full">Exporter table full</option>
          </select>
        </div>
        {labels && (
          <div class="field">
            <span class="label-like">Touching</span>
            <span class="chips">
              <LabelChips labels={selector} />{" "}
              <button type="button" class="btn small" aria-label={`Show alerts of any labels, not only ${labels}`} onClick={() => setParams({ labels: null })}>
                Any labels
              </button>
            </span>
          </div>
        )}
      </div>
      <ErrorBox error={alerts.error ?? err} />
      {alerts.loading && !alerts.data ? (
        <Loading />
      ) : (
        <div class="table-wrap">
          <table aria-label="Alerts">
            <thead>
              <tr>
                <th>Severity</th>
                <th>Alert</th>
                <th class="num">Count</th>
                <th>First seen</th>
                <th>Last seen</th>
                <th>State</th>
                {mayChange && <th />}
              </tr>
            </thead>
            <tbody>
              {items.map((a) => (
                <tr data-testid={`alert-${a.id}`}>
                  <td>
                    <Badge tone={a.severity === "critical" ? "bad" : a.severity === "warning" ? "warn" : "info"}>{a.severity}</Badge>
                  </td>
                  <td>
                    <div>
                      <strong>{a.title}</strong>
                    </div>
                    <div class="muted" style={{ fontSize: 12 }}>
                      {detailLine(a)}
                    </div>
                  </td>
                  <td class="num">{fmtNum(a.count)}</td>
                  <td style={{ whiteSpace: "nowrap" }}>{fmtTime(a.first_seen_ms)}</td>
                  <td style={{ whiteSpace: "nowrap" }}>{fmtAgo(a.last_seen_ms)}</td>
                  <td>
                    <Badge tone={a.state === "open" ? "warn" : a.state === "acknowledged" ? "info" : "ok"}>{a.state}</Badge>
                    {a.acknowledged_by && <div class="muted" style={{ fontSize: 12 }}>by {a.acknowledged_by.split(" [")[0]}</div>}
                  </td>
                  {mayChange && (
                    <td style={{ whiteSpace: "nowrap", textAlign: "right" }}>
                      {a.state === "open" && (
                        <button type="button" class="btn small" disabled={busy === a.id} onClick={() => act(a, "acknowledge")}>
                          Acknowledge
                        </button>
                      )}{" "}
                      {a.state !== "resolved" && (
                        <button type="button" class="btn small" disabled={busy === a.id} onClick={() => act(a, "resolve")}>
                          Resolve
                        </button>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
          {items.length === 0 && <Empty>No {state === "all" ? "" : state} alerts.</Empty>}
        </div>
      )}
    </>
  );
}

/** The second line of an alert: an example flow, or what a non-flow alert is about. */
function detailLine(a: Alert): string {
  const d = a.details;
  if (d.src !== undefined || d.dst !== undefined) return `e.g. ${String(d.src_workload ?? d.src ?? "")} → ${String(d.dst_workload ?? d.dst ?? "")}`;
  const parts: string[] = [];
  if (d.workload) parts.push(`workload ${String(d.workload)}`);
  if (d.rollout) parts.push(`rollout ${String(d.rollout)} (${String(d.selector ?? "")})`);
  if (d.reason) parts.push(`reason: ${String(d.reason)}`);
  if (d.by) parts.push(`by ${String(d.by).split(" [")[0]}`);
  if (d.difference) parts.push(String(d.difference));
  if (d.error) parts.push(String(d.error));
  if (d.message && !d.reason) parts.push(String(d.message));
  return parts.join(" · ");
}
