//! Why something is denied: a field path, a message that says what to do instead, and the rule.
//!
//! Only the policy makes causes: [`Cause`] has a private field, so it can be built nowhere but
//! through [`Cause::new`], which is visible inside `src/policy/` only. Readers record
//! [`Finding`](crate::model::Finding)s instead, which the policy judges.

use crate::model::Rule;
use std::fmt;

/// One reason for a denial.
// `#[non_exhaustive]` would seal construction outside the crate only; the private field seals it
// outside this module, i.e. to the policy.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Clone, PartialEq, Eq)]
pub struct Cause {
    /// The field it is about, e.g. `spec.nics[1].portId`.
    pub field: String,
    /// What is wrong and what to do instead.
    pub message: String,
    /// The rule that found it.
    pub rule: Rule,
    /// Private: seals construction to [`Cause::new`].
    _sealed: (),
}

impl Cause {
    /// Builds a cause (the policy's only way to deny).
    pub(in crate::policy) fn new(
        rule: Rule,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Cause {
            field: field.into(),
            message: message.into(),
            rule,
            _sealed: (),
        }
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cause")
            .field("field", &self.field)
            .field("message", &self.message)
            .field("rule", &self.rule)
            .finish()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
