import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Dashboard(_props: PageProps) {
  return <PageHeader title="Dashboard" />;
}
