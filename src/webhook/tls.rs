//! Serving certificates: loading and checking a PEM pair, and reloading it without a restart
//! (including Kubernetes' `..data` symlink swap of Secret volumes, which plain file watches miss).

use anyhow::{Context, Result, anyhow};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

/// Reads the first certificate of a PEM bundle with x509-parser.
pub fn inspect(cert_pem: &[u8]) -> Result<CertInfo> {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or_else(|| anyhow!("no certificate in PEM"))?
        .context("certificate PEM")?;
    inspect_der(&der)
}

fn inspect_der(der: &CertificateDer<'_>) -> Result<CertInfo> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).context("parsing the certificate")?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(match b.len() {
                    4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()).to_string(),
                    16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()).to_string(),
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
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("reading the certificate PEM")?;
    let first = chain.first().ok_or_else(|| anyhow!("the certificate file holds no certificate"))?;
    let info = inspect_der(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the private key PEM")?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| anyhow!("the private key does not match the certificate ({e})"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if info.not_after < now + 30 * 86_400 {
        tracing::warn!(subject = %info.subject, not_after = info.not_after, "serving certificate expires within 30 days");
    }
    if info.dns.is_empty() && info.ips.is_empty() {
        tracing::warn!(subject = %info.subject, "serving certificate has no DNS or IP SAN; the API server will reject it");
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
    pub fn open(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let (loaded, stamp) = read_pair(cert_path, key_path)?;
        Ok(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new((loaded, stamp)),
        })
    }

    /// What is being served.
    pub fn info(&self) -> CertInfo {
        self.current.read().unwrap_or_else(|e| e.into_inner()).0.info.clone()
    }

    /// Re-reads the files (following symlinks, so a `..data` swap is seen); swaps the pair when
    /// they changed. A failed reload keeps the old pair. Blocking: call off the async runtime.
    pub fn reload(&self) -> Result<bool> {
        let cert = std::fs::read(&self.cert_path).with_context(|| format!("reading {}", self.cert_path.display()))?;
        let key = std::fs::read(&self.key_path).with_context(|| format!("reading {}", self.key_path.display()))?;
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
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn(&CertInfo) + Send + 'static) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.reload()).await {
                Ok(Ok(true)) => on_reload(&self.info()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "certificate reload failed; still serving the previous pair"),
                Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
            }
        }
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Loaded, Vec<u8>)> {
    let cert = std::fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key = std::fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let loaded = load_pair(&cert, &key).with_context(|| format!("{} / {}", cert_path.display(), key_path.display()))?;
    Ok((loaded, [cert, key].concat()))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.key.clone())
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
