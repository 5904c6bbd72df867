import type { PageProps } from ".";
import { PageHeader } from "../ui";

export function Sprawl(_props: PageProps) {
  return <PageHeader title="Sprawl" />;
}
