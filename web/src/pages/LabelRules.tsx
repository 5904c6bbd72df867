// Label rules: labels derived from what the inventory knows about a workload (hostname, OS,
// kind, subnet, attributes), edited as one YAML document. Preview asks the server what a
// document would assign without storing it; Save (admin, secops) stores it and the
// inventory's labels follow at once. A rule fills only keys a workload has no label of its
// own for, so the labels people wrote always win.
import { useRef, useState } from "preact/hooks";
import type { PageProps } from ".";
import { ApiError, type ErrorDetail, get, post, put } from "../api";
import { can } from "../session";
import type { Assigned, LabelRulesState, Labels } from "../types";
import { Badge, Empty, ErrorBox, LabelChips, Link, Loading, PageHeader, fmtAgo, fmtTime, toast, useAsync } from "../ui";

const EXAMPLE = `bulkhead: v1
kind: label_rules
rules:
  # Every condition given must hold: hostname, os and os_version are regular
  # expressions, subnet a CIDR, kind vm, host, container...
  - name: web-by-hostname
    match: { hostname: '-web-' }
    set: { zone: dmz }
  - name: dc2-subnet
    match: { subnet: 10.20.0.0/16 }
    set: { site: dc2 }
`;

/** A failed check: a 400 naming lines and fields, or any other failure. */
interface Problem {
  what: "save" | "preview";
  details: ErrorDetail[];
  other?: unknown;
}

function problemOf(what: Problem["what"], e: unknown): Problem {
  if (e instanceof ApiError && e.status === 400) {
    const details = e.details.length > 0 ? e.details : [{ field: e.field ?? "yaml", message: e.message }];
    return { what, details };
  }
  return { what, details: [], other: e };
}

export function LabelRules({ session }: PageProps) {
  const state = useAsync(() => get<LabelRulesState>("/label-rules"), []);
  const [text, setText] = useState<string | null>(null);
  const [preview, setPreview] = useState<{ yaml: string; rules: number; assigned: Assigned[] } | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [busy, setBusy] = useState<"" | "save" | "preview">("");
  const area = useRef<HTMLTextAreaElement>(null);
  const mayPreview = can.previewLabelRules(session);
  const maySave = can.editLabelRules(session);
  const stored = state.data;
  const yaml = text ?? stored?.yaml ?? "";
  const dirty = stored !== undefined && yaml !== stored.yaml;

  async function runPreview() {
    setBusy("preview");
    setProblem(null);
    try {
      const r = await post<{ rules: number; assigned: Assigned[] }>("/label-rules/preview", { yaml });
      setPreview({ yaml, ...r });
    } catch (e) {
      setPreview(null);
      setProblem(problemOf("preview", e));
    } finally {
      setBusy("");
    }
  }

  async function save() {
    if (!stored) return;
    if (!yaml.trim() && stored.rules.length > 0) {
      const labels = stored.assigned.reduce((n, a) => n + Object.keys(a.labels).length, 0);
      const msg = `Remove all label rules? The ${labels} label${labels === 1 ? "" : "s"} they add to ${stored.assigned.length} workload${stored.assigned.length === 1 ? "" : "s"} go with them.`;
      if (!confirm(msg)) return;
    }
    setBusy("save");
    setProblem(null);
    try {
      const r = await put<{ changed: boolean; rules: number; assigned: Assigned[] }>("/label-rules", { yaml });
      toast(
        r.changed
          ? `Saved ${r.rules} label rule${r.rules === 1 ? "" : "s"}: ${r.assigned.length} workload${r.assigned.length === 1 ? " gets" : "s get"} labels from them`
          : "The label rules were already these; nothing changed",
      );
      setText(null);
      setPreview(null);
      state.reload();
    } catch (e) {
      setProblem(problemOf("save", e));
    } finally {
      setBusy("");
    }
  }

  /** Focuses the editor with `line` (1-based) selected. */
  function goToLine(line: number) {
    const el = area.current;
    if (!el) return;
    const lines = el.value.split("\n");
    const n = Math.max(1, Math.min(line, lines.length));
    const start = lines.slice(0, n - 1).reduce((s, l) => s + l.length + 1, 0);
    el.focus();
    el.setSelectionRange(start, start + lines[n - 1].length);
    const lh = parseFloat(getComputedStyle(el).lineHeight) || 19;
    el.scrollTop = Math.max(0, (n - 3) * lh);
  }

  const listed = problem && problem.details.length > 0;
  const describedBy = ["lr-help", listed ? "lr-problems" : ""].filter(Boolean).join(" ");
  return (
    <>
      <PageHeader
        title="Label rules"
        sub={
          <>
            Labels derived from what the inventory knows about a workload: hostname, OS, kind, subnet, attributes. A rule only fills keys a workload has no label of its own
            for (labels people write win); the first matching rule wins. See them on the <Link href="/inventory">Inventory</Link>.
          </>
        }
      />
      <ErrorBox error={state.error} />
      {!stored ? (
        state.loading && <Loading />
      ) : (
        <div class="grid" style={{ gridTemplateColumns: "minmax(0,1fr) 340px", alignItems: "start" }}>
          <div>
            <div class="card">
              <h2>
                <span>
                  Rules as YAML {!maySave && <Badge>{mayPreview ? "preview only" : "read only"}</Badge>}{" "}
                  {dirty && (
                    <Badge tone="warn">
                      <span data-testid="unsaved">unsaved changes</span>
                    </Badge>
                  )}
                </span>
              </h2>
              <div class="field">
                <label for="lr-yaml">Label rules (YAML)</label>
                <textarea
                  id="lr-yaml"
                  ref={area}
                  class="code"
                  style={{ minHeight: 300 }}
                  spellcheck={false}
                  readOnly={!mayPreview}
                  aria-invalid={listed ? true : undefined}
                  aria-describedby={describedBy}
                  placeholder={mayPreview ? "No label rules. Write a kind: label_rules document, or insert the example." : "No label rules."}
                  value={yaml}
                  onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
                  onKeyDown={(e) => {
                    // Ctrl+Enter previews without leaving the editor.
                    if (mayPreview && e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
                      e.preventDefault();
                      runPreview();
                    }
                  }}
                />
                <div class="hint" id="lr-help">
                  <code>bulkhead: v1</code>, <code>kind: label_rules</code>, then <code>rules:</code>, each with a <code>name</code>, a <code>match</code> (
                  <code>hostname</code>, <code>os</code>, <code>os_version</code>, <code>attributes</code> as regular expressions; <code>kind</code>; <code>subnet</code>{" "}
                  as a CIDR; every condition given must hold) and the labels it <code>set</code>s. An empty document means no rules.
                  {mayPreview && " Ctrl+Enter previews."}
                </div>
              </div>
              {problem && <Problems problem={problem} onLine={goToLine} />}
              {mayPreview && (
                <div class="row" style={{ marginTop: 4 }}>
                  <button type="button" class="btn" onClick={runPreview} disabled={busy !== ""}>
                    {busy === "preview" ? "Previewing…" : "Preview"}
                  </button>
                  {maySave && (
                    <button type="button" class="btn primary" onClick={save} disabled={busy !== "" || !dirty}>
                      {busy === "save" ? "Saving…" : "Save rules"}
                    </button>
                  )}
                  {dirty && (
                    <button
                      type="button"
                      class="btn"
                      onClick={() => {
                        setText(null);
                        setProblem(null);
                      }}
                    >
                      Discard edits
                    </button>
                  )}
                  {!yaml.trim() && (
                    <button type="button" class="btn" onClick={() => setText(EXAMPLE)}>
                      Insert an example
                    </button>
                  )}
                </div>
              )}
              {mayPreview && !maySave && (
                <p class="muted" style={{ marginBottom: 0 }}>
                  Your role ({session.role.replace("_", " ")}) may preview label rules; an admin or secops engineer saves them.
                </p>
              )}
            </div>
            {preview && <Preview preview={preview} current={stored.assigned} stale={preview.yaml !== yaml} />}
          </div>
          <div>
            <div class="card" aria-labelledby="lr-in-force">
              <h2 id="lr-in-force">In force</h2>
              {stored.rules.length === 0 ? (
                <p class="muted" style={{ marginTop: 0 }}>
                  No label rules{stored.updated_by ? "" : " have been saved yet"}.
                </p>
              ) : (
                <ol aria-label="Rules in force" style={{ margin: "0 0 10px", paddingLeft: 22 }}>
                  {stored.rules.map((r) => (
                    <li>
                      <code>{r}</code>
                    </li>
                  ))}
                </ol>
              )}
              {stored.updated_by && (
                <p class="muted" data-testid="lr-changed" style={{ margin: "0 0 8px" }}>
                  Last changed by <strong>{stored.updated_by}</strong>{" "}
                  <span title={fmtTime(stored.updated_at_ms)}>
                    {fmtAgo(stored.updated_at_ms)} ({fmtTime(stored.updated_at_ms)})
                  </span>
                </p>
              )}
              <p style={{ margin: 0 }}>
                {stored.assigned.length} workload{stored.assigned.length === 1 ? " gets" : "s get"} labels from them
                {session.scope ? " in your scope" : ""}.
              </p>
            </div>
            {stored.assigned.length > 0 && (
              <div class="card">
                <h2>Labels from the rules in force</h2>
                <AssignedTable items={stored.assigned} label="Labels from the rules in force" />
              </div>
            )}
          </div>
        </div>
      )}
    </>
  );
}

function Problems({ problem, onLine }: { problem: Problem; onLine: (line: number) => void }) {
  if (problem.other) return <ErrorBox error={problem.other} />;
  return (
    <div class="alert-box error" role="alert" id="lr-problems">
      <strong>{problem.what === "save" ? "Not saved: the rules have errors" : "The rules have errors"}</strong>
      <ul>
        {problem.details.map((d) => (
          <li>
            {d.line ? `Line ${d.line}` : "The document"}: <code>{d.field}</code>: {d.message}
            {d.line ? (
              <>
                {" "}
                <button type="button" class="btn small" onClick={() => onLine(d.line!)}>
                  Go to line {d.line}
                </button>
              </>
            ) : null}
          </li>
        ))}
      </ul>
    </div>
  );
}

function sameLabels(a: Labels | undefined, b: Labels | undefined): boolean {
  const ka = Object.keys(a ?? {});
  return ka.length === Object.keys(b ?? {}).length && ka.every((k) => a?.[k] === b?.[k]);
}

function Preview({ preview, current, stale }: { preview: { rules: number; assigned: Assigned[] }; current: Assigned[]; stale: boolean }) {
  const [onlyChanges, setOnlyChanges] = useState(false);
  const now = new Map(current.map((a) => [a.workload, a.labels]));
  const next = new Map(preview.assigned.map((a) => [a.workload, a.labels]));
  const names = [...new Set([...next.keys(), ...now.keys()])].sort();
  const rows = names.map((w) => {
    const after = next.get(w);
    const before = now.get(w);
    const change = !before ? "new" : !after ? "removed" : sameLabels(after, before) ? "same" : "changed";
    return { w, after, before, change };
  });
  const changed = rows.filter((r) => r.change !== "same").length;
  const shown = onlyChanges ? rows.filter((r) => r.change !== "same") : rows;
  return (
    <div class="card" aria-labelledby="lr-preview">
      <h2 id="lr-preview">Preview</h2>
      {stale && (
        <p class="alert-box info" style={{ marginTop: 0 }}>
          The editor has changed since this preview; preview again to see what it would assign.
        </p>
      )}
      <p style={{ marginTop: 0 }} data-testid="preview-summary">
        {preview.rules} rule{preview.rules === 1 ? "" : "s"}: {preview.assigned.length} workload{preview.assigned.length === 1 ? " would get" : "s would get"} labels from them;{" "}
        {changed} differ{changed === 1 ? "s" : ""} from the rules in force. Nothing is saved by a preview.
      </p>
      {rows.length > 0 && (
        <label class="check">
          <input type="checkbox" checked={onlyChanges} onChange={(e) => setOnlyChanges((e.target as HTMLInputElement).checked)} />
          Only differences ({changed})
        </label>
      )}
      {rows.length === 0 ? (
        <Empty>These rules add no label to any workload.</Empty>
      ) : (
        <div class="table-wrap" style={{ maxHeight: 520 }}>
          <table aria-label="Labels the rules would add">
            <thead>
              <tr>
                <th>Workload</th>
                <th>Labels the rules would add</th>
                <th>Against the rules in force</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((r) => (
                <tr data-testid={`preview-${r.w}`}>
                  <td>
                    <Link href={`/inventory?q=${encodeURIComponent(r.w)}`}>{r.w}</Link>
                  </td>
                  <td>{r.after ? <LabelChips labels={r.after} /> : <span class="muted">none</span>}</td>
                  <td>
                    {r.change === "same" ? (
                      <Badge>unchanged</Badge>
                    ) : r.change === "new" ? (
                      <Badge tone="ok">new</Badge>
                    ) : (
                      <>
                        <Badge tone={r.change === "removed" ? "bad" : "warn"}>{r.change}</Badge>{" "}
                        <span class="muted" style={{ fontSize: 12 }}>
                          now: <LabelChips labels={r.before} />
                        </span>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function AssignedTable({ items, label }: { items: Assigned[]; label: string }) {
  return (
    <div class="table-wrap" style={{ maxHeight: 420 }}>
      <table aria-label={label}>
        <thead>
          <tr>
            <th>Workload</th>
            <th>Labels</th>
          </tr>
        </thead>
        <tbody>
          {items.map((a) => (
            <tr>
              <td>
                <Link href={`/inventory?q=${encodeURIComponent(a.workload)}`}>{a.workload}</Link>
              </td>
              <td>
                <LabelChips labels={a.labels} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
