//! What `/readyz` answers: a set of named checks, each evaluated when asked. The process is ready
//! when every check passes; otherwise `/readyz` names each one that fails.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

type Probe = Box<dyn Fn() -> bool + Send + Sync>;

struct Check {
    unmet: &'static str,
    passes: Probe,
}

/// The readiness checks of a process. Clones share them.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<Vec<Check>>>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("unmet", &self.unmet())
            .finish()
    }
}

impl Readiness {
    /// No checks yet (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check: `passes` is asked on every `/readyz`; while it is false `/readyz` fails and
    /// says `unmet` (what is missing, e.g. `"certificates not loaded"`, `"shutting down"`).
    pub fn require(&self, unmet: &'static str, passes: impl Fn() -> bool + Send + Sync + 'static) {
        self.checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Check {
                unmet,
                passes: Box::new(passes),
            });
    }

    /// Adds a check that passes once `flag` is set.
    pub fn require_flag(&self, unmet: &'static str, flag: &Flag) {
        let flag = flag.clone();
        self.require(unmet, move || flag.is_set());
    }

    /// What fails now, in the order the checks were added (empty: ready).
    pub fn unmet(&self) -> Vec<&'static str> {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| !(c.passes)())
            .map(|c| c.unmet)
            .collect()
    }

    /// Whether every check passes.
    pub fn is_ready(&self) -> bool {
        self.unmet().is_empty()
    }
}

/// A condition one task sets and a readiness check reads (e.g. "the first pass is done"). Clones
/// share it.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    /// Not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets it.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes_and_failures_are_named_in_order() {
        let r = Readiness::new();
        assert!(r.is_ready());
        let loaded = Flag::new();
        let stopping = Arc::new(AtomicBool::new(false));
        r.require_flag("certificates not loaded", &loaded);
        r.require("shutting down", {
            let stopping = stopping.clone();
            move || !stopping.load(Ordering::SeqCst)
        });
        assert_eq!(r.unmet(), ["certificates not loaded"]);
        loaded.set();
        assert!(r.clone().is_ready());
        stopping.store(true, Ordering::SeqCst);
        assert_eq!(r.unmet(), ["shutting down"]);
    }
}
