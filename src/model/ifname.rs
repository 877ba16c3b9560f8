//! NIC name rules: Linux interface names (pod dialects) and KubeVirt names.

/// Checks a Linux interface name: 1–15 bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL.
/// Returns what is wrong, if anything.
pub fn linux_ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty; give the NIC a Linux interface name such as \"eth1\"".into());
    }
    if name.len() > 15 {
        return Some(format!(
            "{name:?} is {} bytes; Linux interface names have at most 15, e.g. \"eth1\"",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!(
            "{name:?} is not a valid interface name; use e.g. \"eth1\""
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0')
    {
        return Some(format!(
            "{name:?} contains {c:?}, which Linux interface names may not; use letters, digits, '-', '_' or '.'"
        ));
    }
    None
}

/// Checks a KubeVirt interface/network name: `^[A-Za-z0-9_-]+$`.
pub fn kubevirt_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty; give the interface a name such as \"nic1\"".into());
    }
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        None
    } else {
        Some(format!(
            "{name:?} is not a valid KubeVirt interface name; use only letters, digits, '-' and '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_names() {
        for ok in ["eth1", "net-1", "a", "abcdefghijklmno", "vlan.100"] {
            assert_eq!(linux_ifname_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "eth/1",
            "eth:1",
            "eth 1",
            "eth\t1",
            "a\0b",
        ] {
            assert!(linux_ifname_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn kubevirt_names() {
        assert_eq!(kubevirt_name_problem("dyn_iface-1"), None);
        for bad in ["", "a.b", "a b", "a/b", "ü"] {
            assert!(kubevirt_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
