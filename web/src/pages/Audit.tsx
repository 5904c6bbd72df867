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
    // The newest 200: read forward from the end.
    const first = await get<{ items: Entry[] }>("/audit?limit=10000");
    return first.items.slice(-200).reverse();
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
