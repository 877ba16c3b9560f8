//! The rules.
use super::{Policy, Request, Subject};
use crate::model::Cause;

pub(super) fn check(_p: &Policy, _req: &Request<'_>, _s: &Subject) -> Vec<Cause> {
    Vec::new()
}

pub(super) fn warnings(_s: &Subject) -> Vec<String> {
    Vec::new()
}
