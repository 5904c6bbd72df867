// Rollouts: a label selector moved from monitor to enforced mode on an announced date,
// its owners told along the way (announcement, the day before, enforcement, completion).
import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { get, post, query } from "../api";
import { parseLabels, can } from "../session";
import type { Alert, Labels, Rollout, RolloutOwner, RolloutReadiness, Workload } from "../types";
import { Badge, Empty, ErrorBox, LabelChips, Link, Loading, PageHeader, fmtAgo, fmtTime, toast, useAsync } from "../ui";

const DAY_MS = 86_400_000;

/** `app=crm env=dev` as the API and the Alerts page take it. */
export const selectorText = (l: Labels) => Object.entries(l).map(([k, v]) => `${k}=${v}`).join(",");

function carries(labels: unknown, selector: Labels): boolean {
  const l = (labels ?? {}) as Labels;
  return Object.keys(l).length > 0 && Object.entries(selector).every(([k, v]) => l[k] === v);
}

/** Whether an alert touches the selector (either end carries all its labels), as the server's readiness check counts it. */
export function touches(a: Alert, selector: Labels): boolean {
  return carries(a.details.src_labels, selector) || carries(a.details.dst_labels, selector);
}

/**
 * Readiness as the scheduler decides it at the enforcement date: no unresolved
 * potentially-blocked alert on the rollout's workloads seen in the last `readiness_days`.
 */
export function unready(r: Rollout, alerts: Alert[], now = Date.now()): Alert[] {
  const since = now - r.readiness_days * DAY_MS;
  return alerts.filter((a) => a.kind === "potentially_blocked" && a.state !== "resolved" && a.last_seen_ms >= since && touches(a, r.selector));
}

/** The API's readiness of a rollout, or the same test applied to `alerts` when the server did not send it. */
function readiness(r: Rollout, alerts: Alert[] | undefined): RolloutReadiness | undefined {
  if (r.readiness) return r.readiness;
  if (!alerts) return undefined;
  const n = unready(r, alerts).length;
  return {
    ready: n === 0,
    unresolved_potentially_blocked: n,
    last_blocked_ms: null,
    reason: n ? `${n} unresolved potentially-blocked alert(s) on its workloads in the last ${r.readiness_days} day(s)` : null,
  };
}

const STATE: Record<string, [string, string]> = {
  scheduled: ["scheduled", "info"],
  enforced: ["enforced", "ok"],
  completed: ["completed", "ok"],
  rolled_back: ["rolled back", "bad"],
};

function inDays(ms: number): string {
  const d = Math.round((ms - Date.now()) / DAY_MS);
  if (d === 0) return ms >= Date.now() ? "today" : "earlier today";
  return d > 0 ? `in ${d} d` : `${-d} d ago`;
}

function isoDate(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

export function Rollouts({ session }: PageProps) {
  const list = useAsync(() => get<{ items: Rollout[] }>("/rollouts"), []);
  // Servers before rollouts carried their readiness: worked out here from the alerts instead.
  const needAlerts = !!list.data?.items.some((r) => !r.readiness);
  const alerts = useAsync(
    () => (needAlerts ? get<{ items: Alert[] }>(`/alerts${query({ kind: "potentially_blocked", limit: 10000 })}`).catch(() => ({ items: [] as Alert[] })) : Promise.resolve(undefined)),
    [needAlerts],
  );
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState<number | null>(null);
  const mayWrite = can.scheduleRollouts(session);
  const items = [...(list.data?.items ?? [])].sort((a, b) => b.id - a.id);

  async function rollback(r: Rollout) {
    const back = Object.keys(r.previous_modes).length || r.workloads.length;
    if (!confirm(`Roll back "${r.name}"? Its ${back} workload(s) go back at once to the modes they had before enforcement, and its owners are told.`)) return;
    setBusy(r.id);
    setErr(null);
    try {
      await post(`/rollouts/${r.id}/rollback`);
      toast(`Rolled back ${r.name}`);
      list.reload();
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(null);
    }
  }

  return (
    <>
      <PageHeader
        title="Rollouts"
        sub="Enforcement on a schedule: a group of workloads stays in monitor mode until its announced date, and is switched to enforced only when no unresolved potentially-blocked alert is left on it; otherwise the date moves and its owners are told why."
      />
      {mayWrite && <ScheduleForm onScheduled={list.reload} />}
      <ErrorBox error={list.error ?? err} />
      {list.loading && !list.data ? (
        <Loading what="Loading the rollouts" />
      ) : (
        <div class="table-wrap" style={{ marginTop: 16 }}>
          <table aria-label="Rollouts">
            <thead>
              <tr>
                <th>Rollout</th>
                <th>State</th>
                <th>Announced</th>
                <th>Enforcement</th>
                <th>Completion</th>
                <th>Readiness</th>
                <th>Owners</th>
                {mayWrite && <th />}
              </tr>
            </thead>
            <tbody>
              {items.map((r) => {
                const [stateText, tone] = STATE[r.state] ?? [r.state, "muted"];
                const ready = readiness(r, alerts.data?.items);
                const postponed = r.postponements.length;
                const canRollBack = r.state === "enforced" || r.state === "completed";
                return (
                  <tr data-testid={`rollout-${r.name}`}>
                    <td style={{ minWidth: 150 }}>
                      <strong style={{ wordBreak: "break-word" }}>{r.name}</strong>
                      <div>
                        <LabelChips labels={r.selector} />
                      </div>
                      <div class="muted" style={{ fontSize: 12 }}>
                        {r.workloads.length} managed workload{r.workloads.length === 1 ? "" : "s"}
                        {r.workloads.length > 0 && ` (${summarizeModes(r.workloads)})`}
                      </div>
                    </td>
                    <td>
                      <Badge tone={tone}>{stateText}</Badge>
                      {r.at_ms ? <div class="muted" style={{ fontSize: 12 }}>{fmtTime(r.at_ms)}</div> : null}
                    </td>
                    <td>
                      <span style={{ whiteSpace: "nowrap" }}>{fmtTime(r.announced_ms)}</span>
                      <div class="muted" style={{ fontSize: 12 }}>monitor since {fmtTime(r.monitor_start_ms)}</div>
                    </td>
                    <td style={{ whiteSpace: "nowrap" }} data-testid="enforcement">
                      <time dateTime={new Date(r.enforce_at_ms).toISOString()}>{fmtTime(r.enforce_at_ms)}</time>
                      <div class="muted" style={{ fontSize: 12 }}>
                        {r.state === "scheduled" ? inDays(r.enforce_at_ms) : r.state === "enforced" || r.state === "completed" ? "switched to enforced" : ""}
                      </div>
                      {postponed > 0 && (
                        <div style={{ fontSize: 12, whiteSpace: "normal", maxWidth: 260 }}>
                          <Badge tone="warn">postponed {postponed}×</Badge>{" "}
                          <span class="muted">{r.postponements[postponed - 1].reason}</span>
                        </div>
                      )}
                    </td>
                    <td style={{ minWidth: 150 }}>
                      {r.state === "completed" && r.at_ms ? (
                        fmtTime(r.at_ms)
                      ) : r.state === "rolled_back" ? (
                        <span class="muted">—</span>
                      ) : (
                        <>
                          <span class="muted" style={{ fontSize: 12 }}>
                            earliest
                          </span>
                          <div style={{ whiteSpace: "nowrap" }}>{fmtTime((r.state === "enforced" && r.at_ms ? r.at_ms : r.enforce_at_ms) + r.watch_days * DAY_MS)}</div>
                          <div class="muted" style={{ fontSize: 12 }}>after {r.watch_days} d of enforcement without a blocked flow</div>
                        </>
                      )}
                    </td>
                    <td style={{ minWidth: 130, maxWidth: 260 }} data-testid="readiness">
                      {r.state === "enforced" ? (
                        <>
                          <Badge tone="info">watching</Badge>
                          <div class="muted" style={{ fontSize: 12 }}>
                            {ready?.last_blocked_ms && ready.last_blocked_ms >= (r.at_ms ?? 0) ? `last blocked flow ${fmtAgo(ready.last_blocked_ms)}` : "no blocked flow since enforcement"}
                          </div>
                        </>
                      ) : r.state !== "scheduled" ? (
                        <span class="muted">—</span>
                      ) : !ready ? (
                        <span class="muted">checking…</span>
                      ) : ready.ready ? (
                        <>
                          <Badge tone="ok">ready</Badge>
                          <div class="muted" style={{ fontSize: 12 }}>
                            no unresolved potentially-blocked alert on its workloads in the last {r.readiness_days} d
                          </div>
                        </>
                      ) : (
                        <>
                          <Badge tone="warn">not ready</Badge>
                          <div style={{ fontSize: 12 }}>
                            {ready.reason}: at the date, enforcement would be postponed by a day.{" "}
                            <Link href={`/alerts${query({ state: "unresolved", kind: "potentially_blocked", labels: selectorText(r.selector) })}`}>Review them</Link>
                          </div>
                        </>
                      )}
                    </td>
                    <td>
                      {r.owners.length === 0 ? (
                        <span class="muted">none</span>
                      ) : (
                        <ul class="plain">
                          {r.owners.map((o) => (
                            <li>
                              <strong>{o.name}</strong>
                              {o.email && (
                                <div style={{ fontSize: 12 }}>
                                  <a href={`mailto:${o.email}`}>{o.email}</a>
                                </div>
                              )}
                              {o.webhook && (
                                <div class="muted" style={{ fontSize: 12, wordBreak: "break-all" }}>
                                  webhook {o.webhook}
                                </div>
                              )}
                            </li>
                          ))}
                        </ul>
                      )}
                    </td>
                    {mayWrite && (
                      <td style={{ textAlign: "right", whiteSpace: "nowrap" }}>
                        {canRollBack && (
                          <button type="button" class="btn small danger" disabled={busy === r.id} onClick={() => rollback(r)}>
                            Roll back
                          </button>
                        )}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
          {items.length === 0 && <Empty>No rollout is scheduled yet.{mayWrite ? " Schedule one above." : ""}</Empty>}
        </div>
      )}
      <p class="muted">
        The scheduler sends the notices to the alert sinks, to each owner's webhook and by e-mail (with <code>--smtp-relay</code>). Rollback is offered once a rollout has
        switched workloads to enforced.
      </p>
    </>
  );
}

function summarizeModes(ws: { mode: string }[]): string {
  const n: Record<string, number> = {};
  for (const w of ws) n[w.mode] = (n[w.mode] ?? 0) + 1;
  return Object.entries(n)
    .map(([m, c]) => `${c} ${m}`)
    .join(", ");
}

function ScheduleForm({ onScheduled }: { onScheduled: () => void }) {
  const inventory = useAsync(() => get<{ items: Workload[] }>("/workloads?limit=10000").catch(() => ({ items: [] as Workload[] })), []);
  const [name, setName] = useState("");
  const [selector, setSelector] = useState("");
  const [date, setDate] = useState(isoDate(Date.now() + 14 * DAY_MS));
  const [time, setTime] = useState("09:00");
  const [readiness, setReadiness] = useState("7");
  const [watch, setWatch] = useState("14");
  const [owners, setOwners] = useState<RolloutOwner[]>([{ name: "", email: "", webhook: "" }]);
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const sel = parseLabels(selector);
  const matching = Object.keys(sel).length ? (inventory.data?.items ?? []).filter((w) => w.managed && Object.entries(sel).every(([k, v]) => w.labels[k] === v)) : [];
  const idle = matching.filter((w) => (w.mode ?? "idle") === "idle").length;

  async function submit(e: Event) {
    e.preventDefault();
    setErr(null);
    const at = new Date(`${date}T${time || "00:00"}`).getTime();
    if (Number.isNaN(at)) {
      setErr(new Error("The enforcement date is not a date."));
      return;
    }
    if (at < Date.now()) {
      setErr(new Error("The enforcement date is in the past."));
      return;
    }
    setBusy(true);
    try {
      const r = await post<Rollout>("/rollouts", {
        name: name.trim(),
        selector: selector.trim(),
        owners: owners
          .filter((o) => o.name.trim() || o.email?.trim() || o.webhook?.trim())
          .map((o) => ({ name: o.name.trim(), ...(o.email?.trim() ? { email: o.email.trim() } : {}), ...(o.webhook?.trim() ? { webhook: o.webhook.trim() } : {}) })),
        enforce_at_ms: at,
        readiness_days: Number(readiness),
        watch_days: Number(watch),
      });
      toast(`Scheduled ${r.name}: enforcement on ${fmtTime(r.enforce_at_ms)}`);
      setName("");
      setSelector("");
      setOwners([{ name: "", email: "", webhook: "" }]);
      onScheduled();
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }
  const setOwner = (i: number, k: keyof RolloutOwner, v: string) => setOwners(owners.map((o, j) => (j === i ? { ...o, [k]: v } : o)));

  return (
    <form class="card" onSubmit={submit} aria-labelledby="ro-title">
      <h2 id="ro-title">Schedule a rollout</h2>
      <div class="row">
        <div class="field">
          <label for="ro-name">Name</label>
          <input id="ro-name" type="text" required pattern="[A-Za-z0-9._\-]+" value={name} placeholder="crm-dev" aria-describedby="ro-name-hint" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          <div class="hint" id="ro-name-hint">
            letters, digits, - _ .
          </div>
        </div>
        <div class="field" style={{ flex: 2 }}>
          <label for="ro-selector">Workloads (labels)</label>
          <input id="ro-selector" type="text" required value={selector} placeholder="app=crm env=dev" aria-describedby="ro-selector-hint" onInput={(e) => setSelector((e.target as HTMLInputElement).value)} />
          <div class="hint" id="ro-selector-hint" aria-live="polite">
            {Object.keys(sel).length === 0
              ? "the managed workloads carrying all these labels"
              : `${matching.length} managed workload${matching.length === 1 ? "" : "s"} match${idle ? `; ${idle} idle go to monitor mode now` : ""}`}
          </div>
        </div>
        <div class="field" style={{ maxWidth: 170 }}>
          <label for="ro-date">Enforcement date</label>
          <input id="ro-date" type="date" required value={date} min={isoDate(Date.now())} onInput={(e) => setDate((e.target as HTMLInputElement).value)} />
          <div class="hint">&nbsp;</div>
        </div>
        <div class="field" style={{ maxWidth: 120 }}>
          <label for="ro-time">Time</label>
          <input id="ro-time" type="time" required value={time} onInput={(e) => setTime((e.target as HTMLInputElement).value)} />
          <div class="hint">your local time</div>
        </div>
      </div>
      <div class="row" style={{ marginTop: 12 }}>
        <div class="field" style={{ maxWidth: 240 }}>
          <label for="ro-readiness">Readiness window (days)</label>
          <input id="ro-readiness" type="number" min={1} max={90} required value={readiness} aria-describedby="ro-readiness-hint" onInput={(e) => setReadiness((e.target as HTMLInputElement).value)} />
          <div class="hint" id="ro-readiness-hint">
            ready when no unresolved potentially-blocked alert was seen in it
          </div>
        </div>
        <div class="field" style={{ maxWidth: 240 }}>
          <label for="ro-watch">Watch after enforcement (days)</label>
          <input id="ro-watch" type="number" min={1} max={90} required value={watch} aria-describedby="ro-watch-hint" onInput={(e) => setWatch((e.target as HTMLInputElement).value)} />
          <div class="hint" id="ro-watch-hint">
            complete after this long without a blocked flow
          </div>
        </div>
      </div>
      <fieldset class="owners">
        <legend>Owners, told at the announcement, the day before, at enforcement and at completion</legend>
        {owners.map((o, i) => (
          <div class="row owner-row">
            <div class="field">
              <label for={`ro-owner-${i}-name`}>Owner {i + 1} name</label>
              <input id={`ro-owner-${i}-name`} type="text" value={o.name} placeholder="CRM team" onInput={(e) => setOwner(i, "name", (e.target as HTMLInputElement).value)} />
            </div>
            <div class="field">
              <label for={`ro-owner-${i}-email`}>Owner {i + 1} e-mail</label>
              <input id={`ro-owner-${i}-email`} type="email" value={o.email ?? ""} placeholder="crm-team@example.com" onInput={(e) => setOwner(i, "email", (e.target as HTMLInputElement).value)} />
            </div>
            <div class="field">
              <label for={`ro-owner-${i}-webhook`}>Owner {i + 1} webhook</label>
              <input id={`ro-owner-${i}-webhook`} type="url" value={o.webhook ?? ""} placeholder="http://chat.example/hooks/crm" onInput={(e) => setOwner(i, "webhook", (e.target as HTMLInputElement).value)} />
            </div>
            <button type="button" class="btn small danger" aria-label={`Remove owner ${i + 1}`} onClick={() => setOwners(owners.filter((_, j) => j !== i))}>
              Remove
            </button>
          </div>
        ))}
        <button type="button" class="btn small" onClick={() => setOwners([...owners, { name: "", email: "", webhook: "" }])}>
          + Add owner
        </button>
      </fieldset>
      <ErrorBox error={err} />
      <div class="row" style={{ marginTop: 12 }}>
        <button type="submit" class="btn primary" disabled={busy}>
          {busy ? "Scheduling…" : "Schedule rollout"}
        </button>
        <span class="muted" style={{ fontSize: 12.5 }}>
          The owners are told at once; webhooks are signed with the server's webhook secret.
        </span>
      </div>
    </form>
  );
}
