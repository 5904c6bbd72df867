import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Alerts(_props: PageProps) {
  return <PageHeader title="Alerts" />;
}
