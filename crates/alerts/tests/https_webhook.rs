//! Webhooks over https, as chat and incident tools require: a TLS receiver on
//! 127.0.0.1 with a certificate from a CA made here. Trusted, the signed event arrives;
//! not trusted, the event is dead-lettered at once (a certificate will not become
//! valid by retrying) and nothing is sent in clear text.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_alerts::{AlertEvent, RetryPolicy, Severity, WebhookSink, verify_signature};
use bulkhead_testkit::TestPki;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One https receiver answering 200 to every POST; returns its URL and the bodies and
/// headers it got.
async fn receiver(
    pki: &TestPki,
) -> (
    String,
    Arc<std::sync::Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook/SECRETPATH", listener.local_addr().unwrap());
    let seen: Arc<std::sync::Mutex<Vec<_>>> = Arc::default();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // A client that does not trust us fails the handshake: nothing to read.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut stream = BufReader::new(tls);
                let mut headers = Vec::new();
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                loop {
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let (k, v) = l.split_once(':').unwrap();
                    headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap();
                let mut body = vec![0; len];
                stream.read_exact(&mut body).await.unwrap();
                record.lock().unwrap().push((headers, body));
                let mut tls = stream.into_inner();
                tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, seen)
}

fn event() -> AlertEvent {
    AlertEvent {
        id: 7,
        kind: "blocked".into(),
        severity: Severity::Critical,
        title: "blocked: app=web -> app=db on tcp/5432".into(),
        key: "k".into(),
        src_group: None,
        dst_group: None,
        proto: Some(6),
        port: Some(5432),
        count: 1,
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_000_000,
        state: "open".into(),
        details: serde_json::json!({}),
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    }
}

#[tokio::test]
async fn a_webhook_over_https_with_a_trusted_ca_is_delivered_signed() {
    let pki = TestPki::for_loopback();
    let (url, seen) = receiver(&pki).await;
    let sink = WebhookSink::new(&url, "s3cret")
        .unwrap()
        .with_root_certificates(pki.ca_pem.as_bytes())
        .unwrap()
        .with_retry(retry());
    let d = sink.deliver(&event()).await;
    assert!(d.is_delivered(), "{:?}", d.result);
    assert_eq!(d.attempts, 1);
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert!(verify_signature(
        b"s3cret",
        &h("x-bulkhead-timestamp"),
        body,
        &h("x-bulkhead-signature")
    ));
    let received: AlertEvent = serde_json::from_slice(body).unwrap();
    assert_eq!(received, event());
}

#[tokio::test]
async fn an_untrusted_certificate_is_dead_lettered_at_once() {
    let pki = TestPki::for_loopback();
    let (url, seen) = receiver(&pki).await;
    let sink = WebhookSink::new(&url, "s3cret")
        .unwrap()
        .with_retry(retry());
    let d = sink.deliver(&event()).await;
    assert!(!d.is_delivered());
    assert_eq!(d.attempts, 1, "not retried: {:?}", d.result);
    let message = d.result.unwrap_err().to_string();
    assert!(!message.contains("SECRETPATH"), "{message}");
    assert!(seen.lock().unwrap().is_empty());
}
