import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Policy(_props: PageProps) {
  return <PageHeader title="Policy" />;
}
