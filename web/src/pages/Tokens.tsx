import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { del, get, post } from "../api";
import { Badge, ErrorBox, Loading, PageHeader, fmtAgo, fmtTime, toast, useAsync } from "../ui";

interface Token {
  id: number;
  name: string;
  role: string;
  scope?: string | null;
  created_ms: number;
  expires_ms?: number | null;
  revoked_ms?: number | null;
  last_used_ms?: number | null;
}

export function Tokens({ session }: PageProps) {
  const list = useAsync(() => get<{ items: Token[] }>("/tokens"), []);
  const [name, setName] = useState("");
  const [role, setRole] = useState("netops");
  const [scope, setScope] = useState("");
  const [days, setDays] = useState("90");
  const [created, setCreated] = useState<string | null>(null);
  const [err, setErr] = useState<unknown>(null);
  async function create(e: Event) {
    e.preventDefault();
    setErr(null);
    try {
      const r = await post<{ token: string }>("/tokens", {
        name,
        role,
        ...(role === "app_owner" ? { scope } : {}),
        expires_in_days: Number(days),
      });
      setCreated(r.token);
      setName("");
      list.reload();
    } catch (x) {
      setErr(x);
    }
  }
  async function revoke(t: Token) {
    if (!confirm(`Revoke the token "${t.name}"? Its holder loses access at once.`)) return;
    try {
      await del(`/tokens/${t.id}`);
      toast(`Revoked ${t.name}`);
      list.reload();
    } catch (x) {
      setErr(x);
    }
  }
  return (
    <>
      <PageHeader title="API tokens" sub="Who may use the console and the API, with which role. A token is shown once; only its hash is stored." />
      <form class="card" onSubmit={create}>
        <h2>New token</h2>
        <div class="row">
          <div class="field">
            <label for="tok-name">Name</label>
            <input id="tok-name" type="text" required value={name} placeholder="payments team" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </div>
          <div class="field">
            <label for="tok-role">Role</label>
            <select id="tok-role" value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value)}>
              <option value="admin">admin: everything</option>
              <option value="secops">secops: all policy, provisioning</option>
              <option value="netops">netops: read only</option>
              <option value="app_owner">app owner: own scope</option>
            </select>
          </div>
          {role === "app_owner" && (
            <div class="field">
              <label for="tok-scope">Scope</label>
              <input id="tok-scope" type="text" required placeholder="app=payments" value={scope} onInput={(e) => setScope((e.target as HTMLInputElement).value)} />
            </div>
          )}
          <div class="field" style={{ maxWidth: 140 }}>
            <label for="tok-days">Expires in (days)</label>
            <input id="tok-days" type="text" inputMode="numeric" value={days} onInput={(e) => setDays((e.target as HTMLInputElement).value)} />
          </div>
          <button type="submit" class="btn primary">
            Create token
          </button>
        </div>
        <ErrorBox error={err} />
        {created && (
          <div class="alert-box info" role="status">
            <strong>Copy this token now; it is not shown again.</strong>
            <div>
              <code style={{ wordBreak: "break-all" }}>{created}</code>
            </div>
          </div>
        )}
      </form>
      {!list.data ? (
        <Loading />
      ) : (
        <div class="table-wrap" style={{ marginTop: 16 }}>
          <table aria-label="API tokens">
            <thead>
              <tr>
                <th>#</th>
                <th>Name</th>
                <th>Role</th>
                <th>Created</th>
                <th>Expires</th>
                <th>Last used</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {list.data.items.map((t) => (
                <tr>
                  <td>{t.id}</td>
                  <td>
                    <strong>{t.name}</strong>
                  </td>
                  <td>
                    {t.role.replace("_", " ")}
                    {t.scope ? <span class="muted"> · {t.scope}</span> : null}
                  </td>
                  <td>{fmtTime(t.created_ms)}</td>
                  <td>{t.expires_ms ? fmtTime(t.expires_ms) : "never"}</td>
                  <td>{fmtAgo(t.last_used_ms)}</td>
                  <td style={{ textAlign: "right" }}>
                    {t.revoked_ms ? (
                      <Badge tone="bad">revoked</Badge>
                    ) : t.id === session.token_id ? (
                      <Badge tone="info">this session</Badge>
                    ) : (
                      <button type="button" class="btn small danger" onClick={() => revoke(t)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
