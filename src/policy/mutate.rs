//! Mutations: MAC injection and the interface-capacity default.
use super::{Outcome, Policy, Request, Subject};

pub(super) fn run(_p: &Policy, _req: &Request<'_>, _s: &Subject) -> Outcome {
    Outcome::allow(Vec::new())
}
