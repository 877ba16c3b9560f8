//! The container image, end to end, with no engine and no registry (root; real containerd):
//! `manifests/build-image.sh` packs this test's own `hotnic` binary into an OCI archive, the private
//! containerd of `tests/support/cri` imports it with `ctr images import`, and `ctr run` starts
//! `hotnic webhook` FROM THE IMAGE the way the Deployment runs it: the image's user (ctr has no user flag:
//! 65532 comes from the image config), its entrypoint (taken from the config: `ctr run` replaces the whole
//! command line) with the Deployment's args, a read-only root filesystem, no capabilities, seccomp, the
//! TLS pair bind-mounted read-only with the Secret volume's ownership (root:65532, 0440). A real
//! AdmissionReview (an API-server capture) then goes to its `/mutate` over TLS from a client that trusts
//! only the test's CA; SIGTERM to the container's PID 1 must end it with exit 0. The archive itself is
//! checked too: name annotation, config, and a layer holding exactly the binary, what `ldd` reports,
//! passwd/group and /tmp.
//!
//! Also (no root needed): the image name and version agree across the manifests, the script's default,
//! the Containerfile and Cargo.toml.
//!
//! Run: `cargo test --test image_containerd -- --nocapture` (prints the archive size and timings).

#[path = "support/cri/mod.rs"]
mod cri_support;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cri_support::Containerd;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_hotnic");
/// The image's user and group (distroless "nonroot"; the Deployment's runAsUser/runAsGroup/fsGroup).
const NONROOT: u32 = 65532;
/// Every Linux capability (0-40): `ctr run --cap-drop` takes names, not `ALL`.
const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn read(relative: &str) -> String {
    fs::read_to_string(Path::new(ROOT).join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The default image name of `manifests/build-image.sh` (its one `name=` line).
fn script_default_name() -> String {
    let script = read("manifests/build-image.sh");
    let names: Vec<&str> = script
        .lines()
        .filter_map(|l| l.strip_prefix("name="))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "manifests/build-image.sh: expected one `name=DEFAULT` line, found {names:?}"
    );
    names[0].to_owned()
}

/// Every container and init-container image of a workload manifest.
fn workload_images(relative: &str) -> Vec<String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let pod = &doc["spec"]["template"]["spec"];
    let images: Vec<String> = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|key| pod[key].as_sequence())
        .flatten()
        .map(|c| {
            c["image"]
                .as_str()
                .unwrap_or_else(|| panic!("{relative}: a container without image"))
                .to_owned()
        })
        .collect();
    assert!(!images.is_empty(), "{relative}: no containers");
    images
}

/// The webhook Deployment's container: (args, mountPath of the `tls` volume).
fn webhook_deployment() -> (Vec<String>, String) {
    let relative = "manifests/base/webhook-deployment.yaml";
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(relative)).unwrap();
    let container = &doc["spec"]["template"]["spec"]["containers"][0];
    let args = serde_yaml::from_value(container["args"].clone())
        .unwrap_or_else(|e| panic!("{relative}: args: {e}"));
    let tls_dir = container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "tls")
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("{relative}: no volumeMount named tls"))
        .to_owned();
    (args, tls_dir)
}

/// The name and version are written in several places (script default, kustomization `images:`, both
/// workloads, Containerfile, Cargo.toml); a release that bumps one and not the others deploys an image
/// nobody built.
#[test]
fn image_name_agrees_everywhere() {
    let name = script_default_name();
    let (repository, tag) = name
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("script default {name:?} has no tag"));
    assert_eq!(
        tag,
        env!("CARGO_PKG_VERSION"),
        "the image tag (manifests/build-image.sh) is the crate version (Cargo.toml)"
    );

    // kustomize's `images:` override must name the same repository and tag.
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&read("manifests/base/kustomization.yaml")).unwrap();
    let overrides = kustomization["images"]
        .as_sequence()
        .expect("manifests/base/kustomization.yaml has images:");
    assert_eq!(overrides.len(), 1, "one image override: {overrides:?}");
    assert_eq!(overrides[0]["name"].as_str(), Some(repository));
    assert_eq!(overrides[0]["newTag"].as_str(), Some(tag));
    assert!(
        overrides[0]["newName"].is_null() && overrides[0]["digest"].is_null(),
        "{overrides:?}"
    );

    for workload in [
        "manifests/base/webhook-deployment.yaml",
        "manifests/base/agent-daemonset.yaml",
    ] {
        for image in workload_images(workload) {
            assert_eq!(image, name, "{workload}");
        }
    }

    let containerfile = read("Containerfile");
    let versions: Vec<&str> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ARG VERSION="))
        .collect();
    assert_eq!(
        versions,
        [tag],
        "Containerfile: ARG VERSION= (the version label)"
    );
    assert!(
        containerfile.contains(&format!("-t {name} ")),
        "Containerfile: the build commands in its header tag {name}"
    );
}

/// Root is needed for containerd, mounts and namespaces; like the other root tiers this fails, never skips.
fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(
        euid,
        Some("0"),
        "image_containerd needs root (it runs containerd and a container); CI runs it as root"
    );
}

/// The absolute paths `ldd` reports for `binary` (libraries and the loader; not the vDSO).
fn ldd_paths(binary: &str) -> Vec<String> {
    let output = run_ok(Command::new("ldd").arg(binary));
    let mut paths: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .map(|l| l.split_once(" => ").map_or(l, |(_, target)| target))
        .filter_map(|l| l.split(" (0x").next())
        .filter(|p| p.starts_with('/'))
        .map(str::to_owned)
        .collect();
    paths.sort();
    paths.dedup();
    assert!(!paths.is_empty(), "ldd {binary}: {output:?}");
    paths
}

/// One member of a tar archive, through `tar -xO`.
fn tar_member(archive: &Path, member: &str) -> Vec<u8> {
    run_ok(Command::new("tar").arg("-xOf").arg(archive).arg(member)).stdout
}

/// Runs `tar ARGS -f -` on the layer blob `layer` of `archive` (`tar -xO` piped in).
fn tar_on_layer(archive: &Path, layer: &str, args: &[&str]) -> Vec<u8> {
    let mut extract = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(layer)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tar -x");
    let output = Command::new("tar")
        .args(args)
        .args(["-f", "-"])
        .stdin(extract.stdout.take().expect("tar stdout"))
        .output()
        .expect("run tar on the layer");
    assert!(extract.wait().expect("wait for tar -x").success());
    assert!(output.status.success(), "tar {args:?}: {output:?}");
    output.stdout
}

/// Checks the archive as an image: index → manifest → config and layer, against the binary it packs.
/// Returns the config's Entrypoint.
fn check_archive(archive: &Path, name: &str) -> Vec<String> {
    let json = |member: &str| -> Value {
        serde_json::from_slice(&tar_member(archive, member))
            .unwrap_or_else(|e| panic!("{member}: {e}"))
    };
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("digest");
        format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap())
    };
    let index = json("index.json");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"], name,
        "{index}"
    );
    let manifest = json(&blob(&entry["digest"]));
    let config = json(&blob(&manifest["config"]["digest"]));
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hotnic"])
    );
    assert_eq!(c["WorkingDir"], "/");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://")),
        "{labels}"
    );

    // Exactly: the binary, what ldd reports, passwd/group, /tmp, and their directories, all root-owned.
    let layer = blob(&manifest["layers"][0]["digest"]);
    let listing = tar_on_layer(archive, &layer, &["--numeric-owner", "-tv"]);
    let entries: Vec<(String, String, String)> = String::from_utf8_lossy(&listing)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].to_owned(), f[5..].join(" ")) // mode, uid/gid, path
        })
        .collect();
    let mut expected: Vec<String> = ["etc/group", "etc/passwd", "tmp/", "usr/local/bin/hotnic"]
        .into_iter()
        .map(str::to_owned)
        .chain(
            ldd_paths(BIN)
                .iter()
                .map(|p| p.trim_start_matches('/').to_owned()),
        )
        .collect();
    for file in expected.clone() {
        let mut dir = Path::new(&file).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            expected.push(format!("{}/", d.display()));
            dir = d.parent();
        }
    }
    expected.sort();
    expected.dedup();
    let mut paths: Vec<String> = entries.iter().map(|e| e.2.clone()).collect();
    paths.sort();
    assert_eq!(paths, expected, "layer contents");
    for (mode, owner, path) in &entries {
        assert_eq!(owner, "0/0", "{path}");
        let want = match path.as_str() {
            "tmp/" => "drwxrwxrwt",
            "usr/local/bin/hotnic" => "-rwxr-xr-x",
            p if p.ends_with('/') => "drwxr-xr-x",
            p if p.contains("/ld-linux") => "-rwxr-xr-x", // the kernel executes the loader
            _ => "-rw-r--r--",
        };
        assert_eq!(mode, want, "{path}");
    }
    let passwd = String::from_utf8(tar_on_layer(archive, &layer, &["-xO", "etc/passwd"])).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    serde_json::from_value(c["Entrypoint"].clone()).unwrap()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The TLS pair the way kubelet mounts the Secret for `fsGroup: 65532` and `defaultMode: 0440`.
fn write_tls_dir(dir: &Path) -> hotnic::certs::Generated {
    let generated =
        hotnic::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 365)
            .expect("generate certificates");
    hotnic::certs::write(dir, &generated).expect("write certificates");
    for file in [
        hotnic::certs::CA_FILE,
        hotnic::certs::CERT_FILE,
        hotnic::certs::KEY_FILE,
    ] {
        let path = dir.join(file);
        chown(&path, Some(0), Some(NONROOT)).expect("chown");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).expect("chmod");
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    generated
}

/// Removes the container (and its task) on drop, panic or not; dropped before the harness.
struct ContainerGuard<'a> {
    containerd: &'a Containerd,
    id: String,
    armed: bool,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for args in [
            &["tasks", "delete", "--force"][..],
            &["containers", "delete"][..],
        ] {
            let status = self
                .containerd
                .ctr()
                .args(args)
                .arg(&self.id)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("image test: ctr {args:?} {} failed", self.id);
            }
        }
    }
}

/// (pid, status) of the task `id` from `ctr tasks ls`, if it has one.
fn task(c: &Containerd, id: &str) -> Option<(u32, String)> {
    let output = run_ok(c.ctr().args(["tasks", "ls"]));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| (f[1].parse().expect("pid"), f[2].to_owned()))
        })
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/PID/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The options of the mount at `mount_point` in /proc/<pid>/mountinfo (the last one wins: it is on top).
fn mount_options(pid: u32, mount_point: &str) -> String {
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    mountinfo
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&mount_point)).then(|| f[5].to_owned())
        })
        .unwrap_or_else(|| panic!("no mount at {mount_point}:\n{mountinfo}"))
}

#[tokio::test]
async fn webhook_runs_from_the_image_read_only_as_nonroot() {
    require_root();
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("hotnic-image-")
        .tempdir()
        .expect("temp dir");
    let archive = work.path().join("hotnic.tar");
    let name = script_default_name();

    // The image is built (no --name: the script's default is what the manifests deploy) while
    // containerd starts.
    let build = Command::new(Path::new(ROOT).join("manifests/build-image.sh"))
        .arg("--binary")
        .arg(BIN)
        .arg(&archive)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn manifests/build-image.sh");
    let c = Containerd::start().await;
    let built = build.wait_with_output().expect("wait for build-image.sh");
    assert!(
        built.status.success(),
        "build-image.sh failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let setup_time = started.elapsed();
    let archive_size = fs::metadata(&archive).expect("archive").len();
    let entrypoint = check_archive(&archive, &name);

    let import_started = Instant::now();
    run_ok(
        c.ctr()
            .args(["images", "import", "--snapshotter", "overlayfs"])
            .arg(&archive),
    );
    let import_time = import_started.elapsed();
    let images = run_ok(c.ctr().args(["images", "ls", "-q"]));
    assert!(
        String::from_utf8_lossy(&images.stdout)
            .lines()
            .any(|l| l == name),
        "{name} not registered by the import: {images:?}"
    );

    let tls = work.path().join("tls");
    let generated = write_tls_dir(&tls);
    let (port, admin_port) = (free_port(), free_port());
    // The Deployment's args, with loopback listeners on free ports (the container shares the test's
    // network namespace), a short shutdown delay, and MACs allocated in memory: no API server runs
    // here for the MACAddress claims (tests/claims_kube.rs covers those through a real one).
    let (deployment_args, tls_dir) = webhook_deployment();
    let overridden = [
        "--listen=",
        "--admin-listen=",
        "--shutdown-delay=",
        "--allocator=",
    ];
    let mut args: Vec<String> = deployment_args
        .into_iter()
        .filter(|a| !overridden.iter().any(|o| a.starts_with(o)))
        .collect();
    assert_eq!(
        args.first().map(String::as_str),
        Some("webhook"),
        "{args:?}"
    );
    args.extend([
        format!("--listen=127.0.0.1:{port}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
        "--shutdown-delay=200ms".to_owned(),
        "--allocator=memory".to_owned(),
    ]);
    let log = work.path().join("webhook.log");
    let id = format!("{}-webhook", c.id);
    let mut guard = ContainerGuard {
        containerd: &c,
        id: id.clone(),
        armed: true,
    };
    let run_started = Instant::now();
    run_ok(
        c.ctr()
            .args(["run", "--detach", "--snapshotter", "overlayfs"])
            .arg("--log-uri")
            .arg(format!("file://{}", log.display()))
            .arg("--runc-root")
            .arg(c.runc_root())
            // In the harness's cgroup parent: its drop kills whatever the guard could not.
            .arg("--cgroup")
            .arg(format!("{}/{id}", c.cgroup_parent))
            // The test's network namespace (containerd runs in a namespace of its own): loopback reaches it.
            .arg("--with-ns")
            .arg(format!("network:/proc/{}/ns/net", std::process::id()))
            // The Deployment's securityContext: read-only root, no capabilities, RuntimeDefault seccomp
            // (no privilege escalation is ctr's default).
            .args(["--read-only", "--seccomp"])
            .args(
                ALL_CAPABILITIES
                    .iter()
                    .flat_map(|cap| ["--cap-drop".to_owned(), format!("CAP_{cap}")]),
            )
            .arg("--mount")
            .arg(format!(
                "type=bind,src={},dst={tls_dir},options=rbind:ro",
                tls.display()
            ))
            .arg(&name)
            .arg(&id)
            // kubelet runs the image's Entrypoint with the Deployment's args; `ctr run` (1.6) replaces the
            // whole command line with what it is given (the image's user, env and working dir still
            // apply), so it gets the Entrypoint from the image's config, then the args.
            .args(&entrypoint)
            .args(&args),
    );
    let container_log = || {
        format!(
            "--- container log:\n{}\n{}",
            fs::read_to_string(&log).unwrap_or_default(),
            c.log_tail()
        )
    };

    // Ready: the admin listener answers /readyz 200 (certificates loaded from the read-only mount).
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = plain
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        match task(&c, &id) {
            Some((_, status)) if status == "RUNNING" => {}
            other => panic!(
                "the webhook task is {other:?}, not running\n{}",
                container_log()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within 15 s\n{}",
            container_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_time = run_started.elapsed();

    // The process, seen from the host: the image's entrypoint, PID 1 of its namespace, uid/gid 65532,
    // no capabilities, no new privileges, seccomp filtering; root read-only, the TLS mount read-only.
    let (pid, _) = task(&c, &id).expect("the task is listed");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("task status");
    assert_eq!(status_field(&status, "Uid"), "65532 65532 65532 65532");
    assert_eq!(status_field(&status, "Gid"), "65532 65532 65532 65532");
    assert_eq!(status_field(&status, "NSpid"), format!("{pid} 1"));
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&status, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(&status, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(argv[..2], ["/usr/local/bin/hotnic", "webhook"], "{argv:?}");
    assert_eq!(
        fs::metadata(format!("/proc/{pid}/root/usr/local/bin/hotnic"))
            .expect("the binary in the container")
            .len(),
        fs::metadata(BIN).unwrap().len(),
        "the image holds this test's binary"
    );
    for mount_point in ["/", tls_dir.as_str()] {
        let options = mount_options(pid, mount_point);
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{mount_point} is mounted {options}"
        );
    }

    // A captured API-server review, over TLS, trusting only the test CA.
    let review_path = Path::new(ROOT)
        .join("tests/fixtures/apiserver-v1.32/001-mutate-create-pod-web-multus.json");
    let body = fs::read(&review_path)
        .unwrap_or_else(|e| panic!("the captured review {}: {e}", review_path.display()));
    let review: Value = serde_json::from_slice(&body).expect("review JSON");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(generated.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let review_started = Instant::now();
    let response = client
        .post(format!("https://localhost:{port}/mutate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /mutate: {e}\n{}", container_log()));
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("answer JSON");
    let review_time = review_started.elapsed();
    let resp = &answer["response"];
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    assert_eq!(resp["uid"], review["request"]["uid"], "{answer}");
    assert_eq!(resp["allowed"], true, "{answer}");
    assert_eq!(resp["patchType"], "JSONPatch", "{answer}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().expect("a patch"))
        .expect("base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON Patch");
    assert!(!patch.0.is_empty());
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies");
    let networks: Value = serde_json::from_str(
        object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
            .as_str()
            .expect("networks annotation"),
    )
    .unwrap();
    let networks = networks.as_array().expect("a network list");
    assert!(
        networks.len() >= 2 && networks.iter().all(|n| n["mac"].is_string()),
        "every NIC has a MAC after the patch: {networks:?}"
    );

    // SIGTERM to PID 1 (what kubelet sends): a graceful shutdown, exit 0. `ctr tasks delete` exits with
    // the task's exit code.
    run_ok(
        c.ctr()
            .args(["tasks", "kill", "--signal", "SIGTERM"])
            .arg(&id),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while task(&c, &id).is_some_and(|(_, s)| s != "STOPPED") {
        assert!(
            Instant::now() < deadline,
            "the webhook did not stop within 10 s of SIGTERM\n{}",
            container_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = c
        .ctr()
        .args(["tasks", "delete"])
        .arg(&id)
        .output()
        .expect("ctr tasks delete");
    assert!(
        deleted.status.success(),
        "the webhook exited with {:?} after SIGTERM\n{}",
        deleted.status.code(),
        container_log()
    );
    run_ok(c.ctr().args(["containers", "delete"]).arg(&id));
    guard.armed = false;
    drop(guard);
    assert!(task(&c, &id).is_none());
    let containers = run_ok(c.ctr().args(["containers", "ls", "-q"]));
    assert!(
        !String::from_utf8_lossy(&containers.stdout)
            .lines()
            .any(|l| l == id),
        "{containers:?}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the webhook process {pid} is gone"
    );
    let logged = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains("\"level\":\"ERROR\""),
        "errors logged:\n{logged}"
    );

    eprintln!(
        "image test: archive {archive_size} bytes; image build and containerd start (in parallel) {setup_time:?}, \
         import {import_time:?}, run → ready {ready_time:?}, review {review_time:?}, total {:?}",
        started.elapsed()
    );
}
