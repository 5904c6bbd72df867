use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;

use crate::error::{Failure, with_retries};
use crate::timefmt::{now_ms, rfc3339_millis};
use crate::{AlertError, AlertEvent, Delivery, RetryPolicy};

/// Facility local0: sites route Bulkhead's messages by it.
const FACILITY: u8 = 16;
/// `bulkhead@32473`: 32473 is the private enterprise number RFC 5612 sets aside for
/// examples, used until the project has its own.
const SD_ID: &str = "bulkhead@32473";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message (RFC 5426).
    Udp,
    /// Octet-counting framing (RFC 6587 §3.4.1: `LEN SP MSG`), one connection kept open.
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// MSG is the title; the event's fields are in the structured data.
    Rfc5424,
    /// MSG is a CEF record (see [`format_cef`]); the structured data is sent as well.
    Cef,
}

/// Sends events as RFC 5424 syslog messages to one collector.
pub struct SyslogSink {
    name: String,
    addr: String,
    transport: Transport,
    format: SyslogFormat,
    app_name: String,
    hostname: String,
    retry: RetryPolicy,
    timeout: Duration,
    tcp: Mutex<Option<TcpStream>>,
    udp: Mutex<Option<UdpSocket>>,
}

impl fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyslogSink")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("transport", &self.transport)
            .field("format", &self.format)
            .field("app_name", &self.app_name)
            .field("hostname", &self.hostname)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    /// `addr` is `host:port`, resolved on every (re)connection so that a collector
    /// that moves is followed. The hostname defaults to the kernel's.
    pub fn new(addr: impl Into<String>, transport: Transport, format: SyslogFormat) -> Self {
        let addr = addr.into();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        SyslogSink {
            name: format!(
                "syslog {}://{addr}",
                match transport {
                    Transport::Udp => "udp",
                    Transport::Tcp => "tcp",
                }
            ),
            addr,
            transport,
            format,
            app_name: "bulkhead".to_owned(),
            hostname,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            tcp: Mutex::new(None),
            udp: Mutex::new(None),
        }
    }

    pub fn with_app_name(mut self, app_name: impl Into<String>) -> Self {
        self.app_name = app_name.into();
        self
    }

    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The limit for one attempt: resolve, connect and write.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message as it goes on the wire, without the TCP length prefix.
    pub fn format_message(&self, event: &AlertEvent, now_ms: i64) -> String {
        let pri = FACILITY * 8 + event.severity.syslog_code();
        let mut out = format!(
            "<{pri}>1 {} {} {} {} {} ",
            rfc3339_millis(now_ms),
            header_field(&self.hostname, 255),
            header_field(&self.app_name, 48),
            std::process::id(),
            header_field(&event.kind, 32),
        );
        push_sd_element(&mut out, event);
        // MSG without a BOM is MSG-ANY in RFC 5424; many collectors print a BOM as
        // garbage, so none is sent.
        let msg = match self.format {
            SyslogFormat::Rfc5424 => one_line(&event.title),
            SyslogFormat::Cef => format_cef(event, now_ms),
        };
        if !msg.is_empty() {
            out.push(' ');
            out.push_str(&msg);
        }
        out
    }

    /// Delivers one event, reconnecting and retrying on errors.
    pub async fn deliver(&self, event: &AlertEvent) -> Delivery {
        let message = self.format_message(event, now_ms());
        let message = message.as_bytes();
        let framed = match self.transport {
            Transport::Udp => Vec::new(),
            Transport::Tcp => {
                let mut f = format!("{} ", message.len()).into_bytes();
                f.extend_from_slice(message);
                f
            }
        };
        let framed = &framed;
        with_retries(&self.retry, move || async move {
            let attempt = async {
                match self.transport {
                    Transport::Udp => self.send_udp(message).await,
                    Transport::Tcp => self.send_tcp(framed).await,
                }
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(r) => r.map_err(Failure::retry),
                Err(_) => {
                    // A write cut off halfway leaves the stream mid-frame.
                    *self.tcp.lock().await = None;
                    Err(Failure::retry(AlertError::Timeout {
                        addr: self.addr.clone(),
                        timeout: self.timeout,
                    }))
                }
            }
        })
        .await
    }

    async fn resolve(&self) -> Result<SocketAddr, AlertError> {
        let resolve_error = |reason: String| AlertError::Resolve {
            addr: self.addr.clone(),
            reason,
        };
        tokio::net::lookup_host(self.addr.as_str())
            .await
            .map_err(|e| resolve_error(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_error("no address".to_owned()))
    }

    async fn send_udp(&self, message: &[u8]) -> Result<(), AlertError> {
        let target = self.resolve().await?;
        let io_error = |source| AlertError::Io {
            addr: target.to_string(),
            source,
        };
        let mut socket = self.udp.lock().await;
        let family_matches = socket
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .is_some_and(|local| local.is_ipv4() == target.is_ipv4());
        if !family_matches {
            let any: SocketAddr = if target.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            *socket = Some(UdpSocket::bind(any).await.map_err(io_error)?);
        }
        let Some(socket) = socket.as_ref() else {
            unreachable!("bound above")
        };
        let sent = socket.send_to(message, target).await.map_err(io_error)?;
        if sent != message.len() {
            return Err(io_error(io::ErrorKind::WriteZero.into()));
        }
        Ok(())
    }

    async fn send_tcp(&self, frame: &[u8]) -> Result<(), AlertError> {
        let mut conn = self.tcp.lock().await;
        if conn.as_ref().is_some_and(peer_closed) {
            *conn = None;
        }
        let stream = match conn.as_mut() {
            Some(stream) => stream,
            None => {
                let target = self.resolve().await?;
                let stream =
                    TcpStream::connect(target)
                        .await
                        .map_err(|source| AlertError::Connect {
                            addr: target.to_string(),
                            source,
                        })?;
                let _ = stream.set_nodelay(true);
                conn.insert(stream)
            }
        };
        if let Err(source) = stream.write_all(frame).await {
            *conn = None;
            return Err(AlertError::Io {
                addr: self.addr.clone(),
                source,
            });
        }
        Ok(())
    }
}

/// Whether the collector has closed its end. Collectors never talk back, so a readable
/// socket means EOF or an error; noticing it before writing keeps the next message
/// from vanishing into a half-closed connection, which TCP would accept silently.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    for _ in 0..16 {
        match stream.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

fn push_sd_element(out: &mut String, e: &AlertEvent) {
    out.push('[');
    out.push_str(SD_ID);
    let mut param = |name: &str, value: &str| {
        let _ = write!(out, " {name}=\"");
        escape_sd_value(out, value);
        out.push('"');
    };
    param("id", &e.id.to_string());
    param("kind", &e.kind);
    param("severity", e.severity.as_str());
    param("key", &e.key);
    param("count", &e.count.to_string());
    param("state", &e.state);
    if let Some(g) = &e.src_group {
        param("src_group", g);
    }
    if let Some(g) = &e.dst_group {
        param("dst_group", g);
    }
    if let Some(p) = e.proto {
        param("proto", &p.to_string());
    }
    if let Some(p) = e.port {
        param("port", &p.to_string());
    }
    param("first_seen", &rfc3339_millis(e.first_seen_ms));
    param("last_seen", &rfc3339_millis(e.last_seen_ms));
    out.push(']');
}

/// RFC 5424 §6.3.3: inside a PARAM-VALUE, `"`, `\` and `]` are escaped with `\`.
fn escape_sd_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// HOSTNAME, APP-NAME and MSGID are printable ASCII without spaces, bounded, and
/// `-` when empty.
fn header_field(value: &str, max: usize) -> String {
    let clean: String = value
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if clean.is_empty() {
        "-".to_owned()
    } else {
        clean
    }
}

/// Line breaks inside MSG confuse collectors that split on them despite framing.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The event as one CEF record:
/// `CEF:0|Bulkhead|Bulkhead|VERSION|kind|title|severity|extension`.
///
/// Header fields escape `\` and `|`; extension values escape `\` and `=` and encode
/// line breaks as `\n` / `\r` (a `|` needs no escape there, per the CEF spec).
pub fn format_cef(e: &AlertEvent, now_ms: i64) -> String {
    let mut out = String::from("CEF:0|Bulkhead|Bulkhead|");
    for field in [env!("CARGO_PKG_VERSION"), &e.kind, &e.title] {
        escape_cef_header(&mut out, field);
        out.push('|');
    }
    let _ = write!(out, "{}|", e.severity.cef_severity());

    let mut first = true;
    let mut ext = |key: &str, value: &str| {
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(key);
        out.push('=');
        escape_cef_extension(&mut out, value);
    };
    ext("rt", &now_ms.to_string());
    ext("externalId", &e.id.to_string());
    ext("cnt", &e.count.to_string());
    ext("start", &e.first_seen_ms.to_string());
    ext("end", &e.last_seen_ms.to_string());
    if let Some(p) = e.proto {
        ext("proto", &proto_name(p));
    }
    if let Some(p) = e.port {
        ext("dpt", &p.to_string());
    }
    ext("cs1Label", "dedupKey");
    ext("cs1", &e.key);
    ext("cs2Label", "state");
    ext("cs2", &e.state);
    if let Some(g) = &e.src_group {
        ext("cs3Label", "srcGroup");
        ext("cs3", g);
    }
    if let Some(g) = &e.dst_group {
        ext("cs4Label", "dstGroup");
        ext("cs4", g);
    }
    let has_details = match &e.details {
        serde_json::Value::Null => false,
        serde_json::Value::Object(m) => !m.is_empty(),
        _ => true,
    };
    if has_details {
        ext("cs5Label", "details");
        ext("cs5", &e.details.to_string());
    }
    out
}

fn escape_cef_header(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

fn escape_cef_extension(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".to_owned(),
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        58 => "ICMPv6".to_owned(),
        132 => "SCTP".to_owned(),
        p => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;

    fn event() -> AlertEvent {
        AlertEvent {
            id: 7,
            kind: "blocked".into(),
            severity: Severity::Critical,
            title: "web -> db".into(),
            key: "k".into(),
            src_group: None,
            dst_group: None,
            proto: Some(6),
            port: Some(5432),
            count: 3,
            first_seen_ms: 0,
            last_seen_ms: 1000,
            state: "open".into(),
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn escapes() {
        let mut s = String::new();
        escape_sd_value(&mut s, r#"a"b\c]d=e|f"#);
        assert_eq!(s, r#"a\"b\\c\]d=e|f"#);
        let mut s = String::new();
        escape_cef_header(&mut s, "a|b\\c=d\ne");
        assert_eq!(s, r"a\|b\\c=d e");
        let mut s = String::new();
        escape_cef_extension(&mut s, "a|b\\c=d\ne");
        assert_eq!(s, r"a|b\\c\=d\ne");
    }

    #[test]
    fn rfc5424_layout() {
        let sink = SyslogSink::new("127.0.0.1:514", Transport::Udp, SyslogFormat::Rfc5424)
            .with_hostname("host one")
            .with_app_name("");
        let msg = sink.format_message(&event(), 1_700_000_000_123);
        let expected = format!(
            "<130>1 2023-11-14T22:13:20.123Z host_one - {} blocked [bulkhead@32473 id=\"7\" \
             kind=\"blocked\" severity=\"critical\" key=\"k\" count=\"3\" state=\"open\" \
             proto=\"6\" port=\"5432\" first_seen=\"1970-01-01T00:00:00.000Z\" \
             last_seen=\"1970-01-01T00:00:01.000Z\"] web -> db",
            std::process::id()
        );
        assert_eq!(msg, expected);
    }

    #[test]
    fn cef_layout() {
        let cef = format_cef(&event(), 5);
        assert_eq!(
            cef,
            format!(
                "CEF:0|Bulkhead|Bulkhead|{}|blocked|web -> db|9|rt=5 externalId=7 cnt=3 \
                 start=0 end=1000 proto=TCP dpt=5432 cs1Label=dedupKey cs1=k cs2Label=state \
                 cs2=open",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
