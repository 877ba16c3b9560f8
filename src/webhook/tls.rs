//! Serving certificates: loading and checking a PEM pair, and reloading it without a restart
//! (including Kubernetes' `..data` symlink swap of Secret volumes, which plain file watches miss).

use crate::runtime::Chain;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why a serving pair cannot be loaded (or the TLS configuration built).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The pair read from these files is not usable.
    #[error("{} / {}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong with the pair.
        #[source]
        source: Box<TlsError>,
    },
    /// The certificate PEM holds no certificate.
    #[error("the certificate file holds no certificate")]
    NoCertificate,
    /// The certificate PEM is malformed.
    #[error("reading the certificate PEM")]
    CertificatePem(#[source] rustls_pki_types::pem::Error),
    /// The certificate is not valid X.509 DER.
    #[error("parsing the certificate")]
    Certificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The key PEM is malformed or holds no key.
    #[error("reading the private key PEM")]
    KeyPem(#[source] rustls_pki_types::pem::Error),
    /// The key is of a kind rustls cannot sign with.
    #[error("unusable private key")]
    Key(#[source] rustls::Error),
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate")]
    Mismatch(#[source] rustls::Error),
    /// The protocol versions cannot be set (a rustls build without them).
    #[error("TLS versions")]
    Versions(#[source] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What hotnic checks of a serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject, for logs.
    pub subject: String,
    /// Expiry, as Unix seconds.
    pub not_after: i64,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<String>,
}

impl CertInfo {
    /// What is worth warning about at Unix time `now`: expiry within 30 days (or past), no DNS
    /// or IP SAN.
    pub fn warnings(&self, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        if self.not_after < now {
            out.push("serving certificate has expired".to_string());
        } else if self.not_after < now + 30 * 86_400 {
            out.push(format!(
                "serving certificate expires within 30 days ({} days left)",
                (self.not_after - now) / 86_400
            ));
        }
        if self.dns.is_empty() && self.ips.is_empty() {
            out.push(
                "serving certificate has no DNS or IP SAN; the API server will reject it"
                    .to_string(),
            );
        }
        out
    }
}

/// Reads the first certificate of a PEM bundle with x509-parser.
pub fn inspect(cert_pem: &[u8]) -> Result<CertInfo, TlsError> {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or(TlsError::NoCertificate)?
        .map_err(TlsError::CertificatePem)?;
    inspect_der(&der)
}

fn inspect_der(der: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(TlsError::Certificate)?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                        .to_string(),
                    16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                        .to_string(),
                    _ => format!("{b:?}"),
                }),
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        dns,
        ips,
    })
}

/// A loaded serving pair.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The pair, ready for rustls.
    pub key: Arc<CertifiedKey>,
    /// What was checked.
    pub info: CertInfo,
}

/// Parses and checks a PEM certificate chain and key: the key must match the certificate.
/// Logs a warning when the certificate expires within 30 days or has no DNS/IP SAN.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(TlsError::CertificatePem)?;
    let first = chain.first().ok_or(TlsError::NoCertificate)?;
    let info = inspect_der(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::KeyPem)?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Key)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for warning in info.warnings(now) {
        tracing::warn!(subject = %info.subject, not_after = info.not_after, "{warning}");
    }
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

/// The crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current serving pair, swapped on reload; rustls asks it on every handshake.
#[derive(Debug)]
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Loaded, Vec<u8>)>,
}

impl CertStore {
    /// Loads the pair from files (refusing a key that does not match).
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (loaded, stamp) = read_pair(cert_path, key_path)?;
        Ok(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((loaded, stamp)),
        })
    }

    /// What is being served.
    pub fn info(&self) -> CertInfo {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .info
            .clone()
    }

    /// Re-reads the files (following symlinks, so a `..data` swap is seen); swaps the pair when
    /// they changed. A failed reload keeps the old pair. Blocking: call off the async runtime.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        let stamp = [cert.as_slice(), key.as_slice()].concat();
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == stamp {
            return Ok(false);
        }
        let loaded = load_pair(&cert, &key)?;
        tracing::info!(subject = %loaded.info.subject, not_after = loaded.info.not_after, "serving certificate reloaded");
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (loaded, stamp);
        Ok(true)
    }

    /// Polls the files every `interval` until `stop` resolves, reloading on change.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        on_reload: impl Fn(&CertInfo) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.reload()).await {
                Ok(Ok(true)) => on_reload(&self.info()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %Chain(&e), "certificate reload failed; still serving the previous pair")
                }
                Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
            }
        }
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Loaded, Vec<u8>), TlsError> {
    let cert = read(cert_path)?;
    let key = read(key_path)?;
    let loaded = load_pair(&cert, &key).map_err(|e| TlsError::Pair {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok((loaded, [cert, key].concat()))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .key
                .clone(),
        )
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, certificates from `store`, no session
/// resumption.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Versions)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    // No session resumption: a resumed session skips the certificate, so a client that keeps
    // resuming would never see a reloaded one (and a session issued by a handshake that raced
    // the reload would carry the old identity on). The API server (Go net/http without a
    // ClientSessionCache) does not resume sessions anyway.
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn warns_on_near_expiry_and_missing_sans() {
        let ca = crate::certs::Ca::new(365).unwrap();
        let (long, _) = ca.issue(&["a.b.svc".into()], &[], 365).unwrap();
        let info = inspect(long.as_bytes()).unwrap();
        assert_eq!(info.dns, ["a.b.svc"]);
        assert!(
            info.warnings(now()).is_empty(),
            "{:?}",
            info.warnings(now())
        );
        let (short, _) = ca.issue(&[], &["10.1.2.3".parse().unwrap()], 10).unwrap();
        let info = inspect(short.as_bytes()).unwrap();
        assert_eq!(info.ips, ["10.1.2.3"]);
        let w = info.warnings(now());
        assert!(w.len() == 1 && w[0].contains("within 30 days"), "{w:?}");
        assert!(info.warnings(info.not_after + 1)[0].contains("expired"));

        // No SAN at all (rcgen directly; `hotnic certs` refuses to make one).
        let key = rcgen::KeyPair::generate().unwrap();
        let bare = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        let info = inspect(bare.pem().as_bytes()).unwrap();
        assert!(
            info.warnings(now())
                .iter()
                .any(|w| w.contains("no DNS or IP SAN"))
        );
        // Still loadable (a warning, not a refusal), with its own key.
        assert!(load_pair(bare.pem().as_bytes(), key.serialize_pem().as_bytes()).is_ok());
    }

    #[test]
    fn refuses_mismatched_keys_and_garbage() {
        let g = crate::certs::generate(&["localhost".into()], &[], 30).unwrap();
        let other = crate::certs::generate(&["localhost".into()], &[], 30).unwrap();
        assert!(load_pair(g.cert_pem.as_bytes(), g.key_pem.as_bytes()).is_ok());
        let e = load_pair(g.cert_pem.as_bytes(), other.key_pem.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(load_pair(b"", g.key_pem.as_bytes()).is_err());
        assert!(load_pair(g.cert_pem.as_bytes(), b"junk").is_err());
        assert!(load_pair(g.key_pem.as_bytes(), g.key_pem.as_bytes()).is_err());
    }
}
