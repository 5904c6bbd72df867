import cytoscape from "cytoscape";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { PageProps } from ".";
import { type Basis, type Edge, type Level, WINDOWS, buildGraph, keyLabel, loadGroups, verdictOf, windowOf } from "../flows";
import { enc } from "../api";
import { navigate, setParams } from "../router";
import { type Verdict, type Workload, quarantineReason } from "../types";
import { get } from "../api";
import { ErrorBox, Loading, PageHeader, Segmented, VERDICT_COLOR, VERDICT_LABEL, VerdictBadge, fmtBytes, fmtNum, useAsync } from "../ui";

const NODE_COLOR: Record<string, string> = {
  app: "#1d4ed8",
  role: "#2563eb",
  workload: "#3b82f6",
  unknown: "#7c3aed",
  external: "#475569",
};

function flowsLink(win: string, level: Level, basis: Basis, focus: string | null, e: Edge) {
  return `/flows?window=${win}&level=${level}&basis=${basis}${focus ? `&focus=${enc(focus)}` : ""}&src=${enc(e.src.key)}&dst=${enc(e.dst.key)}`;
}

function tipHtml(e: Edge, basis: Basis): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const v = verdictOf(e, basis);
  const rows = e.services
    .slice(0, 8)
    .map((s) => `<tr><td>${esc(s.service)}</td><td>${fmtNum(s.connections)} conn.</td><td>${fmtBytes(s.bytes)}</td><td>${s.verdict ? esc(VERDICT_LABEL[s.verdict]) : ""}</td></tr>`)
    .join("");
  const more = e.services.length > 8 ? `<div>… and ${e.services.length - 8} more services</div>` : "";
  const changed = e.draft !== e.provisioned ? `<div style="margin-top:4px;color:#fcd34d">draft: ${esc(e.draft ? VERDICT_LABEL[e.draft] : "—")} · provisioned: ${esc(e.provisioned ? VERDICT_LABEL[e.provisioned] : "—")}</div>` : "";
  return `<div><b>${esc(keyLabel(e.src.key))} → ${esc(keyLabel(e.dst.key))}</b></div>
<div style="margin:2px 0 6px;color:${VERDICT_COLOR[v ?? "none"]}">${esc(v ? VERDICT_LABEL[v] : "no verdict")} · ${fmtNum(e.connections)} connections · ${fmtBytes(e.bytes)}</div>
<table>${rows}</table>${more}${changed}<div style="margin-top:6px;color:#94a3b8">Click to see the flows</div>`;
}

export function MapPage({ params }: PageProps) {
  const win = windowOf(params.get("window"));
  const level = (["app", "role", "workload"].includes(params.get("level") ?? "") ? params.get("level") : "app") as Level;
  const compare = params.get("basis") === "compare";
  const basis: Basis = params.get("basis") === "draft" ? "draft" : "provisioned";
  const focus = params.get("focus");
  const hideAllowed = params.get("hide") === "allowed";
  const [refresh, setRefresh] = useState(0);
  const flows = useAsync(() => loadGroups(win, refresh > 0), [win, refresh]);
  // Quarantined workloads, marked on the map with the app and role they belong to.
  const inventory = useAsync(() => get<{ items: Workload[] }>("/workloads?limit=10000"), [refresh]);
  const quarantinedKeys = useMemo(() => {
    const keys = new Set<string>();
    for (const w of inventory.data?.items ?? []) {
      if (!w.managed || quarantineReason(w) === undefined) continue;
      const app = w.labels.app ?? "(no app)";
      keys.add(`wl:${w.name}`);
      keys.add(`app:${app}`);
      keys.add(`role:${app}/${w.labels.role ?? "(no role)"}`);
    }
    return keys;
  }, [inventory.data]);
  const container = useRef<HTMLDivElement>(null);
  const container2 = useRef<HTMLDivElement>(null);
  const tip2 = useRef<HTMLDivElement>(null);
  const tip = useRef<HTMLDivElement>(null);

  const graph = useMemo(() => {
    if (!flows.data) return null;
    const g = buildGraph(flows.data.items, level, basis, focus);
    if (hideAllowed) {
      g.edges = g.edges.filter((e) => verdictOf(e, basis) !== "allowed");
      const used = new Set(g.edges.flatMap((e) => [e.src.key, e.dst.key]));
      for (const k of [...g.nodes.keys()]) if (!used.has(k)) g.nodes.delete(k);
    }
    return g;
  }, [flows.data, level, basis, focus, hideAllowed]);

  useEffect(() => {
    if (!graph || !container.current) return;
    const mount = (el: HTMLDivElement, tipEl: HTMLDivElement | null, basis: Basis, positions?: Record<string, cytoscape.Position>) => {
    const maxConn = Math.max(1, ...graph.edges.map((e) => e.connections));
    const maxNode = Math.max(1, ...[...graph.nodes.values()].map((n) => n.connections));
    const elements: cytoscape.ElementDefinition[] = [];
    const parents = new Map<string, string>();
    for (const n of graph.nodes.values()) if (n.parent) parents.set(n.parent, n.parentLabel ?? n.parent);
    for (const [id, label] of parents) elements.push({ data: { id, label, kind: "group" }, classes: "group" });
    for (const n of graph.nodes.values()) {
      if (parents.has(n.key)) continue;
      const size = 26 + 30 * Math.sqrt(n.connections / maxNode);
      elements.push({
        data: { id: n.key, label: n.label, kind: n.kind, parent: n.parent, size, color: NODE_COLOR[n.kind], quarantined: quarantinedKeys.has(n.key) ? 1 : 0 },
        classes: quarantinedKeys.has(n.key) ? "quarantined" : "",
      });
    }
    for (const e of graph.edges) {
      const v = verdictOf(e, basis);
      elements.push({
        data: {
          id: e.id,
          source: e.src.key,
          target: e.dst.key,
          verdict: v ?? "none",
          color: VERDICT_COLOR[v ?? "none"],
          width: 1.5 + 4.5 * Math.sqrt(e.connections / maxConn),
        },
        classes: basis === "draft" && e.draft !== e.provisioned ? "changed" : "",
      });
    }
    const cy = cytoscape({
      container: el,
      elements,
      wheelSensitivity: 0.3,
      minZoom: 0.2,
      maxZoom: 3,
      style: [
        {
          selector: "node",
          style: {
            "background-color": "data(color)",
            width: "data(size)",
            height: "data(size)",
            label: "data(label)",
            color: "#0f172a",
            "font-size": 11,
            "font-weight": 600,
            "text-valign": "bottom",
            "text-margin-y": 5,
            "text-background-color": "#ffffff",
            "text-background-opacity": 0.85,
            "text-background-padding": "2px",
            "text-background-shape": "roundrectangle",
            "border-width": 3,
            "border-color": "#ffffff",
          },
        },
        { selector: "node[kind = 'external']", style: { shape: "round-rectangle" } },
        { selector: "node[kind = 'unknown']", style: { shape: "diamond" } },
        {
          selector: "node.group",
          style: {
            "background-color": "#eef2ff",
            "background-opacity": 0.6,
            "border-width": 1,
            "border-color": "#c7d2fe",
            shape: "round-rectangle",
            label: "data(label)",
            "text-valign": "top",
            "text-halign": "center",
            "text-margin-y": -4,
            color: "#3730a3",
            "font-size": 12,
            "font-weight": 700,
            padding: "14px",
          },
        },
        {
          selector: "edge",
          style: {
            "line-color": "data(color)",
            "target-arrow-color": "data(color)",
            "target-arrow-shape": "triangle",
            "arrow-scale": 0.9,
            width: "data(width)",
            "curve-style": "bezier",
            opacity: 0.85,
          },
        },
        { selector: "edge.changed", style: { "line-style": "dashed", "line-dash-pattern": [8, 4] } },
        { selector: "edge:selected, edge.hover", style: { opacity: 1, "overlay-opacity": 0.08, "overlay-color": "#0f172a" } },
        { selector: "node.quarantined", style: { "border-color": "#b91c1c", "border-width": 4, "border-style": "dashed" } },
        { selector: "node.hover", style: { "border-color": "#f59e0b" } },
      ],
      layout: (positions
        ? { name: "preset", positions: (n: cytoscape.NodeSingular) => positions[n.id()], fit: true, padding: 30 }
        : {
        name: "cose",
        animate: false,
        nodeRepulsion: () => 90_000,
        idealEdgeLength: () => 110,
        gravity: 0.6,
        padding: 30,
        nodeDimensionsIncludeLabels: true,
      }) as cytoscape.LayoutOptions,
    });
    // A small graph is not blown up to fill the canvas.
    if (cy.zoom() > 1.3) {
      cy.zoom(1.3);
      cy.center();
    }
    const edgesById = new Map(graph.edges.map((e) => [e.id, e]));
    const showTip = (html: string, x: number, y: number) => {
      const t = tipEl;
      if (!t) return;
      t.innerHTML = html;
      t.style.display = "block";
      const w = el.clientWidth;
      const h = el.clientHeight;
      t.style.left = `${Math.max(4, Math.min(x + 14, w - t.offsetWidth - 8))}px`;
      t.style.top = `${y + 14 + t.offsetHeight > h ? Math.max(4, y - t.offsetHeight - 14) : y + 14}px`;
    };
    const hideTip = () => tipEl && (tipEl.style.display = "none");
    cy.on("mouseover", "edge", (ev) => {
      const e = edgesById.get(ev.target.id());
      ev.target.addClass("hover");
      if (e) showTip(tipHtml(e, basis), ev.renderedPosition.x, ev.renderedPosition.y);
    });
    cy.on("mouseover", "node", (ev) => {
      const n = graph.nodes.get(ev.target.id());
      ev.target.addClass("hover");
      if (n) {
        const hint = n.kind === "app" ? "Click to see its roles" : n.kind === "role" ? "Click to see its workloads" : "";
        const quarantine = quarantinedKeys.has(n.key) ? `<div style="margin-top:4px;color:#fca5a5">${n.kind === "workload" ? "quarantined" : "holds a quarantined workload"}</div>` : "";
        showTip(`<div><b>${n.label}</b></div><div>${fmtNum(n.connections)} connections · ${fmtBytes(n.bytes)}</div>${quarantine}${hint ? `<div style="margin-top:6px;color:#94a3b8">${hint}</div>` : ""}`, ev.renderedPosition.x, ev.renderedPosition.y);
      }
    });
    cy.on("mouseout", "edge, node", (ev) => {
      ev.target.removeClass("hover");
      hideTip();
    });
    cy.on("tap", "edge", (ev) => {
      const e = edgesById.get(ev.target.id());
      if (e) navigate(flowsLink(win, level, basis, focus, e));
    });
    cy.on("tap", "node", (ev) => {
      const n = graph.nodes.get(ev.target.id());
      if (n?.kind === "app" && n.app) setParams({ level: "role", focus: n.app });
      else if (n?.kind === "role" && n.app) setParams({ level: "workload", focus: n.app });
    });
    return cy;
    };
    const cy = mount(container.current, tip.current, compare ? "provisioned" : basis);
    let draft: cytoscape.Core | undefined;
    if (compare && container2.current) {
      const pos: Record<string, cytoscape.Position> = {};
      cy.nodes().forEach((n) => {
        pos[n.id()] = { ...n.position() };
      });
      draft = mount(container2.current, tip2.current, "draft", pos);
    }
    const w = window as unknown as { __bulkheadMap?: cytoscape.Core; __bulkheadDraftMap?: cytoscape.Core };
    w.__bulkheadMap = cy;
    w.__bulkheadDraftMap = draft;
    return () => {
      for (const t of [tip.current, tip2.current]) if (t) t.style.display = "none";
      cy.destroy();
      draft?.destroy();
    };
  }, [graph, compare, quarantinedKeys]);

  const edges = graph ? [...graph.edges].sort((a, b) => rank(verdictOf(b, basis)) - rank(verdictOf(a, basis)) || b.connections - a.connections) : [];
  const counts = { allowed: 0, potentially_blocked: 0, blocked: 0 } as Record<Verdict, number>;
  for (const e of edges) {
    const v = verdictOf(e, basis);
    if (v) counts[v]++;
  }
  const changed = graph ? graph.edges.filter((e) => e.draft !== e.provisioned).length : 0;

  return (
    <>
      <PageHeader
        title="Application dependency map"
        sub={
          <>
            Who talks to whom, grouped by labels, coloured by what {compare ? "the provisioned policy (left) and the draft (right) say" : `the ${basis} policy says`}.{" "}
            {focus ? (
              <>
                Showing <strong>{focus}</strong> ({level === "role" ? "roles" : "workloads"}).{" "}
                <button type="button" class="btn small" onClick={() => setParams({ focus: null, level: "app" })}>
                  ← All applications
                </button>
              </>
            ) : null}
          </>
        }
      >
        <button type="button" class="btn" onClick={() => setRefresh((r) => r + 1)}>
          Refresh
        </button>
      </PageHeader>
      <div class="toolbar">
        <div class="field">
          <label for="map-window">Time window</label>
          <select id="map-window" value={win} onChange={(e) => setParams({ window: (e.target as HTMLSelectElement).value })}>
            {WINDOWS.map(([k, t]) => (
              <option value={k}>Last {t}</option>
            ))}
          </select>
        </div>
        <Segmented
          label="Group by"
          name="level"
          value={level}
          options={[
            ["app", "Application"],
            ["role", "Role"],
            ["workload", "Workload"],
          ]}
          onChange={(v) => setParams({ level: v === "app" ? null : v })}
        />
        <Segmented
          label="Verdicts of"
          name="basis"
          value={compare ? "compare" : basis}
          options={[
            ["provisioned", "Provisioned"],
            ["draft", "Draft"],
            ["compare", "Side by side"],
          ]}
          onChange={(v: string) => setParams({ basis: v === "provisioned" ? null : v })}
        />
        <label class="check">
          <input type="checkbox" checked={hideAllowed} onChange={(e) => setParams({ hide: (e.target as HTMLInputElement).checked ? "allowed" : null })} /> Hide allowed
        </label>
      </div>
      <ErrorBox error={flows.error} />
      <div class={`map-layout ${compare ? "compare" : ""}`}>
        <div class={compare ? "map-pair" : ""}>
        {compare && (
          <div class="map-canvas" aria-label="Dependency graph, verdicts of the draft" role="img">
            <div class="map-title">Draft</div>
            <div ref={container2} style={{ position: "absolute", inset: 0 }} data-testid="map-draft" />
            <div ref={tip2} class="map-tip" style={{ display: "none" }} />
          </div>
        )}
        <div class="map-canvas" aria-label="Dependency graph (the table beside lists the same connections)" role="img" style={compare ? { order: -1 } : undefined}>
          {compare && <div class="map-title">Provisioned (in force)</div>}
          <div ref={container} style={{ position: "absolute", inset: 0 }} data-testid="map" />
          <div ref={tip} class="map-tip" style={{ display: "none" }} />
          {flows.loading && (
            <div style={{ position: "absolute", left: 16, top: 8 }}>
              <Loading what="Loading flows" />
            </div>
          )}
          {graph && graph.edges.length === 0 && !flows.loading && <div class="empty" style={{ position: "absolute", inset: 0, display: "grid", placeItems: "center" }}>No traffic in this window.</div>}
        </div>
        </div>
        <div class="map-side">
          <div class="card">
            <h2>Legend</h2>
            <div class="legend" style={{ marginTop: 0 }}>
              {(Object.keys(VERDICT_LABEL) as Verdict[]).map((v) => (
                <span>
                  <i class="line" style={{ background: VERDICT_COLOR[v] }} />
                  {VERDICT_LABEL[v]} <span class="count">{counts[v]}</span>
                </span>
              ))}
            </div>
            <div class="legend">
              <span>
                <i style={{ background: NODE_COLOR.app, borderRadius: "50%" }} />
                Workloads
              </span>
              <span>
                <i style={{ background: NODE_COLOR.unknown, transform: "rotate(45deg)" }} />
                Unknown internal
              </span>
              <span>
                <i style={{ background: NODE_COLOR.external }} />
                External
              </span>
              <span>
                <i style={{ background: "#fff", border: "2px dashed #b91c1c", borderRadius: "50%" }} />
                Quarantined (or holds a quarantined workload)
              </span>
            </div>
            <p class="muted" style={{ margin: "10px 0 0", fontSize: 12.5 }}>
              {flows.data ? `${fmtNum(flows.data.summaries)} ${flows.data.bucket} summaries in ${fmtNum(flows.data.items.length)} groups${flows.data.truncated ? " (the most recently seen: older traffic in this window is left out)" : ""}. ` : ""}
              {basis === "draft" || compare ? `${changed} connection${changed === 1 ? "" : "s"} change verdict in the draft (dashed). ` : ""}
              Edge width follows connections.
            </p>
          </div>
          <div class="card" style={{ paddingBottom: 0 }}>
            <h2>
              Connections <span class="count">{edges.length}</span>
            </h2>
            <div class="table-wrap">
              <table class="edge-list" aria-label="Connections on the map">
                <thead>
                  <tr>
                    <th>From → to</th>
                    <th>Verdict</th>
                    <th class="num">Conn.</th>
                  </tr>
                </thead>
                <tbody>
                  {edges.slice(0, 200).map((e) => (
                    <tr data-verdict={verdictOf(e, basis) ?? "none"}>
                      <td>
                        <a href={flowsLink(win, level, basis, focus, e)} onClick={(ev) => { ev.preventDefault(); navigate(flowsLink(win, level, basis, focus, e)); }}>
                          {keyLabel(e.src.key)} → {keyLabel(e.dst.key)}
                        </a>
                        <div class="muted" style={{ fontSize: 12 }}>
                          {e.services.slice(0, 3).map((s) => s.service).join(", ")}
                          {e.services.length > 3 ? ` +${e.services.length - 3}` : ""}
                        </div>
                      </td>
                      <td>
                        <VerdictBadge verdict={verdictOf(e, basis)} />
                        {compare && e.draft !== e.provisioned && (
                          <div style={{ marginTop: 4 }}>
                            <span class="muted" style={{ fontSize: 12 }}>draft: </span>
                            <VerdictBadge verdict={e.draft} />
                          </div>
                        )}
                      </td>
                      <td class="num">{fmtNum(e.connections)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </div>
        </div>
      </div>
    </>
  );
}

const rank = (v: Verdict | undefined) => (v === "blocked" ? 2 : v === "potentially_blocked" ? 1 : 0);
