//! Certificates: a CA and a serving certificate signed by it (`hotnic certs`, `webhook --dev`).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Why certificates cannot be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// No name to issue a serving certificate for.
    #[error("give at least one --dns name or --ip")]
    NoNames,
    /// A DNS name that is not one.
    #[error("{0:?} is not a valid DNS name (RFC 1123 labels, optionally a leading \"*.\")")]
    BadDnsName(String),
    /// rcgen refused a DNS name as a subject alternative name.
    #[error("{name:?} is not usable as a DNS subject alternative name")]
    San {
        /// The name.
        name: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// rcgen failed (key generation, signing).
    #[error("{what}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A file or directory cannot be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = CertsError> = std::result::Result<T, E>;

fn generating(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertsError {
    move |source| CertsError::Generate { what, source }
}

fn writing(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// File names inside a certificate directory (as in a `kubernetes.io/tls` Secret, plus the CA).
pub const CA_FILE: &str = "ca.crt";
/// The serving certificate.
pub const CERT_FILE: &str = "tls.crt";
/// The serving key.
pub const KEY_FILE: &str = "tls.key";

/// Arguments of `hotnic certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS names of the serving certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME", default_values_t = default_dns())]
    pub dns: Vec<String>,
    /// IP addresses of the serving certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

fn default_dns() -> Vec<String> {
    vec![
        "hotnic-webhook.hotnic-system.svc".into(),
        "hotnic-webhook.hotnic-system.svc.cluster.local".into(),
    ]
}

/// A generated CA and serving pair, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The CA certificate (the webhook configurations' `caBundle`).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

impl Generated {
    /// The base64 `caBundle` for the webhook configurations.
    pub fn ca_bundle(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes())
    }
}

/// A certificate authority that can issue serving certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    days: u32,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("days", &self.days)
            .finish_non_exhaustive()
    }
}

fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - Duration::minutes(5),
        now + Duration::days(i64::from(days)),
    )
}

impl Ca {
    /// A new self-signed CA (ECDSA P-256) valid for `days`.
    pub fn new(days: u32) -> Result<Self> {
        let key = KeyPair::generate().map_err(generating("generating the CA key"))?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("hotnic webhook CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (ca.not_before, ca.not_after) = validity(days);
        let cert = ca.self_signed(&key).map_err(generating("signing the CA"))?;
        Ok(Ca {
            issuer: Issuer::new(ca, key),
            pem: cert.pem(),
            days,
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Issues a serving certificate (ECDSA P-256) for `dns` and `ips`: (certificate PEM, key PEM).
    pub fn issue(&self, dns: &[String], ips: &[IpAddr], days: u32) -> Result<(String, String)> {
        if dns.is_empty() && ips.is_empty() {
            return Err(CertsError::NoNames);
        }
        if let Some(bad) = dns.iter().find(|d| !valid_dns_name(d)) {
            return Err(CertsError::BadDnsName(bad.clone()));
        }
        let key = KeyPair::generate().map_err(generating("generating the serving key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(dns.first().map_or("hotnic-webhook", String::as_str));
        params.subject_alt_names = dns
            .iter()
            .map(|d| {
                d.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|source| CertsError::San {
                        name: d.clone(),
                        source,
                    })
            })
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        (params.not_before, params.not_after) = validity(days.min(self.days));
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generating("signing the serving certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Generates a CA and a serving certificate for `dns` and `ips` signed by it.
pub fn generate(dns: &[String], ips: &[IpAddr], days: u32) -> Result<Generated> {
    let ca = Ca::new(days)?;
    let (cert_pem, key_pem) = ca.issue(dns, ips, days)?;
    Ok(Generated {
        ca_pem: ca.pem,
        cert_pem,
        key_pem,
    })
}

/// RFC 1123 host name (labels of letters, digits and inner hyphens, at most 63 bytes each, 253
/// in all), optionally with a leading `*.` wildcard label.
fn valid_dns_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && name.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn.push(DnType::OrganizationName, "hotnic");
    dn
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
pub fn write(dir: &Path, g: &Generated) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(writing(dir))?;
    for (file, text, private) in [
        (CA_FILE, &g.ca_pem, false),
        (CERT_FILE, &g.cert_pem, false),
        (KEY_FILE, &g.key_pem, true),
    ] {
        let path = dir.join(file);
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).map_err(writing(&tmp))?;
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(writing(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(writing(&path))?;
    }
    Ok(())
}

/// Runs `hotnic certs`: writes the files and prints the `caBundle`.
pub fn run(args: &CertsArgs) -> Result<()> {
    let g = generate(&args.dns, &args.ips, args.days)?;
    write(&args.out, &g)?;
    println!(
        "wrote {dir}/{CA_FILE}, {dir}/{CERT_FILE}, {dir}/{KEY_FILE} (valid {days} days)",
        dir = args.out.display(),
        days = args.days
    );
    println!("caBundle: {}", g.ca_bundle());
    Ok(())
}

/// The dev certificates under `dir` (for `webhook --dev`): reused when present and still valid
/// for at least a day, created otherwise. Returns (cert, key) paths.
pub fn ensure_dev(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    let usable = std::fs::read(&cert)
        .ok()
        .and_then(|pem| crate::webhook::tls::inspect(&pem).ok())
        .is_some_and(|info| info.not_after > OffsetDateTime::now_utc().unix_timestamp() + 86_400)
        && key.exists()
        && dir.join(CA_FILE).exists();
    if !usable {
        let mut dns = default_dns();
        dns.insert(0, "localhost".into());
        let g = generate(
            &dns,
            &[Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            365,
        )?;
        write(dir, &g)?;
        tracing::warn!(dir = %dir.display(), "created self-signed DEV certificates; never use them in production");
    }
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in [
            "localhost",
            "hotnic-webhook.hotnic-system.svc",
            "*.example.com",
            "a1.b-2.c",
        ] {
            assert!(valid_dns_name(ok), "{ok}");
        }
        for bad in [
            "",
            "not a name!",
            "-a.b",
            "a-.b",
            "a..b",
            "*.",
            "*",
            "a.*.b",
            &"x".repeat(64),
        ] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn issue_refuses_no_names_and_bad_names() {
        let ca = Ca::new(10).unwrap();
        assert!(ca.issue(&[], &[], 10).is_err());
        assert!(ca.issue(&["bad name".into()], &[], 10).is_err());
        let (cert, _) = ca.issue(&[], &["127.0.0.1".parse().unwrap()], 10).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
