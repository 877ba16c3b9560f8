//! Network configurations: a single plugin config or a conflist (`plugins`), and the per-plugin
//! config libcni hands each plugin on stdin.

use super::error::ConfigError;
use serde_json::{Map, Value};

/// A network configuration list (a single plugin config is a list of one, as in libcni).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    /// The network `name` (host-local keeps its leases under a directory of this name).
    pub name: String,
    /// The list's `cniVersion` (`None` when a single config leaves it out).
    pub cni_version: Option<String>,
    /// Each plugin's config object, in chain order.
    pub plugins: Vec<Map<String, Value>>,
    /// Whether this came from a conflist (with `plugins`) rather than a single config.
    pub is_list: bool,
}

impl NetConfList {
    /// Parses a CNI config JSON text (NetworkAttachmentDefinition `spec.config`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
        Self::from_value(&v)
    }

    /// Reads a config from parsed JSON.
    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::NotAnObject(v.clone()))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ConfigError::NoName)?
            .to_string();
        let cni_version = match obj.get("cniVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(ConfigError::Version(other.clone())),
        };
        let (plugins, is_list) = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(ConfigError::NoPlugins { network: name });
                }
                let mut out = Vec::with_capacity(list.len());
                for (index, p) in list.iter().enumerate() {
                    let p = p
                        .as_object()
                        .ok_or_else(|| ConfigError::PluginNotAnObject {
                            network: name.clone(),
                            index,
                        })?;
                    out.push(p.clone());
                }
                (out, true)
            }
            Some(other) => {
                return Err(ConfigError::PluginsNotAList {
                    network: name,
                    value: other.clone(),
                });
            }
            None => (vec![obj.clone()], false),
        };
        for (index, p) in plugins.iter().enumerate() {
            match p.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() && !t.contains('/') && t != "." && t != ".." => {}
                _ => {
                    return Err(ConfigError::NoType {
                        network: name,
                        index,
                    });
                }
            }
        }
        Ok(Self {
            name,
            cni_version,
            plugins,
            is_list,
        })
    }

    /// The `type` of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether the list's version is at least 0.4.0 (DEL then gets the cached result as `prevResult`).
    pub fn passes_prev_result_on_del(&self) -> bool {
        self.cni_version
            .as_deref()
            .is_some_and(|v| version_at_least(v, (0, 4, 0)))
    }

    /// The bytes handed to plugin `i` on stdin: its config with `name` and `cniVersion` from the
    /// list, `prevResult` when given, and `runtimeConfig` holding every capability the plugin
    /// declares (`"capabilities": {"mac": true}`) for which the runtime has a value.
    pub fn plugin_config(
        &self,
        i: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let mut conf = self.plugins[i].clone();
        if self.is_list {
            conf.insert("name".into(), Value::String(self.name.clone()));
            if let Some(v) = &self.cni_version {
                conf.insert("cniVersion".into(), Value::String(v.clone()));
            }
        }
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let declared: Vec<String> = conf
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| {
                caps.iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut rc = Map::new();
        for cap in declared {
            if let Some(v) = capability_args.get(&cap) {
                rc.insert(cap, v.clone());
            }
        }
        if !rc.is_empty() {
            let entry = conf
                .entry("runtimeConfig")
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(existing) = entry {
                existing.extend(rc);
            }
        }
        Value::Object(conf)
    }
}

/// Compares a `major.minor.patch` version string against a minimum (unparsable: false).
pub fn version_at_least(v: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u64>());
    let mut next = || parts.next().unwrap_or(Ok(0));
    match (next(), next(), next()) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c) >= min,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_config_is_a_list_of_one_and_kept_as_is() {
        let l = NetConfList::parse(
            r#"{"cniVersion":"0.4.0","name":"n","type":"bridge","capabilities":{"mac":true}}"#,
        )
        .unwrap();
        assert!(!l.is_list);
        assert_eq!(l.plugins.len(), 1);
        let mut caps = Map::new();
        caps.insert("mac".into(), json!("02:00:00:00:00:01"));
        caps.insert("ips".into(), json!(["10.0.0.2/24"]));
        let c = l.plugin_config(0, None, &caps);
        assert_eq!(c["runtimeConfig"], json!({"mac": "02:00:00:00:00:01"}));
        assert_eq!(c["name"], "n");
    }

    #[test]
    fn conflist_injects_name_version_prev_result() {
        let l = NetConfList::parse(
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"tuning","capabilities":{"mac":false}}]}"#,
        )
        .unwrap();
        assert!(l.is_list && l.passes_prev_result_on_del());
        let mut caps = Map::new();
        caps.insert("mac".into(), json!("02:00:00:00:00:01"));
        let c = l.plugin_config(1, Some(&json!({"cniVersion":"1.0.0"})), &caps);
        assert_eq!(c["name"], "net");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["prevResult"]["cniVersion"], "1.0.0");
        assert!(c.get("runtimeConfig").is_none());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        for (text, want) in [
            ("[]", "JSON object"),
            ("{\"type\":\"bridge\"}", "no network \"name\""),
            ("{\"name\":\"n\",\"plugins\":[]}", "empty"),
            (
                "{\"name\":\"n\",\"plugins\":[{\"type\":\"../x\"}]}",
                "no valid \"type\"",
            ),
            ("{", "not valid JSON"),
        ] {
            let e = crate::runtime::Chain(&NetConfList::parse(text).unwrap_err()).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn versions() {
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("x", (0, 4, 0)));
    }
}
