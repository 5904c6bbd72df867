use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;

use crate::error::{Failure, with_retries};
use crate::{AlertError, AlertEvent, Delivery, RetryPolicy};

type HmacSha256 = Hmac<Sha256>;

const SIGNATURE_PREFIX: &str = "sha256=";

/// `url` with the password of its `user:password@` part replaced by `***`, for errors:
/// they end up in logs and terminals. Everything between the first `:` after the scheme
/// and the last `@` goes, so a password holding a raw `/`, `?` or `@` is hidden too (at
/// worst a URL with an `@` in its path loses a little more than its password).
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    match (rest.find(':'), rest.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => {
            format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &rest[..colon],
                &rest[at..]
            )
        }
        _ => url.to_owned(),
    }
}

/// POSTs each event as JSON to one URL, signed with HMAC-SHA256 (see the crate README).
///
/// One connection per attempt: alerts are rare enough that keeping connections alive
/// would buy nothing but stale-connection failures.
pub struct WebhookSink {
    name: String,
    url: String,
    host: String,
    port: u16,
    host_header: HeaderValue,
    path: String,
    secret: Vec<u8>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl WebhookSink {
    /// A sink for an `http://` URL. `https://` is refused: no TLS backend is built in
    /// yet, and silently sending alerts in clear text to an https URL would be worse.
    pub fn new(url: &str, secret: impl Into<Vec<u8>>) -> Result<Self, AlertError> {
        let invalid = |reason| AlertError::InvalidUrl {
            url: without_password(url),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a url"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported yet (no tls backend)")),
            _ => return Err(invalid("the scheme must be http")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid(
                "credentials in the url are not supported; use the secret",
            ));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("bad host"))?;
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(WebhookSink {
            // Chat and incident tools put the secret in the path: the name (shown in
            // metrics) tells two webhooks of one host apart by a digest of it.
            name: format!(
                "webhook {} #{}",
                authority.as_str(),
                &hex_digest(uri.path().as_bytes())[..8]
            ),
            url: url.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            host_header,
            path,
            secret: secret.into(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The limit for one attempt: connect, send, and the response's head.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name metrics use; by default `webhook HOST[:PORT] #DIGEST`, where the digest
    /// stands for the path (which, like the query, may hold a token).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Delivers one event, retrying connection errors, timeouts, 429 and 5xx.
    pub async fn deliver(&self, event: &AlertEvent) -> Delivery {
        let body = match serde_json::to_vec(event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return Delivery {
                    attempts: 1,
                    result: Err(e.into()),
                };
            }
        };
        let kind = header_token(&event.kind);
        let (body, kind) = (&body, &kind);
        with_retries(&self.retry, move || self.post(body, kind)).await
    }

    async fn post(&self, body: &Bytes, kind: &HeaderValue) -> Result<(), Failure> {
        let addr = || format!("{}:{}", self.host, self.port);
        match tokio::time::timeout(self.timeout, self.exchange(body, kind)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::retry(AlertError::Timeout {
                addr: addr(),
                timeout: self.timeout,
            })),
        }
    }

    async fn exchange(&self, body: &Bytes, kind: &HeaderValue) -> Result<(), Failure> {
        let addr = || format!("{}:{}", self.host, self.port);
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| {
                Failure::retry(AlertError::Connect {
                    addr: addr(),
                    source,
                })
            })?;
        let _ = stream.set_nodelay(true);
        let http = |source| {
            Failure::retry(AlertError::Http {
                addr: addr(),
                source,
            })
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // Signed per attempt, so a retry carries a fresh timestamp and passes a
        // receiver's replay window.
        let ts = unix_secs().to_string();
        let signature = sign(&self.secret, &ts, body);
        let request = Request::post(self.path.as_str())
            .header(HOST, self.host_header.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("bulkhead-alerts/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-bulkhead-event", kind.clone())
            .header("x-bulkhead-timestamp", ts)
            .header("x-bulkhead-signature", signature)
            .body(Full::new(body.clone()))
            .map_err(|_| {
                Failure::fatal(AlertError::InvalidUrl {
                    url: self.url.clone(),
                    reason: "cannot build a request for it",
                })
            })?;
        // The connection future does the I/O; it is polled only until the response
        // head arrives, and dropping it closes the socket. It may finish first when the
        // server answers and closes at once: the response is then already in hand.
        let mut conn = std::pin::pin!(conn);
        let mut exchange = std::pin::pin!(sender.send_request(request));
        let response = tokio::select! {
            r = &mut exchange => r,
            r = &mut conn => match r {
                Ok(()) => exchange.await,
                Err(e) => Err(e),
            },
        }
        .map_err(http)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let error = AlertError::Status {
            addr: addr(),
            status: status.as_u16(),
        };
        if status.is_server_error() || status.as_u16() == 429 {
            Err(Failure::retry(error))
        } else {
            Err(Failure::fatal(error))
        }
    }
}

/// The `X-Bulkhead-Signature` value for a body sent at `timestamp` (Unix seconds, as
/// sent in `X-Bulkhead-Timestamp`): `sha256=` and the lowercase hex HMAC-SHA256 of
/// `"<timestamp>.<body>"` keyed with the secret.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    let mut out = String::with_capacity(SIGNATURE_PREFIX.len() + 2 * tag.len());
    out.push_str(SIGNATURE_PREFIX);
    for b in tag.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Whether `header` (the `X-Bulkhead-Signature` value) signs `timestamp` and `body`
/// with `secret`. The comparison takes the same time wherever the tags differ.
/// Receivers should also reject old timestamps: see [`verify_signature_fresh`].
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .trim()
        .strip_prefix(SIGNATURE_PREFIX)
        .and_then(decode_hex)
    else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

/// [`verify_signature`], and the timestamp is within `tolerance` of `now_unix_secs`
/// either way, so that a captured request cannot be replayed later.
pub fn verify_signature_fresh(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    header: &str,
    now_unix_secs: i64,
    tolerance: Duration,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    now_unix_secs.abs_diff(ts) <= tolerance.unsigned_abs()
        && verify_signature(secret, timestamp, body, header)
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC hashes long keys and pads short ones: every length is valid.
        Err(_) => unreachable!("hmac accepts keys of any length"),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Event kinds are free text; a header can carry only visible ASCII.
fn header_token(kind: &str) -> HeaderValue {
    let clean: String = kind
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_errors_hide_the_password() {
        for (url, shown) in [
            ("http://u:pw@127.0.0.1/h", "http://u:***@127.0.0.1/h"),
            ("http://u:p/w?x@127.0.0.1:81/", "http://u:***@127.0.0.1:81/"),
            ("http://u:p@w@h/", "http://u:***@h/"),
            ("http://u@127.0.0.1:81/h", "http://u@127.0.0.1:81/h"),
            ("http://127.0.0.1:81/h?a=b", "http://127.0.0.1:81/h?a=b"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(without_password(url), shown);
        }
        let e = WebhookSink::new("http://u:s3cret@127.0.0.1/h", "s").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("u:***@127.0.0.1"), "{e}");
    }

    #[test]
    fn signature_matches_openssl() {
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let sig = sign(b"s3cret", "1700000000", br#"{"a":1}"#);
        assert_eq!(
            sig,
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn verify_rejects_tampering_and_garbage() {
        let sig = sign(b"k", "1", b"body");
        assert!(verify_signature(b"k", "1", b"body", &sig));
        assert!(verify_signature(b"k", "1", b"body", &format!(" {sig} ")));
        assert!(verify_signature(
            b"k",
            "1",
            b"body",
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!verify_signature(b"k", "2", b"body", &sig));
        assert!(!verify_signature(b"k", "1", b"bodY", &sig));
        assert!(!verify_signature(b"K", "1", b"body", &sig));
        assert!(!verify_signature(b"k", "1", b"body", &sig[..sig.len() - 2]));
        assert!(!verify_signature(b"k", "1", b"body", &sig[..sig.len() - 1]));
        assert!(!verify_signature(
            b"k",
            "1",
            b"body",
            sig.trim_start_matches("sha256=")
        ));
        assert!(!verify_signature(b"k", "1", b"body", "sha256=zz"));
        assert!(!verify_signature(b"k", "1", b"body", ""));
    }

    #[test]
    fn freshness_window() {
        let sig = sign(b"k", "1000", b"x");
        let five_min = Duration::from_secs(300);
        assert!(verify_signature_fresh(
            b"k", "1000", b"x", &sig, 1000, five_min
        ));
        assert!(verify_signature_fresh(
            b"k", "1000", b"x", &sig, 1300, five_min
        ));
        assert!(verify_signature_fresh(
            b"k", "1000", b"x", &sig, 700, five_min
        ));
        assert!(!verify_signature_fresh(
            b"k", "1000", b"x", &sig, 1301, five_min
        ));
        assert!(!verify_signature_fresh(
            b"k", "abc", b"x", &sig, 1000, five_min
        ));
    }

    #[test]
    fn url_checks() {
        assert!(WebhookSink::new("https://example.invalid/x", "s").is_err());
        assert!(WebhookSink::new("ftp://h/x", "s").is_err());
        assert!(WebhookSink::new("http://u:p@h/x", "s").is_err());
        assert!(WebhookSink::new("not a url", "s").is_err());
        let s = WebhookSink::new("http://127.0.0.1:8080/hook?token=t", "s").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.path.as_str()),
            ("127.0.0.1", 8080, "/hook?token=t")
        );
        assert!(s.name().starts_with("webhook 127.0.0.1:8080 #"));
        assert!(!s.name().contains("hook?") && !s.name().contains("/hook"));
        let other = WebhookSink::new("http://127.0.0.1:8080/other", "s").unwrap();
        assert_ne!(s.name(), other.name());
        assert!(!format!("{s:?}").contains("\"s\""));
        let s = WebhookSink::new("http://[::1]/", "s").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 80));
    }
}
