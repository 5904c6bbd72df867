import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { enc, get, put, query } from "../api";
import { setParams } from "../router";
import { can } from "../session";
import type { Workload } from "../types";
import { Badge, Empty, ErrorBox, LabelChips, Loading, PageHeader, toast, useAsync } from "../ui";

export function Inventory({ session, params }: PageProps) {
  const labels = params.get("labels") ?? "";
  const [filter, setFilter] = useState(labels);
  const [text, setText] = useState("");
  const list = useAsync(() => get<{ total: number; items: Workload[] }>(`/workloads${query({ labels, limit: 10000 })}`), [labels]);
  const [editing, setEditing] = useState<string | null>(null);
  const q = text.trim().toLowerCase();
  const items = (list.data?.items ?? []).filter((w) => !q || `${w.name} ${w.hostname ?? ""} ${w.addresses.join(" ")} ${w.os ?? ""}`.toLowerCase().includes(q));
  const editable = can.editInventory(session);
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
      </form>
      <ErrorBox error={list.error} />
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
                {editable && <th />}
              </tr>
            </thead>
            <tbody>
              {items.map((w) => (
                <>
                  <tr class={editing === w.name ? "selected" : ""}>
                    <td>
                      <strong>{w.name}</strong>
                      {w.hostname && <div class="muted" style={{ fontSize: 12 }}>{w.hostname}</div>}
                    </td>
                    <td>
                      <code>{w.addresses.join(", ")}</code>
                    </td>
                    <td>
                      <LabelChips labels={w.labels} />
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
                    {editable && (
                      <td style={{ textAlign: "right" }}>
                        <button type="button" class="btn small" aria-expanded={editing === w.name} onClick={() => setEditing(editing === w.name ? null : w.name)}>
                          Edit labels
                        </button>
                      </td>
                    )}
                  </tr>
                  {editing === w.name && (
                    <tr>
                      <td colSpan={7} style={{ background: "#fafbfd" }}>
                        <LabelEditor
                          workload={w}
                          onDone={(saved) => {
                            setEditing(null);
                            if (saved) list.reload();
                          }}
                        />
                      </td>
                    </tr>
                  )}
                </>
              ))}
            </tbody>
          </table>
          {items.length === 0 && <Empty>No workloads match.</Empty>}
        </div>
      )}
      <p class="muted">
        {list.data ? `${items.length} of ${list.data.total} workloads.` : ""} Label rules (labels from hostname, OS or subnet) are applied when inventory files are imported with{" "}
        <code>bulkhead inventory</code>; the API has no label-rule endpoint yet.
      </p>
    </>
  );
}

function LabelEditor({ workload, onDone }: { workload: Workload; onDone: (saved: boolean) => void }) {
  const [rows, setRows] = useState<[string, string][]>(Object.entries(workload.labels));
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
