//! The real server over TLS: every captured review, denials, bad bodies, protocol edges.
//! Certificates come from the `hotnic certs` code; clients trust only the generated CA.

mod webhook_support;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_support::*;

async fn post(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, reqwest::Version, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    let status = r.status();
    let version = r.version();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "{url}: JSON answer"
    );
    let v = r.json().await.expect("JSON body");
    (status, version, v)
}

#[tokio::test]
async fn every_fixture_gets_a_well_formed_answer_over_http11() {
    let s = Server::start().await;
    let c = s.client();
    let mut patched = 0;
    for (name, raw, review) in fixtures() {
        let endpoint = endpoint_of(&name);
        // The API server's own request line: POST <path>?timeout=10s.
        let (status, version, answer) =
            post(&c, &s.url(&format!("{endpoint}?timeout=10s")), raw).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(version, reqwest::Version::HTTP_11, "{name}");
        let (_, patch) = check_answer(&name, endpoint, &review, &answer);
        patched += usize::from(patch.is_some());
    }
    // The Multus/KubeVirt creates without MACs are mutated (MACs, capacity): the patch path is
    // exercised, not only the empty one.
    assert!(patched >= 3, "only {patched} fixtures got a patch");
}

#[tokio::test]
async fn h2_via_alpn_and_both_tls_versions() {
    let s = Server::start().await;
    let (name, raw, review) = fixtures().into_iter().next().unwrap();
    // ALPN h2 (reqwest offers h2 and http/1.1).
    let h2 = client_for(s.addr(), &[&s.certs.ca_pem], |b| b);
    let (status, version, answer) = post(&h2, &s.url(endpoint_of(&name)), raw.clone()).await;
    assert_eq!((status.as_u16(), version), (200, reqwest::Version::HTTP_2));
    check_answer(&name, endpoint_of(&name), &review, &answer);
    for (min, max) in [
        (
            reqwest::tls::Version::TLS_1_2,
            reqwest::tls::Version::TLS_1_2,
        ),
        (
            reqwest::tls::Version::TLS_1_3,
            reqwest::tls::Version::TLS_1_3,
        ),
    ] {
        let c = client_for(s.addr(), &[&s.certs.ca_pem], |b| {
            b.http1_only().min_tls_version(min).max_tls_version(max)
        });
        let (status, _, answer) = post(&c, &s.url(endpoint_of(&name)), raw.clone()).await;
        assert_eq!(status, 200, "{min:?}");
        check_answer(&name, endpoint_of(&name), &review, &answer);
    }
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let s = Server::start().await;
    let other = generate();
    let c = client_for(s.addr(), &[&other.ca_pem], |b| b.http1_only());
    let err = c
        .post(s.url("/mutate"))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn denials_carry_causes_and_no_patch() {
    let s = Server::start().await;
    let c = s.client();
    let review = unnamed_multus_review();
    for endpoint in ["/validate", "/mutate"] {
        let mut r = review.clone();
        r["request"]["uid"] = format!("uid-{endpoint}").into();
        let (status, _, answer) = post(&c, &s.url(endpoint), serde_json::to_vec(&r).unwrap()).await;
        assert_eq!(status, 200, "a denial is an answer, not an HTTP error");
        let (resp, patch) = check_answer(endpoint, endpoint, &r, &answer);
        if endpoint == "/validate" {
            assert_eq!(resp["allowed"], false, "{answer}");
        }
        if resp["allowed"] == false {
            assert!(patch.is_none());
            let causes = resp["status"]["details"]["causes"].as_array().unwrap();
            assert!(
                causes
                    .iter()
                    .any(|c| c["field"].as_str().unwrap().contains("[1]")),
                "the cause points at the unnamed element: {causes:?}"
            );
            let msg = resp["status"]["message"].as_str().unwrap();
            assert!(msg.contains("interface"), "{msg}");
        }
    }
    // The denial is counted by rule on /metrics.
    let metrics = reqwest::get(s.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"hotnic_webhook_denial_causes_total{rule="names"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"endpoint="validate",kind="Pod",operation="CREATE",verdict="denied""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn bodies_that_are_not_reviews_get_400_with_a_json_error() {
    let s = Server::start().await;
    let c = s.client();
    let good = fixture("001");
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = "TokenReview".into();
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut bad_op = good.clone();
    bad_op["request"]["operation"] = "EXPLODE".into();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not JSON",
            b"{not json".to_vec(),
            "not a valid AdmissionReview",
        ),
        ("empty", Vec::new(), "not a valid AdmissionReview"),
        (
            "JSON array",
            b"[1,2]".to_vec(),
            "not a valid AdmissionReview",
        ),
        (
            "wrong apiVersion",
            serde_json::to_vec(&wrong_version).unwrap(),
            "apiVersion",
        ),
        (
            "wrong kind",
            serde_json::to_vec(&wrong_kind).unwrap(),
            "kind",
        ),
        (
            "no request",
            serde_json::to_vec(&no_request).unwrap(),
            "no request",
        ),
        (
            "bad operation",
            serde_json::to_vec(&bad_op).unwrap(),
            "operation",
        ),
    ];
    for endpoint in ["/mutate", "/validate"] {
        for (what, body, needle) in &cases {
            let (status, _, v) = post(&c, &s.url(endpoint), body.clone()).await;
            assert_eq!(status, 400, "{endpoint} {what}: {v}");
            let err = v["error"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
            assert!(err.contains(needle), "{endpoint} {what}: {err}");
        }
    }
    // The server is fine afterwards.
    let (status, _, answer) = post(&c, &s.url("/mutate"), serde_json::to_vec(&good).unwrap()).await;
    assert_eq!(status, 200);
    check_answer("001", "/mutate", &good, &answer);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_a_big_review_under_the_limit_passes() {
    let s = Server::start_with(|c| c.max_body_bytes = 1 << 20).await;
    let c = s.client();
    let mut review = fixture("001");
    // ~0.9 MiB of label: under the limit, still a valid review.
    review["request"]["object"]["metadata"]["labels"]["big"] = "x".repeat(900 << 10).into();
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() < 1 << 20);
    let (status, _, answer) = post(&c, &s.url("/mutate"), body).await;
    assert_eq!(status, 200);
    check_answer("big", "/mutate", &review, &answer);
    // Over it.
    review["request"]["object"]["metadata"]["labels"]["big"] = "x".repeat(2 << 20).into();
    let (status, _, v) = post(&c, &s.url("/mutate"), serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, 413, "{v}");
    assert!(v["error"].is_string(), "{v}");

    // Chunked (no Content-Length): the limit applies while streaming. Read while writing: the
    // server may answer 413 and close before taking the whole body.
    let (mut rd, mut wr) = tokio::io::split(tls_http11(&s).await);
    let head = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let writer = tokio::spawn(async move {
        wr.write_all(head).await?;
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..40 {
            wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await?;
        }
        wr.write_all(b"0\r\n\r\n").await?;
        wr.flush().await
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut buf))
        .await
        .expect("answered and closed in time");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    writer.abort();
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let s = Server::start().await;
    let c = s.client();
    let (status, _, v) = post(&c, &s.url("/nope"), b"{}".to_vec()).await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("/mutate"));
    let r = c.get(s.url("/mutate")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn curl_posts_every_fixture() {
    let s = Server::start().await;
    let ca = s.dir.path().join("ca.crt");
    let mut patched = 0;
    for (name, _, review) in fixtures() {
        let endpoint = endpoint_of(&name);
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--fail-with-body", "--http1.1", "--cacert"])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("localhost:{}:127.0.0.1", s.addr().port()),
            ])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", fixtures_dir().join(&name).display()))
            .arg(s.url(&format!("{endpoint}?timeout=10s")))
            .output()
            .await
            .expect("curl is installed (apt package curl; .ci/run installs it)");
        assert!(
            out.status.success(),
            "curl {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (_, patch) = check_answer(&name, endpoint, &review, &answer);
        patched += usize::from(patch.is_some());
    }
    assert!(patched >= 3, "{patched}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_cleanly_and_the_server_keeps_serving() {
    let s = Server::start().await;
    // reqwest over plain HTTP.
    let plain = reqwest::Client::builder().http1_only().build().unwrap();
    let err = plain
        .post(format!("http://127.0.0.1:{}/mutate", s.addr().port()))
        .body("{}")
        .send()
        .await;
    assert!(
        err.is_err(),
        "plain HTTP must not get an HTTP answer: {err:?}"
    );
    // Raw bytes: the server answers with a TLS alert (or nothing) and closes; never HTTP.
    let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    tcp.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "no HTTP over the TLS port: {buf:?}"
    );
    // Still serving.
    let (name, raw, review) = fixtures().into_iter().next().unwrap();
    let (status, _, answer) = post(&s.client(), &s.url(endpoint_of(&name)), raw).await;
    assert_eq!(status, 200);
    check_answer(&name, endpoint_of(&name), &review, &answer);
}

async fn tls_http11(s: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(s.certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(hotnic::webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408() {
    let s = Server::start_with(|c| c.limits.request_timeout = Duration::from_millis(500)).await;
    let mut tls = tls_http11(&s).await;
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server answers and closes");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#"{"error":"#), "{text}");
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_cut_off_by_the_handshake_timeout() {
    let s = Server::start_with(|c| c.limits.handshake_timeout = Duration::from_millis(500)).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a silent TCP client must be disconnected");
    assert!(buf.is_empty(), "{buf:?}");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_ends() {
    let s = Server::start_with(|c| c.limits.max_connections = 2).await;
    let first = tls_http11(&s).await;
    let _second = tls_http11(&s).await;
    // The third one is not accepted while two are open...
    let third = tokio::spawn({
        let (addr, ca) = (s.addr(), s.certs.ca_pem.clone());
        async move {
            let c = client_for(addr, &[&ca], |b| b.http1_only());
            c.post(format!("https://localhost:{}/mutate", addr.port()))
                .body(
                    std::fs::read(fixtures_dir().join("001-mutate-create-pod-web-multus.json"))
                        .unwrap(),
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past the cap of 2"
    );
    // ...and is served once one closes.
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(30), third)
        .await
        .expect("served after a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let s = Server::start_with(|c| c.limits.idle_timeout = Duration::from_millis(500)).await;
    let mut tls = tls_http11(&s).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "an idle connection must not be held open forever"
    );
}

#[tokio::test]
async fn a_slow_client_is_cut_off_by_the_header_read_timeout() {
    let s = Server::start_with(|c| c.limits.header_read_timeout = Duration::from_millis(500)).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(s.certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(hotnic::webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    // Half a request line, then nothing.
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the server must close a connection whose headers never finish"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    // Others are unaffected.
    let (name, raw, _) = fixtures().into_iter().next().unwrap();
    let (status, _, _) = post(&s.client(), &s.url(endpoint_of(&name)), raw).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_and_readiness_on_the_admin_listener() {
    let s = Server::start().await;
    let c = s.client();
    assert_eq!(
        reqwest::get(s.admin_url("/livez")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(s.admin_url("/readyz")).await.unwrap().status(),
        200
    );
    for (name, raw, _) in fixtures() {
        post(&c, &s.url(endpoint_of(&name)), raw).await;
    }
    let r = reqwest::get(s.admin_url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for needle in [
        r#"hotnic_webhook_reviews_total{endpoint="mutate",kind="Pod",operation="CREATE",verdict="allowed"}"#,
        r#"hotnic_webhook_reviews_total{endpoint="mutate",kind="VirtualMachine",operation="UPDATE""#,
        "hotnic_webhook_review_duration_seconds_bucket",
        "hotnic_webhook_in_flight_reviews 0",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{text}"))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let not_after = gauge("hotnic_webhook_certificate_not_after_seconds");
    assert!(not_after > now + 300.0 * 86_400.0, "{not_after}");
    assert!(
        gauge("hotnic_webhook_macs_allocated") >= 1.0,
        "the mutations held MACs"
    );
}

#[tokio::test]
async fn the_admin_listener_cuts_off_slow_and_idle_clients_too() {
    let s = Server::start_with(|c| {
        c.limits.header_read_timeout = Duration::from_millis(500);
        c.limits.idle_timeout = Duration::from_millis(500);
    })
    .await;
    for partial in [&b"GET /readyz HTTP/1.1\r\nHo"[..], b""] {
        let mut tcp = tokio::net::TcpStream::connect(s.admin()).await.unwrap();
        tcp.write_all(partial).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "admin connection after {partial:?} was never closed"
        );
    }
    assert_eq!(
        reqwest::get(s.admin_url("/readyz")).await.unwrap().status(),
        200
    );
}
