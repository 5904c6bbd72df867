import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { get, post, query } from "../api";
import { setParams } from "../router";
import { can } from "../session";
import type { Alert } from "../types";
import { Badge, Empty, ErrorBox, Loading, PageHeader, fmtAgo, fmtNum, fmtTime, toast, useAsync } from "../ui";

export function Alerts({ session, params }: PageProps) {
  const state = params.get("state") ?? "open";
  const kind = params.get("kind") ?? "";
  const alerts = useAsync(() => get<{ items: Alert[] }>(`/alerts${query({ state: state === "all" ? "" : state, kind, limit: 1000 })}`), [state, kind]);
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
  const items = alerts.data?.items ?? [];
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
            <option value="all">All</option>
          </select>
        </div>
        <div class="field">
          <label for="alert-kind">Kind</label>
          <select id="alert-kind" value={kind} onChange={(e) => setParams({ kind: (e.target as HTMLSelectElement).value })}>
            <option value="">Any</option>
            <option value="potentially_blocked">Would be blocked</option>
            <option value="blocked">Blocked</option>
          </select>
        </div>
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
                      e.g. {String(a.details.src_workload ?? a.details.src ?? "")} → {String(a.details.dst_workload ?? a.details.dst ?? "")}
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
