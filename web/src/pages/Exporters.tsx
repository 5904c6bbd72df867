// Flow exporters (switches, routers, hosts sending NetFlow, IPFIX or sFlow) as this
// server's collectors see them: what each sent, what could not be decoded, and what its
// sequence numbers say never arrived; and the exporter table (full means a flood, or an
// estate larger than the table).
import type { PageProps } from ".";
import { get, query } from "../api";
import { setParams } from "../router";
import type { Exporter, ExporterList } from "../types";
import { Badge, Empty, ErrorBox, Link, Loading, PageHeader, fmtAgo, fmtNum, fmtTime, useAsync } from "../ui";

/** The share of what an exporter sent that never arrived. */
export const lossRatio = (e: Exporter) => (e.sequence_gaps > 0 ? e.sequence_gaps / (e.records + e.sequence_gaps) : 0);

function fmtShare(r: number): string {
  const pct = r * 100;
  if (pct > 0 && pct < 0.01) return "<0.01%";
  return `${pct.toFixed(pct < 1 ? 2 : 1)}%`;
}

/** Sorts IPv4 addresses by number, IPv6 after them as text. */
function addressKey(a: string): string {
  const v4 = a.split(".");
  if (v4.length === 4 && v4.every((p) => /^\d+$/.test(p))) return `4:${v4.map((p) => p.padStart(3, "0")).join(".")}`;
  return `6:${a}`;
}

type Sort = "busiest" | "loss" | "errors" | "recent" | "address";
const SORTS: [Sort, string][] = [
  ["busiest", "Busiest first (records)"],
  ["loss", "Most loss first"],
  ["errors", "Most decode errors first"],
  ["recent", "Last seen first"],
  ["address", "Address"],
];
const ORDER: Record<Sort, (a: Exporter, b: Exporter) => number> = {
  busiest: () => 0, // as the server sends them
  loss: (a, b) => lossRatio(b) - lossRatio(a) || b.sequence_gaps - a.sequence_gaps,
  errors: (a, b) => b.malformed + b.no_template - (a.malformed + a.no_template),
  recent: (a, b) => b.last_seen_ms - a.last_seen_ms,
  address: (a, b) => addressKey(a.address).localeCompare(addressKey(b.address)),
};

export function Exporters({ params }: PageProps) {
  const sort = (SORTS.some(([s]) => s === params.get("sort")) ? params.get("sort") : "busiest") as Sort;
  const all = params.get("all") === "1";
  const list = useAsync(() => get<ExporterList>(`/collector/exporters${query({ limit: all ? 100000 : undefined })}`), [all]);
  const data = list.data;
  const items = data ? [...data.items].sort(ORDER[sort]) : [];
  const lossy = items.filter((e) => e.sequence_gaps > 0);
  const t = data?.table;

  return (
    <>
      <PageHeader
        title="Exporters"
        sub="Switches, routers and hosts sending flows (NetFlow, IPFIX, sFlow) to this server's collectors: what each sent, what could not be decoded, and what its sequence numbers say never arrived."
      >
        <button type="button" class="btn" onClick={list.reload} disabled={list.loading}>
          Refresh
        </button>
      </PageHeader>
      <ErrorBox error={list.error} />
      {!data || !t ? (
        !list.error && <Loading />
      ) : (
        <>
          {t.table_full > 0 && (
            <div class="alert-box warn" role="alert" data-testid="exporter-table-full">
              <strong>
                The exporter table was full: {fmtNum(t.table_full)} new exporter{t.table_full === 1 ? "" : "s"} arrived while it held all{" "}
                {t.max_exporters.toLocaleString("en")} it can.
              </strong>
              <div>
                Either a flood of senders (spoofed or one-shot sources aimed at the collector) or an estate with more exporters than the table holds. Protected
                exporters were kept; each newcomer took the place of an idle, unproven one ({fmtNum(t.evicted)} evicted so far). If the senders are real, run more
                collector workers or another collector; if not, find the flood's source. <Link href="/alerts?state=all&kind=exporter_table_full">See the alerts</Link>
              </div>
            </div>
          )}
          <div class="grid cols-5">
            <div class={`card stat ${t.max_exporters > 0 && t.exporters >= t.max_exporters ? "warn" : ""}`}>
              <span class="k">Exporters held</span>
              <span class="v" data-testid="stat-exporters">
                {fmtNum(t.exporters)}
              </span>
              <span class="d">of {t.max_exporters.toLocaleString("en")} the table holds</span>
            </div>
            <div class="card stat">
              <span class="k">Protected</span>
              <span class="v">{fmtNum(t.protected)}</span>
              <span class="d">sent data records: a flood cannot evict them</span>
            </div>
            <div class={`card stat ${t.table_full > 0 ? "bad" : "ok"}`}>
              <span class="k">Table full</span>
              <span class="v" data-testid="stat-table-full">
                {fmtNum(t.table_full)}
              </span>
              <span class="d">new exporters that found the table full</span>
            </div>
            <div class="card stat">
              <span class="k">Evicted</span>
              <span class="v">{fmtNum(t.evicted)}</span>
              <span class="d">idle, unproven exporters pushed out for a newcomer</span>
            </div>
            <div class="card stat">
              <span class="k">Expired</span>
              <span class="v">{fmtNum(t.expired)}</span>
              <span class="d">forgotten after 30 minutes of silence</span>
            </div>
          </div>
          <div class="toolbar" style={{ marginTop: 16 }}>
            <div class="field">
              <label for="exporter-sort">Order</label>
              <select id="exporter-sort" value={sort} onChange={(e) => setParams({ sort: (e.target as HTMLSelectElement).value === "busiest" ? null : (e.target as HTMLSelectElement).value })}>
                {SORTS.map(([v, text]) => (
                  <option value={v}>{text}</option>
                ))}
              </select>
            </div>
            {lossy.length > 0 && (
              <p style={{ margin: 0, color: "var(--warn)" }} data-testid="lossy-exporters">
                {lossy.length} exporter{lossy.length === 1 ? " shows" : "s show"} sequence gaps: records sent that never arrived (a lossy path, or a collector
                dropping them). <Link href="/alerts?state=unresolved&kind=exporter_loss">See the alerts</Link>
              </p>
            )}
          </div>
          {data.more && (
            <div class="alert-box info" role="status" data-testid="exporters-more">
              Showing the {data.items.length.toLocaleString("en")} busiest of {t.exporters.toLocaleString("en")} exporters; the rest were left out.{" "}
              {!all && (
                <button type="button" class="btn small" onClick={() => setParams({ all: "1" })}>
                  Show up to 100,000
                </button>
              )}
            </div>
          )}
          <div class="table-wrap">
            <table aria-label="Exporters">
              <thead>
                <tr>
                  <th>Exporter</th>
                  <th>Status</th>
                  <th>Last seen</th>
                  <th class="num">Datagrams</th>
                  <th class="num">Records</th>
                  <th class="num">Malformed</th>
                  <th class="num" title="Data sets whose template never arrived">
                    No template
                  </th>
                  <th class="num" title="Records its sequence numbers say were sent and never arrived">
                    Sequence gaps
                  </th>
                  <th class="num">Templates</th>
                  <th class="num" title="Data sets held until their template arrives">
                    Pending sets
                  </th>
                </tr>
              </thead>
              <tbody>
                {items.map((e) => (
                  <tr data-testid={`exporter-${e.address}`} class={e.sequence_gaps > 0 ? "lossy" : undefined}>
                    <td>
                      <code>{e.address}</code>
                      <div class="muted" style={{ fontSize: 12 }}>
                        port {e.last_port} · since {fmtTime(e.first_seen_ms)}
                      </div>
                    </td>
                    <td>
                      {e.protected ? (
                        <Badge tone="ok">protected</Badge>
                      ) : (
                        <span title="Not yet proven by data records in two datagrams: a newcomer may take its place when the table is full">
                          <Badge>unproven</Badge>
                        </span>
                      )}
                    </td>
                    <td style={{ whiteSpace: "nowrap" }} title={fmtTime(e.last_seen_ms)}>
                      {fmtAgo(e.last_seen_ms)}
                    </td>
                    <td class="num">{fmtNum(e.datagrams)}</td>
                    <td class="num">{fmtNum(e.records)}</td>
                    <td class="num">{e.malformed > 0 ? <span style={{ color: "var(--bad)", fontWeight: 600 }}>{fmtNum(e.malformed)}</span> : <span class="muted">0</span>}</td>
                    <td class="num">{e.no_template > 0 ? <span style={{ color: "var(--warn)", fontWeight: 600 }}>{fmtNum(e.no_template)}</span> : <span class="muted">0</span>}</td>
                    <td class="num" style={{ whiteSpace: "nowrap" }} data-testid="sequence-gaps">
                      {e.sequence_gaps > 0 ? (
                        <>
                          <span style={{ color: "var(--warn)", fontWeight: 600 }}>{fmtNum(e.sequence_gaps)}</span>
                          <div style={{ color: "var(--warn)", fontSize: 12 }} title="gaps / (records + gaps)">
                            {fmtShare(lossRatio(e))} lost
                          </div>
                        </>
                      ) : (
                        <span class="muted">0</span>
                      )}
                      {e.sequence_resets > 0 && (
                        <div class="muted" style={{ fontSize: 12 }} title="The exporter restarted its sequence numbers (a reboot, or a new process)">
                          {fmtNum(e.sequence_resets)} reset{e.sequence_resets === 1 ? "" : "s"}
                        </div>
                      )}
                    </td>
                    <td class="num">
                      {fmtNum(e.templates)}
                      <div class="muted" style={{ fontSize: 12 }}>
                        {fmtNum(e.templates_received)} received
                      </div>
                    </td>
                    <td class="num">{e.pending_sets > 0 ? fmtNum(e.pending_sets) : <span class="muted">0</span>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {items.length === 0 && (
              <Empty>
                {t.max_exporters === 0
                  ? "This server runs no flow collector: start it with --collect to receive NetFlow, IPFIX or sFlow."
                  : "No exporter is sending to this server's collectors. Exporters silent for 30 minutes are forgotten."}
              </Empty>
            )}
          </div>
        </>
      )}
    </>
  );
}
