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

/** The traffic of a window between two ends on one service (GET /flows/groups). */
export interface FlowGroup {
  src?: string | null;
  dst?: string | null;
  src_workload?: string | null;
  dst_workload?: string | null;
  src_labels: Labels;
  dst_labels: Labels;
  proto: number;
  port: number;
  provisioned?: Verdict | null;
  draft?: Verdict | null;
  packets: number;
  bytes: number;
  connections: number;
  summaries: number;
  first_seen_ms: number;
  last_seen_ms: number;
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

export interface RolloutOwner {
  name: string;
  email?: string | null;
  webhook?: string | null;
}

export type RolloutState = "scheduled" | "enforced" | "completed" | "rolled_back";

/** GET /rollouts: a stored rollout (state flattened, with `at_ms` once it moved) and its workloads now. */
export interface Rollout {
  id: number;
  name: string;
  selector: Labels;
  owners: RolloutOwner[];
  announced_ms: number;
  monitor_start_ms: number;
  enforce_at_ms: number;
  readiness_days: number;
  watch_days: number;
  state: RolloutState;
  at_ms?: number;
  notices: string[];
  postponements: { at_ms: number; until_ms: number; reason: string }[];
  previous_modes: Record<string, string>;
  workloads: { name: string; mode: string }[];
  /** Whether it would be enforced now: the scheduler's test (absent from servers before it was added). */
  readiness?: RolloutReadiness;
}

export interface RolloutReadiness {
  ready: boolean;
  unresolved_potentially_blocked: number;
  last_blocked_ms?: number | null;
  reason?: string | null;
}

export interface HostInfo {
  hostname?: string;
  os_name?: string;
  os_version?: string;
  kernel?: string;
  machine_id?: string;
  interfaces?: { name: string; mac?: string; addresses: string[] }[];
  listening?: { protocol: string; address: string; port: number; process?: { name: string } }[];
}

export interface AgentStatus {
  last_error?: string | null;
  tamper_events?: number;
  logged_packets?: number;
  flows_buffered?: number;
  flows_dropped?: number;
}

export interface Agent {
  id: number;
  workload: string;
  online: boolean;
  enrolled_at_ms: number;
  last_seen_ms: number;
  offline_since_ms?: number | null;
  applied_revision?: string | null;
  desired_revision?: string | null;
  in_sync: boolean;
  host: HostInfo | null;
  status: AgentStatus | null;
  /** Why the agent waits for an admin's approval (its credential is refused meanwhile). */
  pending?: string | null;
  workload_addresses?: string[];
  /** What the host reports against what its workload has: shown, never applied by itself. */
  address_drift?: { reported_not_recorded: string[]; recorded_not_reported: string[] } | null;
}

export interface PairingProfile {
  id: number;
  name: string;
  labels: Labels;
  mode: string;
  max_uses?: number | null;
  uses: number;
  expires_at_ms?: number | null;
  created_at_ms: number;
  created_by: string;
  revoked: boolean;
  /** The one workload the key may become. */
  workload?: string | null;
  /** Existing workloads with these labels may be adopted with the key. */
  scope?: Labels | null;
}

/** The workload attribute that marks quarantine; its value is the reason. */
export const QUARANTINE = "bulkhead.quarantine";
export const quarantineReason = (w: Workload): string | undefined => w.attributes?.[QUARANTINE];

/** Labels label rules add to one workload (keys it has no label of its own for). */
export interface Assigned {
  workload: string;
  labels: Labels;
}

export interface LabelRulesState {
  yaml: string;
  rules: string[];
  updated_at_ms: number | null;
  updated_by: string | null;
  assigned: Assigned[];
}

/** GET /provision/impact: what provisioning the draft would change. */
export interface ProvisionImpact {
  rules_before: number;
  rules_after: number;
  allow_rules_before: number;
  allow_rules_after: number;
  allows_nothing: boolean;
  confirm_required?: string | null;
}

/** One flow exporter (an address; its source ports do not matter) as the collectors' decoder sees it. */
export interface Exporter {
  address: string;
  /** Source port of its latest datagram. */
  last_port: number;
  /** Proven by data records: a flood of newcomers cannot evict it. */
  protected: boolean;
  first_seen_ms: number;
  last_seen_ms: number;
  datagrams: number;
  records: number;
  templates_received: number;
  malformed: number;
  no_template: number;
  /** Records (or datagrams, as the protocol counts) its sequence numbers say were sent and never arrived. */
  sequence_gaps: number;
  sequence_resets: number;
  /** Templates held now. */
  templates: number;
  pending_sets: number;
}

/** The exporter tables of every collector worker, added up. */
export interface ExporterTable {
  exporters: number;
  max_exporters: number;
  protected: number;
  /** New exporters that found a table full (each evicted an idle one). */
  table_full: number;
  evicted: number;
  expired: number;
}

/** GET /collector/exporters: busiest (most records) first; `more` when the limit left some out. */
export interface ExporterList {
  table: ExporterTable;
  items: Exporter[];
  more: boolean;
}

/** Desired against applied, for one workload (GET /workloads/{name}/enforcement). */
export interface Enforcement {
  workload: string;
  managed: boolean;
  mode: string;
  state: "applied" | "pending" | "no_agent" | "unmanaged";
  desired_revision?: string | null;
  applied_revision?: string | null;
  applied_at_ms?: number | null;
  last_check_ms?: number | null;
  quarantine?: { reason: string; state: "applied" | "pending" | "no_agent" | "unmanaged" } | null;
  summary: string;
}

/** The answer to a quarantine or a release. */
export interface QuarantineAnswer {
  workload: string;
  quarantined: boolean;
  changed: boolean;
  enforcement: "applied" | "pending" | "no_agent" | "unmanaged";
  summary: string;
}

/** One kind of connection whose verdict a mode change turns into another. */
export interface ImpactGroup {
  consumer: string;
  provider: string;
  service: string;
  from: Verdict;
  to: Verdict;
  conversations: number;
  connections: number;
}

/** The answer of POST /enforcement/mode: the selection, the impact, whether written. */
export interface ModeChange {
  workloads: string[];
  mode: string;
  changing: string[];
  applied: boolean;
  impact: {
    from_ms: number;
    to_ms: number;
    conversations: number;
    changed_conversations: number;
    changed_connections: number;
    newly_blocked_connections: number;
    groups: ImpactGroup[];
    groups_left_out: number;
    note?: string | null;
  };
  summary: string;
}
