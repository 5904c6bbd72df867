import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { get } from "../api";
import { ErrorBox, Loading, PageHeader, fmtBytes, fmtNum, useAsync } from "../ui";

interface Report {
  version: string | number;
  byte_share: number;
  connection_share: number;
  bytes: number;
  connections: number;
  bytes_allowed: number;
  connections_allowed: number;
  blocked_groups_total: number;
  rules: { rule: string; ruleset: string; tier: string; action: string; connections: number; bytes: number }[];
  unused_rules: { rule: string; ruleset: string; tier?: string }[] | string[];
  would_block: { source: string; destination: string; service: string; connections: number; bytes: number; potentially_blocked_now: number; blocked_now: number }[];
}

export function Coverage(_props: PageProps) {
  const [version, setVersion] = useState("draft");
  const versions = useAsync(() => get<{ id: number }[]>("/versions"), []);
  const r = useAsync(() => get<Report>(`/coverage?version=${version}`), [version]);
  return (
    <>
      <PageHeader title="Coverage" sub="How much of the observed traffic (last 7 days, hourly summaries) a policy allows, rule by rule, and what it would block.">
        <div class="field" style={{ margin: 0 }}>
          <label for="cov-version">Policy</label>
          <select id="cov-version" value={version} onChange={(e) => setVersion((e.target as HTMLSelectElement).value)}>
            <option value="draft">The draft</option>
            {[...(versions.data ?? [])].reverse().map((v) => (
              <option value={String(v.id)}>Version {v.id}</option>
            ))}
          </select>
        </div>
      </PageHeader>
      <ErrorBox error={r.error} />
      {!r.data ? (
        <Loading />
      ) : (
        <>
          <div class="grid cols-4">
            <div class="card stat">
              <span class="k">Connections allowed</span>
              <span class="v">{Math.round(r.data.connection_share * 100)}%</span>
              <span class="d">
                {fmtNum(r.data.connections_allowed)} of {fmtNum(r.data.connections)}
              </span>
            </div>
            <div class="card stat">
              <span class="k">Bytes allowed</span>
              <span class="v">{Math.round(r.data.byte_share * 100)}%</span>
              <span class="d">
                {fmtBytes(r.data.bytes_allowed)} of {fmtBytes(r.data.bytes)}
              </span>
            </div>
            <div class={`card stat ${r.data.blocked_groups_total ? "warn" : "ok"}`}>
              <span class="k">Conversations it would block</span>
              <span class="v">{r.data.blocked_groups_total}</span>
            </div>
            <div class="card stat">
              <span class="k">Unused rules</span>
              <span class="v">{r.data.unused_rules.length}</span>
            </div>
          </div>
          <div class="grid cols-2">
            <div class="card" style={{ paddingBottom: 0 }}>
              <h2>Rules by traffic</h2>
              <div class="table-wrap" style={{ maxHeight: 520 }}>
                <table aria-label="Rules by traffic">
                  <thead>
                    <tr>
                      <th>Rule</th>
                      <th>Tier</th>
                      <th class="num">Conn.</th>
                      <th class="num">Bytes</th>
                    </tr>
                  </thead>
                  <tbody>
                    {[...r.data.rules]
                      .sort((a, b) => b.connections - a.connections)
                      .map((x) => (
                        <tr>
                          <td>
                            <code>{x.rule}</code> <span class="muted">{x.ruleset}</span> {x.action === "deny" && <span class="badge bad">deny</span>}
                          </td>
                          <td>{x.tier}</td>
                          <td class="num">{fmtNum(x.connections)}</td>
                          <td class="num">{fmtBytes(x.bytes)}</td>
                        </tr>
                      ))}
                  </tbody>
                </table>
              </div>
            </div>
            <div class="card" style={{ paddingBottom: 0 }}>
              <h2>What it would block</h2>
              <div class="table-wrap" style={{ maxHeight: 520 }}>
                <table aria-label="What it would block">
                  <thead>
                    <tr>
                      <th>From → to</th>
                      <th>Service</th>
                      <th class="num">Conn.</th>
                    </tr>
                  </thead>
                  <tbody>
                    {[...r.data.would_block]
                      .sort((a, b) => b.connections - a.connections)
                      .slice(0, 300)
                      .map((x) => (
                        <tr>
                          <td>
                            {x.source} → {x.destination}
                          </td>
                          <td>
                            <code>{x.service}</code>
                          </td>
                          <td class="num">{fmtNum(x.connections)}</td>
                        </tr>
                      ))}
                  </tbody>
                </table>
              </div>
            </div>
          </div>
        </>
      )}
    </>
  );
}
