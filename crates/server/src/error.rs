//! One error body for the whole API, and one mapping from error to HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// `{"error": {"code": "...", "message": "...", "field": "...", "details": [...]}}`
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

#[derive(Debug, Serialize, Clone)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    /// A pairing key that cannot enroll this host (unknown, revoked, expired, used up,
    /// or bound elsewhere): counted as a failed authentication of the caller's address.
    #[error("enrollment refused: {0}")]
    EnrollmentRefused(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        ApiError::Invalid {
            message: format!("{field}: {message}"),
            details: vec![FieldError {
                field,
                message,
                line: None,
                column: None,
            }],
        }
    }
}

impl From<bulkhead_store::StoreError> for ApiError {
    fn from(e: bulkhead_store::StoreError) -> Self {
        use bulkhead_store::StoreError as E;
        match e {
            E::Invalid { .. } => ApiError::invalid("(request)", e.to_string()),
            E::NotFound { .. } => ApiError::NotFound(e.to_string()),
            E::Conflict { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
            ApiError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::EnrollmentRefused(_) => (StatusCode::FORBIDDEN, "enrollment_refused"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Internal(m) => {
                tracing::error!("internal error: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let (field, details) = match &self {
            ApiError::Invalid { details, .. } => {
                (details.first().map(|d| d.field.clone()), details.clone())
            }
            _ => (None, Vec::new()),
        };
        let body = ErrorBody {
            code,
            message: self.to_string(),
            field,
            details,
        };
        let info = ErrorInfo {
            code,
            message: body.message.clone(),
        };
        let mut resp = (status, Json(serde_json::json!({ "error": body }))).into_response();
        resp.extensions_mut().insert(info);
        resp
    }
}

/// What a refused response was about, for the middleware that audits refusals.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
}

/// Rewrites the plain-text 4xx answers that come from outside the handlers (a body
/// that is not JSON or lacks a field, a bad path or query, a method not allowed, a
/// body too large) into the API's JSON error body, naming the field where the parser
/// did. The console's pages are left alone.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || !status.is_client_error() || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    // serde names the field between backticks: "missing field `name`".
    let field = message
        .contains("field")
        .then(|| message.split('`').nth(1).map(str::to_string))
        .flatten()
        .unwrap_or_else(|| "(body)".to_string());
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid",
    };
    let body = ErrorBody {
        code,
        message: message.clone(),
        field: Some(field.clone()),
        details: vec![FieldError {
            field,
            message,
            line: None,
            column: None,
        }],
    };
    let mut resp = (status, Json(serde_json::json!({ "error": body }))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            resp.headers_mut().insert(name, value.clone());
        }
    }
    resp
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body as `T`, or a 400 naming the field that did not fit (its path, such as
/// `mode` or `owners[1].email`), unknown and missing fields included.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing or unknown field is reported at its parent; serde names it in the
        // message ("missing field `name`", "unknown field `force`").
        let named = inner
            .split('`')
            .nth(1)
            .filter(|_| inner.contains("field"))
            .map(str::to_string);
        let field = match (path.as_str(), named) {
            (".", Some(n)) => n,
            (".", None) => "(body)".to_string(),
            (p, Some(n)) if inner.contains("field") => format!("{p}.{n}"),
            (p, _) => p.to_string(),
        };
        ApiError::invalid(field, inner)
    })
}
