//! Finding a pod's network namespace: the [`NetnsResolver`] trait (the CRI runtime client
//! implements it too) and the `--netns-path-template` implementation.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

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

/// A pod sandbox's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNetns {
    /// The namespace path (e.g. `/var/run/netns/cni-<uuid>`).
    pub path: PathBuf,
    /// The sandbox is stopped and its namespace closed: only DEL (with this old path) makes sense.
    pub closed: bool,
}

/// The future a resolver returns.
pub type NetnsFuture<'a> =
    Pin<Box<dyn Future<Output = anyhow::Result<Option<SandboxNetns>>> + Send + 'a>>;

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
                Ok(_) => Ok(Some(SandboxNetns {
                    path,
                    closed: false,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow::anyhow!("network namespace {}: {e}", path.display())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some(SandboxNetns {
                path: d.path().join("ns_p-u1"),
                closed: false
            })
        );
    }
}
