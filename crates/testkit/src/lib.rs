//! Helpers the tests of several crates share. A dev-dependency only: nothing here ships.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A throwaway CA and a server certificate it signed for 127.0.0.1, as a rustls server
/// configuration that presents the CA beside the leaf (as Bulkhead's server does).
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_pem: String,
    /// Hex SHA-256 of the CA certificate (DER): what an agent pins.
    pub ca_fingerprint: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    pub fn for_loopback() -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Bulkhead test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ]))];
        let leaf_cert = leaf.signed_by(&key, &issuer).expect("leaf");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone(), ca_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        TestPki {
            ca_pem: ca_cert.pem(),
            ca_fingerprint: hex::encode(Sha256::digest(ca_cert.der())),
            server: Arc::new(server),
        }
    }
}

/// Polls `f` every 250 ms until it gives `Some`, or fails the test saying what it
/// waited for. The deadline only bounds a broken run: tests wait with it, they never
/// measure time with it.
pub fn wait_for<T>(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub mod clickhouse;
pub mod command;
pub mod netns;
pub mod sessions;
