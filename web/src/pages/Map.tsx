import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function MapPage(_props: PageProps) {
  return <PageHeader title="Map" />;
}
