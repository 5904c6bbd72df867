import { useEffect, useRef, useState } from "preact/hooks";
import type { PageProps } from ".";
import { enc, get, post, put, query } from "../api";
import { setParams } from "../router";
import { can } from "../session";
import { type Enforcement, type LabelRulesState, type Labels, type ModeChange, type QuarantineAnswer, type Workload, quarantineReason } from "../types";
import { Badge, Empty, ErrorBox, LabelChips, Link, Loading, PageHeader, toast, useAsync } from "../ui";

export function Inventory({ session, params }: PageProps) {
  const labels = params.get("labels") ?? "";
  const [filter, setFilter] = useState(labels);
  const [text, setText] = useState(params.get("q") ?? "");
  const list = useAsync(() => get<{ total: number; items: Workload[] }>(`/workloads${query({ labels, limit: 10000 })}`), [labels]);
  // Which labels came from label rules (the API lists the workloads' labels merged).
  const hasRules = session.routes.has("/api/v1/label-rules");
  const rules = useAsync(() => (hasRules ? get<LabelRulesState>("/label-rules") : Promise.resolve(undefined)), [list.data]);
  const derived = new Map((rules.data?.assigned ?? []).map((a) => [a.workload, a.labels]));
  // Which inline form is open under a row: its labels, or the quarantine form.
  const [acting, setActing] = useState<{ name: string; what: "labels" | "quarantine" | "mode" } | null>(null);
  const [onlyQuarantined, setOnlyQuarantined] = useState(params.get("quarantined") === "1");
  const [err, setErr] = useState<unknown>(null);
  const q = text.trim().toLowerCase();
  const all = list.data?.items ?? [];
  const quarantinedCount = all.filter((w) => quarantineReason(w) !== undefined).length;
  const items = all.filter(
    (w) => (!q || `${w.name} ${w.hostname ?? ""} ${w.addresses.join(" ")} ${w.os ?? ""}`.toLowerCase().includes(q)) && (!onlyQuarantined || quarantineReason(w) !== undefined),
  );
  const editable = can.editInventory(session);
  const mayQuarantine = can.quarantine(session) && session.routes.has("/api/v1/workloads/{name}/quarantine");
  const maySetModes = can.setModes(session) && session.routes.has("/api/v1/enforcement/mode");
  const withActions = editable || mayQuarantine || maySetModes;
  async function release(w: Workload) {
    if (!confirm(`Release ${w.name} from quarantine? Its traffic is again decided by the policy alone.`)) return;
    setErr(null);
    try {
      await post(`/workloads/${enc(w.name)}/release`);
      toast(`Released ${w.name} from quarantine`);
      list.reload();
    } catch (x) {
      setErr(x);
    }
  }
  return (
    <>
      <PageHeader title="Inventory" sub={`Workloads and their labels${session.scope ? ` in your scope (${session.scope})` : ""}. Labels decide which rules apply.`} />
      <form
        class="toolbar"
        onSubmit={(e) => {
          e.preventDefault();
          setParams({ labels: filter.trim() });
        }}
      >
        <div class="field" style={{ minWidth: 260 }}>
          <label for="inv-labels">Labels</label>
          <input id="inv-labels" type="text" placeholder="app=shop,env=prod" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
        </div>
        <button type="submit" class="btn">
          Filter
        </button>
        <div class="field" style={{ minWidth: 240 }}>
          <label for="inv-q">Search</label>
          <input id="inv-q" type="search" placeholder="name, address, OS" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} />
        </div>
        <label class="check" style={{ marginBottom: 8 }}>
          <input
            type="checkbox"
            checked={onlyQuarantined}
            onChange={(e) => {
              const on = (e.target as HTMLInputElement).checked;
              setOnlyQuarantined(on);
              setParams({ quarantined: on ? "1" : null });
            }}
          />
          Quarantined only ({quarantinedCount})
        </label>
      </form>
      <ErrorBox error={list.error ?? err} />
      {derived.size > 0 && (
        <p class="muted" style={{ margin: "0 0 8px" }} data-testid="derived-legend">
          <span class="legend-chip" aria-hidden="true" />
          Dashed labels come from <Link href="/label-rules">label rules</Link> ({derived.size} workload{derived.size === 1 ? "" : "s"}).
        </p>
      )}
      {list.loading && !list.data ? (
        <Loading />
      ) : (
        <div class="table-wrap">
          <table aria-label="Workloads">
            <thead>
              <tr>
                <th>Name</th>
                <th>Addresses</th>
                <th>Labels</th>
                <th>Kind</th>
                <th>Enforcement</th>
                <th>OS</th>
                {withActions && <th />}
              </tr>
            </thead>
            <tbody>
              {items.map((w) => {
                const reason = quarantineReason(w);
                const open = acting?.name === w.name ? acting.what : null;
                return (
                  <>
                    <tr class={[open ? "selected" : "", reason !== undefined ? "quarantined" : ""].join(" ").trim()} data-testid={`workload-${w.name}`}>
                      <td>
                        <strong>{w.name}</strong>
                        {w.hostname && <div class="muted" style={{ fontSize: 12 }}>{w.hostname}</div>}
                        {reason !== undefined && (
                          <div class="quarantine-mark" style={{ fontSize: 12, marginTop: 3 }}>
                            <Badge tone="bad">quarantined</Badge> <span>{reason}</span>
                            <QuarantineEnforcement name={w.name} />
                          </div>
                        )}
                      </td>
                      <td>
                        <code>{w.addresses.join(", ")}</code>
                      </td>
                      <td>
                        <LabelChips labels={w.labels} derived={derived.get(w.name)} />
                      </td>
                      <td>{w.kind}</td>
                      <td>
                        {w.managed ? (
                          <Badge tone={w.mode === "enforced" ? "ok" : w.mode === "monitor" ? "warn" : "muted"}>{w.mode ?? "idle"}</Badge>
                        ) : (
                          <Badge>unmanaged</Badge>
                        )}
                      </td>
                      <td>{[w.os, w.os_version].filter(Boolean).join(" ")}</td>
                      {withActions && (
                        <td style={{ textAlign: "right", whiteSpace: "nowrap" }}>
                          {editable && (
                            <button
                              type="button"
                              class="btn small"
                              aria-expanded={open === "labels"}
                              onClick={() => setActing(open === "labels" ? null : { name: w.name, what: "labels" })}
                            >
                              Edit labels
                            </button>
                          )}{" "}
                          {maySetModes && w.managed && (
                            <button
                              type="button"
                              class="btn small"
                              aria-label={`Set the mode of ${w.name}`}
                              aria-expanded={open === "mode"}
                              onClick={() => setActing(open === "mode" ? null : { name: w.name, what: "mode" })}
                            >
                              Mode…
                            </button>
                          )}{" "}
                          {mayQuarantine &&
                            w.managed &&
                            (reason !== undefined ? (
                              <button type="button" class="btn small" aria-label={`Release ${w.name}`} onClick={() => release(w)}>
                                Release
                              </button>
                            ) : (
                              <button
                                type="button"
                                class="btn small danger"
                                aria-label={`Quarantine ${w.name}`}
                                aria-expanded={open === "quarantine"}
                                onClick={() => setActing(open === "quarantine" ? null : { name: w.name, what: "quarantine" })}
                              >
                                Quarantine
                              </button>
                            ))}
                        </td>
                      )}
                    </tr>
                    {open && (
                      <tr>
                        <td colSpan={7} style={{ background: "#fafbfd" }}>
                          {open === "labels" ? (
                            <LabelEditor
                              workload={w}
                              derived={derived.get(w.name) ?? {}}
                              onDone={(saved) => {
                                setActing(null);
                                if (saved) list.reload();
                              }}
                            />
                          ) : open === "mode" ? (
                            <ModeForm
                              workload={w}
                              onDone={(done) => {
                                setActing(null);
                                if (done) list.reload();
                              }}
                            />
                          ) : (
                            <QuarantineForm
                              workload={w}
                              onDone={(done) => {
                                setActing(null);
                                if (done) list.reload();
                              }}
                            />
                          )}
                        </td>
                      </tr>
                    )}
                  </>
                );
              })}
            </tbody>
          </table>
          {items.length === 0 && <Empty>No workloads match.</Empty>}
        </div>
      )}
      <p class="muted">
        {list.data ? `${items.length} of ${list.data.total} workloads.` : ""}{" "}
        {hasRules ? (
          <>
            Labels can also come from <Link href="/label-rules">label rules</Link> (from hostname, OS, kind or subnet); a label of the workload's own with the same key
            wins over them.
          </>
        ) : (
          <>
            Label rules (labels from hostname, OS or subnet) are applied when inventory files are imported with <code>bulkhead inventory</code>.
          </>
        )}
      </p>
    </>
  );
}

function LabelEditor({ workload, derived, onDone }: { workload: Workload; derived: Labels; onDone: (saved: boolean) => void }) {
  // Only the workload's own labels are edited and stored: the ones label rules add are
  // derived anew from the rules, and a key set here takes the place of a derived one.
  const [rows, setRows] = useState<[string, string][]>(Object.entries(workload.labels).filter(([k, v]) => derived[k] !== v));
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function save(e: Event) {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    try {
      const labels = Object.fromEntries(rows.filter(([k]) => k.trim()).map(([k, v]) => [k.trim(), v.trim()]));
      await put(`/workloads/${enc(workload.name)}`, { ...workload, labels });
      toast(`Saved the labels of ${workload.name}`);
      onDone(true);
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }
  return (
    <form onSubmit={save} aria-label={`Labels of ${workload.name}`}>
      <div class="row label-head" aria-hidden="true">
        <span>Key</span>
        <span>Value</span>
      </div>
      {rows.map(([k, v], i) => (
        <div class="row label-row">
          <div class="field">
            <label class="sr-only" for={`lk-${i}`}>Key {i + 1}</label>
            <input id={`lk-${i}`} type="text" value={k} onInput={(e) => setRows(rows.map((r, j) => (j === i ? [(e.target as HTMLInputElement).value, r[1]] : r)))} />
          </div>
          <div class="field">
            <label class="sr-only" for={`lv-${i}`}>Value {i + 1}</label>
            <input id={`lv-${i}`} type="text" value={v} onInput={(e) => setRows(rows.map((r, j) => (j === i ? [r[0], (e.target as HTMLInputElement).value] : r)))} />
          </div>
          <button type="button" class="btn small danger" aria-label={`Remove label ${k}`} onClick={() => setRows(rows.filter((_, j) => j !== i))}>
            Remove
          </button>
        </div>
      ))}
      {Object.keys(derived).length > 0 && (
        <p class="muted" style={{ margin: "4px 0 8px" }}>
          From <Link href="/label-rules">label rules</Link>, not edited here: <LabelChips labels={derived} derived={derived} />. A label of the same key set here wins.
        </p>
      )}
      <ErrorBox error={err} />
      <div class="row">
        <button type="button" class="btn small" onClick={() => setRows([...rows, ["", ""]])}>
          + Add label
        </button>
        <button type="submit" class="btn small primary" disabled={busy}>
          {busy ? "Saving…" : "Save labels"}
        </button>
        <button type="button" class="btn small" onClick={() => onDone(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function QuarantineForm({ workload, onDone }: { workload: Workload; onDone: (done: boolean) => void }) {
  const [reason, setReason] = useState("");
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const id = `qr-${workload.name}`;
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  async function submit(e: Event) {
    e.preventDefault();
    if (!reason.trim()) {
      setErr(new Error("Give a reason: it is kept on the workload, in the audit log and in the alert."));
      return;
    }
    setBusy(true);
    setErr(null);
    try {
      const done = await post<QuarantineAnswer>(`/workloads/${enc(workload.name)}/quarantine`, { reason: reason.trim() });
      toast(done.summary);
      onDone(true);
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }
  return (
    <form onSubmit={submit} aria-label={`Quarantine ${workload.name}`}>
      <p style={{ margin: "0 0 8px" }}>
        Quarantine isolates <strong>{workload.name}</strong> whatever the rules say: only the failsafe ports inbound and its agent's channel to the server stay open;
        connections already established are cut. It is enforced once its agent reports the new table (at its next heartbeat); a critical alert is raised.
      </p>
      <div class="row" style={{ maxWidth: 760 }}>
        <div class="field" style={{ flex: 3 }}>
          <label for={id}>Reason for quarantine</label>
          <input id={id} type="text" required value={reason} placeholder="suspected compromise, ticket SEC-123" ref={input} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
        </div>
        <button type="submit" class="btn small danger" disabled={busy}>
          {busy ? "Quarantining…" : "Confirm quarantine"}
        </button>
        <button type="button" class="btn small" onClick={() => onDone(false)}>
          Cancel
        </button>
      </div>
      <ErrorBox error={err} />
    </form>
  );
}

/** Whether the host's kernel runs the quarantine: asking for one is not enforcing it. */
function QuarantineEnforcement({ name }: { name: string }) {
  const e = useAsync(() => get<Enforcement>(`/workloads/${enc(name)}/enforcement`), [name]);
  if (!e.data) return null;
  const state = e.data.quarantine?.state ?? e.data.state;
  const tone = state === "applied" ? "ok" : "warn";
  const word = state === "applied" ? "enforced" : state === "pending" ? "not applied yet" : "not enforced";
  return (
    <div style={{ marginTop: 3 }} data-testid={`quarantine-state-${name}`}>
      <Badge tone={tone}>{word}</Badge> <span class="muted">{e.data.summary}</span>
    </div>
  );
}

/** A workload's mode, set directly: the impact on the last week's traffic is shown first,
 * and nothing is written before the user confirms it. */
function ModeForm({ workload, onDone }: { workload: Workload; onDone: (done: boolean) => void }) {
  const [mode, setMode] = useState(workload.mode === "enforced" ? "monitor" : "enforced");
  const [preview, setPreview] = useState<ModeChange | null>(null);
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function ask(apply: boolean) {
    setBusy(true);
    setErr(null);
    try {
      const answer = await post<ModeChange>("/enforcement/mode", { workload: workload.name, mode, apply });
      if (apply) {
        toast(answer.summary);
        onDone(true);
      } else {
        setPreview(answer);
      }
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }
  return (
    <form
      aria-label={`Mode of ${workload.name}`}
      onSubmit={(e) => {
        e.preventDefault();
        ask(false);
      }}
    >
      <div class="row" style={{ maxWidth: 760 }}>
        <div class="field">
          <label for={`mode-${workload.name}`}>Mode</label>
          <select
            id={`mode-${workload.name}`}
            value={mode}
            onChange={(e) => {
              setMode((e.target as HTMLSelectElement).value);
              setPreview(null);
            }}
          >
            <option value="idle">idle (no table)</option>
            <option value="monitor">monitor (report what policy denies)</option>
            <option value="enforced">enforced (drop what policy denies)</option>
          </select>
        </div>
        <button type="submit" class="btn small" disabled={busy}>
          {busy && !preview ? "Replaying traffic…" : "Preview impact"}
        </button>
        <button type="button" class="btn small" onClick={() => onDone(false)}>
          Cancel
        </button>
      </div>
      {preview && (
        <div data-testid={`mode-impact-${workload.name}`} style={{ marginTop: 8 }}>
          <p style={{ margin: "0 0 6px" }}>{preview.summary}.</p>
          {preview.impact.groups.length > 0 && (
            <table aria-label={`Impact on ${workload.name}`}>
              <thead>
                <tr>
                  <th>Consumer</th>
                  <th>Provider</th>
                  <th>Service</th>
                  <th>Verdict</th>
                  <th>Connections</th>
                </tr>
              </thead>
              <tbody>
                {preview.impact.groups.map((g) => (
                  <tr>
                    <td>{g.consumer}</td>
                    <td>{g.provider}</td>
                    <td>
                      <code>{g.service}</code>
                    </td>
                    <td>
                      <Badge tone={`v-${g.from}`}>{g.from}</Badge> → <Badge tone={`v-${g.to}`}>{g.to}</Badge>
                    </td>
                    <td>{g.connections}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {preview.impact.note && <p class="muted">{preview.impact.note}</p>}
          {preview.changing.length > 0 ? (
            <button type="button" class="btn small primary" disabled={busy} onClick={() => ask(true)}>
              {busy ? "Switching…" : `Switch ${workload.name} to ${mode}`}
            </button>
          ) : (
            <p class="muted">It already is in {mode} mode.</p>
          )}
        </div>
      )}
      <ErrorBox error={err} />
    </form>
  );
}
