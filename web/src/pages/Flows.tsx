import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Flows(_props: PageProps) {
  return <PageHeader title="Flows" />;
}
