//! The agent's admin endpoints (`/livez`, `/readyz`, `/metrics`) run on the runtime's hardened
//! admin listener, the webhook's: readiness through the router in process (no sockets); the
//! header-read and idle cut-offs and the connection cap over real sockets; and the real
//! `hotnic agent` binary holding the documented cap of 64 connections and stopping on SIGTERM.
//! Needs no root: standalone mode over an empty pods directory runs no plugin.

use axum::body::Body;
use hotnic::agent::admin_router;
use hotnic::agent::metrics::Metrics;
use hotnic::runtime::{AdminLimits, AdminServer, Flag, Shutdown};
use http::Request;
use http_body_util::BodyExt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const BIN: &str = env!("CARGO_BIN_EXE_hotnic");

async fn call(router: &axum::Router, path: &str) -> (u16, Option<String>, String) {
    let resp = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readiness_follows_the_first_pass_and_the_shutdown() {
    let metrics = Arc::new(Metrics::new());
    let (synced, shutdown) = (Flag::new(), Shutdown::new());
    let router = admin_router(metrics.clone(), &synced, &shutdown);
    assert_eq!(call(&router, "/livez").await.0, 200);
    let (code, _, text) = call(&router, "/readyz").await;
    assert_eq!(
        (code, text.as_str()),
        (503, "not ready: first reconcile pass not done\n")
    );
    synced.set();
    assert_eq!(call(&router, "/readyz").await.0, 200);
    metrics.plug(true);
    let (code, ctype, text) = call(&router, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        ctype.unwrap().starts_with("application/openmetrics-text"),
        "{text}"
    );
    for needle in [
        r#"hotnic_agent_plugs_total{result="success"} 1"#,
        "hotnic_agent_plug_latency_seconds_bucket",
        "hotnic_agent_pods_managed 0",
        "hotnic_agent_reconcile_errors_total 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    shutdown.start();
    let (code, _, text) = call(&router, "/readyz").await;
    assert_eq!((code, text.as_str()), (503, "not ready: shutting down\n"));
    assert_eq!(call(&router, "/livez").await.0, 200, "live until the end");
}

/// Sends a GET on an open connection and reads its answer (keep-alive): the status code.
async fn get(tcp: &mut TcpStream, path: &str) -> u16 {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

/// Whether an answer to a GET sent on `tcp` comes within `wait`.
async fn answered_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    tokio::time::timeout(wait, get(tcp, "/livez")).await.is_ok()
}

async fn admin_server(limits: AdminLimits) -> (AdminServer, Flag, Shutdown) {
    let (synced, shutdown) = (Flag::new(), Shutdown::new());
    synced.set();
    let router = admin_router(Arc::new(Metrics::new()), &synced, &shutdown);
    let server = AdminServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        router,
        limits,
        shutdown.started(),
    )
    .await
    .unwrap();
    (server, synced, shutdown)
}

#[tokio::test]
async fn clients_that_send_nothing_or_half_a_request_are_cut_off() {
    let (server, _synced, shutdown) = admin_server(AdminLimits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        ..AdminLimits::default()
    })
    .await;
    for partial in [&b"GET /readyz HTTP/1.1\r\nHo"[..], b""] {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        tcp.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        // Well under the default limits (10 s headers, 120 s idle): only the 500 ms ones close
        // the connection in time.
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "admin connection after {partial:?} not closed within 5 s"
        );
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }
    // A keep-alive connection left silent after an answer is closed too.
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    assert_eq!(get(&mut tcp, "/readyz").await, 200);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("an idle keep-alive connection is closed within 5 s")
        .ok();
    shutdown.start();
    tokio::time::timeout(Duration::from_secs(30), server.stopped())
        .await
        .expect("the admin server stops on shutdown");
}

#[tokio::test]
async fn the_connection_cap_holds_and_frees_up() {
    let cap = 4;
    let (server, _synced, shutdown) = admin_server(AdminLimits {
        max_connections: cap,
        ..AdminLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
        assert_eq!(get(&mut tcp, "/livez").await, 200);
        held.push(tcp);
    }
    // One more: the kernel completes the TCP handshake, the server does not take it.
    let mut extra = TcpStream::connect(server.addr()).await.unwrap();
    assert!(
        !answered_within(&mut extra, Duration::from_millis(700)).await,
        "a connection over the cap was served"
    );
    // A connection ends: the waiting one is accepted and its request answered.
    drop(held.pop());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&buf).contains("\r\n\r\nok\n") {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
        let n = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut chunk))
            .await
            .expect("the waiting connection is served once one ends")
            .unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    shutdown.start();
    tokio::time::timeout(Duration::from_secs(30), server.stopped())
        .await
        .expect("the admin server stops with open connections");
}

/// Kills the child on drop (a failed assertion must not leave an agent behind).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_agent_binary_serves_admin_with_the_cap_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    std::fs::create_dir(&pods).unwrap();
    let mut child = Guard(
        Command::new(BIN)
            .arg("agent")
            .arg("--pods-dir")
            .arg(&pods)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let admin: SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no 'admin endpoints' log line; got {seen:#?}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("admin endpoints"))
        {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
        seen.push(line);
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut tcp = TcpStream::connect(admin).await.unwrap();
            if get(&mut tcp, "/readyz").await == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "/readyz never 200");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The documented cap: 64 connections at once.
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while held.len() < 64 {
            let mut tcp = TcpStream::connect(admin).await.unwrap();
            // Connections of the readiness loop above may still be closing: retry until 64
            // are served and held.
            if answered_within(&mut tcp, Duration::from_secs(2)).await {
                held.push(tcp);
            }
            assert!(Instant::now() < deadline, "only {} served", held.len());
        }
        let mut extra = TcpStream::connect(admin).await.unwrap();
        assert!(
            !answered_within(&mut extra, Duration::from_millis(700)).await,
            "a 65th connection was served"
        );
        drop(held.pop());
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
            .await
            .expect("the 65th connection is served once one ends")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    });
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let logs: Vec<String> = rx.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("SIGTERM")), "{logs:#?}");
}
