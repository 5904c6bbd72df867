// Flow summaries for a time window, and their grouping by labels for the map:
// application → role → workload.
import { get, query } from "./api";
import type { Flow, FlowGroup, Verdict } from "./types";
import { fmtService } from "./ui";

export type WindowKey = "15m" | "1h" | "6h" | "24h" | "7d";
export const WINDOWS: [WindowKey, string][] = [
  ["15m", "15 min"],
  ["1h", "1 hour"],
  ["6h", "6 hours"],
  ["24h", "24 hours"],
  ["7d", "7 days"],
];
const SPAN: Record<WindowKey, [number, "minute" | "hour"]> = {
  "15m": [15 * 60_000, "minute"],
  "1h": [3_600_000, "minute"],
  "6h": [6 * 3_600_000, "hour"],
  "24h": [24 * 3_600_000, "hour"],
  "7d": [7 * 24 * 3_600_000, "hour"],
};
export const windowOf = (s: string | null): WindowKey => (SPAN[s as WindowKey] ? (s as WindowKey) : "15m");

/** How a group key reads: `app:shop` → shop, `role:shop/web` → shop/web. */
export function keyLabel(k: string | null): string {
  if (!k) return "";
  if (k === "unknown") return "Unknown internal";
  if (k === "external") return "External";
  return k.replace(/^(app|role|wl|ip):/, "");
}

const PAGE = 10_000;
const MAX_ROWS = 60_000;

export interface FlowSet {
  items: Flow[];
  truncated: boolean;
  bucket: "minute" | "hour";
  fromMs: number;
  toMs: number;
  loadedAt: number;
}

let cache: { key: WindowKey; set: FlowSet } | null = null;

/** Every summary in the window, newest first, up to MAX_ROWS: past that the oldest part
 * of the window is left out and `truncated` says so. Hour windows use hourly summaries. */
export async function loadFlows(win: WindowKey, fresh = false, progress?: (n: number) => void): Promise<FlowSet> {
  if (!fresh && cache && cache.key === win && Date.now() - cache.set.loadedAt < 60_000) return cache.set;
  const [span, bucket] = SPAN[win];
  const toMs = Date.now();
  const fromMs = toMs - span;
  const items: Flow[] = [];
  let truncated = false;
  for (let offset = 0; ; offset += PAGE) {
    const page = await get<{ items: Flow[]; more: boolean }>(
      `/flows${query({ bucket, from_ms: fromMs, to_ms: toMs, order: "newest", limit: PAGE, offset })}`,
    );
    items.push(...page.items);
    progress?.(items.length);
    if (!page.more) break;
    if (items.length >= MAX_ROWS) {
      truncated = true;
      break;
    }
  }
  const set = { items, truncated, bucket, fromMs, toMs, loadedAt: Date.now() };
  cache = { key: win, set };
  return set;
}

/** What the map needs of a flow: a summary, or a group of them from /flows/groups. */
export type MapFlow = Pick<
  Flow,
  "src" | "dst" | "proto" | "port" | "bytes" | "connections" | "src_workload" | "dst_workload" | "src_labels" | "dst_labels" | "provisioned" | "draft"
> & { summaries?: number };

export interface GroupSet {
  items: MapFlow[];
  /** Summaries folded into the groups. */
  summaries: number;
  truncated: boolean;
  bucket: "minute" | "hour";
  loadedAt: number;
}

let groupCache: { key: WindowKey; set: GroupSet } | null = null;

/** The window's traffic folded by the server (ends, service, verdicts): what the map
 * draws, without a row per minute. Past the server's limit the least recently seen
 * groups are left out and `truncated` says so. */
export async function loadGroups(win: WindowKey, fresh = false): Promise<GroupSet> {
  if (!fresh && groupCache && groupCache.key === win && Date.now() - groupCache.set.loadedAt < 60_000) return groupCache.set;
  const [span, bucket] = SPAN[win];
  const toMs = Date.now();
  const page = await get<{ items: FlowGroup[]; more: boolean }>(`/flows/groups${query({ bucket, from_ms: toMs - span, to_ms: toMs })}`);
  const verdict = (v: Verdict | null | undefined) => (v ? { verdict: v, rules: [] } : null);
  const items: MapFlow[] = page.items.map((g) => ({
    src: g.src ?? "",
    dst: g.dst ?? "",
    proto: g.proto,
    port: g.port,
    bytes: g.bytes,
    connections: g.connections,
    src_workload: g.src_workload,
    dst_workload: g.dst_workload,
    src_labels: g.src_labels,
    dst_labels: g.dst_labels,
    provisioned: verdict(g.provisioned),
    draft: verdict(g.draft),
    summaries: g.summaries,
  }));
  const set = { items, summaries: page.items.reduce((n, g) => n + g.summaries, 0), truncated: page.more, bucket, loadedAt: Date.now() };
  groupCache = { key: win, set };
  return set;
}

export type Level = "app" | "role" | "workload";
export type Basis = "provisioned" | "draft";

export interface End {
  key: string;
  label: string;
  kind: "app" | "role" | "workload" | "unknown" | "external";
  parent?: string;
  parentLabel?: string;
  app?: string;
}

function isInternal(ip: string): boolean {
  if (ip.includes(":")) return /^f[cd]/i.test(ip) || /^fe80/i.test(ip);
  const [a, b] = ip.split(".").map(Number);
  return a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || a === 127;
}

export function endOf(f: MapFlow, side: "src" | "dst", level: Level): End {
  const labels = side === "src" ? f.src_labels : f.dst_labels;
  const wl = side === "src" ? f.src_workload : f.dst_workload;
  const addr = side === "src" ? f.src : f.dst;
  if (!wl) {
    if (!isInternal(addr)) return { key: "external", label: "External", kind: "external" };
    if (level === "workload") return { key: `ip:${addr}`, label: addr, kind: "unknown", parent: "unknown", parentLabel: "Unknown internal" };
    return { key: "unknown", label: "Unknown internal", kind: "unknown" };
  }
  const app = labels.app ?? "(no app)";
  if (level === "app") return { key: `app:${app}`, label: app, kind: "app", app };
  if (level === "role") {
    const role = labels.role ?? "(no role)";
    return { key: `role:${app}/${role}`, label: role, kind: "role", parent: `app:${app}`, parentLabel: app, app };
  }
  return { key: `wl:${wl}`, label: wl, kind: "workload", parent: `app:${app}`, parentLabel: app, app };
}

const RANK: Record<Verdict, number> = { allowed: 0, potentially_blocked: 1, blocked: 2 };
export function worst(a: Verdict | undefined, b: Verdict | undefined): Verdict | undefined {
  if (!a) return b;
  if (!b) return a;
  return RANK[a] >= RANK[b] ? a : b;
}

export interface ServiceStat {
  service: string;
  connections: number;
  bytes: number;
  verdict?: Verdict;
}

export interface Edge {
  id: string;
  src: End;
  dst: End;
  connections: number;
  bytes: number;
  flows: number;
  provisioned?: Verdict;
  draft?: Verdict;
  counts: Record<Verdict, number>;
  services: ServiceStat[];
}

export interface Graph {
  nodes: Map<string, End & { connections: number; bytes: number }>;
  edges: Edge[];
}

/** Whether a flow touches the application `focus` (either end). */
export function touches(f: MapFlow, focus: string | null): boolean {
  return !focus || f.src_labels.app === focus || f.dst_labels.app === focus;
}

export function buildGraph(flows: MapFlow[], level: Level, basis: Basis, focus: string | null): Graph {
  const nodes: Graph["nodes"] = new Map();
  const edges = new Map<string, Edge & { svc: Map<string, ServiceStat> }>();
  for (const f of flows) {
    if (!touches(f, focus)) continue;
    // Outside the focused application, ends stay at application level.
    const s = endOf(f, "src", focus && f.src_labels.app !== focus ? "app" : level);
    const d = endOf(f, "dst", focus && f.dst_labels.app !== focus ? "app" : level);
    for (const e of [s, d]) {
      const n = nodes.get(e.key) ?? { ...e, connections: 0, bytes: 0 };
      n.connections += f.connections;
      n.bytes += f.bytes;
      nodes.set(e.key, n);
    }
    const id = `${s.key}->${d.key}`;
    let edge = edges.get(id);
    if (!edge) {
      edge = { id, src: s, dst: d, connections: 0, bytes: 0, flows: 0, counts: { allowed: 0, potentially_blocked: 0, blocked: 0 }, services: [], svc: new Map() };
      edges.set(id, edge);
    }
    edge.connections += f.connections;
    edge.bytes += f.bytes;
    edge.flows += f.summaries ?? 1;
    const pv = f.provisioned?.verdict;
    const dv = f.draft?.verdict;
    edge.provisioned = worst(edge.provisioned, pv);
    edge.draft = worst(edge.draft, dv);
    const v = basis === "draft" ? dv : pv;
    if (v) edge.counts[v] += f.connections;
    const name = fmtService(f.proto, f.port);
    const st = edge.svc.get(name) ?? { service: name, connections: 0, bytes: 0 };
    st.connections += f.connections;
    st.bytes += f.bytes;
    st.verdict = worst(st.verdict, v);
    edge.svc.set(name, st);
  }
  const out: Edge[] = [];
  for (const e of edges.values()) {
    const { svc, ...rest } = e;
    rest.services = [...svc.values()].sort((a, b) => b.connections - a.connections);
    out.push(rest);
  }
  return { nodes, edges: out };
}

export const verdictOf = (e: Edge, basis: Basis) => (basis === "draft" ? e.draft : e.provisioned);
