import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Inventory(_props: PageProps) {
  return <PageHeader title="Inventory" />;
}
