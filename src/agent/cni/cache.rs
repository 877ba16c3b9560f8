//! The result cache (like libcni's `/var/lib/cni/results`): one file per attachment, keyed by
//! (pod uid, ifname), holding the exact config, runtime args and result of the ADD. Written
//! atomically (temp file, fsync, rename, fsync dir). An entry is written `InProgress` before ADD
//! and `Added` (with the result) before success is reported, so a restart can always tell a
//! finished plug from a half-done one, and DEL always uses what ADD used.

use super::error::CacheError;
use crate::agent::netns::PodRef;
use crate::model::NetworkRef;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Where an attachment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheState {
    /// ADD was started and not known to have finished: roll back with DEL.
    InProgress,
    /// ADD succeeded (or an existing interface was adopted).
    Added,
}

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// Always `hotnicCacheV1`.
    pub kind: String,
    /// The pod.
    pub pod_uid: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` used by ADD.
    pub netns: String,
    /// The NetworkAttachmentDefinition namespace.
    pub network_namespace: String,
    /// The NetworkAttachmentDefinition name.
    pub network_name: String,
    /// The CNI config text used (NetworkAttachmentDefinition `spec.config` at ADD time).
    pub config: String,
    /// `CNI_ARGS` pairs used.
    pub cni_args: Vec<(String, String)>,
    /// Capability args used (`mac`, `ips`).
    pub capability_args: Map<String, Value>,
    /// The MAC asked for, if any.
    pub mac: Option<String>,
    /// Arktos port ID, if any.
    pub port_id: Option<String>,
    /// Progress.
    pub state: CacheState,
    /// The ADD result (absent while in progress, or for an adopted interface).
    pub result: Option<Value>,
    /// Whether the interface was found in place and adopted rather than plugged by this agent run.
    #[serde(default)]
    pub adopted: bool,
    /// For a VM pod's NIC: the domain, tap and bridge it is (being) attached through. Written
    /// before any of them is made, so an unplug after a restart removes exactly these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<crate::agent::vm::VmPort>,
}

impl CacheEntry {
    /// The pod this entry belongs to.
    pub fn pod(&self) -> PodRef {
        PodRef {
            uid: self.pod_uid.clone(),
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
        }
    }

    /// The network it attaches to.
    pub fn network(&self) -> NetworkRef {
        NetworkRef {
            namespace: self.network_namespace.clone(),
            name: self.network_name.clone(),
        }
    }
}

/// The cache directory: `<state-dir>/cache/<pod uid>/<ifname>.json`.
#[derive(Debug, Clone)]
pub struct ResultCache {
    root: PathBuf,
}

/// Whether a string is safe as one path component (pod uid, ifname).
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A file system error of `op` on `path`.
fn io(op: &'static str, path: &Path, source: std::io::Error) -> CacheError {
    CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A JSON error of `op` on `path`.
fn json(op: &'static str, path: &Path, source: serde_json::Error) -> CacheError {
    CacheError::Json {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl ResultCache {
    /// A cache under `state_dir` (created on first write).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("cache"),
        }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pod_dir(&self, uid: &str) -> Result<PathBuf, CacheError> {
        if !safe_component(uid) {
            return Err(CacheError::BadUid {
                uid: uid.to_string(),
            });
        }
        Ok(self.root.join(uid))
    }

    fn file(&self, uid: &str, ifname: &str) -> Result<PathBuf, CacheError> {
        if !safe_component(ifname) {
            return Err(CacheError::BadIfname {
                ifname: ifname.to_string(),
            });
        }
        Ok(self.pod_dir(uid)?.join(format!("{ifname}.json")))
    }

    /// Writes an entry atomically and durably.
    pub async fn put(&self, e: &CacheEntry) -> Result<(), CacheError> {
        let dir = self.pod_dir(&e.pod_uid)?;
        let path = self.file(&e.pod_uid, &e.ifname)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|x| io("creating", &dir, x))?;
        let bytes = serde_json::to_vec_pretty(e).map_err(|x| json("encoding", &path, x))?;
        let tmp = dir.join(format!(".{}.tmp-{}", e.ifname, rand::random::<u32>()));
        let write = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut f, &bytes).await?;
            f.sync_all().await?;
            drop(f);
            tokio::fs::rename(&tmp, &path).await?;
            tokio::fs::File::open(&dir).await?.sync_all().await
        };
        if let Err(x) = write.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io("writing", &path, x));
        }
        Ok(())
    }

    /// Reads one entry (`None` when absent).
    pub async fn get(&self, uid: &str, ifname: &str) -> Result<Option<CacheEntry>, CacheError> {
        let path = self.file(uid, ifname)?;
        match tokio::fs::read(&path).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|x| json("decoding", &path, x)),
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(x) => Err(io("reading", &path, x)),
        }
    }

    /// Every entry of a pod, sorted by ifname.
    pub async fn list(&self, uid: &str) -> Result<Vec<CacheEntry>, CacheError> {
        let dir = self.pod_dir(uid)?;
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(x) => return Err(io("listing", &dir, x)),
        };
        while let Some(ent) = rd.next_entry().await.map_err(|x| io("listing", &dir, x))? {
            let name = ent.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = ent.path();
            let b = tokio::fs::read(&path)
                .await
                .map_err(|x| io("reading", &path, x))?;
            out.push(serde_json::from_slice(&b).map_err(|x| json("decoding", &path, x))?);
        }
        out.sort_by(|a: &CacheEntry, b| a.ifname.cmp(&b.ifname));
        Ok(out)
    }

    /// The uids of every pod with cache entries.
    pub async fn pods(&self) -> Result<Vec<String>, CacheError> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&self.root).await {
            Ok(rd) => rd,
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(x) => return Err(io("listing", &self.root, x)),
        };
        while let Some(ent) = rd
            .next_entry()
            .await
            .map_err(|x| io("listing", &self.root, x))?
        {
            let name = ent.file_name().to_string_lossy().to_string();
            if safe_component(&name) && ent.path().is_dir() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes an entry (and the pod's directory once empty).
    pub async fn remove(&self, uid: &str, ifname: &str) -> Result<(), CacheError> {
        let path = self.file(uid, ifname)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(x) if x.kind() == std::io::ErrorKind::NotFound => {}
            Err(x) => return Err(io("removing", &path, x)),
        }
        let dir = self.pod_dir(uid)?;
        if self.list(uid).await?.is_empty() {
            // Stray temp files from a crash mid-write are garbage once no entry is left.
            if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
                while let Ok(Some(ent)) = rd.next_entry().await {
                    let _ = tokio::fs::remove_file(ent.path()).await;
                }
            }
            let _ = tokio::fs::remove_dir(&dir).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str, ifname: &str) -> CacheEntry {
        CacheEntry {
            kind: "hotnicCacheV1".into(),
            pod_uid: uid.into(),
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            ifname: ifname.into(),
            container_id: uid.into(),
            netns: "/run/netns/x".into(),
            network_namespace: "ns".into(),
            network_name: "n".into(),
            config: "{}".into(),
            cni_args: vec![],
            capability_args: Map::new(),
            mac: None,
            port_id: None,
            state: CacheState::InProgress,
            result: None,
            adopted: false,
            vm: None,
        }
    }

    #[tokio::test]
    async fn put_get_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path());
        assert!(c.get("u1", "eth1").await.unwrap().is_none());
        let mut e = entry("u1", "eth1");
        c.put(&e).await.unwrap();
        e.state = CacheState::Added;
        c.put(&e).await.unwrap();
        c.put(&entry("u1", "eth2")).await.unwrap();
        assert_eq!(
            c.get("u1", "eth1").await.unwrap().unwrap().state,
            CacheState::Added
        );
        assert_eq!(c.list("u1").await.unwrap().len(), 2);
        assert_eq!(c.pods().await.unwrap(), vec!["u1"]);
        c.remove("u1", "eth1").await.unwrap();
        c.remove("u1", "eth2").await.unwrap();
        assert!(c.pods().await.unwrap().is_empty());
        assert!(!c.root().join("u1").exists());
    }

    #[tokio::test]
    async fn unsafe_keys_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let c = ResultCache::new(d.path());
        assert!(c.put(&entry("../x", "eth1")).await.is_err());
        assert!(c.get("u", "a/b").await.is_err());
    }
}
