//! A bounded-time load generator that calls a webhook as the API server does, against loopback
//! addresses only, and checks every answer.
//!
//! ```text
//! cargo run --release -- webhook --dev &                     # serves 127.0.0.1:8443, certs/ca.crt
//! cargo run --release --example loadgen -- --seconds 10      # the mix, 25 connections, max rate
//! cargo run --release --example loadgen -- --review create4 --rate 2000 --seconds 60
//! ```
//!
//! - **Connections:** `--connections N` (25) keep-alive HTTP/1.1 connections over TLS (ALPN
//!   `http/1.1`, trusting only `--ca`), a small HTTP/1.1 client of our own so that the generator
//!   costs little of the CPU it shares with the server. `--fresh-connections`: a new TLS
//!   connection (full handshake) per request instead.
//! - **Closed loop** (default): each connection sends its next review as soon as the last is
//!   answered; latency from send to answer. **Open loop** (`--rate R`): reviews are due at
//!   `start + k/R` (a timer thread hands them out); an idle connection takes the next one due, and
//!   latency runs from the *intended* send time, so a slow server cannot hide its queue
//!   (no coordinated omission).
//! - **Reviews** (`--review`), built from the captured fixtures (`--fixtures`), each with a fresh
//!   UUID-shaped `request.uid` per request: `create4` (fixture 001, a Multus pod CREATE with 4
//!   NICs, MACs and the capacity annotation stripped → `/mutate`), `hotplug` (fixture 007: an
//!   UPDATE adding `eth3` to a pod whose `eth1`, `eth2` have MACs → `/mutate`), `invalid` (fixture
//!   008: an UPDATE changing `eth1`'s MAC and adding an unnamed NIC → `/validate`), `nonic`
//!   (fixture 001 without NICs → `/mutate`); `mix` (default) sends them in turn; `captured` sends
//!   every captured fixture in turn to the endpoint its name says.
//! - **Checks** (`--expect hotnic`, default), every answer: status 200, `AdmissionReview` v1, the
//!   uid echoed, the verdict (`create4`, `hotplug`: allowed with a JSONPatch that applies to the
//!   object with `json-patch` and leaves a valid MAC on every NIC, unique in the pod, the MACs
//!   already there kept; `nonic`: allowed, no patch; `invalid`: denied with code 403;
//!   `captured`: any verdict). `--expect constant` (the limit server): the uid and `allowed: true`
//!   only. Any wrong or failed answer makes the exit status 1.
//! - **Reports** requests/s, latency p50/p90/p99/p99.9/max, wrong and failed answers, and CPU
//!   per request of the generator and (`--server-pid`) of the server; `--kv` adds one
//!   `RESULT key=value …` line for scripts (`bench/compare.sh`).
use anyhow::{Context, Result, bail};
use base64::Engine;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Longest measured run allowed (warm-up not included).
const MAX_SECONDS: f64 = 120.0;
/// Longest a single request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How many wrong answers are printed in full.
const SHOWN_WRONG: usize = 5;
/// Multus' annotation and the capacity annotation.
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const CAPACITY: &str = "hotnic.io/interface-capacity";
/// A UUID-shaped stand-in for the uid, replaced per request.
const UID_SLOT: &str = "########-####-####-####-############";

const USAGE: &str = "loadgen [--addr 127.0.0.1:8443] [--ca certs/ca.crt] [--seconds 10] [--warmup 1] \
[--connections 25] [--rate R] [--review mix|create4|hotplug|invalid|nonic|captured] \
[--expect hotnic|constant] [--threads 1] [--server-pid PID] [--fixtures DIR] [--fresh-connections] [--kv]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpectMode {
    /// hotnic's real verdicts and patches.
    Hotnic,
    /// The limit server: uid and `allowed: true` only.
    Constant,
}

struct Args {
    addr: SocketAddr,
    ca: PathBuf,
    seconds: f64,
    warmup: f64,
    connections: usize,
    rate: Option<f64>,
    review: String,
    expect: ExpectMode,
    threads: usize,
    server_pid: Option<u32>,
    fixtures: PathBuf,
    fresh: bool,
    kv: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        addr: "127.0.0.1:8443".parse()?,
        ca: "certs/ca.crt".into(),
        seconds: 10.0,
        warmup: 1.0,
        connections: 25,
        rate: None,
        review: "mix".into(),
        expect: ExpectMode::Hotnic,
        threads: 1,
        server_pid: None,
        fixtures: concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/apiserver-v1.32"
        )
        .into(),
        fresh: false,
        kv: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?.parse().context("--addr IP:PORT")?,
            "--ca" => a.ca = value()?.into(),
            "--seconds" => a.seconds = value()?.parse().context("--seconds S")?,
            "--warmup" => a.warmup = value()?.parse().context("--warmup S")?,
            "--connections" => a.connections = value()?.parse().context("--connections N")?,
            "--rate" => a.rate = Some(value()?.parse().context("--rate REVIEWS_PER_SECOND")?),
            "--review" => a.review = value()?,
            "--expect" => {
                a.expect = match value()?.as_str() {
                    "hotnic" => ExpectMode::Hotnic,
                    "constant" => ExpectMode::Constant,
                    other => bail!("--expect hotnic|constant, not {other:?}"),
                }
            }
            "--threads" => a.threads = value()?.parse().context("--threads N")?,
            "--server-pid" => a.server_pid = Some(value()?.parse().context("--server-pid PID")?),
            "--fixtures" => a.fixtures = value()?.into(),
            "--fresh-connections" => a.fresh = true,
            "--kv" => a.kv = true,
            "-h" | "--help" => {
                println!("{USAGE}");
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
    if !(a.seconds > 0.0 && a.seconds <= MAX_SECONDS) {
        bail!("--seconds must be in (0, {MAX_SECONDS}]");
    }
    if !(0.0..=30.0).contains(&a.warmup) {
        bail!("--warmup must be in [0, 30]");
    }
    if a.connections == 0 || a.connections > 256 {
        bail!("--connections must be 1..=256");
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r <= 1_000_000.0)) {
        bail!("--rate must be in (0, 1000000]");
    }
    if a.threads == 0 || a.threads > 16 {
        bail!("--threads must be 1..=16");
    }
    Ok(a)
}

/// What a right answer to a review looks like.
#[derive(Debug)]
enum Expect {
    /// Allowed with a JSONPatch that, applied to `object`, leaves a valid MAC on every Multus NIC
    /// (unique in the pod) and keeps the `kept` (interface, MAC) pairs.
    Patched {
        object: Value,
        kept: Vec<(String, String)>,
    },
    /// Allowed without a patch.
    Untouched,
    /// Denied with this HTTP-style code in `status.code`.
    Denied(u16),
    /// Any verdict (the captured fixtures).
    AnyVerdict,
    /// `allowed: true` (the limit server).
    Constant,
}

/// One review as sent: the body around the uid slot, the endpoint, what to expect.
#[derive(Debug)]
struct Review {
    name: String,
    path: &'static str,
    /// The body before and after the uid.
    before: Vec<u8>,
    after: Vec<u8>,
    expect: Expect,
}

impl Review {
    /// `review` with `request.uid` replaced by the slot that each request fills in.
    fn new(name: &str, path: &'static str, mut review: Value, expect: Expect) -> Result<Self> {
        review["request"]["uid"] = json!(UID_SLOT);
        let body = serde_json::to_vec(&review)?;
        let at = find(&body, UID_SLOT.as_bytes()).context("the uid slot")?;
        Ok(Review {
            name: name.into(),
            path,
            before: body[..at].to_vec(),
            after: body[at + UID_SLOT.len()..].to_vec(),
            expect,
        })
    }

    /// The whole HTTP/1.1 request with `uid`, into `out`.
    fn write_request(&self, uid: &str, host: &str, out: &mut Vec<u8>) {
        out.clear();
        let len = self.before.len() + uid.len() + self.after.len();
        // What the API server's client sends (Go net/http), less gzip.
        let _ = write!(
            out,
            "POST {}?timeout=10s HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hotnic-loadgen\r\n\
             Content-Length: {len}\r\nAccept: application/json, */*\r\n\
             Content-Type: application/json\r\n\r\n",
            self.path
        );
        out.extend_from_slice(&self.before);
        out.extend_from_slice(uid.as_bytes());
        out.extend_from_slice(&self.after);
    }
}

fn read_fixture(dir: &Path, prefix: &str) -> Result<Value> {
    let entry = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .with_context(|| format!("no fixture {prefix}-* in {}", dir.display()))?;
    let raw = std::fs::read(entry.path())?;
    serde_json::from_slice(&raw).with_context(|| format!("parsing {}", entry.path().display()))
}

/// The annotations of `object` (made if missing).
fn annotations(object: &mut Value) -> Result<&mut serde_json::Map<String, Value>> {
    let meta = object
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .context("metadata")?;
    meta.entry("annotations").or_insert_with(|| json!({}));
    meta["annotations"]
        .as_object_mut()
        .context("metadata.annotations")
}

/// The elements of the Multus annotation (empty if there is none).
fn multus_nics(object: &Value) -> Result<Vec<Value>, String> {
    let Some(raw) = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(NETWORKS))
    else {
        return Ok(Vec::new());
    };
    let raw = raw
        .as_str()
        .ok_or("the networks annotation is not a string")?;
    let nics: Vec<Value> = serde_json::from_str(raw)
        .map_err(|e| format!("the networks annotation is not a JSON list: {e}"))?;
    Ok(nics)
}

fn set_multus_nics(object: &mut Value, nics: &[Value]) -> Result<()> {
    annotations(object)?.insert(NETWORKS.into(), json!(serde_json::to_string(nics)?));
    Ok(())
}

fn nic(
    network: &str,
    namespace: Option<&str>,
    interface: Option<&str>,
    mac: Option<&str>,
) -> Value {
    let mut n = json!({ "name": network });
    if let Some(ns) = namespace {
        n["namespace"] = json!(ns);
    }
    if let Some(i) = interface {
        n["interface"] = json!(i);
    }
    if let Some(m) = mac {
        n["mac"] = json!(m);
    }
    n
}

/// The named review set.
fn build_reviews(which: &str, dir: &Path, mode: ExpectMode) -> Result<Vec<Review>> {
    let pick = |e: Expect| {
        if mode == ExpectMode::Constant {
            Expect::Constant
        } else {
            e
        }
    };
    let create4 = || -> Result<Review> {
        let mut r = read_fixture(dir, "001")?;
        let object = &mut r["request"]["object"];
        // Fixture 001's two NICs without their MACs, twice over: eth1..eth4.
        let mut nics = multus_nics(object).map_err(anyhow::Error::msg)?;
        if nics.len() != 2 {
            bail!("fixture 001 should have 2 Multus NICs");
        }
        for (i, n) in nics.clone().into_iter().enumerate() {
            let mut n = n;
            n["interface"] = json!(format!("eth{}", i + 3));
            nics.push(n);
        }
        for n in &mut nics {
            n.as_object_mut().context("a NIC")?.remove("mac");
        }
        set_multus_nics(object, &nics)?;
        annotations(object)?.remove(CAPACITY);
        let expect = Expect::Patched {
            object: object.clone(),
            kept: Vec::new(),
        };
        Review::new("create4", "/mutate", r, pick(expect))
    };
    let hotplug = || -> Result<Review> {
        let mut r = read_fixture(dir, "007")?;
        let old = vec![
            nic(
                "macvlan-conf",
                None,
                Some("eth1"),
                Some("02:aa:bb:cc:dd:01"),
            ),
            nic(
                "bridge-conf",
                Some("demo"),
                Some("eth2"),
                Some("02:aa:bb:cc:dd:02"),
            ),
        ];
        let mut new = old.clone();
        new.push(nic("bridge-conf", Some("demo"), Some("eth3"), None));
        set_multus_nics(&mut r["request"]["oldObject"], &old)?;
        set_multus_nics(&mut r["request"]["object"], &new)?;
        let expect = Expect::Patched {
            object: r["request"]["object"].clone(),
            kept: vec![
                ("eth1".into(), "02:aa:bb:cc:dd:01".into()),
                ("eth2".into(), "02:aa:bb:cc:dd:02".into()),
            ],
        };
        Review::new("hotplug", "/mutate", r, pick(expect))
    };
    let invalid = || -> Result<Review> {
        let mut r = read_fixture(dir, "008")?;
        let old = vec![
            nic(
                "macvlan-conf",
                None,
                Some("eth1"),
                Some("02:aa:bb:cc:dd:01"),
            ),
            nic(
                "bridge-conf",
                Some("demo"),
                Some("eth2"),
                Some("02:aa:bb:cc:dd:02"),
            ),
        ];
        let new = vec![
            nic(
                "macvlan-conf",
                None,
                Some("eth1"),
                Some("02:aa:bb:cc:dd:99"),
            ),
            nic(
                "bridge-conf",
                Some("demo"),
                Some("eth2"),
                Some("02:aa:bb:cc:dd:02"),
            ),
            nic("bridge-conf", Some("demo"), None, None),
        ];
        set_multus_nics(&mut r["request"]["oldObject"], &old)?;
        set_multus_nics(&mut r["request"]["object"], &new)?;
        // Not allowed either way: the limit server still says allowed, so expect that there.
        Review::new("invalid", "/validate", r, pick(Expect::Denied(403)))
    };
    let nonic = || -> Result<Review> {
        let mut r = read_fixture(dir, "001")?;
        let a = annotations(&mut r["request"]["object"])?;
        a.remove(NETWORKS);
        a.remove(CAPACITY);
        Review::new("nonic", "/mutate", r, pick(Expect::Untouched))
    };
    Ok(match which {
        "mix" => vec![create4()?, hotplug()?, invalid()?, nonic()?],
        "create4" => vec![create4()?],
        "hotplug" => vec![hotplug()?],
        "invalid" => vec![invalid()?],
        "nonic" => vec![nonic()?],
        "captured" => captured(dir, mode)?,
        other => bail!("--review mix|create4|hotplug|invalid|nonic|captured, not {other:?}"),
    })
}

/// Every captured fixture, to the endpoint its name says (`NNN-mutate-…` → `/mutate`).
fn captured(dir: &Path, mode: ExpectMode) -> Result<Vec<Review>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&p)?)
            .with_context(|| format!("parsing {}", p.display()))?;
        let name = p.file_stem().unwrap_or_default().to_string_lossy();
        let path = if name.split('-').nth(1) == Some("mutate") {
            "/mutate"
        } else {
            "/validate"
        };
        let expect = match mode {
            ExpectMode::Hotnic => Expect::AnyVerdict,
            ExpectMode::Constant => Expect::Constant,
        };
        out.push(Review::new(&name, path, v, expect)?);
    }
    if out.is_empty() {
        bail!("no *.json fixtures in {}", dir.display());
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerIn {
    api_version: String,
    kind: String,
    response: ResponseIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseIn {
    uid: String,
    allowed: bool,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    patch_type: Option<String>,
    #[serde(default)]
    status: Option<StatusIn>,
}

#[derive(Deserialize)]
struct StatusIn {
    #[serde(default)]
    code: Option<u16>,
}

/// Whether `body` (status `status`) is a right answer to `review` sent with `uid`, all but the
/// patch itself: `Ok(Some(patch))` leaves that to [`check_patch`].
fn check(review: &Review, uid: &str, status: u16, body: &[u8]) -> Result<Option<String>, String> {
    if status != 200 {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let a: AnswerIn =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if a.api_version != "admission.k8s.io/v1" || a.kind != "AdmissionReview" {
        return Err(format!("apiVersion/kind {}/{}", a.api_version, a.kind));
    }
    let r = a.response;
    if r.uid != uid {
        return Err(format!("uid {:?} answered to {uid:?}", r.uid));
    }
    match &review.expect {
        Expect::Constant if r.allowed => Ok(None),
        Expect::Constant => Err("denied".into()),
        Expect::AnyVerdict => Ok(None),
        Expect::Untouched if !r.allowed => Err("denied".into()),
        Expect::Untouched if r.patch.is_some() => Err("a patch for an object with no NICs".into()),
        Expect::Untouched => Ok(None),
        Expect::Denied(code) if r.allowed => Err(format!("allowed, expected a denial {code}")),
        Expect::Denied(code) => match r.status.and_then(|s| s.code) {
            Some(c) if c == *code => Ok(None),
            other => Err(format!("denied with code {other:?}, expected {code}")),
        },
        Expect::Patched { .. } if !r.allowed => {
            Err(format!("denied (code {:?})", r.status.and_then(|s| s.code)))
        }
        Expect::Patched { .. } if r.patch_type.as_deref() != Some("JSONPatch") => {
            Err(format!("patchType {:?}", r.patch_type))
        }
        Expect::Patched { .. } => r.patch.map(Some).ok_or("allowed without a patch".into()),
    }
}

/// Whether the base64 `patch` answered to `review` (an [`Expect::Patched`] one) applies to its
/// object with `json-patch` and leaves the MACs right.
fn check_patch(review: &Review, patch: &str) -> Result<(), String> {
    let Expect::Patched { object, kept } = &review.expect else {
        return Err(format!("{}: no patch expected", review.name));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("patch not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&raw).map_err(|e| format!("patch not a JSONPatch: {e}"))?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch.0)
        .map_err(|e| format!("the patch does not apply: {e}"))?;
    check_macs(object, &patched, kept)
}

/// Every Multus NIC of `patched` (as many as in `object`) has a valid MAC, unique in the pod,
/// and the `kept` ones are unchanged.
fn check_macs(object: &Value, patched: &Value, kept: &[(String, String)]) -> Result<(), String> {
    let before = multus_nics(object)?;
    let after = multus_nics(patched)?;
    if after.len() != before.len() {
        return Err(format!("{} NICs became {}", before.len(), after.len()));
    }
    let mut seen = HashSet::new();
    for n in &after {
        let ifname = n["interface"].as_str().unwrap_or("?");
        let Some(mac) = n["mac"].as_str() else {
            return Err(format!("{ifname} has no MAC after the patch"));
        };
        if !valid_mac(mac) {
            return Err(format!("{ifname}: {mac:?} is not a MAC"));
        }
        if !seen.insert(mac.to_ascii_lowercase()) {
            return Err(format!("{ifname}: MAC {mac} given twice in the pod"));
        }
        if let Some((_, was)) = kept.iter().find(|(i, _)| i == ifname)
            && !was.eq_ignore_ascii_case(mac)
        {
            return Err(format!("{ifname}: MAC {was} changed to {mac}"));
        }
    }
    Ok(())
}

fn valid_mac(s: &str) -> bool {
    let parts: Vec<_> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One keep-alive HTTP/1.1 connection over TLS.
struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

/// An answer: status, where the body is in the connection's buffer, whether the server closes.
struct Answer {
    status: u16,
    body: std::ops::Range<usize>,
    close: bool,
}

impl Conn {
    async fn open(addr: SocketAddr, tls: &TlsConnector) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Conn {
            tls,
            buf: Vec::with_capacity(16 << 10),
        })
    }

    /// Sends `request`, reads one answer (Content-Length framed; hyper frames every answer of a
    /// known size so).
    async fn exchange(&mut self, request: &[u8]) -> Result<Answer, String> {
        self.tls
            .write_all(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        self.tls.flush().await.map_err(|e| format!("send: {e}"))?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 << 10 {
                return Err("answer headers over 64 KiB".into());
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "answer headers are not UTF-8".to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("status line {status_line:?}"))?;
        let (mut len, mut close) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                len = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("Transfer-Encoding {value} (not supported here)"));
            }
        }
        let len = len.ok_or("an answer without Content-Length")?;
        if len > 16 << 20 {
            return Err(format!("an answer of {len} bytes"));
        }
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        Ok(Answer {
            status,
            body: head_end..head_end + len,
            close,
        })
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.buf.reserve(16 << 10);
        match self.tls.read_buf(&mut self.buf).await {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("receive: {e}")),
        }
    }
}

/// Bytes of distinct patches kept for checking after the run, at most; past that they are
/// checked at once.
const DEFERRED_BYTES: usize = 256 << 20;

/// Patches to check after the run, each distinct one once: (the review's index, the base64
/// patch) → (the uid of its first answer, how many answers carried it). The same patch to the
/// same review applies the same way however often it comes, so checking it once checks every
/// answer that carried it; keeping them all would spend the budget (and the client's CPU on
/// checks during the run) on copies.
type Deferred = hotnic::fast_hash::FastMap<(usize, String), (String, u64)>;

/// What one connection saw in the measured window (and the wrong answers at any time).
#[derive(Default)]
struct Tally {
    /// Patches to check after the run.
    deferred: Deferred,
    /// Patches checked at once (the deferred budget was spent).
    checked_at_once: u64,
    /// Answers whose patch was checked after the run.
    patches_checked: u64,
    /// Distinct (review, patch) pairs among them.
    distinct_patches: u64,
    /// Latencies of right answers in the window, nanoseconds.
    latencies: Vec<u64>,
    /// Open loop: how late requests went out after their intended time, nanoseconds.
    lag: Vec<u64>,
    wrong: u64,
    failed: u64,
    shown: Vec<String>,
}

impl Tally {
    fn note(&mut self, what: String) {
        if self.shown.len() < SHOWN_WRONG {
            self.shown.push(what);
        }
    }
}

/// The shared plan of a run.
struct Plan {
    reviews: Vec<Review>,
    addr: SocketAddr,
    host: String,
    tls: TlsConnector,
    fresh: bool,
    /// Bytes of deferred patches so far (all connections).
    deferred_bytes: std::sync::atomic::AtomicUsize,
    /// Measured window.
    window_start: Instant,
    deadline: Instant,
}

/// A due request of the open loop: its number and intended send time.
type Due = (u64, Instant);

async fn connection(
    plan: Arc<Plan>,
    worker: usize,
    due: Option<Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Due>>>>,
) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut request = Vec::with_capacity(16 << 10);
    let mut seq = 0u64;
    loop {
        // The next review: the next due one (open loop), or at once (closed loop).
        let (k, intended) = match &due {
            Some(rx) => match rx.lock().await.recv().await {
                Some(d) => d,
                None => break,
            },
            None => {
                let now = Instant::now();
                if now >= plan.deadline {
                    break;
                }
                (worker as u64 + seq, now)
            }
        };
        seq += 1;
        let index = (k % plan.reviews.len() as u64) as usize;
        let review = &plan.reviews[index];
        let uid = format!("{worker:08x}-0000-4000-8000-{seq:012x}");
        review.write_request(&uid, &plan.host, &mut request);
        let sent = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let c = match conn.take() {
                Some(c) if !plan.fresh => c,
                _ => Conn::open(plan.addr, &plan.tls).await?,
            };
            let mut c = c;
            let a = c.exchange(&request).await?;
            Ok::<_, String>((c, a))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
        let done = Instant::now();
        // Open loop: every request due in the window counts, however late it ends; closed loop:
        // those sent and answered within it.
        let measured = intended >= plan.window_start && (due.is_some() || done <= plan.deadline);
        match result {
            Ok((c, a)) => {
                // The patch is applied after the run (the clock and the CPU shares are then the
                // same as against a server answering without one), unless that is too much to
                // keep.
                let checked =
                    check(review, &uid, a.status, &c.buf[a.body.clone()]).and_then(|patch| {
                        let Some(patch) = patch else { return Ok(()) };
                        let key = (index, patch);
                        if let Some((_, n)) = t.deferred.get_mut(&key) {
                            *n += 1;
                            return Ok(());
                        }
                        let patch = key.1;
                        let kept = plan
                            .deferred_bytes
                            .fetch_add(patch.len(), std::sync::atomic::Ordering::Relaxed);
                        if kept + patch.len() <= DEFERRED_BYTES {
                            t.deferred.insert((index, patch), (uid.clone(), 1));
                            Ok(())
                        } else {
                            t.checked_at_once += 1;
                            check_patch(review, &patch)
                        }
                    });
                match checked {
                    Ok(()) if measured => {
                        t.latencies.push((done - intended).as_nanos() as u64);
                        if due.is_some() {
                            t.lag.push((sent - intended).as_nanos() as u64);
                        }
                    }
                    Ok(()) => {}
                    Err(why) => {
                        t.wrong += 1;
                        t.note(format!(
                            "wrong answer to {} (uid {uid}): {why}",
                            review.name
                        ));
                    }
                }
                if !a.close {
                    conn = Some(c);
                }
            }
            Err(why) => {
                t.failed += 1;
                t.note(format!("request {} (uid {uid}) failed: {why}", review.name));
                // Do not spin against a server that is gone.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

/// Hands out due times at `rate` per second from `start` until `deadline`, from a thread of its
/// own: the runtime's timer has 1 ms granularity, too coarse for sub-millisecond latencies.
fn pacer(
    rate: f64,
    start: Instant,
    deadline: Instant,
    tx: tokio::sync::mpsc::UnboundedSender<Due>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut k = 0u64;
        loop {
            let at = start + period.mul_f64(k as f64);
            if at >= deadline {
                return;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            // Everything due by now goes out at once.
            let now = Instant::now();
            loop {
                let at = start + period.mul_f64(k as f64);
                if at > now || at >= deadline {
                    break;
                }
                if tx.send((k, at)).is_err() {
                    return;
                }
                k += 1;
            }
        }
    })
}

/// User + system CPU time of a process so far (`/proc/PID/stat`, in USER_HZ = 100 ticks/s).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces) start at the state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn tls_connector(ca: &Path) -> Result<TlsConnector> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

fn main() {
    let code = match parse_args().and_then(|args| {
        let rt = if args.threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads)
                .enable_all()
                .build()?
        };
        rt.block_on(run(args))
    }) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

/// Runs the load; `Ok(false)` if any answer was wrong or failed.
async fn run(args: Args) -> Result<bool> {
    let reviews = build_reviews(&args.review, &args.fixtures, args.expect)?;
    let tls = tls_connector(&args.ca)?;
    // Fail early and clearly if nothing listens.
    Conn::open(args.addr, &tls)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("connecting to {}", args.addr))?;
    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(args.warmup);
    let deadline = window_start + Duration::from_secs_f64(args.seconds);
    let plan = Arc::new(Plan {
        reviews,
        addr: args.addr,
        host: format!("localhost:{}", args.addr.port()),
        tls,
        fresh: args.fresh,
        deferred_bytes: Default::default(),
        window_start,
        deadline,
    });
    let (due, pacer) = match args.rate {
        Some(rate) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            (Some(rx), Some(pacer(rate, start, deadline, tx)))
        }
        None => (None, None),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.connections {
        tasks.spawn(connection(plan.clone(), worker, due.clone()));
    }
    drop(due);
    // CPU use over the measured window.
    tokio::time::sleep_until(window_start.into()).await;
    let cpu0 = (
        cpu_time(None),
        args.server_pid.and_then(|p| cpu_time(Some(p))),
    );
    tokio::time::sleep_until(deadline.into()).await;
    let cpu1 = (
        cpu_time(None),
        args.server_pid.and_then(|p| cpu_time(Some(p))),
    );
    // Requests still out end within their timeout; a pacer backlog is drained by then too.
    let mut total = Tally::default();
    let cut_off = deadline + REQUEST_TIMEOUT + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(cut_off.into(), tasks.join_next()).await {
            Ok(Some(t)) => {
                let t = t?;
                total.latencies.extend(t.latencies);
                for (key, (uid, n)) in t.deferred {
                    total.deferred.entry(key).or_insert((uid, 0)).1 += n;
                }
                total.checked_at_once += t.checked_at_once;
                total.lag.extend(t.lag);
                total.wrong += t.wrong;
                total.failed += t.failed;
                for s in t.shown {
                    total.note(s);
                }
            }
            Ok(None) => break,
            Err(_) => {
                let left = tasks.len();
                tasks.abort_all();
                total.failed += left as u64;
                total.note(format!(
                    "{left} connections still busy {:?} after the end",
                    cut_off - deadline
                ));
                break;
            }
        }
    }
    if let Some(p) = pacer {
        let _ = p.join();
    }
    // The patches kept for now. A wrong one is a wrong answer; its latency stays counted (it is
    // known only now), which changes nothing as the run fails.
    for ((index, patch), (uid, n)) in std::mem::take(&mut total.deferred) {
        let review = &plan.reviews[index];
        total.patches_checked += n;
        total.distinct_patches += 1;
        if let Err(why) = check_patch(review, &patch) {
            total.wrong += n;
            total.note(format!(
                "wrong patch for {} (uid {uid}, carried by {n} answers): {why}",
                review.name
            ));
        }
    }
    report(&args, &plan, total, cpu0, cpu1)
}

type Cpu = (Option<Duration>, Option<Duration>);

fn report(args: &Args, plan: &Plan, mut t: Tally, cpu0: Cpu, cpu1: Cpu) -> Result<bool> {
    let window = (plan.deadline - plan.window_start).as_secs_f64();
    let ok = t.latencies.len() as u64;
    let rps = ok as f64 / window;
    t.latencies.sort_unstable();
    t.lag.sort_unstable();
    let pct = |v: &[u64], p: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1e6
    };
    let l = &t.latencies;
    let per_req = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => Some((b - a).as_secs_f64() * 1e6 / ok as f64),
        _ => None,
    };
    let client_cpu = per_req(cpu0.0, cpu1.0);
    let server_cpu = per_req(cpu0.1, cpu1.1);
    let loop_kind = match args.rate {
        Some(r) => format!("open loop at {r} rps"),
        None => "closed loop".into(),
    };
    let mut line = format!(
        "{} {}, {} {}connections, {window:.1} s: {rps:.0} rps ({ok} ok, {} wrong, {} failed); \
         latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        args.review,
        loop_kind,
        args.connections,
        if args.fresh { "fresh " } else { "keep-alive " },
        t.wrong,
        t.failed,
        pct(l, 0.50),
        pct(l, 0.90),
        pct(l, 0.99),
        pct(l, 0.999),
        pct(l, 1.0),
    );
    if args.rate.is_some() {
        line += &format!(
            "; send lag ms p99 {:.3} max {:.3}",
            pct(&t.lag, 0.99),
            pct(&t.lag, 1.0)
        );
    }
    if let Some(c) = client_cpu {
        line += &format!("; cpu µs/review: loadgen {c:.0}");
        if let Some(s) = server_cpu {
            line += &format!(", server {s:.0}");
        }
    }
    let patches = t.patches_checked + t.checked_at_once;
    if patches > 0 {
        line += &format!(
            "; {patches} patches applied and checked ({} distinct after the run, {} during it)",
            t.distinct_patches, t.checked_at_once
        );
    }
    println!("{line}");
    if args.kv {
        let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        println!(
            "RESULT review={} rate={} connections={} seconds={window:.1} rps={rps:.1} ok={ok} \
             wrong={} failed={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} \
             loadgen_cpu_us={} server_cpu_us={}",
            args.review,
            args.rate.map_or("max".into(), |r| r.to_string()),
            args.connections,
            t.wrong,
            t.failed,
            pct(l, 0.50),
            pct(l, 0.90),
            pct(l, 0.99),
            pct(l, 0.999),
            pct(l, 1.0),
            opt(client_cpu),
            opt(server_cpu),
        );
    }
    for s in &t.shown {
        eprintln!("loadgen: {s}");
    }
    let bad = t.wrong + t.failed;
    if bad > 0 {
        eprintln!("loadgen: {bad} answers wrong or failed");
    } else if ok == 0 {
        eprintln!("loadgen: no answer in the measured window");
    }
    Ok(bad == 0 && ok > 0)
}
