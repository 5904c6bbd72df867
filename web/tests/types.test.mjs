// The console's TypeScript types against the server's: every field an interface in
// src/types.ts declares must be one the server's OpenAPI document (derived from the Rust
// types; crates/server/tests/data/openapi.json, kept equal to it by the server's snapshot
// test) says the matching body has. A field renamed or dropped on one side fails here,
// not in a user's browser. Needs no server.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const doc = JSON.parse(readFileSync(join(here, "../../crates/server/tests/data/openapi.json"), "utf8"));
const source = ts.createSourceFile("types.ts", readFileSync(join(here, "../src/types.ts"), "utf8"), ts.ScriptTarget.Latest);

/** Console interface → the server schema of the body it reads. */
const PAIRS = {
  Workload: "Workload",
  SummaryVerdict: "SummaryVerdict",
  Flow: "FlowSummary",
  FlowGroup: "FlowGroup",
  Alert: "AlertView",
  PolicyObject: "ObjectView",
  Change: "ObjectDiff",
  Version: "VersionMeta",
  RolloutOwner: "Owner",
  Rollout: "RolloutView",
  RolloutReadiness: "Readiness",
  HostInfo: "HostInfo",
  AgentStatus: "AgentStatus",
  Agent: "AgentView",
  PairingProfile: "PairingProfile",
  Assigned: "Assigned",
  LabelRulesState: "LabelRulesView",
  ProvisionImpact: "Impact",
  Exporter: "ExporterView",
  ExporterTable: "ExporterTableView",
  ExporterList: "ExporterList",
  Enforcement: "EnforcementView",
  QuarantineAnswer: "QuarantineState",
  ModeChange: "ModeChange",
  ImpactGroup: "ImpactGroup",
};

/** The property names a schema allows, through $ref, allOf, oneOf and anyOf. */
function properties(schema, seen = new Set()) {
  if (!schema || typeof schema !== "object") return new Set();
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    if (seen.has(name)) return new Set();
    seen.add(name);
    return properties(doc.components.schemas[name], seen);
  }
  const out = new Set(Object.keys(schema.properties ?? {}));
  for (const key of ["allOf", "oneOf", "anyOf"]) {
    for (const part of schema[key] ?? []) for (const p of properties(part, seen)) out.add(p);
  }
  return out;
}

function interfaces() {
  const out = {};
  source.forEachChild((node) => {
    if (ts.isInterfaceDeclaration(node)) {
      out[node.name.text] = node.members.filter(ts.isPropertySignature).map((m) => m.name.getText(source));
    }
  });
  return out;
}

test("every field the console reads is one the server sends", () => {
  const declared = interfaces();
  for (const [iface, schema] of Object.entries(PAIRS)) {
    assert.ok(declared[iface], `src/types.ts no longer declares ${iface}`);
    assert.ok(doc.components.schemas[schema], `the OpenAPI document has no schema ${schema}`);
    const allowed = properties({ $ref: `#/components/schemas/${schema}` });
    const unknown = declared[iface].filter((f) => !allowed.has(f));
    assert.deepEqual(unknown, [], `${iface} reads fields ${schema} does not have (it has ${[...allowed].join(", ")})`);
  }
});

test("the check is not vacuous: a field the server does not send is caught", () => {
  const allowed = properties({ $ref: "#/components/schemas/Workload" });
  assert.ok(allowed.has("addresses") && allowed.has("mode"));
  assert.ok(!allowed.has("adresses"));
});
