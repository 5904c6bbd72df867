//! E-mail against a real SMTP conversation: a small relay on loopback that records what
//! it is given (or refuses a recipient), so the test sees the message as a relay would.

use std::sync::{Arc, Mutex};

use bulkhead_alerts::Mailer;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Default, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    data: String,
}

/// Serves one SMTP session; refuses `RCPT TO` for addresses containing `refuse`.
async fn relay() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let mut msg = Received::default();
                w.write_all(b"220 test relay\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-test relay\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM") {
                        msg.from = line[10..].trim().to_string();
                        b"250 ok\r\n"
                    } else if upper.starts_with("RCPT TO") {
                        if line.contains("refuse") {
                            b"550 no such user\r\n"
                        } else {
                            msg.to.push(line[8..].trim().to_string());
                            b"250 ok\r\n"
                        }
                    } else if upper == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            msg.data.push_str(&l);
                            msg.data.push('\n');
                        }
                        sink.lock().unwrap().push(msg.clone());
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    w.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (addr, got)
}

#[tokio::test]
async fn a_message_reaches_the_relay_with_its_recipients_and_subject() {
    let (addr, got) = relay().await;
    let mailer = Mailer::new(&addr, "bulkhead@example.com").unwrap();
    mailer
        .send(
            &["owner@example.com".into(), "team@example.com".into()],
            "payments: enforcement in 14 days",
            "Enforcement of app=payments starts on 2026-12-06.",
        )
        .await
        .unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert!(m.from.contains("bulkhead@example.com"), "{m:?}");
    assert_eq!(m.to.len(), 2, "{m:?}");
    assert!(
        m.data.contains("Subject: payments: enforcement in 14 days"),
        "{}",
        m.data
    );
    assert!(m.data.contains("starts on 2026-12-06"), "{}", m.data);
}

#[tokio::test]
async fn a_refused_recipient_is_an_error() {
    let (addr, got) = relay().await;
    let mailer = Mailer::new(&addr, "bulkhead@example.com").unwrap();
    let err = mailer
        .send(&["refuse@example.com".into()], "s", "b")
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(got.lock().unwrap().is_empty());
}

#[test]
fn bad_configuration_is_named() {
    assert!(Mailer::new("no-port", "a@example.com").is_err());
    assert!(Mailer::new("127.0.0.1:25", "not an address").is_err());
}
