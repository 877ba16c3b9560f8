//! One active repairer among the webhook replicas: a `coordination.k8s.io/v1` Lease, held by
//! renewing it well within its duration and taken over once it has expired (what client-go's
//! leader election does, without its callbacks). Every write is a replace with the
//! resourceVersion read, so two replicas never both win one round.
//!
//! Holding the lease only decides who runs the passes; a pass is correct without it (every repair
//! write has a precondition), so a pass that outlives a lost lease does no harm.

use super::repair::{PassReport, Repairer};
use crate::runtime::{Chain, Shutdown};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};

/// The lease one replica holds while it repairs.
#[derive(Debug, Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// The Lease `namespace/name`, held as `identity` for `duration` after each renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// Acquires or renews the lease: whether this replica holds it now.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if super::allocator::is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(0),
        );
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let age = now.duration_since(t.0);
            age.as_secs() >= 0 && age.unsigned_abs() >= held_for
        });
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !(mine || free || expired) {
            return Ok(false);
        }
        let mut lease = current;
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 }),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if super::allocator::is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Runs the repair loop until `shutdown`: every `duration / 3` the lease is acquired or renewed;
/// while it is held, a pass runs at once and then every `interval`. `on_pass` sees each pass's
/// report (metrics).
pub async fn run(
    repairer: Repairer,
    lock: LeaseLock,
    interval: Duration,
    shutdown: Shutdown,
    on_pass: impl Fn(&PassReport) + Send,
) {
    let tick = (lock.duration / 3).max(Duration::from_millis(100));
    let mut last: Option<Instant> = None;
    let stop = shutdown.started();
    let mut stop = std::pin::pin!(stop);
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(tick) => {}
            }
        }
        first = false;
        match lock.try_hold().await {
            Ok(true) => {
                if last.is_none_or(|t| t.elapsed() >= interval) {
                    last = Some(Instant::now());
                    let pass = tokio::select! {
                        _ = &mut stop => return,
                        r = repairer.pass() => r,
                    };
                    match pass {
                        Ok(report) => {
                            tracing::info!(claims = report.claims, workloads = report.workloads, done = ?report.done, duplicates = report.duplicates, "MAC claim repair pass");
                            on_pass(&report);
                        }
                        Err(e) => {
                            tracing::warn!(error = %Chain(&e), "MAC claim repair pass failed")
                        }
                    }
                }
            }
            Ok(false) => last = None,
            Err(e) => tracing::warn!(error = %Chain(&e), "MAC claim repair lease"),
        }
    }
}
