//! Server lifecycle: certificate hot reload through a Secret-volume `..data` symlink swap,
//! refusing a mismatched key, graceful drain (readiness flips, 503 + Retry-After: 1).

mod webhook_support;

use hotnic::certs::{self, Generated};
use hotnic::webhook::tls::CertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_support::*;

/// A directory laid out like a mounted `kubernetes.io/tls` Secret:
/// `..<timestamp>/{tls.crt,tls.key,ca.crt}`, `..data -> ..<timestamp>`, `tls.crt -> ..data/tls.crt`.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: usize,
    current: Option<PathBuf>,
}

impl SecretVolume {
    fn new(first: &Generated) -> Self {
        let mut v = SecretVolume {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
            current: None,
        };
        v.swap(first);
        for f in [certs::CERT_FILE, certs::KEY_FILE, certs::CA_FILE] {
            std::os::unix::fs::symlink(Path::new("..data").join(f), v.dir.path().join(f)).unwrap();
        }
        v
    }

    /// What the kubelet does on a Secret update: write a new timestamped directory, point a
    /// temporary symlink at it, rename it over `..data`, remove the old directory.
    fn swap(&mut self, g: &Generated) {
        self.generation += 1;
        let name = format!(
            "..2026_11_24_10_00_{:02}.{:09}",
            self.generation,
            self.generation * 7
        );
        let new = self.dir.path().join(&name);
        certs::write(&new, g).unwrap();
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        if let Some(old) = self.current.replace(new) {
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join(certs::CERT_FILE)
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join(certs::KEY_FILE)
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Posts fixture 001 on a new connection each time (no pooling) and records the served
/// certificate; counts every failure.
struct Looper {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    last_cert: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Looper {
    fn start(addr: std::net::SocketAddr, cas: &[&str]) -> Self {
        let client = client_for(addr, cas, |b| {
            b.http1_only().pool_max_idle_per_host(0).tls_info(true)
        });
        let url = format!("https://localhost:{}/mutate", addr.port());
        let body =
            std::fs::read(fixtures_dir().join("001-mutate-create-pod-web-multus.json")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let last_cert = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, ok, failures, last_cert) = (
                stop.clone(),
                ok.clone(),
                failures.clone(),
                last_cert.clone(),
            );
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let r = client.post(&url).body(body.clone()).send().await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            let cert = r
                                .extensions()
                                .get::<reqwest::tls::TlsInfo>()
                                .and_then(|t| t.peer_certificate())
                                .map(<[u8]>::to_vec)
                                .unwrap_or_default();
                            match r.json::<serde_json::Value>().await {
                                Ok(v) if v["response"]["allowed"] == true => {
                                    *last_cert.lock().unwrap() = cert;
                                    ok.fetch_add(1, Ordering::SeqCst);
                                }
                                other => failures.lock().unwrap().push(format!("{other:?}")),
                            }
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            }
        });
        Looper {
            stop,
            ok,
            failures,
            last_cert,
            task,
        }
    }

    /// Waits (bounded) until the served certificate is `want` and a few more requests passed.
    async fn wait_for_cert(&self, want: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if *self.last_cert.lock().unwrap() == want {
                let seen = self.ok.load(Ordering::SeqCst);
                while self.ok.load(Ordering::SeqCst) < seen + 5 {
                    assert!(Instant::now() < deadline, "requests stopped succeeding");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the new certificate was never served ({} bytes wanted, {} ok, last served {} bytes); failures: {:?}",
                want.len(),
                self.ok.load(Ordering::SeqCst),
                self.last_cert.lock().unwrap().len(),
                self.failures.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test]
async fn a_secret_volume_symlink_swap_is_served_on_new_connections_without_failures() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let first = generate();
    let second = certs::generate(&["localhost".into()], &[], 100).unwrap();
    let third = generate();
    let mut vol = SecretVolume::new(&first);
    let running = hotnic::webhook::start(config(&vol.cert(), &vol.key()))
        .await
        .unwrap();
    let addr = running.addr;
    let looper = Looper::start(addr, &[&first.ca_pem, &second.ca_pem, &third.ca_pem]);
    looper.wait_for_cert(&der(&first.cert_pem)).await;

    // A keep-alive connection opened before the swap keeps working after it.
    let keepalive = client_for(addr, &[&first.ca_pem], |b| b.http1_only());
    let url = format!("https://localhost:{}/validate", addr.port());
    let body =
        std::fs::read(fixtures_dir().join("002-validate-create-pod-web-multus.json")).unwrap();
    assert_eq!(
        keepalive
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    vol.swap(&second);
    looper.wait_for_cert(&der(&second.cert_pem)).await;
    assert_eq!(
        keepalive
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the established connection survives the swap"
    );
    // A client that trusts only the new CA now connects.
    let only_new = client_for(addr, &[&second.ca_pem], |b| b.http1_only());
    assert_eq!(
        only_new
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = running.state.metrics.encode();
    assert!(
        metrics.contains("hotnic_webhook_certificate_reloads_total 1"),
        "{metrics}"
    );
    let not_after = hotnic::webhook::tls::inspect(second.cert_pem.as_bytes())
        .unwrap()
        .not_after;
    assert!(
        metrics.contains(&format!(
            "hotnic_webhook_certificate_not_after_seconds {not_after}"
        )),
        "the expiry gauge follows the reload: {metrics}"
    );

    // A broken update (key of another pair) keeps the old pair...
    let broken = Generated {
        key_pem: first.key_pem.clone(),
        ..third.clone()
    };
    vol.swap(&broken);
    // ...then a good one is picked up again: the watcher survived the failure.
    vol.swap(&third);
    looper.wait_for_cert(&der(&third.cert_pem)).await;

    let (ok, failures) = looper.finish().await;
    assert!(
        failures.is_empty(),
        "failed requests during the swaps: {failures:?}"
    );
    assert!(ok > 10, "{ok}");
    let mut running = running;
    running.shutdown();
}

#[tokio::test]
async fn a_failed_reload_keeps_serving_the_old_pair() {
    let a = generate();
    let b = generate();
    let mut vol = SecretVolume::new(&a);
    let store = CertStore::open(&vol.cert(), &vol.key()).unwrap();
    let before = store.info();
    assert!(!store.reload().unwrap(), "unchanged files are not reloaded");
    // Mismatched key.
    vol.swap(&Generated {
        key_pem: a.key_pem.clone(),
        ..b.clone()
    });
    let err = store.reload().unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    assert_eq!(store.info(), before);
    // Garbage.
    vol.swap(&Generated {
        cert_pem: "not a certificate".into(),
        ..b.clone()
    });
    assert!(store.reload().is_err());
    assert_eq!(store.info(), before);
    // Good again.
    vol.swap(&b);
    assert!(store.reload().unwrap());
    assert_eq!(
        store.info(),
        hotnic::webhook::tls::inspect(b.cert_pem.as_bytes()).unwrap()
    );
}

#[tokio::test]
async fn the_server_refuses_to_start_with_a_key_that_does_not_match() {
    let a = generate();
    let b = generate();
    let dir = tempfile::tempdir().unwrap();
    certs::write(
        dir.path(),
        &Generated {
            key_pem: b.key_pem,
            ..a
        },
    )
    .unwrap();
    let err = hotnic::webhook::start(config(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
    ))
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
}

/// A TLS HTTP/1.1 connection to the server, for writing requests by hand.
async fn raw_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(hotnic::webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn graceful_drain_flips_readyz_and_answers_late_reviews_with_503_retry_after() {
    let s = Server::start_with(|c| c.shutdown_delay = Duration::from_secs(3)).await;
    let (addr, admin) = (s.addr(), s.admin());
    let readyz = move || async move {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(readyz().await, 200);

    // A review in flight: headers and half the body sent before the shutdown.
    let body = std::fs::read(fixtures_dir().join("001-mutate-create-pod-web-multus.json")).unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut inflight = raw_tls(addr, &s.certs.ca_pem).await;
    inflight
        .write_all(
            format!(
                "POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    inflight.write_all(head).await.unwrap();
    inflight.flush().await.unwrap();

    let mut s = s;
    let mut running = s.running.take().unwrap();
    let state = running.state.clone();
    running.shutdown();
    // Not ready at once; still answering new reviews during the shutdown delay.
    wait_until("/readyz to fail", async || readyz().await == 503).await;
    let text = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("shutting down"), "{text}");
    let c = client_for(addr, &[&s.certs.ca_pem], |b| b.http1_only());
    let r = c
        .post(format!("https://localhost:{}/mutate", addr.port()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "reviews are still answered while endpoints catch up"
    );
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "keep-alive connections are retired while stopping"
    );

    // Then the listener closes and the server drains: the in-flight request finishes with 503.
    wait_until("draining", async || state.draining.load(Ordering::SeqCst)).await;
    inflight.write_all(tail).await.unwrap();
    inflight.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), inflight.read_to_end(&mut answer))
        .await
        .expect("the drained connection is closed after its answer")
        .ok();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
    assert!(answer.contains(r#"{"error":"#), "{answer}");

    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the server stops after draining");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}
