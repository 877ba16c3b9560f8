//! A bounded-time HTTPS load generator for `hotnic webhook`, against loopback addresses only.
//!
//! ```text
//! cargo run --release -- webhook --dev &            # serves 127.0.0.1:8443 with certs/ca.crt
//! cargo run --release --example loadgen -- --seconds 10 --connections 8
//! ```
//!
//! Each connection is one keep-alive HTTP/1.1 client (like the API server's pooled
//! connections) that trusts only `--ca` and posts the captured fixtures round-robin to the
//! endpoint matching each file name (`NNN-mutate-…` → `/mutate`). `--fresh-connections` opens
//! a new TLS connection per request instead (full handshake each time). Every answer is checked
//! (200, uid echoed). Prints requests/s and latency percentiles.
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest run allowed.
const MAX_SECONDS: u64 = 120;

struct Args {
    addr: SocketAddr,
    ca: PathBuf,
    seconds: u64,
    connections: usize,
    fixtures: PathBuf,
    /// A new TLS connection (full handshake) per request instead of keep-alive.
    fresh: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        addr: "127.0.0.1:8443".parse()?,
        ca: "certs/ca.crt".into(),
        seconds: 10,
        connections: 8,
        fixtures: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/apiserver-v1.32"
        )
        .into(),
        fresh: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?.parse().context("--addr IP:PORT")?,
            "--ca" => a.ca = value()?.into(),
            "--seconds" => a.seconds = value()?.parse().context("--seconds N")?,
            "--connections" => a.connections = value()?.parse().context("--connections N")?,
            "--fixtures" => a.fixtures = value()?.into(),
            "--fresh-connections" => a.fresh = true,
            "-h" | "--help" => {
                println!(
                    "loadgen [--addr 127.0.0.1:8443] [--ca certs/ca.crt] [--seconds 10] [--connections 8] [--fixtures DIR] [--fresh-connections]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    if !a.addr.ip().is_loopback() {
        bail!(
            "loadgen only targets loopback addresses, not {}",
            a.addr.ip()
        );
    }
    if a.seconds == 0 || a.seconds > MAX_SECONDS {
        bail!("--seconds must be 1..={MAX_SECONDS}");
    }
    if a.connections == 0 || a.connections > 256 {
        bail!("--connections must be 1..=256");
    }
    Ok(a)
}

/// (path, uid, body) per fixture.
fn load_fixtures(dir: &PathBuf) -> Result<Vec<(&'static str, String, bytes::Bytes)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let raw = std::fs::read(&p)?;
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let path = if name.split('-').nth(1) == Some("mutate") {
            "/mutate"
        } else {
            "/validate"
        };
        let uid = v["request"]["uid"].as_str().unwrap_or_default().to_string();
        out.push((path, uid, raw.into()));
    }
    if out.is_empty() {
        bail!("no *.json fixtures in {}", dir.display());
    }
    Ok(out)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("loadgen: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = parse_args()?;
    let ca = std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;
    let fixtures = std::sync::Arc::new(load_fixtures(&args.fixtures)?);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.connections {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .resolve("localhost", args.addr)
            .http1_only()
            .pool_max_idle_per_host(usize::from(!args.fresh))
            .timeout(Duration::from_secs(10))
            .build()?;
        let fixtures = fixtures.clone();
        let base = format!("https://localhost:{}", args.addr.port());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = worker;
            while Instant::now() < deadline {
                let (path, uid, body) = &fixtures[i % fixtures.len()];
                i += 1;
                let t = Instant::now();
                let ok = match client
                    .post(format!("{base}{path}?timeout=10s"))
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        r.bytes().await.is_ok_and(|b| contains(&b, uid.as_bytes()))
                    }
                    _ => false,
                };
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1000.0
    };
    println!(
        "{} ok, {errors} errors in {elapsed:.1} s over {} {}connections: {:.0} req/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        all.len(),
        args.connections,
        if args.fresh { "fresh " } else { "keep-alive " },
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
