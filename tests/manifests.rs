//! The deployment manifests, checked without a cluster: every YAML document under `manifests/`
//! parses strictly (unknown or misspelt fields are errors), the kustomize output of
//! `manifests/` and `manifests/overlays/cert-manager/` (rendered by a small faithful renderer,
//! cross-checked against `kubectl kustomize` when kubectl is installed) holds the invariants of
//! issue 4, and the committed caBundle is the CA that signed the serving certificate in `certs/`.

#[path = "manifests_support/cel.rs"]
mod cel;
#[path = "manifests_support/kustomize.rs"]
mod kustomize;
mod support;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhookConfiguration, RuleWithOperations,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, Probe, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const NS: &str = "hotnic-system";
const TLS_SECRET: &str = "hotnic-webhook-tls";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
fn manifests() -> PathBuf {
    root().join("manifests")
}
fn cert_manager() -> PathBuf {
    manifests().join("overlays/cert-manager")
}

// ---------------------------------------------------------------------------------------------
// Strict parsing

/// Deserializes `v` into `T`, serializes it back and requires the same value: a field `T` does
/// not know (a typo, a field at the wrong level) is dropped on the way and shows up here.
fn strict<T: DeserializeOwned + Serialize>(v: &Value) -> Result<T> {
    let t: T = serde_json::from_value(v.clone()).context("does not deserialize")?;
    let back = serde_json::to_value(&t)?;
    if let Some(d) = first_diff(v, &back, String::new()) {
        bail!("unknown or malformed field at {d}");
    }
    Ok(t)
}

fn first_diff(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_diff(va, vb, format!("{at}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{at}.{k} (dropped)")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{at}.{k} (added)"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_diff(p, q, format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at} ({a} != {b})")),
    }
}

// cert-manager types (not in k8s-openapi): only the fields the overlay uses, unknown ones denied.
#[derive(serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CmObject<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: S,
}
#[derive(serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuerSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    self_signed: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<CaIssuer>,
}
#[derive(serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaIssuer {
    secret_name: String,
}
#[derive(serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertificateSpec {
    secret_name: String,
    #[serde(rename = "isCA", skip_serializing_if = "Option::is_none")]
    is_ca: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    common_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dns_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renew_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<PrivateKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    usages: Vec<String>,
    issuer_ref: IssuerRef,
}
#[derive(serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrivateKey {
    algorithm: String,
    size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_policy: Option<String>,
}
#[derive(serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuerRef {
    name: String,
    kind: String,
    group: String,
}
type Issuer = CmObject<IssuerSpec>;
type Certificate = CmObject<CertificateSpec>;

/// Strictly parses one Kubernetes object by its apiVersion and kind.
fn check_object(v: &Value) -> Result<()> {
    let api = v["apiVersion"].as_str().unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("v1", "Namespace") => strict::<Namespace>(v).map(drop),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(v).map(drop),
        ("v1", "Service") => strict::<Service>(v).map(drop),
        ("v1", "Secret") => strict::<Secret>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(v).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(v).map(drop),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(v).map(drop)
        }
        ("apps/v1", "Deployment") => strict::<Deployment>(v).map(drop),
        ("apps/v1", "DaemonSet") => strict::<DaemonSet>(v).map(drop),
        ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(v).map(drop),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            strict::<MutatingWebhookConfiguration>(v).map(drop)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
            strict::<ValidatingWebhookConfiguration>(v).map(drop)
        }
        ("cert-manager.io/v1", "Issuer") => strict::<Issuer>(v).map(drop),
        ("cert-manager.io/v1", "Certificate") => strict::<Certificate>(v).map(drop),
        _ => bail!("unexpected object {api} {kind}"),
    }
    .with_context(|| format!("{kind} {}", v["metadata"]["name"]))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_yaml_document_under_manifests_parses_strictly() {
    let mut files = Vec::new();
    yaml_files(&manifests(), &mut files);
    files.sort();
    let (mut kustomizations, mut patches, mut objects) = (0, 0, 0);
    let mut errors = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        let r: Result<()> = if name == "kustomization.yaml" {
            kustomizations += 1;
            kustomize::read_kustomization(f.parent().unwrap()).map(drop)
        } else if name.ends_with(".patch.yaml") {
            patches += 1;
            kustomize::read_yaml_docs(f).and_then(|docs| {
                ensure!(docs.len() == 1, "one JSON 6902 patch per file");
                let ops: Vec<kustomize::PatchOp> = serde_json::from_value(docs[0].clone())?;
                for o in &ops {
                    ensure!(
                        ["add", "replace", "remove", "test"].contains(&o.op.as_str()),
                        "op {}",
                        o.op
                    );
                    ensure!(
                        o.path.starts_with('/') && o.from.is_none(),
                        "path {}",
                        o.path
                    );
                    ensure!(
                        o.value.is_some() == (o.op != "remove"),
                        "value of {} {}",
                        o.op,
                        o.path
                    );
                }
                Ok(())
            })
        } else {
            kustomize::read_yaml_docs(f).and_then(|docs| {
                ensure!(!docs.is_empty(), "no documents");
                objects += docs.len();
                docs.iter().try_for_each(check_object)
            })
        };
        if let Err(e) = r {
            errors.push(format!(
                "{}: {e:#}",
                f.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(
        (kustomizations, patches),
        (3, 2),
        "kustomizations and patch files: {files:?}"
    );
    assert!(objects >= 15, "only {objects} objects");
    // The renders parse strictly too (patches applied, Secret generated).
    for dir in [manifests(), cert_manager()] {
        for o in kustomize::render(&dir).unwrap() {
            check_object(&o).unwrap();
        }
    }
}

#[test]
fn strict_parsing_catches_unknown_and_misplaced_fields() {
    let objs = kustomize::render(&manifests()).unwrap();
    let dep = find(&objs, "Deployment", "hotnic-webhook");
    check_object(dep).unwrap();
    for (ptr, field) in [
        ("/spec", "replica"),
        ("/spec/template/spec/containers/0", "readOnlyRootFilesystem"),
        (
            "/spec/template/spec/containers/0/securityContext",
            "runAsNonroot",
        ),
    ] {
        let mut bad = dep.clone();
        bad.pointer_mut(ptr)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(field.into(), json!(true));
        let err = check_object(&bad).expect_err(field);
        assert!(format!("{err:#}").contains(field), "{err:#}");
    }
    let mwc = find(&objs, "MutatingWebhookConfiguration", "hotnic");
    let mut bad = mwc.clone();
    bad["webhooks"][0]["matchCondition"] = json!([]);
    assert!(check_object(&bad).is_err());
    let mut bad = mwc.clone();
    bad["webhooks"][0]["timeoutSeconds"] = json!("5");
    assert!(check_object(&bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}
fn typed<T: DeserializeOwned + Serialize>(objs: &[Value], kind: &str, name: &str) -> T {
    strict(find(objs, kind, name)).unwrap()
}
fn ids(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}
fn by_id(objs: Vec<Value>) -> BTreeMap<String, Value> {
    objs.into_iter()
        .map(|o| {
            let id = format!(
                "{}/{}/{}/{}",
                o["apiVersion"], o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
            );
            (id, o)
        })
        .collect()
}

const BASE_OBJECTS: &[&str] = &[
    "Namespace/hotnic-system",
    "CustomResourceDefinition/macaddresses.hotnic.io",
    "ServiceAccount/hotnic-webhook",
    "ClusterRole/hotnic-webhook",
    "ClusterRoleBinding/hotnic-webhook",
    "Role/hotnic-webhook",
    "RoleBinding/hotnic-webhook",
    "ServiceAccount/hotnic-agent",
    "ClusterRole/hotnic-agent",
    "ClusterRoleBinding/hotnic-agent",
    "Service/hotnic-webhook",
    "Deployment/hotnic-webhook",
    "PodDisruptionBudget/hotnic-webhook",
    "DaemonSet/hotnic-agent",
    "MutatingWebhookConfiguration/hotnic",
    "ValidatingWebhookConfiguration/hotnic",
];

#[test]
fn renders_contain_exactly_the_expected_objects_in_hotnic_system() {
    let default = kustomize::render(&manifests()).unwrap();
    let mut want: BTreeSet<String> = BASE_OBJECTS.iter().map(|s| s.to_string()).collect();
    want.insert(format!("Secret/{TLS_SECRET}"));
    assert_eq!(ids(&default), want);
    let cm = kustomize::render(&cert_manager()).unwrap();
    let mut want: BTreeSet<String> = BASE_OBJECTS.iter().map(|s| s.to_string()).collect();
    want.extend(
        [
            "Issuer/hotnic-selfsigned",
            "Issuer/hotnic-ca",
            "Certificate/hotnic-ca",
            "Certificate/hotnic-webhook",
        ]
        .map(String::from),
    );
    assert_eq!(
        ids(&cm),
        want,
        "the cert-manager overlay ships no key material"
    );
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    for o in default.iter().chain(&cm) {
        let kind = o["kind"].as_str().unwrap();
        if cluster_scoped.contains(&kind) {
            assert!(
                o["metadata"]["namespace"].is_null(),
                "{kind} is cluster-scoped"
            );
        } else {
            assert_eq!(
                o["metadata"]["namespace"], NS,
                "{kind} {} namespace",
                o["metadata"]["name"]
            );
        }
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/part-of"], "hotnic",
            "{kind} label"
        );
        for c in containers_of(o) {
            assert_eq!(c.image.as_deref(), Some("ghcr.io/hotnic/hotnic:0.1.0"));
        }
    }
}

fn containers_of(o: &Value) -> Vec<Container> {
    match o.pointer("/spec/template/spec/containers") {
        Some(c) => serde_json::from_value(c.clone()).unwrap(),
        None => vec![],
    }
}

#[test]
fn renderer_handles_images_and_refuses_files_outside_the_root() {
    assert_eq!(
        kustomize::split_image("ghcr.io/hotnic/hotnic:0.1.0"),
        ("ghcr.io/hotnic/hotnic", Some("0.1.0"), None)
    );
    assert_eq!(
        kustomize::split_image("localhost:5000/hotnic"),
        ("localhost:5000/hotnic", None, None)
    );
    assert_eq!(
        kustomize::split_image("h@sha256:ab"),
        ("h", None, Some("sha256:ab"))
    );
    // A kustomization at manifests/ may not read certs/ directly: why manifests/webhook-tls exists.
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k");
    std::fs::create_dir(&k).unwrap();
    std::fs::write(dir.path().join("tls.crt"), "x").unwrap();
    std::fs::write(
        k.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nsecretGenerator:\n- name: s\n  files: [../tls.crt]\n  options: {disableNameSuffixHash: true}\n",
    )
    .unwrap();
    let err = kustomize::render(&k).unwrap_err();
    assert!(format!("{err:#}").contains("load restrictor"), "{err:#}");
    // An unsupported kustomize feature is an error, not silently ignored.
    std::fs::write(
        k.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: x-\n",
    )
    .unwrap();
    assert!(kustomize::render(&k).is_err());
}

/// The renderer against the real kustomize (built into kubectl), when kubectl is installed
/// (CI does not install it; set HOTNIC_TEST_KUBECTL=/path/to/kubectl to require it).
#[test]
fn renderer_matches_kubectl_kustomize() {
    let required = std::env::var_os("HOTNIC_TEST_KUBECTL");
    let kubectl = required.clone().unwrap_or_else(|| "kubectl".into());
    let probe = std::process::Command::new(&kubectl)
        .args(["kustomize", "--help"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            required.is_none(),
            "HOTNIC_TEST_KUBECTL={kubectl:?} does not run `kubectl kustomize`"
        );
        eprintln!(
            "SKIPPED renderer_matches_kubectl_kustomize: no kubectl on PATH (set HOTNIC_TEST_KUBECTL to require it)"
        );
        return;
    }
    for dir in [manifests(), cert_manager()] {
        let out = std::process::Command::new(&kubectl)
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut theirs = Vec::new();
        for doc in serde_yaml::Deserializer::from_slice(&out.stdout) {
            use serde::Deserialize;
            theirs.push(Value::deserialize(doc).unwrap());
        }
        // kubectl prints Secret data as line-wrapped base64; the bytes are what count.
        for o in theirs.iter_mut().filter(|o| o["kind"] == "Secret") {
            for v in o["data"].as_object_mut().unwrap().values_mut() {
                *v = json!(v.as_str().unwrap().replace('\n', ""));
            }
        }
        let (ours, theirs) = (by_id(kustomize::render(&dir).unwrap()), by_id(theirs));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{}",
            dir.display()
        );
        for (id, o) in &ours {
            assert_eq!(
                first_diff(o, &theirs[id], id.clone()),
                None,
                "{}",
                dir.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook configurations

struct Hook {
    config: String,
    name: String,
    client: WebhookClientConfig,
    rules: Vec<RuleWithOperations>,
    conditions: Vec<MatchCondition>,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    side_effects: String,
    versions: Vec<String>,
    timeout: Option<i32>,
    failure: Option<String>,
    match_policy: Option<String>,
    reinvocation: Option<String>,
}

fn hooks(objs: &[Value]) -> Vec<Hook> {
    let m: MutatingWebhookConfiguration = typed(objs, "MutatingWebhookConfiguration", "hotnic");
    let mut out = Vec::new();
    for w in m.webhooks.unwrap_or_default() {
        out.push(Hook {
            config: "MutatingWebhookConfiguration".into(),
            name: w.name,
            client: w.client_config,
            rules: w.rules.unwrap_or_default(),
            conditions: w.match_conditions.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            side_effects: w.side_effects,
            versions: w.admission_review_versions,
            timeout: w.timeout_seconds,
            failure: w.failure_policy,
            match_policy: w.match_policy,
            reinvocation: w.reinvocation_policy,
        });
    }
    out.extend(validating_hooks(objs, "hotnic"));
    out
}

/// The webhooks of the ValidatingWebhookConfiguration `name`.
fn validating_hooks(objs: &[Value], name: &str) -> Vec<Hook> {
    let v: ValidatingWebhookConfiguration = typed(objs, "ValidatingWebhookConfiguration", name);
    let config = match name {
        "hotnic" => "ValidatingWebhookConfiguration".to_string(),
        other => format!("ValidatingWebhookConfiguration/{other}"),
    };
    v.webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| Hook {
            config: config.clone(),
            name: w.name,
            client: w.client_config,
            rules: w.rules.unwrap_or_default(),
            conditions: w.match_conditions.unwrap_or_default(),
            namespace_selector: w.namespace_selector,
            object_selector: w.object_selector,
            side_effects: w.side_effects,
            versions: w.admission_review_versions,
            timeout: w.timeout_seconds,
            failure: w.failure_policy,
            match_policy: w.match_policy,
            reinvocation: None,
        })
        .collect()
}

#[test]
fn webhook_configurations_hold_the_admission_invariants() {
    for dir in [manifests(), cert_manager()] {
        let objs = kustomize::render(&dir).unwrap();
        let svc: Service = typed(&objs, "Service", "hotnic-webhook");
        let hs = hooks(&objs);
        assert_eq!(hs.len(), 2, "one mutating and one validating webhook");
        for h in &hs {
            let ctx = format!("{} {} ({})", h.config, h.name, dir.display());
            assert!(
                h.name.ends_with(".hotnic.io"),
                "{ctx}: fully qualified name"
            );
            // It writes MACAddress claims on real requests, never on dry-run ones (checked
            // against the code path in `side_effects_state_what_the_code_does`).
            assert_eq!(
                h.side_effects, "NoneOnDryRun",
                "{ctx}: dry-run requests must reach it, and it has side effects otherwise"
            );
            assert_eq!(h.versions, ["v1"], "{ctx}");
            assert_eq!(h.timeout, Some(5), "{ctx}");
            assert_eq!(h.failure.as_deref(), Some("Fail"), "{ctx}");
            assert_eq!(h.match_policy.as_deref(), Some("Equivalent"), "{ctx}");
            let mutating = h.config.starts_with("Mutating");
            assert_eq!(
                h.reinvocation.as_deref(),
                mutating.then_some("IfNeeded"),
                "{ctx}"
            );
            // The Service reference: the right Service, port and path.
            assert!(
                h.client.url.is_none(),
                "{ctx}: service reference, not a URL"
            );
            let s = h.client.service.as_ref().expect("service reference");
            assert_eq!(
                (s.name.as_str(), s.namespace.as_str()),
                (svc.metadata.name.as_deref().unwrap(), NS),
                "{ctx}"
            );
            let port = s.port.unwrap_or(443);
            assert!(
                svc.spec
                    .as_ref()
                    .unwrap()
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|p| p.port == port),
                "{ctx}: Service has no port {port}"
            );
            assert_eq!(
                s.path.as_deref(),
                Some(if mutating { "/mutate" } else { "/validate" }),
                "{ctx}"
            );
            // Rules: pods (no subresources), KubeVirt VMs and VMIs; CREATE and UPDATE only.
            let mut seen = BTreeSet::new();
            for r in &h.rules {
                let ops: BTreeSet<_> = r.operations.iter().flatten().map(String::as_str).collect();
                assert_eq!(ops, BTreeSet::from(["CREATE", "UPDATE"]), "{ctx}");
                assert_eq!(r.scope.as_deref(), Some("Namespaced"), "{ctx}");
                for (g, v, res) in itertools3(r) {
                    assert!(
                        !res.contains('/')
                            && !res.contains('*')
                            && !g.contains('*')
                            && !v.contains('*'),
                        "{ctx}: {g}/{v}/{res}"
                    );
                    seen.insert(format!("{g}/{v}/{res}"));
                }
            }
            let want = BTreeSet::from(
                [
                    "/v1/pods",
                    "kubevirt.io/v1/virtualmachines",
                    "kubevirt.io/v1/virtualmachineinstances",
                ]
                .map(String::from),
            );
            assert_eq!(seen, want, "{ctx}");
            // Never the control plane, never hotnic itself; namespaces can opt out.
            let ns = h.namespace_selector.as_ref().expect("namespaceSelector");
            assert!(
                ns.match_labels.as_ref().is_none_or(|m| m.is_empty()),
                "{ctx}"
            );
            let exprs = ns.match_expressions.as_ref().expect("matchExpressions");
            let names = exprs
                .iter()
                .find(|e| e.key == "kubernetes.io/metadata.name")
                .expect("metadata.name expression");
            assert_eq!(names.operator, "NotIn");
            let excluded: BTreeSet<_> = names.values.iter().flatten().map(String::as_str).collect();
            assert!(
                excluded.is_superset(&BTreeSet::from(["kube-system", NS])),
                "{ctx}: {excluded:?}"
            );
            let ignore = exprs
                .iter()
                .find(|e| e.key == "hotnic.io/ignore")
                .expect("hotnic.io/ignore expression");
            assert_eq!(
                (ignore.operator.as_str(), ignore.values.as_deref()),
                ("NotIn", Some(&["true".to_string()][..])),
                "{ctx}"
            );
            assert!(
                selector_matches(
                    ns,
                    &BTreeMap::from([("kubernetes.io/metadata.name", "demo")])
                ),
                "{ctx}"
            );
            for labels in [
                BTreeMap::from([("kubernetes.io/metadata.name", "kube-system")]),
                BTreeMap::from([("kubernetes.io/metadata.name", NS)]),
                BTreeMap::from([
                    ("kubernetes.io/metadata.name", "demo"),
                    ("hotnic.io/ignore", "true"),
                ]),
            ] {
                assert!(
                    !selector_matches(ns, &labels),
                    "{ctx}: {labels:?} must be excluded"
                );
            }
            // KubeVirt's launcher pods are left to KubeVirt.
            let os = h.object_selector.as_ref().expect("objectSelector");
            assert!(
                !selector_matches(os, &BTreeMap::from([("kubevirt.io", "virt-launcher")])),
                "{ctx}"
            );
            assert!(
                selector_matches(os, &BTreeMap::from([("app", "web")])),
                "{ctx}"
            );
            assert!(selector_matches(os, &BTreeMap::new()), "{ctx}");
            // caBundle: set by the patch (default) or by cert-manager (overlay), never both.
            let injected = find(&objs, &h.config, "hotnic")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].clone();
            if dir == cert_manager() {
                assert!(h.client.ca_bundle.is_none(), "{ctx}");
                let cert: Certificate = typed(&objs, "Certificate", "hotnic-webhook");
                assert_eq!(
                    injected,
                    format!("{NS}/{}", cert.metadata.name.unwrap()),
                    "{ctx}"
                );
            } else {
                assert!(h.client.ca_bundle.is_some(), "{ctx}: no caBundle");
                assert!(injected.is_null(), "{ctx}");
            }
        }
    }
}

fn itertools3(r: &RuleWithOperations) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in r.api_groups.iter().flatten() {
        for v in r.api_versions.iter().flatten() {
            for res in r.resources.iter().flatten() {
                out.push((g.clone(), v.clone(), res.clone()));
            }
        }
    }
    out
}

/// Label-selector semantics (matchLabels and In/NotIn/Exists/DoesNotExist).
fn selector_matches(s: &LabelSelector, labels: &BTreeMap<&str, &str>) -> bool {
    let ml = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()) == Some(&v.as_str()));
    ml && s.match_expressions.iter().flatten().all(|e| {
        let vals: Vec<&str> = e.values.iter().flatten().map(String::as_str).collect();
        let have = labels.get(e.key.as_str());
        match e.operator.as_str() {
            "In" => have.is_some_and(|h| vals.contains(h)),
            "NotIn" => have.is_none_or(|h| !vals.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            op => panic!("unknown operator {op}"),
        }
    })
}

/// The webhook paths are the routes the server really serves (the library's router, in process).
#[tokio::test]
async fn configured_paths_are_served_by_the_webhook_and_admin_routers() {
    use hotnic::webhook::{admin, metrics::Metrics, routes};
    use tower::ServiceExt;
    let objs = kustomize::render(&manifests()).unwrap();
    let app = routes::AppState::new(
        hotnic::policy::Policy::in_memory(hotnic::allocator::MacRange::default_range()),
        std::sync::Arc::new(Metrics::new()),
    );
    let call = |router: axum::Router, method: &str, path: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        async move { router.oneshot(req).await.unwrap().status().as_u16() }
    };
    // Sanity: a path the server does not serve is 404.
    assert_eq!(
        call(routes::router(app.clone(), 1 << 20), "POST", "/nope").await,
        404
    );
    for h in hooks(&objs) {
        let path = h.client.service.unwrap().path.unwrap();
        let status = call(routes::router(app.clone(), 1 << 20), "POST", &path).await;
        assert_eq!(
            status, 400,
            "{path}: `{{}}` is not an AdmissionReview, so a served route answers 400 (got {status})"
        );
    }
    let dep: Deployment = typed(&objs, "Deployment", "hotnic-webhook");
    let c = &dep.spec.unwrap().template.spec.unwrap().containers[0];
    for probe in [&c.liveness_probe, &c.readiness_probe] {
        let path = probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap();
        let status = call(admin::router(app.clone(), None), "GET", &path).await;
        assert!(status == 200 || status == 503, "admin {path}: {status}");
    }
}

// ---------------------------------------------------------------------------------------------
// matchConditions (CEL)

fn conditions_of(objs: &[Value]) -> Vec<(String, cel::Expr)> {
    let mut out = Vec::new();
    for h in hooks(objs) {
        assert!(!h.conditions.is_empty(), "{}: no matchConditions", h.config);
        assert!(h.conditions.len() <= 64);
        for c in &h.conditions {
            let e = cel::parse(&c.expression)
                .unwrap_or_else(|err| panic!("{} {}: {err}\n{}", h.config, c.name, c.expression));
            let mut ids = Vec::new();
            cel::idents(&e, &mut ids);
            assert!(
                ids.iter().any(|i| i == "object") && ids.iter().any(|i| i == "oldObject"),
                "{}: {ids:?}",
                c.name
            );
            out.push((format!("{} {}", h.config, c.name), e));
        }
    }
    out
}

fn yaml_file(rel: &str) -> Value {
    kustomize::read_yaml_docs(&root().join(rel))
        .unwrap()
        .remove(0)
}

/// Whether the API server would send the request (all conditions true); Err = evaluation error,
/// which with failurePolicy Fail rejects the request.
fn sent(conds: &[(String, cel::Expr)], object: &Value, old: &Value) -> Result<bool, String> {
    let vars = [
        ("object", object),
        ("oldObject", old),
        ("request", &Value::Null),
    ];
    let mut all = true;
    for (name, e) in conds {
        match cel::eval(e, &vars) {
            Ok(Value::Bool(b)) => all &= b,
            Ok(v) => return Err(format!("{name}: not a bool: {v}")),
            Err(err) => return Err(format!("{name}: {err}")),
        }
    }
    Ok(all)
}

#[test]
fn match_conditions_send_only_objects_with_nics_and_never_error() {
    let objs = kustomize::render(&manifests()).unwrap();
    let conds = conditions_of(&objs);
    let null = Value::Null;
    let multus = yaml_file("examples/multus/pod.yaml");
    let vm = yaml_file("examples/kubevirt/vm.yaml");
    let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "demo"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let annotated = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"a": "b"}}, "spec": {}});
    let arktos = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vm"}, "spec": {"nics": [{"name": "eth0"}]}});
    let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "i"},
        "spec": {"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}}}});
    let vm_no_nics = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "v"},
        "spec": {"template": {"spec": {"domain": {"devices": {"disks": []}}}}}});
    let vmi_no_devices = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "i"},
        "spec": {"domain": {"cpu": {"cores": 1}}}});
    let no_metadata = json!({"kind": "Pod"});
    let cases: &[(&str, &Value, &Value, bool)] = &[
        ("multus pod CREATE", &multus, &null, true),
        ("KubeVirt VM CREATE", &vm, &null, true),
        ("VMI with interfaces", &vmi, &null, true),
        ("Arktos pod spec.nics", &arktos, &null, true),
        ("plain pod CREATE", &plain, &null, false),
        ("pod with other annotations", &annotated, &null, false),
        ("VM without interfaces", &vm_no_nics, &null, false),
        ("VMI without devices", &vmi_no_devices, &null, false),
        ("object without metadata", &no_metadata, &null, false),
        ("plain pod UPDATE", &plain, &annotated, false),
        (
            "networks annotation removed (oldObject)",
            &plain,
            &multus,
            true,
        ),
        (
            "interfaces removed from a VM (oldObject)",
            &vm_no_nics,
            &vm,
            true,
        ),
        ("multus pod UPDATE", &multus, &multus, true),
    ];
    for (what, obj, old, want) in cases {
        assert_eq!(sent(&conds, obj, old), Ok(*want), "{what}");
    }
}

/// The objects the agreement test below runs on: both objects of every captured review, every
/// example workload and what each example patch makes of it, and the review example's object.
fn fixture_and_example_objects() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, review) in support::fixtures() {
        for key in ["object", "oldObject"] {
            let o = review["request"].get(key).cloned().unwrap_or(Value::Null);
            out.push((format!("{name} {key}"), o));
        }
    }
    // Edges: present-but-null fields count, like CEL's has(); other fields do not.
    for (what, o) in [
        (
            "spec.nics null",
            json!({"kind": "Pod", "spec": {"nics": null}}),
        ),
        (
            "networks annotation null",
            json!({"kind": "Pod", "metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": null}}}),
        ),
        (
            "VMI interfaces null",
            json!({"kind": "VirtualMachineInstance", "spec": {"domain": {"devices": {"interfaces": null}}}}),
        ),
        (
            "VM networks without interfaces",
            json!({"kind": "VirtualMachine", "spec": {"template": {"spec": {"domain": {"devices": {}},
                "networks": [{"name": "default", "pod": {}}]}}}}),
        ),
        (
            "other annotations",
            json!({"kind": "Pod", "metadata": {"annotations": {"v1.multus-cni.io/default-network": "x"}}}),
        ),
        ("no metadata", json!({"kind": "Pod"})),
    ] {
        out.push((what.to_string(), o));
    }
    let review = yaml_file("examples/multus/review.json");
    out.push((
        "examples/multus/review.json object".into(),
        review["request"]["object"].clone(),
    ));
    for (base, patches) in [
        (
            "examples/multus/pod.yaml",
            &["hotplug.merge-patch.yaml", "invalid.merge-patch.yaml"][..],
        ),
        (
            "examples/arktos/vm-pod.yaml",
            &["hotplug.json-patch.json", "invalid.json-patch.json"][..],
        ),
        (
            "examples/kubevirt/vm.yaml",
            &[
                "hotplug.json-patch.json",
                "invalid.json-patch.json",
                "unplug.json-patch.json",
            ][..],
        ),
    ] {
        let obj = yaml_file(base);
        out.push((base.to_string(), obj.clone()));
        let dir = Path::new(base).parent().unwrap();
        for p in patches {
            let rel = dir.join(p).display().to_string();
            let patch = yaml_file(&rel);
            let mut patched = obj.clone();
            if p.ends_with(".json-patch.json") {
                let ops: json_patch::Patch = serde_json::from_value(patch).unwrap();
                json_patch::patch(&mut patched, &ops.0).unwrap();
            } else {
                json_patch::merge(&mut patched, &patch);
            }
            out.push((format!("{base} + {p}"), patched));
        }
    }
    out
}

/// "Is this object ours?" has one source, `hotnic::dialect::carries_nics`; the matchConditions
/// say it again in CEL for the API server. They agree on every object above, whichever side of
/// the request it is on, and on every captured review as sent (a few were captured without the
/// conditions: 013's Arktos `spec.nics` was dropped by the vanilla API server, so neither says
/// it is ours).
/// The kinds the webhooks' rules name are `hotnic::dialect::Kind::ALL`.
#[test]
fn match_conditions_agree_with_the_rust_predicate_on_every_fixture_and_example() {
    use hotnic::dialect::{Kind, carries_nics};
    let null = Value::Null;
    for dir in [manifests(), cert_manager()] {
        let objs = kustomize::render(&dir).unwrap();
        let conds = conditions_of(&objs);
        let objects = fixture_and_example_objects();
        assert!(objects.len() >= 50, "{}", objects.len());
        let mut with_nics = 0;
        for (what, o) in &objects {
            let ours = carries_nics(o);
            with_nics += usize::from(ours);
            assert_eq!(sent(&conds, o, &null), Ok(ours), "{what} as object");
            assert_eq!(sent(&conds, &null, o), Ok(ours), "{what} as oldObject");
        }
        // Both verdicts occur (CREATE fixtures have no oldObject).
        assert!(with_nics >= 30 && with_nics < objects.len(), "{with_nics}");
        for (name, review) in support::fixtures() {
            let r = &review["request"];
            let o = r.get("object").unwrap_or(&null);
            let old = r.get("oldObject").unwrap_or(&null);
            let ours = carries_nics(o) || carries_nics(old);
            assert_eq!(sent(&conds, o, old), Ok(ours), "{name}");
        }

        // The webhooks' rules name exactly the kinds hotnic reads.
        let kinds: BTreeSet<(String, String)> = Kind::ALL
            .iter()
            .map(|k| (k.group().to_string(), k.resource().to_string()))
            .collect();
        for h in hooks(&objs) {
            let named: BTreeSet<(String, String)> = h
                .rules
                .iter()
                .flat_map(itertools3)
                .map(|(g, _, r)| (g, r))
                .collect();
            assert_eq!(named, kinds, "{} {}", h.config, h.name);
        }
        for k in Kind::ALL {
            assert_eq!(Kind::of(k.group(), k.as_str()), Some(k));
        }
        assert_eq!(Kind::of("", "VirtualMachine"), None);
        assert_eq!(Kind::of("kubevirt.io", "Pod"), None);
    }
}

#[test]
fn cel_checker_rejects_malformed_and_unguarded_expressions() {
    for bad in [
        "has(object.metadata.annotations", // unbalanced
        "object.spec.nics) && (true",      // unbalanced order
        "has(objet.spec)",                 // unknown identifier
        "exists(object.spec)",             // unknown function
        "has(object)",                     // has() needs a selection
        "object.spec. && true",            // not an expression
    ] {
        assert!(cel::parse(bad).is_err(), "{bad}");
    }
    // An unguarded selection is an evaluation error on an object without the field: with
    // failurePolicy Fail the API server would reject the request, so the real conditions must
    // never do this (the test above proves they do not).
    let e = cel::parse("object.spec.nics != null || has(oldObject.spec)").unwrap();
    let plain = json!({"spec": {}});
    assert!(cel::eval(&e, &[("object", &plain), ("oldObject", &Value::Null)]).is_err());
    // ...and error absorption works like CEL's: true || error is true.
    let e = cel::parse("true || object.spec.nics").unwrap();
    assert_eq!(cel::eval(&e, &[("object", &plain)]), Ok(json!(true)));
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn pod_spec<T: Serialize>(o: &T) -> PodSpec {
    let v = serde_json::to_value(o).unwrap();
    serde_json::from_value(v["spec"]["template"]["spec"].clone()).unwrap()
}

fn port_named(c: &Container, p: &IntOrString) -> i32 {
    match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no port {name}"))
                .container_port
        }
    }
}

fn probe_target(c: &Container, p: &Option<Probe>) -> (i32, String) {
    let g = p
        .as_ref()
        .expect("probe")
        .http_get
        .as_ref()
        .expect("httpGet probe");
    (port_named(c, &g.port), g.path.clone().unwrap())
}

fn check_resources(c: &Container) {
    let r = c.resources.as_ref().expect("resources");
    for (what, m) in [("requests", &r.requests), ("limits", &r.limits)] {
        let m = m
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no {what}", c.name));
        assert!(
            m.contains_key("cpu") && m.contains_key("memory"),
            "{}: {what} {m:?}",
            c.name
        );
    }
}

#[derive(clap::Parser)]
struct WebhookCli {
    #[command(flatten)]
    args: hotnic::webhook::WebhookArgs,
}

#[test]
fn webhook_deployment_is_highly_available_locked_down_and_wired_to_its_ports() {
    use clap::Parser;
    for dir in [manifests(), cert_manager()] {
        let objs = kustomize::render(&dir).unwrap();
        let dep: Deployment = typed(&objs, "Deployment", "hotnic-webhook");
        let spec = dep.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let ru = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(
            ru.max_unavailable,
            Some(IntOrString::Int(0)),
            "never below 2 ready replicas in a rollout"
        );
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        let pod_labels: BTreeMap<&str, &str> = pod_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(selector_matches(&spec.selector, &pod_labels));
        let ps = pod_spec(&dep);
        assert_eq!(
            ps.priority_class_name.as_deref(),
            Some("system-cluster-critical")
        );
        assert_eq!(ps.service_account_name.as_deref(), Some("hotnic-webhook"));
        assert_ne!(ps.host_network, Some(true));
        // Anti-affinity across nodes, selecting these very pods.
        let aa = ps
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .expect("podAntiAffinity");
        let terms: Vec<_> = aa
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .map(|w| w.pod_affinity_term.clone())
            .chain(
                aa.required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .cloned(),
            )
            .collect();
        assert!(
            terms
                .iter()
                .any(|t| t.topology_key == "kubernetes.io/hostname"
                    && t.label_selector
                        .as_ref()
                        .is_some_and(|s| selector_matches(s, &pod_labels))),
            "no anti-affinity on kubernetes.io/hostname for the webhook's own pods"
        );
        // PDB keeps one.
        let pdb: PodDisruptionBudget = typed(&objs, "PodDisruptionBudget", "hotnic-webhook");
        let pdb = pdb.spec.unwrap();
        assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
        assert!(selector_matches(
            pdb.selector.as_ref().unwrap(),
            &pod_labels
        ));
        // Security.
        let psc = ps.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.is_some_and(|u| u != 0));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(ps.containers.len(), 1);
        let c = &ps.containers[0];
        let sc = c
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_ne!(sc.privileged, Some(true));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(
            caps.add.as_ref().is_none_or(|a| a.is_empty()),
            "the webhook needs no capabilities"
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        check_resources(c);
        // The real CLI parses the args; its resolved addresses are the container's ports.
        let args = c.args.clone().unwrap();
        assert_eq!(args[0], "webhook");
        let cli =
            WebhookCli::try_parse_from(&args).unwrap_or_else(|e| panic!("hotnic {args:?}: {e}"));
        assert!(!cli.args.dev, "never --dev in a cluster");
        assert_eq!(cli.args.log_format, hotnic::cli::LogFormat::Json);
        let cfg = hotnic::webhook::Config::from_args(&cli.args).unwrap();
        // MAC claims in the API server, cluster-wide, with the repair loop under its Lease in the
        // pod's own namespace, held under the pod's name.
        match &cfg.allocator {
            hotnic::webhook::AllocatorConfig::Kubernetes(k) => {
                assert!(k.kubeconfig.is_none(), "in-cluster configuration");
                assert!(k.repair.is_some());
            }
            other => panic!("--allocator: {other:?}"),
        }
        assert_eq!(cfg.mac_scope, hotnic::allocator::ScopeMode::Cluster);
        let env: BTreeMap<String, String> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| {
                let path = e
                    .value_from
                    .as_ref()?
                    .field_ref
                    .as_ref()?
                    .field_path
                    .clone();
                Some((e.name.clone(), path))
            })
            .collect();
        assert_eq!(
            env.get("HOTNIC_POD_NAME").map(String::as_str),
            Some("metadata.name")
        );
        assert_eq!(
            env.get("HOTNIC_LEASE_NAMESPACE").map(String::as_str),
            Some("metadata.namespace")
        );
        let tls_port = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.container_port == i32::from(cfg.listen.port()))
            .expect("TLS port is a container port");
        let admin_port = i32::from(cfg.admin_listen.port());
        assert_ne!(tls_port.container_port, admin_port);
        // Probes on the admin port's health paths.
        assert_eq!(
            probe_target(c, &c.liveness_probe),
            (admin_port, "/livez".into())
        );
        assert_eq!(
            probe_target(c, &c.readiness_probe),
            (admin_port, "/readyz".into())
        );
        // Service 443 -> the TLS port.
        let svc: Service = typed(&objs, "Service", "hotnic-webhook");
        let ss = svc.spec.unwrap();
        let sel: BTreeMap<&str, &str> = ss
            .selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(
            sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "Service selects the webhook pods"
        );
        let sp = ss
            .ports
            .unwrap()
            .into_iter()
            .find(|p| p.port == 443)
            .expect("Service port 443");
        assert_eq!(
            port_named(c, sp.target_port.as_ref().unwrap()),
            tls_port.container_port,
            "Service 443 -> TLS port"
        );
        // Certificates from the Secret volume.
        let vol = ps
            .volumes
            .iter()
            .flatten()
            .find(|v| {
                v.secret
                    .as_ref()
                    .is_some_and(|s| s.secret_name.as_deref() == Some(TLS_SECRET))
            })
            .expect("TLS Secret volume");
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == vol.name)
            .expect("mounted");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(cfg.tls_cert, Path::new(&mount.mount_path).join("tls.crt"));
        assert_eq!(cfg.tls_key, Path::new(&mount.mount_path).join("tls.key"));
        // The Secret exists (default) or cert-manager writes it (overlay).
        if dir == cert_manager() {
            let cert: Certificate = typed(&objs, "Certificate", "hotnic-webhook");
            assert_eq!(cert.spec.secret_name, TLS_SECRET);
        } else {
            let s: Secret = typed(&objs, "Secret", TLS_SECRET);
            assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
            let keys: BTreeSet<_> = s.data.unwrap().keys().cloned().collect();
            assert!(keys.is_superset(&BTreeSet::from(["tls.crt".into(), "tls.key".into()])));
        }
        let grace = ps.termination_grace_period_seconds.unwrap_or(30);
        assert!(
            grace as u64 > (cfg.shutdown_delay + cfg.limits.drain_timeout).as_secs(),
            "grace period too short for the drain"
        );
    }
}

#[derive(clap::Parser)]
struct AgentCli {
    #[command(flatten)]
    args: hotnic::agent::AgentArgs,
}

#[test]
fn agent_daemonset_has_exactly_the_privileges_it_needs() {
    let objs = kustomize::render(&manifests()).unwrap();
    let ds: DaemonSet = typed(&objs, "DaemonSet", "hotnic-agent");
    let ps = pod_spec(&ds);
    assert_eq!(
        ps.host_network,
        Some(true),
        "CNI plugins work in the host network namespace"
    );
    assert_eq!(ps.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(ps.service_account_name.as_deref(), Some("hotnic-agent"));
    assert_eq!(
        ps.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_ne!(ps.host_pid, Some(true));
    assert_ne!(ps.host_ipc, Some(true));
    let c = &ps.containers[0];
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "agent");
    assert!(
        args.contains(&"--node=$(NODE_NAME)".to_string()),
        "{args:?}"
    );
    let node = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName"
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<_> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, BTreeSet::from(["NET_ADMIN", "SYS_ADMIN"]));
    let seccomp = sc.seccomp_profile.as_ref().or(ps
        .security_context
        .as_ref()
        .and_then(|p| p.seccomp_profile.as_ref()));
    assert_eq!(seccomp.unwrap().type_, "RuntimeDefault");
    check_resources(c);
    // The real CLI parses the args (with the downward-API variable expanded): Kubernetes mode,
    // namespaces from the CRI runtime, and every path the agent uses is a volume mount.
    {
        use clap::Parser;
        let expanded: Vec<String> = args
            .iter()
            .map(|a| a.replace("$(NODE_NAME)", "node-1"))
            .collect();
        let cli = AgentCli::try_parse_from(&expanded)
            .unwrap_or_else(|e| panic!("hotnic {expanded:?}: {e}"));
        assert_eq!(cli.args.node.as_deref(), Some("node-1"));
        assert!(cli.args.pods_dir.is_none() && !cli.args.once);
        assert!(
            cli.args.netns_path_template.is_none(),
            "pod network namespaces come from the CRI runtime"
        );
        let mounts: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        let mounted = |p: &std::path::Path| mounts.iter().any(|m| p.starts_with(m));
        assert!(
            mounted(&cli.args.state_dir),
            "state dir {:?} not mounted",
            cli.args.state_dir
        );
        for dir in cli.args.cni_path.split(':') {
            assert!(
                mounted(std::path::Path::new(dir)),
                "CNI dir {dir} not mounted"
            );
        }
        match &cli.args.cri_socket {
            Some(sock) => assert!(mounted(sock), "{sock:?} not mounted"),
            None => {
                for runtime_dir in ["/run/containerd", "/var/run/crio"] {
                    assert!(
                        hotnic::agent::cri::DEFAULT_SOCKETS
                            .iter()
                            .any(|s| s.starts_with(runtime_dir)),
                        "{runtime_dir} is a socket the agent looks for"
                    );
                    assert!(
                        mounted(std::path::Path::new(runtime_dir)),
                        "{runtime_dir} not mounted"
                    );
                }
            }
        }
    }
    let admin = args
        .iter()
        .find_map(|a| a.strip_prefix("--admin-listen="))
        .expect("--admin-listen");
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    assert_eq!(admin.port(), 9090);
    assert_eq!(probe_target(c, &c.liveness_probe), (9090, "/livez".into()));
    assert_eq!(
        probe_target(c, &c.readiness_probe),
        (9090, "/readyz".into())
    );
    // Host paths: what is mounted, where, and read-only where it only reads or connects.
    let mut mounts = BTreeMap::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = ps
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        if let Some(hp) = &v.host_path {
            assert_eq!(
                hp.path, m.mount_path,
                "host paths appear at the same place inside"
            );
            mounts.insert(
                hp.path.clone(),
                (m.read_only == Some(true), m.mount_propagation.clone()),
            );
        }
    }
    let ro = |p: &str| (p.to_string(), (true, None));
    let rw = |p: &str| (p.to_string(), (false, None));
    let netns = |p: &str| (p.to_string(), (false, Some("HostToContainer".to_string())));
    let want = BTreeMap::from([
        netns("/run/netns"),
        netns("/var/run/netns"),
        ro("/run/containerd"),
        ro("/var/run/crio"),
        rw("/var/lib/cni"),
        ro("/opt/cni/bin"),
        ro("/usr/lib/cni"),
        rw("/var/lib/hotnic"),
    ]);
    assert_eq!(mounts, want);
}

// ---------------------------------------------------------------------------------------------
// RBAC

fn rules(objs: &[Value], name: &str) -> Vec<PolicyRule> {
    let r: ClusterRole = typed(objs, "ClusterRole", name);
    r.rules.unwrap_or_default()
}

fn flatten(rules: &[PolicyRule]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert(format!("{g}/{res}:{v}"));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_is_least_privilege_without_wildcards() {
    let objs = kustomize::render(&manifests()).unwrap();
    for o in &objs {
        let kind = o["kind"].as_str().unwrap();
        if kind == "ClusterRole" || kind == "Role" {
            let text = serde_json::to_string(&o["rules"]).unwrap();
            assert!(
                !text.contains('*'),
                "{kind} {}: wildcard in {text}",
                o["metadata"]["name"]
            );
        }
        assert!(!(kind == "ClusterRole" && o["aggregationRule"].is_object()));
    }
    let set = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    // The webhook: its MACAddress claims, read-only owner lookups, DuplicateMAC events, and its
    // repair Lease, exactly (README "MAC uniqueness"; the real-cluster tier runs it with these).
    assert_eq!(
        flatten(&rules(&objs, "hotnic-webhook")),
        set(&[
            "hotnic.io/macaddresses:get",
            "hotnic.io/macaddresses:list",
            "hotnic.io/macaddresses:watch",
            "hotnic.io/macaddresses:create",
            "hotnic.io/macaddresses:patch",
            "hotnic.io/macaddresses:delete",
            "/pods:list",
            "kubevirt.io/virtualmachines:list",
            "kubevirt.io/virtualmachineinstances:list",
            "events.k8s.io/events:create",
            "events.k8s.io/events:patch",
        ])
    );
    let role: Role = typed(&objs, "Role", "hotnic-webhook");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NS));
    let lease_rules: BTreeSet<String> = role
        .rules
        .unwrap_or_default()
        .iter()
        .flat_map(|r| {
            let names = r.resource_names.clone().unwrap_or_default().join(",");
            r.verbs.iter().map(move |v| {
                format!(
                    "{}/{}[{names}]:{v}",
                    r.api_groups.as_deref().unwrap_or_default().join(","),
                    r.resources.as_deref().unwrap_or_default().join(",")
                )
            })
        })
        .collect();
    assert_eq!(
        lease_rules,
        set(&[
            "coordination.k8s.io/leases[]:create",
            "coordination.k8s.io/leases[hotnic-webhook-repair]:get",
            "coordination.k8s.io/leases[hotnic-webhook-repair]:update",
        ]),
        "the webhook may create a Lease and touch only its own"
    );
    assert_eq!(
        hotnic::webhook::REPAIR_LEASE,
        "hotnic-webhook-repair",
        "the Role names the Lease the code uses"
    );
    for (kind, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let b = find(&objs, kind, "hotnic-webhook");
        assert_eq!(
            (&b["roleRef"]["kind"], &b["roleRef"]["name"]),
            (&json!(role_kind), &json!("hotnic-webhook")),
            "{kind}"
        );
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "hotnic-webhook", "namespace": NS}]),
            "{kind}"
        );
    }
    let binds = |b: &Value, sa: &str| {
        b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa)
    };
    for o in objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        let name = o["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            binds(o, "hotnic-webhook"),
            name == "hotnic-webhook",
            "{name}: only the webhook's own bindings bind its ServiceAccount"
        );
    }
    let sa: ServiceAccount = typed(&objs, "ServiceAccount", "hotnic-webhook");
    assert_ne!(sa.automount_service_account_token, Some(false));
    assert_eq!(
        find(&objs, "Deployment", "hotnic-webhook")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true,
        "the webhook calls the API: its token is mounted"
    );
    assert_eq!(
        flatten(&rules(&objs, "hotnic-agent")),
        set(&[
            "/pods:get",
            "/pods:list",
            "/pods:watch",
            "/pods:patch",
            "/pods/status:patch",
            "/events:create",
            "/events:patch",
            "events.k8s.io/events:create",
            "events.k8s.io/events:patch",
            "k8s.cni.cncf.io/network-attachment-definitions:get",
            "k8s.cni.cncf.io/network-attachment-definitions:list",
            "k8s.cni.cncf.io/network-attachment-definitions:watch",
        ])
    );
    // The agent's binding: its own ClusterRole, its own ServiceAccount, used by its own workload;
    // the webhook's ServiceAccount is used by its Deployment.
    assert_eq!(
        find(&objs, "Deployment", "hotnic-webhook")["spec"]["template"]["spec"]["serviceAccountName"],
        "hotnic-webhook"
    );
    let name = "hotnic-agent";
    let b: ClusterRoleBinding = typed(&objs, "ClusterRoleBinding", name);
    assert_eq!(
        (b.role_ref.kind.as_str(), b.role_ref.name.as_str()),
        ("ClusterRole", name)
    );
    let subjects = b.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", name, Some(NS))
    );
    let _: ServiceAccount = typed(&objs, "ServiceAccount", name);
    assert_eq!(
        find(&objs, "DaemonSet", name)["spec"]["template"]["spec"]["serviceAccountName"],
        name
    );
}

// ---------------------------------------------------------------------------------------------
// Certificates

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).expect("PEM");
    p.contents
}

/// Checks that `ca_pem` signed `cert_pem` (issuer name and signature) and that the certificate
/// names the webhook Service.
fn check_signed(ca_pem: &[u8], cert_pem: &[u8]) -> Result<()> {
    let (ca_der, cert_der) = (pem_der(ca_pem), pem_der(cert_pem));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)?;
    ensure!(ca.is_ca(), "caBundle is not a CA certificate");
    ensure!(
        cert.issuer() == ca.subject(),
        "issuer {} != CA subject {}",
        cert.issuer(),
        ca.subject()
    );
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| anyhow::anyhow!("signature does not verify with the CA key: {e}"))?;
    let sans: Vec<String> = cert
        .subject_alternative_name()?
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    for want in ["hotnic-webhook.hotnic-system.svc", "localhost"] {
        ensure!(
            sans.iter().any(|s| s.contains(want)),
            "serving certificate lacks DNS SAN {want}: {sans:?}"
        );
    }
    ensure!(
        cert.validity().is_valid(),
        "serving certificate is not valid now"
    );
    Ok(())
}

#[test]
fn ca_bundle_is_the_ca_that_signed_the_serving_certificate_in_certs() {
    let certs = root().join("certs");
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (ca, crt, key) = (
        read(certs.join("ca.crt")),
        read(certs.join("tls.crt")),
        read(certs.join("tls.key")),
    );
    check_signed(&ca, &crt).unwrap();
    // The key belongs to the certificate.
    let kp = rcgen::KeyPair::from_pem(std::str::from_utf8(&key).unwrap()).expect("tls.key parses");
    let der = pem_der(&crt);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(
        kp.subject_public_key_info(),
        cert.public_key().raw,
        "tls.key does not match tls.crt"
    );
    // The copy kustomize reads is certs/, byte for byte (run manifests/gen-cabundle.sh).
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(
            read(manifests().join("webhook-tls").join(f)) == read(certs.join(f)),
            "manifests/webhook-tls/{f} differs from certs/{f}: run manifests/gen-cabundle.sh"
        );
    }
    // Rendered: both webhooks trust exactly that CA, and the Secret serves that pair.
    let objs = kustomize::render(&manifests()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    for h in hooks(&objs) {
        let bundle = h.client.ca_bundle.expect("caBundle").0;
        assert_eq!(bundle, ca, "{}: caBundle is not certs/ca.crt", h.config);
        check_signed(&bundle, &crt).unwrap();
    }
    let s: Secret = typed(&objs, "Secret", TLS_SECRET);
    let data = s.data.unwrap();
    assert_eq!(data["tls.crt"].0, crt);
    assert_eq!(data["tls.key"].0, key);
    let patch = std::fs::read_to_string(manifests().join("webhook-cabundle.patch.yaml")).unwrap();
    assert!(patch.contains(&b64.encode(&ca)));
}

#[test]
fn signature_check_rejects_a_foreign_ca() {
    let crt = std::fs::read(root().join("certs/tls.crt")).unwrap();
    // Same subject name as the real CA (hotnic certs' naming), different key: only the
    // signature check can tell.
    let other = hotnic::certs::Ca::new(1).unwrap();
    let err = check_signed(other.pem().as_bytes(), &crt).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err:#}");
    // A leaf is not a CA.
    assert!(check_signed(&crt, &crt).is_err());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn run_gen_cabundle(manifests_copy: &Path, certs_dir: &Path) {
    let out = std::process::Command::new("bash")
        .arg(manifests_copy.join("gen-cabundle.sh"))
        .arg(certs_dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "gen-cabundle.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documented command reproduces the committed patch and copies from `certs/`, and a fresh
/// `hotnic certs` set run through it renders into a consistent install.
#[test]
fn gen_cabundle_script_reproduces_the_committed_files_and_handles_a_new_set() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    copy_dir(&manifests(), &m);
    // Same input (a directory named certs holding certs/'s files) -> byte-identical output.
    let certs_copy = tmp.path().join("certs");
    copy_dir(&root().join("certs"), &certs_copy);
    std::fs::remove_file(m.join("webhook-cabundle.patch.yaml")).unwrap();
    std::fs::remove_dir_all(m.join("webhook-tls")).unwrap();
    run_gen_cabundle(&m, &certs_copy);
    for f in [
        "webhook-cabundle.patch.yaml",
        "webhook-tls/ca.crt",
        "webhook-tls/tls.crt",
        "webhook-tls/tls.key",
    ] {
        assert!(
            std::fs::read(m.join(f)).unwrap() == std::fs::read(manifests().join(f)).unwrap(),
            "manifests/{f} is not what manifests/gen-cabundle.sh writes: run it"
        );
    }
    // A new set from hotnic certs' own code: the render trusts the new CA, serves the new pair.
    let fresh = tmp.path().join("fresh");
    let dns = [
        "hotnic-webhook.hotnic-system.svc".to_string(),
        "localhost".to_string(),
    ];
    let g = hotnic::certs::generate(&dns, &[], 2).unwrap();
    hotnic::certs::write(&fresh, &g).unwrap();
    run_gen_cabundle(&m, &fresh);
    let objs = kustomize::render(&m).unwrap();
    for h in hooks(&objs) {
        let bundle = h.client.ca_bundle.unwrap().0;
        assert_eq!(bundle, g.ca_pem.as_bytes());
        check_signed(&bundle, g.cert_pem.as_bytes()).unwrap();
        // ...and not the dev CA any more.
        let dev_crt = std::fs::read(root().join("certs/tls.crt")).unwrap();
        assert!(check_signed(&bundle, &dev_crt).is_err());
    }
    let s: Secret = typed(&objs, "Secret", TLS_SECRET);
    assert_eq!(s.data.unwrap()["tls.key"].0, g.key_pem.as_bytes());
    // A directory missing a file is refused, and nothing is half-written.
    let before = std::fs::read(m.join("webhook-cabundle.patch.yaml")).unwrap();
    std::fs::remove_file(fresh.join("tls.key")).unwrap();
    let out = std::process::Command::new("bash")
        .arg(m.join("gen-cabundle.sh"))
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.key"));
    assert_eq!(
        std::fs::read(m.join("webhook-cabundle.patch.yaml")).unwrap(),
        before
    );
}

#[test]
fn cert_manager_overlay_issues_a_ca_chain_for_the_service_name() {
    let objs = kustomize::render(&cert_manager()).unwrap();
    let svc: Service = typed(&objs, "Service", "hotnic-webhook");
    let host = format!("{}.{NS}.svc", svc.metadata.name.unwrap());
    let serving: Certificate = typed(&objs, "Certificate", "hotnic-webhook");
    assert!(
        serving.spec.dns_names.contains(&host),
        "{:?} lacks {host}",
        serving.spec.dns_names
    );
    assert_ne!(serving.spec.is_ca, Some(true));
    assert!(serving.spec.usages.iter().any(|u| u == "server auth"));
    // serving <- CA Issuer <- CA Certificate (isCA) <- self-signed Issuer.
    let ca_issuer: Issuer = typed(&objs, "Issuer", &serving.spec.issuer_ref.name);
    assert_eq!(serving.spec.issuer_ref.kind, "Issuer");
    let ca_secret = &ca_issuer.spec.ca.as_ref().expect("a CA issuer").secret_name;
    let ca_cert = objs
        .iter()
        .filter(|o| o["kind"] == "Certificate")
        .map(|o| strict::<Certificate>(o).unwrap())
        .find(|c| &c.spec.secret_name == ca_secret)
        .expect("a Certificate writes the CA issuer's secret");
    assert_eq!(ca_cert.spec.is_ca, Some(true));
    let root: Issuer = typed(&objs, "Issuer", &ca_cert.spec.issuer_ref.name);
    assert!(root.spec.self_signed.is_some());
    assert_ne!(ca_secret, TLS_SECRET);
    // Renewed before the server's 30-day expiry warning.
    let hours = |s: &str| s.trim_end_matches('h').parse::<u32>().unwrap();
    assert!(hours(serving.spec.renew_before.as_deref().unwrap()) > 30 * 24);
    assert!(
        hours(serving.spec.duration.as_deref().unwrap())
            > hours(serving.spec.renew_before.as_deref().unwrap())
    );
}

/// No configuration sends DELETEs: a MAC is released once the deletion (or the unplug) is
/// observed, by the webhook's repair loop, never while a request is still in admission (a DELETE
/// can still be refused, or leave the object terminating for a while with its MAC on the wire).
#[test]
fn no_webhook_sees_deletes() {
    for dir in [manifests(), cert_manager()] {
        let objs = kustomize::render(&dir).unwrap();
        let configs = objs
            .iter()
            .filter(|o| {
                o["kind"] == "MutatingWebhookConfiguration"
                    || o["kind"] == "ValidatingWebhookConfiguration"
            })
            .count();
        assert_eq!(configs, 2, "{}", dir.display());
        for h in hooks(&objs) {
            for r in &h.rules {
                assert!(
                    !r.operations
                        .iter()
                        .flatten()
                        .any(|o| o == "DELETE" || o == "*"),
                    "{} {}: DELETE",
                    h.config,
                    h.name
                );
            }
        }
    }
}

/// An in-memory allocator that counts the writes a `MACAddress`-backed one would make.
struct Recording {
    inner: hotnic::allocator::InMemoryAllocator,
    writes: std::sync::atomic::AtomicUsize,
}

impl hotnic::allocator::MacAllocator for Recording {
    fn range(&self) -> hotnic::allocator::MacRange {
        self.inner.range()
    }
    fn candidate(
        &self,
        scope: &hotnic::allocator::Scope,
        taken: &dyn Fn(hotnic::model::Mac) -> bool,
    ) -> Result<hotnic::model::Mac, hotnic::allocator::AllocError> {
        self.inner.candidate(scope, taken)
    }
    fn held_by_other(
        &self,
        owner: &hotnic::allocator::Owner,
        scope: &hotnic::allocator::Scope,
        mac: hotnic::model::Mac,
    ) -> bool {
        self.inner.held_by_other(owner, scope, mac)
    }
    fn holder<'a>(
        &'a self,
        scope: &'a hotnic::allocator::Scope,
        mac: hotnic::model::Mac,
    ) -> hotnic::allocator::AllocFuture<
        'a,
        Result<Option<hotnic::allocator::Owner>, hotnic::allocator::AllocError>,
    > {
        self.inner.holder(scope, mac)
    }
    fn claim<'a>(
        &'a self,
        req: hotnic::allocator::ClaimRequest<'a>,
    ) -> hotnic::allocator::AllocFuture<'a, Result<(), hotnic::allocator::ClaimError>> {
        if !req.dry_run {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.claim(req)
    }
    fn bind<'a>(
        &'a self,
        owner: &'a hotnic::allocator::Owner,
        keys: &'a [(hotnic::allocator::Scope, hotnic::model::Mac)],
    ) -> hotnic::allocator::AllocFuture<'a, Result<(), hotnic::allocator::AllocError>> {
        self.writes
            .fetch_add(keys.len(), std::sync::atomic::Ordering::SeqCst);
        self.inner.bind(owner, keys)
    }
    fn release<'a>(
        &'a self,
        owner: &'a hotnic::allocator::Owner,
        scope: &'a hotnic::allocator::Scope,
        mac: hotnic::model::Mac,
    ) -> hotnic::allocator::AllocFuture<'a, Result<bool, hotnic::allocator::AllocError>> {
        panic!("admission released {mac} of {owner} in {scope}: releases follow observed deletions")
    }
    fn held(&self) -> usize {
        self.inner.held()
    }
}

/// `sideEffects` states what the code does: every captured review (and a `generateName` create
/// through both phases) through the real router with an allocator that counts writes, once as
/// sent and once as a dry-run. Dry-runs write nothing on any path; a path whose real reviews
/// write is configured `NoneOnDryRun`, one whose never write would be `None`. Nothing releases.
#[tokio::test]
async fn side_effects_state_what_the_code_does() {
    use std::sync::atomic::Ordering;
    use tower::ServiceExt;
    let rec = std::sync::Arc::new(Recording {
        inner: hotnic::allocator::InMemoryAllocator::new(
            hotnic::allocator::MacRange::default_range(),
        ),
        writes: 0.into(),
    });
    let app = hotnic::webhook::routes::AppState::new(
        hotnic::policy::Policy::new(hotnic::policy::PolicyConfig::default(), rec.clone()),
        std::sync::Arc::new(hotnic::webhook::metrics::Metrics::new()),
    );
    let call = |path: String, body: Value| {
        let router = hotnic::webhook::routes::router(app.clone(), 8 << 20);
        async move {
            let req = http::Request::builder()
                .method("POST")
                .uri(path)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let bytes = axum::body::to_bytes(resp.into_body(), 8 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()["response"].clone()
        }
    };
    let mut reviews: Vec<(String, Value)> = support::fixtures()
        .into_iter()
        .map(|(name, r)| {
            let path = format!("/{}", name.split('-').nth(1).unwrap());
            (path, r)
        })
        .collect();
    // generateName: the mutating phase's patch (with its claim token) into the validating phase.
    let m = support::fixture("011");
    let mut dry = m.clone();
    dry["request"]["dryRun"] = json!(true);
    let answer = call("/mutate".into(), m.clone()).await;
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(answer["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut v = support::fixture("012");
    let mut obj = m["request"]["object"].clone();
    json_patch::patch(&mut obj, &patch).unwrap();
    obj["metadata"]["name"] = json!("gen-k4sks");
    obj["metadata"]["uid"] = v["request"]["object"]["metadata"]["uid"].clone();
    v["request"]["object"] = obj;
    reviews.push(("/validate".into(), v));
    let objs = kustomize::render(&manifests()).unwrap();
    for h in hooks(&objs) {
        let path = h.client.service.as_ref().unwrap().path.clone().unwrap();
        let mut real_writes = 0;
        for (p, review) in reviews.iter().filter(|(p, _)| *p == path) {
            for dry_run in [true, false] {
                let mut r = review.clone();
                r["request"]["dryRun"] = json!(dry_run);
                let before = rec.writes.load(Ordering::SeqCst);
                call(p.clone(), r).await;
                let wrote = rec.writes.load(Ordering::SeqCst) - before;
                if dry_run {
                    assert_eq!(wrote, 0, "{p}: a dry-run wrote {wrote} claims");
                } else {
                    real_writes += wrote;
                }
            }
        }
        let want = if real_writes > 0 {
            "NoneOnDryRun"
        } else {
            "None"
        };
        assert_eq!(
            h.side_effects, want,
            "{} {} ({path}): {real_writes} writes for real reviews",
            h.config, h.name
        );
    }
}

/// The CRD in `manifests/` is the one the code reads and writes: group, version, kind, plural,
/// cluster scope; every field a claim is written with is in the schema, the required ones are
/// written, the address matches the schema's pattern; `kubectl get macaddresses` shows the MAC,
/// the network, the owner and the NIC.
#[test]
fn macaddress_crd_matches_the_code() {
    use hotnic::claims::crd;
    let objs = kustomize::render(&manifests()).unwrap();
    let c: CustomResourceDefinition = typed(
        &objs,
        "CustomResourceDefinition",
        &format!("{}.{}", crd::PLURAL, crd::GROUP),
    );
    let spec = &c.spec;
    assert_eq!(
        (
            spec.group.as_str(),
            spec.scope.as_str(),
            spec.names.kind.as_str()
        ),
        (crd::GROUP, "Cluster", crd::KIND)
    );
    assert_eq!(spec.names.plural, crd::PLURAL);
    assert_eq!(spec.versions.len(), 1);
    let v = &spec.versions[0];
    assert_eq!(
        (v.name.as_str(), v.served, v.storage),
        (crd::VERSION, true, true)
    );
    let columns: Vec<(String, String)> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect();
    for path in [
        ".spec.address",
        ".spec.network",
        ".spec.owner.resource",
        ".spec.owner.namespace",
        ".spec.owner.name",
        ".spec.nic",
    ] {
        assert!(
            columns.iter().any(|(_, p)| p == path),
            "no column {path}: {columns:?}"
        );
    }
    let schema = serde_json::to_value(
        v.schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let owner = hotnic::allocator::Owner {
        group: "kubevirt.io".into(),
        kind: "VirtualMachine".into(),
        resource: "virtualmachines".into(),
        namespace: "demo".into(),
        name: Some("vm".into()),
        generate_name: Some("vm-".into()),
        uid: Some("u".into()),
        token: Some("t".into()),
    };
    let scope = hotnic::allocator::Scope::Network(hotnic::model::NetworkRef {
        namespace: "demo".into(),
        name: "blue".into(),
    });
    let claim = crd::MacAddress::new(&scope, "02:0a:0b:0c:0d:0e".parse().unwrap(), "nic1", &owner);
    let written = serde_json::to_value(&claim).unwrap();
    fn covered(schema: &Value, v: &Value, at: &str) {
        let Some(obj) = v.as_object() else { return };
        for req in schema["required"].as_array().into_iter().flatten() {
            assert!(
                obj.contains_key(req.as_str().unwrap()),
                "{at}: required {req} not written"
            );
        }
        if schema["properties"].is_null() {
            return;
        }
        for (k, val) in obj {
            let sub = &schema["properties"][k];
            assert!(
                !sub.is_null(),
                "{at}.{k} is written but not in the CRD schema"
            );
            covered(sub, val, &format!("{at}.{k}"));
        }
    }
    covered(&schema, &written, "");
    let pattern = schema["properties"]["spec"]["properties"]["address"]["pattern"]
        .as_str()
        .unwrap();
    let re = regex_lite::Regex::new(pattern).unwrap();
    assert!(re.is_match(written["spec"]["address"].as_str().unwrap()));
    assert!(
        !re.is_match("02:0A:0B:0C:0D:0E"),
        "upper case is never written"
    );
    assert_eq!(
        claim.metadata.name.as_deref(),
        Some("02-0a-0b-0c-0d-0e.demo.blue")
    );
}
