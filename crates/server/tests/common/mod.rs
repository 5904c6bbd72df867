//! The API through the real router and stores, as the integration tests call it: a
//! fresh data directory, the first admin token, one request at a time.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bulkhead_server::AppState;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct Api {
    pub state: AppState,
    _dir: tempfile::TempDir,
    pub admin: String,
}

impl Api {
    pub fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let state = bulkhead_server::open(dir.path()).unwrap();
        let admin = bulkhead_server::bootstrap_admin(&state)
            .unwrap()
            .expect("first start makes a token");
        assert!(
            bulkhead_server::bootstrap_admin(&state).unwrap().is_none(),
            "only on first start"
        );
        Api {
            state,
            _dir: dir,
            admin,
        }
    }

    /// The server restarted: its state dropped and opened again on the same data
    /// directory, with the same admin token.
    pub fn restart(self) -> Api {
        let Api { state, _dir, admin } = self;
        drop(state);
        let state = bulkhead_server::open(_dir.path()).unwrap();
        Api { state, _dir, admin }
    }

    /// One request, as from 10.0.0.13 (what the audit log and the agent API see as the
    /// caller's address); the body parsed as JSON, or as a string when it is not.
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
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
        let peer: SocketAddr = "10.0.0.13:40000".parse().unwrap();
        // As the listener does: the peer's address rides in the request, so every layer
        // (the refusal guard included) sees it.
        let mut req = req;
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        // Agent routes live on the agent listener, everything else on the API listener.
        let app = if path.starts_with("/api/v1/agent/") {
            bulkhead_server::agent_router(self.state.clone())
        } else {
            bulkhead_server::router(self.state.clone())
        };
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    /// A call that must succeed; its body.
    pub async fn ok(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(Some(token), method, path, body).await;
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }

    /// As [`Api::ok`], as the first admin.
    pub async fn admin_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.ok(&self.admin.clone(), method, path, body).await
    }

    /// An enrollment, as `bulkhead agent` sends it, on the agent listener.
    pub async fn enroll_host(
        &self,
        key: &str,
        host: bulkhead_api::HostInfo,
    ) -> (StatusCode, Value) {
        let req = bulkhead_api::EnrollRequest {
            pairing_key: key.into(),
            host,
        };
        self.call(
            None,
            Method::POST,
            "/api/v1/agent/enroll",
            Some(serde_json::to_value(&req).unwrap()),
        )
        .await
    }
}

/// A host's inventory as an agent reports it: one interface with these addresses
/// (`10.0.0.13/24` form).
pub fn host(hostname: &str, addresses: &[&str]) -> bulkhead_api::HostInfo {
    bulkhead_api::HostInfo {
        hostname: hostname.into(),
        os_name: "debian".into(),
        os_version: "12".into(),
        kernel: "6.1.0".into(),
        machine_id: None,
        interfaces: vec![bulkhead_api::Interface {
            name: "eth0".into(),
            mac: None,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }],
        listening: vec![],
    }
}
