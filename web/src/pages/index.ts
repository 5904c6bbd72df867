// The console's pages, in navigation order. Adding a page: write a component taking
// PageProps and add one entry here. `visible` hides it from roles that cannot use it;
// `api` hides it until the server offers that endpoint (read from /api/v1/openapi.json).
import type { FunctionComponent } from "preact";
import { type Session, can } from "../session";
import { Agents } from "./Agents";
import { Alerts } from "./Alerts";
import { Audit } from "./Audit";
import { Coverage } from "./Coverage";
import { Dashboard } from "./Dashboard";
import { Exporters } from "./Exporters";
import { Flows } from "./Flows";
import { Inventory } from "./Inventory";
import { LabelRules } from "./LabelRules";
import { MapPage } from "./Map";
import { Policy } from "./Policy";
import { Recommendations } from "./Recommendations";
import { Rollouts } from "./Rollouts";
import { Sprawl } from "./Sprawl";
import { Tokens } from "./Tokens";

export interface PageProps {
  session: Session;
  path: string;
  params: URLSearchParams;
}

export interface Page {
  path: string;
  title: string;
  section: string;
  /** An SVG path in a 24×24 box. */
  icon: string;
  component: FunctionComponent<PageProps>;
  visible?: (s: Session) => boolean;
  api?: string;
}

export const PAGES: Page[] = [
  { path: "/dashboard", title: "Dashboard", section: "Overview", icon: "M3 13h8V3H3zm0 8h8v-6H3zm10 0h8V11h-8zm0-18v6h8V3z", component: Dashboard },
  { path: "/map", title: "Map", section: "Overview", icon: "M12 2a3 3 0 0 0-1 5.83V11H6a2 2 0 0 0-2 2v3.17a3 3 0 1 0 2 0V13h5v3.17a3 3 0 1 0 2 0V13h5v3.17a3 3 0 1 0 2 0V13a2 2 0 0 0-2-2h-5V7.83A3 3 0 0 0 12 2z", component: MapPage, api: "/api/v1/flows" },
  { path: "/flows", title: "Flows", section: "Overview", icon: "M4 7h13l-3-3 1.4-1.4L21 8l-5.6 5.4L14 12l3-3H4zm16 10H7l3 3-1.4 1.4L3 16l5.6-5.4L10 12l-3 3h13z", component: Flows, api: "/api/v1/flows" },
  { path: "/alerts", title: "Alerts", section: "Overview", icon: "M12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-6V11a6 6 0 0 0-5-5.9V4a1 1 0 0 0-2 0v1.1A6 6 0 0 0 6 11v5l-2 2v1h16v-1z", component: Alerts, api: "/api/v1/alerts" },
  { path: "/inventory", title: "Inventory", section: "Segmentation", icon: "M4 4h16v4H4zm0 6h16v4H4zm0 6h16v4H4zM6 5.5v1h2v-1zm0 6v1h2v-1zm0 6v1h2v-1z", component: Inventory, api: "/api/v1/workloads" },
  { path: "/label-rules", title: "Label rules", section: "Segmentation", icon: "M21.4 11.6 12.4 2.6A2 2 0 0 0 11 2H4a2 2 0 0 0-2 2v7a2 2 0 0 0 .6 1.4l9 9a2 2 0 0 0 2.8 0l7-7a2 2 0 0 0 0-2.8zM6.5 8a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3z", component: LabelRules, api: "/api/v1/label-rules" },
  { path: "/policy", title: "Policy", section: "Segmentation", icon: "M12 2 4 5v6c0 5 3.4 9.7 8 11 4.6-1.3 8-6 8-11V5zm-1 14-4-4 1.4-1.4L11 13.2l4.6-4.6L17 10z", component: Policy, api: "/api/v1/draft/objects" },
  { path: "/recommendations", title: "Recommendations", section: "Segmentation", icon: "M9 21h6v-1H9zm3-19a7 7 0 0 0-4 12.7V17a1 1 0 0 0 1 1h6a1 1 0 0 0 1-1v-2.3A7 7 0 0 0 12 2z", component: Recommendations, api: "/api/v1/recommendations" },
  { path: "/rollouts", title: "Rollouts", section: "Segmentation", icon: "M7 2v2H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2h-2V2h-2v2H9V2zM5 9h14v11H5zm6 2v4.4l3.3 2 1-1.6-2.3-1.4V11z", component: Rollouts, api: "/api/v1/rollouts" },
  { path: "/reports/sprawl", title: "Sprawl report", section: "Reports", icon: "M5 3h14a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm2 14h2v-5H7zm4 0h2V7h-2zm4 0h2v-8h-2z", component: Sprawl, visible: can.readSprawl, api: "/api/v1/reports/sprawl" },
  { path: "/reports/coverage", title: "Coverage", section: "Reports", icon: "M11 2v20a10 10 0 0 1 0-20zm2 0v9h9a10 10 0 0 0-9-9zm0 11v9a10 10 0 0 0 9-9z", component: Coverage, api: "/api/v1/coverage" },
  { path: "/audit", title: "Audit log", section: "Reports", icon: "M6 2h9l5 5v13a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2zm8 1.5V8h4.5zM8 12v2h8v-2zm0 4v2h8v-2z", component: Audit, visible: can.readAudit, api: "/api/v1/audit" },
  { path: "/agents", title: "Agents", section: "Administration", icon: "M4 4h16a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1h-6v2h3v2H7v-2h3v-2H4a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zm1 2v8h14V6zm2 2h4v2H7z", component: Agents, api: "/api/v1/agents" },
  { path: "/exporters", title: "Exporters", section: "Administration", icon: "M4 14h16a1 1 0 0 1 1 1v4a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1v-4a1 1 0 0 1 1-1zm2 2.5v1h2v-1zm4 0v1h2v-1zM11 12V6.8L8.4 9.4 7 8l5-5 5 5-1.4 1.4L13 6.8V12z", component: Exporters, visible: can.readExporters, api: "/api/v1/collector/exporters" },
  { path: "/tokens", title: "API tokens", section: "Administration", icon: "M7 14a2 2 0 1 1 0-4 2 2 0 0 1 0 4zm5.6-4A6 6 0 1 0 12.6 14H16v3h3v-3h2v-4z", component: Tokens, visible: can.manageTokens, api: "/api/v1/tokens" },
];
