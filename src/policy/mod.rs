//! The admission policy: mutations (MAC injection, capacity default) and rules, over the NIC model.
//!
//! The rules and the mutations are pure. The one effect is the allocator's: the mutating phase
//! claims the MACs it assigns or is given (for new NICs), and the validating phase binds the claims
//! of an object created with `generateName` to the name it got; neither ever releases a MAC (that
//! happens where deletions and unplugs are observed, see [`crate::claims`]). The webhook awaits
//! [`Policy::mutate_async`] and [`Policy::validate_async`] (a cluster-wide allocator writes to the
//! API server); `hotnic check`, `kubectl hotnic` and tests call [`Policy::mutate`] and
//! [`Policy::validate`] with an allocator that answers at once.

mod cause;
mod claim;
mod mutate;
mod rules;

pub use cause::Cause;
pub use claim::ClaimStats;

use crate::allocator::{CLAIM_TOKEN, KnownOwner, MacAllocator, MacRange, Owner};
use crate::dialect;
use crate::model::{Rule, Workload};
use futures::FutureExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Policy settings.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Capacity given to workloads that state none (before `max` with their NIC count).
    pub default_capacity: u8,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            default_capacity: 4,
        }
    }
}

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
}

impl Operation {
    /// Parses `CREATE`, `UPDATE`, `DELETE`, `CONNECT`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    /// The API server's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// What the policy needs to know about one admission request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The operation.
    pub operation: Operation,
    /// `request.dryRun`: decide the same, change no state.
    pub dry_run: bool,
    /// API group of the object's kind (`""` for core, `kubevirt.io`).
    pub group: &'a str,
    /// Kind (`Pod`, `VirtualMachine`, `VirtualMachineInstance`).
    pub kind: &'a str,
    /// Namespace of the request (the object may not carry it yet on CREATE).
    pub namespace: &'a str,
    /// Name, if known (not for `generateName` on the mutating CREATE).
    pub name: Option<&'a str>,
    /// The new object.
    pub object: &'a Value,
    /// The old object (UPDATE).
    pub old_object: Option<&'a Value>,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Allowed, with a JSON Patch (empty when nothing is to change) and warnings.
    Allowed {
        /// RFC 6902 operations to apply to the object.
        patch: json_patch::Patch,
        /// Things worth telling the user.
        warnings: Vec<String>,
    },
    /// Denied.
    Denied(Denial),
}

impl Outcome {
    fn allow(warnings: Vec<String>) -> Self {
        Outcome::Allowed {
            patch: json_patch::Patch(Vec::new()),
            warnings,
        }
    }

    /// Whether it allows the request.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Outcome::Allowed { .. })
    }

    /// The patch, when allowed.
    pub fn patch(&self) -> Option<&json_patch::Patch> {
        match self {
            Outcome::Allowed { patch, .. } => Some(patch),
            Outcome::Denied(_) => None,
        }
    }

    /// The denial, when denied.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Outcome::Denied(d) => Some(d),
            Outcome::Allowed { .. } => None,
        }
    }

    /// Warnings either way.
    pub fn warnings(&self) -> &[String] {
        match self {
            Outcome::Allowed { warnings, .. } => warnings,
            Outcome::Denied(d) => &d.warnings,
        }
    }
}

/// A denial: every cause found, not only the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// HTTP-style status code: 422 when the object is malformed, 403 otherwise (500 when the
    /// allocator failed).
    pub code: u16,
    /// The causes, each with a field path.
    pub causes: Vec<Cause>,
    /// Warnings that came along.
    pub warnings: Vec<String>,
}

impl Denial {
    fn from_causes(causes: Vec<Cause>, warnings: Vec<String>) -> Self {
        let code = if causes.iter().any(|c| c.rule == Rule::Allocation) {
            500
        } else if causes.iter().any(|c| c.rule == Rule::Malformed) {
            422
        } else {
            403
        };
        Denial {
            code,
            causes,
            warnings,
        }
    }

    /// The Kubernetes `status.reason` matching the code.
    pub fn reason(&self) -> &'static str {
        match self.code {
            422 => "Invalid",
            500 => "InternalError",
            _ => "Forbidden",
        }
    }

    /// One line listing every cause: `hotnic denied this: a: m; b: n`.
    pub fn message(&self) -> String {
        let mut s = String::from("hotnic: ");
        for (i, c) in self.causes.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            s.push_str(&c.to_string());
        }
        s
    }
}

/// The admission policy, with its MAC allocator.
#[derive(Clone)]
pub struct Policy {
    config: PolicyConfig,
    allocator: Arc<dyn MacAllocator>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("config", &self.config)
            .field("range", &self.allocator.range())
            .finish()
    }
}

/// The workload(s) a request is about, read in one dialect.
struct Subject {
    new: Workload,
    old: Option<Workload>,
    owner: KnownOwner,
    /// VMIs owned by a VirtualMachine: validated, never mutated, claim nothing (the VM holds the
    /// MACs).
    inherits_macs: bool,
}

/// A string in an object's `metadata`.
fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    dialect::view::at(obj, &["metadata", key])?
        .as_str()
        .filter(|s| !s.is_empty())
}

impl Policy {
    /// A policy with this configuration and allocator.
    pub fn new(config: PolicyConfig, allocator: Arc<dyn MacAllocator>) -> Self {
        Policy { config, allocator }
    }

    /// A policy with default settings and an in-memory allocator over `range`.
    pub fn in_memory(range: MacRange) -> Self {
        Policy::new(
            PolicyConfig::default(),
            Arc::new(crate::allocator::InMemoryAllocator::new(range)),
        )
    }

    /// The allocator (for readiness and metrics).
    pub fn allocator(&self) -> &Arc<dyn MacAllocator> {
        &self.allocator
    }

    /// The configuration.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Reads the request's objects, or says why the request is none of hotnic's business.
    fn subject(req: &Request<'_>) -> Result<Subject, Option<String>> {
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return Err(None);
        }
        let d = dialect::detect(req.group, req.kind, req.object, req.old_object)?;
        let new = dialect::read(d, req.object, req.namespace);
        let old = req.old_object.map(|o| dialect::read(d, o, req.namespace));
        if !new.has_nics()
            && new.findings.is_empty()
            && !old.as_ref().is_some_and(Workload::has_nics)
        {
            return Err(None);
        }
        let objects = || std::iter::once(req.object).chain(req.old_object);
        let first = |key: &str| objects().find_map(|o| meta_str(o, key)).map(str::to_string);
        let token = objects()
            .find_map(|o| dialect::annotations::get(o, CLAIM_TOKEN)?.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let owner = Owner {
            group: req.group.to_string(),
            kind: req.kind.to_string(),
            resource: dialect::Kind::of(req.group, req.kind)
                .map_or("", |k| k.resource())
                .to_string(),
            namespace: req.namespace.to_string(),
            name: req
                .name
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .or_else(|| first("name")),
            generate_name: first("generateName"),
            uid: first("uid"),
            token,
        };
        Ok(Subject {
            inherits_macs: dialect::owned_by_vm(req.object),
            new,
            old,
            owner: KnownOwner::new(owner),
        })
    }

    /// Mutates: injects missing MACs (keeping the old ones across updates), claims the MACs of
    /// new NICs, and defaults the interface capacity. Denies only when the object cannot be
    /// mutated safely (malformed, a given MAC held by another object, no MAC to be had).
    pub async fn mutate_async(&self, req: &Request<'_>) -> Outcome {
        self.mutate_with_stats(req).await.0
    }

    /// [`Policy::mutate_async`], with what claiming took.
    pub async fn mutate_with_stats(&self, req: &Request<'_>) -> (Outcome, ClaimStats) {
        let mut subject = match Self::subject(req) {
            Ok(s) => s,
            Err(warning) => {
                return (
                    Outcome::allow(warning.into_iter().collect()),
                    ClaimStats::default(),
                );
            }
        };
        let mut plan = match mutate::prepare(self, req, &mut subject) {
            Ok(plan) => plan,
            Err(outcome) => return (outcome, ClaimStats::default()),
        };
        // Claims are made only for requests the validating phase will admit: one it will deny
        // gets its answer (with free-looking MACs) and claims nothing.
        let proposal = match claim::propose(self, req, &mut subject, &plan) {
            Ok(p) => p,
            Err(doomed) => return (doomed, ClaimStats::default()),
        };
        let stats = match claim::claim_all(self, req, &subject, &mut plan, proposal.as_ref()).await
        {
            Ok(stats) => stats,
            Err((denial, stats)) => return (Outcome::Denied(denial), stats),
        };
        // Every proposed MAC claimed: the answer judged is the answer.
        let outcome = match proposal {
            Some(p) if stats.conflicts == 0 => p.into_outcome(),
            _ => mutate::finish(self, req, &subject, plan.assigned, plan.token),
        };
        (outcome, stats)
    }

    /// Validates: runs every rule and denies with all causes found; once allowed, binds the
    /// claims of an object created with `generateName` to its name and uid. A DELETE is always
    /// allowed and changes nothing (the MACs are released once the deletion is observed).
    pub async fn validate_async(&self, req: &Request<'_>) -> Outcome {
        if req.operation == Operation::Delete {
            return Outcome::allow(Vec::new());
        }
        let subject = match Self::subject(req) {
            Ok(s) => s,
            Err(warning) => return Outcome::allow(warning.into_iter().collect()),
        };
        let held: HashMap<usize, Owner> = claim::held_by_others(self, &subject).await;
        let causes = rules::check(req, &subject, &held);
        let warnings = rules::warnings(&subject);
        if !causes.is_empty() {
            return Outcome::Denied(Denial::from_causes(causes, warnings));
        }
        claim::bind_generated(self, req, &subject).await;
        Outcome::allow(warnings)
    }

    /// [`Policy::mutate_async`] for allocators that answer at once (in-memory: `hotnic check`,
    /// `kubectl hotnic`, tests). With one that would have to wait it denies (500) instead of
    /// blocking.
    pub fn mutate(&self, req: &Request<'_>) -> Outcome {
        self.mutate_async(req)
            .now_or_never()
            .unwrap_or_else(claim::would_block)
    }

    /// [`Policy::validate_async`] for allocators that answer at once (see [`Policy::mutate`]).
    pub fn validate(&self, req: &Request<'_>) -> Outcome {
        self.validate_async(req)
            .now_or_never()
            .unwrap_or_else(claim::would_block)
    }
}
