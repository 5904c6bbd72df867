import { useState } from "preact/hooks";
import type { PageProps } from ".";
import { get } from "../api";
import { Empty, ErrorBox, Loading, PageHeader, fmtAgo, fmtBytes, fmtNum, useAsync } from "../ui";

interface Host {
  address: string;
  bytes: number;
  connections: number;
  first_seen_ms: number;
  last_seen_ms: number;
  guessed_role: string;
  peers: number;
  serves: string[];
}
interface Report {
  believed: number;
  seen: number;
  seen_ratio: number;
  unknown: Host[];
  probed_only: Host[];
  external: Host[];
  quiet: { name: string; addresses: string[]; labels: string; managed: boolean }[];
}

function Hosts({ hosts, label }: { hosts: Host[]; label: string }) {
  if (hosts.length === 0) return <Empty>None.</Empty>;
  return (
    <div class="table-wrap">
      <table aria-label={label}>
        <thead>
          <tr>
            <th>Address</th>
            <th>Looks like</th>
            <th>Serves</th>
            <th class="num">Peers</th>
            <th class="num">Conn.</th>
            <th class="num">Bytes</th>
            <th>Last seen</th>
          </tr>
        </thead>
        <tbody>
          {hosts.slice(0, 200).map((h) => (
            <tr>
              <td>
                <code>{h.address}</code>
              </td>
              <td>{h.guessed_role}</td>
              <td style={{ maxWidth: 320 }}>{h.serves.length ? h.serves.slice(0, 8).join(", ") + (h.serves.length > 8 ? ` +${h.serves.length - 8}` : "") : <span class="muted">nothing</span>}</td>
              <td class="num">{h.peers}</td>
              <td class="num">{fmtNum(h.connections)}</td>
              <td class="num">{fmtBytes(h.bytes)}</td>
              <td>{fmtAgo(h.last_seen_ms)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Sprawl(_props: PageProps) {
  const [hours, setHours] = useState(168);
  const r = useAsync(() => get<Report>(`/reports/sprawl?hours=${hours}`), [hours]);
  return (
    <>
      <PageHeader title="Sprawl report" sub="What the traffic says about the inventory: devices nobody listed, workloads nobody talks to.">
        <div class="field" style={{ margin: 0 }}>
          <label for="sprawl-hours">Window</label>
          <select id="sprawl-hours" value={hours} onChange={(e) => setHours(Number((e.target as HTMLSelectElement).value))}>
            <option value={24}>Last 24 hours</option>
            <option value={168}>Last 7 days</option>
            <option value={720}>Last 30 days</option>
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
              <span class="k">In the inventory</span>
              <span class="v">{r.data.believed}</span>
            </div>
            <div class={`card stat ${r.data.seen_ratio >= 0.9 ? "ok" : "warn"}`}>
              <span class="k">Confirmed by traffic</span>
              <span class="v">{Math.round(r.data.seen_ratio * 100)}%</span>
              <span class="d">{r.data.seen} workloads seen</span>
            </div>
            <div class={`card stat ${r.data.unknown.length ? "warn" : "ok"}`}>
              <span class="k">Unknown internal devices</span>
              <span class="v">{r.data.unknown.length}</span>
            </div>
            <div class="card stat">
              <span class="k">Quiet workloads</span>
              <span class="v">{r.data.quiet.length}</span>
            </div>
          </div>
          <div class="card">
            <h2>Unknown internal devices</h2>
            <Hosts hosts={r.data.unknown} label="Unknown internal devices" />
          </div>
          <div class="card">
            <h2>Quiet workloads</h2>
            {r.data.quiet.length === 0 ? (
              <Empty>Every workload was seen.</Empty>
            ) : (
              <div class="table-wrap">
                <table aria-label="Quiet workloads">
                  <thead>
                    <tr>
                      <th>Name</th>
                      <th>Addresses</th>
                      <th>Labels</th>
                      <th>Managed</th>
                    </tr>
                  </thead>
                  <tbody>
                    {r.data.quiet.map((q) => (
                      <tr>
                        <td>
                          <strong>{q.name}</strong>
                        </td>
                        <td>
                          <code>{q.addresses.join(", ")}</code>
                        </td>
                        <td>{q.labels}</td>
                        <td>{q.managed ? "yes" : "no"}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </div>
          <div class="card">
            <h2>Addresses only probed (nothing answered)</h2>
            <Hosts hosts={r.data.probed_only} label="Addresses only probed" />
          </div>
          <div class="card">
            <h2>External peers</h2>
            <Hosts hosts={r.data.external} label="External peers" />
          </div>
        </>
      )}
    </>
  );
}
