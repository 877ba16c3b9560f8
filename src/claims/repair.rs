//! The repair loop: what makes the claims match the workloads that carry MACs. One pass lists
//! every claim, then every workload with NICs (pods, KubeVirt VMs and VMIs, page by page), and:
//!
//! - **binds** a claim to its owner's name and uid once the owner exists (found by name, or by
//!   its claim token when it was created with `generateName`), and to the new uid when an object
//!   was re-created under the same name with the same MAC;
//! - **releases** (deletes) a claim whose bound owner is gone (deletion observed), whose owner
//!   no longer carries the MAC (the NIC was unplugged; KubeVirt `state: absent` NICs keep theirs
//!   until they are removed), or whose owner never appeared within the grace period (its request
//!   was denied after the mutating phase, or dropped);
//! - **adopts** MACs that workloads carry without a claim (objects from before hotnic, static
//!   MACs in excluded namespaces), for the oldest carrier;
//! - **reports** a MAC carried by two objects (only possible from before hotnic) as a Warning
//!   event on each and the duplicates metric, and never rewrites a MAC.
//!
//! Claims are cluster-scoped and their owners namespaced, so Kubernetes' garbage collector cannot
//! delete them through ownerReferences (it treats a namespaced owner of a cluster-scoped object
//! as unresolvable): this loop releases them, like the API server's own repair loop does for
//! `IPAddress` objects. Every write carries a precondition (resourceVersion, uid) or is a
//! create-if-absent, so a pass that races admission, another pass or a user never undoes a newer
//! state. One replica runs it at a time ([`super::lease`]).

use super::allocator::is_status;
use super::crd::MacAddress;
use crate::allocator::{Owner, Scope, ScopeMode};
use crate::dialect::{self, Kind};
use crate::model::Mac;
use crate::runtime::Chain;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// A claim as the pass sees it.
#[derive(Debug, Clone)]
pub struct ClaimRecord {
    /// Object name.
    pub name: String,
    /// Object uid and resourceVersion (the preconditions of its writes).
    pub uid: Option<String>,
    /// resourceVersion.
    pub resource_version: Option<String>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Scope and MAC.
    pub scope: Scope,
    /// The MAC.
    pub mac: Mac,
    /// The NIC name it was claimed for.
    pub nic: String,
    /// Its owner as recorded.
    pub owner: Owner,
}

impl ClaimRecord {
    /// From a `MACAddress` (`None` when its spec does not parse).
    pub fn from_claim(c: &MacAddress) -> Option<Self> {
        let (scope, mac) = c.key()?;
        Some(ClaimRecord {
            name: c.metadata.name.clone()?,
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
            created: c
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            scope,
            mac,
            nic: c.spec.nic.clone(),
            owner: c.owner(),
        })
    }
}

/// A workload that carries MACs.
#[derive(Debug, Clone)]
pub struct WorkloadRecord {
    /// Who it is (group, resource, kind, namespace, name, uid, claim token).
    pub owner: Owner,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Its MACs: scope, MAC, NIC name.
    pub macs: Vec<(Scope, Mac, String)>,
}

impl WorkloadRecord {
    /// Reads an object of `kind` through the dialect readers; `None` when it carries no MAC or is
    /// not hotnic's (a KubeVirt launcher pod, a VMI of a VirtualMachine, which carries the VM's).
    pub fn read(kind: Kind, obj: &Value, mode: ScopeMode) -> Option<Self> {
        let d = dialect::detect(kind.group(), kind.as_str(), obj, None).ok()?;
        if dialect::owned_by_vm(obj) {
            return None;
        }
        let meta = &obj["metadata"];
        let text = |k: &str| {
            meta[k]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let namespace = text("namespace")?;
        let w = dialect::read(d, obj, &namespace);
        let macs: Vec<_> = w
            .nics
            .iter()
            .filter(|n| !n.implicit)
            .filter_map(|n| {
                let mac = n.parsed_mac().filter(Mac::is_usable_unicast)?;
                Some((mode.scope_of(n), mac, n.name.clone().unwrap_or_default()))
            })
            .collect();
        if macs.is_empty() {
            return None;
        }
        let token = dialect::annotations::get(obj, crate::allocator::CLAIM_TOKEN)
            .and_then(Value::as_str)
            .map(str::to_string);
        Some(WorkloadRecord {
            owner: Owner {
                group: kind.group().into(),
                kind: kind.as_str().into(),
                resource: kind.resource().into(),
                name: text("name"),
                generate_name: text("generateName"),
                uid: text("uid"),
                token,
                namespace,
            },
            created: meta["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|t| t.as_second()),
            macs,
        })
    }
}

/// Why a claim is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Release {
    /// Its bound owner is gone (deleted).
    OwnerGone,
    /// Its owner no longer carries the MAC (unplugged).
    Unplugged,
    /// Its owner never appeared within the grace period.
    NeverAppeared,
}

/// One thing a pass does.
#[derive(Debug, Clone)]
pub enum Repair {
    /// Record the owner's name and uid in claim `claim` (an index into the pass's claims).
    Bind {
        /// Index of the claim.
        claim: usize,
        /// The owner's name.
        name: String,
        /// The owner's uid.
        uid: String,
    },
    /// Delete claim `claim`.
    Release {
        /// Index of the claim.
        claim: usize,
        /// Why.
        why: Release,
    },
    /// Create a claim for a MAC a workload carries without one.
    Adopt {
        /// Scope.
        scope: Scope,
        /// MAC.
        mac: Mac,
        /// NIC name.
        nic: String,
        /// The oldest carrier.
        owner: Owner,
    },
    /// A MAC carried by several objects.
    Duplicate {
        /// Scope.
        scope: Scope,
        /// MAC.
        mac: Mac,
        /// Every carrier, oldest first, with its NIC.
        owners: Vec<(Owner, String)>,
    },
}

impl Repair {
    /// The metric label of this kind of repair.
    pub fn label(&self) -> &'static str {
        match self {
            Repair::Bind { .. } => "bound",
            Repair::Release {
                why: Release::OwnerGone,
                ..
            } => "released_owner_gone",
            Repair::Release {
                why: Release::Unplugged,
                ..
            } => "released_unplugged",
            Repair::Release {
                why: Release::NeverAppeared,
                ..
            } => "released_never_appeared",
            Repair::Adopt { .. } => "adopted",
            Repair::Duplicate { .. } => "duplicate",
        }
    }
}

type Id = (String, String, String, String);

fn id(o: &Owner, key: &str) -> Id {
    (
        o.group.clone(),
        o.resource.clone(),
        o.namespace.clone(),
        key.to_string(),
    )
}

/// Plans a pass (pure): `claims` listed first, then `workloads`; `now` in Unix seconds; claims
/// younger than `grace` whose owner is missing or does not carry the MAC yet are left alone
/// (their request may still be in admission).
pub fn plan(
    claims: &[ClaimRecord],
    workloads: &[WorkloadRecord],
    now: i64,
    grace: Duration,
) -> Vec<Repair> {
    let mut by_name: HashMap<Id, usize> = HashMap::new();
    let mut by_token: HashMap<Id, usize> = HashMap::new();
    let mut carriers: BTreeMap<(Scope, Mac), Vec<(usize, String)>> = BTreeMap::new();
    for (i, w) in workloads.iter().enumerate() {
        if let Some(n) = &w.owner.name {
            by_name.insert(id(&w.owner, n), i);
        }
        if let Some(t) = &w.owner.token {
            by_token.insert(id(&w.owner, t), i);
        }
        let mut seen = HashSet::new();
        for (scope, mac, nic) in &w.macs {
            if seen.insert((scope.clone(), *mac)) {
                carriers
                    .entry((scope.clone(), *mac))
                    .or_default()
                    .push((i, nic.clone()));
            }
        }
    }
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut claimed: HashSet<(Scope, Mac)> = HashSet::new();
    for (ci, c) in claims.iter().enumerate() {
        claimed.insert((c.scope.clone(), c.mac));
        let old_enough = c.created.is_none_or(|t| t.saturating_add(grace) <= now);
        let by_n = c
            .owner
            .name
            .as_deref()
            .and_then(|n| by_name.get(&id(&c.owner, n)));
        let by_t = c
            .owner
            .token
            .as_deref()
            .and_then(|t| by_token.get(&id(&c.owner, t)));
        let found = by_n.or(by_t).map(|&i| &workloads[i]);
        match found {
            Some(w) => {
                let carries = w.macs.iter().any(|(s, m, _)| *s == c.scope && *m == c.mac);
                if carries {
                    if let (Some(name), Some(uid)) = (&w.owner.name, &w.owner.uid)
                        && (c.owner.name.as_ref() != Some(name)
                            || c.owner.uid.as_ref() != Some(uid))
                    {
                        out.push(Repair::Bind {
                            claim: ci,
                            name: name.clone(),
                            uid: uid.clone(),
                        });
                    }
                } else if c.owner.uid.is_some() && c.owner.uid != w.owner.uid {
                    // An older incarnation under the same name held it; that one is gone.
                    out.push(Repair::Release {
                        claim: ci,
                        why: Release::OwnerGone,
                    });
                } else if old_enough {
                    out.push(Repair::Release {
                        claim: ci,
                        why: Release::Unplugged,
                    });
                }
            }
            None if c.owner.uid.is_some() => out.push(Repair::Release {
                claim: ci,
                why: Release::OwnerGone,
            }),
            None if old_enough => out.push(Repair::Release {
                claim: ci,
                why: Release::NeverAppeared,
            }),
            None => {}
        }
    }
    for ((scope, mac), mut ws) in carriers {
        ws.sort_by(|a, b| {
            let (wa, wb) = (&workloads[a.0], &workloads[b.0]);
            (wa.created, &wa.owner.namespace, &wa.owner.name).cmp(&(
                wb.created,
                &wb.owner.namespace,
                &wb.owner.name,
            ))
        });
        if !claimed.contains(&(scope.clone(), mac)) {
            let (first, nic) = &ws[0];
            out.push(Repair::Adopt {
                scope: scope.clone(),
                mac,
                nic: nic.clone(),
                owner: workloads[*first].owner.clone(),
            });
        }
        if ws.len() > 1 {
            out.push(Repair::Duplicate {
                scope,
                mac,
                owners: ws
                    .into_iter()
                    .map(|(i, nic)| (workloads[i].owner.clone(), nic))
                    .collect(),
            });
        }
    }
    out
}

/// What one pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Claims listed.
    pub claims: usize,
    /// Workloads carrying MACs.
    pub workloads: usize,
    /// Repairs done, by [`Repair::label`] (a write that lost a race is not counted).
    pub done: BTreeMap<&'static str, usize>,
    /// MACs carried by more than one object.
    pub duplicates: usize,
}

/// Why a pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Listing failed.
    #[error("listing {what}")]
    List {
        /// What was being listed.
        what: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// Runs repair passes.
pub struct Repairer {
    client: kube::Client,
    claims: Api<MacAddress>,
    mode: ScopeMode,
    grace: Duration,
    recorder: Recorder,
}

impl std::fmt::Debug for Repairer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repairer")
            .field("mode", &self.mode)
            .field("grace", &self.grace)
            .finish()
    }
}

const PAGE: u32 = 250;

impl Repairer {
    /// A repairer writing through `client`; `identity` names this replica in its events.
    pub fn new(client: kube::Client, mode: ScopeMode, grace: Duration, identity: &str) -> Self {
        let reporter = Reporter {
            controller: "hotnic-webhook".into(),
            instance: Some(identity.to_string()),
        };
        Repairer {
            claims: Api::all(client.clone()),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            mode,
            grace,
        }
    }

    /// Every claim.
    pub async fn list_claims(&self) -> Result<Vec<ClaimRecord>, RepairError> {
        let mut out = Vec::new();
        let mut lp = ListParams::default().limit(PAGE);
        loop {
            let page = self
                .claims
                .list(&lp)
                .await
                .map_err(|source| RepairError::List {
                    what: "MACAddress claims",
                    source,
                })?;
            out.extend(page.items.iter().filter_map(ClaimRecord::from_claim));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    /// Every workload carrying MACs (kinds the API server does not serve are skipped).
    pub async fn list_workloads(&self) -> Result<Vec<WorkloadRecord>, RepairError> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let (group, version) = match kind {
                Kind::Pod => ("", "v1"),
                _ => (kind.group(), "v1"),
            };
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind.as_str()),
                kind.resource(),
            );
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            let mut lp = ListParams::default().limit(PAGE);
            loop {
                let page = match api.list(&lp).await {
                    Ok(p) => p,
                    // KubeVirt not installed: nothing of that kind to repair.
                    Err(e) if kind != Kind::Pod && is_status(&e, 404) => break,
                    Err(source) => {
                        return Err(RepairError::List {
                            what: kind.resource(),
                            source,
                        });
                    }
                };
                for o in &page.items {
                    let Ok(v) = serde_json::to_value(o) else {
                        continue;
                    };
                    out.extend(WorkloadRecord::read(kind, &v, self.mode));
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => lp = lp.continue_token(&token),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// One pass: list, plan, write. Writes that lose a race (409, 404) are skipped: the next pass
    /// sees the newer state.
    pub async fn pass(&self) -> Result<PassReport, RepairError> {
        let claims = self.list_claims().await?;
        let workloads = self.list_workloads().await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let repairs = plan(&claims, &workloads, now, self.grace);
        let mut report = PassReport {
            claims: claims.len(),
            workloads: workloads.len(),
            ..PassReport::default()
        };
        for r in &repairs {
            if let Repair::Duplicate { .. } = r {
                report.duplicates += 1;
            }
            match self.execute(r, &claims).await {
                Ok(true) => *report.done.entry(r.label()).or_default() += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(repair = r.label(), error = %Chain(&e), "a MAC claim repair failed; the next pass retries");
                }
            }
        }
        Ok(report)
    }

    async fn execute(&self, r: &Repair, claims: &[ClaimRecord]) -> Result<bool, kube::Error> {
        let lost = |e: &kube::Error| is_status(e, 404) || is_status(e, 409);
        let result = match r {
            Repair::Bind { claim, name, uid } => {
                let c = &claims[*claim];
                let patch = json!({
                    "metadata": {"resourceVersion": c.resource_version},
                    "spec": {"owner": {"name": name, "uid": uid}},
                });
                self.claims
                    .patch(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            Repair::Release { claim, why } => {
                let c = &claims[*claim];
                tracing::info!(claim = %c.name, owner = %c.owner, why = ?why, "releasing a MAC claim");
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: c.uid.clone(),
                        resource_version: c.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                self.claims.delete(&c.name, &dp).await.map(drop)
            }
            Repair::Adopt {
                scope,
                mac,
                nic,
                owner,
            } => {
                tracing::info!(%mac, %owner, "adopting a MAC that had no claim");
                let body = MacAddress::new(scope, *mac, nic, owner);
                self.claims
                    .create(&PostParams::default(), &body)
                    .await
                    .map(drop)
            }
            Repair::Duplicate { mac, owners, scope } => {
                self.report_duplicate(*mac, scope, owners).await;
                return Ok(true);
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if lost(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn report_duplicate(&self, mac: Mac, scope: &Scope, owners: &[(Owner, String)]) {
        tracing::warn!(%mac, %scope, owners = ?owners.iter().map(|(o, _)| o.to_string()).collect::<Vec<_>>(), "a MAC is used by several objects");
        for (i, (o, nic)) in owners.iter().enumerate() {
            let others: Vec<String> = owners
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (p, n))| format!("{p} (NIC {n})"))
                .collect();
            let note = format!(
                "MAC {mac} of NIC {nic} is also used by {} in {scope}; hotnic never rewrites a MAC: give one of them another MAC (unplug the NIC and plug a new one)",
                others.join(", ")
            );
            let reference = ObjectReference {
                api_version: Some(if o.group.is_empty() {
                    "v1".into()
                } else {
                    format!("{}/v1", o.group)
                }),
                kind: Some(o.kind.clone()),
                namespace: Some(o.namespace.clone()),
                name: o.name.clone(),
                uid: o.uid.clone(),
                ..ObjectReference::default()
            };
            let ev = Event {
                type_: EventType::Warning,
                reason: "DuplicateMAC".into(),
                note: Some(note.chars().take(1000).collect()),
                action: "CheckMACClaims".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference).await {
                tracing::warn!(error = %Chain(&e), "cannot publish the DuplicateMAC event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: Option<&str>) -> Owner {
        Owner {
            kind: "Pod".into(),
            resource: "pods".into(),
            namespace: "demo".into(),
            name: Some(name.into()),
            uid: uid.map(str::to_string),
            ..Owner::default()
        }
    }

    fn mac(n: u8) -> Mac {
        Mac::new([2, 0, 0, 0, 0, n])
    }

    fn claim(n: u8, owner: Owner, created: i64) -> ClaimRecord {
        ClaimRecord {
            name: format!("02-00-00-00-00-{n:02x}"),
            uid: Some(format!("c{n}")),
            resource_version: Some("1".into()),
            created: Some(created),
            scope: Scope::Cluster,
            mac: mac(n),
            nic: "eth1".into(),
            owner,
        }
    }

    fn workload(owner: Owner, created: i64, macs: &[u8]) -> WorkloadRecord {
        WorkloadRecord {
            owner,
            created: Some(created),
            macs: macs
                .iter()
                .map(|n| (Scope::Cluster, mac(*n), format!("eth{n}")))
                .collect(),
        }
    }

    const GRACE: Duration = Duration::from_secs(60);

    fn labels(r: &[Repair]) -> Vec<&'static str> {
        r.iter().map(Repair::label).collect()
    }

    #[test]
    fn binds_releases_and_waits_as_the_module_says() {
        let now = 1_000;
        let claims = vec![
            // 0: owner exists, carries it, not bound yet → bind.
            claim(1, pod("a", None), 990),
            // 1: bound, owner gone → release at once.
            claim(2, pod("gone", Some("u-gone")), 990),
            // 2: owner never appeared, young → wait; 3: old → release.
            claim(3, pod("pending", None), 990),
            claim(4, pod("denied", None), 100),
            // 4: owner exists without the MAC (unplugged), old → release; 5: young → wait.
            claim(5, pod("a", Some("u-a")), 100),
            claim(6, pod("a", Some("u-a")), 990),
            // 6: bound to an older incarnation; the new one carries it → rebind.
            claim(7, pod("b", Some("u-old")), 100),
            // 7: bound to an older incarnation; the new one does not carry it → release.
            claim(8, pod("b", Some("u-older")), 990),
        ];
        let workloads = vec![
            workload(pod("a", Some("u-a")), 10, &[1]),
            workload(pod("b", Some("u-b")), 10, &[7]),
        ];
        let r = plan(&claims, &workloads, now, GRACE);
        assert_eq!(
            labels(&r),
            [
                "bound",
                "released_owner_gone",
                "released_never_appeared",
                "released_unplugged",
                "bound",
                "released_owner_gone"
            ]
        );
        assert!(
            matches!(&r[0], Repair::Bind { claim: 0, name, uid } if name == "a" && uid == "u-a")
        );
        assert!(matches!(&r[4], Repair::Bind { claim: 6, uid, .. } if uid == "u-b"));
    }

    #[test]
    fn generated_names_are_found_by_token_and_adoption_goes_to_the_oldest() {
        let pending = Owner {
            name: None,
            generate_name: Some("web-".into()),
            token: Some("t1".into()),
            ..pod("x", None)
        };
        let created = Owner {
            name: Some("web-k4sks".into()),
            uid: Some("u1".into()),
            ..pending.clone()
        };
        let claims = vec![claim(1, pending, 990)];
        let workloads = vec![
            workload(created, 10, &[1]),
            // Two objects carry 9, unclaimed: adopt for the older, report both.
            workload(pod("young", Some("uy")), 50, &[9]),
            workload(pod("old", Some("uo")), 20, &[9]),
        ];
        let r = plan(&claims, &workloads, 1_000, GRACE);
        assert_eq!(labels(&r), ["bound", "adopted", "duplicate"]);
        assert!(matches!(&r[0], Repair::Bind { name, .. } if name == "web-k4sks"));
        assert!(
            matches!(&r[1], Repair::Adopt { owner, mac: m, .. } if owner.name.as_deref() == Some("old") && *m == mac(9))
        );
        assert!(matches!(&r[2], Repair::Duplicate { owners, .. } if owners.len() == 2));
        // Another pod of the prefix never takes a token claim.
        let claims = vec![claim(
            1,
            Owner {
                name: None,
                token: Some("t1".into()),
                ..pod("x", None)
            },
            100,
        )];
        let r = plan(
            &claims,
            &[workload(pod("web-server", Some("us")), 10, &[1])],
            1_000,
            GRACE,
        );
        // Released; the next pass adopts it for web-server (one pass never both deletes and
        // creates one name).
        assert_eq!(labels(&r), ["released_never_appeared"]);
    }

    #[test]
    fn reads_workloads_through_the_dialects() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "web", "namespace": "demo", "uid": "u1",
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "annotations": {"k8s.v1.cni.cncf.io/networks":
                "[{\"name\":\"blue\",\"interface\":\"eth1\",\"mac\":\"02:00:00:00:00:01\"},{\"name\":\"red\",\"interface\":\"eth2\"}]"}},
            "spec": {"containers": []}});
        let w = WorkloadRecord::read(Kind::Pod, &pod, ScopeMode::Network).unwrap();
        assert_eq!(w.owner.uid.as_deref(), Some("u1"));
        assert_eq!(w.created, Some(1_767_323_045));
        assert_eq!(w.macs.len(), 1);
        assert!(matches!(&w.macs[0].0, Scope::Network(n) if n.name == "blue"));
        let mut launcher = pod.clone();
        launcher["metadata"]["labels"] = json!({"kubevirt.io": "virt-launcher"});
        assert!(WorkloadRecord::read(Kind::Pod, &launcher, ScopeMode::Cluster).is_none());
        let plain = json!({"metadata": {"name": "p", "namespace": "demo"}, "spec": {}});
        assert!(WorkloadRecord::read(Kind::Pod, &plain, ScopeMode::Cluster).is_none());
    }
}
