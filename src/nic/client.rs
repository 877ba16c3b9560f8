//! The cluster side: a kube-rs client from the user's kubeconfig (like kubectl: `--kubeconfig`,
//! `--context`, `-n`), reads, and patches sent with a bounded retry when another writer changed the
//! object between the read and the patch.

use super::args::{DryRun, KubeFlags};
use super::edit::{EditError, Plan};
use super::target::{Target, api_resource};
use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use serde_json::Value;

/// How many times an edit is read, rebuilt and sent before a conflict is reported.
pub const ATTEMPTS: u32 = 5;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// Bad command line (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The edit was not made (refused by hotnic's policy, no such NIC, ...).
    #[error("{0}")]
    Edit(#[from] EditError),
    /// The API server answered with an error (a webhook denial among them).
    #[error("{}", super::render::status(.0))]
    Api(Box<Status>),
    /// The kubeconfig, the connection, a file.
    #[error("{0}")]
    Other(String),
    /// Other writers kept changing the object; nothing of theirs was overwritten.
    #[error(
        "{target} kept changing while hotnic edited it ({attempts} attempts, last: {last}); nothing was changed and no other change was overwritten: try again"
    )]
    Conflict {
        /// The object.
        target: String,
        /// Attempts made.
        attempts: u32,
        /// The last answer.
        last: String,
    },
}

impl NicError {
    /// The exit status: 2 for usage errors, 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            NicError::Usage(_) | NicError::Edit(EditError::Usage(_)) => 2,
            _ => 1,
        }
    }
}

impl From<kube::Error> for NicError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => NicError::Api(s),
            other => NicError::Other(format!("talking to the API server: {other}")),
        }
    }
}

/// A connection to the cluster and the namespace commands work in.
#[derive(Clone)]
pub struct Session {
    /// The client.
    pub client: kube::Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Session {
    /// Connects as kubectl would: the kubeconfig from `--kubeconfig`, else `$KUBECONFIG`, else
    /// `~/.kube/config`; the context from `--context`, else its current-context.
    pub async fn connect(flags: &KubeFlags) -> Result<Session, NicError> {
        let kubeconfig = match &flags.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .map_err(|e| NicError::Other(format!("--kubeconfig {}: {e}", path.display()))),
            None => Kubeconfig::read().map_err(|e| {
                NicError::Other(format!(
                    "no kubeconfig ($KUBECONFIG or ~/.kube/config; or give --kubeconfig): {e}"
                ))
            }),
        }?;
        let options = KubeConfigOptions {
            context: flags.context.clone(),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| NicError::Other(format!("kubeconfig: {e}")))?;
        let namespace = flags
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| NicError::Other(format!("building the client: {e}")))?;
        Ok(Session { client, namespace })
    }

    fn api(&self, t: &Target) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &api_resource(t.kind))
    }

    /// The object as stored, as JSON (every field kept, Arktos' too).
    pub async fn get(&self, t: &Target) -> Result<Value, NicError> {
        let obj = self.api(t).get(&t.name).await?;
        serde_json::to_value(obj).map_err(|e| NicError::Other(e.to_string()))
    }

    /// Sends a JSON Patch (with `dryRun=All` when `dry_run`); the object as the API server
    /// admitted it.
    pub async fn patch(
        &self,
        t: &Target,
        patch: &json_patch::Patch,
        dry_run: bool,
    ) -> Result<Value, kube::Error> {
        let params = PatchParams {
            dry_run,
            ..Default::default()
        };
        let obj = self
            .api(t)
            .patch(&t.name, &params, &Patch::Json::<()>(patch.clone()))
            .await?;
        Ok(serde_json::to_value(obj).unwrap_or(Value::Null))
    }
}

/// Whether an API error means "the object changed since it was read": 409 Conflict, or a JSON
/// Patch whose `test` failed. For the latter the API server (v1.28) answers a bare 422 `Invalid`
/// with no causes ("the server rejected our request due to an error in our request"); a webhook's
/// 422 names the webhook, and a validation error lists its causes, so neither is taken for it.
pub fn is_stale(s: &Status) -> bool {
    let no_causes = s.details.as_ref().is_none_or(|d| d.causes.is_empty());
    s.code == 409
        || (s.code == 422 && no_causes && super::render::denying_webhook(&s.message).is_none())
}

/// Called before each patch is sent (tests use it to edit the object concurrently).
pub type BeforePatch = dyn Fn(u32) -> BoxFuture<'static, ()> + Send + Sync;

/// An edit as sent and admitted.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The plan of the attempt that went through.
    pub plan: Plan,
    /// The object as admitted: re-read after the patch, the dry-run answer for `--dry-run=server`,
    /// the edited object for `--dry-run=client`.
    pub object: Value,
    /// How many attempts it took.
    pub attempts: u32,
}

/// Reads the object, plans the edit with `build`, and sends it; on a stale read (the object
/// changed in between: the patch's `test` failed) reads again and rebuilds, up to [`ATTEMPTS`]
/// times. Never sends anything for `--dry-run=client`.
pub async fn apply(
    s: &Session,
    t: &Target,
    dry_run: DryRun,
    build: &(dyn Fn(&Value) -> Result<Plan, EditError> + Sync),
    before_patch: Option<&BeforePatch>,
) -> Result<Applied, NicError> {
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let obj = s.get(t).await?;
        let plan = build(&obj)?;
        if dry_run == DryRun::Client || plan.patch.0.is_empty() {
            let object = plan.edited.clone();
            return Ok(Applied {
                plan,
                object,
                attempts: attempt,
            });
        }
        if let Some(hook) = before_patch {
            hook(attempt).await;
        }
        match s.patch(t, &plan.patch, dry_run == DryRun::Server).await {
            Ok(answer) => {
                let object = if dry_run == DryRun::Server {
                    answer
                } else {
                    s.get(t).await?
                };
                return Ok(Applied {
                    plan,
                    object,
                    attempts: attempt,
                });
            }
            Err(kube::Error::Api(st)) if is_stale(&st) => {
                last = format!("{} ({})", st.message, st.code);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(NicError::Conflict {
        target: t.to_string(),
        attempts: ATTEMPTS,
        last,
    })
}
