//! The admission policy: mutations (MAC injection, capacity default) and rules, over the NIC model.
//!
//! Pure: no I/O. The webhook server, `hotnic check` and tests all call [`Policy::mutate`] and
//! [`Policy::validate`].

mod cause;
mod mutate;
mod rules;

pub use cause::Cause;

use crate::allocator::{MacAllocator, MacRange, Owner};
use crate::dialect;
use crate::model::{Rule, Workload};
use serde_json::Value;
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
    owner: Owner,
    /// VMIs owned by a VirtualMachine: validated, never mutated.
    inherits_macs: bool,
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

    /// Releases the MACs of a deleted object (not on dry-run, not for VMIs that carry a VM's).
    fn forget(&self, req: &Request<'_>) {
        let Some(old) = req.old_object.filter(|_| !req.dry_run) else {
            return;
        };
        let Ok(d) = dialect::detect(req.group, req.kind, old, None) else {
            return;
        };
        if dialect::owned_by_vm(old) {
            return;
        }
        let meta = |k: &str| {
            old.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
        };
        let owner = Owner {
            kind: req.kind.to_string(),
            namespace: req.namespace.to_string(),
            name: req.name.or_else(|| meta("name")).map(str::to_string),
            generate_name: meta("generateName").map(str::to_string),
        };
        for mac in dialect::read(d, old, req.namespace)
            .nics
            .iter()
            .filter_map(|n| n.parsed_mac())
        {
            self.allocator.release(&owner, mac, false);
        }
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
        let meta = req.object.get("metadata");
        let text = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        let owner = Owner {
            kind: req.kind.to_string(),
            namespace: req.namespace.to_string(),
            name: req.name.or_else(|| text("name")).map(str::to_string),
            generate_name: text("generateName").map(str::to_string),
        };
        Ok(Subject {
            inherits_macs: dialect::owned_by_vm(req.object),
            new,
            old,
            owner,
        })
    }

    /// Mutates: injects missing MACs (keeping the old ones across updates) and defaults the
    /// interface capacity. Denies only when the object cannot be mutated safely.
    pub fn mutate(&self, req: &Request<'_>) -> Outcome {
        let subject = match Self::subject(req) {
            Ok(s) => s,
            Err(warning) => return Outcome::allow(warning.into_iter().collect()),
        };
        mutate::run(self, req, &subject)
    }

    /// Validates: runs every rule and denies with all causes found. A DELETE (with its
    /// `old_object`) is always allowed and frees the object's MACs in the allocator.
    pub fn validate(&self, req: &Request<'_>) -> Outcome {
        if req.operation == Operation::Delete {
            self.forget(req);
            return Outcome::allow(Vec::new());
        }
        let subject = match Self::subject(req) {
            Ok(s) => s,
            Err(warning) => return Outcome::allow(warning.into_iter().collect()),
        };
        let causes = rules::check(self, req, &subject);
        let warnings = rules::warnings(&subject);
        if causes.is_empty() {
            Outcome::allow(warnings)
        } else {
            Outcome::Denied(Denial::from_causes(causes, warnings))
        }
    }
}
