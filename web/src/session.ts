// Who is signed in, and what their role may do. The console offers only what the API
// would allow; the API still checks every call.
import { get, request, setToken } from "./api";
import type { Labels } from "./types";

export type Role = "admin" | "secops" | "netops" | "app_owner";

export interface Session {
  name: string;
  role: Role;
  scope: string | null;
  token_id: number;
  /** Paths from /api/v1/openapi.json: pages for APIs the server lacks stay hidden. */
  routes: Set<string>;
}

export async function signIn(token: string): Promise<Session> {
  const who = await request<{ name: string; role: Role; scope: string | null; token_id: number }>("GET", "/whoami", undefined, token);
  setToken(token);
  return load(who);
}

export async function resume(): Promise<Session> {
  return load(await get<{ name: string; role: Role; scope: string | null; token_id: number }>("/whoami"));
}

async function load(who: { name: string; role: Role; scope: string | null; token_id: number }): Promise<Session> {
  const doc = await get<{ paths: Record<string, unknown> }>("/openapi.json");
  return { ...who, routes: new Set(Object.keys(doc.paths)) };
}

export function signOut() {
  setToken(null);
}

const writers: Role[] = ["admin", "secops"];
export const can = {
  editInventory: (s: Session) => writers.includes(s.role),
  provision: (s: Session) => writers.includes(s.role),
  editPolicyObjects: (s: Session) => writers.includes(s.role),
  editSomeRulesets: (s: Session) => s.role !== "netops",
  changeAlerts: (s: Session) => s.role !== "netops",
  readAudit: (s: Session) => writers.includes(s.role),
  readSprawl: (s: Session) => s.role !== "app_owner",
  manageTokens: (s: Session) => s.role === "admin",
  scheduleRollouts: (s: Session) => writers.includes(s.role),
  quarantine: (s: Session) => writers.includes(s.role),
  setModes: (s: Session) => writers.includes(s.role),
  manageAgents: (s: Session) => writers.includes(s.role),
  readPairingProfiles: (s: Session) => s.role !== "app_owner",
  editLabelRules: (s: Session) => writers.includes(s.role),
  previewLabelRules: (s: Session) => s.role !== "app_owner",
  readExporters: (s: Session) => s.role !== "app_owner",
};

export function parseLabels(text: string | null | undefined): Labels {
  const out: Labels = {};
  for (const part of (text ?? "").split(/[,\s]+/)) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/** Whether `labels` carries every label of `scope`. */
export function includes(labels: Labels | undefined, scope: Labels): boolean {
  return Object.entries(scope).every(([k, v]) => labels?.[k] === v);
}

/** May this session edit a ruleset (tier application inside an app owner's scope)? */
export function mayEditRuleset(s: Session, tier: string, scope: Labels | undefined): boolean {
  if (writers.includes(s.role)) return true;
  if (s.role !== "app_owner") return false;
  return tier === "application" && includes(scope, parseLabels(s.scope));
}
