import { useMemo, useState } from "preact/hooks";
import type { PageProps } from ".";
import { type Basis, type Level, WINDOWS, endOf, keyLabel, loadFlows, touches, windowOf } from "../flows";
import { post } from "../api";
import { setParams } from "../router";
import type { Flow } from "../types";
import { Empty, ErrorBox, LabelChips, Link, Loading, PageHeader, Segmented, VerdictBadge, fmtBytes, fmtNum, fmtService, fmtTime, useAsync } from "../ui";

const SHOWN = 300;

function End({ f, side }: { f: Flow; side: "src" | "dst" }) {
  const wl = side === "src" ? f.src_workload : f.dst_workload;
  const addr = side === "src" ? f.src : f.dst;
  const labels = side === "src" ? f.src_labels : f.dst_labels;
  return (
    <div>
      <div>
        <strong>{wl ?? addr}</strong> {wl && <span class="muted">{addr}</span>}
      </div>
      {wl ? <LabelChips labels={labels} only={["app", "env", "role"]} /> : <span class="muted">not in the inventory</span>}
    </div>
  );
}

export function Flows({ params }: PageProps) {
  const win = windowOf(params.get("window"));
  const level = (params.get("level") ?? "app") as Level;
  const basis: Basis = params.get("basis") === "draft" ? "draft" : "provisioned";
  const focus = params.get("focus");
  const src = params.get("src");
  const dst = params.get("dst");
  const verdict = params.get("verdict") ?? "";
  const [text, setText] = useState(params.get("q") ?? "");
  const flows = useAsync(() => loadFlows(win), [win]);
  const [open, setOpen] = useState<number | null>(null);

  const rows = useMemo(() => {
    if (!flows.data) return [];
    const q = text.trim().toLowerCase();
    return flows.data.items
      .filter((f) => {
        if (focus && !touches(f, focus)) return false;
        const lvl = (side: "src" | "dst") => (focus && (side === "src" ? f.src_labels.app : f.dst_labels.app) !== focus ? "app" : level);
        if (src && endOf(f, "src", lvl("src")).key !== src) return false;
        if (dst && endOf(f, "dst", lvl("dst")).key !== dst) return false;
        const v = basis === "draft" ? f.draft?.verdict : f.provisioned?.verdict;
        if (verdict && v !== verdict) return false;
        if (q) {
          const hay = `${f.src} ${f.dst} ${f.src_workload ?? ""} ${f.dst_workload ?? ""} ${fmtService(f.proto, f.port)} ${Object.entries(f.src_labels).join(" ")} ${Object.entries(f.dst_labels).join(" ")}`.toLowerCase();
          if (!hay.includes(q)) return false;
        }
        return true;
      })
      .sort((a, b) => b.last_seen_ms - a.last_seen_ms);
  }, [flows.data, src, dst, verdict, text, basis, level, focus]);

  const label = keyLabel;
  return (
    <>
      <PageHeader
        title="Flows"
        sub={
          src || dst ? (
            <>
              {label(src) || "anything"} → {label(dst) || "anything"} · <Link href={`/map?window=${win}`}>back to the map</Link>{" "}
              · <Link href={`/flows?window=${win}`}>all flows</Link>
            </>
          ) : (
            "Flow summaries with their workloads, labels and verdicts against the provisioned policy and the draft."
          )
        }
      />
      <div class="toolbar">
        <div class="field">
          <label for="flows-window">Time window</label>
          <select id="flows-window" value={win} onChange={(e) => setParams({ window: (e.target as HTMLSelectElement).value })}>
            {WINDOWS.map(([k, t]) => (
              <option value={k}>Last {t}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="flows-verdict">Verdict</label>
          <select id="flows-verdict" value={verdict} onChange={(e) => setParams({ verdict: (e.target as HTMLSelectElement).value })}>
            <option value="">Any</option>
            <option value="allowed">Allowed</option>
            <option value="potentially_blocked">Potentially blocked</option>
            <option value="blocked">Blocked</option>
          </select>
        </div>
        <Segmented
          label="Verdicts of"
          name="flows-basis"
          value={basis}
          options={[
            ["provisioned", "Provisioned"],
            ["draft", "Draft"],
          ]}
          onChange={(v) => setParams({ basis: v === "provisioned" ? null : v })}
        />
        <div class="field" style={{ flex: 1, maxWidth: 360 }}>
          <label for="flows-q">Search</label>
          <input id="flows-q" type="search" placeholder="workload, address, label or tcp/443" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} />
        </div>
      </div>
      <ErrorBox error={flows.error} />
      {flows.loading && !flows.data ? (
        <Loading what="Loading flows" />
      ) : (
        <div class="card" style={{ paddingBottom: 0 }}>
          <h2>
            <span>
              {fmtNum(rows.length)} summaries{rows.length > SHOWN ? `, the latest ${SHOWN} shown` : ""}
            </span>
          </h2>
          <div class="table-wrap">
            <table aria-label="Flow summaries">
              <thead>
                <tr>
                  <th>Last seen</th>
                  <th>Source</th>
                  <th>Destination</th>
                  <th>Service</th>
                  <th class="num">Conn.</th>
                  <th class="num">Bytes</th>
                  <th>Provisioned</th>
                  <th>Draft</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {rows.slice(0, SHOWN).map((f, i) => (
                  <>
                  <tr>
                    <td style={{ whiteSpace: "nowrap" }}>{fmtTime(f.last_seen_ms)}</td>
                    <td>
                      <End f={f} side="src" />
                    </td>
                    <td>
                      <End f={f} side="dst" />
                    </td>
                    <td>
                      <code>{fmtService(f.proto, f.port)}</code>
                    </td>
                    <td class="num">{fmtNum(f.connections)}</td>
                    <td class="num">{fmtBytes(f.bytes)}</td>
                    <td>
                      <VerdictBadge verdict={f.provisioned?.verdict} />
                      {f.provisioned?.rules.length ? <div class="muted" style={{ fontSize: 12 }}>{f.provisioned.rules.join(", ")}</div> : null}
                    </td>
                    <td>
                      <VerdictBadge verdict={f.draft?.verdict} />
                    </td>
                    <td>
                      <button type="button" class="btn small" aria-expanded={open === i} onClick={() => setOpen(open === i ? null : i)}>
                        Why?
                      </button>
                    </td>
                  </tr>
                  {open === i && (
                    <tr>
                      <td colSpan={9} style={{ background: "#fafbfd" }}>
                        <Explain f={f} basis={basis} />
                      </td>
                    </tr>
                  )}
                  </>
                ))}
              </tbody>
            </table>
            {rows.length === 0 && <Empty>No flows match.</Empty>}
          </div>
        </div>
      )}
    </>
  );
}

/** The policy's explanation of one flow's verdict (which rules matched, which almost did). */
function Explain({ f, basis }: { f: Flow; basis: Basis }) {
  const e = useAsync(
    () =>
      post<{ text: string }>("/explain", {
        from: f.src_workload ?? f.src,
        to: f.dst_workload ?? f.dst,
        port: fmtService(f.proto, f.port),
        against: basis,
      }),
    [f, basis],
  );
  if (e.error) return <ErrorBox error={e.error} />;
  if (!e.data) return <Loading what="Explaining" />;
  return (
    <pre class="explain" aria-label="Explanation">
      {e.data.text}
    </pre>
  );
}
