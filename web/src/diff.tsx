// A line diff (longest common subsequence) for policy YAML, which is small.
export function lineDiff(before: string, after: string): { op: " " | "+" | "-"; text: string }[] {
  const a = before ? before.replace(/\n$/, "").split("\n") : [];
  const b = after ? after.replace(/\n$/, "").split("\n") : [];
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: { op: " " | "+" | "-"; text: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push({ op: " ", text: a[i] });
      i++;
      j++;
    } else if (j < m && (i >= n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push({ op: "+", text: b[j++] });
    } else {
      out.push({ op: "-", text: a[i++] });
    }
  }
  return out;
}

/** Unchanged lines further than this from a change are folded. */
const CONTEXT = 3;

export function Diff({ before, after }: { before: string | null; after: string | null }) {
  const lines = lineDiff(before ?? "", after ?? "");
  const near = lines.map(() => false);
  lines.forEach((l, i) => {
    if (l.op !== " ") for (let j = Math.max(0, i - CONTEXT); j <= Math.min(lines.length - 1, i + CONTEXT); j++) near[j] = true;
  });
  const out: preact.JSX.Element[] = [];
  for (let i = 0; i < lines.length; ) {
    if (!near[i]) {
      let j = i;
      while (j < lines.length && !near[j]) j++;
      out.push(<div class="fold">⋯ {j - i} unchanged line{j - i === 1 ? "" : "s"}</div>);
      i = j;
      continue;
    }
    const l = lines[i++];
    out.push(
      <div class={l.op === "+" ? "add" : l.op === "-" ? "del" : ""}>
        {l.op} {l.text}
      </div>,
    );
  }
  return (
    <div class="diff" role="region" aria-label="Changes">
      {out}
    </div>
  );
}
