//! Running plugins: `CNI_*` environment, config on stdin, result or error object on stdout, a
//! timeout (the process is killed), and libcni's list semantics (ADD in order with `prevResult`
//! chaining, DEL in reverse order with the cached result as `prevResult` from 0.4.0 on).

use super::config::NetConfList;
use super::error::{CniError, ConfigError};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The default plugin search path.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni:/opt/cni/bin";

/// What identifies one attachment to the plugins (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeArgs {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the namespace path (may be empty on DEL when the namespace is gone).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` pairs (joined as `K=V;K=V`).
    pub cni_args: Vec<(String, String)>,
    /// Capability values (`mac`, `ips`, ...), injected as `runtimeConfig` where a plugin declares them.
    pub capability_args: Map<String, Value>,
}

/// One attachment, as cached: the runtime args plus the config used.
pub type Attachment = RuntimeArgs;

/// Runs CNI plugins found in a search path.
#[derive(Debug, Clone)]
pub struct Invoker {
    /// Directories searched for plugin binaries, also passed as `CNI_PATH`.
    pub cni_path: Vec<PathBuf>,
    /// Limit for one plugin run.
    pub timeout: Duration,
    /// Run plugins inside this network namespace (through `nsenter`) instead of the caller's: the
    /// namespace where bridges are made and macvlan masters are looked up (tests use a "node"
    /// namespace of their own).
    pub plugin_netns: Option<PathBuf>,
}

impl Default for Invoker {
    fn default() -> Self {
        Self::new(DEFAULT_CNI_PATH, Duration::from_secs(30))
    }
}

impl Invoker {
    /// An invoker over a `:`-separated search path.
    pub fn new(cni_path: &str, timeout: Duration) -> Self {
        Self {
            cni_path: cni_path
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            timeout,
            plugin_netns: None,
        }
    }

    fn path_env(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Finds a plugin binary by `type`.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::PluginNotFound {
                plugin: plugin.to_string(),
                path: self
                    .cni_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            })
    }

    /// ADD through the whole list; returns the last plugin's result. On failure nothing is
    /// undone here (as in libcni): the caller rolls back with [`Invoker::del_list`].
    pub async fn add_list(&self, list: &NetConfList, rt: &RuntimeArgs) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let conf = list.plugin_config(i, prev.as_ref(), &rt.capability_args);
            let out = self.run(list.plugin_type(i), "ADD", &conf, rt).await?;
            let result: Value =
                serde_json::from_slice(&out).map_err(|source| CniError::BadResult {
                    plugin: list.plugin_type(i).to_string(),
                    command: "ADD".into(),
                    why: format!("not JSON: {:?}", String::from_utf8_lossy(&out)),
                    source: Some(source),
                })?;
            if !result.is_object() {
                return Err(CniError::BadResult {
                    plugin: list.plugin_type(i).to_string(),
                    command: "ADD".into(),
                    why: format!("not an object: {result}"),
                    source: None,
                });
            }
            prev = Some(result);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the list in reverse order. `cached` is the ADD result, passed as `prevResult`
    /// when the list's version is 0.4.0 or later. A plugin that is no longer installed is skipped
    /// (it cannot release anything); any other failure stops and is returned.
    pub async fn del_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeArgs,
        cached: Option<&Value>,
    ) -> Result<(), CniError> {
        let prev = if list.passes_prev_result_on_del() {
            cached.filter(|v| v.is_object())
        } else {
            None
        };
        for i in (0..list.plugins.len()).rev() {
            let conf = list.plugin_config(i, prev, &rt.capability_args);
            match self.run(list.plugin_type(i), "DEL", &conf, rt).await {
                Ok(_) => {}
                Err(CniError::PluginNotFound { plugin, .. }) => {
                    tracing::warn!(%plugin, network = %list.name, "DEL: plugin not installed, skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// CHECK through the list in order with the cached ADD result as `prevResult` (CNI 0.4.0 and
    /// later only; earlier versions have no CHECK).
    pub async fn check_list(
        &self,
        list: &NetConfList,
        rt: &RuntimeArgs,
        cached: &Value,
    ) -> Result<(), CniError> {
        if !list.passes_prev_result_on_del() {
            return Err(ConfigError::NoCheck {
                network: list.name.clone(),
            }
            .into());
        }
        for i in 0..list.plugins.len() {
            let conf = list.plugin_config(i, Some(cached), &rt.capability_args);
            self.run(list.plugin_type(i), "CHECK", &conf, rt).await?;
        }
        Ok(())
    }

    /// DEL through the list in reverse order without stopping at a failure (rollback of a failed
    /// ADD, where a plugin that rejected the config on ADD rejects it on DEL too): every error.
    pub async fn del_list_best_effort(
        &self,
        list: &NetConfList,
        rt: &RuntimeArgs,
        cached: Option<&Value>,
    ) -> Vec<CniError> {
        let prev = if list.passes_prev_result_on_del() {
            cached.filter(|v| v.is_object())
        } else {
            None
        };
        let mut errors = Vec::new();
        for i in (0..list.plugins.len()).rev() {
            let conf = list.plugin_config(i, prev, &rt.capability_args);
            match self.run(list.plugin_type(i), "DEL", &conf, rt).await {
                Ok(_) | Err(CniError::PluginNotFound { .. }) => {}
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Runs one plugin once; returns its stdout on success.
    pub async fn run(
        &self,
        plugin: &str,
        command: &str,
        conf: &Value,
        rt: &RuntimeArgs,
    ) -> Result<Vec<u8>, CniError> {
        let bin = self.find(plugin)?;
        let io = |source: std::io::Error| CniError::Io {
            plugin: plugin.to_string(),
            source,
        };
        let stdin_bytes = serde_json::to_vec(conf).map_err(|e| io(e.into()))?;
        let mut cmd = match &self.plugin_netns {
            None => tokio::process::Command::new(&bin),
            Some(ns) => {
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(&bin);
                c
            }
        };
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_PATH", self.path_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if rt.cni_args.is_empty() {
            cmd.env_remove("CNI_ARGS");
        } else {
            let args: Vec<String> = rt
                .cni_args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            cmd.env("CNI_ARGS", args.join(";"));
        }
        let mut child = cmd.spawn().map_err(io)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io(std::io::Error::other("no stdin pipe")))?;
        let writer = tokio::spawn(async move {
            let r = stdin.write_all(&stdin_bytes).await;
            drop(stdin);
            r
        });
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(io)?,
            Err(_) => {
                writer.abort();
                return Err(CniError::Timeout {
                    plugin: plugin.to_string(),
                    command: command.to_string(),
                    timeout: self.timeout,
                });
            }
        };
        // A plugin may exit without reading stdin; a broken pipe then is not the error to report.
        let _ = writer.await;
        tracing::debug!(plugin, command, ifname = %rt.ifname, status = ?output.status, "CNI plugin ran");
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(plugin_error(plugin, command, &output))
    }
}

fn plugin_error(plugin: &str, command: &str, output: &std::process::Output) -> CniError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(&output.stdout)
        && let Some(msg) = e.get("msg").and_then(Value::as_str)
    {
        return CniError::Plugin {
            plugin: plugin.to_string(),
            command: command.to_string(),
            code: e.get("code").and_then(Value::as_u64),
            msg: msg.to_string(),
            details: e
                .get("details")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
    }
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let msg = [stdout, stderr]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    CniError::Plugin {
        plugin: plugin.to_string(),
        command: command.to_string(),
        code: None,
        msg: if msg.is_empty() {
            format!("exited with {}", output.status)
        } else {
            msg
        },
        details: String::new(),
    }
}
