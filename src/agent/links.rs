//! What is actually in a network namespace: `nsenter --net=PATH ip -j link show`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The interfaces of a namespace: name → lower-case MAC (empty when the link has none).
pub type Links = BTreeMap<String, String>;

/// Why the links of a namespace could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    /// `nsenter` could not be started.
    #[error("listing links in {}", netns.display())]
    Spawn {
        /// The namespace path.
        netns: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// `ip` did not answer in time.
    #[error("listing links in {}: timed out", netns.display())]
    Timeout {
        /// The namespace path.
        netns: PathBuf,
    },
    /// `nsenter` or `ip` failed (e.g. the namespace is gone).
    #[error("listing links in {}: {stderr}", netns.display())]
    Failed {
        /// The namespace path.
        netns: PathBuf,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The output is not `ip -j link show` JSON.
    #[error("listing links in {}: unexpected output of ip", netns.display())]
    Parse {
        /// The namespace path.
        netns: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Lists the links in the namespace at `netns`.
pub async fn list(netns: &Path) -> Result<Links, LinksError> {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .args(["--", "ip", "-j", "link", "show"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| LinksError::Timeout {
            netns: netns.to_path_buf(),
        })?
        .map_err(|source| LinksError::Spawn {
            netns: netns.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(LinksError::Failed {
            netns: netns.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    parse(&out.stdout).map_err(|source| LinksError::Parse {
        netns: netns.to_path_buf(),
        source,
    })
}

/// Parses `ip -j link show` output.
pub fn parse(json: &[u8]) -> Result<Links, serde_json::Error> {
    let v: Value = serde_json::from_slice(json)?;
    let mut out = Links::new();
    for l in v.as_array().into_iter().flatten() {
        if let Some(name) = l.get("ifname").and_then(Value::as_str) {
            let mac = l
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            out.insert(name.to_string(), mac);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ip_json() {
        let l = super::parse(br#"[{"ifindex":1,"ifname":"lo","address":"00:00:00:00:00:00"},{"ifindex":3,"link_index":4,"ifname":"eth1","address":"02:AA:00:00:00:01"}]"#).unwrap();
        assert_eq!(l["eth1"], "02:aa:00:00:00:01");
        assert_eq!(l.len(), 2);
    }
}
