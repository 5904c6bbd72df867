// Host agents: their health (online, last heartbeat, policy in sync, host inventory),
// and the pairing profiles hosts enroll with (the key is shown once).
import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { del, get, post } from "../api";
import { can, parseLabels } from "../session";
import type { Agent, PairingProfile } from "../types";
import { Badge, Empty, ErrorBox, LabelChips, Link, Loading, PageHeader, fmtAgo, fmtNum, fmtTime, toast, useAsync } from "../ui";

const shortRev = (r?: string | null) => (r ? r.slice(0, 10) : "none");

export function Agents({ session }: PageProps) {
  const agents = useAsync(() => get<{ items: Agent[] }>("/agents"), []);
  const mayManage = can.manageAgents(session);
  const [err, setErr] = useState<unknown>(null);
  const all = agents.data?.items ?? [];
  const pending = all.filter((a) => a.pending);
  const items = all.filter((a) => !a.pending).sort((a, b) => Number(a.online) - Number(b.online) || a.workload.localeCompare(b.workload));
  const online = items.filter((a) => a.online).length;
  const outOfSync = items.filter((a) => !a.in_sync).length;

  async function remove(a: Agent) {
    if (!confirm(`Remove the agent of ${a.workload}? Its credential stops working; the host keeps its last firewall table until the agent is stopped or enrolled again.`)) return;
    setErr(null);
    try {
      await del(`/agents/${a.id}`);
      toast(`Removed the agent of ${a.workload}`);
      agents.reload();
    } catch (x) {
      setErr(x);
    }
  }

  async function approve(a: Agent) {
    const drift = a.address_drift?.reported_not_recorded ?? [];
    const what = drift.length ? ` Its workload's addresses become ${(a.host?.interfaces ?? []).flatMap((i) => i.addresses).join(", ") || "the host's"}.` : "";
    if (!confirm(`Let this host in as ${a.workload}?${what}`)) return;
    setErr(null);
    try {
      await post(`/agents/${a.id}/approve`);
      toast(`Approved the agent of ${a.workload}`);
      agents.reload();
    } catch (x) {
      setErr(x);
    }
  }

  return (
    <>
      <PageHeader title="Agents" sub="Hosts that run bulkhead agent: whether they report, and whether the policy in their kernel is the one the server wants there.">
        <button type="button" class="btn" onClick={agents.reload}>
          Refresh
        </button>
      </PageHeader>
      <ErrorBox error={agents.error ?? err} />
      {pending.length > 0 && (
        <section class="card" aria-labelledby="pending-title" data-testid="pending-agents">
          <h2 id="pending-title" style={{ marginTop: 0 }}>
            Waiting for approval ({pending.length})
          </h2>
          <p class="muted" style={{ marginTop: 0 }}>
            These hosts asked to become workloads their pairing key is not bound to. Nothing of those workloads changed; their credentials are refused until you
            approve.
          </p>
          <table aria-label="Agents waiting for approval">
            <thead>
              <tr>
                <th>Wants to be</th>
                <th>Why it waits</th>
                <th>Host reports</th>
                <th>Workload has</th>
                <th>Asked</th>
                {mayManage && <th />}
              </tr>
            </thead>
            <tbody>
              {pending.map((a) => (
                <tr data-testid={`pending-${a.id}`}>
                  <td>
                    <strong>{a.workload}</strong>
                    <div class="muted" style={{ fontSize: 12 }}>agent #{a.id}</div>
                  </td>
                  <td style={{ maxWidth: 320 }}>{a.pending}</td>
                  <td>{(a.host?.interfaces ?? []).flatMap((i) => i.addresses).join(", ") || "—"}</td>
                  <td>{(a.workload_addresses ?? []).join(", ") || "—"}</td>
                  <td style={{ whiteSpace: "nowrap" }}>{fmtAgo(a.enrolled_at_ms)}</td>
                  {mayManage && (
                    <td style={{ textAlign: "right", whiteSpace: "nowrap" }}>
                      <button type="button" class="btn small primary" aria-label={`Approve ${a.workload}`} onClick={() => approve(a)}>
                        Approve
                      </button>{" "}
                      <button type="button" class="btn small danger" aria-label={`Refuse ${a.workload}`} onClick={() => remove(a)}>
                        Refuse
                      </button>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      {agents.loading && !agents.data ? (
        <Loading what="Loading the agents" />
      ) : items.length === 0 ? (
        <section class="card" aria-labelledby="no-agents">
          <h2 id="no-agents">No agent has enrolled yet</h2>
          <p style={{ margin: "0 0 6px" }}>
            Workloads are seen through flow exports only until an agent runs on them. An agent enforces the policy in the host's own firewall (nftables), reports
            connections with their process, and restores its table when someone changes it. To enroll a host:
          </p>
          <ol class="steps">
            <li>
              Start the server with an agent listener: <code>bulkhead server --agent-listen 0.0.0.0:8443 --tls-san bulkhead.example.com</code> (it prints the CA
              fingerprint).
            </li>
            <li>{mayManage ? "Create a pairing profile below" : "Ask an admin or secops for a pairing key"}: the labels and mode the host starts with, how many hosts may use it, and for how long.</li>
            <li>
              On the host, as root: <code>bulkhead agent --server https://bulkhead.example.com:8443 --pairing-key 'bh_pair_…'</code>
            </li>
          </ol>
          <p class="muted" style={{ marginBottom: 0 }}>
            The host becomes a managed workload with the profile's labels; it appears here with its heartbeat. See <code>docs/agent.md</code>.
          </p>
        </section>
      ) : (
        <>
          <div class="grid cols-3">
            <div class={`card stat ${online === items.length ? "ok" : "bad"}`}>
              <span class="k">Online</span>
              <span class="v">
                {online} / {items.length}
              </span>
              <span class="d">{items.length - online} offline</span>
            </div>
            <div class={`card stat ${outOfSync ? "warn" : "ok"}`}>
              <span class="k">Policy in sync</span>
              <span class="v">{items.length - outOfSync}</span>
              <span class="d">{outOfSync} not yet applied the current policy</span>
            </div>
            <div class="card stat">
              <span class="k">Tamper events restored</span>
              <span class="v">{fmtNum(items.reduce((s, a) => s + (a.status?.tamper_events ?? 0), 0))}</span>
              <span class="d">since each agent started</span>
            </div>
          </div>
          <div class="table-wrap" style={{ marginTop: 12 }}>
            <table aria-label="Agents">
              <thead>
                <tr>
                  <th>Workload</th>
                  <th>Status</th>
                  <th>Last seen</th>
                  <th>Policy</th>
                  <th>OS</th>
                  <th>Kernel</th>
                  <th>Enrolled</th>
                  <th>Flows</th>
                  {mayManage && <th />}
                </tr>
              </thead>
              <tbody>
                {items.map((a) => (
                  <tr data-testid={`agent-${a.id}`}>
                    <td>
                      <Link href={`/inventory?q=${encodeURIComponent(a.workload)}`}>
                        <strong>{a.workload}</strong>
                      </Link>
                      {a.host?.hostname && a.host.hostname !== a.workload && <div class="muted" style={{ fontSize: 12 }}>{a.host.hostname}</div>}
                      <div class="muted" style={{ fontSize: 12 }}>agent #{a.id}</div>
                    </td>
                    <td>
                      {a.online ? <Badge tone="ok">online</Badge> : <Badge tone="bad">offline</Badge>}
                      {a.address_drift && (
                        <div style={{ fontSize: 12, color: "var(--warn)", maxWidth: 240 }} title="Policy keeps using the workload's recorded addresses" data-testid="address-drift">
                          reports {a.address_drift.reported_not_recorded.join(", ") || "—"}
                          {a.address_drift.recorded_not_reported.length ? `, not ${a.address_drift.recorded_not_reported.join(", ")}` : ""}
                        </div>
                      )}
                      {!a.online && a.offline_since_ms && <div class="muted" style={{ fontSize: 12 }}>since {fmtTime(a.offline_since_ms)}</div>}
                      {a.status?.last_error && (
                        <div style={{ fontSize: 12, color: "var(--bad)", maxWidth: 240 }} title="The agent's last problem">
                          {a.status.last_error}
                        </div>
                      )}
                    </td>
                    <td style={{ whiteSpace: "nowrap" }} title={fmtTime(a.last_seen_ms)}>
                      {fmtAgo(a.last_seen_ms)}
                    </td>
                    <td>
                      {a.in_sync ? <Badge tone="ok">in sync</Badge> : <Badge tone="warn">not in sync</Badge>}
                      <div class="muted" style={{ fontSize: 12 }}>
                        applied <code>{shortRev(a.applied_revision)}</code>
                        {!a.in_sync && (
                          <>
                            , wanted <code>{shortRev(a.desired_revision)}</code>
                          </>
                        )}
                      </div>
                    </td>
                    <td>{[a.host?.os_name, a.host?.os_version].filter(Boolean).join(" ") || "—"}</td>
                    <td>
                      <code>{a.host?.kernel || "—"}</code>
                    </td>
                    <td style={{ whiteSpace: "nowrap" }}>{fmtTime(a.enrolled_at_ms)}</td>
                    <td class="num" style={{ whiteSpace: "nowrap" }}>
                      {fmtNum(a.status?.flows_buffered ?? 0)} buffered
                      {(a.status?.flows_dropped ?? 0) > 0 && <div style={{ color: "var(--bad)", fontSize: 12 }}>{fmtNum(a.status?.flows_dropped ?? 0)} dropped</div>}
                    </td>
                    {mayManage && (
                      <td style={{ textAlign: "right" }}>
                        <button type="button" class="btn small danger" aria-label={`Remove the agent of ${a.workload}`} onClick={() => remove(a)}>
                          Remove
                        </button>
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
      {can.readPairingProfiles(session) && session.routes.has("/api/v1/pairing-profiles") && <PairingProfiles session={session} />}
    </>
  );
}

function profileState(p: PairingProfile): [string, string] {
  if (p.revoked) return ["revoked", "bad"];
  if (p.expires_at_ms && p.expires_at_ms <= Date.now()) return ["expired", "muted"];
  if (p.max_uses != null && p.uses >= p.max_uses) return ["used up", "muted"];
  return ["active", "ok"];
}

function PairingProfiles({ session }: { session: PageProps["session"] }) {
  const list = useAsync(() => get<{ items: PairingProfile[] }>("/pairing-profiles"), []);
  const mayManage = can.manageAgents(session);
  const [name, setName] = useState("");
  const [labels, setLabels] = useState("");
  const [mode, setMode] = useState("monitor");
  const [maxUses, setMaxUses] = useState("");
  const [days, setDays] = useState("7");
  const [binding, setBinding] = useState<"new" | "workload" | "scope">("new");
  const [bound, setBound] = useState("");
  const [created, setCreated] = useState<{ name: string; key: string; fingerprint: string | null } | null>(null);
  const [err, setErr] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function create(e: Event) {
    e.preventDefault();
    setErr(null);
    setBusy(true);
    try {
      const r = await post<{ profile: PairingProfile; pairing_key: string; ca_fingerprint: string | null }>("/pairing-profiles", {
        name: name.trim(),
        labels: parseLabels(labels),
        mode,
        ...(maxUses.trim() ? { max_uses: Number(maxUses) } : {}),
        expires_in_days: Number(days),
        ...(binding === "workload" ? { workload: bound.trim() } : {}),
        ...(binding === "scope" ? { scope: Object.entries(parseLabels(bound)).map(([k, v]) => `${k}=${v}`).join(",") } : {}),
      });
      setCreated({ name: r.profile.name, key: r.pairing_key, fingerprint: r.ca_fingerprint });
      setName("");
      setLabels("");
      setMaxUses("");
      list.reload();
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }
  async function revoke(p: PairingProfile) {
    if (!confirm(`Revoke the pairing profile "${p.name}"? Hosts can no longer enroll with its key; agents already enrolled keep working.`)) return;
    setErr(null);
    try {
      await del(`/pairing-profiles/${p.id}`);
      toast(`Revoked ${p.name}`);
      list.reload();
    } catch (x) {
      setErr(x);
    }
  }
  async function copy(text: string, input: string) {
    try {
      await navigator.clipboard.writeText(text);
      toast("Copied");
    } catch {
      // No clipboard access (plain http, permissions): select the text for Ctrl+C.
      const el = document.getElementById(input) as HTMLInputElement | null;
      el?.focus();
      el?.select();
      toast("Selected: press Ctrl+C to copy");
    }
  }
  const items = [...(list.data?.items ?? [])].sort((a, b) => b.id - a.id);
  const command = created ? `bulkhead agent --server https://BULKHEAD:8443 --pairing-key '${created.key}'` : "";

  return (
    <section aria-labelledby="pp-title" style={{ marginTop: 24 }}>
      <h2 id="pp-title" style={{ fontSize: 18 }}>
        Pairing profiles
      </h2>
      <p class="muted" style={{ marginTop: 0 }}>
        A host enrolls with a profile's key and starts with its labels and mode. The key is shown once; the server keeps only its hash.
      </p>
      {mayManage && (
        <form class="card" onSubmit={create} aria-labelledby="pp-new">
          <h3 id="pp-new" style={{ marginTop: 0, marginBottom: 12 }}>
            New pairing profile
          </h3>
          <div class="row">
            <div class="field">
              <label for="pp-name">Profile name</label>
              <input id="pp-name" type="text" required pattern="[A-Za-z0-9._\-]+" placeholder="shop-db" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
            </div>
            <div class="field" style={{ flex: 2 }}>
              <label for="pp-labels">Labels of enrolled hosts</label>
              <input id="pp-labels" type="text" placeholder="app=shop role=db env=prod" value={labels} onInput={(e) => setLabels((e.target as HTMLInputElement).value)} />
            </div>
            <div class="field" style={{ maxWidth: 160 }}>
              <label for="pp-mode">Starting mode</label>
              <select id="pp-mode" value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value)}>
                <option value="idle">idle</option>
                <option value="monitor">monitor</option>
                <option value="enforced">enforced</option>
              </select>
            </div>
            <div class="field" style={{ maxWidth: 140 }}>
              <label for="pp-max">Max. hosts</label>
              <input id="pp-max" type="number" min={1} placeholder="unlimited" value={maxUses} onInput={(e) => setMaxUses((e.target as HTMLInputElement).value)} />
            </div>
            <div class="field" style={{ maxWidth: 200 }}>
              <label for="pp-binding">The key may become</label>
              <select id="pp-binding" value={binding} onChange={(e) => setBinding((e.target as HTMLSelectElement).value as "new" | "workload" | "scope")}>
                <option value="new">new workloads only</option>
                <option value="workload">one named workload</option>
                <option value="scope">workloads with labels</option>
              </select>
            </div>
            {binding !== "new" && (
              <div class="field">
                <label for="pp-bound">{binding === "workload" ? "Workload name" : "Adoptable labels (within the labels above)"}</label>
                <input id="pp-bound" type="text" required placeholder={binding === "workload" ? "shop-db-1" : "app=shop"} value={bound} onInput={(e) => setBound((e.target as HTMLInputElement).value)} />
              </div>
            )}
            <div class="field" style={{ maxWidth: 150 }}>
              <label for="pp-days">Valid for (days)</label>
              <input id="pp-days" type="number" min={1} max={3650} required value={days} onInput={(e) => setDays((e.target as HTMLInputElement).value)} />
            </div>
            <button type="submit" class="btn primary" disabled={busy}>
              {busy ? "Creating…" : "Create pairing profile"}
            </button>
          </div>
          <ErrorBox error={err} />
          {created && (
            <div class="alert-box info" role="status" data-testid="pairing-key">
              <strong>Pairing key of {created.name}: copy it now, it is not shown again.</strong>
              <div class="key-field" style={{ marginTop: 6 }}>
                <label class="sr-only" for="pp-key">
                  Pairing key
                </label>
                <input id="pp-key" type="text" readOnly value={created.key} onFocus={(e) => (e.target as HTMLInputElement).select()} />
                <button type="button" class="btn small" onClick={() => copy(created.key, "pp-key")}>
                  Copy key
                </button>
              </div>
              <div class="key-field" style={{ marginTop: 6 }}>
                <label class="sr-only" for="pp-command">
                  Enrollment command
                </label>
                <input id="pp-command" type="text" readOnly value={command} onFocus={(e) => (e.target as HTMLInputElement).select()} />
                <button type="button" class="btn small" onClick={() => copy(command, "pp-command")}>
                  Copy command
                </button>
              </div>
              <div style={{ fontSize: 12, marginTop: 4 }}>
                Run the command as root on the host, with the server's agent address for BULKHEAD.
                {created.fingerprint ? " The key carries the CA fingerprint after its colon: the agent pins it." : " This server has no agent listener (no CA fingerprint): start it with --agent-listen."}
              </div>
            </div>
          )}
        </form>
      )}
      {!mayManage && <ErrorBox error={err} />}
      {list.error ? (
        <ErrorBox error={list.error} />
      ) : !list.data ? (
        <Loading />
      ) : (
        <div class="table-wrap" style={{ marginTop: 16 }}>
          <table aria-label="Pairing profiles">
            <thead>
              <tr>
                <th>Name</th>
                <th>Labels</th>
                <th>Mode</th>
                <th class="num">Hosts enrolled</th>
                <th>Expires</th>
                <th>Created</th>
                <th>State</th>
                {mayManage && <th />}
              </tr>
            </thead>
            <tbody>
              {items.map((p) => {
                const [state, tone] = profileState(p);
                return (
                  <tr data-testid={`profile-${p.name}`}>
                    <td>
                      <strong>{p.name}</strong>
                    </td>
                    <td>
                      <LabelChips labels={p.labels} />
                      <div class="muted" style={{ fontSize: 12 }}>
                        {p.workload ? `becomes ${p.workload} only` : p.scope ? `adopts ${Object.entries(p.scope).map(([k, v]) => `${k}=${v}`).join(" ")}` : "new workloads only"}
                      </div>
                    </td>
                    <td>{p.mode}</td>
                    <td class="num">
                      {p.uses}
                      {p.max_uses != null ? ` of ${p.max_uses}` : ""}
                    </td>
                    <td style={{ whiteSpace: "nowrap" }}>{p.expires_at_ms ? fmtTime(p.expires_at_ms) : "never"}</td>
                    <td>
                      {fmtTime(p.created_at_ms)}
                      <div class="muted" style={{ fontSize: 12 }}>by {p.created_by.split(" [")[0]}</div>
                    </td>
                    <td>
                      <Badge tone={tone}>{state}</Badge>
                    </td>
                    {mayManage && (
                      <td style={{ textAlign: "right" }}>
                        {!p.revoked && (
                          <button type="button" class="btn small danger" aria-label={`Revoke ${p.name}`} onClick={() => revoke(p)}>
                            Revoke
                          </button>
                        )}
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
          {items.length === 0 && <Empty>No pairing profile yet.</Empty>}
        </div>
      )}
    </section>
  );
}
