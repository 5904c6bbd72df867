use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use sha2::Sha256;

use crate::error::{Failure, with_retries};
use crate::{AlertError, AlertEvent, Delivery, RetryPolicy};

type HmacSha256 = Hmac<Sha256>;

const SIGNATURE_PREFIX: &str = "sha256=";

/// How errors show a webhook URL: its password, path and query hidden. Errors end up
/// in logs and terminals, and chat and incident tools put their secret in the path
/// (the password and the query may hold one too).
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return "(not a url)".to_owned();
    };
    let rest = &url[scheme_end..];
    // The authority ends at the first '/', '?' or '#' after the last '@' (a password
    // may hold any of them).
    let after_at = rest.rfind('@').map_or(0, |i| i + 1);
    let end = rest[after_at..]
        .find(['/', '?', '#'])
        .map_or(rest.len(), |i| after_at + i);
    let authority = &rest[..end];
    let authority = match (authority.find(':'), authority.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => {
            format!("{}:***{}", &authority[..colon], &authority[at..])
        }
        _ => authority.to_owned(),
    };
    let hidden = if end < rest.len() { "/…" } else { "" };
    format!("{}{authority}{hidden}", &url[..scheme_end])
}

/// POSTs each event as JSON to one URL (`https://`, or `http://` on a trusted network),
/// signed with HMAC-SHA256 (see the crate README), through reqwest over rustls: the
/// system's trust store, plus any CA given with [`WebhookSink::with_root_certificates`].
///
/// One connection per attempt: alerts are rare enough that keeping connections alive
/// would buy nothing but stale-connection failures.
pub struct WebhookSink {
    name: String,
    url: String,
    target: reqwest::Url,
    secret: Vec<u8>,
    retry: RetryPolicy,
    timeout: Duration,
    extra_roots: Vec<reqwest::Certificate>,
    client: reqwest::Client,
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

/// rustls needs one process-wide crypto provider; Bulkhead uses ring everywhere.
fn crypto_provider() {
    // An error only says one is installed already (ours, or the embedding program's).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(roots: &[reqwest::Certificate]) -> Result<reqwest::Client, reqwest::Error> {
    crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bulkhead-alerts/", env!("CARGO_PKG_VERSION")))
        .tls_certs_merge(roots.iter().cloned())
        .build()
}

impl WebhookSink {
    /// A sink for an `https://` (or `http://`) URL. Credentials in the URL are refused:
    /// the secret signs the body instead.
    pub fn new(url: &str, secret: impl Into<Vec<u8>>) -> Result<Self, AlertError> {
        let invalid = |reason| AlertError::InvalidUrl {
            url: without_password(url),
            reason,
        };
        let target = reqwest::Url::parse(url).map_err(|_| invalid("not a url"))?;
        if !matches!(target.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be https or http"));
        }
        if !target.username().is_empty() || target.password().is_some() {
            return Err(invalid(
                "credentials in the url are not supported; use the secret",
            ));
        }
        let host = match target.host_str() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err(invalid("no host")),
        };
        let authority = match target.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let client = client(&[]).map_err(|_| invalid("no tls client for it"))?;
        Ok(WebhookSink {
            // Chat and incident tools put the secret in the path: the name (shown in
            // metrics) tells two webhooks of one host apart by a digest of it.
            name: format!(
                "webhook {authority} #{}",
                &hex_digest(target.path().as_bytes())[..8]
            ),
            url: url.to_owned(),
            target,
            secret: secret.into(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            extra_roots: Vec::new(),
            client,
        })
    }

    /// Also trusts the CA certificates in `pem` (a private CA in front of an internal
    /// receiver), besides the system's.
    pub fn with_root_certificates(mut self, pem: &[u8]) -> Result<Self, AlertError> {
        let invalid = |reason| AlertError::InvalidUrl {
            url: without_password(&self.url),
            reason,
        };
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| invalid("the CA file holds no PEM certificate"))?;
        if certs.is_empty() {
            return Err(invalid("the CA file holds no PEM certificate"));
        }
        self.extra_roots.extend(certs);
        self.client = client(&self.extra_roots).map_err(|_| invalid("no tls client for it"))?;
        Ok(self)
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
            Ok(b) => b,
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

    async fn post(&self, body: &[u8], kind: &HeaderValue) -> Result<(), Failure> {
        let addr = || {
            let host = self.target.host_str().unwrap_or_default();
            match self.target.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        };
        // Signed per attempt, so a retry carries a fresh timestamp and passes a
        // receiver's replay window.
        let ts = unix_secs().to_string();
        let signature = sign(&self.secret, &ts, body);
        let sent = self
            .client
            .post(self.target.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header("x-bulkhead-event", kind.clone())
            .header("x-bulkhead-timestamp", ts)
            .header("x-bulkhead-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Failure::retry(AlertError::Timeout {
                    addr: addr(),
                    timeout: self.timeout,
                }));
            }
            // A certificate the trust store refuses will not be accepted next time
            // either: dead-lettered now rather than retried.
            Err(e) if is_certificate_error(&e) => {
                return Err(Failure::fatal(AlertError::Http {
                    addr: addr(),
                    source: e.without_url(),
                }));
            }
            Err(e) => {
                return Err(Failure::retry(AlertError::Http {
                    addr: addr(),
                    source: e.without_url(),
                }));
            }
        };
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

fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        // An io::Error's source() skips the error it wraps: look inside it first.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => err.source(),
        };
    }
    false
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
            ("http://u:pw@127.0.0.1/h", "http://u:***@127.0.0.1/…"),
            (
                "http://u:p/w?x@127.0.0.1:81/",
                "http://u:***@127.0.0.1:81/…",
            ),
            ("http://u:p@w@h/", "http://u:***@h/…"),
            ("http://u@127.0.0.1:81/h", "http://u@127.0.0.1:81/…"),
            (
                "https://hooks.example/services/T0/B0/XYZ",
                "https://hooks.example/…",
            ),
            ("http://127.0.0.1:81?token=a", "http://127.0.0.1:81/…"),
            ("http://127.0.0.1:81", "http://127.0.0.1:81"),
            ("not a url", "(not a url)"),
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
        // https is what chat and incident tools accept; both schemes are taken.
        assert!(WebhookSink::new("https://example.invalid/x", "s").is_ok());
        assert!(WebhookSink::new("ftp://h/x", "s").is_err());
        assert!(WebhookSink::new("http://u:p@h/x", "s").is_err());
        assert!(WebhookSink::new("not a url", "s").is_err());
        let s = WebhookSink::new("http://127.0.0.1:8080/hook?token=t", "s").unwrap();
        assert_eq!(s.target.as_str(), "http://127.0.0.1:8080/hook?token=t");
        assert!(s.name().starts_with("webhook 127.0.0.1:8080 #"));
        assert!(!s.name().contains("hook?") && !s.name().contains("/hook"));
        let other = WebhookSink::new("http://127.0.0.1:8080/other", "s").unwrap();
        assert_ne!(s.name(), other.name());
        assert!(!format!("{s:?}").contains("\"s\""));
        let s = WebhookSink::new("http://[::1]/", "s").unwrap();
        assert!(s.name().starts_with("webhook [::1] #"), "{}", s.name());
        assert!(
            WebhookSink::new("https://h/x", "s")
                .unwrap()
                .with_root_certificates(b"not pem")
                .is_err()
        );
    }
}
