//! The server's own certificate authority and the TLS listener agents talk to.
//!
//! At first start the server creates a CA and a server certificate signed by it under
//! `DATA/tls/`. Agents pin the CA's SHA-256 fingerprint (given with the pairing key), so
//! no public CA and no DNS are involved, and a man in the middle without the CA key is
//! refused. The server sends the CA with its certificate, so the agent can check the pin
//! during the handshake without fetching anything first.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The server's TLS material, loaded or created.
#[derive(Clone)]
pub struct TlsIdentity {
    pub config: Arc<rustls::ServerConfig>,
    /// Hex SHA-256 of the CA certificate (DER): what agents pin.
    pub ca_fingerprint: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsIdentity(ca {})", self.ca_fingerprint)
    }
}

pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads `dir/{ca,server}.{pem,key}`, creating the CA once and the server certificate
/// whenever the wanted names are not all in it (a new `--tls-san` or listen address).
pub fn load_or_create(dir: &Path, names: &[String]) -> anyhow::Result<TlsIdentity> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = |f: &str| -> PathBuf { dir.join(f) };
    if !p("ca.pem").exists() {
        let key = rcgen::KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&p("ca.key"), &key.serialize_pem())?;
        write_private(&p("ca.pem"), &cert.pem())?;
        let _ = std::fs::remove_file(p("server.pem"));
    }
    let ca_pem = std::fs::read_to_string(p("ca.pem"))?;
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(p("ca.key"))?)?;
    // The issuer is rebuilt from the same parameters rather than parsed back from the
    // PEM: the subject and key identifier it signs with are what the CA carries.
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);

    let wanted: Vec<String> = {
        let mut n = names.to_vec();
        n.sort();
        n.dedup();
        n
    };
    let names_file = p("server.names");
    let current = std::fs::read_to_string(&names_file).unwrap_or_default();
    if !p("server.pem").exists() || current != wanted.join("\n") {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Bulkhead server");
        params.subject_alt_names = wanted
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
                Err(_) => Ok(rcgen::SanType::DnsName(n.as_str().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&p("server.key"), &key.serialize_pem())?;
        write_private(&p("server.pem"), &cert.pem())?;
        write_private(&names_file, &wanted.join("\n"))?;
    }

    let ca_der =
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).context("reading the CA certificate")?;
    let leaf = CertificateDer::from_pem_file(p("server.pem")).context("reading server.pem")?;
    let key = PrivateKeyDer::from_pem_file(p("server.key")).context("reading server.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf, ca_der.clone()], key)?;
    Ok(TlsIdentity {
        config: Arc::new(config),
        ca_fingerprint: fingerprint(&ca_der),
        ca_pem,
    })
}

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Bulkhead server CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    Ok(params)
}

/// The names the server certificate carries by default: loopback, the host name, and the
/// listen address when it is a specific one.
pub fn default_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            names.push(h.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, with the same limits
/// as the plain listener (see [`crate::listener`]).
pub async fn serve_tls(
    app: Router,
    listener: tokio::net::TcpListener,
    identity: TlsIdentity,
    limits: crate::listener::Limits,
    stats: Arc<crate::listener::ConnectionStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.config);
    crate::listener::serve(app, listener, Some(acceptor), limits, stats, shutdown).await
}
