import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Audit(_props: PageProps) {
  return <PageHeader title="Audit" />;
}
