//! HTTPS to the server, trusting exactly one CA: the one whose SHA-256 fingerprint the
//! agent was given with its pairing key. No public CA, no system trust store. The
//! transport is reqwest (the HTTP client the alert sinks use too) over a rustls
//! configuration whose only verifier is the pinned CA.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server URL {0:?}: {1}")]
    Url(String, String),
    #[error("CA fingerprint {0:?} is not 64 hex digits (SHA-256)")]
    Fingerprint(String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    #[error("{0} timed out")]
    Timeout(String),
    #[error("{method} {path}: {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{0}: {1}")]
    Protocol(String, String),
}

impl ClientError {
    /// A refusal the agent cannot fix by retrying (bad key, revoked credential…).
    pub fn is_refusal(&self) -> bool {
        // 429 says "later", not "no": the server throttles an address after failures.
        matches!(self, ClientError::Status { status, .. }
            if status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS)
    }
}

/// Accepts a server certificate only if it chains to the pinned CA, which the server
/// sends along with its own certificate. The name check stays on: the certificate must
/// name the address or host the agent was told to use.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server did not present the pinned CA (wrong server, or a man in the middle)"
                        .into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The servers (replicas sharing one CA), one pinned CA, and (after enrollment) the
/// agent's credential.
#[derive(Clone)]
pub struct Client {
    servers: Arc<Vec<Server>>,
    /// The server that answered last: calls go there first.
    current: Arc<std::sync::atomic::AtomicUsize>,
    http: reqwest::Client,
    credential: Option<String>,
}

#[derive(Debug)]
struct Server {
    base: reqwest::Url,
    authority: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.authority())
    }
}

/// The server URLs of a comma-separated list, each `https://HOST:PORT`.
pub fn server_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

fn parse_server(url: &str) -> Result<Server, ClientError> {
    let base = reqwest::Url::parse(url).map_err(|e| ClientError::Url(url.into(), e.to_string()))?;
    if base.scheme() != "https" {
        return Err(ClientError::Url(
            url.into(),
            "must start with https:// (agents only talk TLS)".into(),
        ));
    }
    let host = base
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ClientError::Url(url.into(), "no host".into()))?;
    let authority = match base.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(Server { base, authority })
}

pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ClientError> {
    let clean: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&clean).map_err(|_| ClientError::Fingerprint(text.into()))?;
    bytes
        .try_into()
        .map_err(|_| ClientError::Fingerprint(text.into()))
}

/// How long one call may take, connection and TLS handshake included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

impl Client {
    /// A client of the server at `url`, or of the replicas in a comma-separated list
    /// of URLs (they must present certificates of the same CA): a call that cannot
    /// reach one goes to the next.
    pub fn new(url: &str, ca_fingerprint: &str) -> Result<Client, ClientError> {
        let servers = server_urls(url)
            .into_iter()
            .map(parse_server)
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(ClientError::Url(url.into(), "no server URL".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = PinnedCa {
            fingerprint: parse_fingerprint(ca_fingerprint)?,
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Protocol("TLS".into(), e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // One request per connection: at heartbeat rates a pooled connection saves
        // nothing worth the state it would need across server restarts.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("bulkhead-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Protocol("TLS".into(), e.to_string()))?;
        Ok(Client {
            servers: Arc::new(servers),
            current: Arc::default(),
            http,
            credential: None,
        })
    }

    pub fn with_credential(mut self, credential: &str) -> Client {
        self.credential = Some(credential.to_string());
        self
    }

    /// The server calls go to first (the one that answered last).
    pub fn authority(&self) -> &str {
        &self.servers[self.first()].authority
    }

    fn first(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::Relaxed) % self.servers.len()
    }

    /// Calls the server that answered last, then, while a server cannot be reached
    /// (refused, timed out), the next ones in the list; the first to answer is kept.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ClientError> {
        let first = self.first();
        let mut last = None;
        for i in 0..self.servers.len() {
            let index = (first + i) % self.servers.len();
            match self
                .call_one(&self.servers[index], method.clone(), path, body.clone())
                .await
            {
                Err(e @ (ClientError::Connect(..) | ClientError::Timeout(_))) => {
                    if self.servers.len() > 1 {
                        tracing::warn!("{e}; trying the next server");
                    }
                    last = Some(e);
                }
                answered => {
                    self.current
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    return answered;
                }
            }
        }
        Err(last.expect("at least one server"))
    }

    async fn call_one(
        &self,
        server: &Server,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ClientError> {
        let what = format!("{method} {path}");
        let url = server
            .base
            .join(path)
            .map_err(|e| ClientError::Protocol(what.clone(), e.to_string()))?;
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.unwrap_or_default());
        if let Some(c) = &self.credential {
            req = req.bearer_auth(c);
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                ClientError::Timeout(what.clone())
            } else if e.is_connect() {
                ClientError::Connect(server.authority.clone(), chain(&e))
            } else {
                ClientError::Protocol(what.clone(), chain(&e))
            }
        };
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(failed)?;
        if !status.is_success() {
            return Err(ClientError::Status {
                method,
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        Ok(bytes.to_vec())
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let body = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| ClientError::Protocol(what.clone(), e.to_string()))?,
            ),
            None => None,
        };
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(what, e.to_string()))
    }
}

/// An error with its causes: reqwest's own message says only "error sending request",
/// the TLS refusal (a wrong pin) is further down.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_take_plain_or_colon_separated_hex() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex64).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn only_https_urls() {
        let fp = "00".repeat(32);
        assert!(Client::new("http://10.0.0.1:8443", &fp).is_err());
        let c = Client::new("https://10.0.0.1:8443", &fp).unwrap();
        assert_eq!(c.authority(), "10.0.0.1:8443");
        assert!(Client::new("https://[fd00::1]:8443", &fp).is_ok());
        let two = Client::new("https://10.0.0.1:8443, https://10.0.0.2:8443", &fp).unwrap();
        assert_eq!(two.authority(), "10.0.0.1:8443");
        assert!(Client::new("https://10.0.0.1:8443,http://10.0.0.2:8443", &fp).is_err());
        assert!(Client::new(" , ", &fp).is_err());
    }
}
