//! What is actually in a network namespace: `nsenter --net=PATH ip -j link show`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The interfaces of a namespace: name → lower-case MAC (empty when the link has none).
pub type Links = BTreeMap<String, String>;

/// Lists the links in the namespace at `netns`.
pub async fn list(netns: &Path) -> anyhow::Result<Links> {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .args(["--", "ip", "-j", "link", "show"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("listing links in {}: timed out", netns.display()))??;
    if !out.status.success() {
        anyhow::bail!(
            "listing links in {}: {}",
            netns.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&out.stdout)
}

/// Parses `ip -j link show` output.
pub fn parse(json: &[u8]) -> anyhow::Result<Links> {
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
