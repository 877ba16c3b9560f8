//! AdmissionReview v1 on the wire: reading the API server's request and building the response.

use crate::policy::{Operation, Outcome, Request};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// `apiVersion` of the reviews hotnic speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Which webhook was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `/mutate`: may return a patch.
    Mutate,
    /// `/validate`: never returns a patch.
    Validate,
}

impl Phase {
    /// `mutate` or `validate` (metrics label).
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Mutate => "mutate",
            Phase::Validate => "validate",
        }
    }
}

/// Why a body is not an AdmissionReview hotnic can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not the expected shape.
    #[error("body is not a valid AdmissionReview: {0}")]
    Json(String),
    /// `apiVersion` other than admission.k8s.io/v1.
    #[error("apiVersion {0:?} is not supported; send admission.k8s.io/v1")]
    ApiVersion(String),
    /// `kind` other than AdmissionReview.
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// A request field is missing or invalid.
    #[error("request.{0}")]
    Field(String),
}

#[derive(Deserialize)]
struct RawReview {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RawRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    #[serde(default)]
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    object: Value,
    #[serde(default)]
    old_object: Value,
}

/// `request.kind`.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupVersionKind {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// One admission request, owned.
#[derive(Debug, Clone)]
pub struct Review {
    /// `request.uid`, echoed in the response.
    pub uid: String,
    /// `request.kind`.
    pub kind: GroupVersionKind,
    /// Namespace.
    pub namespace: String,
    /// Name (empty for `generateName` on the mutating CREATE).
    pub name: String,
    /// Operation.
    pub operation: Operation,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// The new object (`Null` for DELETE).
    pub object: Value,
    /// The old object (`Null` for CREATE).
    pub old_object: Value,
}

impl Review {
    /// Parses an AdmissionReview body.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        let raw: RawReview =
            serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
        if raw.api_version != API_VERSION {
            return Err(ReviewError::ApiVersion(raw.api_version));
        }
        if raw.kind != "AdmissionReview" {
            return Err(ReviewError::Kind(raw.kind));
        }
        let r = raw.request.ok_or(ReviewError::NoRequest)?;
        if r.uid.is_empty() {
            return Err(ReviewError::Field("uid is missing".into()));
        }
        let operation = Operation::parse(&r.operation)
            .ok_or_else(|| ReviewError::Field(format!("operation {:?} is unknown", r.operation)))?;
        Ok(Review {
            uid: r.uid,
            kind: r.kind,
            namespace: r.namespace,
            name: r.name,
            operation,
            dry_run: r.dry_run.unwrap_or(false),
            object: r.object,
            old_object: r.old_object,
        })
    }

    /// The policy's view of it.
    pub fn as_request(&self) -> Request<'_> {
        Request {
            operation: self.operation,
            dry_run: self.dry_run,
            group: &self.kind.group,
            kind: &self.kind.kind,
            namespace: &self.namespace,
            name: Some(self.name.as_str()).filter(|n| !n.is_empty()),
            object: &self.object,
            old_object: Some(&self.old_object).filter(|o| !o.is_null()),
        }
    }
}

/// Builds the AdmissionReview response for `uid` from the policy's outcome. The patch is included
/// only for [`Phase::Mutate`] and only when non-empty.
pub fn response(uid: &str, phase: Phase, outcome: &Outcome) -> Value {
    let mut resp = json!({"uid": uid, "allowed": outcome.is_allowed()});
    match outcome {
        Outcome::Allowed { patch, .. } => {
            if phase == Phase::Mutate && !patch.0.is_empty() {
                let bytes = serde_json::to_vec(patch).unwrap_or_default();
                resp["patchType"] = json!("JSONPatch");
                resp["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
        Outcome::Denied(d) => {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| json!({"field": c.field, "message": c.message, "reason": "FieldValueForbidden"}))
                .collect();
            resp["status"] = json!({
                "status": "Failure",
                "code": d.code,
                "reason": d.reason(),
                "message": d.message(),
                "details": {"causes": causes},
            });
        }
    }
    let warnings = outcome.warnings();
    if !warnings.is_empty() {
        resp["warnings"] = json!(warnings);
    }
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": resp})
}
