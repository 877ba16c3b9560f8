//! The real-cluster tier (envtest conventions): etcd and kube-apiserver from the binaries named by
//! `HOTNIC_TEST_ETCD` and `HOTNIC_TEST_KUBE_APISERVER`, on loopback on free ports, with a private
//! data directory and certificates made here with rcgen: a serving CA and certificate, a client CA
//! and an admin client certificate in `system:masters`, `--authorization-mode=RBAC`. No
//! controller-manager, scheduler or kubelet runs: pods are created with `spec.nodeName` set and
//! deleted with grace period 0; the `ServiceAccount` admission plugin is off (nothing would create
//! the `default` ServiceAccount of a new namespace).
//!
//! One cluster per test binary ([`KubeCluster::shared`], started by the first test that asks);
//! every test works in a namespace of its own ([`KubeCluster::namespace`]). Without the variables
//! the tests print `SKIPPED` with the reason; given but broken, they fail.
//!
//! Teardown never depends on the test process ending cleanly: a small watcher process (`sh`)
//! started beside the control plane kills etcd and kube-apiserver and removes the data directory as
//! soon as the test process is gone, whether it returned, panicked or was killed. A start that
//! fails kills what it started at once.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Names the binaries of the real-cluster tier.
pub const APISERVER_VAR: &str = "HOTNIC_TEST_KUBE_APISERVER";
/// Names the etcd binary of the real-cluster tier.
pub const ETCD_VAR: &str = "HOTNIC_TEST_ETCD";

/// A running etcd + kube-apiserver pair, shared by the tests of one test binary.
pub struct KubeCluster {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The private directory (certificates, logs, etcd data), removed after the test process.
    pub dir: PathBuf,
    /// The CA of the API server's serving certificate, PEM.
    pub ca_pem: String,
    /// A kubeconfig with the admin client certificate (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    admin_identity: String,
}

static SHARED: OnceLock<KubeCluster> = OnceLock::new();

/// Why the real-cluster tier cannot run, when it cannot: `None` when both variables are set.
pub fn skip_reason() -> Option<String> {
    let missing: Vec<&str> = [APISERVER_VAR, ETCD_VAR]
        .into_iter()
        .filter(|v| std::env::var_os(v).is_none_or(|s| s.is_empty()))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not set; set {APISERVER_VAR} to a kube-apiserver binary (Kubernetes release or \
             setup-envtest) and {ETCD_VAR} to etcd (Debian etcd-server: /usr/bin/etcd)",
            missing.join(" and ")
        )
    })
}

/// The shared cluster, or `None` after printing `SKIPPED: <test>: <reason>` when the binaries
/// are not given. Panics (the test fails) when they are given but the cluster does not start.
pub fn cluster_or_skip(test: &str) -> Option<&'static KubeCluster> {
    if let Some(reason) = skip_reason() {
        // Straight to stderr, past libtest's output capture: a skip is never silent.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: {test} (real-cluster tier): {reason}"
        );
        return None;
    }
    Some(KubeCluster::shared())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding a free port")
        .local_addr()
        .expect("local address")
        .port()
}

fn dn(common: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn.push(DnType::OrganizationName, org);
    dn
}

/// A client CA and a client certificate (CN `user`, O `group`) signed by it: (ca, cert, key) PEM.
fn client_pki(user: &str, group: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = dn("hotnic test client CA", "hotnic-test");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(user, group);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// Kills the processes of a start that did not finish.
struct StartGuard(Vec<Child>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl KubeCluster {
    /// The cluster of this test binary, started on first use (~5–10 s).
    pub fn shared() -> &'static KubeCluster {
        SHARED.get_or_init(|| {
            let apiserver = PathBuf::from(std::env::var_os(APISERVER_VAR).expect(APISERVER_VAR));
            let etcd = PathBuf::from(std::env::var_os(ETCD_VAR).expect(ETCD_VAR));
            // Its own thread and runtime: the callers' runtimes come and go with their tests.
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(Self::start(&apiserver, &etcd))
            })
            .join()
            .unwrap_or_else(|_| panic!("the real cluster did not start (see above)"))
        })
    }

    async fn start(apiserver_bin: &Path, etcd_bin: &Path) -> Self {
        for (var, b) in [(APISERVER_VAR, apiserver_bin), (ETCD_VAR, etcd_bin)] {
            assert!(
                b.is_file(),
                "{var}={} is not a file (unset it to skip the real-cluster tier)",
                b.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("hotnic-kube-")
            .tempdir()
            .unwrap()
            .keep();
        let d = dir.as_path();
        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(d.join(name)).unwrap();
        let mut guard = StartGuard(Vec::new());

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
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(etcd_log.try_clone().unwrap())
            .stderr(etcd_log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", etcd_bin.display()));
        guard.0.push(etcd);

        // Serving certificate; client CA + admin certificate; a key that signs ServiceAccount tokens.
        let ca = hotnic::certs::Ca::new(2).unwrap();
        let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let (crt, key) = ca.issue(&["localhost".into()], &loopback, 2).unwrap();
        let sa_key = KeyPair::generate().unwrap();
        let (client_ca, admin_crt, admin_key) = client_pki("hotnic-test-admin", "system:masters");
        for (name, pem) in [
            ("ca.crt", ca.pem()),
            ("tls.crt", &crt),
            ("tls.key", &key),
            ("sa.key", &sa_key.serialize_pem()),
            ("sa.pub", &sa_key.public_key_pem()),
            ("client-ca.crt", &client_ca),
            ("admin.crt", &admin_crt),
            ("admin.key", &admin_key),
        ] {
            std::fs::write(d.join(name), pem).unwrap();
        }

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
                "--client-ca-file={}",
                d.join("client-ca.crt").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            // No controller-manager creates a namespace's `default` ServiceAccount.
            .arg("--disable-admission-plugins=ServiceAccount")
            // The API server calls webhooks on loopback: no proxy may come between.
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(api_log.try_clone().unwrap())
            .stderr(api_log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", apiserver_bin.display()));
        guard.0.push(apiserver);

        // The watcher: once this test process is gone, stop both and remove the directory.
        // Never waited for: it outlives this process by design (so it never becomes our zombie).
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(
                r#"trap '' INT TERM HUP
while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
kill "$1" "$2" 2>/dev/null; sleep 2; kill -9 "$1" "$2" 2>/dev/null; rm -rf "$3""#,
            )
            .arg(std::process::id().to_string())
            .arg(guard.0[0].id().to_string())
            .arg(guard.0[1].id().to_string())
            .arg(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the teardown watcher (sh)");

        let admin_kubeconfig = d.join("admin.kubeconfig");
        let url = format!("https://127.0.0.1:{secure_port}");
        let this = Self {
            url,
            dir: dir.clone(),
            ca_pem: ca.pem().to_string(),
            admin_kubeconfig,
            admin_identity: format!("{admin_crt}{admin_key}"),
        };
        std::fs::write(
            &this.admin_kubeconfig,
            this.kubeconfig_yaml(&format!(
                "client-certificate: {}\n    client-key: {}",
                d.join("admin.crt").display(),
                d.join("admin.key").display()
            )),
        )
        .unwrap();

        let start = Instant::now();
        loop {
            for (i, name) in ["etcd", "kube-apiserver"].into_iter().enumerate() {
                if let Ok(Some(status)) = guard.0[i].try_wait() {
                    panic!(
                        "{name} exited ({status}):\n{}",
                        tail(&d.join(format!("{name}.log")))
                    );
                }
            }
            if let Ok((200, _)) = this.request("GET", "/readyz", None, None).await {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready after 90 s:\n{}",
                tail(&d.join("kube-apiserver.log"))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "real cluster: kube-apiserver {} ready in {:.1} s ({})",
            this.url,
            start.elapsed().as_secs_f64(),
            d.display()
        );
        // From here on the watcher owns the processes.
        std::mem::forget(guard);
        this
    }

    fn kubeconfig_yaml(&self, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    {user}\ncontexts:\n- name: c\n  context:\n    cluster: real\n    user: u\n    namespace: default\ncurrent-context: c\n",
            self.url,
            self.dir.join("ca.crt").display()
        )
    }

    /// Writes a kubeconfig that authenticates with `token` (a ServiceAccount's) to `path`.
    pub fn token_kubeconfig(&self, token: &str, path: &Path) {
        std::fs::write(path, self.kubeconfig_yaml(&format!("token: {token}"))).unwrap();
    }

    /// A kube-rs client as the admin (what a user's kubectl would be).
    pub async fn admin_client(&self) -> kube::Client {
        Self::client_from(&self.admin_kubeconfig).await
    }

    /// A kube-rs client from a kubeconfig file.
    pub async fn client_from(kubeconfig: &Path) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// A plain HTTPS client as the admin; one per call (clients must not outlive a test's runtime).
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .identity(reqwest::Identity::from_pem(self.admin_identity.as_bytes()).unwrap())
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap()
    }

    /// One REST call as the admin: (status, body as JSON or Null).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http().request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req
                .header("content-type", content_type.unwrap_or("application/json"))
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// A REST call as the admin that must succeed (2xx); returns the body.
    pub async fn must(
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

    /// Creates an object (POST to `collection`), accepting one that exists already.
    pub async fn create(&self, collection: &str, obj: &Value) {
        let (status, v) = self
            .request("POST", collection, Some(obj), None)
            .await
            .unwrap_or_else(|e| panic!("POST {collection}: {e}"));
        assert!(
            (200..300).contains(&status) || status == 409,
            "POST {collection}: {status} {v}"
        );
    }

    /// A new namespace of its own for one test: `{prefix}-{n}`, unique in this cluster.
    pub async fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed));
        self.ensure_namespace(&ns).await;
        ns
    }

    /// Creates the namespace `ns` if it does not exist.
    pub async fn ensure_namespace(&self, ns: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        self.create("/api/v1/namespaces", &body).await;
    }

    /// Installs a CustomResourceDefinition (once per cluster) and waits until it is served.
    pub async fn install_crd(&self, crd: &Value) {
        self.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd,
        )
        .await;
        let spec = &crd["spec"];
        let plural = spec["names"]["plural"].as_str().unwrap();
        let group = spec["group"].as_str().unwrap();
        let version = spec["versions"][0]["name"].as_str().unwrap();
        let path = format!("/apis/{group}/{version}/{plural}");
        let start = Instant::now();
        while !matches!(self.request("GET", &path, None, None).await, Ok((200, _))) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the CRD {} is not served at {path}",
                crd["metadata"]["name"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Installs the CRDs in `tests/crds/` named by `files` (e.g. "network-attachment-definitions.yaml").
    pub async fn install_test_crds(&self, files: &[&str]) {
        for f in files {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/crds")
                .join(f);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for doc in serde_yaml::Deserializer::from_str(&text) {
                self.install_crd(&Value::deserialize(doc).unwrap()).await;
            }
        }
    }

    /// Creates the objects of a multi-document YAML text as the admin (RBAC, ServiceAccounts…),
    /// skipping the kinds in `skip`; objects that exist already are left as they are.
    pub async fn apply_yaml(&self, text: &str, skip: &[&str]) {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v = Value::deserialize(doc).unwrap();
            if v.is_null() || skip.contains(&v["kind"].as_str().unwrap_or("")) {
                continue;
            }
            let collection = collection_path(&v);
            self.create(&collection, &v).await;
        }
    }

    /// A token of the ServiceAccount `ns/name` (TokenRequest API), valid for an hour.
    pub async fn service_account_token(&self, ns: &str, name: &str) -> String {
        let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600}});
        let v = self
            .must(
                "POST",
                &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"),
                Some(&req),
                None,
            )
            .await;
        v["status"]["token"].as_str().unwrap().to_string()
    }

    /// The last lines of the API server's log (for failure messages).
    pub fn apiserver_log_tail(&self) -> String {
        tail(&self.dir.join("kube-apiserver.log"))
    }
}

/// The REST collection an object is created in, for the kinds the tests create from YAML.
pub fn collection_path(v: &Value) -> String {
    let api_version = v["apiVersion"].as_str().unwrap();
    let kind = v["kind"].as_str().unwrap();
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Service" => "services",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Pod" => "pods",
        "MutatingWebhookConfiguration" => "mutatingwebhookconfigurations",
        "ValidatingWebhookConfiguration" => "validatingwebhookconfigurations",
        "CustomResourceDefinition" => "customresourcedefinitions",
        "NetworkAttachmentDefinition" => "network-attachment-definitions",
        "VirtualMachine" => "virtualmachines",
        "VirtualMachineInstance" => "virtualmachineinstances",
        other => panic!("collection_path: add the plural of {other}"),
    };
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match v["metadata"]["namespace"].as_str() {
        Some(ns) if !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") => {
            format!("{base}/namespaces/{ns}/{plural}")
        }
        _ => format!("{base}/{plural}"),
    }
}

/// Runs a future to completion from synchronous test code inside a multi-thread tokio runtime.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Synchronous helpers for the agent suite (which polls from plain threads).
impl KubeCluster {
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

/// What the in-test API servers (`fake_apiserver.rs`, `fake_claims.rs`) share: a `Status`
/// answer, serving a router on a loopback port, a kubeconfig pointing at it.
pub mod fake {
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    /// A `Status` object with `code`, as the API server answers a failure.
    pub fn status(code: u16, reason: &str, message: String) -> Response {
        let body = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                          "message": message, "reason": reason, "code": code});
        (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
    }

    /// Serves `app` on a free loopback port; returns its `http://` URL.
    pub async fn serve(app: axum::Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(l, app).await.unwrap();
        });
        format!("http://{addr}")
    }

    /// A kubeconfig file in `dir` pointing at `url` (plain HTTP, no auth).
    pub fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n    namespace: default\ncurrent-context: c\n"
            ),
        )
        .unwrap();
        p
    }
}
