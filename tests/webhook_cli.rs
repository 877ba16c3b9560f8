//! The `hotnic certs` and `hotnic webhook` commands, run as the real binary.

mod webhook_support;

use base64::Engine;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use webhook_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_hotnic");

/// Kills the child on drop (a failed assertion must not leave a server behind).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn certs_writes_a_ca_and_a_serving_pair_and_prints_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(&out_dir)
        .args([
            "--dns",
            "hotnic-webhook.hotnic-system.svc",
            "--dns",
            "localhost",
        ])
        .args(["--ip", "127.0.0.1", "--ip", "10.0.0.7", "--days", "10"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ca = std::fs::read_to_string(out_dir.join("ca.crt")).unwrap();
    let bundle = stdout
        .lines()
        .find_map(|l| l.strip_prefix("caBundle: "))
        .unwrap_or_else(|| panic!("no caBundle line in {stdout}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .unwrap();
    assert_eq!(decoded, ca.as_bytes(), "caBundle is base64 of ca.crt");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");

    let info =
        hotnic::webhook::tls::inspect(&std::fs::read(out_dir.join("tls.crt")).unwrap()).unwrap();
    assert!(
        info.dns
            .contains(&"hotnic-webhook.hotnic-system.svc".to_string()),
        "{info:?}"
    );
    assert!(info.ips.contains(&"10.0.0.7".to_string()), "{info:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (info.not_after - (now + 10 * 86_400)).abs() < 3600,
        "{info:?}"
    );

    // The serving pair chains to the CA: a client trusting only ca.crt talks to a server using it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut running =
            hotnic::webhook::start(config(&out_dir.join("tls.crt"), &out_dir.join("tls.key")))
                .await
                .unwrap();
        let c = client_for(running.addr, &[&ca], |b| b.http1_only());
        let (name, raw, review) = fixtures().into_iter().next().unwrap();
        let r = c
            .post(format!(
                "https://localhost:{}{}",
                running.addr.port(),
                endpoint_of(&name)
            ))
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        check_answer(&name, endpoint_of(&name), &review, &r.json().await.unwrap());
        running.shutdown();
    });
}

/// Text logs written to a pipe (as a container runtime or a file gets them) carry no ANSI
/// colour sequences.
#[test]
fn text_logs_to_a_pipe_are_plain() {
    let dir = tempfile::tempdir().unwrap();
    let (_child, lines) = spawn_webhook(
        dir.path(),
        &[
            "--dev",
            "--dev-certs-dir",
            "certs",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        "text",
    );
    let seen = lines_until(&lines, |l| l.contains("hotnic webhook serving"));
    assert!(seen.len() >= 2, "{seen:#?}");
    for line in &seen {
        assert!(!line.contains('\x1b'), "escape sequence in {line:?}");
        assert!(line.contains("INFO") || line.contains("WARN"), "{line:?}");
    }
}

#[test]
fn certs_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--dns", "not a name!"],
        vec!["--ip", "300.1.2.3"],
        vec!["--days", "0"],
    ] {
        let out = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(dir.path().join("x"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
}

type Logs = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Spawns `hotnic webhook` with `args` in `cwd`, logging in `format` (`RUST_LOG` and `NO_COLOR`
/// unset); its stderr lines arrive on the receiver as they are written.
fn spawn_webhook(
    cwd: &std::path::Path,
    args: &[&str],
    format: &str,
) -> (Guard, std::sync::mpsc::Receiver<String>) {
    let mut child = Guard(
        Command::new(BIN)
            .arg("webhook")
            .args(args)
            .args(["--log-format", format])
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
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
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The lines from `rx` up to and including the first that `last` accepts; fails after 30 s.
fn lines_until(rx: &std::sync::mpsc::Receiver<String>, last: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no 'serving' log line; got {seen:#?}"));
        let done = last(&line);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// Starts `hotnic webhook` with `args` in `cwd`; returns the child, the TLS and admin addresses
/// from its JSON "serving" log line, and the log lines that follow (collected as they come).
fn start_webhook(
    cwd: &std::path::Path,
    args: &[&str],
) -> (Guard, std::net::SocketAddr, std::net::SocketAddr, Logs) {
    let (child, rx) = spawn_webhook(cwd, args, "json");
    let json = |line: &str| -> Value {
        serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    };
    let seen = lines_until(&rx, |l| json(l)["message"] == "hotnic webhook serving");
    let v = json(seen.last().unwrap());
    let addr = v["addr"].as_str().unwrap().parse().unwrap();
    let admin = v["admin_addr"].as_str().unwrap().parse().unwrap();
    // Keep draining stderr so the child never blocks on a full pipe.
    let logs = Logs::default();
    let sink = logs.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            sink.lock().unwrap().push(line);
        }
    });
    (child, addr, admin, logs)
}

fn sigterm_and_wait(mut child: Guard) -> std::process::ExitStatus {
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn webhook_dev_creates_then_reuses_certs_serves_and_stops_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let args = [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--shutdown-delay",
        "0s",
    ];
    let (child, addr, admin, logs) = start_webhook(cwd.path(), &args);
    assert!(addr.ip().is_loopback() && admin.ip().is_loopback());
    let ca =
        std::fs::read_to_string(cwd.path().join("certs/ca.crt")).expect("--dev wrote certs/ca.crt");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client_for(addr, &[&ca], |b| b.http1_only());
        for (name, raw, review) in fixtures().into_iter().take(4) {
            let r = c
                .post(format!(
                    "https://localhost:{}{}",
                    addr.port(),
                    endpoint_of(&name)
                ))
                .body(raw)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            check_answer(&name, endpoint_of(&name), &review, &r.json().await.unwrap());
        }
        let ready = reqwest::get(format!("http://{admin}/readyz"))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    });
    let status = sigterm_and_wait(child);
    assert!(status.success(), "{status:?}");
    // One JSON line per review, its span carrying the review's identity and verdict; no object
    // content at info level.
    // The child has exited; wait for its last lines to pass through the reader threads.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("hotnic webhook stopped"))
    {
        assert!(
            Instant::now() < deadline,
            "no 'stopped' line: {:#?}",
            logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = logs.lock().unwrap().clone();
    let (_, _, first) = fixtures().into_iter().next().unwrap();
    let uid = first["request"]["uid"].as_str().unwrap();
    let line = logs
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["message"] == "review answered" && v["span"]["uid"] == uid)
        .unwrap_or_else(|| panic!("no review line for {uid} in {logs:#?}"));
    let span = &line["span"];
    for field in [
        "endpoint",
        "kind",
        "namespace",
        "object_name",
        "operation",
        "dry_run",
        "verdict",
        "latency_us",
    ] {
        assert!(!span[field].is_null(), "span lacks {field}: {line}");
    }
    let image = first["request"]["object"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        !logs.iter().any(|l| l.contains(image)),
        "an object was logged"
    );
    assert!(logs.iter().any(|l| l.contains("SIGTERM")), "{logs:#?}");

    // Second start: the same certificates are reused.
    let (child, _, _, _) = start_webhook(cwd.path(), &args);
    assert_eq!(
        std::fs::read_to_string(cwd.path().join("certs/ca.crt")).unwrap(),
        ca
    );
    assert!(sigterm_and_wait(child).success());
}

#[test]
fn webhook_refuses_a_key_that_does_not_match_and_missing_certs() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate();
    let b = generate();
    std::fs::write(dir.path().join("a.crt"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("b.key"), &b.key_pem).unwrap();
    let out = Command::new(BIN)
        .args([
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.path().join("a.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("b.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");

    let out = Command::new(BIN)
        .args([
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_remove("HOTNIC_TLS_CERT")
        .env_remove("HOTNIC_DEV")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

/// A panic, once logging is set up (as `hotnic webhook` and `hotnic agent` set it up), is one
/// JSON error line naming the message, place and thread, with the backtrace when
/// `RUST_BACKTRACE` asks for one, and not Rust's default text, which a JSON log pipeline cannot
/// read. Run in a child (this test binary again): the hook and the logger are process-wide.
#[test]
fn a_panic_is_one_json_log_line() {
    if std::env::var_os("HOTNIC_TEST_PANIC_CHILD").is_some() {
        hotnic::cli::init_logging(hotnic::cli::LogFormat::Json);
        let joined = std::thread::Builder::new()
            .name("doomed".into())
            .spawn(|| panic!("boom {}", 42))
            .unwrap()
            .join();
        assert!(joined.is_err());
        hotnic::cli::flush_logs();
        return;
    }
    for backtrace in [false, true] {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "a_panic_is_one_json_log_line", "--nocapture"])
            .env("HOTNIC_TEST_PANIC_CHILD", "1")
            .env_remove("RUST_LOG")
            .env_remove("RUST_LIB_BACKTRACE");
        if backtrace {
            cmd.env("RUST_BACKTRACE", "1");
        } else {
            cmd.env_remove("RUST_BACKTRACE");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("panicked at"),
            "default panic text: {stderr}"
        );
        let lines: Vec<Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &Value| v.get("panic").is_some())
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let line = &lines[0];
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["panic"], "boom 42", "{line}");
        assert_eq!(line["thread"], "doomed", "{line}");
        assert!(
            line["location"]
                .as_str()
                .is_some_and(|l| l.starts_with("tests/webhook_cli.rs:")),
            "{line}"
        );
        assert_eq!(
            line["backtrace"]
                .as_str()
                .is_some_and(|b| b.contains("a_panic_is_one_json_log_line")),
            backtrace,
            "{line}"
        );
    }
}
