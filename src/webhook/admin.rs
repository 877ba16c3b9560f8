//! The webhook's admin endpoints (`/livez`, `/readyz`, `/metrics`): its readiness checks and its
//! metrics, on the runtime's admin router ([`crate::runtime::admin`]).

use super::routes::AppState;
use super::tls::CertStore;
use crate::runtime::{Readiness, admin};
use axum::Router;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The webhook's readiness: certificates loaded (`certs` given), the MAC allocator ready, and not
/// shutting down (neither stopping nor draining).
pub fn readiness(app: &Arc<AppState>, certs: Option<&Arc<CertStore>>) -> Readiness {
    let r = Readiness::new();
    let loaded = certs.is_some();
    r.require("certificates not loaded", move || loaded);
    // With --allocator kubernetes: until the MACAddress claims have been listed.
    r.require("MAC allocator not ready (claims not synced)", {
        let app = app.clone();
        move || app.policy.allocator().is_ready()
    });
    r.require("shutting down", {
        let app = app.clone();
        move || !app.stopping.load(Ordering::Relaxed) && !app.draining.load(Ordering::Relaxed)
    });
    r
}

/// The admin router: ready only once certificates are loaded (`certs` given), the allocator is
/// ready and the server is not shutting down; `/metrics` refreshes the MAC and certificate
/// gauges before it answers.
pub fn router(app: Arc<AppState>, certs: Option<Arc<CertStore>>) -> Router {
    admin::router(readiness(&app, certs.as_ref()), move || {
        let m = &app.metrics;
        m.observe_allocator(app.policy.allocator().as_ref());
        if let Some(c) = &certs {
            m.cert_not_after.set(c.info().not_after);
        }
        m.encode()
    })
}
