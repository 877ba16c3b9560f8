//! Reading Pod and NetworkAttachmentDefinition manifests from a directory (standalone mode).

use crate::model::NetworkRef;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a directory scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Pod objects, in file order.
    pub pods: Vec<Value>,
    /// NetworkAttachmentDefinition `spec.config` by network, or why it is unusable.
    pub nads: BTreeMap<NetworkRef, Result<String, String>>,
    /// Files that could not be read or parsed (pod deletions are not trusted while any exist).
    pub bad_files: Vec<(PathBuf, String)>,
}

impl Scan {
    /// The config of a network, or why there is none.
    pub fn config(&self, net: &NetworkRef) -> Result<String, String> {
        self.nads
            .get(net)
            .cloned()
            .unwrap_or_else(|| Err(format!("NetworkAttachmentDefinition {net} not found")))
    }
}

/// Reads every `*.yaml`, `*.yml`, `*.json` file directly in `dir` (not `dir/status`).
pub async fn scan(dir: &Path) -> anyhow::Result<Scan> {
    let mut out = Scan::default();
    let mut files = Vec::new();
    let mut rd = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| anyhow::anyhow!("reading pods dir {}: {e}", dir.display()))?;
    while let Some(ent) = rd.next_entry().await? {
        let p = ent.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && matches!(ext, "yaml" | "yml" | "json") && ent.file_type().await?.is_file() {
            files.push(p);
        }
    }
    files.sort();
    for f in files {
        let text = match tokio::fs::read_to_string(&f).await {
            Ok(t) => t,
            Err(e) => {
                out.bad_files.push((f, e.to_string()));
                continue;
            }
        };
        match parse_documents(&f, &text) {
            Ok(docs) => {
                for d in docs {
                    add_object(&mut out, d);
                }
            }
            Err(e) => out.bad_files.push((f, e)),
        }
    }
    Ok(out)
}

fn parse_documents(f: &Path, text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    if f.extension().and_then(|e| e.to_str()) == Some("json") {
        docs.push(serde_json::from_str::<Value>(text).map_err(|e| e.to_string())?);
    } else {
        for d in serde_yaml::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(d).map_err(|e| e.to_string())?;
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

fn add_object(out: &mut Scan, obj: Value) {
    match obj.get("kind").and_then(Value::as_str) {
        Some("Pod") => out.pods.push(obj),
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
                Some(other) => Err(format!(
                    "NetworkAttachmentDefinition {net}: spec.config must be a CNI JSON string, not {other}"
                )),
                None => Err(format!(
                    "NetworkAttachmentDefinition {net} has no spec.config"
                )),
            };
            out.nads.insert(net, config);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = scan(d.path()).await.unwrap();
        assert_eq!(s.pods.len(), 2);
        let n1 = NetworkRef {
            namespace: "ns".into(),
            name: "n1".into(),
        };
        assert_eq!(s.config(&n1), Ok("{\"name\":\"n1\"}".to_string()));
        let n2 = NetworkRef {
            namespace: "default".into(),
            name: "n2".into(),
        };
        assert!(
            s.config(&n2)
                .unwrap_err()
                .contains("must be a CNI JSON string")
        );
        let missing = NetworkRef {
            namespace: "x".into(),
            name: "y".into(),
        };
        assert!(s.config(&missing).unwrap_err().contains("x/y not found"));
        assert_eq!(s.bad_files.len(), 1);
        assert!(s.bad_files[0].0.ends_with("bad.json"));
    }
}
