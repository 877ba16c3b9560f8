//! A real control plane for the Kubernetes-mode agent tests: etcd and kube-apiserver from the
//! binaries named by `HOTNIC_TEST_ETCD` and `HOTNIC_TEST_KUBE_APISERVER`, on loopback, with a
//! private data dir, a serving certificate from hotnic's own CA code, a static bearer token and
//! `AlwaysAllow` authorization; no controller-manager, scheduler or kubelet (pods are created
//! with `spec.nodeName` set and deleted with grace period 0). Everything is removed on drop.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binaries to run, from the environment; `None` when either variable is unset.
pub fn binaries_from_env() -> Option<(PathBuf, PathBuf)> {
    let apiserver = std::env::var_os("HOTNIC_TEST_KUBE_APISERVER")?;
    let etcd = std::env::var_os("HOTNIC_TEST_ETCD")?;
    Some((PathBuf::from(apiserver), PathBuf::from(etcd)))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a future to completion from synchronous test code inside a multi-thread tokio runtime.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A running etcd + kube-apiserver pair.
pub struct RealApiserver {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// A kubeconfig for it (CA pinned, bearer token).
    pub kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    token: String,
    http: reqwest::Client,
    etcd: Child,
    apiserver: Child,
}

const NAD_CRD: &str = "network-attachment-definitions.k8s.cni.cncf.io";

impl RealApiserver {
    /// Starts etcd and kube-apiserver, waits for `/readyz`, installs the
    /// NetworkAttachmentDefinition CRD. Panics, naming the binary and its log, on failure.
    pub async fn start(apiserver_bin: &Path, etcd_bin: &Path) -> Self {
        for b in [apiserver_bin, etcd_bin] {
            assert!(b.is_file(), "{} is not a file", b.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("hotnic-kube-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(d.join(name)).unwrap();

        let etcd_log = log("etcd.log");
        let etcd = Command::new(etcd_bin)
            .arg("--name=hotnic-test")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{client_port}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{client_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=hotnic-test=http://127.0.0.1:{peer_port}"
            ))
            .stdin(Stdio::null())
            .stdout(etcd_log.try_clone().unwrap())
            .stderr(etcd_log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", etcd_bin.display()));

        // Serving certificate from hotnic's CA code; a second key signs service-account tokens.
        let ca = hotnic::certs::Ca::new(2).unwrap();
        let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let (crt, key) = ca.issue(&["localhost".into()], &loopback, 2).unwrap();
        let (_, sa_key) = ca.issue(&["service-accounts".into()], &[], 2).unwrap();
        std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(d.join("tls.crt"), &crt).unwrap();
        std::fs::write(d.join("tls.key"), &key).unwrap();
        std::fs::write(d.join("sa.key"), &sa_key).unwrap();
        let token = format!("hotnic-test-{}", std::process::id());
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},hotnic-test,hotnic-test,\"system:masters\"\n"),
        )
        .unwrap();

        let api_log = log("kube-apiserver.log");
        let apiserver = Command::new(apiserver_bin)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={secure_port}"))
            .arg(format!("--cert-dir={}", d.join("pki").display()))
            .arg(format!("--tls-cert-file={}", d.join("tls.crt").display()))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("tls.key").display()
            ))
            .arg(format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=AlwaysAllow")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.key").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            // No controller-manager creates the default ServiceAccount.
            .arg("--disable-admission-plugins=ServiceAccount")
            .stdin(Stdio::null())
            .stdout(api_log.try_clone().unwrap())
            .stderr(api_log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", apiserver_bin.display()));

        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{secure_port}");
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: real\n    user: u\n    namespace: default\ncurrent-context: c\n",
                d.join("ca.crt").display()
            ),
        )
        .unwrap();
        let mut this = Self {
            url,
            kubeconfig,
            dir,
            token,
            http,
            etcd,
            apiserver,
        };
        this.wait_ready().await;
        this.install_nad_crd().await;
        this
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let exited = [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ]
            .into_iter()
            .find_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some((name, status)),
                _ => None,
            });
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}):\n{}",
                    self.log_tail(&format!("{name}.log"))
                );
            }
            if let Ok((200, _)) = self.request("GET", "/readyz", None, None).await {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready after 90 s:\n{}",
                self.log_tail("kube-apiserver.log")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One REST call: (status, body as JSON or Null).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", content_type.unwrap_or("application/json"))
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn must(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        ct: Option<&str>,
    ) -> Value {
        let (status, v) = self
            .request(method, path, body, ct)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    async fn install_nad_crd(&self) {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": NAD_CRD},
            "spec": {"group": "k8s.cni.cncf.io", "scope": "Namespaced",
                "names": {"plural": "network-attachment-definitions", "singular": "network-attachment-definition",
                          "kind": "NetworkAttachmentDefinition", "shortNames": ["net-attach-def"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"config": {"type": "string"}}}}}}}]}
        });
        self.must(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(&crd),
            None,
        )
        .await;
        let start = Instant::now();
        while !matches!(
            self.request(
                "GET",
                "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions",
                None,
                None
            )
            .await,
            Ok((200, _))
        ) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the NetworkAttachmentDefinition CRD is not served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ensure_namespace(&self, ns: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let (status, v) = self
            .request("POST", "/api/v1/namespaces", Some(&body), None)
            .await
            .unwrap();
        assert!(
            status == 201 || status == 409,
            "namespace {ns}: {status} {v}"
        );
    }

    /// Creates a pod, or, when it exists, merge-patches its annotations and labels to the given
    /// ones (a pod's spec is immutable; hot-plug edits are annotation edits).
    pub fn put_pod(&self, pod: Value) {
        block(async {
            let ns = pod["metadata"]["namespace"].as_str().unwrap().to_string();
            let name = pod["metadata"]["name"].as_str().unwrap().to_string();
            self.ensure_namespace(&ns).await;
            let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
            if let Ok((200, _)) = self.request("GET", &path, None, None).await {
                let patch = json!({"metadata": {
                    "annotations": pod["metadata"]["annotations"],
                    "labels": pod["metadata"]["labels"]}});
                self.must(
                    "PATCH",
                    &path,
                    Some(&patch),
                    Some("application/merge-patch+json"),
                )
                .await;
            } else {
                let mut pod = pod.clone();
                let meta = pod["metadata"].as_object_mut().unwrap();
                meta.remove("uid");
                meta.remove("resourceVersion");
                self.must(
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/pods"),
                    Some(&pod),
                    None,
                )
                .await;
            }
        })
    }

    /// Deletes a pod at once (no kubelet would ever confirm a graceful deletion).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        block(async {
            let opts =
                json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
            self.must(
                "DELETE",
                &format!("/api/v1/namespaces/{ns}/pods/{name}"),
                Some(&opts),
                None,
            )
            .await;
        })
    }

    /// Creates a NetworkAttachmentDefinition (and its namespace).
    pub fn put_nad(&self, nad: Value) {
        block(async {
            let ns = nad["metadata"]["namespace"].as_str().unwrap().to_string();
            self.ensure_namespace(&ns).await;
            self.must(
                "POST",
                &format!("/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions"),
                Some(&nad),
                None,
            )
            .await;
        })
    }

    /// The stored pod.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        block(async {
            match self
                .request(
                    "GET",
                    &format!("/api/v1/namespaces/{ns}/pods/{name}"),
                    None,
                    None,
                )
                .await
            {
                Ok((200, v)) => Some(v),
                _ => None,
            }
        })
    }

    /// Core/v1 events of every namespace.
    pub fn events(&self) -> Vec<Value> {
        block(async {
            let v = self.must("GET", "/api/v1/events", None, None).await;
            v["items"].as_array().cloned().unwrap_or_default()
        })
    }
}

impl Drop for RealApiserver {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
