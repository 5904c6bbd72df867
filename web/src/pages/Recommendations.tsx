import { useState } from "preact/hooks";
import YAML from "yaml";
import type { PageProps } from ".";
import { ApiError, enc, get, post, put } from "../api";
import { can } from "../session";
import type { PolicyObject, Rule, Ruleset } from "../types";
import { Badge, Empty, ErrorBox, Link, Loading, PageHeader, Segmented, fmtNum, toast } from "../ui";

interface Proposal {
  from_ms: number;
  to_ms: number;
  objects: { kind: string; name: string; yaml: string }[];
  widenings: { object: string; field: string; kind: string; allowed: string; observed: string }[];
  notes: string[];
  stats: Record<string, number>;
}

type Parsed = { kind: string; name: string; yaml: string; body: Record<string, unknown> };

/** The names a rule refers to: ip lists, label groups, services. */
function refs(rule: Rule): Set<string> {
  const out = new Set<string>();
  for (const s of [...rule.from, ...rule.to]) {
    const m = s.match(/^(iplist|group):(.+)$/);
    if (m) out.add(m[2]);
  }
  for (const s of rule.services) if (!/^(tcp|udp|sctp|icmp|icmpv6)\b/.test(s)) out.add(s);
  return out;
}

export function Recommendations({ session }: PageProps) {
  const [hours, setHours] = useState("168");
  const [granularity, setGranularity] = useState<"app" | "role" | "workload">("role");
  const [scope, setScope] = useState(session.scope ?? "");
  const [proposal, setProposal] = useState<Proposal | null>(null);
  const [parsed, setParsed] = useState<Parsed[]>([]);
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [accepted, setAccepted] = useState<Set<string>>(new Set());
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<unknown>(null);
  const mayAccept = can.editSomeRulesets(session);

  async function propose(e: Event) {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    try {
      const to = Date.now();
      const p = await post<Proposal>("/recommendations", {
        apply: false,
        granularity,
        from_ms: to - Number(hours) * 3_600_000,
        to_ms: to,
        ...(scope.trim() ? { scope: scope.trim() } : {}),
      });
      const objs = p.objects.map((o) => ({ ...o, body: YAML.parse(o.yaml) as Record<string, unknown> }));
      setProposal(p);
      setParsed(objs);
      setChosen(new Set());
      setAccepted(new Set());
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }

  const rulesets = parsed.filter((o) => o.kind === "ruleset");
  const support = parsed.filter((o) => o.kind !== "ruleset");
  const key = (rs: string, id: string) => `${rs}/${id}`;

  async function accept() {
    setBusy(true);
    setErr(null);
    try {
      const needed = new Set<string>();
      let n = 0;
      for (const o of rulesets) {
        const rs = o.body as unknown as Ruleset;
        const picked = rs.rules.filter((r) => chosen.has(key(rs.name, r.id)));
        if (picked.length === 0) continue;
        picked.forEach((r) => refs(r).forEach((x) => needed.add(x)));
        let target: Record<string, unknown> = { ...o.body, rules: picked };
        try {
          const existing = await get<PolicyObject>(`/draft/objects/ruleset/${enc(rs.name)}`);
          const have = (existing.object.rules as Rule[]) ?? [];
          target = { ...existing.object, rules: [...have, ...picked.filter((r) => !have.some((h) => h.id === r.id))] };
        } catch (x) {
          if (!(x instanceof ApiError && x.status === 404)) throw x;
        }
        // Supporting objects first, so the ruleset's references resolve.
        for (const s of support.filter((s) => needed.has(s.name))) {
          await put(`/draft/objects/${s.kind}/${enc(s.name)}`, s.body);
          needed.delete(s.name);
        }
        await put(`/draft/objects/ruleset/${enc(rs.name)}`, target);
        n += picked.length;
      }
      toast(`Added ${n} rule${n === 1 ? "" : "s"} to the draft`);
      setAccepted(new Set([...accepted, ...chosen]));
      setChosen(new Set());
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }

  return (
    <>
      <PageHeader title="Recommendations" sub="Rules proposed from observed traffic that the draft does not allow yet. Review them and accept rule by rule into the draft." />
      <form class="toolbar card" onSubmit={propose} style={{ alignItems: "flex-end" }}>
        <div class="field">
          <label for="rec-window">Traffic from</label>
          <select id="rec-window" value={hours} onChange={(e) => setHours((e.target as HTMLSelectElement).value)}>
            <option value="24">the last 24 hours</option>
            <option value="168">the last 7 days</option>
            <option value="720">the last 30 days</option>
          </select>
        </div>
        <Segmented
          label="Rules between"
          name="granularity"
          value={granularity}
          options={[
            ["app", "Applications"],
            ["role", "Roles"],
            ["workload", "Workloads"],
          ]}
          onChange={setGranularity}
        />
        <div class="field">
          <label for="rec-scope">Only traffic touching</label>
          <input id="rec-scope" type="text" placeholder="app=payments" value={scope} onInput={(e) => setScope((e.target as HTMLInputElement).value)} />
        </div>
        <button type="submit" class="btn primary" disabled={busy}>
          {busy && !proposal ? "Proposing…" : "Propose rules"}
        </button>
      </form>
      <ErrorBox error={err} />
      {busy && !proposal && <Loading what="Reading the flows" />}
      {proposal && (
        <>
          <div class="grid cols-4">
            <div class="card stat">
              <span class="k">Conversations seen</span>
              <span class="v">{fmtNum(proposal.stats.conversations ?? 0)}</span>
            </div>
            <div class="card stat ok">
              <span class="k">Already allowed</span>
              <span class="v">{fmtNum(proposal.stats.already_allowed ?? 0)}</span>
            </div>
            <div class="card stat warn">
              <span class="k">Covered by the proposal</span>
              <span class="v">{fmtNum(proposal.stats.recommended ?? 0)}</span>
            </div>
            <div class="card stat">
              <span class="k">Proposed rules</span>
              <span class="v">{proposal.stats.rules ?? 0}</span>
              <span class="d">in {rulesets.length} rulesets</span>
            </div>
          </div>
          {proposal.notes.map((n) => (
            <div class="alert-box info">{n}</div>
          ))}
          {rulesets.length === 0 && (
            <div class="card">
              <Empty>Nothing to propose: the draft already allows what was seen.</Empty>
            </div>
          )}
          {rulesets.map((o) => {
            const rs = o.body as unknown as Ruleset;
            return (
              <div class="card">
                <h2>
                  <span>
                    {rs.name} <Badge>{rs.tier}</Badge> {rs.scope && <span class="muted" style={{ fontWeight: 500, fontSize: 13 }}>{Object.entries(rs.scope).map(([k, v]) => `${k}=${v}`).join(" ")}</span>}
                  </span>
                </h2>
                <div class="table-wrap">
                  <table aria-label={`Proposed rules of ${rs.name}`}>
                    <thead>
                      <tr>
                        {mayAccept && <th>Accept</th>}
                        <th>Rule</th>
                        <th>From</th>
                        <th>To</th>
                        <th>Services</th>
                        <th>Note</th>
                      </tr>
                    </thead>
                    <tbody>
                      {rs.rules.map((r) => {
                        const w = proposal.widenings.filter((x) => x.object === `${rs.name}/${r.id}`);
                        const k = key(rs.name, r.id);
                        return (
                          <tr class={chosen.has(k) ? "selected" : ""}>
                            {mayAccept && (
                              <td>
                                {accepted.has(k) ? (
                                  <Badge tone="ok">in the draft</Badge>
                                ) : (
                                <input
                                  type="checkbox"
                                  aria-label={`Accept ${r.id}`}
                                  checked={chosen.has(k)}
                                  onChange={(e) => {
                                    const next = new Set(chosen);
                                    if ((e.target as HTMLInputElement).checked) next.add(k);
                                    else next.delete(k);
                                    setChosen(next);
                                  }}
                                />
                                )}
                              </td>
                            )}
                            <td>
                              <code>{r.id}</code>
                              {r.description && <div class="muted" style={{ fontSize: 12 }}>{r.description}</div>}
                            </td>
                            <td>{r.from.join(", ")}</td>
                            <td>{r.to.join(", ")}</td>
                            <td>{r.services.join(", ")}</td>
                            <td style={{ fontSize: 12.5 }}>
                              {w.map((x) => (
                                <div>
                                  <Badge tone="warn">widens {x.field}</Badge> allows {x.allowed}; seen: {x.observed}
                                </div>
                              ))}
                            </td>
                          </tr>
                        );
                      })}
                    </tbody>
                  </table>
                </div>
              </div>
            );
          })}
          {support.length > 0 && (
            <div class="card">
              <h2>Supporting objects</h2>
              <p class="muted" style={{ marginTop: 0 }}>Added to the draft with the first accepted rule that uses them.</p>
              <ul>
                {support.map((s) => (
                  <li>
                    {s.kind} <code>{s.name}</code>
                    {typeof s.body.description === "string" ? ` — ${s.body.description}` : ""}
                  </li>
                ))}
              </ul>
            </div>
          )}
          {mayAccept && rulesets.length > 0 && (
            <div class="row sticky-actions">
              <button type="button" class="btn primary" disabled={busy || chosen.size === 0} onClick={accept}>
                Add {chosen.size} selected rule{chosen.size === 1 ? "" : "s"} to the draft
              </button>
              <Link href="/policy/changes" class="btn">
                Review the draft changes
              </Link>
            </div>
          )}
        </>
      )}
    </>
  );
}
