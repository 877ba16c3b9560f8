//! A small kustomize renderer for the features hotnic's manifests use: `resources` (files and
//! kustomization directories), `labels` (metadata only), `images`, `secretGenerator` (files,
//! stable names) and `patches` (JSON 6902 with a target). Anything else in a kustomization is
//! an error (the struct denies unknown fields), so the manifests cannot silently outgrow it.
//! Like kustomize, files must lie at or below the kustomization's directory (load restrictor);
//! other kustomization directories may be anywhere.

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A kustomization.yaml (only the fields this renderer implements).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub labels: Vec<Labels>,
    #[serde(default)]
    pub images: Vec<Image>,
    #[serde(default)]
    pub secret_generator: Vec<SecretGenerator>,
    #[serde(default)]
    pub patches: Vec<PatchRef>,
}

/// `labels:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Labels {
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
}

/// `images:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
}

/// `secretGenerator:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretGenerator {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    pub options: Option<GeneratorOptions>,
}

/// Generator `options:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GeneratorOptions {
    #[serde(default)]
    pub disable_name_suffix_hash: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `patches:` entry (a file with a JSON 6902 patch, applied to the target).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchRef {
    pub path: String,
    pub target: Target,
}

/// A patch target (exact matches; kustomize's are anchored regexes, of which these are a subset).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// One JSON 6902 operation as written in a patch file (strict).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    pub value: Option<Value>,
    pub from: Option<String>,
}

/// Reads every YAML document of a file (empty documents skipped).
pub fn read_yaml_docs(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let v =
            Value::deserialize(doc).with_context(|| format!("{} document {i}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Reads and strictly parses `dir/kustomization.yaml`.
pub fn read_kustomization(dir: &Path) -> Result<Kustomization> {
    let path = dir.join("kustomization.yaml");
    let docs = read_yaml_docs(&path)?;
    ensure!(docs.len() == 1, "{}: expected one document", path.display());
    let k: Kustomization = serde_json::from_value(docs[0].clone()).with_context(|| {
        format!(
            "{}: not a kustomization this renderer supports",
            path.display()
        )
    })?;
    ensure!(
        k.api_version == "kustomize.config.k8s.io/v1beta1",
        "{}: apiVersion {}",
        path.display(),
        k.api_version
    );
    ensure!(
        k.kind == "Kustomization",
        "{}: kind {}",
        path.display(),
        k.kind
    );
    Ok(k)
}

/// A file referenced by a kustomization, refused (like kustomize) when outside its root.
fn load_restricted(root: &Path, rel: &str) -> Result<PathBuf> {
    let root = root
        .canonicalize()
        .with_context(|| format!("{}", root.display()))?;
    let p = root
        .join(rel)
        .canonicalize()
        .with_context(|| format!("{rel} (in {})", root.display()))?;
    ensure!(
        p.starts_with(&root),
        "security; file '{}' is not in or below '{}' (kustomize's load restrictor)",
        p.display(),
        root.display()
    );
    Ok(p)
}

/// Renders the kustomization in `dir` to its list of objects.
pub fn render(dir: &Path) -> Result<Vec<Value>> {
    let k = read_kustomization(dir)?;
    let mut objs = Vec::new();
    for r in &k.resources {
        let p = dir.join(r);
        if p.is_dir() {
            objs.extend(render(&p).with_context(|| format!("resource {r} of {}", dir.display()))?);
        } else {
            objs.extend(read_yaml_docs(&load_restricted(dir, r)?)?);
        }
    }
    for g in &k.secret_generator {
        objs.push(generate_secret(dir, g)?);
    }
    for p in &k.patches {
        let file = load_restricted(dir, &p.path)?;
        let docs = read_yaml_docs(&file)?;
        ensure!(
            docs.len() == 1 && docs[0].is_array(),
            "{}: only JSON 6902 patches (a list) are supported",
            file.display()
        );
        let ops: Vec<PatchOp> = serde_json::from_value(docs[0].clone())
            .with_context(|| format!("{}: bad JSON 6902 op", file.display()))?;
        ensure!(!ops.is_empty(), "{}: empty patch", file.display());
        let patch: json_patch::Patch = serde_json::from_value(docs[0].clone())?;
        let mut hit = 0;
        for o in objs.iter_mut().filter(|o| matches(o, &p.target)) {
            json_patch::patch(o, &patch).with_context(|| format!("applying {}", file.display()))?;
            hit += 1;
        }
        ensure!(
            hit > 0,
            "{}: target {:?} matches nothing",
            file.display(),
            p.target
        );
    }
    for l in &k.labels {
        ensure!(
            !l.include_selectors && !l.include_templates,
            "labels: only metadata labels are supported"
        );
        for o in objs.iter_mut() {
            let labels = o
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
                .context("object without metadata")?
                .entry("labels")
                .or_insert_with(|| json!({}));
            for (key, val) in &l.pairs {
                labels[key] = json!(val);
            }
        }
    }
    for img in &k.images {
        for o in objs.iter_mut() {
            set_images(o, img);
        }
    }
    Ok(objs)
}

fn matches(o: &Value, t: &Target) -> bool {
    let (group, version) = match o["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", o["apiVersion"].as_str().unwrap_or_default()),
    };
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    eq(&t.group, group)
        && eq(&t.version, version)
        && eq(&t.kind, o["kind"].as_str().unwrap_or_default())
        && eq(&t.name, o["metadata"]["name"].as_str().unwrap_or_default())
        && eq(
            &t.namespace,
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
        )
}

fn generate_secret(dir: &Path, g: &SecretGenerator) -> Result<Value> {
    let opts = g.options.as_ref();
    if !opts.is_some_and(|o| o.disable_name_suffix_hash) {
        bail!(
            "secretGenerator {}: name suffix hashes are not supported by this renderer",
            g.name
        );
    }
    let mut data = Map::new();
    for f in &g.files {
        let (key, rel) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (
                Path::new(f)
                    .file_name()
                    .context("file name")?
                    .to_string_lossy()
                    .into_owned(),
                f.as_str(),
            ),
        };
        let bytes = std::fs::read(load_restricted(dir, rel)?)?;
        ensure!(
            data.insert(
                key.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            )
            .is_none(),
            "duplicate key {key}"
        );
    }
    let mut meta = json!({ "name": g.name });
    if let Some(ns) = &g.namespace {
        meta["namespace"] = json!(ns);
    }
    if let Some(o) = opts {
        if !o.labels.is_empty() {
            meta["labels"] = json!(o.labels);
        }
        if !o.annotations.is_empty() {
            meta["annotations"] = json!(o.annotations);
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": g.type_.clone().unwrap_or_else(|| "Opaque".into()),
        "data": data,
    }))
}

/// Splits `name[:tag][@digest]`.
pub fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..]), digest),
        _ => (rest, None, digest),
    }
}

fn set_images(v: &mut Value, img: &Image) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if (k == "containers" || k == "initContainers")
                    && let Value::Array(cs) = child
                {
                    for c in cs.iter_mut() {
                        let Some(cur) = c.get("image").and_then(Value::as_str) else {
                            continue;
                        };
                        let (name, tag, digest) = split_image(cur);
                        if name != img.name {
                            continue;
                        }
                        let mut out = img.new_name.clone().unwrap_or_else(|| name.to_string());
                        if let Some(d) = img.digest.as_deref() {
                            out = format!("{out}@{d}");
                        } else if let Some(t) = img.new_tag.as_deref().or(tag) {
                            out = format!("{out}:{t}");
                            if let Some(d) = digest {
                                out = format!("{out}@{d}");
                            }
                        } else if let Some(d) = digest {
                            out = format!("{out}@{d}");
                        }
                        c["image"] = json!(out);
                    }
                } else {
                    set_images(child, img);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| set_images(c, img)),
        _ => {}
    }
}
