//! Finding a pod's network namespace: the [`NetnsResolver`] trait (the CRI runtime client
//! implements it too), the `--netns-path-template` implementation, and [`NetnsCache`], which asks
//! a resolver once per sandbox.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Which pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    /// `metadata.uid` (standalone manifests without one get `{namespace}_{name}`).
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The network namespace a pod's NICs are plugged into (its current sandbox's), as a resolver
/// finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetns {
    /// The namespace path (e.g. `/var/run/netns/cni-<uuid>`).
    pub path: PathBuf,
    /// The sandbox is stopped and its namespace closed: only DEL (with this old path) makes sense.
    pub closed: bool,
}

/// Why a pod's network namespace could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path a template names could not be checked (other than by not existing).
    #[error("network namespace {}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The CRI runtime could not tell.
    #[error(transparent)]
    Cri(#[from] crate::agent::cri::CriError),
}

/// The future a resolver returns.
pub type NetnsFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<PodNetns>, NetnsError>> + Send + 'a>>;

/// Resolves a pod to its sandbox network namespace; `Ok(None)`: no sandbox (yet).
pub trait NetnsResolver: Send + Sync {
    /// The pod's namespace, if it has a sandbox.
    fn netns<'a>(&'a self, pod: &'a PodRef) -> NetnsFuture<'a>;
}

/// `--netns-path-template`: `{namespace}`, `{name}` and `{uid}` are substituted; the path must exist.
#[derive(Debug, Clone)]
pub struct TemplateResolver {
    template: String,
}

/// The default template.
pub const DEFAULT_TEMPLATE: &str = "/run/netns/{namespace}_{name}";

impl TemplateResolver {
    /// A resolver for a template.
    pub fn new(template: impl Into<String>) -> Self {
        Self {
            template: template.into(),
        }
    }

    /// The path for a pod (whether or not it exists).
    pub fn path(&self, pod: &PodRef) -> PathBuf {
        PathBuf::from(
            self.template
                .replace("{namespace}", &pod.namespace)
                .replace("{name}", &pod.name)
                .replace("{uid}", &pod.uid),
        )
    }
}

impl NetnsResolver for TemplateResolver {
    fn netns<'a>(&'a self, pod: &'a PodRef) -> NetnsFuture<'a> {
        Box::pin(async move {
            let path = self.path(pod);
            match tokio::fs::metadata(&path).await {
                Ok(_) => Ok(Some(PodNetns {
                    path,
                    closed: false,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(NetnsError::Path { path, source }),
            }
        })
    }
}

/// What a namespace path is now: the device and inode of the namespace file it leads to (nsfs;
/// a bind mount such as `/var/run/netns/cni-<uuid>` or `/proc/<pid>/ns/net` both stat to it).
/// `None` when the path does not exist (the sandbox stopped, the namespace was removed).
fn identity(path: &Path) -> Option<(u64, u64)> {
    // A stat of a local tmpfs / procfs / nsfs path: it never waits on a device, so it runs inline.
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A resolver's answers, per pod, kept while the sandbox they name lives: a pod's network
/// namespace is looked up (a CRI `ListPodSandbox` + `PodSandboxStatus`) once per sandbox, not once
/// per reconcile.
///
/// Only open namespaces are kept, with the identity (device, inode) their path had when the
/// resolver named it. [`NetnsCache::resolve`] re-validates with a `stat` of that path: the same
/// identity means the same namespace, so the kept answer stands; a path that is gone or leads
/// elsewhere (containerd removes a stopped sandbox's `/var/run/netns/cni-<uuid>`; a new sandbox
/// gets a new path) asks the resolver again. "No sandbox yet", "stopped" and errors are never
/// kept: each attempt (they are retried with backoff) asks again.
pub struct NetnsCache {
    resolver: Arc<dyn NetnsResolver>,
    kept: Mutex<HashMap<String, Kept>>,
}

struct Kept {
    netns: PodNetns,
    identity: (u64, u64),
}

impl std::fmt::Debug for NetnsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsCache")
            .field("pods", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl NetnsCache {
    /// An empty cache in front of `resolver`.
    pub fn new(resolver: Arc<dyn NetnsResolver>) -> Self {
        Self {
            resolver,
            kept: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pod's namespace: the kept answer while its path still leads to the same namespace,
    /// else the resolver's (at most one resolver call).
    pub async fn resolve(&self, pod: &PodRef) -> Result<Option<PodNetns>, NetnsError> {
        if let Some(netns) = self.kept(&pod.uid) {
            return Ok(Some(netns));
        }
        let found = self.resolver.netns(pod).await;
        let keep = match &found {
            Ok(Some(n)) if !n.closed => identity(&n.path).map(|identity| Kept {
                netns: n.clone(),
                identity,
            }),
            _ => None,
        };
        match keep {
            Some(k) => self.lock().insert(pod.uid.clone(), k),
            None => self.lock().remove(&pod.uid),
        };
        found
    }

    /// The kept namespace of a pod, if its path still leads to the same namespace (a kept answer
    /// that no longer holds is dropped).
    fn kept(&self, uid: &str) -> Option<PodNetns> {
        let mut kept = self.lock();
        let k = kept.get(uid)?;
        if identity(&k.netns.path) == Some(k.identity) {
            return Some(k.netns.clone());
        }
        kept.remove(uid);
        None
    }

    /// Whether what is kept for the pod still holds: nothing kept, or its path still leads to the
    /// same namespace. A `stat`, never a resolver call.
    pub fn unchanged(&self, uid: &str) -> bool {
        let kept = self.lock();
        kept.get(uid)
            .is_none_or(|k| identity(&k.netns.path) == Some(k.identity))
    }

    /// Forgets a pod (it is gone).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A template resolver that counts its calls.
    struct Counting(TemplateResolver, AtomicUsize);

    impl NetnsResolver for Counting {
        fn netns<'a>(&'a self, pod: &'a PodRef) -> NetnsFuture<'a> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.netns(pod)
        }
    }

    #[tokio::test]
    async fn the_cache_asks_once_per_namespace_and_again_when_its_path_changes() {
        let d = tempfile::tempdir().unwrap();
        let counting = Arc::new(Counting(
            TemplateResolver::new(format!("{}/{{uid}}", d.path().display())),
            AtomicUsize::new(0),
        ));
        let calls = || counting.1.load(Ordering::SeqCst);
        let cache = NetnsCache::new(counting.clone());
        let pod = PodRef {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "p".into(),
        };
        let path = d.path().join("u1");
        // No namespace yet: asked every time, nothing kept.
        assert_eq!(cache.resolve(&pod).await.unwrap(), None);
        assert_eq!(cache.resolve(&pod).await.unwrap(), None);
        assert_eq!(calls(), 2);
        assert!(cache.unchanged("u1"));
        // Found once, then kept while the path is the same file.
        std::fs::write(&path, "").unwrap();
        let open = Some(PodNetns {
            path: path.clone(),
            closed: false,
        });
        for _ in 0..5 {
            assert_eq!(cache.resolve(&pod).await.unwrap(), open);
        }
        assert_eq!(calls(), 3);
        assert!(cache.unchanged("u1"));
        // Replaced by another file at the same path (a new namespace): asked again.
        let other = d.path().join("other");
        std::fs::write(&other, "").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(!cache.unchanged("u1"));
        assert_eq!(cache.resolve(&pod).await.unwrap(), open);
        assert_eq!(calls(), 4);
        // Gone: asked again (and not kept).
        std::fs::remove_file(&path).unwrap();
        assert!(!cache.unchanged("u1"));
        assert_eq!(cache.resolve(&pod).await.unwrap(), None);
        assert_eq!(calls(), 5);
        assert!(cache.unchanged("u1"));
        // Forgotten pods are asked for afresh.
        std::fs::write(&path, "").unwrap();
        cache.resolve(&pod).await.unwrap();
        cache.forget("u1");
        cache.resolve(&pod).await.unwrap();
        assert_eq!(calls(), 7);
    }

    #[tokio::test]
    async fn template_substitutes_and_checks_existence() {
        let d = tempfile::tempdir().unwrap();
        let t = TemplateResolver::new(format!(
            "{}/{{namespace}}_{{name}}-{{uid}}",
            d.path().display()
        ));
        let pod = PodRef {
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "p".into(),
        };
        assert_eq!(t.path(&pod), d.path().join("ns_p-u1"));
        let r: &dyn NetnsResolver = &t;
        assert_eq!(r.netns(&pod).await.unwrap(), None);
        std::fs::write(d.path().join("ns_p-u1"), "").unwrap();
        assert_eq!(
            r.netns(&pod).await.unwrap(),
            Some(PodNetns {
                path: d.path().join("ns_p-u1"),
                closed: false
            })
        );
    }
}
