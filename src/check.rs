//! `hotnic check`: run the admission policy offline on manifests, like `kyverno apply`.

use crate::admission::Review;
use crate::allocator::InMemoryAllocator;
use crate::cli::PolicyArgs;
use crate::policy::{Operation, Outcome, Policy, Request};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `hotnic check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The new object (YAML or JSON manifest).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["review", "json_patch", "merge_patch"])]
    pub new: Option<PathBuf>,
    /// Instead of --new: an RFC 6902 JSON Patch applied to --old (as `kubectl patch --type json`).
    #[arg(long, value_name = "FILE", requires = "old", conflicts_with_all = ["new", "merge_patch"])]
    pub json_patch: Option<PathBuf>,
    /// Instead of --new: an RFC 7386 merge patch applied to --old (as `kubectl patch --type merge`).
    #[arg(long, value_name = "FILE", requires = "old", conflicts_with = "new")]
    pub merge_patch: Option<PathBuf>,
    /// The old object, for an UPDATE. Taken as created through hotnic (its missing MACs and
    /// capacity are filled in first, as the webhook did at create).
    #[arg(long, value_name = "FILE")]
    pub old: Option<PathBuf>,
    /// A whole AdmissionReview (as the API server sends it) instead of --new/--old.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["new", "old"])]
    pub review: Option<PathBuf>,
    /// CREATE or UPDATE (default: UPDATE with --old, else CREATE).
    #[arg(long, value_parser = ["CREATE", "UPDATE"])]
    pub operation: Option<String>,
    /// Decide as for a dry-run request.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the JSON Patch instead of the resulting object.
    #[arg(long)]
    pub patch: bool,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// MAC range and default capacity.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Bad input for `hotnic check`: names the file; the problem is its source.
#[derive(Debug, thiserror::Error)]
#[error("{file}")]
pub struct InputError {
    /// The file (or the flag, e.g. `--new`).
    pub file: String,
    /// What is wrong with it.
    #[source]
    pub problem: Problem,
}

impl InputError {
    fn new(file: impl std::fmt::Display, problem: Problem) -> Self {
        InputError {
            file: file.to_string(),
            problem,
        }
    }
}

/// What is wrong with an input of `hotnic check`.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file cannot be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// It starts like JSON but is not.
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),
    /// It is not YAML.
    #[error("not valid YAML")]
    Yaml(#[source] serde_yaml::Error),
    /// A patch file that is neither.
    #[error("not valid JSON or YAML")]
    JsonOrYaml(#[source] serde_yaml::Error),
    /// YAML that JSON cannot hold (e.g. non-string keys).
    #[error("not representable as JSON")]
    NotJson(#[source] serde_json::Error),
    /// No document at all.
    #[error("empty file")]
    Empty,
    /// Not a mapping.
    #[error("not a Kubernetes object (expected a mapping with apiVersion and kind)")]
    NotAnObject,
    /// A mapping without `apiVersion` or `kind`.
    #[error("has no {0}")]
    Missing(&'static str),
    /// A `--json-patch` file that is not an RFC 6902 patch.
    #[error("not a JSON Patch")]
    NotAJsonPatch(#[source] serde_json::Error),
    /// The patch does not apply to `--old`.
    #[error("does not apply to --old")]
    DoesNotApply(#[source] json_patch::PatchError),
    /// hotnic's own patch does not apply to the object it was made for (a bug).
    #[error("internal error: patch does not apply")]
    OwnPatch(#[source] json_patch::PatchError),
    /// The review envelope is not what the API server sends.
    #[error(transparent)]
    Review(#[from] crate::admission::ReviewError),
    /// The review carries no object.
    #[error("request.object missing")]
    NoObject,
    /// Neither `--new` nor a patch of `--old`.
    #[error("required (or --old with --json-patch/--merge-patch)")]
    NoNewObject,
    /// An UPDATE without the old object.
    #[error("--operation UPDATE needs --old")]
    UpdateWithoutOld,
}

/// The verdict of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The mutating phase's answer.
    pub mutation: Outcome,
    /// The validating phase's answer, on the mutated object (`None` when mutation denied).
    pub validation: Option<Outcome>,
    /// The object after mutation.
    pub object: Value,
}

impl Report {
    /// Whether both phases allow it.
    pub fn allowed(&self) -> bool {
        self.mutation.is_allowed() && self.validation.as_ref().is_some_and(Outcome::is_allowed)
    }
}

/// Reads a manifest (JSON or YAML; the first document of a YAML stream).
pub fn read_manifest(path: &Path) -> Result<Value, InputError> {
    let err = |problem| InputError::new(path.display(), problem);
    let text = std::fs::read_to_string(path).map_err(|e| err(Problem::Read(e)))?;
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| err(Problem::Json(e)))?
    } else {
        let doc = serde_yaml::Deserializer::from_str(&text)
            .next()
            .ok_or_else(|| err(Problem::Empty))?;
        let yaml = serde_yaml::Value::deserialize(doc).map_err(|e| err(Problem::Yaml(e)))?;
        serde_json::to_value(yaml).map_err(|e| err(Problem::NotJson(e)))?
    };
    if !value.is_object() {
        return Err(err(Problem::NotAnObject));
    }
    for key in ["apiVersion", "kind"] {
        if !value.get(key).is_some_and(Value::is_string) {
            return Err(err(Problem::Missing(key)));
        }
    }
    Ok(value)
}

use serde::Deserialize;

/// The group and kind of an object (`apiVersion` `kubevirt.io/v1` → group `kubevirt.io`).
fn group_kind(obj: &Value) -> (String, String) {
    let api = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let group = api.rsplit_once('/').map_or("", |(g, _)| g).to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (group, kind)
}

/// Applies an allowed outcome's patch.
fn patched(obj: &Value, out: &Outcome) -> Result<Value, Problem> {
    let mut o = obj.clone();
    if let Some(p) = out.patch() {
        json_patch::patch(&mut o, &p.0).map_err(Problem::OwnPatch)?;
    }
    Ok(o)
}

/// The old object as the API server stores it: created through hotnic's mutation.
fn as_created(policy: &Policy, old: &Value, namespace: &str) -> Result<Value, InputError> {
    let (group, kind) = group_kind(old);
    let meta = |k: &str| {
        old.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
    };
    let req = Request {
        operation: Operation::Create,
        dry_run: false,
        group: &group,
        kind: &kind,
        namespace: meta("namespace").unwrap_or(namespace),
        name: meta("name"),
        object: old,
        old_object: None,
    };
    patched(old, &policy.mutate(&req)).map_err(|problem| InputError::new("--old", problem))
}

/// The new object: --new, or --old with --json-patch / --merge-patch applied.
fn new_object(args: &CheckArgs, old: Option<&Value>) -> Result<(PathBuf, Value), InputError> {
    let patch_file = args.json_patch.as_ref().or(args.merge_patch.as_ref());
    let (Some(path), Some(old)) = (patch_file, old) else {
        let path = args
            .new
            .clone()
            .ok_or_else(|| InputError::new("--new", Problem::NoNewObject))?;
        let object = read_manifest(&path)?;
        return Ok((path, object));
    };
    let err = |problem| InputError::new(path.display(), problem);
    let text = std::fs::read_to_string(path).map_err(|e| err(Problem::Read(e)))?;
    let patch: Value = serde_yaml::from_str::<serde_yaml::Value>(&text)
        .map_err(|e| err(Problem::JsonOrYaml(e)))
        .and_then(|y| serde_json::to_value(y).map_err(|e| err(Problem::NotJson(e))))?;
    let mut object = old.clone();
    if args.json_patch.is_some() {
        let ops: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| err(Problem::NotAJsonPatch(e)))?;
        json_patch::patch(&mut object, &ops.0).map_err(|e| err(Problem::DoesNotApply(e)))?;
    } else {
        json_patch::merge(&mut object, &patch);
    }
    Ok((path.clone(), object))
}

/// Runs the policy as the API server would: mutate, apply the patch, validate the result.
pub fn check(policy: &Policy, args: &CheckArgs) -> Result<Report, InputError> {
    let (operation, dry_run, namespace, name, object, old, (group, kind)) = match &args.review {
        Some(path) => {
            let err = |problem| InputError::new(path.display(), problem);
            let body = std::fs::read(path).map_err(|e| err(Problem::Read(e)))?;
            // The webhook's parser: the same envelope checks (apiVersion, kind, uid, operation).
            let review = Review::parse(&body).map_err(|e| err(e.into()))?;
            if !review.object.is_object() {
                return Err(err(Problem::NoObject));
            }
            let namespace = Some(review.namespace)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| args.namespace.clone());
            (
                review.operation,
                review.dry_run || args.dry_run,
                namespace,
                Some(review.name).filter(|n| !n.is_empty()),
                review.object,
                Some(review.old_object).filter(Value::is_object),
                (review.kind.group, review.kind.kind),
            )
        }
        None => {
            let old = args.old.as_deref().map(read_manifest).transpose()?;
            // The old object as stored: created through hotnic (its MACs and capacity filled in).
            let old = old
                .map(|o| as_created(policy, &o, &args.namespace))
                .transpose()?;
            let (new_path, object) = new_object(args, old.as_ref())?;
            let op = match args.operation.as_deref() {
                Some(s) => Operation::parse(s).unwrap_or(Operation::Create),
                None if old.is_some() => Operation::Update,
                None => Operation::Create,
            };
            if op == Operation::Update && old.is_none() {
                return Err(InputError::new(
                    new_path.display(),
                    Problem::UpdateWithoutOld,
                ));
            }
            let meta = |k: &str| {
                object
                    .get("metadata")
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let ns = meta("namespace").unwrap_or_else(|| args.namespace.clone());
            let name = meta("name");
            let group_kind = group_kind(&object);
            (op, args.dry_run, ns, name, object, old, group_kind)
        }
    };
    let req = Request {
        operation,
        dry_run,
        group: &group,
        kind: &kind,
        namespace: &namespace,
        name: name.as_deref(),
        object: &object,
        old_object: old.as_ref(),
    };
    let mutation = policy.mutate(&req);
    if !mutation.is_allowed() {
        return Ok(Report {
            mutation,
            validation: None,
            object,
        });
    }
    let mutated = patched(&object, &mutation).map_err(|p| InputError::new("object", p))?;
    let vreq = Request {
        object: &mutated,
        ..req
    };
    let validation = policy.validate(&vreq);
    Ok(Report {
        mutation,
        validation: Some(validation),
        object: mutated,
    })
}

/// Renders a report for people.
pub fn render(report: &Report, show_patch: bool) -> String {
    let mut out = String::new();
    let denial = report
        .mutation
        .denial()
        .or_else(|| report.validation.as_ref().and_then(Outcome::denial));
    match denial {
        None => out.push_str("ALLOWED\n"),
        Some(d) => {
            out.push_str(&format!("DENIED ({} {})\n", d.code, d.reason()));
            for c in &d.causes {
                out.push_str(&format!("  - {c}\n"));
            }
        }
    }
    let warnings = report
        .mutation
        .warnings()
        .iter()
        .chain(report.validation.iter().flat_map(|v| v.warnings()));
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    if denial.is_none() {
        if show_patch {
            let patch = report
                .mutation
                .patch()
                .map(|p| serde_json::to_string_pretty(p).unwrap_or_default())
                .unwrap_or_default();
            out.push_str(&patch);
            out.push('\n');
        } else {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&report.object).unwrap_or_default());
        }
    }
    out
}

/// Runs `hotnic check`; returns the exit code: 0 allowed, 1 denied, 2 bad input.
pub fn run(args: &CheckArgs) -> i32 {
    let policy = Policy::new(
        args.policy.config(),
        Arc::new(InMemoryAllocator::new(args.policy.mac_range)),
    );
    match check(&policy, args) {
        Ok(report) => {
            print!("{}", render(&report, args.patch));
            if report.allowed() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("hotnic check: {}", crate::runtime::Chain(&e));
            2
        }
    }
}
