export type Labels = Record<string, string>;
export type Verdict = "allowed" | "potentially_blocked" | "blocked";

export interface Workload {
  name: string;
  kind: string;
  managed: boolean;
  mode?: string | null;
  addresses: string[];
  hostname?: string | null;
  os?: string | null;
  os_version?: string | null;
  owner?: string | null;
  labels: Labels;
  attributes?: Record<string, string>;
}

export interface SummaryVerdict {
  verdict: Verdict;
  rules: string[];
}

export interface Flow {
  bucket: string;
  bucket_start_ms: number;
  src: string;
  dst: string;
  proto: number;
  port: number;
  process?: string | null;
  packets: number;
  bytes: number;
  connections: number;
  first_seen_ms: number;
  last_seen_ms: number;
  reporter?: string | null;
  src_workload?: string | null;
  dst_workload?: string | null;
  src_labels: Labels;
  dst_labels: Labels;
  provisioned?: SummaryVerdict | null;
  draft?: SummaryVerdict | null;
}

export interface Alert {
  id: number;
  kind: string;
  severity: string;
  state: "open" | "acknowledged" | "resolved";
  title: string;
  key: string;
  count: number;
  first_seen_ms: number;
  last_seen_ms: number;
  acknowledged_by?: string | null;
  acknowledged_ms?: number | null;
  resolved_by?: string | null;
  resolved_ms?: number | null;
  details: Record<string, unknown>;
}

export interface PolicyObject {
  kind: string;
  name: string;
  updated_ms: number;
  updated_by: string;
  object: Record<string, unknown>;
  yaml: string;
}

export interface Rule {
  id: string;
  description?: string;
  action: "allow" | "deny";
  from: string[];
  to: string[];
  services: string[];
}

export interface Ruleset {
  bulkhead?: string;
  kind?: string;
  name: string;
  tier: string;
  owner?: string;
  description?: string;
  scope?: Labels;
  rules: Rule[];
}

export interface Change {
  change: "added" | "removed" | "changed";
  kind: string;
  name: string;
  before: string | null;
  after: string | null;
}

export interface Version {
  id: number;
  comment: string;
  author: string;
  created_ms: number;
  objects: number;
  workloads: number;
}
