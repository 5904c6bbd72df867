import type { PageProps } from ".";
import { get } from "../api";
import { ErrorBox, Loading, PageHeader, fmtTime, useAsync } from "../ui";

interface Entry {
  id: number;
  at_ms: number;
  actor: string;
  source: string;
  action: string;
  target: string;
}

export function Audit(_props: PageProps) {
  const log = useAsync(async () => {
    // The log reads oldest first: page forward to its end and keep the newest 200.
    let last: Entry[] = [];
    let after = 0;
    for (let page = 0; page < 50; page++) {
      const { items } = await get<{ items: Entry[] }>(`/audit?after_id=${after}&limit=10000`);
      if (items.length === 0) break;
      last = [...last, ...items].slice(-200);
      after = items[items.length - 1].id;
      if (items.length < 10000) break;
    }
    return last.reverse();
  }, []);
  return (
    <>
      <PageHeader title="Audit log" sub="Every change, who made it, from where; append-only." />
      <ErrorBox error={log.error} />
      {!log.data ? (
        <Loading />
      ) : (
        <div class="table-wrap">
          <table aria-label="Audit log">
            <thead>
              <tr>
                <th>#</th>
                <th>When</th>
                <th>Who</th>
                <th>From</th>
                <th>Action</th>
                <th>Target</th>
              </tr>
            </thead>
            <tbody>
              {log.data.map((e) => (
                <tr>
                  <td>{e.id}</td>
                  <td style={{ whiteSpace: "nowrap" }}>{fmtTime(e.at_ms)}</td>
                  <td>{e.actor}</td>
                  <td>{e.source}</td>
                  <td>
                    <code>{e.action}</code>
                  </td>
                  <td>{e.target}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
