import { useEffect, useState } from "preact/hooks";
import YAML from "yaml";
import type { PageProps } from ".";
import { del, enc, get, post, put } from "../api";
import { Diff } from "../diff";
import { navigate } from "../router";
import { type Session, can, mayEditRuleset, parseLabels } from "../session";
import type { Change, PolicyObject, ProvisionImpact, Rule, Ruleset, Version } from "../types";
import { Badge, Empty, ErrorBox, Link, Loading, PageHeader, fmtAgo, fmtTime, toast, useAsync } from "../ui";

export function Policy({ session, path }: PageProps) {
  const diff = useAsync(() => get<Change[]>("/draft/diff"), [path]);
  const pending = diff.data?.length ?? 0;
  const tab = path.startsWith("/policy/changes") ? "changes" : path.startsWith("/policy/versions") ? "versions" : "rulesets";
  return (
    <>
      <PageHeader title="Policy" sub="Rulesets are edited in the draft; provisioning makes the draft a new immutable version that collectors and agents enforce." />
      <nav class="tabs" aria-label="Policy">
        <Link href="/policy" aria-current={tab === "rulesets" ? "page" : undefined}>
          Rulesets
        </Link>
        <Link href="/policy/changes" aria-current={tab === "changes" ? "page" : undefined}>
          Draft changes <span class={`count ${pending ? "hot" : ""}`} data-testid="pending-count">{pending}</span>
        </Link>
        <Link href="/policy/versions" aria-current={tab === "versions" ? "page" : undefined}>
          Versions
        </Link>
      </nav>
      {tab === "rulesets" && <Rulesets session={session} path={path} onChange={diff.reload} />}
      {tab === "changes" && <Changes session={session} changes={diff.data} error={diff.error} reload={diff.reload} />}
      {tab === "versions" && <Versions session={session} onChange={diff.reload} />}
    </>
  );
}

const list = (s: string) =>
  s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

function Rulesets({ session, path, onChange }: { session: Session; path: string; onChange: () => void }) {
  const [tick, setTick] = useState(0);
  const objects = useAsync(() => get<PolicyObject[]>("/draft/objects"), [tick]);
  const selected = path.startsWith("/policy/rulesets/") ? decodeURIComponent(path.slice("/policy/rulesets/".length)) : path === "/policy/new" ? "" : null;
  const tiers = (objects.data ?? [])
    .filter((o) => o.kind === "tier")
    .map((o) => ({ name: o.name, order: Number(o.object.order ?? 0), description: String(o.object.description ?? "") }))
    .sort((a, b) => a.order - b.order);
  const rulesets = (objects.data ?? []).filter((o) => o.kind === "ruleset");
  const current = selected ? rulesets.find((r) => r.name === selected) : undefined;
  const mayCreate = can.editSomeRulesets(session);
  return (
    <div class="policy-layout">
      <div class="card object-list">
        {mayCreate && (
          <div style={{ padding: "4px 4px 8px" }}>
            <Link href="/policy/new" class="btn primary block">
              New ruleset
            </Link>
          </div>
        )}
        {objects.loading && !objects.data && <Loading />}
        <ErrorBox error={objects.error} />
        {tiers.map((t) => (
          <div>
            <h3 title={t.description}>Tier: {t.name}</h3>
            {rulesets
              .filter((r) => r.object.tier === t.name)
              .map((r) => (
                <Link href={`/policy/rulesets/${enc(r.name)}`} aria-current={r.name === selected ? "page" : undefined}>
                  <span>{r.name}</span>
                  <span class="count">{((r.object.rules as unknown[]) ?? []).length}</span>
                </Link>
              ))}
          </div>
        ))}
      </div>
      <div>
        {selected === null && (
          <div class="card">
            <Empty>Choose a ruleset on the left{mayCreate ? ", or create a new one" : ""}.</Empty>
          </div>
        )}
        {selected !== null && objects.data && (selected === "" || current) && (
          <RulesetEditor
            key={selected}
            session={session}
            existing={current}
            tiers={tiers.map((t) => t.name)}
            onSaved={(name) => {
              setTick((t) => t + 1);
              onChange();
              navigate(`/policy/rulesets/${enc(name)}`, true);
            }}
            onDeleted={() => {
              setTick((t) => t + 1);
              onChange();
              navigate("/policy", true);
            }}
          />
        )}
        {selected && objects.data && !current && (
          <div class="card">
            <Empty>No ruleset {selected} in the draft.</Empty>
          </div>
        )}
      </div>
    </div>
  );
}

function blankRuleset(session: Session): Ruleset {
  const scope = parseLabels(session.scope);
  return { name: "", tier: "application", owner: "", scope, rules: [] };
}

function toRuleset(o: Record<string, unknown>): Ruleset {
  const r = o as unknown as Ruleset;
  return { ...r, scope: r.scope ?? {}, rules: (r.rules ?? []).map((x) => ({ ...x, from: x.from ?? [], to: x.to ?? [], services: x.services ?? [] })) };
}

function toBody(r: Ruleset): Record<string, unknown> {
  const body: Record<string, unknown> = { bulkhead: "v1", kind: "ruleset", name: r.name, tier: r.tier };
  if (r.owner) body.owner = r.owner;
  if (r.description) body.description = r.description;
  if (r.scope && Object.keys(r.scope).length) body.scope = r.scope;
  body.rules = r.rules.map((x) => {
    const rule: Record<string, unknown> = { id: x.id, action: x.action, from: x.from, to: x.to, services: x.services };
    if (x.description) rule.description = x.description;
    return rule;
  });
  return body;
}

function RulesetEditor(props: { session: Session; existing?: PolicyObject; tiers: string[]; onSaved: (name: string) => void; onDeleted: () => void }) {
  const { session, existing } = props;
  const [rs, setRs] = useState<Ruleset>(() => (existing ? toRuleset(existing.object) : blankRuleset(session)));
  const [yaml, setYaml] = useState(existing?.yaml ?? "");
  const [mode, setMode] = useState<"form" | "yaml">("form");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const editable = existing ? mayEditRuleset(session, String(existing.object.tier), existing.object.scope as Record<string, string>) : can.editSomeRulesets(session);
  const isNew = !existing;

  useEffect(() => {
    if (mode === "yaml") setYaml(YAML.stringify(toBody(rs)));
  }, [mode]);

  function update(f: (r: Ruleset) => void) {
    const next = structuredClone(rs);
    f(next);
    setRs(next);
  }

  async function save() {
    setError(null);
    let body: Record<string, unknown>;
    try {
      body = mode === "yaml" ? (YAML.parse(yaml) as Record<string, unknown>) : toBody(rs);
    } catch (e) {
      setError(new Error(`The YAML does not parse: ${(e as Error).message}`));
      return;
    }
    const name = String(body?.name ?? "").trim();
    if (!name) {
      setError(new Error("The ruleset needs a name."));
      return;
    }
    setBusy(true);
    try {
      const saved = await put<PolicyObject>(`/draft/objects/ruleset/${enc(name)}`, body);
      toast(`Saved ${name} to the draft`);
      setRs(toRuleset(saved.object));
      setYaml(saved.yaml);
      props.onSaved(name);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }

  async function remove() {
    if (!existing || !confirm(`Delete the ruleset ${existing.name} from the draft?`)) return;
    setBusy(true);
    try {
      await del(`/draft/objects/ruleset/${enc(existing.name)}`);
      toast(`Deleted ${existing.name} from the draft`);
      props.onDeleted();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }

  const ro = !editable;
  return (
    <div class="card">
      <h2>
        <span>
          {isNew ? "New ruleset" : rs.name} {!editable && <Badge>read only</Badge>}
        </span>
        <span class="tabs" role="tablist" style={{ margin: 0, border: 0 }}>
          <button type="button" role="tab" aria-selected={mode === "form"} onClick={() => setMode("form")}>
            Form
          </button>
          <button type="button" role="tab" aria-selected={mode === "yaml"} onClick={() => setMode("yaml")}>
            YAML
          </button>
        </span>
      </h2>
      {existing && (
        <p class="muted" style={{ marginTop: -4 }}>
          Last changed {fmtAgo(existing.updated_ms)} by {existing.updated_by}
        </p>
      )}
      {mode === "form" ? (
        <fieldset disabled={ro || busy} style={{ border: 0, padding: 0, margin: 0 }}>
          <div class="row" style={{ marginBottom: 12 }}>
            <div class="field">
              <label for="rs-name">Name</label>
              <input id="rs-name" type="text" value={rs.name} readOnly={!isNew} onInput={(e) => update((r) => (r.name = (e.target as HTMLInputElement).value))} />
            </div>
            <div class="field">
              <label for="rs-tier">Tier</label>
              <select id="rs-tier" value={rs.tier} onChange={(e) => update((r) => (r.tier = (e.target as HTMLSelectElement).value))}>
                {props.tiers.map((t) => (
                  <option value={t}>{t}</option>
                ))}
              </select>
            </div>
            <div class="field">
              <label for="rs-owner">Owner</label>
              <input id="rs-owner" type="text" value={rs.owner ?? ""} onInput={(e) => update((r) => (r.owner = (e.target as HTMLInputElement).value))} />
            </div>
            <div class="field">
              <label for="rs-scope">Scope</label>
              <input
                id="rs-scope"
                type="text"
                placeholder="app=shop, env=prod"
                value={Object.entries(rs.scope ?? {})
                  .map(([k, v]) => `${k}=${v}`)
                  .join(", ")}
                onChange={(e) => update((r) => (r.scope = parseLabels((e.target as HTMLInputElement).value)))}
              />
            </div>
          </div>
          <h3 style={{ margin: "6px 0 4px" }}>Rules</h3>
          <p class="muted" style={{ margin: "0 0 10px", fontSize: 12.5 }}>
            In order within the tier, deny before allow. Separate selectors with commas; labels within one selector with spaces (<code>role=web env=prod</code>),
            or <code>any</code>, <code>workloads</code>, <code>group:NAME</code>, <code>iplist:NAME</code>.
          </p>
          {rs.rules.length === 0 && <p class="muted">No rules yet.</p>}
          {rs.rules.map((rule, i) => (
            <RuleForm
              key={i}
              index={i}
              rule={rule}
              onChange={(f) => update((r) => f(r.rules[i]))}
              onRemove={() => update((r) => r.rules.splice(i, 1))}
              readOnly={ro}
            />
          ))}
          {!ro && (
            <button
              type="button"
              class="btn"
              onClick={() =>
                update((r) =>
                  r.rules.push({ id: `${r.name || "rule"}-${r.rules.length + 1}`, action: "allow", from: [], to: [], services: [] } as Rule),
                )
              }
            >
              + Add rule
            </button>
          )}
        </fieldset>
      ) : (
        <div class="field">
          <label for="rs-yaml">Ruleset as YAML (policy as code)</label>
          <textarea id="rs-yaml" class="code" spellcheck={false} readOnly={ro} value={yaml} onInput={(e) => setYaml((e.target as HTMLTextAreaElement).value)} />
        </div>
      )}
      <ErrorBox error={error} />
      {!ro && (
        <div class="row" style={{ marginTop: 14, justifyContent: "space-between" }}>
          <button type="button" class="btn primary" onClick={save} disabled={busy}>
            {busy ? "Saving…" : "Save to draft"}
          </button>
          {existing && (
            <button type="button" class="btn danger" onClick={remove} disabled={busy}>
              Delete ruleset
            </button>
          )}
        </div>
      )}
    </div>
  );
}

function RuleForm(props: { index: number; rule: Rule; onChange: (f: (r: Rule) => void) => void; onRemove: () => void; readOnly: boolean }) {
  const { rule, index: i } = props;
  const id = (f: string) => `rule-${i}-${f}`;
  const text = (f: (r: Rule) => void) => props.onChange(f);
  return (
    <div class="rule-card" role="group" aria-label={`Rule ${i + 1}: ${rule.id}`}>
      <div class="row" style={{ marginBottom: 10 }}>
        <div class="field" style={{ flex: 2 }}>
          <label for={id("id")}>Rule id</label>
          <input id={id("id")} type="text" value={rule.id} onInput={(e) => text((r) => (r.id = (e.target as HTMLInputElement).value))} />
        </div>
        <div class="field" style={{ flex: 1 }}>
          <label for={id("action")}>Action</label>
          <select id={id("action")} value={rule.action} onChange={(e) => text((r) => (r.action = (e.target as HTMLSelectElement).value as Rule["action"]))}>
            <option value="allow">allow</option>
            <option value="deny">deny</option>
          </select>
        </div>
        {!props.readOnly && (
          <button type="button" class="btn danger small" onClick={props.onRemove} aria-label={`Remove rule ${rule.id}`}>
            Remove
          </button>
        )}
      </div>
      <div class="row">
        <div class="field">
          <label for={id("from")}>From (consumers)</label>
          <input id={id("from")} type="text" placeholder="role=web, iplist:partners" value={rule.from.join(", ")} onChange={(e) => text((r) => (r.from = list((e.target as HTMLInputElement).value)))} />
        </div>
        <div class="field">
          <label for={id("to")}>To (providers)</label>
          <input id={id("to")} type="text" placeholder="role=db" value={rule.to.join(", ")} onChange={(e) => text((r) => (r.to = list((e.target as HTMLInputElement).value)))} />
        </div>
        <div class="field">
          <label for={id("services")}>Services</label>
          <input id={id("services")} type="text" placeholder="postgres, tcp/8443" value={rule.services.join(", ")} onChange={(e) => text((r) => (r.services = list((e.target as HTMLInputElement).value)))} />
        </div>
      </div>
    </div>
  );
}

function Changes({ session, changes, error, reload }: { session: Session; changes?: Change[]; error?: Error; reload: () => void }) {
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<unknown>(null);
  const [confirmed, setConfirmed] = useState(false);
  // What provisioning would change, shown before the button (and a lock-down needs a tick).
  const impact = useAsync(() => get<ProvisionImpact>("/provision/impact"), [changes?.length]);
  const needsConfirm = impact.data?.confirm_required ?? null;
  async function provision(e: Event) {
    e.preventDefault();
    setBusy(true);
    setErr(null);
    try {
      const v = await post<{ id?: number; version?: { id: number } }>("/provision", { comment, ...(needsConfirm ? { confirm: confirmed } : {}) });
      const id = v.id ?? v.version?.id;
      toast(`Provisioned version ${id ?? ""}`.trim());
      setComment("");
      reload();
      navigate("/policy/versions");
    } catch (x) {
      setErr(x);
    } finally {
      setBusy(false);
    }
  }
  if (error) return <ErrorBox error={error} />;
  if (!changes) return <Loading />;
  return (
    <div class="grid" style={{ gridTemplateColumns: "minmax(0,1fr) 340px", alignItems: "start" }}>
      <div>
        {changes.length === 0 && (
          <div class="card">
            <Empty>The draft equals the provisioned version.</Empty>
          </div>
        )}
        {changes.map((c) => (
          <div class="card" data-testid="change">
            <div class="change-head">
              <Badge tone={c.change === "added" ? "ok" : c.change === "removed" ? "bad" : "warn"}>{c.change}</Badge>
              <strong>
                {c.kind} {c.name}
              </strong>
            </div>
            <Diff before={c.before} after={c.after} />
          </div>
        ))}
      </div>
      <div class="card">
        <h2>Provision</h2>
        {can.provision(session) ? (
          <form onSubmit={provision}>
            <p class="muted" style={{ marginTop: 0 }}>
              The draft becomes a new immutable version, enforced from now on. {changes.length} object{changes.length === 1 ? "" : "s"} changed.
            </p>
            {impact.data && (
              <p data-testid="provision-impact" style={{ marginTop: 0 }}>
                Allow rules: {impact.data.allow_rules_before} → <strong>{impact.data.allow_rules_after}</strong>; all rules: {impact.data.rules_before} →{" "}
                {impact.data.rules_after}.
              </p>
            )}
            {needsConfirm && (
              <div class="alert-box error" role="alert" data-testid="provision-lockdown">
                <strong>This version allows nothing.</strong> {needsConfirm}.
                <label style={{ display: "block", marginTop: 6 }}>
                  <input type="checkbox" checked={confirmed} onChange={(e) => setConfirmed((e.target as HTMLInputElement).checked)} /> I mean to lock the enforced
                  workloads down
                </label>
              </div>
            )}
            <div class="field">
              <label for="provision-comment">Comment (what and why)</label>
              <textarea id="provision-comment" rows={3} value={comment} onInput={(e) => setComment((e.target as HTMLTextAreaElement).value)} required />
            </div>
            <ErrorBox error={err} />
            <button type="submit" class="btn primary block" disabled={busy || changes.length === 0 || !comment.trim() || (!!needsConfirm && !confirmed)}>
              {busy ? "Provisioning…" : "Provision"}
            </button>
          </form>
        ) : (
          <p class="muted">Your role ({session.role.replace("_", " ")}) cannot provision; a secops engineer provisions the draft.</p>
        )}
      </div>
    </div>
  );
}

function Versions({ session, onChange }: { session: Session; onChange: () => void }) {
  const versions = useAsync(() => get<Version[]>("/versions"), []);
  const [open, setOpen] = useState<number | null>(null);
  const [err, setErr] = useState<unknown>(null);
  const sorted = [...(versions.data ?? [])].sort((a, b) => b.id - a.id);
  async function revert(v: Version) {
    if (!confirm(`Make the draft equal to version ${v.id}? Provision afterwards to apply it.`)) return;
    try {
      await post(`/versions/${v.id}/revert`);
      toast(`The draft is now version ${v.id}; review and provision it`);
      onChange();
      navigate("/policy/changes");
    } catch (e) {
      setErr(e);
    }
  }
  return (
    <>
      <ErrorBox error={versions.error ?? err} />
      {versions.loading && !versions.data && <Loading />}
      <div>
        <div class="table-wrap">
          <table aria-label="Provisioned versions">
            <thead>
              <tr>
                <th>Version</th>
                <th>Comment</th>
                <th>Author</th>
                <th>Provisioned</th>
                <th class="num">Objects</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {sorted.map((v, i) => (
                <>
                  <tr data-testid={`version-${v.id}`}>
                    <td>
                      <strong>#{v.id}</strong> {i === 0 && <Badge tone="ok">in force</Badge>}
                    </td>
                    <td>{v.comment}</td>
                    <td>{v.author}</td>
                    <td>{fmtTime(v.created_ms)}</td>
                    <td class="num">{v.objects}</td>
                    <td style={{ textAlign: "right", whiteSpace: "nowrap" }}>
                      <button type="button" class="btn small" aria-expanded={open === v.id} onClick={() => setOpen(open === v.id ? null : v.id)}>
                        {open === v.id ? "Hide changes" : "Changes"}
                      </button>{" "}
                      {can.provision(session) && i > 0 && (
                        <button type="button" class="btn small" onClick={() => revert(v)}>
                          Revert to this
                        </button>
                      )}
                    </td>
                  </tr>
                  {open === v.id && (
                    <tr>
                      <td colSpan={6} style={{ background: "#fafbfd" }}>
                        <VersionDiff id={v.id} />
                      </td>
                    </tr>
                  )}
                </>
              ))}
            </tbody>
          </table>
        </div>
      </div>
    </>
  );
}

function VersionDiff({ id }: { id: number }) {
  const d = useAsync(() => get<Change[]>(`/versions/${id}/diff`), [id]);
  if (d.error) return <ErrorBox error={d.error} />;
  if (!d.data) return <Loading />;
  if (d.data.length === 0) return <p class="muted">No changes against the version before.</p>;
  return (
    <div>
      {d.data.map((c) => (
        <details open={d.data!.length <= 3} style={{ marginBottom: 8 }}>
          <summary>
            <Badge tone={c.change === "added" ? "ok" : c.change === "removed" ? "bad" : "warn"}>{c.change}</Badge> {c.kind} {c.name}
          </summary>
          <Diff before={c.before} after={c.after} />
        </details>
      ))}
    </div>
  );
}

