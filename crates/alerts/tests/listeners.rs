//! Sinks against real listeners on 127.0.0.1: a hand-written HTTP/1.1 server, UDP and
//! TCP syslog receivers. Assertions are on counts and content, never on durations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_alerts::{
    AlertEvent, BoxFuture, Delivery, Dispatcher, RetryPolicy, Severity, Sink, SinkMetrics,
    SyslogFormat, SyslogSink, Transport, WebhookSink, verify_signature,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc, oneshot};

/// Bounds every wait on a listener, so that a broken sink fails the test instead of
/// hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    }
}

fn event(id: u64) -> AlertEvent {
    AlertEvent {
        id,
        kind: "potentially_blocked".into(),
        severity: Severity::Warning,
        title: "app=web env=prod -> app=db env=prod on tcp/5432".into(),
        key: "web|db|6|5432".into(),
        src_group: Some("app=web env=prod".into()),
        dst_group: Some("app=db env=prod".into()),
        proto: Some(6),
        port: Some(5432),
        count: 12,
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_060_000,
        state: "open".into(),
        details: serde_json::json!({"rule": "default", "flows": [1, 2]}),
    }
}

/// A title and key full of the characters each format must escape.
fn nasty_event(id: u64) -> AlertEvent {
    AlertEvent {
        kind: "tamper".into(),
        severity: Severity::Critical,
        title: r#"rule "x" | a\b = c ] d"#.into(),
        key: r#"k"e\y]=|"#.into(),
        src_group: Some("grp=a]b".into()),
        ..event(id)
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---- HTTP -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// Answers the n-th request with `statuses[n]` (the last one repeats) and records
/// every request it reads. With a secret it is a receiver that checks signatures, as
/// the README tells receivers to, and answers 401 to a bad one.
async fn http_server(
    statuses: Vec<u16>,
    secret: Option<&'static [u8]>,
) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/bulkhead?token=t",
        listener.local_addr().unwrap()
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = served.fetch_add(1, Ordering::SeqCst);
            let mut status = statuses[n.min(statuses.len() - 1)];
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let request = read_request(&mut stream).await;
                if let Some(secret) = secret {
                    let ts = request.header("x-bulkhead-timestamp");
                    let sig = request.header("x-bulkhead-signature");
                    if !verify_signature(secret, ts, &request.body, sig) {
                        status = 401;
                    }
                }
                record.lock().unwrap().push(request);
                let reply = format!(
                    "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let mut stream = stream.into_inner();
                stream.write_all(reply.as_bytes()).await.unwrap();
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, seen)
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> Request {
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap().to_owned();
    let path = parts.next().unwrap().to_owned();
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap();
        headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.unwrap();
    Request {
        method,
        path,
        headers,
        body,
    }
}

async fn deliver_via_dispatcher(sink: Arc<dyn Sink>, events: Vec<AlertEvent>) -> SinkMetrics {
    let dispatcher = Dispatcher::new(vec![sink], 16);
    for e in events {
        assert!(dispatcher.send(e));
    }
    within("the dispatcher to drain", dispatcher.shutdown()).await;
    dispatcher.metrics().remove(0)
}

#[tokio::test]
async fn webhook_is_signed_and_verifiable() {
    let (url, seen) = http_server(vec![200], Some(b"s3cret")).await;
    let sink = WebhookSink::new(&url, "s3cret")
        .unwrap()
        .with_retry(fast_retry(5));
    let sent = event(1);
    let m = deliver_via_dispatcher(Arc::new(sink), vec![sent.clone()]).await;
    assert_eq!(
        (m.delivered, m.retried, m.dead_lettered, m.dropped),
        (1, 0, 0, 0)
    );

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/bulkhead?token=t");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-bulkhead-event"), "potentially_blocked");
    assert!(r.header("host").starts_with("127.0.0.1:"));
    let ts = r.header("x-bulkhead-timestamp");
    assert!(ts.parse::<u64>().unwrap() > 1_700_000_000);
    let sig = r.header("x-bulkhead-signature");
    assert!(sig.starts_with("sha256="));
    assert!(verify_signature(b"s3cret", ts, &r.body, sig));
    assert!(!verify_signature(b"wrong", ts, &r.body, sig));
    let mut tampered = r.body.clone();
    tampered[0] = b' ';
    assert!(!verify_signature(b"s3cret", ts, &tampered, sig));
    let other_ts = (ts.parse::<u64>().unwrap() + 1).to_string();
    assert!(!verify_signature(b"s3cret", &other_ts, &r.body, sig));

    let received: AlertEvent = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(received, sent);
}

#[tokio::test]
async fn webhook_with_the_wrong_secret_is_refused_and_not_retried() {
    let (url, seen) = http_server(vec![200], Some(b"s3cret")).await;
    let sink = WebhookSink::new(&url, "guess")
        .unwrap()
        .with_retry(fast_retry(5));
    let m = deliver_via_dispatcher(Arc::new(sink), vec![event(1)]).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!((m.delivered, m.retried, m.dead_lettered), (0, 0, 1));
    assert!(m.last_error.unwrap().contains("401"));
}

#[tokio::test]
async fn webhook_retries_5xx_then_delivers() {
    let (url, seen) = http_server(vec![500, 500, 200], None).await;
    let sink = WebhookSink::new(&url, "k")
        .unwrap()
        .with_retry(fast_retry(5));
    let m = deliver_via_dispatcher(Arc::new(sink), vec![event(1)]).await;
    assert_eq!(seen.lock().unwrap().len(), 3, "attempts");
    assert_eq!((m.delivered, m.retried, m.dead_lettered), (1, 2, 0));
    for r in seen.lock().unwrap().iter() {
        let ts = r.header("x-bulkhead-timestamp");
        assert!(verify_signature(
            b"k",
            ts,
            &r.body,
            r.header("x-bulkhead-signature")
        ));
    }
}

#[tokio::test]
async fn webhook_retries_429() {
    let (url, seen) = http_server(vec![429, 200], None).await;
    let sink = WebhookSink::new(&url, "k")
        .unwrap()
        .with_retry(fast_retry(5));
    let m = deliver_via_dispatcher(Arc::new(sink), vec![event(1)]).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!((m.delivered, m.retried, m.dead_lettered), (1, 1, 0));
}

#[tokio::test]
async fn webhook_dead_letters_after_max_attempts() {
    let (url, seen) = http_server(vec![500], None).await;
    let sink = WebhookSink::new(&url, "k")
        .unwrap()
        .with_retry(fast_retry(4));
    let m = deliver_via_dispatcher(Arc::new(sink), vec![event(1)]).await;
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!((m.delivered, m.retried, m.dead_lettered), (0, 3, 1));
    assert!(m.last_error.unwrap().contains("500"));
}

#[tokio::test]
async fn webhook_does_not_retry_400() {
    let (url, seen) = http_server(vec![400, 200], None).await;
    let sink = WebhookSink::new(&url, "k")
        .unwrap()
        .with_retry(fast_retry(5));
    let m = deliver_via_dispatcher(Arc::new(sink), vec![event(1)]).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!((m.delivered, m.retried, m.dead_lettered), (0, 0, 1));
}

#[tokio::test]
async fn webhook_retries_refused_connections() {
    // A port that was just free: nothing listens there any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = WebhookSink::new(&format!("http://127.0.0.1:{port}/"), "k")
        .unwrap()
        .with_retry(fast_retry(3));
    let d = within("the delivery", sink.deliver(&event(1))).await;
    assert_eq!(d.attempts, 3);
    assert!(d.result.is_err());
}

// ---- syslog parsing ------------------------------------------------------------------

#[derive(Debug)]
struct Syslog {
    pri: u8,
    version: u8,
    timestamp: String,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: String,
}

impl Syslog {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A strict reading of RFC 5424's grammar for one message with one SD element.
fn parse_rfc5424(text: &str) -> Syslog {
    let rest = text.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once('>').unwrap();
    let (version, rest) = rest.split_once(' ').unwrap();
    let mut fields = rest.splitn(6, ' ');
    let mut next = || fields.next().unwrap().to_owned();
    let (timestamp, hostname, app_name, procid, msgid) = (next(), next(), next(), next(), next());
    let sd = next();

    let mut chars = sd.chars();
    assert_eq!(chars.next(), Some('['));
    let mut sd_id = String::new();
    let mut params = Vec::new();
    let mut c = chars.next().unwrap();
    while c != ' ' && c != ']' {
        sd_id.push(c);
        c = chars.next().unwrap();
    }
    while c == ' ' {
        let mut name = String::new();
        loop {
            c = chars.next().unwrap();
            if c == '=' {
                break;
            }
            assert!(
                c.is_ascii_graphic() && c != '"' && c != ']',
                "{c:?} in a name"
            );
            name.push(c);
        }
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        loop {
            match chars.next().unwrap() {
                '\\' => {
                    let escaped = chars.next().unwrap();
                    assert!(matches!(escaped, '"' | '\\' | ']'), "needless escape");
                    value.push(escaped);
                }
                '"' => break,
                ']' => panic!("unescaped ] in {value:?}"),
                other => value.push(other),
            }
        }
        params.push((name, value));
        c = chars.next().unwrap();
    }
    assert_eq!(c, ']');
    let rest: String = chars.collect();
    let msg = rest.strip_prefix(' ').unwrap_or(&rest).to_owned();
    Syslog {
        pri: pri.parse().unwrap(),
        version: version.parse().unwrap(),
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        sd_id,
        params,
        msg,
    }
}

struct Cef {
    header: Vec<String>,
    ext: BTreeMap<String, String>,
}

fn parse_cef(text: &str) -> Cef {
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars();
    while header.len() < 7 {
        match chars.next().unwrap() {
            '\\' => field.push(chars.next().unwrap()),
            '|' => header.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    // Extension: key=value pairs; a value runs until the space before the next
    // unescaped `key=`.
    let ext_text: Vec<char> = chars.collect();
    let mut ext = BTreeMap::new();
    let mut i = 0;
    while i < ext_text.len() {
        let eq = (i..ext_text.len()).find(|&j| ext_text[j] == '=').unwrap();
        let key: String = ext_text[i..eq].iter().collect();
        let mut value = String::new();
        let mut j = eq + 1;
        while j < ext_text.len() {
            match ext_text[j] {
                '\\' => {
                    j += 1;
                    value.push(match ext_text[j] {
                        'n' => '\n',
                        'r' => '\r',
                        c => c,
                    });
                }
                '=' => panic!("unescaped = in the value of {key}"),
                ' ' if next_is_key(&ext_text[j + 1..]) => break,
                c => value.push(c),
            }
            j += 1;
        }
        ext.insert(key, value);
        i = j + 1;
    }
    Cef { header, ext }
}

fn next_is_key(rest: &[char]) -> bool {
    let word: String = rest
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    !word.is_empty() && rest.get(word.len()) == Some(&'=')
}

fn assert_common(m: &Syslog, e: &AlertEvent) {
    assert_eq!(m.version, 1);
    assert_eq!(m.pri, 16 * 8 + e.severity_code());
    assert!(
        m.timestamp.ends_with('Z') && m.timestamp.contains('T'),
        "{}",
        m.timestamp
    );
    assert_eq!(m.hostname, "sensor-1");
    assert_eq!(m.app_name, "bulkhead");
    assert_eq!(m.procid, std::process::id().to_string());
    assert_eq!(m.msgid, e.kind);
    assert_eq!(m.sd_id, "bulkhead@32473");
    assert_eq!(m.param("id"), Some(e.id.to_string().as_str()));
    assert_eq!(m.param("kind"), Some(e.kind.as_str()));
    assert_eq!(m.param("key"), Some(e.key.as_str()));
    assert_eq!(m.param("count"), Some(e.count.to_string().as_str()));
    assert_eq!(m.param("src_group"), e.src_group.as_deref());
    assert_eq!(m.param("port"), Some("5432"));
    assert_eq!(m.param("first_seen"), Some("2023-11-14T22:13:20.000Z"));
}

trait SeverityCode {
    fn severity_code(&self) -> u8;
}

impl SeverityCode for AlertEvent {
    fn severity_code(&self) -> u8 {
        match self.severity {
            Severity::Critical => 2,
            Severity::Warning => 4,
            Severity::Info => 6,
        }
    }
}

fn syslog_sink(addr: String, transport: Transport, format: SyslogFormat) -> SyslogSink {
    SyslogSink::new(addr, transport, format)
        .with_hostname("sensor-1")
        .with_retry(fast_retry(5))
}

// ---- syslog over UDP --------------------------------------------------------------

#[tokio::test]
async fn syslog_udp_rfc5424_escapes_structured_data() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let sink = syslog_sink(addr, Transport::Udp, SyslogFormat::Rfc5424);
    let events = vec![event(1), nasty_event(2)];
    let m = deliver_via_dispatcher(Arc::new(sink), events.clone()).await;
    assert_eq!((m.delivered, m.dead_lettered), (2, 0));

    for e in &events {
        let mut buf = vec![0; 65_536];
        let n = within("a datagram", socket.recv(&mut buf)).await.unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let m = parse_rfc5424(text);
        assert_common(&m, e);
        assert_eq!(m.msg, e.title);
    }
}

#[tokio::test]
async fn syslog_udp_wire_escaping_is_exact() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sink = syslog_sink(
        socket.local_addr().unwrap().to_string(),
        Transport::Udp,
        SyslogFormat::Rfc5424,
    );
    assert!(sink.deliver(&nasty_event(9)).await.is_delivered());
    let mut buf = vec![0; 65_536];
    let n = within("a datagram", socket.recv(&mut buf)).await.unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(text.starts_with("<130>1 "), "{text}");
    assert!(text.contains(r#" key="k\"e\\y\]=|" "#), "{text}");
    assert!(text.contains(r#" src_group="grp=a\]b" "#), "{text}");
}

#[tokio::test]
async fn syslog_udp_cef() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sink = syslog_sink(
        socket.local_addr().unwrap().to_string(),
        Transport::Udp,
        SyslogFormat::Cef,
    );
    let e = nasty_event(3);
    assert!(sink.deliver(&e).await.is_delivered());
    let mut buf = vec![0; 65_536];
    let n = within("a datagram", socket.recv(&mut buf)).await.unwrap();
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    let m = parse_rfc5424(text);
    assert_common(&m, &e);
    assert!(
        m.msg.starts_with(r#"CEF:0|Bulkhead|Bulkhead|"#),
        "{}",
        m.msg
    );
    assert!(
        m.msg.contains(r#"|tamper|rule "x" \| a\\b = c ] d|9|"#),
        "{}",
        m.msg
    );
    let cef = parse_cef(&m.msg);
    assert_eq!(cef.header[0], "CEF:0");
    assert_eq!(cef.header[4], "tamper");
    assert_eq!(cef.header[5], e.title);
    assert_eq!(cef.header[6], "9");
    assert_eq!(cef.ext["cs1Label"], "dedupKey");
    assert_eq!(cef.ext["cs1"], e.key);
    assert_eq!(cef.ext["cs3"], "grp=a]b");
    assert_eq!(cef.ext["externalId"], "3");
    assert_eq!(cef.ext["cnt"], "12");
    assert_eq!(cef.ext["proto"], "TCP");
    assert_eq!(cef.ext["dpt"], "5432");
    assert_eq!(cef.ext["start"], "1700000000000");
    let details: serde_json::Value = serde_json::from_str(&cef.ext["cs5"]).unwrap();
    assert_eq!(details, e.details);
}

// ---- syslog over TCP --------------------------------------------------------------

/// Reads one octet-counted frame (`LEN SP MSG`); `None` at a clean end of stream.
async fn read_frame(stream: &mut BufReader<TcpStream>) -> Option<String> {
    let mut len = Vec::new();
    if stream.read_until(b' ', &mut len).await.unwrap() == 0 {
        return None;
    }
    let len = std::str::from_utf8(&len).unwrap().trim_end();
    assert!(!len.starts_with('0'), "LEN has no leading zero");
    let len: usize = len.parse().unwrap();
    let mut msg = vec![0; len];
    stream.read_exact(&mut msg).await.unwrap();
    Some(String::from_utf8(msg).unwrap())
}

#[tokio::test]
async fn syslog_tcp_octet_counting_both_formats() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let plain = syslog_sink(addr.clone(), Transport::Tcp, SyslogFormat::Rfc5424);
    let cef = syslog_sink(addr, Transport::Tcp, SyslogFormat::Cef);

    let dispatcher = Dispatcher::new(vec![Arc::new(plain), Arc::new(cef)], 8);
    let events = [event(1), nasty_event(2)];
    for e in &events {
        assert!(dispatcher.send(e.clone()));
    }

    // One connection per sink, each carrying both events in order.
    let mut by_format = BTreeMap::new();
    for _ in 0..2 {
        let (stream, _) = within("a connection", listener.accept()).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut frames = Vec::new();
        for _ in 0..2 {
            frames.push(within("a frame", read_frame(&mut stream)).await.unwrap());
        }
        let is_cef = parse_rfc5424(&frames[0]).msg.starts_with("CEF:0|");
        by_format.insert(is_cef, frames);
    }
    within("the dispatcher to drain", dispatcher.shutdown()).await;
    for m in dispatcher.metrics() {
        assert_eq!(
            (m.delivered, m.retried, m.dead_lettered, m.dropped),
            (2, 0, 0, 0)
        );
    }

    for (is_cef, frames) in by_format {
        for (frame, e) in frames.iter().zip(&events) {
            let m = parse_rfc5424(frame);
            assert_common(&m, e);
            if is_cef {
                let cef = parse_cef(&m.msg);
                assert_eq!(cef.header[5], e.title);
                assert_eq!(cef.ext["cs1"], e.key);
            } else {
                assert_eq!(m.msg, e.title);
            }
        }
    }
}

#[tokio::test]
async fn syslog_tcp_reconnects_after_the_collector_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = syslog_sink(
        listener.local_addr().unwrap().to_string(),
        Transport::Tcp,
        SyslogFormat::Rfc5424,
    );
    let (closed_tx, closed_rx) = oneshot::channel();
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        // First connection: read one frame, then hang up, as a collector restarting
        // or dropping idle clients does.
        let (first, _) = listener.accept().await.unwrap();
        let mut first = BufReader::new(first);
        frames_tx
            .send((1, read_frame(&mut first).await.unwrap()))
            .unwrap();
        drop(first);
        closed_tx.send(()).unwrap();
        let (second, _) = listener.accept().await.unwrap();
        let mut second = BufReader::new(second);
        while let Some(frame) = read_frame(&mut second).await {
            frames_tx.send((2, frame)).unwrap();
        }
    });

    assert!(
        within("delivery", sink.deliver(&event(1)))
            .await
            .is_delivered()
    );
    let (conn, frame) = within("frame 1", frames_rx.recv()).await.unwrap();
    assert_eq!(conn, 1);
    assert_eq!(parse_rfc5424(&frame).param("id"), Some("1"));
    within("the hang-up", closed_rx).await.unwrap();

    let d = within("delivery", sink.deliver(&event(2))).await;
    assert!(d.is_delivered(), "{d:?}");
    let (conn, frame) = within("frame 2", frames_rx.recv()).await.unwrap();
    assert_eq!(conn, 2, "sent on a new connection");
    assert_eq!(parse_rfc5424(&frame).param("id"), Some("2"));
    drop(sink);
    within("the collector", collector).await.unwrap();
}

#[tokio::test]
async fn syslog_tcp_retries_until_the_collector_listens() {
    // Nothing listens at first: every attempt is refused and the event dead-letters.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = syslog_sink(
        format!("127.0.0.1:{port}"),
        Transport::Tcp,
        SyslogFormat::Rfc5424,
    )
    .with_retry(fast_retry(3));
    let d = within("delivery", sink.deliver(&event(1))).await;
    assert_eq!(d.attempts, 3);
    assert!(
        matches!(d.result, Err(bulkhead_alerts::AlertError::Connect { .. })),
        "{d:?}"
    );
}

// ---- dispatcher -------------------------------------------------------------------

/// A sink that reports when it starts an event and waits for permission to finish.
#[derive(Debug, Default)]
struct GatedSink {
    started: Notify,
    release: Notify,
}

impl Sink for GatedSink {
    fn name(&self) -> &str {
        "gated"
    }
    fn deliver<'a>(&'a self, _event: &'a AlertEvent) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            self.started.notify_one();
            self.release.notified().await;
            Delivery {
                attempts: 1,
                result: Ok(()),
            }
        })
    }
}

#[tokio::test]
async fn a_full_queue_drops_without_blocking_and_other_sinks_still_deliver() {
    let gated = Arc::new(GatedSink::default());
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp = syslog_sink(
        socket.local_addr().unwrap().to_string(),
        Transport::Udp,
        SyslogFormat::Rfc5424,
    );
    let dispatcher = Dispatcher::new(vec![gated.clone() as Arc<dyn Sink>, Arc::new(udp)], 1);

    assert!(dispatcher.send(event(1)));
    within("the first delivery to start", gated.started.notified()).await;
    // The gated sink holds event 1; its queue (capacity 1) takes event 2 and must
    // refuse event 3 at once.
    assert!(dispatcher.send(event(2)));
    let mut buf = vec![0; 65_536];
    for _ in 0..2 {
        within("a datagram", socket.recv(&mut buf)).await.unwrap();
    }
    assert!(!dispatcher.send(event(3)));
    let before = dispatcher.metrics();
    assert_eq!(before[0].dropped, 1);
    assert_eq!(before[0].queued, 1);

    gated.release.notify_one();
    within("the second delivery to start", gated.started.notified()).await;
    gated.release.notify_one();
    within("the dispatcher to drain", dispatcher.shutdown()).await;
    assert!(!dispatcher.send(event(4)), "closed after shutdown");

    let m = dispatcher.metrics();
    assert_eq!(m[0].sink, "gated");
    assert_eq!((m[0].delivered, m[0].dropped, m[0].queued), (2, 2, 0));
    assert_eq!(
        m[1].sink,
        format!("syslog udp://{}", socket.local_addr().unwrap())
    );
    assert_eq!(m[1].delivered, 3, "the udp sink got events 1-3");
    assert_eq!(m[1].dropped, 1, "event 4 came after shutdown");
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json[0]["dropped"], 2);
}

#[derive(Debug)]
struct PanickingSink;

impl Sink for PanickingSink {
    fn name(&self) -> &str {
        "panicky"
    }
    fn deliver<'a>(&'a self, event: &'a AlertEvent) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            assert!(event.id != 1, "sink bug");
            Delivery {
                attempts: 1,
                result: Ok(()),
            }
        })
    }
}

#[tokio::test]
async fn a_panicking_sink_loses_one_event_not_its_worker() {
    let m = deliver_via_dispatcher(Arc::new(PanickingSink), vec![event(1), event(2)]).await;
    assert_eq!((m.delivered, m.dead_lettered), (1, 1));
    assert_eq!(m.last_error.as_deref(), Some("the sink panicked"));
}
