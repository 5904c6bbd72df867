//! The OpenAPI 3 document, built from the route table so that it cannot forget a route.

use axum::Json;
use serde_json::{Value, json};

/// (method, path, tag, summary, needs a body)
pub const ROUTES: &[(&str, &str, &str, &str, bool)] = &[
    (
        "get",
        "/api/v1/workloads",
        "inventory",
        "List workloads (filter by labels=k=v,…; limit, offset)",
        false,
    ),
    (
        "post",
        "/api/v1/workloads/import",
        "inventory",
        "Import workloads (a list, all or nothing)",
        true,
    ),
    (
        "get",
        "/api/v1/label-rules",
        "inventory",
        "The label rules (YAML) and the labels they assign now",
        false,
    ),
    (
        "put",
        "/api/v1/label-rules",
        "inventory",
        "Replace the label rules ({yaml}); labels follow at once",
        true,
    ),
    (
        "post",
        "/api/v1/label-rules/preview",
        "inventory",
        "What a label rules document would assign, without storing it",
        true,
    ),
    (
        "get",
        "/api/v1/workloads/{name}",
        "inventory",
        "Get a workload",
        false,
    ),
    (
        "put",
        "/api/v1/workloads/{name}",
        "inventory",
        "Create or replace a workload",
        true,
    ),
    (
        "delete",
        "/api/v1/workloads/{name}",
        "inventory",
        "Delete a workload",
        false,
    ),
    (
        "get",
        "/api/v1/draft/objects",
        "policy",
        "List draft policy objects (kind=…)",
        false,
    ),
    (
        "get",
        "/api/v1/draft/objects/{kind}/{name}",
        "policy",
        "Get a draft policy object",
        false,
    ),
    (
        "put",
        "/api/v1/draft/objects/{kind}/{name}",
        "policy",
        "Create or replace a draft policy object",
        true,
    ),
    (
        "delete",
        "/api/v1/draft/objects/{kind}/{name}",
        "policy",
        "Delete a draft policy object",
        false,
    ),
    (
        "get",
        "/api/v1/draft/files",
        "policy",
        "The draft as policy-as-code files (policy pull)",
        false,
    ),
    (
        "put",
        "/api/v1/draft/files",
        "policy",
        "Replace the draft with policy-as-code files (policy push)",
        true,
    ),
    (
        "get",
        "/api/v1/draft/diff",
        "policy",
        "Diff of the draft against the provisioned version",
        false,
    ),
    (
        "post",
        "/api/v1/provision",
        "policy",
        "Provision the draft as a new immutable version",
        true,
    ),
    (
        "get",
        "/api/v1/provision/impact",
        "policy",
        "What provisioning the draft would change (rule counts; whether it needs confirm)",
        false,
    ),
    (
        "get",
        "/api/v1/versions",
        "policy",
        "List provisioned versions",
        false,
    ),
    (
        "get",
        "/api/v1/versions/{id}",
        "policy",
        "A version as files",
        false,
    ),
    (
        "get",
        "/api/v1/versions/{id}/diff",
        "policy",
        "Diff of a version against the one before",
        false,
    ),
    (
        "post",
        "/api/v1/versions/{id}/revert",
        "policy",
        "Make the draft equal to a version",
        false,
    ),
    (
        "post",
        "/api/v1/explain",
        "policy",
        "Verdict of a connection against the draft, the provisioned policy or a version",
        true,
    ),
    (
        "post",
        "/api/v1/recommendations",
        "policy",
        "Propose rules from observed flows; written into the draft unless apply is false",
        true,
    ),
    (
        "get",
        "/api/v1/coverage",
        "policy",
        "Coverage of the draft or a version over observed flows",
        false,
    ),
    (
        "get",
        "/api/v1/flows",
        "flows",
        "Query flow summaries",
        false,
    ),
    (
        "get",
        "/api/v1/reports/sprawl",
        "flows",
        "The sprawl report",
        false,
    ),
    ("get", "/api/v1/alerts", "alerts", "List alerts", false),
    (
        "post",
        "/api/v1/alerts/{id}/acknowledge",
        "alerts",
        "Acknowledge an alert",
        false,
    ),
    (
        "post",
        "/api/v1/alerts/{id}/resolve",
        "alerts",
        "Resolve an alert",
        false,
    ),
    (
        "get",
        "/api/v1/audit",
        "admin",
        "The audit log (after_id, limit)",
        false,
    ),
    ("get", "/api/v1/tokens", "admin", "List API tokens", false),
    (
        "post",
        "/api/v1/tokens",
        "admin",
        "Create an API token (shown once)",
        true,
    ),
    (
        "delete",
        "/api/v1/tokens/{id}",
        "admin",
        "Revoke an API token",
        false,
    ),
    (
        "get",
        "/api/v1/openapi.json",
        "admin",
        "This document",
        false,
    ),
    (
        "get",
        "/api/v1/whoami",
        "admin",
        "The caller's token name, role and scope",
        false,
    ),
    (
        "post",
        "/api/v1/workloads/{name}/quarantine",
        "response",
        "Quarantine a workload ({reason}): only failsafe access stays, enforced",
        true,
    ),
    (
        "post",
        "/api/v1/workloads/{name}/release",
        "response",
        "Release a quarantined workload",
        false,
    ),
    (
        "get",
        "/api/v1/rollouts",
        "rollout",
        "List rollouts with their calendar and readiness",
        false,
    ),
    (
        "post",
        "/api/v1/rollouts",
        "rollout",
        "Schedule a monitor → enforce rollout for a label selector",
        true,
    ),
    (
        "get",
        "/api/v1/rollouts/{id}",
        "rollout",
        "Get a rollout",
        false,
    ),
    (
        "post",
        "/api/v1/rollouts/{id}/rollback",
        "rollout",
        "Roll back what a rollout switched to enforced, in one action",
        false,
    ),
    (
        "get",
        "/api/v1/pairing-profiles",
        "agents",
        "List pairing profiles",
        false,
    ),
    (
        "post",
        "/api/v1/pairing-profiles",
        "agents",
        "Create a pairing profile (its key is shown once)",
        true,
    ),
    (
        "delete",
        "/api/v1/pairing-profiles/{id}",
        "agents",
        "Revoke a pairing profile",
        false,
    ),
    (
        "get",
        "/api/v1/agents",
        "agents",
        "List agents with their health and policy sync",
        false,
    ),
    (
        "delete",
        "/api/v1/agents/{id}",
        "agents",
        "Remove an agent (its credential stops working)",
        false,
    ),
    (
        "post",
        "/api/v1/agents/{id}/approve",
        "agents",
        "Approve a pending agent (it becomes its workload as its host reports it)",
        false,
    ),
    (
        "post",
        "/api/v1/agent/enroll",
        "agent",
        "Enroll a host agent with a pairing key (agent listener only; 202 when it waits for approval)",
        true,
    ),
    (
        "post",
        "/api/v1/agent/heartbeat",
        "agent",
        "Agent heartbeat (agent credential)",
        true,
    ),
    (
        "get",
        "/api/v1/agent/policy",
        "agent",
        "The agent's compiled policy (agent credential)",
        false,
    ),
    (
        "post",
        "/api/v1/agent/events",
        "agent",
        "Agent events: logged packets, tamper, rejected policy (agent credential)",
        true,
    ),
    (
        "post",
        "/api/v1/agent/flows",
        "agent",
        "A numbered batch of the agent's flows (agent credential)",
        true,
    ),
];

/// (name, JSON type) of one query parameter.
type Param = (&'static str, &'static str);

/// Query parameters per (method, path).
const QUERY: &[(&str, &str, &[Param])] = &[
    (
        "get",
        "/api/v1/flows",
        &[
            ("bucket", "string"),
            ("from_ms", "integer"),
            ("to_ms", "integer"),
            ("workload", "string"),
            ("labels", "string"),
            ("address", "string"),
            ("port", "string"),
            ("verdict", "string"),
            ("limit", "integer"),
            ("offset", "integer"),
        ],
    ),
    ("get", "/api/v1/reports/sprawl", &[("hours", "integer")]),
    (
        "get",
        "/api/v1/coverage",
        &[
            ("version", "string"),
            ("from_ms", "integer"),
            ("to_ms", "integer"),
            ("granularity", "string"),
            ("limit", "integer"),
        ],
    ),
    (
        "get",
        "/api/v1/audit",
        &[("after_id", "integer"), ("limit", "integer")],
    ),
    (
        "get",
        "/api/v1/alerts",
        &[
            ("state", "string"),
            ("kind", "string"),
            ("limit", "integer"),
            ("offset", "integer"),
        ],
    ),
    (
        "get",
        "/api/v1/workloads",
        &[
            ("labels", "string"),
            ("limit", "integer"),
            ("offset", "integer"),
        ],
    ),
    ("get", "/api/v1/draft/objects", &[("kind", "string")]),
];

pub fn build() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, tag, summary, body) in ROUTES {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "id" {
                    json!({"type": "integer", "minimum": 1})
                } else {
                    json!({"type": "string"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        for (m, p, query) in QUERY {
            if m == method && p == path {
                params.extend(query.iter().map(|(name, ty)| {
                    let schema = if *ty == "integer" {
                        json!({"type": "integer", "format": "int64"})
                    } else {
                        json!({"type": ty})
                    };
                    json!({"name": name, "in": "query", "required": false, "schema": schema})
                }));
            }
        }
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '.'], "_")),
            "responses": {
                "200": {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"}
            }
        });
        if !params.is_empty() {
            op["parameters"] = Value::from(params);
        }
        if *body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(method.to_string(), op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Bulkhead control plane", "version": env!("CARGO_PKG_VERSION")},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "message": {"type": "string"},
                        "line": {"type": "integer"}, "column": {"type": "integer"}}}}
                }}}}}
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}
