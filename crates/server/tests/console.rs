//! The web console through the real router: the app at `/` and at its client routes,
//! its built files with their types, JSON 404s kept for the API, and `whoami`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Server {
    state: bulkhead_server::AppState,
    _dir: tempfile::TempDir,
    admin: String,
}

impl Server {
    fn new() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let state = bulkhead_server::open(dir.path()).unwrap();
        let admin = bulkhead_server::bootstrap_admin(&state).unwrap().unwrap();
        Server {
            state,
            _dir: dir,
            admin,
        }
    }

    /// (status, content type, body)
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = bulkhead_server::router(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let ty = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ty, String::from_utf8_lossy(&bytes).into())
    }
}

#[tokio::test]
async fn the_console_is_served_at_the_root_and_at_its_client_routes() {
    let s = Server::new();
    let (status, ty, index) = s.call(Method::GET, "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ty.starts_with("text/html"), "{ty}");
    assert!(index.contains("<div id=\"app\"></div>"), "{index}");
    for route in ["/map", "/policy/rulesets/shop-prod", "/dashboard?x=1"] {
        let (status, ty, body) = s.call(Method::GET, route, None, None).await;
        assert_eq!(status, StatusCode::OK, "{route}");
        assert!(ty.starts_with("text/html"), "{route}: {ty}");
        assert_eq!(body, index, "{route} serves the app");
    }
    // The built script index.html loads is served as JavaScript.
    let script = index
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("index.html loads a script");
    assert!(script.starts_with("/assets/"), "{script}");
    let (status, ty, js) = s.call(Method::GET, script, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ty.starts_with("text/javascript"), "{ty}");
    assert!(js.len() > 10_000, "the bundle is {} bytes", js.len());
    // A build file that does not exist is a 404, not the app.
    let (status, _, _) = s.call(Method::GET, "/assets/gone.js", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_paths_keep_their_json_errors() {
    let s = Server::new();
    for (method, path) in [
        (Method::GET, "/api/v1/nothing-here"),
        (Method::GET, "/api/v2/workloads"),
        (Method::GET, "/api"),
        (Method::POST, "/map"),
        (Method::DELETE, "/"),
    ] {
        let (status, ty, body) = s.call(method.clone(), path, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert!(ty.starts_with("application/json"), "{method} {path}: {ty}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{method} {path}: {v}");
    }
    // Health and metrics keep their plain text.
    let (status, _, body) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, _) = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "metrics need a token");
    let (status, _, body) = s.call(Method::GET, "/metrics", Some(&s.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("bulkhead_workloads"));
}

#[tokio::test]
async fn whoami_names_the_token_its_role_and_scope() {
    let s = Server::new();
    let (status, _, body) = s.call(Method::GET, "/api/v1/whoami", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = s
        .call(Method::GET, "/api/v1/whoami", Some(&s.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "admin");
    assert_eq!(v["name"], "initial admin");
    assert_eq!(v["scope"], Value::Null);

    let (status, _, body) = s
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&s.admin),
            Some(json!({"name": "payments team", "role": "app_owner", "scope": "app=payments"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let owner: Value = serde_json::from_str(&body).unwrap();
    let (status, _, body) = s
        .call(Method::GET, "/api/v1/whoami", owner["token"].as_str(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "app_owner");
    assert_eq!(v["name"], "payments team");
    assert_eq!(v["scope"], "app=payments");
}
