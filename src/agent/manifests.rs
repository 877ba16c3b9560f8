//! Reading Pod and NetworkAttachmentDefinition manifests from a directory (standalone mode), again
//! and again: [`Dir::rescan`] reads only the files whose `stat` changed (or that changed so
//! recently that a same-size rewrite within one timestamp tick could hide) and reports which pods
//! and networks changed.

use super::desired::{self, NetworkError};
use crate::model::NetworkRef;
use crate::runtime::Chain;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A file modified less than this long ago is read again even when its `stat` looks unchanged:
/// timestamps are coarse, so two writes of the same size within one tick look alike.
const RACY: Duration = Duration::from_secs(2);

/// Why the directory could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("reading pods dir {}", dir.display())]
pub struct ReadDirError {
    /// The directory.
    pub dir: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

/// Why a manifest file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It could not be read.
    #[error("reading it")]
    Read(#[source] std::io::Error),
    /// It is not UTF-8 text.
    #[error("not UTF-8")]
    Utf8(#[source] std::str::Utf8Error),
    /// A `*.json` file that is not JSON.
    #[error("not JSON")]
    Json(#[source] serde_json::Error),
    /// A `*.yaml` or `*.yml` file that is not YAML.
    #[error("not YAML")]
    Yaml(#[source] serde_yaml::Error),
}

/// What `stat` says about a file; a change means it must be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A manifest file as last read.
#[derive(Debug)]
struct File {
    stamp: Stamp,
    /// A hash of the bytes last read (`None`: they could not be read).
    content: Option<u64>,
    /// Its objects as last read successfully (kept while it is unreadable).
    objects: Vec<Value>,
    /// Why it cannot be read or parsed now, with every cause (to report each new reason once).
    error: Option<String>,
}

/// What changed since the previous [`Dir::rescan`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Pods that are new or whose object changed.
    pub applied: Vec<Value>,
    /// Pods that are gone (only reported while every file is readable; until then they are kept).
    pub deleted: Vec<Value>,
    /// Networks whose config changed, appeared or went.
    pub networks: Vec<NetworkRef>,
    /// Files that became unreadable, or unreadable for another reason: (file, why).
    pub newly_bad: Vec<(PathBuf, ManifestError)>,
}

/// The pods directory as last read.
#[derive(Debug, Default)]
pub struct Dir {
    files: BTreeMap<PathBuf, File>,
    pods: HashMap<String, Value>,
    nads: BTreeMap<NetworkRef, Result<String, NetworkError>>,
}

impl Dir {
    /// Reads what changed in `dir`: every `*.yaml`, `*.yml`, `*.json` file directly in it (not
    /// `dir/status`, not hidden files) whose `stat` changed is read again, and the pods and
    /// networks of all files are compared with the previous scan's.
    pub async fn rescan(&mut self, dir: &Path) -> Result<Changes, ReadDirError> {
        let err = |source| ReadDirError {
            dir: dir.to_path_buf(),
            source,
        };
        let now = SystemTime::now();
        let mut seen = HashSet::new();
        let mut changed = false;
        let mut newly_bad = Vec::new();
        let mut rd = tokio::fs::read_dir(dir).await.map_err(err)?;
        while let Some(ent) = rd.next_entry().await.map_err(err)? {
            let p = ent.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden || !matches!(ext, "yaml" | "yml" | "json") {
                continue;
            }
            // Not following symlinks, as before: only regular files are manifests.
            let Ok(md) = ent.metadata().await else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            seen.insert(p.clone());
            let stamp = Stamp::of(&md);
            let recent = md
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_none_or(|age| age < RACY);
            if !recent && self.files.get(&p).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let (content, parsed) = match tokio::fs::read(&p).await {
                Ok(bytes) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    bytes.hash(&mut h);
                    let content = h.finish();
                    if let Some(f) = self.files.get_mut(&p)
                        && f.content == Some(content)
                    {
                        f.stamp = stamp;
                        continue;
                    }
                    let parsed = match std::str::from_utf8(&bytes) {
                        Ok(text) => parse_documents(&p, text),
                        Err(e) => Err(ManifestError::Utf8(e)),
                    };
                    (Some(content), parsed)
                }
                Err(e) => (None, Err(ManifestError::Read(e))),
            };
            changed = true;
            let f = self.files.entry(p.clone()).or_insert_with(|| File {
                stamp,
                content: None,
                objects: Vec::new(),
                error: None,
            });
            f.stamp = stamp;
            f.content = content;
            match parsed {
                Ok(objects) => {
                    f.objects = objects;
                    f.error = None;
                }
                Err(e) => {
                    let why = Chain(&e).to_string();
                    if f.error.as_ref() != Some(&why) {
                        newly_bad.push((p, e));
                    }
                    f.error = Some(why);
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        changed |= self.files.len() != before;
        let mut out = Changes {
            newly_bad,
            ..Changes::default()
        };
        if !changed {
            return Ok(out);
        }
        let mut pods = HashMap::new();
        let mut nads = BTreeMap::new();
        for f in self.files.values() {
            for obj in &f.objects {
                add_object(&mut pods, &mut nads, obj);
            }
        }
        for (uid, v) in &pods {
            if self.pods.get(uid) != Some(v) {
                out.applied.push(v.clone());
            }
        }
        let complete = self.complete();
        for (uid, v) in std::mem::take(&mut self.pods) {
            if let std::collections::hash_map::Entry::Vacant(e) = pods.entry(uid) {
                if complete {
                    out.deleted.push(v);
                } else {
                    // Maybe only unreadable for now: not deleted until every file reads.
                    e.insert(v);
                }
            }
        }
        for net in self.nads.keys().chain(nads.keys()) {
            if self.nads.get(net) != nads.get(net) && !out.networks.contains(net) {
                out.networks.push(net.clone());
            }
        }
        self.pods = pods;
        self.nads = nads;
        Ok(out)
    }

    /// Whether every file could be read at the last scan (pod deletions are trusted only then).
    pub fn complete(&self) -> bool {
        self.files.values().all(|f| f.error.is_none())
    }

    /// The keys ([`desired::pod_ref`]'s uid) of every pod known.
    pub fn pod_uids(&self) -> HashSet<String> {
        self.pods.keys().cloned().collect()
    }

    /// NetworkAttachmentDefinition `spec.config` by network, or why it is unusable.
    pub fn nads(&self) -> &BTreeMap<NetworkRef, Result<String, NetworkError>> {
        &self.nads
    }
}

/// The config of a network, or why there is none.
pub fn config(
    nads: &BTreeMap<NetworkRef, Result<String, NetworkError>>,
    net: &NetworkRef,
) -> Result<String, NetworkError> {
    nads.get(net)
        .cloned()
        .unwrap_or_else(|| Err(NetworkError::NotFound(net.clone())))
}

fn parse_documents(f: &Path, text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut docs = Vec::new();
    if f.extension().and_then(|e| e.to_str()) == Some("json") {
        docs.push(serde_json::from_str::<Value>(text).map_err(ManifestError::Json)?);
    } else {
        for d in serde_yaml::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(d).map_err(ManifestError::Yaml)?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    let mut out = Vec::new();
    for d in docs {
        if d.get("kind").and_then(Value::as_str) == Some("List") {
            out.extend(
                d.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        } else {
            out.push(d);
        }
    }
    Ok(out)
}

fn add_object(
    pods: &mut HashMap<String, Value>,
    nads: &mut BTreeMap<NetworkRef, Result<String, NetworkError>>,
    obj: &Value,
) {
    match obj.get("kind").and_then(Value::as_str) {
        Some("Pod") => {
            if let Some(p) = desired::pod_ref(obj) {
                pods.insert(p.uid, obj.clone());
            }
        }
        Some("NetworkAttachmentDefinition") => {
            let meta = obj.get("metadata");
            let s = |k: &str| {
                meta.and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            let Some(name) = s("name") else { return };
            let net = NetworkRef {
                namespace: s("namespace").unwrap_or("default").to_string(),
                name: name.to_string(),
            };
            let config = match obj.get("spec").and_then(|s| s.get("config")) {
                Some(Value::String(c)) => Ok(c.clone()),
                Some(other) => Err(NetworkError::ConfigNotAString {
                    net: net.clone(),
                    value: other.to_string(),
                }),
                None => Err(NetworkError::NoConfig(net.clone())),
            };
            nads.insert(net, config);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[Value]) -> Vec<&str> {
        let mut n: Vec<&str> = v
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        n.sort();
        n
    }

    #[tokio::test]
    async fn reads_kinds_from_yaml_json_lists_and_reports_bad_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("a.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\n---\n\
             apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\n\
             metadata: {name: n1, namespace: ns}\nspec: {config: '{\"name\":\"n1\"}'}\n---\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("b.json"),
            r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p2"}},{"kind":"Service"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("c.yml"),
            "kind: NetworkAttachmentDefinition\nmetadata: {name: n2}\nspec: {config: {}}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("bad.json"), "{").unwrap();
        std::fs::write(d.path().join(".hidden.json"), "{").unwrap();
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        let mut dir = Dir::default();
        let ch = dir.rescan(d.path()).await.unwrap();
        assert_eq!(names(&ch.applied), ["p1", "p2"]);
        assert_eq!(
            dir.pod_uids(),
            HashSet::from(["default_p1".to_string(), "default_p2".to_string()])
        );
        let n1 = NetworkRef {
            namespace: "ns".into(),
            name: "n1".into(),
        };
        assert_eq!(config(dir.nads(), &n1), Ok("{\"name\":\"n1\"}".to_string()));
        let n2 = NetworkRef {
            namespace: "default".into(),
            name: "n2".into(),
        };
        assert!(
            config(dir.nads(), &n2)
                .unwrap_err()
                .to_string()
                .contains("must be a CNI JSON string")
        );
        let missing = NetworkRef {
            namespace: "x".into(),
            name: "y".into(),
        };
        assert!(
            config(dir.nads(), &missing)
                .unwrap_err()
                .to_string()
                .contains("x/y not found")
        );
        assert_eq!(ch.newly_bad.len(), 1);
        assert!(ch.newly_bad[0].0.ends_with("bad.json"));
        assert!(!dir.complete());
        // The same unreadable file is not reported again.
        assert!(dir.rescan(d.path()).await.unwrap().newly_bad.is_empty());
    }

    /// Sets a file's modification time into the past, so it is not "recently modified".
    fn age(path: &Path) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
    }

    fn pod(name: &str, label: &str) -> String {
        format!(
            r#"{{"kind":"Pod","metadata":{{"name":"{name}","uid":"u-{name}","labels":{{"l":"{label}"}}}}}}"#
        )
    }

    #[tokio::test]
    async fn rescans_report_only_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, nad) = (
            d.path().join("a.json"),
            d.path().join("b.json"),
            d.path().join("nad.yaml"),
        );
        std::fs::write(&a, pod("a", "1")).unwrap();
        std::fs::write(&b, pod("b", "1")).unwrap();
        std::fs::write(
            &nad,
            "kind: NetworkAttachmentDefinition\nmetadata: {name: n}\nspec: {config: one}\n",
        )
        .unwrap();
        for f in [&a, &b, &nad] {
            age(f);
        }
        let mut dir = Dir::default();
        let ch = dir.rescan(d.path()).await.unwrap();
        assert_eq!(names(&ch.applied), ["a", "b"]);
        assert_eq!(ch.networks.len(), 1);
        // Nothing changed: nothing reported.
        let ch = dir.rescan(d.path()).await.unwrap();
        assert!(ch.applied.is_empty() && ch.deleted.is_empty() && ch.networks.is_empty());
        // One file rewritten: only its pod.
        std::fs::write(&b, pod("b", "2")).unwrap();
        let ch = dir.rescan(d.path()).await.unwrap();
        assert_eq!(names(&ch.applied), ["b"]);
        // Rewritten with the same bytes: nothing.
        std::fs::write(&b, pod("b", "2")).unwrap();
        assert!(dir.rescan(d.path()).await.unwrap().applied.is_empty());
        // A network's config changed.
        std::fs::write(
            &nad,
            "kind: NetworkAttachmentDefinition\nmetadata: {name: n}\nspec: {config: two}\n",
        )
        .unwrap();
        let ch = dir.rescan(d.path()).await.unwrap();
        assert!(ch.applied.is_empty());
        assert_eq!(ch.networks[0].name, "n");
        // A pod file removed while another file is unreadable: the deletion waits.
        std::fs::write(&nad, "{").unwrap();
        std::fs::remove_file(&a).unwrap();
        let ch = dir.rescan(d.path()).await.unwrap();
        assert!(ch.deleted.is_empty() && !dir.complete());
        assert!(dir.pod_uids().contains("u-a"));
        // Readable again: now the pod is gone.
        std::fs::write(
            &nad,
            "kind: NetworkAttachmentDefinition\nmetadata: {name: n}\nspec: {config: two}\n",
        )
        .unwrap();
        let ch = dir.rescan(d.path()).await.unwrap();
        assert_eq!(names(&ch.deleted), ["a"]);
        assert!(dir.complete());
        assert_eq!(dir.pod_uids(), HashSet::from(["u-b".to_string()]));
    }
}
