//! Errors of CNI configuration parsing and plugin invocation.

use std::time::Duration;

/// A CNI failure, with the plugin's own message when it gave one.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CniError {
    /// The network configuration is not a usable CNI config or conflist.
    #[error("invalid CNI network configuration: {0}")]
    Config(String),
    /// No plugin binary of that type in the CNI path.
    #[error("failed to find plugin {plugin:?} in path {path:?}")]
    PluginNotFound {
        /// The plugin `type`.
        plugin: String,
        /// The directories searched.
        path: Vec<String>,
    },
    /// The plugin reported an error object (`{code, msg, details}`) or exited non-zero.
    #[error("plugin {plugin} {command} failed: {msg}{}{}", code.map(|c| format!(" (code {c})")).unwrap_or_default(), if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        /// The plugin `type`.
        plugin: String,
        /// `ADD`, `DEL`, ...
        command: String,
        /// The CNI error code, when the plugin printed an error object.
        code: Option<u64>,
        /// The plugin's message.
        msg: String,
        /// The plugin's details.
        details: String,
    },
    /// The plugin did not finish in time (it was killed).
    #[error("plugin {plugin} {command} timed out after {timeout:?}")]
    Timeout {
        /// The plugin `type`.
        plugin: String,
        /// `ADD`, `DEL`, ...
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin's output is not a CNI result.
    #[error("plugin {plugin} {command} printed an invalid result: {why}")]
    BadResult {
        /// The plugin `type`.
        plugin: String,
        /// `ADD`, `DEL`, ...
        command: String,
        /// What is wrong with it.
        why: String,
    },
    /// Starting or talking to the plugin process failed.
    #[error("running plugin {plugin}: {why}")]
    Io {
        /// The plugin `type`.
        plugin: String,
        /// The OS error.
        why: String,
    },
    /// Reading or writing the result cache failed.
    #[error("result cache: {0}")]
    Cache(String),
}

impl CniError {
    /// The plugin's own message (or the whole error text when there is none): what a user sees.
    pub fn message(&self) -> String {
        self.to_string()
    }
}
