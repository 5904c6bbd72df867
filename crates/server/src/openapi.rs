//! The OpenAPI 3 document, made from the routes themselves: every handler carries its
//! `#[utoipa::path]` (method, path, parameters, request and response body types), and
//! the routers are built from those same declarations (`api_routes`, `agent_routes`),
//! so the document cannot list a route that is not served nor miss one that is.
//!
//! What every operation shares is added here: the bearer security scheme, the error
//! body for 4xx answers, and stable operation ids (`{method}_api_v1_…`).

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Value, json};

fn error_schema() -> Value {
    json!({"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object", "required": ["field", "message"], "properties": {
            "field": {"type": "string"}, "message": {"type": "string"},
            "line": {"type": "integer"}, "column": {"type": "integer"}}}}
    }}}})
}

/// The statuses any operation may answer with the error body.
const ERROR_STATUSES: &[&str] = &["400", "401", "403", "404", "409", "422", "429"];

pub fn build() -> Value {
    let (_, api) = crate::api_routes().split_for_parts();
    let (_, agent) = crate::agent_routes().split_for_parts();
    let mut doc = serde_json::to_value(api.merge_from(agent)).unwrap_or_default();
    doc["info"] = json!({"title": "Bulkhead control plane", "version": env!("CARGO_PKG_VERSION"),
        "description": "The agent routes (tag agent) are served on the agent listener only."});
    doc["servers"] = json!([{"url": "/"}]);
    doc["security"] = json!([{"bearer": []}]);
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(c) = components {
        c["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
        c["responses"] = json!({"Error": {"description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}});
        if !c["schemas"].is_object() {
            c["schemas"] = json!({});
        }
        c["schemas"]["Error"] = error_schema();
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                op["operationId"] = json!(format!(
                    "{method}{}",
                    path.replace(['/', '{', '}', '.'], "_")
                ));
                let Some(responses) = op["responses"].as_object_mut() else {
                    continue;
                };
                for status in ERROR_STATUSES {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| json!({"$ref": "#/components/responses/Error"}));
                }
            }
        }
    }
    doc
}

/// `GET /api/v1/openapi.json`, built once.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "admin",
    summary = "This document",
    security(()),
    responses((status = 200, description = "success", body = serde_json::Value))
)]
pub async fn document() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(build).clone())
}
