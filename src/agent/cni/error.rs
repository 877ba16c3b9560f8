//! Errors of CNI configuration parsing, plugin invocation and the result cache.
//!
//! Each error's message says what failed; an underlying error (the OS's, serde_json's) is its
//! [`source`](std::error::Error::source), not part of the message: show them together with
//! [`crate::runtime::Chain`].

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// A CNI failure, with the plugin's own message when it gave one.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The network configuration is not a usable CNI config or conflist.
    #[error("invalid CNI network configuration")]
    Config(#[from] ConfigError),
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
        /// Why it does not parse, when it does not.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// Starting or talking to the plugin process failed.
    #[error("running plugin {plugin}")]
    Io {
        /// The plugin `type`.
        plugin: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the result cache failed.
    #[error("result cache")]
    Cache(#[from] CacheError),
}

/// Why a network configuration is not a usable CNI config or conflist.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON is not an object.
    #[error("must be a JSON object, not {0}")]
    NotAnObject(Value),
    /// No (or an empty) `name`.
    #[error("no network \"name\"")]
    NoName,
    /// `cniVersion` is not a string.
    #[error("\"cniVersion\" must be a string, not {0}")]
    Version(Value),
    /// `plugins` is an empty list.
    #[error("network {network:?}: \"plugins\" is empty")]
    NoPlugins {
        /// The network `name`.
        network: String,
    },
    /// `plugins` is not a list.
    #[error("network {network:?}: \"plugins\" must be a list, not {value}")]
    PluginsNotAList {
        /// The network `name`.
        network: String,
        /// What `plugins` holds.
        value: Value,
    },
    /// An entry of `plugins` is not an object.
    #[error("network {network:?}: plugins[{index}] is not an object")]
    PluginNotAnObject {
        /// The network `name`.
        network: String,
        /// Its position in `plugins`.
        index: usize,
    },
    /// A plugin has no usable `type` (absent, empty, or not a plain file name).
    #[error("network {network:?}: plugin {index} has no valid \"type\"")]
    NoType {
        /// The network `name`.
        network: String,
        /// Its position in the chain.
        index: usize,
    },
    /// CHECK was asked of a list older than CNI 0.4.0 (which has no CHECK).
    #[error("network {network:?}: CHECK needs cniVersion 0.4.0 or later")]
    NoCheck {
        /// The network `name`.
        network: String,
    },
}

/// Why the result cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A pod uid that is not safe as a directory name.
    #[error("pod uid {uid:?} cannot name a cache directory")]
    BadUid {
        /// The uid.
        uid: String,
    },
    /// An interface name that is not safe as a file name.
    #[error("interface name {ifname:?} cannot name a cache file")]
    BadIfname {
        /// The interface name.
        ifname: String,
    },
    /// A file system operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// `creating`, `writing`, `reading`, `listing`, `removing`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An entry would not encode, or a cache file does not decode.
    #[error("{op} {}", path.display())]
    Json {
        /// `encoding` or `decoding`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}
