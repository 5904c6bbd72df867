// Browser tests of the console against a running `bulkhead demo` (scripts/console-test
// starts one): Playwright (playwright-core) driving Debian's headless Chromium.
//
//   BULKHEAD_URL, BULKHEAD_TOKEN  the demo's URL and admin token (required)
//   BULKHEAD_AGENT_URL, BULKHEAD_AGENT_CA  the demo's agent listener and its CA (required)
//   CHROMIUM                      the browser (default /usr/bin/chromium)
//   CONSOLE_ARTIFACTS             where screenshots go (default ../target/console-artifacts)
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const BASE = process.env.BULKHEAD_URL;
const TOKEN = process.env.BULKHEAD_TOKEN;
assert.ok(BASE && TOKEN, "BULKHEAD_URL and BULKHEAD_TOKEN must be set (scripts/console-test sets them)");
const AGENT_URL = process.env.BULKHEAD_AGENT_URL;
const AGENT_CA = process.env.BULKHEAD_AGENT_CA;
assert.ok(AGENT_URL && AGENT_CA, "BULKHEAD_AGENT_URL and BULKHEAD_AGENT_CA must be set (scripts/console-test sets them)");

/** A call on the agent listener (TLS, the server's own CA), as `bulkhead agent` makes it. */
function agentCall(path, body, credential) {
  const headers = { "content-type": "application/json" };
  if (credential) headers.authorization = `Bearer ${credential}`;
  const data = JSON.stringify(body);
  return new Promise((resolveCall, reject) => {
    const req = httpsRequest(`${AGENT_URL}${path}`, { method: "POST", headers, ca: readFileSync(AGENT_CA) }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolveCall({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.end(data);
  });
}
const ARTIFACTS = resolve(process.env.CONSOLE_ARTIFACTS ?? "../target/console-artifacts");
mkdirSync(ARTIFACTS, { recursive: true });

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const VERDICT_COLORS = { allowed: "#16a34a", potentially_blocked: "#d97706", blocked: "#dc2626" };

let profile;
let context;

async function api(method, path, body, token = TOKEN) {
  const r = await fetch(`${BASE}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await r.json();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/** Follows a link of the main navigation. */
function nav(page, name) {
  return page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true }).click();
}

/** A fresh page signed in with `token` through the sign-in form. */
async function signedIn(token = TOKEN) {
  const page = await context.newPage();
  page.on("pageerror", (e) => assert.fail(`page error: ${e.message}`));
  await page.goto(`${BASE}/`);
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Main" }).waitFor();
  return page;
}

before(async () => {
  profile = mkdtempSync(join(tmpdir(), "bulkhead-console-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1440, height: 900 },
  });
  // A fresh Chromium's first page can take many seconds (font caches): warm up first,
  // and give each step 90 s: the demo server answers slowly while a minute of traffic is stored.
  context.setDefaultTimeout(90_000);
  const warm = await context.newPage();
  await warm.setContent("<p style='font-family: sans-serif'>warm-up</p>");
  await warm.screenshot({ path: join(ARTIFACTS, "00-warm-up.png") });
  await warm.close();
});

after(async () => {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
});

test("a wrong token is refused; the right one signs in and shows the dashboard", async () => {
  const page = await context.newPage();
  await page.goto(`${BASE}/`);
  await shot(page, "01-sign-in");
  await page.getByLabel("API token").fill("bh_not_a_token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "unknown, expired or revoked" }).waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Main" }).count(), 0);

  await page.getByLabel("API token").fill(TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  assert.equal(new URL(page.url()).pathname, "/dashboard");
  const workloads = await api("GET", "/workloads?limit=10000");
  await page.getByTestId("stat-workloads").filter({ hasText: String(workloads.items.length) }).waitFor();
  assert.ok(workloads.items.length > 10);
  // The session survives a reload (sessionStorage), and the role is shown.
  await page.reload();
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.getByLabel("Signed in as").filter({ hasText: "admin" }).waitFor();
  await page.getByRole("heading", { name: "Enforcement coverage" }).waitFor();
  await shot(page, "02-dashboard");

  // The sprawl report lists the unknown devices the API reports.
  const sprawl = await api("GET", "/reports/sprawl");
  await nav(page, "Sprawl report");
  const unknown = page.getByRole("table", { name: "Unknown internal devices" }).locator("tbody tr");
  await unknown.first().waitFor();
  assert.equal(await unknown.count(), Math.min(200, sprawl.unknown.length));
  assert.ok(sprawl.unknown.length > 0, "the demo estate has unknown devices");
  await page.getByText(sprawl.unknown[0].address, { exact: true }).first().waitFor();
  await shot(page, "02b-sprawl");
  await page.close();
});

test("the map shows label groups with edges coloured by verdict, and an edge leads to its flows", async () => {
  const page = await signedIn();
  await nav(page, "Map");
  await page.waitForFunction(() => window.__bulkheadMap && window.__bulkheadMap.edges().length > 0, null, { timeout: 60_000 });
  const graph = await page.evaluate(() => {
    const cy = window.__bulkheadMap;
    return {
      nodes: cy.nodes().map((n) => n.data("label")),
      edges: cy.edges().map((e) => ({ verdict: e.data("verdict"), color: e.style("line-color") })),
    };
  });
  assert.ok(graph.nodes.length >= 3, `nodes: ${graph.nodes}`);
  assert.ok(graph.nodes.includes("Unknown internal") || graph.nodes.includes("External"), `nodes: ${graph.nodes}`);
  const hex = (rgb) => `#${rgb.match(/\d+/g).slice(0, 3).map((n) => Number(n).toString(16).padStart(2, "0")).join("")}`;
  for (const e of graph.edges) {
    assert.ok(e.verdict in VERDICT_COLORS, `edge verdict ${e.verdict}`);
    assert.equal(hex(e.color), VERDICT_COLORS[e.verdict], `an edge ${e.verdict} is drawn ${e.color}`);
  }
  // The demo runs in monitor mode: some traffic is allowed, some would be blocked.
  const verdicts = new Set(graph.edges.map((e) => e.verdict));
  assert.ok(verdicts.has("allowed") && verdicts.has("potentially_blocked"), `verdicts: ${[...verdicts]}`);
  await shot(page, "03-map");

  // Hovering an edge shows its ports and volumes.
  const pos = await page.evaluate(() => {
    const cy = window.__bulkheadMap;
    const e = cy.edges().filter((x) => x.source().id() !== x.target().id()).max((x) => x.data("width")).ele;
    const box = cy.container().getBoundingClientRect();
    const p = e.renderedMidpoint();
    return { x: box.left + p.x, y: box.top + p.y };
  });
  await page.mouse.move(pos.x, pos.y);
  const tip = page.locator(".map-tip");
  await tip.waitFor({ state: "visible" });
  assert.match(await tip.innerText(), /(tcp|udp)\/\d+[\s\S]*conn/);
  await shot(page, "04-map-hover");

  // The draft beside the provisioned policy: the same layout, each coloured by its own verdicts.
  await page.getByRole("radio", { name: "Side by side" }).check();
  await page.waitForFunction(() => window.__bulkheadDraftMap && window.__bulkheadDraftMap.edges().length > 0);
  const pair = await page.evaluate(() => {
    const [a, b] = [window.__bulkheadMap, window.__bulkheadDraftMap];
    return {
      same: a.nodes().every((n) => {
        const m = b.getElementById(n.id());
        return m.length === 1 && Math.abs(m.position("x") - n.position("x")) < 0.5 && Math.abs(m.position("y") - n.position("y")) < 0.5;
      }),
      edges: b.edges().map((e) => ({ verdict: e.data("verdict"), color: e.style("line-color") })),
    };
  });
  assert.ok(pair.same, "both maps place every node alike");
  for (const e of pair.edges) assert.equal(hex(e.color), VERDICT_COLORS[e.verdict]);
  await shot(page, "04b-map-side-by-side");
  await page.getByRole("radio", { name: "Provisioned" }).check();
  await page.waitForFunction(() => !window.__bulkheadDraftMap);

  // Zoom into an application: its roles appear inside it.
  await page.getByRole("radio", { name: "Role" }).check();
  await page.waitForFunction(() => window.__bulkheadMap.nodes(".group").length > 0);

  // The table beside the map lists the same connections; a row leads to its flows.
  await page.getByRole("radio", { name: "Application" }).check();
  await page.waitForFunction(() => window.__bulkheadMap.nodes(".group").length === 0);
  const row = page.locator("tr[data-verdict=potentially_blocked] a").first();
  const name = await row.innerText();
  await row.click();
  await page.getByRole("heading", { name: "Flows" }).waitFor();
  const [src, dst] = name.split(" → ");
  await page.getByText(`${src} → ${dst}`).first().waitFor();
  const rows = page.getByRole("table", { name: "Flow summaries" }).locator("tbody tr");
  await rows.first().waitFor();
  assert.ok((await rows.count()) > 0);
  // Each flow explains its verdict.
  await rows.first().getByRole("button", { name: "Why?" }).click();
  const why = page.getByLabel("Explanation");
  await why.waitFor();
  assert.match(await why.innerText(), /verdict\s+(allowed|potentially_blocked|blocked)[\s\S]*connection\s+\S+ -> \S+ (tcp|udp)\/\d+/);
  await shot(page, "05-flows");
  await page.close();
});

test("a rule added in the form goes into the draft diff, is provisioned and appears as the new version", async () => {
  const before = await api("GET", "/versions");
  const page = await signedIn();
  await nav(page, "Policy");
  const ruleset = (await api("GET", "/draft/objects?kind=ruleset")).find((o) => o.object.tier === "application");
  await page.getByRole("link", { name: new RegExp(`^${ruleset.name}\\b`) }).click();
  await page.getByLabel("Name").waitFor();
  const rulesBefore = ruleset.object.rules.length;
  await page.getByRole("button", { name: "+ Add rule" }).click();
  const n = rulesBefore;
  await page.locator(`#rule-${n}-id`).fill("console-test-monitoring");
  await page.locator(`#rule-${n}-from`).fill("iplist:partner-apis");
  await page.locator(`#rule-${n}-to`).fill("role=web");
  await page.locator(`#rule-${n}-services`).fill("tcp/9443");
  await shot(page, "06-policy-form");
  await page.getByRole("button", { name: "Save to draft" }).click();
  await page.getByTestId("pending-count").filter({ hasText: /^1$/ }).waitFor();

  // The server has it in the draft.
  const saved = await api("GET", `/draft/objects/ruleset/${ruleset.name}`);
  assert.ok(saved.yaml.includes("console-test-monitoring"), saved.yaml);

  // The YAML view shows the same ruleset.
  await page.getByRole("tab", { name: "YAML" }).click();
  assert.match(await page.getByLabel(/Ruleset as YAML/).inputValue(), /id: console-test-monitoring/);

  await page.getByRole("link", { name: /Draft changes/ }).click();
  const change = page.getByTestId("change");
  await change.first().waitFor();
  assert.equal(await change.count(), 1);
  assert.match(await change.innerText(), /changed[\s\S]*ruleset[\s\S]*\+\s+- id: console-test-monitoring/);
  await shot(page, "07-draft-diff");
  // The impact is shown before the button: the new rule adds one allow.
  const impact = await page.getByTestId("provision-impact").innerText();
  const [, allowBefore, allowAfter] = impact.match(/Allow rules: (\d+) → (\d+)/) ?? [];
  assert.equal(Number(allowAfter), Number(allowBefore) + 1, impact);
  assert.equal(await page.getByTestId("provision-lockdown").count(), 0);

  await page.getByLabel("Comment (what and why)").fill("console test: partner monitoring");
  await page.getByRole("button", { name: "Provision" }).click();
  const id = before.length + 1;
  await page.getByTestId(`version-${id}`).waitFor();
  assert.match(await page.getByTestId(`version-${id}`).innerText(), /in force[\s\S]*console test: partner monitoring/);
  await shot(page, "08-versions");

  const versions = await api("GET", "/versions");
  assert.equal(versions.length, before.length + 1);
  const v = await api("GET", `/versions/${id}`);
  assert.ok(JSON.stringify(v.files).includes("console-test-monitoring"));
  assert.deepEqual(await api("GET", "/draft/diff"), []);

  // The audit log's newest entry is that provision, by this token.
  await nav(page, "Audit log");
  const newest = page.getByRole("table", { name: "Audit log" }).locator("tbody tr").first();
  await newest.waitFor();
  assert.match(await newest.innerText(), /initial admin[\s\S]*provision/);
  await page.close();
});

test("a workload's labels are edited in the inventory", async () => {
  const page = await signedIn();
  await nav(page, "Inventory");
  const w = (await api("GET", "/workloads?limit=1&labels=role=db")).items[0];
  const row = page.getByRole("row").filter({ hasText: w.name });
  await row.getByRole("button", { name: "Edit labels" }).click();
  const form = page.getByRole("form", { name: `Labels of ${w.name}` });
  await form.getByRole("button", { name: "+ Add label" }).click();
  const n = Object.keys(w.labels).length;
  await form.locator(`#lk-${n}`).fill("tier");
  await form.locator(`#lv-${n}`).fill("gold");
  await shot(page, "12-inventory-labels");
  await form.getByRole("button", { name: "Save labels" }).click();
  await form.waitFor({ state: "detached" });
  const after = await api("GET", `/workloads/${w.name}`);
  assert.deepEqual(after.labels, { ...w.labels, tier: "gold" });
  await row.getByText("gold").waitFor();
  await page.close();
});

test("the console is usable from the keyboard, with a visible focus", async () => {
  const page = await signedIn();
  await page.goto(`${BASE}/dashboard`);
  await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
  // Tab through the navigation to Alerts and open it with Enter.
  let found = false;
  for (let i = 0; i < 12 && !found; i++) {
    await page.keyboard.press("Tab");
    found = (await page.evaluate(() => document.activeElement?.textContent?.trim())) === "Alerts";
  }
  assert.ok(found, "the Alerts link is reachable with Tab");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, "none", "the focused link shows a focus outline");
  await shot(page, "09-keyboard-focus");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Alerts" }).waitFor();
  assert.equal(new URL(page.url()).pathname, "/alerts");

  // Acknowledge the first open alert with the keyboard (the demo's replayed traffic
  // raises them as its minute summaries close).
  for (let i = 0; i < 120 && (await api("GET", "/alerts?state=open&limit=1")).items.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 500));
  }
  await page.reload();
  const first = page.getByRole("button", { name: "Acknowledge" }).first();
  await first.focus();
  const row = await first.locator("xpath=ancestor::tr").getAttribute("data-testid");
  await page.keyboard.press("Enter");
  const id = Number(row.replace("alert-", ""));
  await page.locator(`[data-testid=alert-${id}]`).waitFor({ state: "detached" });
  await shot(page, "09b-alerts");
  const acked = await api("GET", "/alerts?state=acknowledged");
  assert.ok(acked.items.some((a) => a.id === id), `alert ${id} is acknowledged`);
  await page.close();
});

test("roles see only what they may do: netops has no write buttons, an app owner only its scope", async () => {
  // An admin creates the netops token on the tokens page; it is shown once.
  const admin = await signedIn();
  await nav(admin, "API tokens");
  const tokenName = `console test netops ${Date.now()}`;
  await admin.getByLabel("Name").fill(tokenName);
  await admin.getByLabel("Role").selectOption("netops");
  await admin.getByRole("button", { name: "Create token" }).click();
  const shown = (await admin.getByRole("status").filter({ hasText: "not shown again" }).locator("code").innerText()).trim();
  assert.match(shown, /^bh_[0-9a-f]{64}$/);
  await admin.getByRole("table", { name: "API tokens" }).getByText(tokenName).waitFor();
  // One's own token is not offered for revocation.
  const own = admin.getByRole("row").filter({ hasText: "initial admin" });
  await own.getByText("this session").waitFor();
  assert.equal(await own.getByRole("button", { name: "Revoke" }).count(), 0);
  await shot(admin, "13-tokens");
  await admin.close();
  const page = await signedIn(shown);
  assert.equal(await page.getByRole("link", { name: "API tokens" }).count(), 0);
  await nav(page, "Policy");
  await page.getByRole("link", { name: "Rulesets" }).waitFor();
  assert.equal(await page.getByRole("link", { name: "New ruleset" }).count(), 0);
  const ruleset = (await api("GET", "/draft/objects?kind=ruleset"))[0];
  await page.getByRole("link", { name: new RegExp(`^${ruleset.name}\\b`) }).click();
  await page.getByText("read only").waitFor();
  assert.equal(await page.getByRole("button", { name: "Save to draft" }).count(), 0);
  await page.getByRole("link", { name: /Draft changes/ }).click();
  await page.getByText("cannot provision").waitFor();
  assert.equal(await page.getByRole("button", { name: "Provision" }).count(), 0);
  await nav(page, "Alerts");
  await page.getByRole("table", { name: "Alerts" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Acknowledge" }).count(), 0);
  await nav(page, "Inventory");
  await page.getByRole("table", { name: "Workloads" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Edit labels" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "Audit log" }).count(), 0);
  await page.close();

  const app = (await api("GET", "/workloads?limit=1&labels=role=web")).items[0].labels.app;
  const owner = await api("POST", "/tokens", { name: "console test owner", role: "app_owner", scope: `app=${app}`, expires_in_days: 1 });
  const page2 = await signedIn(owner.token);
  await nav(page2, "Inventory");
  const rows = page2.getByRole("table", { name: "Workloads" }).locator("tbody tr");
  await rows.first().waitFor();
  const texts = await rows.allInnerTexts();
  assert.ok(texts.length > 0);
  for (const t of texts) assert.match(t, new RegExp(`app\\s*${app}`), `an app owner of ${app} sees ${t}`);
  assert.equal(await page2.getByRole("link", { name: "Sprawl report" }).count(), 0);
  await shot(page2, "10-app-owner-inventory");
  // Its map shows its application's traffic.
  await nav(page2, "Map");
  await page2.waitForFunction(() => window.__bulkheadMap && window.__bulkheadMap.edges().length > 0);
  const labels = await page2.evaluate(() => window.__bulkheadMap.nodes().map((n) => n.data("label")));
  assert.ok(labels.includes(app), `the map of an owner of ${app} shows ${labels}`);
  await shot(page2, "10b-app-owner-map");
  await page2.close();
});

test("recommendations are reviewed and accepted rule by rule into the draft; coverage reads", async () => {
  const page = await signedIn();
  await nav(page, "Recommendations");
  await page.getByRole("button", { name: "Propose rules" }).click();
  const boxes = page.getByRole("checkbox", { name: /^Accept / });
  await boxes.first().waitFor({ timeout: 90_000 });
  assert.ok((await boxes.count()) >= 2, "more than one rule proposed");
  const ids = (await boxes.evaluateAll((els) => els.map((e) => e.getAttribute("aria-label")))).map((l) => l.replace("Accept ", ""));
  await boxes.first().check();
  await page.getByRole("button", { name: "Add 1 selected rule to the draft" }).click();
  await page.getByText("Added 1 rule to the draft").waitFor();
  await shot(page, "11-recommendations");
  const draft = (await api("GET", "/draft/files")).files.map((f) => f.content).join("\n");
  const has = (id) => draft.split("\n").some((l) => l.trim() === `- id: ${id}`);
  assert.ok(has(ids[0]), `${ids[0]} is in the draft`);
  for (const other of ids.slice(1)) assert.ok(!has(other), `${other} was not accepted`);
  assert.ok((await api("GET", "/draft/diff")).length >= 1);

  await nav(page, "Coverage");
  await page.getByText("Connections allowed").waitFor();
  assert.match(await page.locator(".stat .v").first().innerText(), /^\d+%$/);
  await page.getByRole("table", { name: "Rules by traffic" }).locator("tbody tr").first().waitFor();
  await page.close();
});

const DAY_MS = 86_400_000;
/** yyyy-mm-dd of a time, in local time (what an <input type=date> holds). */
const localDate = (ms) => {
  const d = new Date(ms);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
};
/** The console's date format (ui.tsx fmtTime). */
const fmtTime = (ms) => new Date(ms).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
/** Unresolved potentially-blocked alerts seen in the last `days` with an end carrying `selector`: what the rollout scheduler's readiness counts, and what the rollouts page's "Review them" lists. */
async function unready(selector, days) {
  const alerts = (await api("GET", "/alerts?kind=potentially_blocked&limit=10000")).items;
  const carries = (l) => l && Object.keys(l).length > 0 && Object.entries(selector).every(([k, v]) => l[k] === v);
  const since = Date.now() - days * DAY_MS;
  return alerts.filter((a) => a.state !== "resolved" && a.last_seen_ms >= since && (carries(a.details.src_labels) || carries(a.details.dst_labels)));
}

test("a rollout is scheduled in the form and listed with its enforcement date, owners and readiness", async () => {
  const page = await signedIn();
  await nav(page, "Rollouts");
  const form = page.getByRole("form", { name: "Schedule a rollout" });
  await form.waitFor();
  // A group with open potentially-blocked alerts (the demo's traffic raises them), so not ready yet.
  for (let i = 0; i < 120 && (await api("GET", "/alerts?state=open&kind=potentially_blocked&limit=1")).items.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 500));
  }
  const noisy = (await api("GET", "/alerts?state=open&kind=potentially_blocked&limit=1000")).items.find((a) => a.details.src_labels?.app && a.details.src_labels?.env);
  assert.ok(noisy, "the demo raises potentially-blocked alerts from labelled workloads");
  const selector = { app: noisy.details.src_labels.app, env: noisy.details.src_labels.env };
  const matching = (await api("GET", `/workloads?limit=10000&labels=app=${selector.app},env=${selector.env}`)).items.filter((x) => x.managed);
  const name = `${selector.app}-${selector.env}-console-${Date.now() % 100000}`;
  const date = localDate(Date.now() + 10 * DAY_MS);
  const enforceAt = new Date(`${date}T09:30`).getTime();

  await form.getByLabel("Name", { exact: true }).fill(name);
  await form.getByLabel("Workloads (labels)").fill(`app=${selector.app} env=${selector.env}`);
  // The form counts the workloads the selector takes in, as the API will.
  await form.getByText(`${matching.length} managed workload${matching.length === 1 ? "" : "s"} match`).waitFor();
  await form.getByLabel("Enforcement date").fill(date);
  await form.getByLabel("Time").fill("09:30");
  await form.getByLabel("Owner 1 name").fill("Web team");
  await form.getByLabel("Owner 1 e-mail").fill("web-team@example.com");
  // A second owner, added and filled from the keyboard; Enter in a field submits the form.
  await form.getByRole("button", { name: "+ Add owner" }).focus();
  await page.keyboard.press("Enter");
  await form.getByLabel("Owner 2 name").focus();
  await page.keyboard.type("On-call");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "ro-owner-1-email");
  await page.keyboard.type("oncall@example.com");
  await shot(page, "14-rollout-form");
  await page.keyboard.press("Enter");

  const row = page.getByTestId(`rollout-${name}`);
  await row.waitFor();
  // The API holds what the form said.
  const stored = (await api("GET", "/rollouts")).items.find((r) => r.name === name);
  assert.ok(stored, `rollout ${name} is stored`);
  assert.equal(stored.enforce_at_ms, enforceAt);
  assert.deepEqual(stored.selector, selector);
  assert.deepEqual(stored.owners, [
    { name: "Web team", email: "web-team@example.com" },
    { name: "On-call", email: "oncall@example.com" },
  ]);
  assert.equal(stored.state, "scheduled");
  assert.equal(stored.workloads.length, matching.length);
  // The row shows the enforcement date, the state, the owners and the announcement.
  assert.equal(await row.getByTestId("enforcement").locator("time").innerText(), fmtTime(enforceAt));
  assert.equal(await row.getByTestId("enforcement").locator("time").getAttribute("datetime"), new Date(enforceAt).toISOString());
  const text = await row.innerText();
  assert.match(text, /scheduled/);
  assert.match(text, /in (9|10) d/);
  assert.match(text, /Web team[\s\S]*web-team@example\.com[\s\S]*On-call/);
  assert.ok(text.includes(fmtTime(stored.announced_ms)), text);
  assert.ok(text.includes(`${matching.length} managed workload`), text);
  // Readiness: the unresolved potentially-blocked alerts on its workloads, as the scheduler counts them.
  // Readiness is the API's: not ready, with why.
  assert.equal(stored.readiness.ready, false);
  await row.getByTestId("readiness").getByText("not ready", { exact: true }).waitFor();
  const m = (await row.getByTestId("readiness").innerText()).match(/(\d+) unresolved potentially-blocked alert\(s\) on its workloads in the last 7 day\(s\): at the date, enforcement would be postponed/);
  assert.ok(m, await row.innerText());
  // Alerts keep arriving from the demo's traffic: the page read them a moment before the test.
  assert.ok(Math.abs(Number(m[1]) - stored.readiness.unresolved_potentially_blocked) <= 2, `page ${m[1]}, API ${stored.readiness.unresolved_potentially_blocked}`);
  // Nothing is enforced yet: no rollback is offered, and the API would refuse one.
  assert.equal(await row.getByRole("button", { name: "Roll back" }).count(), 0);
  const refused = await fetch(`${BASE}/api/v1/rollouts/${stored.id}/rollback`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(refused.status, 409);
  await shot(page, "15-rollouts");

  {
    // "Review them" lists exactly those alerts.
    await row.getByRole("link", { name: "Review them" }).click();
    await page.getByRole("heading", { name: "Alerts" }).waitFor();
    const rows = page.getByRole("table", { name: "Alerts" }).locator("tbody tr");
    await rows.first().waitFor();
    const ids = (await rows.evaluateAll((els) => els.map((e) => Number(e.dataset.testid.replace("alert-", ""))))).sort((a, b) => a - b);
    const expected = (await unready(selector, stored.readiness_days)).map((a) => a.id).sort((a, b) => a - b);
    assert.ok(Math.abs(expected.length - (await api("GET", `/rollouts/${stored.id}`)).readiness.unresolved_potentially_blocked) <= 2);
    assert.ok(ids.every((id) => expected.includes(id)) && Math.abs(ids.length - expected.length) <= 2, `page ${ids}, API ${expected}`);
    await shot(page, "15b-rollout-alerts");
  }
  await page.close();
});

test("a workload is quarantined with a reason, marked, alerted on the Alerts page, and released", async () => {
  const page = await signedIn();
  const w = (await api("GET", "/workloads?limit=1&labels=role=db")).items.find((x) => x.managed);
  assert.ok(w, "the demo has a managed database workload");
  assert.equal(w.attributes?.["bulkhead.quarantine"], undefined);
  await nav(page, "Inventory");
  const row = page.getByTestId(`workload-${w.name}`);
  await row.getByRole("button", { name: `Quarantine ${w.name}` }).click();
  const form = page.getByRole("form", { name: `Quarantine ${w.name}` });
  const reason = page.getByLabel("Reason for quarantine");
  // The reason field has the focus, and a reason is required: an empty one is not sent.
  assert.equal(await page.evaluate(() => document.activeElement?.id), `qr-${w.name}`);
  await form.getByRole("button", { name: "Confirm quarantine" }).click();
  assert.ok(await reason.evaluate((e) => e.validity.valueMissing));
  assert.equal((await api("GET", `/workloads/${w.name}`)).attributes?.["bulkhead.quarantine"], undefined);
  const why = `console test: suspected compromise ${Date.now()}`;
  await reason.fill(why);
  await page.keyboard.press("Enter");
  await form.waitFor({ state: "detached" });
  await row.getByText("quarantined", { exact: true }).waitFor();
  await row.getByText(why).waitFor();
  assert.match((await row.getAttribute("class")) ?? "", /quarantined/);
  assert.equal((await api("GET", `/workloads/${w.name}`)).attributes["bulkhead.quarantine"], why);
  // Asked is not enforced: the demo's workloads have no agent, and the console says so.
  const enforcement = await api("GET", `/workloads/${w.name}/enforcement`);
  assert.equal(enforcement.quarantine.state, "no_agent");
  await row.getByTestId(`quarantine-state-${w.name}`).getByText("not enforced", { exact: true }).waitFor();
  await row.getByTestId(`quarantine-state-${w.name}`).getByText(/no agent is enrolled/).waitFor();
  // The quarantined workload is offered for release, not for quarantine.
  assert.equal(await row.getByRole("button", { name: `Quarantine ${w.name}` }).count(), 0);
  // "Quarantined only" lists exactly the quarantined workloads.
  await page.getByLabel(/Quarantined only/).check();
  const quarantined = (await api("GET", "/workloads?limit=10000")).items.filter((x) => x.attributes?.["bulkhead.quarantine"] !== undefined);
  await page.getByRole("table", { name: "Workloads" }).locator("tbody tr").first().waitFor();
  assert.equal(await page.getByRole("table", { name: "Workloads" }).locator("tbody tr.quarantined").count(), quarantined.length);
  assert.equal(await page.getByRole("table", { name: "Workloads" }).locator("tbody tr").count(), quarantined.length);
  await shot(page, "16-quarantined");
  // The map marks it, at every level (its app and role hold it).
  await page.goto(`${BASE}/map?level=workload`);
  await page.waitForFunction((name) => window.__bulkheadMap && window.__bulkheadMap.$(`node[id = "wl:${name}"]`).hasClass("quarantined"), w.name, { timeout: 60_000 });
  await shot(page, "16b-map-quarantined");
  await page.goto(`${BASE}/`);

  // The dashboard counts it; the Alerts page shows the critical quarantine alert.
  await nav(page, "Dashboard");
  await page.getByTestId("quarantined").filter({ hasText: `${quarantined.length} workload` }).waitFor();
  await nav(page, "Alerts");
  await page.getByLabel("Kind").selectOption("quarantine");
  const alert = page.getByRole("table", { name: "Alerts" }).locator("tbody tr").filter({ hasText: why });
  await alert.waitFor();
  assert.match(await alert.innerText(), new RegExp(`critical[\\s\\S]*${w.name} quarantined by initial admin[\\s\\S]*workload ${w.name} · reason: ${why}`));
  const alerts = (await api("GET", "/alerts?kind=quarantine&limit=1000")).items;
  assert.ok(alerts.some((a) => a.details.workload === w.name && a.details.reason === why));
  await shot(page, "17-quarantine-alert");

  // Release, confirmed in the dialog.
  await nav(page, "Inventory");
  page.once("dialog", (d) => {
    assert.match(d.message(), new RegExp(`Release ${w.name}`));
    d.accept();
  });
  await row.getByRole("button", { name: `Release ${w.name}` }).click();
  await row.getByRole("button", { name: `Quarantine ${w.name}` }).waitFor();
  assert.equal(await row.getByText("quarantined", { exact: true }).count(), 0);
  assert.equal((await api("GET", `/workloads/${w.name}`)).attributes?.["bulkhead.quarantine"], undefined);
  const released = (await api("GET", "/alerts?kind=quarantine_released&limit=1000")).items;
  assert.ok(released.some((a) => a.details.workload === w.name));
  await shot(page, "18-released");
  await page.close();
});

test("a workload's mode is set from the inventory: the impact on recent traffic first, then the switch", async () => {
  // A workload whose recent traffic the switch would change (the demo's scans reach some).
  let w;
  for (const x of (await api("GET", "/workloads?limit=10000")).items.filter((x) => x.managed && x.mode === "monitor")) {
    const p = await api("POST", "/enforcement/mode", { workload: x.name, mode: "enforced" });
    if (p.impact.groups.length > 0) {
      w = x;
      break;
    }
  }
  assert.ok(w, "enforcing some monitored workload of the demo changes verdicts of its traffic");
  const page = await signedIn();
  await nav(page, "Inventory");
  const row = page.getByTestId(`workload-${w.name}`);
  await row.getByRole("button", { name: `Set the mode of ${w.name}` }).click();
  const form = page.getByRole("form", { name: `Mode of ${w.name}` });
  await form.getByLabel("Mode").selectOption("enforced");
  await form.getByRole("button", { name: "Preview impact" }).click();
  const impact = page.getByTestId(`mode-impact-${w.name}`);
  await impact.waitFor();
  // The console shows what the server computed, and nothing was written yet.
  const preview = await api("POST", "/enforcement/mode", { workload: w.name, mode: "enforced" });
  assert.match(await impact.innerText(), new RegExp(`would switch 1 of 1 selected workload\\(s\\) to enforced mode`));
  assert.ok(preview.impact.newly_blocked_connections > 0, JSON.stringify(preview.impact));
  assert.equal(await impact.locator("tbody tr").count(), preview.impact.groups.length);
  assert.match(await impact.innerText(), /potentially_blocked\s*→\s*blocked/);
  assert.equal((await api("GET", `/workloads/${w.name}`)).mode, "monitor");
  await shot(page, "18b-mode-impact");
  await impact.getByRole("button", { name: `Switch ${w.name} to enforced` }).click();
  await row.getByText("enforced", { exact: true }).waitFor();
  assert.equal((await api("GET", `/workloads/${w.name}`)).mode, "enforced");
  const audit = (await api("GET", "/audit?limit=1000")).items;
  assert.ok(audit.some((e) => e.action === "workload.mode" && e.target === `workload/${w.name}`));
  // Back as it was, for the other tests.
  await api("POST", "/enforcement/mode", { workload: w.name, mode: "monitor", apply: true });
  await page.close();
});

test("the agents page says how to enroll a host; a pairing profile is created (key shown once) and revoked", async () => {
  assert.deepEqual((await api("GET", "/agents")).items, [], "the demo has no agents");
  const page = await signedIn();
  // The dashboard's agent card leads to the agents page.
  await page.getByTestId("agents-none").getByRole("link", { name: "Enroll one" }).click();
  await page.getByRole("heading", { name: "Agents", exact: true }).waitFor();
  const empty = page.getByRole("region", { name: "No agent has enrolled yet" });
  await empty.waitFor();
  assert.match(await empty.innerText(), /--agent-listen[\s\S]*pairing profile[\s\S]*bulkhead agent --server https:\/\/\S+ --pairing-key/);
  await shot(page, "19-agents-empty");

  const name = `console-db-${Date.now() % 100000}`;
  await page.getByLabel("Profile name").fill(name);
  await page.getByLabel("Labels of enrolled hosts").fill("app=crm role=db");
  await page.getByLabel("Starting mode").selectOption("enforced");
  await page.getByLabel("Max. hosts").fill("2");
  await page.getByLabel("Valid for (days)").fill("3");
  await page.getByRole("button", { name: "Create pairing profile" }).click();
  const keyField = page.getByLabel("Pairing key");
  await keyField.waitFor();
  const key = await keyField.inputValue();
  assert.match(key, /^bh_pair_[0-9a-f]{64}(:[0-9a-f]+)?$/);
  assert.equal(await keyField.getAttribute("readonly"), "");
  // Copy-friendly: focusing the field selects the whole key, and the copy button is next with Tab.
  await keyField.focus();
  assert.equal(await keyField.evaluate((e) => e.value.slice(e.selectionStart, e.selectionEnd)), key);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Copy key");
  assert.ok((await page.getByLabel("Enrollment command").inputValue()).includes(`--pairing-key '${key}'`));
  await shot(page, "20-pairing-key");

  const row = page.getByTestId(`profile-${name}`);
  await row.waitFor();
  assert.match(await row.innerText(), /app\s*crm[\s\S]*role\s*db[\s\S]*enforced[\s\S]*0 of 2[\s\S]*active/);
  const stored = (await api("GET", "/pairing-profiles")).items.find((p) => p.name === name);
  assert.deepEqual([stored.labels, stored.mode, stored.max_uses, stored.uses, stored.revoked], [{ app: "crm", role: "db" }, "enforced", 2, 0, false]);
  assert.ok(Math.abs(stored.expires_at_ms - (stored.created_at_ms + 3 * DAY_MS)) < 1000);
  // Shown once: after a reload the key is nowhere on the page.
  await page.reload();
  await row.waitFor();
  assert.equal(await page.getByLabel("Pairing key").count(), 0);
  assert.ok(!(await page.content()).includes(key.slice(8, 40)));

  page.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: `Revoke ${name}` }).click();
  await row.getByText("revoked", { exact: true }).waitFor();
  assert.equal(await row.getByRole("button", { name: `Revoke ${name}` }).count(), 0);
  assert.equal((await api("GET", "/pairing-profiles")).items.find((p) => p.name === name).revoked, true);
  await shot(page, "21-pairing-revoked");
  await page.close();
});

test("netops sees rollouts, agents and pairing profiles but no button to change them; quarantine is not offered", async () => {
  const netops = await api("POST", "/tokens", { name: "console test netops 2", role: "netops", expires_in_days: 1 });
  const page = await signedIn(netops.token);
  await nav(page, "Rollouts");
  await page.getByRole("table", { name: "Rollouts" }).waitFor();
  assert.equal(await page.getByRole("form", { name: "Schedule a rollout" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Roll back" }).count(), 0);
  await nav(page, "Inventory");
  await page.getByRole("table", { name: "Workloads" }).locator("tbody tr").first().waitFor();
  assert.equal(await page.getByRole("button", { name: /^(Quarantine|Release) / }).count(), 0);
  await nav(page, "Agents");
  await page.getByRole("table", { name: "Pairing profiles" }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Create pairing profile" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: /^Revoke / }).count(), 0);
  await page.getByText("Ask an admin or secops for a pairing key").waitFor();
  await page.close();
});

test("the exporters page lists the demo's own exporter and the exporter table's size; netops reads it, an app owner is not offered it", async () => {
  // The demo streams IPFIX to its own collector over loopback: 127.0.0.1 is an exporter
  // once its first datagram is decoded. Refresh until it is listed (generous deadline).
  const page = await signedIn();
  await nav(page, "Exporters");
  await page.getByRole("heading", { name: "Exporters", exact: true }).waitFor();
  const table = page.getByRole("table", { name: "Exporters" });
  const row = page.getByTestId("exporter-127.0.0.1");
  const deadline = Date.now() + 120_000;
  for (;;) {
    await table.waitFor();
    if ((await row.count()) > 0) break;
    assert.ok(Date.now() < deadline, "the demo's exporter 127.0.0.1 was not listed within 120 s");
    await new Promise((r) => setTimeout(r, 2000));
    await page.getByRole("button", { name: "Refresh" }).click();
  }
  assert.ok((await table.locator("tbody tr").count()) >= 1);
  assert.match(await row.innerText(), /127\.0\.0\.1[\s\S]*port \d+/);
  // The summary is the API's: the table's limit, and the exporter the API lists too.
  const list = await api("GET", "/collector/exporters");
  assert.ok(list.items.some((e) => e.address === "127.0.0.1"), JSON.stringify(list.items.map((e) => e.address)));
  assert.ok(list.table.max_exporters > 0 && list.table.exporters >= 1, JSON.stringify(list.table));
  await page.getByText(`of ${list.table.max_exporters.toLocaleString("en")} the table holds`, { exact: true }).waitFor();
  await shot(page, "30-exporters");
  // Netops may read it; an app owner is not offered the page.
  const netops = await api("POST", "/tokens", { name: "console test netops exporters", role: "netops", expires_in_days: 1 });
  const page2 = await signedIn(netops.token);
  await nav(page2, "Exporters");
  await page2.getByRole("table", { name: "Exporters" }).waitFor();
  await page2.close();
  const app = (await api("GET", "/workloads?limit=1&labels=role=web")).items[0].labels.app;
  const owner = await api("POST", "/tokens", { name: "console test owner exporters", role: "app_owner", scope: `app=${app}`, expires_in_days: 1 });
  const page3 = await signedIn(owner.token);
  assert.equal(await page3.getByRole("link", { name: "Exporters" }).count(), 0);
  await page3.close();
  await page.close();
});

test("rollback is offered once a rollout has enforced, after a confirmation, and sent to the API", async () => {
  // `bulkhead demo` runs no rollout scheduler, so no rollout of its ever reaches its date:
  // the list is shown as if one had been enforced (the page's GET /rollouts answered with
  // that state); the rollback request itself goes to the real server, which refuses it
  // with the rollout's name because nothing was enforced, and the page says so.
  const stored = (await api("GET", "/rollouts")).items[0];
  assert.ok(stored, "the rollout test scheduled one");
  const enforcedAt = Date.now() - 60_000;
  const page = await signedIn();
  await page.route(`${BASE}/api/v1/rollouts`, async (route) => {
    if (route.request().method() !== "GET") return route.continue();
    const res = await route.fetch();
    const body = await res.json();
    for (const r of body.items) {
      if (r.id === stored.id) Object.assign(r, { state: "enforced", at_ms: enforcedAt, previous_modes: Object.fromEntries(r.workloads.map((w) => [w.name, w.mode])) });
    }
    await route.fulfill({ response: res, json: body });
  });
  await nav(page, "Rollouts");
  const row = page.getByTestId(`rollout-${stored.name}`);
  await row.getByText("enforced", { exact: true }).waitFor();
  // Only the enforced one is offered for rollback.
  assert.equal(await page.getByRole("button", { name: "Roll back" }).count(), 1);
  const button = row.getByRole("button", { name: "Roll back" });
  // Dismissing the confirmation sends nothing.
  let sent = 0;
  page.on("request", (r) => r.method() === "POST" && r.url().endsWith(`/rollouts/${stored.id}/rollback`) && sent++);
  page.once("dialog", (d) => d.dismiss());
  await button.click();
  await page.waitForTimeout(300);
  assert.equal(sent, 0);
  // Accepted from the keyboard, it is sent; the server's refusal is shown.
  let message = "";
  page.once("dialog", (d) => {
    message = d.message();
    d.accept();
  });
  await button.focus();
  await page.keyboard.press("Enter");
  await page.getByRole("alert").filter({ hasText: `rollout ${stored.name} has not switched anything to enforced` }).waitFor();
  assert.equal(sent, 1);
  assert.match(message, new RegExp(`Roll back "${stored.name}"\\? Its ${stored.workloads.length} workload\\(s\\) go back`));
  assert.equal((await api("GET", `/rollouts/${stored.id}`)).state, "scheduled");
  await shot(page, "22-rollback-refused");
  await page.close();
});

test("an agent enrolled with a pairing key appears online, comes in sync, and is removed from the console", async () => {
  // What `bulkhead agent` does over the agent API, from this test: enroll, heartbeat.
  const profile = await api("POST", "/pairing-profiles", { name: `console-agents-${Date.now() % 100000}`, labels: { app: "console", role: "agent" }, mode: "monitor" });
  const host = { hostname: "console-agent-1", os_name: "debian", os_version: "12", kernel: "6.1.0-28-amd64", interfaces: [{ name: "eth0", addresses: ["10.250.0.5/24"] }] };
  // Agents are not served on the API port.
  const onApiPort = await fetch(`${BASE}/api/v1/agent/enroll`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(onApiPort.status, 404);
  const enrolled = await agentCall("/api/v1/agent/enroll", { pairing_key: profile.pairing_key, host });
  assert.equal(enrolled.status, 201, enrolled.text);
  const { agent_id: id, credential } = JSON.parse(enrolled.text);
  const heartbeat = async (body) => {
    const r = await agentCall("/api/v1/agent/heartbeat", body, credential);
    return { status: r.status, body: r.status === 200 ? JSON.parse(r.text) : null };
  };
  const { body: first } = await heartbeat({ status: { flows_buffered: 0 } });

  const page = await signedIn();
  await nav(page, "Agents");
  const row = page.getByTestId(`agent-${id}`);
  await row.waitFor();
  // Online, with its host inventory; not in sync until it applies the revision it was given.
  let text = await row.innerText();
  assert.match(text, /console-agent-1[\s\S]*online[\s\S]*not in sync[\s\S]*applied none, wanted [0-9a-f]+[\s\S]*debian 12[\s\S]*6\.1\.0-28-amd64/);
  assert.ok(text.includes(first.revision.slice(0, 10)), text);
  assert.equal(await page.getByRole("region", { name: "No agent has enrolled yet" }).count(), 0);

  await heartbeat({ applied_revision: first.revision, status: { flows_buffered: 7 } });
  await page.getByRole("button", { name: "Refresh" }).click();
  await row.getByText("in sync", { exact: true }).waitFor();
  text = await row.innerText();
  assert.match(text, /7 buffered/);
  const listed = (await api("GET", "/agents")).items.find((a) => a.id === id);
  assert.deepEqual([listed.online, listed.in_sync, listed.host.kernel], [true, true, "6.1.0-28-amd64"]);
  await shot(page, "23-agents");

  // The dashboard's card counts it.
  await nav(page, "Dashboard");
  assert.match(await page.getByTestId("agent-health").innerText(), /Online\s+1 of 1[\s\S]*Offline\s+0/);
  // Its workload link opens the inventory on it.
  await nav(page, "Agents");
  await row.getByRole("link", { name: "console-agent-1" }).click();
  await page.getByRole("heading", { name: "Inventory" }).waitFor();
  assert.equal(await page.getByLabel("Search").inputValue(), "console-agent-1");
  await page.getByTestId("workload-console-agent-1").waitFor();

  // Removed after a confirmation: gone from the page and the API, its credential refused.
  await nav(page, "Agents");
  page.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: "Remove the agent of console-agent-1" }).click();
  await row.waitFor({ state: "detached" });
  assert.equal((await api("GET", "/agents")).items.filter((a) => a.id === id).length, 0);
  assert.equal((await heartbeat({ status: {} })).status, 401);
  await page.close();
});

test("a host that asks to become an existing workload waits for approval, with what it reports beside what the workload has", async () => {
  await api("POST", "/workloads/import", [{ name: "console-pending", kind: "vm", managed: true, addresses: ["10.250.0.9"], labels: { app: "console", role: "db" }, mode: "monitor" }]);
  const profile = await api("POST", "/pairing-profiles", { name: `console-new-only-${Date.now() % 100000}`, labels: { app: "console" } });
  const host = { hostname: "console-pending", os_name: "debian", os_version: "12", kernel: "6.1.0", interfaces: [{ name: "eth0", addresses: ["10.250.0.9/24", "10.250.9.9/24"] }] };
  const asked = await agentCall("/api/v1/agent/enroll", { pairing_key: profile.pairing_key, host });
  assert.equal(asked.status, 202, asked.text);
  const { agent_id: id, credential } = JSON.parse(asked.text);
  assert.equal((await agentCall("/api/v1/agent/heartbeat", {}, credential)).status, 403);

  const page = await signedIn();
  await nav(page, "Agents");
  const row = page.getByTestId(`pending-${id}`);
  await row.waitFor();
  assert.match(await row.innerText(), /console-pending[\s\S]*only create new workloads[\s\S]*10\.250\.9\.9[\s\S]*10\.250\.0\.9/);
  await shot(page, "24-pending-agent");
  page.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: "Approve console-pending" }).click();
  await row.waitFor({ state: "detached" });
  await page.getByTestId(`agent-${id}`).waitFor();
  assert.equal((await agentCall("/api/v1/agent/heartbeat", {}, credential)).status, 200);
  const w = await api("GET", "/workloads/console-pending");
  assert.deepEqual(w.addresses, ["10.250.0.9", "10.250.9.9"]);
  // Cleaned up for the tests after this one.
  await api("DELETE", `/agents/${id}`);
  await page.close();
});

// Label rules that match demo workloads: the production web servers by hostname, the
// shared services by subnet. Both add `zone`, a key no demo workload has; `env: ignored`
// never shows because every workload has an `env` label of its own (people's labels win).
const LABEL_RULES = `bulkhead: v1
kind: label_rules
rules:
  - name: dmz-web-prod
    match: { hostname: '^[a-z]+-web-p[0-9]+\\.prod\\.corp$' }
    set: { zone: dmz, env: ignored }
  - name: core-shared
    match: { subnet: 10.0.0.0/24 }
    set: { zone: core }
`;

/** An API call that may fail: its status and body. */
async function apiStatus(method, path, body, token = TOKEN) {
  const r = await fetch(`${BASE}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

test("label rules are previewed, a broken document is refused with its line and field, saved, and derived labels show in the inventory", async () => {
  const start = await api("GET", "/label-rules");
  assert.deepEqual([start.yaml, start.rules, start.assigned], ["", [], []], "the demo starts without label rules");
  const web = (await api("GET", "/workloads?limit=1&labels=role=web,env=prod")).items[0];
  const dns = (await api("GET", "/workloads?limit=1&labels=role=dns")).items[0];
  assert.ok(web && dns && !("zone" in web.labels) && !("zone" in dns.labels));
  const page = await signedIn();
  try {
    await nav(page, "Label rules");
    await page.getByRole("heading", { name: "Label rules", exact: true }).waitFor();
    await page.getByText(/^No label rules( have been saved yet)?\.$/).waitFor();
    const editor = page.getByLabel("Label rules (YAML)");
    await editor.fill(LABEL_RULES);
    await page.getByTestId("unsaved").waitFor();

    // Preview from the keyboard (Ctrl+Enter in the editor): the workloads the rules match,
    // with what they would get, as the API previews them; nothing is stored.
    await editor.focus();
    await page.keyboard.press("Control+Enter");
    const table = page.getByRole("table", { name: "Labels the rules would add" });
    await table.locator("tbody tr").first().waitFor();
    const expected = (await api("POST", "/label-rules/preview", { yaml: LABEL_RULES })).assigned;
    assert.ok(expected.length >= 10, `the rules match ${expected.length} workloads`);
    assert.ok(expected.some((a) => a.workload === web.name && a.labels.zone === "dmz"));
    assert.ok(expected.some((a) => a.workload === dns.name && a.labels.zone === "core"));
    for (const a of expected) assert.deepEqual(Object.keys(a.labels), ["zone"], `${a.workload} keeps its own env`);
    assert.equal(await table.locator("tbody tr").count(), expected.length);
    for (const a of expected) {
      const row = page.getByTestId(`preview-${a.workload}`);
      assert.match(await row.innerText(), new RegExp(`${a.workload}\\s+zone\\s*${a.labels.zone}[\\s\\S]*new`));
    }
    assert.match(await page.getByTestId("preview-summary").innerText(), new RegExp(`^2 rules: ${expected.length} workloads would get labels`));
    assert.equal(await table.getByText("ignored").count(), 0);
    await shot(page, "24-label-rules-preview");
    assert.equal((await api("GET", "/label-rules")).yaml, "", "a preview stores nothing");

    // A broken document: the error names its line and field next to the editor; nothing is saved.
    const broken = LABEL_RULES.replace("10.0.0.0/24", "10.0.0.0/33");
    const refused = await apiStatus("POST", "/label-rules/preview", { yaml: broken });
    assert.equal(refused.status, 400);
    const detail = refused.body.error.details[0];
    assert.equal(detail.field, "yaml.rules[1].match.subnet");
    await editor.fill(broken);
    await page.getByRole("button", { name: "Save rules" }).click();
    const problems = page.getByRole("alert").filter({ hasText: "Not saved" });
    await problems.waitFor();
    assert.match(await problems.innerText(), new RegExp(`Line ${detail.line}: yaml\\.rules\\[1\\]\\.match\\.subnet: "10\\.0\\.0\\.0/33" is not a CIDR`));
    assert.equal(await editor.getAttribute("aria-invalid"), "true");
    // "Go to line" from the keyboard puts the focus on that line of the editor.
    await problems.getByRole("button", { name: `Go to line ${detail.line}` }).focus();
    await page.keyboard.press("Enter");
    const sel = await page.evaluate(() => {
      const e = document.activeElement;
      return { id: e?.id, text: e.value.slice(e.selectionStart, e.selectionEnd) };
    });
    assert.deepEqual(sel, { id: "lr-yaml", text: broken.split("\n")[detail.line - 1] });
    await shot(page, "25-label-rules-error");
    const unchanged = await api("GET", "/label-rules");
    assert.deepEqual([unchanged.yaml, unchanged.updated_at_ms], ["", start.updated_at_ms], "a broken document is not saved");

    // Saved: the rules in force by name, who changed them and when (API: stored as written).
    await editor.fill(LABEL_RULES);
    await page.getByRole("button", { name: "Save rules" }).click();
    const inForce = page.getByRole("list", { name: "Rules in force" });
    await inForce.getByText("core-shared").waitFor();
    assert.deepEqual(await inForce.locator("li").allInnerTexts(), ["dmz-web-prod", "core-shared"]);
    await page.getByTestId("lr-changed").filter({ hasText: "Last changed by initial admin" }).waitFor();
    assert.equal(await page.getByTestId("unsaved").count(), 0);
    assert.equal(await page.getByRole("alert").filter({ hasText: "Not saved" }).count(), 0);
    const saved = await api("GET", "/label-rules");
    assert.equal(saved.yaml, LABEL_RULES);
    assert.deepEqual(saved.rules, ["dmz-web-prod", "core-shared"]);
    assert.match(saved.updated_by, /^initial admin\b/);
    assert.ok(Math.abs(saved.updated_at_ms - Date.now()) < 120_000);
    assert.deepEqual(saved.assigned, expected);
    await page.getByRole("table", { name: "Labels from the rules in force" }).getByRole("link", { name: web.name, exact: true }).waitFor();
    await shot(page, "26-label-rules-saved");

    // The inventory (API and page) carries the derived labels, drawn apart from the workload's own.
    const after = await api("GET", `/workloads/${web.name}`);
    assert.deepEqual(after.labels, { ...web.labels, zone: "dmz" });
    assert.equal((await api("GET", `/workloads/${dns.name}`)).labels.zone, "core");
    await nav(page, "Inventory");
    const row = page.getByTestId(`workload-${web.name}`);
    const chip = row.locator(".chip.derived");
    await chip.waitFor();
    assert.equal(await chip.count(), 1, "only the zone label is derived");
    assert.match(await chip.innerText(), /zone\s*dmz\s*\(from a label rule\)/);
    assert.equal(await row.locator(".chip:not(.derived)").count(), Object.keys(web.labels).length);
    await page.getByTestId(`workload-${dns.name}`).locator(".chip.derived").filter({ hasText: "core" }).waitFor();
    // The label editor edits the workload's own labels only; the derived one is shown beside them.
    await row.getByRole("button", { name: "Edit labels" }).click();
    const form = page.getByRole("form", { name: `Labels of ${web.name}` });
    const keys = await form.locator("input[id^=lk-]").evaluateAll((xs) => xs.map((x) => x.value));
    assert.deepEqual(keys.sort(), Object.keys(web.labels).sort());
    await form.getByText("not edited here").waitFor();
    await page.getByTestId("derived-legend").filter({ hasText: `label rules (${expected.length} workloads)` }).waitFor();
    await form.scrollIntoViewIfNeeded();
    await shot(page, "27-inventory-derived-labels");
    await form.getByRole("button", { name: "Cancel" }).click();

    // Back to no rules from the page, after a confirmation: the derived labels go.
    await nav(page, "Label rules");
    await editor.fill("");
    let message = "";
    page.once("dialog", (d) => {
      message = d.message();
      d.accept();
    });
    await page.getByRole("button", { name: "Save rules" }).click();
    await page.getByText("No label rules.", { exact: true }).waitFor();
    assert.match(message, new RegExp(`^Remove all label rules\\? The ${expected.length} labels they add to ${expected.length} workloads go`));
    const cleared = await api("GET", "/label-rules");
    assert.deepEqual([cleared.yaml, cleared.rules, cleared.assigned], ["", [], []]);
    assert.deepEqual((await api("GET", `/workloads/${web.name}`)).labels, web.labels);
  } finally {
    await api("PUT", "/label-rules", { yaml: "" });
    await page.close();
  }
});

test("netops previews label rules but cannot save them; an app owner reads them for its scope only", async () => {
  await api("PUT", "/label-rules", { yaml: LABEL_RULES });
  try {
    const netops = await api("POST", "/tokens", { name: "console test netops label rules", role: "netops", expires_in_days: 1 });
    const page = await signedIn(netops.token);
    await nav(page, "Label rules");
    const editor = page.getByLabel("Label rules (YAML)");
    await page.getByRole("list", { name: "Rules in force" }).getByText("dmz-web-prod").waitFor();
    assert.equal(await editor.inputValue(), LABEL_RULES);
    await page.getByText("preview only", { exact: true }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Save rules" }).count(), 0);
    // It may try a change: the preview shows what differs from the rules in force.
    await editor.fill(LABEL_RULES.replace("zone: core", "zone: shared-core"));
    await page.getByRole("button", { name: "Preview", exact: true }).click();
    const dns = (await api("GET", "/workloads?limit=1&labels=role=dns")).items[0];
    const row = page.getByTestId(`preview-${dns.name}`);
    await row.waitFor();
    assert.match(await row.innerText(), /zone\s*shared-core[\s\S]*changed[\s\S]*now:\s*zone\s*core/);
    await page.getByRole("checkbox", { name: /Only differences/ }).check();
    const shown = await page.getByRole("table", { name: "Labels the rules would add" }).locator("tbody tr").allInnerTexts();
    assert.ok(shown.length > 0 && shown.every((t) => /changed/.test(t)), shown.join(" | "));
    await shot(page, "28-label-rules-netops");
    assert.equal((await api("GET", "/label-rules")).yaml, LABEL_RULES);
    await page.close();

    // An app owner reads the rules and the labels they give its own workloads; no preview, no save.
    const app = (await api("GET", "/workloads?limit=1&labels=role=web,env=prod")).items[0].labels.app;
    const owner = await api("POST", "/tokens", { name: "console test owner label rules", role: "app_owner", scope: `app=${app}`, expires_in_days: 1 });
    const mine = (await api("GET", "/label-rules", undefined, owner.token)).assigned;
    assert.ok(mine.length > 0 && mine.every((a) => a.workload.startsWith(`${app}-`)), JSON.stringify(mine));
    const page2 = await signedIn(owner.token);
    await nav(page2, "Label rules");
    await page2.getByText("read only", { exact: true }).waitFor();
    assert.equal(await page2.getByLabel("Label rules (YAML)").getAttribute("readonly"), "");
    assert.equal(await page2.getByRole("button", { name: /^(Preview|Save rules)$/ }).count(), 0);
    const rows = page2.getByRole("table", { name: "Labels from the rules in force" }).locator("tbody tr");
    await rows.first().waitFor();
    assert.deepEqual((await rows.locator("td:first-child").allInnerTexts()).map((t) => t.trim()), mine.map((a) => a.workload));
    await shot(page2, "29-label-rules-app-owner");
    await page2.close();
  } finally {
    await api("PUT", "/label-rules", { yaml: "" });
  }
});
