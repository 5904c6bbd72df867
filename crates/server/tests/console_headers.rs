//! The console's responses tell the browser to run only the server's own scripts, to
//! talk only to it, and never to frame it or sniff types.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// (status, headers, body) of one unauthenticated request through the real router.
async fn get(state: &bulkhead_server::AppState, path: &str) -> (StatusCode, HeaderMap, String) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let resp = bulkhead_server::router(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into(),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn assert_security_headers(path: &str, headers: &HeaderMap) {
    let csp = header(headers, "content-security-policy");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for wanted in [
        "default-src 'self'",
        "script-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(directives.contains(&wanted), "{path}: {wanted:?} in {csp}");
    }
    // Nothing may run inline or through eval, which is what makes an injection inert;
    // no stylesheet comes from elsewhere, and no `<style>` element unless it is known.
    let style = directives
        .iter()
        .find(|d| d.starts_with("style-src "))
        .unwrap_or_else(|| panic!("{path}: no style-src in {csp}"));
    assert!(style.starts_with("style-src 'self'"), "{path}: {style}");
    for d in &directives {
        if d.starts_with("script-src") || d.starts_with("default-src") || d == style {
            assert!(!d.contains("unsafe"), "{path}: {d}");
        }
    }
    assert_eq!(header(headers, "x-frame-options"), "DENY", "{path}");
    assert_eq!(
        header(headers, "x-content-type-options"),
        "nosniff",
        "{path}"
    );
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{path}");
}

#[tokio::test]
async fn console_pages_and_files_carry_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let state = bulkhead_server::open(dir.path()).unwrap();

    let (status, headers, index) = get(&state, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_security_headers("/", &headers);
    // The policy holds for what is built: no inline script for `script-src 'self'` to
    // refuse, and everything loaded from this server.
    for tag in index.split("<script").skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        assert!(tag.contains("src=\"/"), "an inline script: <script{tag}>");
    }
    let srcs = index.split("src=\"").skip(1);
    for part in srcs.chain(index.split("href=\"").skip(1)) {
        let target = part.split('"').next().unwrap_or("");
        assert!(target.starts_with('/'), "index.html loads {target}");
    }

    let (_, headers, _) = get(&state, "/policy/rulesets/shop-prod").await;
    assert_security_headers("a client route", &headers);

    let script = index
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("index.html loads a script");
    let (status, headers, _) = get(&state, script).await;
    assert_eq!(status, StatusCode::OK, "{script}");
    assert!(
        header(&headers, header::CONTENT_TYPE.as_str()).starts_with("text/javascript"),
        "{script}"
    );
    assert_security_headers(script, &headers);

    let (status, headers, _) = get(&state, "/favicon.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_security_headers("/favicon.svg", &headers);

    let (status, headers, _) = get(&state, "/assets/gone.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_security_headers("a missing build file", &headers);
}
