//! The cluster-wide allocator: claims are `MACAddress` objects, created if absent; a watch of
//! them feeds a compact local index ([`ClaimIndex`]) that candidates are picked from, so the
//! admission path makes one API write per new MAC and no list.
//!
//! Each replica picks next-fit from a cursor of its own. Two replicas whose cursors meet would
//! otherwise stay together: each one's next candidates are the ones the other has just claimed
//! and its watch has not brought yet, conflict after conflict (on a busy node, more in a row than
//! a review may meet). So a candidate the index had free that another object turns out to hold
//! sends this replica's cursor to a random place in the range, away from the other writer.

use super::crd::{self, MacAddress};
use crate::allocator::{
    AllocError, AllocFuture, ClaimError, ClaimIndex, ClaimRequest, MacAllocator, MacRange, Owner,
    Scope, ScopeMode,
};
use crate::model::Mac;
use crate::runtime::{Chain, Flag, Shutdown};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// An API call that did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("the API server did not answer within {0:?}")]
pub struct Timeout(pub Duration);

/// The `MACAddress`-backed allocator.
pub struct KubeAllocator {
    api: Api<MacAddress>,
    range: MacRange,
    mode: ScopeMode,
    cursor: AtomicU64,
    index: RwLock<ClaimIndex>,
    synced: Flag,
    timeout: Duration,
}

impl std::fmt::Debug for KubeAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAllocator")
            .field("range", &self.range)
            .field("mode", &self.mode)
            .field("synced", &self.synced.is_set())
            .field("claims", &self.held())
            .finish()
    }
}

fn store(action: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> AllocError {
    AllocError::Store {
        action,
        source: Box::new(e),
    }
}

/// A random address of `range`, as a cursor.
fn random_place(range: MacRange) -> u64 {
    range.start().to_u64() + rand::random_range(0..range.len())
}

/// Whether a kube error is the API's `code` (409, 404, 422…).
pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl KubeAllocator {
    /// An allocator over `range` keeping its claims through `client`; every API call is bounded
    /// by `timeout`. Not ready until [`KubeAllocator::watch`] has listed the claims once.
    pub fn new(client: kube::Client, range: MacRange, mode: ScopeMode, timeout: Duration) -> Self {
        KubeAllocator {
            api: Api::all(client),
            range,
            mode,
            cursor: AtomicU64::new(random_place(range)),
            index: RwLock::new(ClaimIndex::new(range)),
            synced: Flag::new(),
            timeout,
        }
    }

    /// Set once the claims have been listed (what readiness waits for).
    pub fn synced(&self) -> &Flag {
        &self.synced
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ClaimIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClaimIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, AllocError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| store(action, Timeout(self.timeout)))
    }

    /// Keeps the index in step with the `MACAddress` objects (a watch, relisted when it breaks,
    /// with kube-rs' backoff) until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: Shutdown) {
        let stream =
            watcher(self.api.clone(), watcher::Config::default().any_semantic()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut pending: Option<ClaimIndex> = None;
        let stop = shutdown.started();
        let mut stop = std::pin::pin!(stop);
        loop {
            let ev = tokio::select! {
                _ = &mut stop => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %Chain(&e), "watching MACAddress claims (retrying)");
                }
                Some(Ok(ev)) => self.apply(ev, &mut pending),
            }
        }
    }

    fn entry(claim: &MacAddress) -> Option<(Scope, Mac, u64)> {
        let Some((scope, mac)) = claim.key() else {
            tracing::debug!(name = ?claim.metadata.name, "a MACAddress whose spec does not parse");
            return None;
        };
        Some((scope, mac, claim.owner().fingerprint()))
    }

    fn apply(&self, ev: watcher::Event<MacAddress>, pending: &mut Option<ClaimIndex>) {
        match ev {
            watcher::Event::Init => *pending = Some(ClaimIndex::new(self.range)),
            watcher::Event::InitApply(c) => {
                if let (Some(p), Some((scope, mac, fp))) = (pending.as_mut(), Self::entry(&c)) {
                    let _ = p.insert(&scope, mac, fp);
                }
            }
            watcher::Event::InitDone => {
                if let Some(p) = pending.take() {
                    let n = p.len();
                    *self.write() = p;
                    if !self.synced.is_set() {
                        tracing::info!(claims = n, "MAC claims synced");
                    }
                    self.synced.set();
                }
            }
            watcher::Event::Apply(c) => {
                if let Some((scope, mac, fp)) = Self::entry(&c) {
                    let _ = self.write().insert(&scope, mac, fp);
                }
            }
            watcher::Event::Delete(c) => {
                if let Some((scope, mac, _)) = Self::entry(&c) {
                    self.write().remove(&scope, mac);
                }
            }
        }
    }

    /// Records a claim this replica just saw (its own create, or a conflicting one), before the
    /// watch brings it.
    fn learn(&self, scope: &Scope, mac: Mac, owner: &Owner) {
        let _ = self.write().insert(scope, mac, owner.fingerprint());
    }

    /// Sends the cursor to a random place in the range (see the module docs): the next
    /// candidates come from there, not from where another replica is claiming.
    fn move_away(&self) {
        self.cursor
            .store(random_place(self.range), Ordering::Relaxed);
    }

    async fn get(&self, name: &str) -> Result<Option<MacAddress>, AllocError> {
        self.bounded("read", self.api.get_opt(name))
            .await?
            .map_err(|e| store("read", e))
    }

    async fn claim_inner(&self, req: ClaimRequest<'_>) -> Result<(), ClaimError> {
        let name = crd::name(req.scope, req.mac);
        if req.dry_run {
            if !self.read().held_by_other(req.owner, req.scope, req.mac) {
                return Ok(());
            }
            return match self.get(&name).await? {
                Some(c) if !c.owner().same_object(req.owner) => Err(ClaimError::Conflict {
                    mac: req.mac,
                    holder: Box::new(c.owner()),
                }),
                _ => Ok(()),
            };
        }
        let body = MacAddress::new(req.scope, req.mac, req.nic, req.owner);
        // Free as far as the index knows: taken all the same means another writer the watch is
        // behind on is claiming right here.
        let looked_free = !self.read().held_by_other(req.owner, req.scope, req.mac);
        // A claim deleted between our create and our read is created again, once.
        for _ in 0..2 {
            match self
                .bounded("written", self.api.create(&PostParams::default(), &body))
                .await?
            {
                Ok(_) => {
                    self.learn(req.scope, req.mac, req.owner);
                    return Ok(());
                }
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(store("written", e).into()),
            }
            let Some(existing) = self.get(&name).await? else {
                continue;
            };
            let holder = existing.owner();
            self.learn(req.scope, req.mac, &holder);
            if !holder.same_object(req.owner) {
                if looked_free {
                    self.move_away();
                }
                return Err(ClaimError::Conflict {
                    mac: req.mac,
                    holder: Box::new(holder),
                });
            }
            if holder.uid.is_some() && holder.uid != req.owner.uid {
                // An older incarnation of the object under the same name held it: take it over.
                self.take_over(&existing, req.owner).await?;
            }
            return Ok(());
        }
        Err(store(
            "written",
            std::io::Error::other(format!("{name} was deleted while it was being claimed")),
        )
        .into())
    }

    async fn take_over(&self, existing: &MacAddress, owner: &Owner) -> Result<(), AllocError> {
        let name = existing.metadata.name.clone().unwrap_or_default();
        let mut new_owner = crd::ClaimOwner::from(owner);
        new_owner.token = new_owner.token.or(existing.spec.owner.token.clone());
        let patch = json!({
            "metadata": {"resourceVersion": existing.metadata.resource_version},
            "spec": {"owner": {"name": new_owner.name, "uid": new_owner.uid, "token": new_owner.token}},
        });
        self.bounded(
            "written",
            self.api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?
        .map(drop)
        .map_err(|e| store("written", e))
    }
}

impl MacAllocator for KubeAllocator {
    fn range(&self) -> MacRange {
        self.range
    }

    fn scope_mode(&self) -> ScopeMode {
        self.mode
    }

    fn candidate(&self, scope: &Scope, taken: &dyn Fn(Mac) -> bool) -> Result<Mac, AllocError> {
        if !self.synced.is_set() {
            return Err(AllocError::NotReady);
        }
        loop {
            let cursor = self.cursor.load(Ordering::Relaxed);
            let mac = self
                .read()
                .next_free(scope, cursor, taken)
                .ok_or(AllocError::Exhausted(self.range))?;
            // Next-fit, and no two concurrent requests of this replica (dry-runs included) get
            // the same candidate.
            let next = mac.to_u64() + 1;
            if self
                .cursor
                .compare_exchange(cursor, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(mac);
            }
        }
    }

    fn held_by_other(&self, owner: &Owner, scope: &Scope, mac: Mac) -> bool {
        self.read().held_by_other(owner, scope, mac)
    }

    fn holder<'a>(
        &'a self,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<Option<Owner>, AllocError>> {
        Box::pin(async move { Ok(self.get(&crd::name(scope, mac)).await?.map(|c| c.owner())) })
    }

    fn claim<'a>(&'a self, req: ClaimRequest<'a>) -> AllocFuture<'a, Result<(), ClaimError>> {
        Box::pin(self.claim_inner(req))
    }

    fn bind<'a>(
        &'a self,
        owner: &'a Owner,
        keys: &'a [(Scope, Mac)],
    ) -> AllocFuture<'a, Result<(), AllocError>> {
        Box::pin(async move {
            let mut failed = None;
            for (scope, mac) in keys {
                // One write, no read: the JSON Patch's `test` makes it apply only to this
                // object's own claim.
                let patch: json_patch::Patch = serde_json::from_value(json!([
                    {"op": "test", "path": "/spec/owner/token", "value": owner.token},
                    {"op": "add", "path": "/spec/owner/name", "value": owner.name},
                    {"op": "add", "path": "/spec/owner/uid", "value": owner.uid},
                ]))
                .map_err(|e| store("written", e))?;
                let name = crd::name(scope, *mac);
                let r = self
                    .bounded(
                        "written",
                        self.api
                            .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch)),
                    )
                    .await?;
                match r {
                    Ok(_) => self.learn(scope, *mac, owner),
                    // Not this object's claim (any more), or gone: nothing to bind.
                    Err(e) if is_status(&e, 404) || is_status(&e, 422) => {}
                    Err(e) => failed = Some(store("written", e)),
                }
            }
            failed.map_or(Ok(()), Err)
        })
    }

    fn release<'a>(
        &'a self,
        owner: &'a Owner,
        scope: &'a Scope,
        mac: Mac,
    ) -> AllocFuture<'a, Result<bool, AllocError>> {
        Box::pin(async move {
            let name = crd::name(scope, mac);
            let Some(c) = self.get(&name).await? else {
                return Ok(false);
            };
            if !c.owner().same_object(owner) {
                return Ok(false);
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: c.metadata.uid.clone(),
                    resource_version: c.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.bounded("written", self.api.delete(&name, &dp)).await? {
                Ok(_) => {
                    self.write().remove(scope, mac);
                    Ok(true)
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
                Err(e) => Err(store("written", e)),
            }
        })
    }

    fn is_ready(&self) -> bool {
        self.synced.is_set()
    }

    fn held(&self) -> usize {
        self.read().len()
    }

    fn held_in_range(&self) -> usize {
        self.read().in_range()
    }
}
