// Small shared pieces: data loading, formatting, badges, messages.
import type { ComponentChildren, JSX } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api";
import { onLink } from "./router";
import type { Labels, Verdict } from "./types";

export function Link(props: JSX.HTMLAttributes<HTMLAnchorElement> & { href: string }) {
  return <a {...props} onClick={onLink} />;
}

export interface Async<T> {
  data: T | undefined;
  error: Error | undefined;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change; `reload()` runs it again. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): Async<T> {
  const [state, setState] = useState<{ data?: T; error?: Error; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  const seq = useRef(0);
  useEffect(() => {
    const mine = ++seq.current;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => mine === seq.current && setState({ data, loading: false }),
      (error) => mine === seq.current && setState((s) => ({ data: s.data, error, loading: false })),
    );
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data: state.data, error: state.error, loading: state.loading, reload };
}

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const e = error as ApiError;
  return (
    <div class="alert-box error" role="alert">
      <strong>{e.status === 403 ? "Not allowed" : "Something went wrong"}</strong>
      <div>{e.message}</div>
      {e.details && e.details.length > 1 && (
        <ul>
          {e.details.map((d) => (
            <li>
              <code>{d.field}</code>
              {d.line ? ` (line ${d.line}${d.column ? `:${d.column}` : ""})` : ""}: {d.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <div class="loading" role="status" aria-live="polite">
      <span class="spinner" aria-hidden="true" /> {what}…
    </div>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

export const VERDICT_LABEL: Record<Verdict, string> = {
  allowed: "Allowed",
  potentially_blocked: "Potentially blocked",
  blocked: "Blocked",
};
export const VERDICT_COLOR: Record<Verdict | "none", string> = {
  allowed: "#16a34a",
  potentially_blocked: "#d97706",
  blocked: "#dc2626",
  none: "#94a3b8",
};

export function VerdictBadge({ verdict }: { verdict?: Verdict | null }) {
  if (!verdict) return <span class="badge muted">no verdict</span>;
  return <span class={`badge v-${verdict}`}>{VERDICT_LABEL[verdict]}</span>;
}

export function Badge({ tone = "muted", children }: { tone?: string; children: ComponentChildren }) {
  return <span class={`badge ${tone}`}>{children}</span>;
}

/** Label chips; keys in `derived` came from label rules and are drawn apart (dashed). */
export function LabelChips({ labels, only, derived }: { labels: Labels | undefined; only?: string[]; derived?: Labels }) {
  const entries = Object.entries(labels ?? {}).filter(([k]) => !only || only.includes(k));
  if (entries.length === 0) return <span class="muted">no labels</span>;
  return (
    <span class="chips">
      {entries.map(([k, v]) =>
        derived?.[k] === v ? (
          <span class="chip derived" title="From a label rule" data-derived="">
            <span class="chip-k">{k}</span>
            {v}
            <span class="sr-only"> (from a label rule)</span>
          </span>
        ) : (
          <span class="chip">
            <span class="chip-k">{k}</span>
            {v}
          </span>
        ),
      )}
    </span>
  );
}

export function fmtNum(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n.toLocaleString("en");
}

export function fmtBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtTime(ms: number | null | undefined): string {
  if (!ms) return "—";
  const d = new Date(ms);
  return d.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
}

export function fmtAgo(ms: number | null | undefined): string {
  if (!ms) return "—";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const PROTOS: Record<number, string> = { 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp" };
export function fmtService(proto: number, port: number): string {
  const p = PROTOS[proto];
  if (!p) return `proto ${proto}`;
  return p.startsWith("icmp") ? p : `${p}/${port}`;
}

/** A row of radio buttons that looks like a segmented control (keyboard: arrows). */
export function Segmented<T extends string>(props: {
  label: string;
  value: T;
  options: [T, string][];
  onChange: (v: T) => void;
  name: string;
}) {
  return (
    <fieldset class="segmented">
      <legend>{props.label}</legend>
      <div class="segments">
        {props.options.map(([v, text]) => (
          <label class={v === props.value ? "on" : ""}>
            <input
              type="radio"
              name={props.name}
              value={v}
              checked={v === props.value}
              onChange={() => props.onChange(v)}
            />
            <span>{text}</span>
          </label>
        ))}
      </div>
    </fieldset>
  );
}

let toastTimer: number | undefined;
export function toast(message: string, tone: "ok" | "error" = "ok") {
  let el = document.getElementById("toast");
  if (!el) {
    el = document.createElement("div");
    el.id = "toast";
    el.setAttribute("role", "status");
    el.setAttribute("aria-live", "polite");
    document.body.appendChild(el);
  }
  el.textContent = message;
  el.className = `toast show ${tone}`;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => el?.classList.remove("show"), 4000);
}

export function PageHeader({ title, sub, children }: { title: string; sub?: ComponentChildren; children?: ComponentChildren }) {
  return (
    <header class="page-header">
      <div>
        <h1>{title}</h1>
        {sub && <p class="sub">{sub}</p>}
      </div>
      {children && <div class="page-actions">{children}</div>}
    </header>
  );
}
