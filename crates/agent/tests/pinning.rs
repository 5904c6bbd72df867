//! The agent trusts exactly the CA it was given the fingerprint of: a TLS server on
//! 127.0.0.1 whose CA has that fingerprint is talked to; the same server with any
//! other pin is refused before a byte of the request is sent.

use bulkhead_agent::client::Client;
use bulkhead_testkit::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every connection's first request with `{"ok":true}` and counts the requests.
async fn server(pki: &TestPki) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                if tls.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = br#"{"ok":true}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, requests)
}

#[tokio::test]
async fn only_the_pinned_ca_is_trusted() {
    let pki = TestPki::for_loopback();
    let (url, requests) = server(&pki).await;

    let pinned = Client::new(&url, &pki.ca_fingerprint).unwrap();
    let v: serde_json::Value = pinned
        .json(reqwest::Method::GET, "/api/v1/agent/policy", None::<&()>)
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"ok": true}));
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Another CA's fingerprint: a man in the middle with a certificate of its own.
    let other = TestPki::for_loopback();
    let wrong = Client::new(&url, &other.ca_fingerprint).unwrap();
    let err = wrong
        .json::<serde_json::Value>(reqwest::Method::GET, "/api/v1/agent/policy", None::<&()>)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pinned CA"), "{err}");
    assert!(!err.is_refusal(), "a network problem, retried: {err}");
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "nothing sent to the unpinned server"
    );
}

#[tokio::test]
async fn a_list_of_servers_fails_over_to_one_that_answers() {
    let pki = TestPki::for_loopback();
    let (url, requests) = server(&pki).await;
    // A replica that is down: a loopback port nobody listens on.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("https://{}", down.local_addr().unwrap());
    drop(down);

    let client = Client::new(&format!("{down_url},{url}"), &pki.ca_fingerprint).unwrap();
    assert_eq!(client.authority(), down_url.trim_start_matches("https://"));
    let v: serde_json::Value = client
        .json(reqwest::Method::GET, "/api/v1/agent/policy", None::<&()>)
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({"ok": true}));
    assert_eq!(
        client.authority(),
        url.trim_start_matches("https://"),
        "the one that answered is asked first from now on"
    );
    client
        .json::<serde_json::Value>(reqwest::Method::GET, "/api/v1/agent/policy", None::<&()>)
        .await
        .unwrap();
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A pin the server does not match is not a reason to try the next one: refused.
    let other = TestPki::for_loopback();
    let wrong = Client::new(&format!("{url},{down_url}"), &other.ca_fingerprint).unwrap();
    let err = wrong
        .json::<serde_json::Value>(reqwest::Method::GET, "/api/v1/agent/policy", None::<&()>)
        .await
        .unwrap_err();
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "{err}"
    );
}
