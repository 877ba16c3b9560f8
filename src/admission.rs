//! AdmissionReview v1 on the wire: reading the API server's request and building the response.
//!
//! One parser, [`Review::parse`], for every review hotnic reads (the webhook and
//! `hotnic check --review`), and one writer, [`response`].

use crate::dialect::view::ObjectView;
use crate::json_text::quoted_into as json_string;
use crate::model::Rule;
use crate::policy::{Denial, Operation, Outcome, Request};
use kube::core::Status;
use kube::core::response::{StatusCause, StatusDetails};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// `request.kind`: kube-core's type (the API server always sends group, version and kind).
pub use kube::core::GroupVersionKind;

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

/// Why an answer could not be written (HTTP 500). Never turned into an empty patch: an allowed
/// answer without the patch it should carry would admit the object unmutated.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// The JSON Patch could not be serialised.
    #[error("cannot serialise the JSON Patch: {0}")]
    Patch(#[source] serde_json::Error),
    /// The denial's status could not be serialised.
    #[error("cannot serialise the denial's status: {0}")]
    Status(#[source] serde_json::Error),
}

// The envelope is read into hotnic's own types rather than `kube::core::admission`'s
// `AdmissionReview<T>` / `AdmissionRequest<T>` / `AdmissionResponse` (kube-core's `admission`
// feature, off in this build), because those do not fit:
//
// - `AdmissionRequest<T>` requires `resource` and `userInfo`, which hotnic never reads: a review
//   without them (README's curl example) would become a 400;
// - it decodes `object` and `oldObject` into `T: Resource` (`DynamicObject`: a typed `ObjectMeta`
//   plus a flattened map), a second typed pass over every object, while the readers and patch
//   writers work on the JSON as sent. The review path's decoding is also the seam a performance
//   rewrite will replace (borrowed, lazy decoding instead of a whole `Value` per object), so it
//   stays narrow: bytes in through `Review::parse`, the policy's view out through
//   `Review::as_request`;
// - `AdmissionResponse` always writes a `status` (`{}` when allowed) and sets `patchType` only
//   through `with_patch`; hotnic answers with exactly what the API server reads.
//
// What fits is kube-core's: `request.kind` is its `GroupVersionKind`, and a denial's `status` is
// its `Status` with `details.causes`. hotnic's own extension is what goes into those standard
// fields: every cause with its field path and a message that says what to do instead.
//
// The webhook reads a review as [`ReviewView`]: the envelope's strings borrowed from the body and
// each object decoded as the policy's view ([`crate::dialect::view`]), the rest skipped unread.
#[derive(Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de> + Default"))]
struct RawReview<'a, O> {
    #[serde(rename = "apiVersion", default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<RawRequest<'a, O>>,
}

/// `request.kind`: group, version and kind, each required (as in kube-core's
/// `GroupVersionKind`).
#[derive(Deserialize)]
struct RawKind<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "O: Deserialize<'de> + Default")
)]
struct RawRequest<'a, O> {
    #[serde(default, borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: RawKind<'a>,
    #[serde(default, borrow)]
    namespace: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    operation: Cow<'a, str>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    object: O,
    #[serde(default)]
    old_object: O,
}

/// The envelope checks, the same for both ways of reading a review: the request and its
/// operation.
fn envelope<'a, O: Deserialize<'a> + Default>(
    body: &'a [u8],
) -> Result<(RawRequest<'a, O>, Operation), ReviewError> {
    let raw: RawReview<'a, O> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Json(e.to_string()))?;
    if raw.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(raw.api_version.into_owned()));
    }
    if raw.kind != "AdmissionReview" {
        return Err(ReviewError::Kind(raw.kind.into_owned()));
    }
    let r = raw.request.ok_or(ReviewError::NoRequest)?;
    if r.uid.is_empty() {
        return Err(ReviewError::Field("uid is missing".into()));
    }
    let operation = Operation::parse(&r.operation)
        .ok_or_else(|| ReviewError::Field(format!("operation {:?} is unknown", r.operation)))?;
    Ok((r, operation))
}

/// One admission request as the webhook reads it: strings borrowed from the body, each object
/// decoded as the policy's view (only what the policy reads; see [`crate::dialect::view`]).
#[derive(Debug, Clone)]
pub struct ReviewView<'a> {
    /// `request.uid`, echoed in the response.
    pub uid: Cow<'a, str>,
    /// `request.kind.group`.
    pub group: Cow<'a, str>,
    /// `request.kind.kind`.
    pub kind: Cow<'a, str>,
    /// Namespace.
    pub namespace: Cow<'a, str>,
    /// Name (empty for `generateName` on the mutating CREATE).
    pub name: Cow<'a, str>,
    /// Operation.
    pub operation: Operation,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// The new object's view (`Null` for DELETE).
    pub object: Value,
    /// The old object's view (`Null` for CREATE).
    pub old_object: Value,
}

impl<'a> ReviewView<'a> {
    /// Parses an AdmissionReview body with the checks of [`Review::parse`].
    pub fn parse(body: &'a [u8]) -> Result<Self, ReviewError> {
        let (r, operation) = envelope::<ObjectView>(body)?;
        Ok(ReviewView {
            uid: r.uid,
            group: r.kind.group,
            kind: r.kind.kind,
            namespace: r.namespace,
            name: r.name,
            operation,
            dry_run: r.dry_run.unwrap_or(false),
            object: r.object.0,
            old_object: r.old_object.0,
        })
    }

    /// The policy's view of it.
    pub fn as_request(&self) -> Request<'_> {
        Request {
            operation: self.operation,
            dry_run: self.dry_run,
            group: &self.group,
            kind: &self.kind,
            namespace: &self.namespace,
            name: Some(self.name.as_ref()).filter(|n| !n.is_empty()),
            object: &self.object,
            old_object: Some(&self.old_object).filter(|o| !o.is_null()),
        }
    }
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
    /// Parses an AdmissionReview body: `apiVersion` admission.k8s.io/v1, `kind` AdmissionReview,
    /// a `request` with a `uid`, a `kind` and a known `operation`.
    pub fn parse(body: &[u8]) -> Result<Self, ReviewError> {
        let (r, operation) = envelope::<Value>(body)?;
        Ok(Review {
            uid: r.uid.into_owned(),
            kind: GroupVersionKind {
                group: r.kind.group.into_owned(),
                version: r.kind.version.into_owned(),
                kind: r.kind.kind.into_owned(),
            },
            namespace: r.namespace.into_owned(),
            name: r.name.into_owned(),
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
/// only for [`Phase::Mutate`] and only when non-empty. A patch or status that cannot be
/// serialised is an error (the caller answers 500), never an answer without it.
pub fn response(uid: &str, phase: Phase, outcome: &Outcome) -> Result<Value, ResponseError> {
    serde_json::to_value(answer(uid, phase, outcome)?).map_err(ResponseError::Status)
}

/// [`response`] as the JSON bytes the webhook sends, written straight from the outcome (an
/// allowed answer without warnings byte by byte, the rest through serde).
pub fn response_body(uid: &str, phase: Phase, outcome: &Outcome) -> Result<Vec<u8>, ResponseError> {
    if let Outcome::Allowed { patch, warnings } = outcome
        && warnings.is_empty()
    {
        return Ok(allowed_body(uid, (phase == Phase::Mutate).then_some(patch)));
    }
    let answer = answer(uid, phase, outcome)?;
    let mut out = Vec::with_capacity(256 + answer.response.patch.as_ref().map_or(0, String::len));
    serde_json::to_writer(&mut out, &answer).map_err(ResponseError::Status)?;
    Ok(out)
}

/// The AdmissionReview answer, in the order of its members on the wire.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: AnswerResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AnswerResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

fn answer<'a>(
    uid: &'a str,
    phase: Phase,
    outcome: &'a Outcome,
) -> Result<Answer<'a>, ResponseError> {
    let mut resp = AnswerResponse {
        uid,
        allowed: outcome.is_allowed(),
        patch_type: None,
        patch: None,
        status: None,
        warnings: outcome.warnings(),
    };
    match outcome {
        Outcome::Allowed { patch, .. } => {
            if phase == Phase::Mutate && !patch.0.is_empty() {
                resp.patch_type = Some("JSONPatch");
                resp.patch = Some(encode_patch(patch)?);
            }
        }
        Outcome::Denied(d) => resp.status = Some(status(d)),
    }
    Ok(Answer {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: resp,
    })
}

/// An allowed answer, with the patch when there is one: what serde writes for [`Answer`],
/// without the detour.
fn allowed_body(uid: &str, patch: Option<&json_patch::Patch>) -> Vec<u8> {
    let patch = patch.filter(|p| !p.0.is_empty()).map(patch_json);
    // Sized once: the envelope, the uid (escapes are rare) and the patch's base64.
    let b64 = patch.as_ref().map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = Vec::with_capacity(160 + uid.len() + b64);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(API_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    json_string(&mut out, uid);
    out.extend_from_slice(b",\"allowed\":true");
    if let Some(patch) = patch {
        out.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
        base64_into(&mut out, &patch);
        out.push(b'"');
    }
    out.extend_from_slice(b"}}");
    out
}

/// The base64 alphabet (standard, RFC 4648 §4).
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The two base64 characters of each 12-bit value, as the bytes of a little-endian `u16`: three
/// input bytes make two lookups.
static BASE64_PAIRS: [u16; 4096] = {
    let mut t = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = u16::from_le_bytes([BASE64[i >> 6], BASE64[i & 63]]);
        i += 1;
    }
    t
};

/// Appends `bytes` base64-encoded (standard alphabet, padded), as the `base64` crate's
/// `STANDARD` engine writes them (tested). The patch is most of what an answer weighs: here six
/// bytes are read as one word and written as eight characters through four lookups in a table
/// of character pairs, ~1.2k instructions fewer than the crate's engine on the 4-NIC create's
/// patch (README, "callgrind instruction counts").
fn base64_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len().div_ceil(3) * 4, 0);
    let dst = &mut out[start..];
    // Six bytes at a time, each read through an eight-byte window (so while eight remain).
    let wide = bytes.len().checked_sub(8).map_or(0, |n| n / 6 + 1);
    let (octets, _) = dst[..wide * 8].as_chunks_mut::<8>();
    for (k, o) in octets.iter_mut().enumerate() {
        let window: [u8; 8] = bytes[k * 6..][..8].try_into().unwrap_or_default();
        let w = u64::from_be_bytes(window);
        let pair = |shift: u32| u64::from(BASE64_PAIRS[(w >> shift) as usize & 0xfff]);
        *o = (pair(52) | pair(40) << 16 | pair(28) << 32 | pair(16) << 48).to_le_bytes();
    }
    // The rest three bytes at a time, then the last one or two with `=` padding.
    let (quads, _) = dst[wide * 8..].as_chunks_mut::<4>();
    let (groups, rest) = bytes[wide * 6..].as_chunks::<3>();
    for (&[x, y, z], q) in groups.iter().zip(quads.iter_mut()) {
        let v = usize::from(x) << 16 | usize::from(y) << 8 | usize::from(z);
        let pair = |i: usize| u32::from(BASE64_PAIRS[i]);
        *q = (pair(v >> 12) | pair(v & 0xfff) << 16).to_le_bytes();
    }
    if let (Some(&x), Some(q)) = (rest.first(), quads.last_mut()) {
        let v = usize::from(x) << 16 | usize::from(rest.get(1).copied().unwrap_or(0)) << 8;
        let [a, b] = BASE64_PAIRS[v >> 12].to_le_bytes();
        let [c, _] = BASE64_PAIRS[v & 0xfff].to_le_bytes();
        *q = [a, b, if rest.len() == 2 { c } else { b'=' }, b'='];
    }
}

/// A JSON Patch as serde writes it (`{"op":…,"path":…,"value":…}`), with each operation
/// written by hand.
fn patch_json(patch: &json_patch::Patch) -> Vec<u8> {
    use json_patch::PatchOperation as Op;
    // Room for every operation: its path and value (a string with some escapes) and the rest.
    let room = patch.0.iter().map(|op| {
        let value = match op {
            Op::Add(o) => Some(&o.value),
            Op::Replace(o) => Some(&o.value),
            Op::Test(o) => Some(&o.value),
            _ => None,
        };
        let value = value.map_or(0, |v| v.as_str().map_or(64, |s| s.len() + s.len() / 4));
        48 + op.path().as_str().len() + value
    });
    let mut out = Vec::with_capacity(2 + room.sum::<usize>());
    out.push(b'[');
    for (i, op) in patch.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (name, from, path, value) = match op {
            Op::Add(o) => ("add", None, &o.path, Some(&o.value)),
            Op::Remove(o) => ("remove", None, &o.path, None),
            Op::Replace(o) => ("replace", None, &o.path, Some(&o.value)),
            Op::Move(o) => ("move", Some(&o.from), &o.path, None),
            Op::Copy(o) => ("copy", Some(&o.from), &o.path, None),
            Op::Test(o) => ("test", None, &o.path, Some(&o.value)),
        };
        out.extend_from_slice(b"{\"op\":\"");
        out.extend_from_slice(name.as_bytes());
        out.push(b'"');
        if let Some(from) = from {
            out.extend_from_slice(b",\"from\":");
            json_string(&mut out, from.as_str());
        }
        out.extend_from_slice(b",\"path\":");
        json_string(&mut out, path.as_str());
        if let Some(value) = value {
            out.extend_from_slice(b",\"value\":");
            match value {
                Value::String(s) => json_string(&mut out, s),
                // Writing into a Vec cannot fail.
                _ => drop(serde_json::to_writer(&mut out, value)),
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    out
}

/// A patch as the response carries it: its JSON, base64-encoded.
fn encode_patch<P: Serialize + ?Sized>(patch: &P) -> Result<String, ResponseError> {
    let bytes = serde_json::to_vec(patch).map_err(ResponseError::Patch)?;
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    base64_into(&mut out, &bytes);
    // Base64 is ASCII.
    Ok(out.into_iter().map(char::from).collect())
}

/// A denial as a Kubernetes `Status`: code and reason, the one-line message, and every cause
/// with its field path (`FieldValueInvalid` when malformed, else `FieldValueForbidden`).
fn status(d: &Denial) -> Status {
    let causes = d
        .causes
        .iter()
        .map(|c| StatusCause {
            reason: if c.rule == Rule::Malformed {
                "FieldValueInvalid"
            } else {
                "FieldValueForbidden"
            }
            .into(),
            message: c.message.clone(),
            field: c.field.clone(),
        })
        .collect();
    Status::failure(&d.message(), d.reason())
        .with_code(d.code)
        .with_details(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::MacRange;
    use crate::policy::Policy;
    use base64::Engine as _;
    use serde_json::json;

    fn patch() -> json_patch::Patch {
        serde_json::from_value(json!([{"op": "add", "path": "/metadata/labels", "value": {}}]))
            .unwrap()
    }

    #[test]
    fn allowed_answers_written_by_hand_are_the_bytes_serde_writes() {
        let every_op: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
             "value": "[{\"name\":\"a\",\"mac\":\"02:00:00:00:00:01\"}]\n\u{1}"},
            {"op": "replace", "path": "/spec/nics/0/mac", "value": "02:00:00:00:00:02"},
            {"op": "remove", "path": "/a~0b"},
            {"op": "move", "from": "/x", "path": "/y"},
            {"op": "copy", "from": "/x", "path": "/z"},
            {"op": "test", "path": "/n", "value": {"k": [1, 2.5, null, true]}},
        ]))
        .unwrap();
        let empty = json_patch::Patch(Vec::new());
        // Patch lengths of every remainder modulo 3 (each base64 padding).
        let small: Vec<json_patch::Patch> = ["", "a", "ab"]
            .iter()
            .map(|v| {
                serde_json::from_value(json!([{"op": "add", "path": "/a", "value": v}])).unwrap()
            })
            .collect();
        for (uid, phase, patch) in [
            ("u", Phase::Mutate, &small[0]),
            ("u", Phase::Mutate, &small[1]),
            ("u", Phase::Mutate, &small[2]),
            (
                "705ab4f5-6393-11e8-b7cc-42010a800002",
                Phase::Mutate,
                &every_op,
            ),
            ("u\"i\\d\n✓", Phase::Mutate, &every_op),
            ("u", Phase::Mutate, &empty),
            ("u", Phase::Validate, &every_op),
        ] {
            let outcome = Outcome::Allowed {
                patch: patch.clone(),
                warnings: Vec::new(),
            };
            let by_hand = response_body(uid, phase, &outcome).unwrap();
            let by_serde = serde_json::to_vec(&answer(uid, phase, &outcome).unwrap()).unwrap();
            assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }

    /// Every length up to 3 × 64 + 2 (each padding), every byte value: what the `base64`
    /// crate writes, appended after what the buffer held.
    #[test]
    fn base64_is_what_the_base64_crate_writes() {
        let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev().step_by(3)).collect();
        for len in 0..=194 {
            for from in [0, 61] {
                let input = &bytes[from..from + len];
                let mut out = b"prefix".to_vec();
                base64_into(&mut out, input);
                let want = base64::engine::general_purpose::STANDARD.encode(input);
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(
                    std::str::from_utf8(&out[6..]).unwrap(),
                    want,
                    "{len} from {from}"
                );
            }
        }
    }

    #[test]
    fn patch_only_on_mutate_and_only_when_non_empty() {
        let allowed = Outcome::Allowed {
            patch: patch(),
            warnings: vec!["w1".into()],
        };
        let m = response("u1", Phase::Mutate, &allowed).unwrap();
        assert_eq!(m["apiVersion"], API_VERSION);
        assert_eq!(m["kind"], "AdmissionReview");
        assert_eq!(m["response"]["uid"], "u1");
        assert_eq!(m["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(m["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<json_patch::Patch>(&bytes).unwrap(),
            patch()
        );
        assert_eq!(m["response"]["warnings"], json!(["w1"]));
        let v = response("u1", Phase::Validate, &allowed).unwrap();
        assert!(v["response"].get("patch").is_none() && v["response"].get("patchType").is_none());
        let empty = Outcome::Allowed {
            patch: json_patch::Patch(Vec::new()),
            warnings: vec![],
        };
        let e = response("u2", Phase::Mutate, &empty).unwrap();
        assert_eq!(e["response"], json!({"uid": "u2", "allowed": true}));
    }

    #[test]
    fn denials_carry_status_and_causes() {
        // Causes are made by the policy only: a malformed element and an unnamed NIC.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p",
            "annotations": {"k8s.v1.cni.cncf.io/networks": "[1, {\"name\": \"n\"}]"}}});
        let req = Request {
            operation: Operation::Create,
            dry_run: true,
            group: "",
            kind: "Pod",
            namespace: "ns",
            name: Some("p"),
            object: &pod,
            old_object: None,
        };
        let outcome = Policy::in_memory(MacRange::default_range()).validate(&req);
        let Outcome::Denied(mut denial) = outcome else {
            panic!("expected a denial: {outcome:?}")
        };
        denial.warnings = vec!["careful".into()];
        let (a, b) = (&denial.causes[0], &denial.causes[1]);
        assert!(
            a.rule == Rule::Malformed && b.rule == Rule::Names,
            "{a:?} {b:?}"
        );
        let r = response("u3", Phase::Mutate, &Outcome::Denied(denial.clone())).unwrap();
        let resp = &r["response"];
        assert_eq!(resp["allowed"], false);
        assert!(resp.get("patch").is_none());
        assert_eq!(resp["status"]["status"], "Failure");
        assert_eq!(resp["status"]["code"], 422);
        assert_eq!(resp["status"]["reason"], "Invalid");
        assert_eq!(
            resp["status"]["message"],
            format!("hotnic: {a}; {b}").as_str()
        );
        assert_eq!(
            resp["status"]["details"],
            json!({"causes": [
                {"field": a.field, "message": a.message, "reason": "FieldValueInvalid"},
                {"field": b.field, "message": b.message, "reason": "FieldValueForbidden"}
            ]})
        );
        assert_eq!(resp["warnings"], json!(["careful"]));
    }

    #[test]
    fn a_patch_that_cannot_be_serialised_is_an_error_not_an_empty_patch() {
        struct Unserialisable;
        impl Serialize for Unserialisable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let e = encode_patch(&Unserialisable).unwrap_err();
        assert!(matches!(e, ResponseError::Patch(_)), "{e:?}");
        assert!(
            e.to_string().contains("cannot serialise the JSON Patch"),
            "{e}"
        );
        assert_eq!(encode_patch(&patch()).unwrap(), {
            let bytes = serde_json::to_vec(&patch()).unwrap();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        });
    }

    #[test]
    fn parse_checks_the_envelope() {
        let ok = json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "ns",
            "operation": "CREATE", "object": {"kind": "Pod"}}});
        let r = Review::parse(ok.to_string().as_bytes()).unwrap();
        let req = r.as_request();
        assert_eq!(
            (req.kind, req.namespace, req.name, req.dry_run),
            ("Pod", "ns", None, false)
        );
        assert!(req.old_object.is_none());
        let bad = |edit: &dyn Fn(&mut Value)| {
            let mut v = ok.clone();
            edit(&mut v);
            Review::parse(v.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1")).contains("apiVersion")
        );
        assert!(bad(&|v| v["kind"] = json!("Nope")).contains("kind"));
        assert!(bad(&|v| v["request"] = Value::Null).contains("no request"));
        assert!(bad(&|v| v["request"]["uid"] = json!("")).contains("uid"));
        assert!(bad(&|v| v["request"]["operation"] = json!("PATCH")).contains("operation"));
        assert!(bad(&|v| v["request"]["uid"] = json!(7)).contains("not a valid AdmissionReview"));
        // request.kind is kube-core's GroupVersionKind: group, version and kind, as the API
        // server always sends them.
        assert!(
            bad(&|v| v["request"]["kind"] = json!({"kind": "Pod"}))
                .contains("not a valid AdmissionReview")
        );
        assert!(Review::parse(b"").is_err());
    }
}
