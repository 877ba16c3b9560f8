//! The patches `add` and `remove` send, built in each object's own dialect, and the policy's
//! verdict on the edited object before anything is sent.
//!
//! Every patch is an RFC 6902 JSON Patch that is safe under concurrent edits: before it changes a
//! value it `test`s that value as it was read (the Multus annotation string, the whole KubeVirt
//! interface and network lists, the Arktos `spec.nics` list, the element being removed). Where it
//! creates a field that was missing, it tests `metadata.resourceVersion` instead (JSON Patch
//! cannot test for absence). Applied to an object someone else changed in between, the patch
//! fails as a whole (the API server answers 422) and nothing of the other writer's change is lost;
//! [`super::client::apply`] then reads the object again and rebuilds the patch.

use crate::dialect::{self, Kind, PatchBuilder, annotations, multus};
use crate::model::{Dialect, Mac, Workload};
use crate::policy::{Operation, Outcome, Policy, Request};
use json_patch::jsonptr::PointerBuf;
use json_patch::{
    AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation,
};
use serde_json::{Map, Value, json};

/// The NIC `add` plugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// Interface name.
    pub name: String,
    /// `[NS/]NET`: NetworkAttachmentDefinition (Multus, KubeVirt) or subnet (Arktos).
    pub network: String,
    /// A MAC of the user's choosing.
    pub mac: Option<Mac>,
    /// Static IPs (CIDRs).
    pub ips: Vec<String>,
    /// Arktos port ID.
    pub port_id: Option<String>,
}

impl NicSpec {
    /// The NIC `name` on `network`, with no MAC, IPs or port ID of the user's choosing.
    pub fn new(name: &str, network: &str) -> Self {
        NicSpec {
            name: name.into(),
            network: network.into(),
            mac: None,
            ips: Vec::new(),
            port_id: None,
        }
    }
}

/// Why an edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The command does not fit the object (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No NIC of that name.
    #[error("{0}")]
    NotFound(String),
    /// hotnic's policy denies the edited object: the causes, `field: message`, as the webhook
    /// would give them.
    #[error("{header}\n{}", causes.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
    Refused {
        /// What refused it.
        header: String,
        /// One `field: message` per cause.
        causes: Vec<String>,
    },
}

/// A patch ready to send, with what it makes of the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The object's dialect.
    pub dialect: Dialect,
    /// The JSON Patch (empty when there is nothing to do).
    pub patch: Patch,
    /// The object as read with the patch applied (before hotnic's webhook mutates it).
    pub edited: Value,
    /// Said instead of doing anything, when the patch is empty (e.g. already absent).
    pub note: Option<String>,
}

/// The kind of an object read from a file (`apiVersion` + `kind`).
pub fn kind_of_object(obj: &Value) -> Option<Kind> {
    let api = obj.get("apiVersion").and_then(Value::as_str)?;
    let group = api.rsplit_once('/').map_or("", |(g, _)| g);
    Kind::of(group, obj.get("kind").and_then(Value::as_str)?)
}

/// The dialect an object of `kind` speaks. A pod with no NICs yet is a Multus pod (adding a NIC
/// creates the networks annotation).
pub fn dialect_of(kind: Kind, obj: &Value) -> Result<Dialect, EditError> {
    match dialect::detect(kind.group(), kind.as_str(), obj, None) {
        Ok(d) => Ok(d),
        Err(Some(warning)) => Err(EditError::Usage(warning)),
        Err(None) if annotations::label(obj, "kubevirt.io") == Some("virt-launcher") => {
            Err(EditError::Usage(
                "this is a KubeVirt launcher pod: edit its VirtualMachine (vm/NAME) instead".into(),
            ))
        }
        Err(None) => Ok(Dialect::Multus),
    }
}

/// Namespace of an object, else `default_ns`.
pub fn namespace_of<'a>(obj: &'a Value, default_ns: &'a str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(default_ns)
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn test(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: ptr(tokens),
        value,
    })
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: ptr(tokens),
        value,
    })
}

fn replace(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: ptr(tokens),
        value,
    })
}

fn remove(tokens: &[&str]) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path: ptr(tokens) })
}

fn lookup<'a>(obj: &'a Value, tokens: &[&str]) -> Option<&'a Value> {
    tokens.iter().try_fold(obj, |v, t| v.get(*t))
}

fn with(tokens: &[&str], last: &str) -> Vec<String> {
    tokens
        .iter()
        .map(|t| t.to_string())
        .chain([last.to_string()])
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The operations of one edit, with the resourceVersion guard put first when needed.
struct Ops {
    ops: Vec<PatchOperation>,
    /// The edit creates a field that was missing: guard it with the resourceVersion.
    guard: bool,
}

impl Ops {
    fn new() -> Self {
        Ops {
            ops: Vec::new(),
            guard: false,
        }
    }

    /// Appends `value` to the list at `tokens`: when the list exists, tests its content and adds at
    /// `-`; when it (or a parent object) is missing or null, creates it.
    fn append(&mut self, obj: &Value, tokens: &[&str], value: Value) -> Result<(), EditError> {
        if let Some(Value::Array(list)) = lookup(obj, tokens) {
            self.ops.push(test(tokens, Value::Array(list.clone())));
            self.ops.push(add(&refs(&with(tokens, "-")), value));
            return Ok(());
        }
        // The first missing (or null) step; everything before it is an object.
        let mut cur = obj;
        for (k, t) in tokens.iter().enumerate() {
            match cur.get(*t) {
                Some(Value::Object(_)) if k + 1 < tokens.len() => cur = &cur[*t],
                Some(Value::Null) | None => {
                    let nested = tokens[k + 1..].iter().rev().fold(
                        Value::Array(vec![value]),
                        |inner, key| {
                            let mut m = Map::new();
                            m.insert((*key).to_string(), inner);
                            Value::Object(m)
                        },
                    );
                    if cur.get(*t).is_some() {
                        self.ops.push(test(&tokens[..=k], Value::Null));
                    } else {
                        self.guard = true;
                    }
                    self.ops.push(add(&tokens[..=k], nested));
                    return Ok(());
                }
                Some(other) => {
                    return Err(EditError::Usage(format!(
                        "/{} is {other}, not {}; fix the object first",
                        tokens[..=k].join("/"),
                        if k + 1 < tokens.len() {
                            "an object"
                        } else {
                            "a list"
                        }
                    )));
                }
            }
        }
        unreachable!("the loop returns at the last token")
    }

    /// Sets an annotation that is missing (creating `metadata.annotations` when needed).
    fn new_annotation(&mut self, obj: &Value, key: &str, value: String) {
        let mut b = PatchBuilder::new(obj);
        b.set_annotation(key, value);
        self.ops.extend(b.finish().0);
        self.guard = true;
    }

    /// Replaces an annotation after testing its current text.
    fn replace_annotation(&mut self, key: &str, was: &str, now: String) {
        let tokens = ["metadata", "annotations", key];
        self.ops.push(test(&tokens, Value::String(was.to_string())));
        self.ops.push(replace(&tokens, Value::String(now)));
    }

    fn finish(self, obj: &Value) -> Patch {
        let mut out = Vec::new();
        let rv = obj
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()));
        if self.guard
            && let Some(rv) = rv
        {
            out.push(test(&["metadata", "resourceVersion"], rv.clone()));
        }
        out.extend(self.ops);
        Patch(out)
    }
}

/// Where the VMI spec lives in a KubeVirt object.
fn kubevirt_root(d: Dialect) -> &'static [&'static str] {
    match d {
        Dialect::VirtualMachine => &["spec", "template", "spec"],
        _ => &["spec"],
    }
}

fn concat(a: &[&'static str], b: &[&'static str]) -> Vec<&'static str> {
    a.iter().chain(b).copied().collect()
}

/// The policy's causes against the object as it is (for objects hotnic cannot edit because their
/// NICs cannot be read).
fn current_causes(kind: Kind, obj: &Value, namespace: &str) -> EditError {
    let policy = Policy::in_memory(crate::allocator::MacRange::default_range());
    let req = Request {
        operation: Operation::Create,
        dry_run: true,
        group: kind.group(),
        kind: kind.as_str(),
        namespace,
        name: None,
        object: obj,
        old_object: None,
    };
    let causes = match policy.validate(&req) {
        Outcome::Denied(d) => d.causes.iter().map(|c| c.to_string()).collect(),
        Outcome::Allowed { .. } => vec!["the NICs of this object cannot be read".to_string()],
    };
    EditError::Refused {
        header: "the object's NICs cannot be read; fix these first:".into(),
        causes,
    }
}

/// Splits `[NS/]NET`.
fn split_network(network: &str) -> Result<(Option<&str>, &str), EditError> {
    let bad = || EditError::Usage(format!("--network {network:?}: write NET or NAMESPACE/NET"));
    match network.split_once('/') {
        Some((ns, net)) if !ns.is_empty() && !net.is_empty() && !net.contains('/') => {
            Ok((Some(ns), net))
        }
        Some(_) => Err(bad()),
        None if network.is_empty() => Err(bad()),
        None => Ok((None, network)),
    }
}

/// The JSON Patch that adds `spec` to `obj` in dialect `d` (no policy check).
pub fn add_patch(
    d: Dialect,
    kind: Kind,
    obj: &Value,
    namespace: &str,
    spec: &NicSpec,
) -> Result<Patch, EditError> {
    let (net_ns, net) = split_network(&spec.network)?;
    if spec.port_id.is_some() && d != Dialect::Arktos {
        return Err(EditError::Usage(
            "--port-id is for Arktos VM pods (spec.nics); this object has none".into(),
        ));
    }
    let mut ops = Ops::new();
    match d {
        Dialect::Multus => {
            let mut el = Map::new();
            el.insert("name".into(), json!(net));
            if let Some(ns) = net_ns {
                el.insert("namespace".into(), json!(ns));
            }
            el.insert("interface".into(), json!(spec.name));
            if let Some(mac) = spec.mac {
                el.insert("mac".into(), json!(mac.to_string()));
            }
            if !spec.ips.is_empty() {
                el.insert("ips".into(), json!(spec.ips));
            }
            match annotations::get(obj, annotations::NETWORKS) {
                None => ops.new_annotation(
                    obj,
                    annotations::NETWORKS,
                    Value::Array(vec![Value::Object(el)]).to_string(),
                ),
                Some(raw) => {
                    let parsed = multus::parse_elements(raw);
                    let Some(was) = raw.as_str().filter(|_| parsed.problems.is_empty()) else {
                        return Err(current_causes(kind, obj, namespace));
                    };
                    let mut items = parsed.items;
                    items.push(Value::Object(el));
                    let now = Value::Array(items).to_string();
                    ops.replace_annotation(annotations::NETWORKS, was, now);
                }
            }
        }
        Dialect::Arktos => {
            if net_ns.is_some() {
                return Err(EditError::Usage(format!(
                    "--network {:?}: Arktos subnets are not namespaced; give the subnet name",
                    spec.network
                )));
            }
            if spec.ips.len() > 1 {
                return Err(EditError::Usage(
                    "--ips: an Arktos NIC has one ipAddress; give one address".into(),
                ));
            }
            let nics = obj
                .get("spec")
                .and_then(|s| s.get("nics"))
                .and_then(Value::as_array);
            // Spell the port ID key as the object's other NICs do.
            let upper = nics.is_some_and(|l| {
                l.iter().any(|n| n.get("portID").is_some())
                    && !l.iter().any(|n| n.get("portId").is_some())
            });
            let mut el = Map::new();
            el.insert("name".into(), json!(spec.name));
            el.insert("subnetName".into(), json!(net));
            if let Some(p) = &spec.port_id {
                el.insert((if upper { "portID" } else { "portId" }).into(), json!(p));
            }
            if let Some(ip) = spec.ips.first() {
                el.insert("ipAddress".into(), json!(ip));
            }
            ops.append(obj, &["spec", "nics"], Value::Object(el))?;
            if let Some(mac) = spec.mac {
                match annotations::get(obj, annotations::MAC_ADDRESSES) {
                    None => {
                        let map = json!({ spec.name.clone(): mac.to_string() });
                        ops.new_annotation(obj, annotations::MAC_ADDRESSES, map.to_string());
                    }
                    Some(Value::String(was)) => {
                        let mut map = if was.trim().is_empty() {
                            Map::new()
                        } else {
                            match serde_json::from_str::<Value>(was) {
                                Ok(Value::Object(m)) => m,
                                _ => return Err(current_causes(kind, obj, namespace)),
                            }
                        };
                        map.insert(spec.name.clone(), json!(mac.to_string()));
                        let now = Value::Object(map).to_string();
                        ops.replace_annotation(annotations::MAC_ADDRESSES, was, now);
                    }
                    Some(_) => return Err(current_causes(kind, obj, namespace)),
                }
            }
        }
        Dialect::VirtualMachine | Dialect::VirtualMachineInstance => {
            if !spec.ips.is_empty() {
                return Err(EditError::Usage(
                    "--ips: KubeVirt interfaces take no static IPs; configure them in the guest (cloud-init)".into(),
                ));
            }
            let root = kubevirt_root(d);
            let mut iface = Map::new();
            iface.insert("name".into(), json!(spec.name));
            iface.insert("bridge".into(), json!({}));
            if let Some(mac) = spec.mac {
                iface.insert("macAddress".into(), json!(mac.to_string()));
            }
            let network = json!({"name": spec.name, "multus": {"networkName": spec.network}});
            let ifaces = concat(root, &["domain", "devices", "interfaces"]);
            ops.append(obj, &ifaces, Value::Object(iface))?;
            ops.append(obj, &concat(root, &["networks"]), network)?;
        }
    }
    Ok(ops.finish(obj))
}

/// The JSON Patch that unplugs NIC `name`: Multus and Arktos remove it, KubeVirt sets
/// `state: absent`. `Ok(None)`: already absent. No policy check.
pub fn remove_patch(
    d: Dialect,
    kind: Kind,
    obj: &Value,
    namespace: &str,
    name: &str,
) -> Result<Option<Patch>, EditError> {
    let w = dialect::read(d, obj, namespace);
    let not_found = || {
        let names: Vec<&str> = w.nics.iter().filter_map(|n| n.name.as_deref()).collect();
        EditError::NotFound(format!(
            "no NIC named {name:?}; its NICs: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    };
    let mut ops = Ops::new();
    match d {
        Dialect::Multus => {
            let raw = annotations::get(obj, annotations::NETWORKS);
            let parsed = raw.map(multus::parse_elements).unwrap_or_default();
            let was = match raw {
                Some(r) if parsed.problems.is_empty() => r.as_str(),
                None => None,
                Some(_) => return Err(current_causes(kind, obj, namespace)),
            };
            let at = parsed
                .items
                .iter()
                .position(|e| e.get("interface").and_then(Value::as_str) == Some(name));
            let (Some(i), Some(was)) = (at, was) else {
                if w.by_name(name).is_some_and(|n| n.implicit) {
                    return Err(EditError::Refused {
                        header: "hotnic's policy denies this change:".into(),
                        causes: vec![format!(
                            "{}: {name:?} is the pod's primary interface (the cluster default network), not an element of {}; it cannot be unplugged (only secondary NICs can be unplugged)",
                            annotations::path(annotations::NETWORKS),
                            annotations::NETWORKS
                        )],
                    });
                }
                return Err(not_found());
            };
            let mut items = parsed.items;
            items.remove(i);
            ops.replace_annotation(annotations::NETWORKS, was, Value::Array(items).to_string());
        }
        Dialect::Arktos => {
            let list = obj
                .get("spec")
                .and_then(|s| s.get("nics"))
                .and_then(Value::as_array)
                .ok_or_else(not_found)?;
            let i = list
                .iter()
                .position(|n| n.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(not_found)?;
            let index = i.to_string();
            ops.ops
                .push(test(&["spec", "nics", &index], list[i].clone()));
            ops.ops.push(remove(&["spec", "nics", &index]));
        }
        Dialect::VirtualMachine | Dialect::VirtualMachineInstance => {
            let tokens = concat(kubevirt_root(d), &["domain", "devices", "interfaces"]);
            let list = lookup(obj, &tokens)
                .and_then(Value::as_array)
                .ok_or_else(not_found)?;
            let i = list
                .iter()
                .position(|n| n.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(not_found)?;
            if list[i].get("state").and_then(Value::as_str) == Some("absent") {
                return Ok(None);
            }
            let index = i.to_string();
            let owned = with(&tokens, &index);
            let el = refs(&owned);
            ops.ops.push(test(&el, list[i].clone()));
            ops.ops
                .push(add(&refs(&with(&el, "state")), json!("absent")));
        }
    }
    Ok(Some(ops.finish(obj)))
}

/// Applies `patch` to `obj` and runs hotnic's validating policy on the result as the UPDATE the
/// API server would send the webhook. Allowed: the plan; denied: the causes, exactly as the
/// webhook gives them.
fn judge(
    d: Dialect,
    kind: Kind,
    obj: &Value,
    namespace: &str,
    patch: Patch,
) -> Result<Plan, EditError> {
    let mut edited = obj.clone();
    json_patch::patch(&mut edited, &patch.0)
        .map_err(|e| EditError::Usage(format!("the patch does not apply to the object ({e})")))?;
    let policy = Policy::in_memory(crate::allocator::MacRange::default_range());
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    let req = Request {
        operation: Operation::Update,
        dry_run: true,
        group: kind.group(),
        kind: kind.as_str(),
        namespace,
        name,
        object: &edited,
        old_object: Some(obj),
    };
    match policy.validate(&req) {
        Outcome::Denied(d) => Err(EditError::Refused {
            header: "hotnic's policy denies this change (hotnic's webhook would deny it the same):"
                .into(),
            causes: d.causes.iter().map(|c| c.to_string()).collect(),
        }),
        Outcome::Allowed { .. } => Ok(Plan {
            dialect: d,
            patch,
            edited,
            note: None,
        }),
    }
}

/// Plans `add`: the patch, checked by hotnic's policy.
pub fn plan_add(
    kind: Kind,
    obj: &Value,
    default_ns: &str,
    spec: &NicSpec,
) -> Result<Plan, EditError> {
    let d = dialect_of(kind, obj)?;
    let namespace = namespace_of(obj, default_ns);
    let patch = add_patch(d, kind, obj, namespace, spec)?;
    judge(d, kind, obj, namespace, patch)
}

/// Plans `remove`: the patch, checked by hotnic's policy (which refuses the primary NIC).
pub fn plan_remove(
    kind: Kind,
    obj: &Value,
    default_ns: &str,
    name: &str,
) -> Result<Plan, EditError> {
    let d = dialect_of(kind, obj)?;
    let namespace = namespace_of(obj, default_ns);
    match remove_patch(d, kind, obj, namespace, name)? {
        Some(patch) => judge(d, kind, obj, namespace, patch),
        None => Ok(Plan {
            dialect: d,
            patch: Patch(Vec::new()),
            edited: obj.clone(),
            note: Some(format!(
                "{name} is already absent (being unplugged); nothing to do"
            )),
        }),
    }
}

/// The workload of an object as the plugin sees it.
pub fn workload(kind: Kind, obj: &Value, default_ns: &str) -> Result<Workload, EditError> {
    let d = dialect_of(kind, obj)?;
    Ok(dialect::read(d, obj, namespace_of(obj, default_ns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETS: &str = "k8s.v1.cni.cncf.io/networks";

    fn multus_pod(networks: Option<&str>) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "demo", "resourceVersion": "41"},
            "spec": {"containers": [{"name": "app", "image": "x"}]}});
        if let Some(n) = networks {
            pod["metadata"]["annotations"] = json!({ NETS: n, "keep": "me" });
        }
        pod
    }

    fn vm() -> Value {
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "demo", "resourceVersion": "7"},
            "spec": {"template": {"spec": {
                "domain": {"devices": {"interfaces": [
                    {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:a1"},
                    {"name": "secondary", "bridge": {}, "macAddress": "02:00:00:00:00:a2"}]}},
                "networks": [{"name": "default", "pod": {}},
                    {"name": "secondary", "multus": {"networkName": "bridge-conf"}}]}}}})
    }

    fn arktos() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "vm-pod", "namespace": "demo", "resourceVersion": "3",
                "annotations": {"hotnic.io/mac-addresses": "{\"eth0\":\"02:00:00:00:00:b0\"}"}},
            "spec": {"nics": [{"name": "eth0", "portId": "p0"},
                {"name": "eth1", "portId": "p1", "subnetName": "subnet-a"}]}})
    }

    fn patch_json(p: &Patch) -> Value {
        serde_json::to_value(p).unwrap()
    }

    /// The `add` patch for `s` on `obj` (namespace "demo"), as JSON.
    fn added(d: Dialect, kind: Kind, obj: &Value, s: &NicSpec) -> Value {
        patch_json(&add_patch(d, kind, obj, "demo", s).unwrap())
    }

    /// The `remove` patch for `name` on `obj` (namespace "demo"), as JSON.
    fn removed(d: Dialect, kind: Kind, obj: &Value, name: &str) -> Value {
        patch_json(&remove_patch(d, kind, obj, "demo", name).unwrap().unwrap())
    }

    #[test]
    fn multus_add_tests_the_annotation_and_appends_an_element() {
        let raw = r#"[{"name":"a","interface":"eth1","mac":"02:00:00:00:00:01","x-unknown":1}]"#;
        let pod = multus_pod(Some(raw));
        let mut s = NicSpec::new("eth2", "other/b");
        s.ips = vec!["10.1.1.5/24".into()];
        s.mac = Some("02:AA:00:00:00:02".parse().unwrap());
        let p = added(Dialect::Multus, Kind::Pod, &pod, &s);
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": raw},
                {"op": "replace", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
                 "value": r#"[{"name":"a","interface":"eth1","mac":"02:00:00:00:00:01","x-unknown":1},{"name":"b","namespace":"other","interface":"eth2","mac":"02:aa:00:00:00:02","ips":["10.1.1.5/24"]}]"#}
            ])
        );
    }

    #[test]
    fn multus_add_rewrites_the_short_form_as_json_keeping_entries() {
        let pod = multus_pod(Some("a@eth1, x/b@eth2"));
        let plan = plan_add(Kind::Pod, &pod, "demo", &NicSpec::new("eth3", "c")).unwrap();
        assert_eq!(
            patch_json(&plan.patch)[1]["value"],
            r#"[{"name":"a","interface":"eth1"},{"name":"b","namespace":"x","interface":"eth2"},{"name":"c","interface":"eth3"}]"#
        );
        assert_eq!(plan.dialect, Dialect::Multus);
        assert_eq!(plan.edited["metadata"]["annotations"]["keep"], "me");
    }

    #[test]
    fn multus_add_to_a_pod_without_networks_guards_with_the_resource_version() {
        let p = added(
            Dialect::Multus,
            Kind::Pod,
            &multus_pod(None),
            &NicSpec::new("eth1", "a"),
        );
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
                 "value": r#"[{"name":"a","interface":"eth1"}]"#}
            ])
        );
        let mut pod = multus_pod(Some("[]"));
        pod["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(NETS);
        let p = added(Dialect::Multus, Kind::Pod, &pod, &NicSpec::new("eth1", "a"));
        assert_eq!(p.as_array().unwrap().len(), 2, "{p}");
        assert_eq!(
            p[1]["path"],
            "/metadata/annotations/k8s.v1.cni.cncf.io~1networks"
        );
    }

    #[test]
    fn kubevirt_add_tests_both_lists_and_appends_a_bridge_interface_and_its_network() {
        let mut s = NicSpec::new("dyn1", "other/bridge-b");
        s.mac = Some("02:00:00:00:00:c1".parse().unwrap());
        let obj = vm();
        let p = added(Dialect::VirtualMachine, Kind::VirtualMachine, &obj, &s);
        let ifaces = &obj["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"];
        let nets = &obj["spec"]["template"]["spec"]["networks"];
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/spec/template/spec/domain/devices/interfaces", "value": ifaces},
                {"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/-",
                 "value": {"name": "dyn1", "bridge": {}, "macAddress": "02:00:00:00:00:c1"}},
                {"op": "test", "path": "/spec/template/spec/networks", "value": nets},
                {"op": "add", "path": "/spec/template/spec/networks/-",
                 "value": {"name": "dyn1", "multus": {"networkName": "other/bridge-b"}}}
            ])
        );
    }

    #[test]
    fn kubevirt_vmi_add_creates_missing_lists_under_the_resource_version_guard() {
        let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "i", "namespace": "demo", "resourceVersion": "9"},
            "spec": {"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": null}});
        let p = added(
            Dialect::VirtualMachineInstance,
            Kind::VirtualMachineInstance,
            &vmi,
            &NicSpec::new("n1", "net"),
        );
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/spec/domain/devices/interfaces",
                 "value": [{"name": "default", "masquerade": {}}]},
                {"op": "add", "path": "/spec/domain/devices/interfaces/-", "value": {"name": "n1", "bridge": {}}},
                {"op": "test", "path": "/spec/networks", "value": null},
                {"op": "add", "path": "/spec/networks",
                 "value": [{"name": "n1", "multus": {"networkName": "net"}}]}
            ])
        );
        let bare = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "i", "resourceVersion": "9"}, "spec": {}});
        let p = added(
            Dialect::VirtualMachineInstance,
            Kind::VirtualMachineInstance,
            &bare,
            &NicSpec::new("n1", "net"),
        );
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "9"},
                {"op": "add", "path": "/spec/domain",
                 "value": {"devices": {"interfaces": [{"name": "n1", "bridge": {}}]}}},
                {"op": "add", "path": "/spec/networks",
                 "value": [{"name": "n1", "multus": {"networkName": "net"}}]}
            ])
        );
    }

    #[test]
    fn arktos_add_appends_to_spec_nics_and_the_mac_map() {
        let obj = arktos();
        let mut s = NicSpec::new("eth2", "subnet-b");
        s.port_id = Some("p2".into());
        s.ips = vec!["10.0.0.7".into()];
        s.mac = Some("02:00:00:00:00:b2".parse().unwrap());
        let p = added(Dialect::Arktos, Kind::Pod, &obj, &s);
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/spec/nics", "value": obj["spec"]["nics"]},
                {"op": "add", "path": "/spec/nics/-",
                 "value": {"name": "eth2", "subnetName": "subnet-b", "portId": "p2", "ipAddress": "10.0.0.7"}},
                {"op": "test", "path": "/metadata/annotations/hotnic.io~1mac-addresses",
                 "value": "{\"eth0\":\"02:00:00:00:00:b0\"}"},
                {"op": "replace", "path": "/metadata/annotations/hotnic.io~1mac-addresses",
                 "value": "{\"eth0\":\"02:00:00:00:00:b0\",\"eth2\":\"02:00:00:00:00:b2\"}"}
            ])
        );
        let e = add_patch(
            Dialect::Arktos,
            Kind::Pod,
            &obj,
            "demo",
            &NicSpec::new("eth2", "ns/x"),
        );
        assert!(matches!(e, Err(EditError::Usage(_))), "{e:?}");
        let e = add_patch(Dialect::Multus, Kind::Pod, &multus_pod(None), "demo", &s);
        assert!(matches!(e, Err(EditError::Usage(m)) if m.contains("--port-id")));
    }

    #[test]
    fn remove_patches_per_dialect() {
        let raw = r#"[{"name":"a","interface":"eth1"},{"name":"b","interface":"eth2"}]"#;
        let p = removed(Dialect::Multus, Kind::Pod, &multus_pod(Some(raw)), "eth1");
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks", "value": raw},
                {"op": "replace", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
                 "value": r#"[{"name":"b","interface":"eth2"}]"#}
            ])
        );
        let obj = arktos();
        let p = removed(Dialect::Arktos, Kind::Pod, &obj, "eth1");
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/spec/nics/1", "value": obj["spec"]["nics"][1]},
                {"op": "remove", "path": "/spec/nics/1"}
            ])
        );
        let obj = vm();
        let p = removed(
            Dialect::VirtualMachine,
            Kind::VirtualMachine,
            &obj,
            "secondary",
        );
        let iface = &obj["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][1];
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/spec/template/spec/domain/devices/interfaces/1", "value": iface},
                {"op": "add", "path": "/spec/template/spec/domain/devices/interfaces/1/state", "value": "absent"}
            ])
        );
        let mut absent = vm();
        absent["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][1]["state"] =
            json!("absent");
        let plan = plan_remove(Kind::VirtualMachine, &absent, "demo", "secondary").unwrap();
        assert!(plan.patch.0.is_empty());
        assert!(plan.note.unwrap().contains("already absent"));
    }

    #[test]
    fn the_primary_is_refused_with_the_policys_message() {
        let e = plan_remove(Kind::VirtualMachine, &vm(), "demo", "default").unwrap_err();
        assert_eq!(
            e,
            EditError::Refused {
                header: "hotnic's policy denies this change (hotnic's webhook would deny it the same):".into(),
                causes: vec!["spec.template.spec.domain.devices.interfaces[0].state: the primary interface (on the pod network) cannot be unplugged; remove \"state\": \"absent\" (only secondary NICs can be unplugged)".into()],
            }
        );
        let e = plan_remove(Kind::Pod, &arktos(), "demo", "eth0").unwrap_err();
        let EditError::Refused { causes, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            causes,
            [
                "spec.nics: \"eth0\" (was spec.nics[0]) is the primary NIC and may not be removed or renamed; keep it (only secondary NICs can be unplugged)"
            ]
        );
        let raw = r#"[{"name":"a","interface":"eth1"}]"#;
        let e = plan_remove(Kind::Pod, &multus_pod(Some(raw)), "demo", "eth0").unwrap_err();
        assert!(
            matches!(&e, EditError::Refused { causes, .. } if causes[0].contains("\"eth0\" is the pod's primary interface")),
            "{e:?}"
        );
        let e = plan_remove(Kind::Pod, &multus_pod(Some(raw)), "demo", "eth9").unwrap_err();
        assert_eq!(
            e,
            EditError::NotFound("no NIC named \"eth9\"; its NICs: eth0, eth1".into())
        );
    }

    #[test]
    fn add_is_judged_by_the_policy() {
        let raw = r#"[{"name":"a","interface":"eth1"}]"#;
        let e = plan_add(
            Kind::Pod,
            &multus_pod(Some(raw)),
            "demo",
            &NicSpec::new("eth1", "b"),
        )
        .unwrap_err();
        let EditError::Refused { causes, .. } = e else {
            panic!("{e:?}")
        };
        assert!(
            causes[0].starts_with("metadata.annotations[k8s.v1.cni.cncf.io/networks][1].interface: \"eth1\" is already the name of"),
            "{causes:?}"
        );
        // Capacity: 2 slots, eth0 + eth1 in use.
        let mut full = multus_pod(Some(raw));
        full["metadata"]["annotations"]["hotnic.io/interface-capacity"] = json!("2");
        let e = plan_add(Kind::Pod, &full, "demo", &NicSpec::new("eth2", "b")).unwrap_err();
        assert!(
            matches!(&e, EditError::Refused { causes, .. } if causes[0].contains("interface capacity 2 reached")),
            "{e:?}"
        );
        // Allowed: the edited object reads back with the new NIC.
        let plan = plan_add(
            Kind::VirtualMachine,
            &vm(),
            "demo",
            &NicSpec::new("dyn1", "n"),
        )
        .unwrap();
        let w = dialect::read(plan.dialect, &plan.edited, "demo");
        let nic = w.by_name("dyn1").unwrap();
        assert_eq!(nic.method.as_deref(), Some("bridge"));
        assert_eq!(nic.network.as_ref().unwrap().to_string(), "demo/n");
    }

    #[test]
    fn a_patch_built_on_a_stale_read_does_not_apply() {
        let raw = r#"[{"name":"a","interface":"eth1"}]"#;
        let read = multus_pod(Some(raw));
        let p = plan_add(Kind::Pod, &read, "demo", &NicSpec::new("eth2", "b"))
            .unwrap()
            .patch;
        // Another writer added eth3 in between.
        let mut now = read.clone();
        now["metadata"]["annotations"][NETS] =
            json!(r#"[{"name":"a","interface":"eth1"},{"name":"c","interface":"eth3"}]"#);
        let before = now.clone();
        assert!(json_patch::patch(&mut now, &p.0).is_err());
        assert_eq!(now, before, "a failed patch changes nothing");
        // Same for KubeVirt (a concurrent unplug) and for a created annotation (rv moved on).
        let read = vm();
        let p = plan_add(Kind::VirtualMachine, &read, "demo", &NicSpec::new("d", "n"))
            .unwrap()
            .patch;
        let mut now = read.clone();
        now["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"][1]["state"] =
            json!("absent");
        assert!(json_patch::patch(&mut now, &p.0).is_err());
        let read = multus_pod(None);
        let p = plan_add(Kind::Pod, &read, "demo", &NicSpec::new("eth1", "a"))
            .unwrap()
            .patch;
        let mut now = read.clone();
        now["metadata"]["resourceVersion"] = json!("42");
        assert!(json_patch::patch(&mut now, &p.0).is_err());
    }

    #[test]
    fn launcher_pods_are_not_edited() {
        let mut pod = multus_pod(Some("[]"));
        pod["metadata"]["labels"] = json!({"kubevirt.io": "virt-launcher"});
        assert!(
            matches!(dialect_of(Kind::Pod, &pod), Err(EditError::Usage(m)) if m.contains("VirtualMachine"))
        );
        assert_eq!(
            dialect_of(Kind::Pod, &multus_pod(None)),
            Ok(Dialect::Multus)
        );
        assert_eq!(dialect_of(Kind::Pod, &arktos()), Ok(Dialect::Arktos));
    }
}
