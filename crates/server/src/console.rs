//! The web console: the files `build.rs` built from `web/` and embedded, served at `/`,
//! and `GET /api/v1/whoami` (who the token belongs to, so the console offers only what
//! the role may do).
//!
//! The console is the router's fallback: `/api/…` paths that no route takes stay the
//! JSON 404 they always were; any other GET is a file of the console, or `index.html`
//! for the console's own (client-side) routes.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    assets::ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, ty, bytes)| (*ty, *bytes))
}

/// What the browser may do with the console: run and style only what the server itself
/// sends, talk only to it, and never be framed. The bundle loads nothing from elsewhere
/// and runs no inline script, so a script injected into a page would not run either.
/// Two exceptions for styles, neither of which can run code: `style-src-attr` allows the
/// `style="…"` attributes of the map's tooltips (HTML built as text), and the hash is
/// that of the one `<style>` cytoscape adds (`.__________cytoscape_container { position:
/// relative; }`), which would otherwise be refused with an error in the browser console.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'sha256-pgvDUBa4IjFA2yuSJ2cqcyxmNYJMborsd0ORcRv9vw8='; \
    style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Sent with every console response (the API answers JSON, which browsers do not render).
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    // For browsers that predate `frame-ancestors`.
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    // The console's URLs name workloads and rulesets: none of that goes to a link's target.
    (header::REFERRER_POLICY, "no-referrer"),
];

/// The fallback: console files, `index.html` for client routes, JSON 404 for the API.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path == "/api"
        || path.starts_with("/api/")
        || (method != Method::GET && method != Method::HEAD)
    {
        return ApiError::NotFound("route".into()).into_response();
    }
    let mut response = console_file(path);
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A built file, `index.html` for client routes, or 404 under `assets/`.
fn console_file(path: &str) -> Response {
    let rel = path.trim_start_matches('/');
    if let Some((ty, bytes)) = asset(rel).filter(|_| !rel.is_empty()) {
        // Vite names built files by content hash: they never change under one name.
        let cache = if rel.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, cache)],
            bytes,
        )
            .into_response();
    }
    if rel.starts_with("assets/") {
        // A missing build file is a 404, not the app (a stale tab asking for old chunks).
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match asset("index.html") {
        Some((ty, bytes)) => (
            [
                (header::CONTENT_TYPE, ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        None => ApiError::NotFound("route".into()).into_response(),
    }
}

/// `GET /api/v1/whoami`: the caller's token name, role and (for app owners) scope.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "admin",
    summary = "The caller's token name, role and scope",
    responses((status = 200, description = "the caller", body = WhoAmI))
)]
pub async fn whoami(p: Principal) -> ApiResult<Json<WhoAmI>> {
    let scope = (p.role == crate::auth::Role::AppOwner).then(|| p.scope.to_string());
    Ok(Json(WhoAmI {
        name: p.name,
        role: p.role.as_str().to_string(),
        scope,
        token_id: p.token_id,
    }))
}

/// Who the caller's token says it is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub name: String,
    /// admin, secops, netops or app_owner.
    pub role: String,
    /// An app owner's labels, `app=payments`.
    pub scope: Option<String>,
    pub token_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_embedded() {
        let (ty, index) = asset("index.html").expect("index.html is embedded");
        assert!(ty.starts_with("text/html"));
        let text = std::str::from_utf8(index).expect("utf-8");
        assert!(text.contains("<div id=\"app\""), "{text}");
        // Every script and stylesheet index.html names is embedded too.
        for part in text.split("src=\"/").chain(text.split("href=\"/")).skip(1) {
            let name = part.split('"').next().unwrap_or("");
            if name.starts_with("assets/") {
                assert!(
                    asset(name).is_some(),
                    "{name} is referenced but not embedded"
                );
            }
        }
    }
}
