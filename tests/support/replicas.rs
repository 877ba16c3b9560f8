//! Several webhook replicas behind one address: a round-robin TCP proxy (what a Service does)
//! and one serving certificate they all use (so the webhook configurations trust them all).
//! Used by `tests/claims_kube.rs` and `tests/claims_fake.rs`, which include `webhook_support`
//! beside it at their crate root.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A round-robin TCP proxy (what a Service does) in front of a changing set of replicas; a
/// replica that refuses the connection is skipped. Clones share it.
#[derive(Clone)]
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The replicas it forwards to, in turn.
    pub backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Per replica forwarded to: set to `true` by [`Proxy::cut`]; every connection forwarded to
    /// it holds a receiver while it is open.
    cuts: Cuts,
}

type Cuts = Arc<Mutex<HashMap<SocketAddr, watch::Sender<bool>>>>;

impl Proxy {
    /// Listens on 127.0.0.1 (ephemeral port), forwarding to nobody yet.
    pub async fn start() -> Proxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let cuts: Cuts = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let (b, c) = (backends.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let (b, c) = (b.clone(), c.clone());
                let next = next.clone();
                tokio::spawn(async move {
                    let list = b.lock().unwrap().clone();
                    for _ in 0..list.len() {
                        let target = list[next.fetch_add(1, Ordering::Relaxed) % list.len()];
                        // Subscribed before connecting: a cut from now on is seen.
                        let mut cut = c
                            .lock()
                            .unwrap()
                            .entry(target)
                            .or_insert_with(|| watch::channel(false).0)
                            .subscribe();
                        if *cut.borrow_and_update() {
                            continue;
                        }
                        let Ok(Ok(mut out)) = tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::net::TcpStream::connect(target),
                        )
                        .await
                        else {
                            continue;
                        };
                        // Cut: both sockets dropped at once, not one more byte either way.
                        tokio::select! {
                            biased;
                            _ = cut.wait_for(|cut| *cut) => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        }
                        return;
                    }
                });
            }
        });
        Proxy {
            addr,
            backends,
            cuts,
        }
    }

    /// The replicas to forward to from now on.
    pub fn set(&self, backends: &[SocketAddr]) {
        *self.backends.lock().unwrap() = backends.to_vec();
    }

    /// What a replica's SIGKILL (or its node's loss) looks like to the clients of the Service:
    /// `backend` is out of the rotation and every connection to it is closed with no further
    /// byte from it (nor to it). Returns once those connections are closed. Call it before
    /// killing an in-process replica: dropping its runtime tears its tasks down one by one, and
    /// a review still in flight there can run on to an answer made of torn-down parts (its API
    /// client's worker gone: "the MAC claims could not be written") that a killed process never
    /// sends; once cut, such an answer reaches nobody.
    pub async fn cut(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().retain(|b| *b != backend);
        let tx = self
            .cuts
            .lock()
            .unwrap()
            .entry(backend)
            .or_insert_with(|| watch::channel(false).0)
            .clone();
        tx.send_replace(true);
        tx.closed().await;
    }
}

/// One serving pair for every replica, so the configurations trust them all.
pub struct SharedCerts {
    dir: tempfile::TempDir,
    /// The CA, base64 PEM (`caBundle`).
    pub ca_bundle: String,
    /// The CA, PEM.
    pub ca_pem: String,
}

impl SharedCerts {
    /// A pair from the `hotnic certs` code for localhost and 127.0.0.1.
    pub fn new() -> SharedCerts {
        let dir = tempfile::tempdir().unwrap();
        let g = crate::webhook_support::generate();
        hotnic::certs::write(dir.path(), &g).unwrap();
        SharedCerts {
            ca_bundle: g.ca_bundle(),
            ca_pem: g.ca_pem.clone(),
            dir,
        }
    }

    /// Certificate and key files.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join(hotnic::certs::CERT_FILE),
            self.dir.path().join(hotnic::certs::KEY_FILE),
        )
    }
}
