//! VM pods: a NIC is plugged when the guest has it, not when the pod's namespace does.
//!
//! For a pod whose VM is a libvirt domain on the node (an Arktos pod with `spec.virtualMachine`,
//! or any pod annotated `hotnic.io/domain`), after the CNI ADD the agent wires the NIC through the
//! pod's namespace the way KubeVirt's bridge binding does, and hot-plugs it into the domain:
//!
//! ```text
//!   host / libvirtd namespace        pod network namespace
//!   QEMU ── tap hnt… ─(moved)──────▶ hnt… ──┐
//!                                           bridge hnb… ── eth1 (CNI's interface: no IP, MAC
//!                                                                changed; the guest owns the MAC)
//! ```
//!
//! The tap is made where libvirtd runs (it opens the tap by name), attached live as
//! `<interface type='ethernet'>` with the NIC's MAC, `virtio` model and a `managed='no'` target,
//! then moved into the pod's namespace and enslaved to the bridge. The NIC is Ready only once the
//! live domain XML shows the MAC. Unplug asks libvirt to detach, then waits until the live XML no
//! longer shows the MAC (`detach-device` returns before the guest has let go, and a guest that
//! never does keeps the device): only then are the tap and bridge removed and the CNI DEL run.
//! Everything made here is named `hnt…`/`hnb…` from the pod uid and interface name and recorded in
//! the result cache before it is made, so the agent touches only what it owns.

use crate::agent::netns::PodRef;
use crate::libvirt::domain::{self, DomainXmlError};
use crate::libvirt::virsh::{Virsh, VirshError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// Annotation naming a pod's libvirt domain (overrides the template; marks any pod as a VM pod).
pub const DOMAIN_ANNOTATION: &str = "hotnic.io/domain";

/// Default domain name template: `{namespace}`, `{name}` and `{uid}` are substituted.
pub const DEFAULT_DOMAIN_TEMPLATE: &str = "{namespace}_{name}";

/// What the agent made for one VM NIC, recorded in its cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPort {
    /// The libvirt domain.
    pub domain: String,
    /// The tap QEMU uses (created in the agent's namespace, then moved into the pod's).
    pub tap: String,
    /// The bridge in the pod's namespace joining the tap and the CNI interface.
    pub bridge: String,
}

impl VmPort {
    /// The names for a pod's NIC: `hnt`/`hnb` and ten hex digits of a hash of uid and ifname.
    pub fn new(domain: &str, pod_uid: &str, ifname: &str) -> Self {
        // FNV-1a: stable across restarts and builds.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in pod_uid.bytes().chain([0]).chain(ifname.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let id = format!("{:010x}", h & 0xff_ffff_ffff);
        Self {
            domain: domain.to_string(),
            tap: format!("hnt{id}"),
            bridge: format!("hnb{id}"),
        }
    }
}

/// Why a VM NIC could not be plugged or unplugged.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// libvirt refused or could not be reached.
    #[error("libvirt")]
    Libvirt(#[from] VirshError),
    /// The live domain XML could not be read.
    #[error("libvirt domain {domain}: live XML")]
    Xml {
        /// The domain.
        domain: String,
        /// What is wrong with it.
        #[source]
        source: DomainXmlError,
    },
    /// The domain exists but is not running: nothing can be hot-plugged yet.
    #[error("waiting for libvirt domain {domain} to run (it is {state})")]
    NotRunning {
        /// The domain.
        domain: String,
        /// Its state.
        state: String,
    },
    /// An `ip` command failed.
    #[error("{op}: {message}")]
    Link {
        /// What was being done.
        op: String,
        /// What `ip` said.
        message: String,
    },
    /// libvirt said it attached the NIC but the live XML does not show it.
    #[error("libvirt domain {domain}: the attached NIC {mac} is not in the live domain XML")]
    NotShown {
        /// The domain.
        domain: String,
        /// The NIC's MAC.
        mac: String,
    },
    /// The guest did not release the device: nothing was torn down.
    #[error(
        "libvirt domain {domain}: the guest did not release NIC {mac} within {waited:?} of the \
         detach request (a guest without a running OS or PCIe hot-plug support never does); \
         tap and bridge kept, retried later"
    )]
    NotReleased {
        /// The domain.
        domain: String,
        /// The NIC's MAC.
        mac: String,
        /// How long it waited.
        waited: Duration,
    },
}

impl VmError {
    /// Whether this is a wait for the domain (it does not exist or does not run yet), not a
    /// failure.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            VmError::NotRunning { .. } | VmError::Libvirt(VirshError::NoDomain { .. })
        )
    }
}

/// Plugs NICs into libvirt domains and takes them out again.
#[derive(Debug, Clone)]
pub struct VmPlugger {
    /// The libvirt connection.
    pub virsh: Virsh,
    /// Domain name template ([`DEFAULT_DOMAIN_TEMPLATE`]).
    pub domain_template: String,
    /// How long a detach may take before the NIC is reported Failed.
    pub detach_timeout: Duration,
    /// How often the live XML is read while waiting for a detach.
    pub poll: Duration,
}

impl Default for VmPlugger {
    fn default() -> Self {
        Self {
            virsh: Virsh::default(),
            domain_template: DEFAULT_DOMAIN_TEMPLATE.into(),
            detach_timeout: Duration::from_secs(10),
            poll: Duration::from_millis(50),
        }
    }
}

impl VmPlugger {
    /// The domain of a pod: the annotation's value, else the template filled in.
    pub fn domain_name(&self, pod: &PodRef, annotation: Option<&str>) -> String {
        match annotation.filter(|d| !d.is_empty()) {
            Some(d) => d.to_string(),
            None => self
                .domain_template
                .replace("{namespace}", &pod.namespace)
                .replace("{name}", &pod.name)
                .replace("{uid}", &pod.uid),
        }
    }

    /// Whether the running domain's live XML shows an interface with `mac`. Waiting errors when
    /// the domain does not exist or does not run.
    pub async fn shows(&self, domain: &str, mac: &str) -> Result<bool, VmError> {
        let state = self.virsh.state(domain).await?;
        if state != "running" {
            return Err(VmError::NotRunning {
                domain: domain.to_string(),
                state,
            });
        }
        self.live_has(domain, mac).await
    }

    async fn live_has(&self, domain: &str, mac: &str) -> Result<bool, VmError> {
        let xml = self.virsh.live_xml(domain).await?;
        let ifaces = domain::interfaces(&xml).map_err(|source| VmError::Xml {
            domain: domain.to_string(),
            source,
        })?;
        let mac = mac.to_ascii_lowercase();
        Ok(ifaces
            .iter()
            .any(|i| i.mac.as_deref() == Some(mac.as_str())))
    }

    /// Makes the NIC `ifname` (already in the pod's namespace `netns`, from the CNI ADD) the
    /// domain's NIC `mac`. Idempotent: what is in place is kept, what is missing is made.
    pub async fn attach(
        &self,
        port: &VmPort,
        netns: &Path,
        ifname: &str,
        mac: &str,
    ) -> Result<(), VmError> {
        let attached = self.shows(&port.domain, mac).await?;
        self.wire_pod_side(port, netns, ifname, mac).await?;
        if !attached {
            if link_exists(Some(netns), &port.tap).await? {
                // Left in the pod by an earlier attach whose device is gone (the domain was
                // restarted): libvirtd cannot open it there. Start over.
                ip(Some(netns), &["link", "del", "dev", &port.tap]).await?;
            }
            if !link_exists(None, &port.tap).await? {
                ip(None, &["tuntap", "add", "dev", &port.tap, "mode", "tap"]).await?;
            }
            let xml = interface_xml(mac, Some(&port.tap));
            if let Err(e) = self.virsh.attach_live(&port.domain, &xml).await {
                let _ = ip(None, &["link", "del", "dev", &port.tap]).await;
                return Err(e.into());
            }
        }
        if link_exists(None, &port.tap).await? {
            let path = netns.to_string_lossy();
            ip(None, &["link", "set", "dev", &port.tap, "netns", &path]).await?;
        }
        ip(
            Some(netns),
            &[
                "link",
                "set",
                "dev",
                &port.tap,
                "master",
                &port.bridge,
                "up",
            ],
        )
        .await?;
        if !self.live_has(&port.domain, mac).await? {
            return Err(VmError::NotShown {
                domain: port.domain.clone(),
                mac: mac.to_string(),
            });
        }
        Ok(())
    }

    /// The bridge in the pod's namespace, with the CNI interface in it: the interface gives its
    /// MAC to the guest (it gets [`pod_side_mac`]) and its addresses to the guest's
    /// configuration, and sends nothing of its own.
    async fn wire_pod_side(
        &self,
        port: &VmPort,
        netns: &Path,
        ifname: &str,
        mac: &str,
    ) -> Result<(), VmError> {
        let ns = Some(netns);
        if !link_exists(ns, &port.bridge).await? {
            ip(ns, &["link", "add", "name", &port.bridge, "type", "bridge"]).await?;
            ip(
                ns,
                &["link", "set", "dev", &port.bridge, "addrgenmode", "none"],
            )
            .await?;
        }
        ip(ns, &["link", "set", "dev", &port.bridge, "up"]).await?;
        let out = ip(ns, &["-j", "link", "show", "dev", ifname]).await?;
        if !out.contains(&format!("\"master\":\"{}\"", port.bridge)) {
            let side = pod_side_mac(mac);
            ip(ns, &["link", "set", "dev", ifname, "down"]).await?;
            ip(ns, &["link", "set", "dev", ifname, "address", &side]).await?;
            ip(ns, &["addr", "flush", "dev", ifname]).await?;
            ip(ns, &["link", "set", "dev", ifname, "addrgenmode", "none"]).await?;
            ip(
                ns,
                &["link", "set", "dev", ifname, "master", &port.bridge, "up"],
            )
            .await?;
        }
        Ok(())
    }

    /// Takes the NIC `mac` out of the domain and removes tap and bridge. A running domain must
    /// release the device within [`VmPlugger::detach_timeout`] ([`VmError::NotReleased`]
    /// otherwise, with nothing torn down); a domain that is gone or stopped has no live device.
    pub async fn detach(
        &self,
        port: &VmPort,
        netns: Option<&Path>,
        mac: &str,
    ) -> Result<(), VmError> {
        match self.shows(&port.domain, mac).await {
            Ok(true) => {
                let xml = interface_xml(mac, None);
                let started = Instant::now();
                self.virsh.detach_live(&port.domain, &xml).await?;
                loop {
                    match self.live_has(&port.domain, mac).await {
                        Ok(false) | Err(VmError::Libvirt(VirshError::NoDomain { .. })) => break,
                        Ok(true) if started.elapsed() >= self.detach_timeout => {
                            return Err(VmError::NotReleased {
                                domain: port.domain.clone(),
                                mac: mac.to_string(),
                                waited: self.detach_timeout,
                            });
                        }
                        Ok(true) => tokio::time::sleep(self.poll).await,
                        // The domain stopped meanwhile: its devices are gone with it.
                        Err(_) if !self.running(&port.domain).await => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(false) => {}
            Err(e) if e.is_waiting() => {}
            Err(e) => return Err(e),
        }
        if let Some(ns) = netns.filter(|p| p.exists()) {
            for name in [&port.tap, &port.bridge] {
                if link_exists(Some(ns), name).await? {
                    ip(Some(ns), &["link", "del", "dev", name]).await?;
                }
            }
        }
        if link_exists(None, &port.tap).await? {
            ip(None, &["link", "del", "dev", &port.tap]).await?;
        }
        Ok(())
    }

    async fn running(&self, domain: &str) -> bool {
        self.virsh.state(domain).await.is_ok_and(|s| s == "running")
    }
}

/// The `<interface>` element for a NIC: `ethernet`, its MAC, `virtio`, and the tap as an
/// unmanaged target (only for attach; detach matches by MAC).
pub fn interface_xml(mac: &str, tap: Option<&str>) -> String {
    let target = tap
        .map(|t| format!("<target dev='{t}' managed='no'/>"))
        .unwrap_or_default();
    format!(
        "<interface type='ethernet'><mac address='{mac}'/>{target}<model type='virtio'/></interface>"
    )
}

/// The MAC the CNI interface gets once the guest owns the NIC's MAC: the same address with bit 3
/// of the first octet flipped (still locally administered unicast), so the pod's bridge never
/// sees the guest's address as its own.
pub fn pod_side_mac(mac: &str) -> String {
    let mut octets: Vec<String> = mac.split(':').map(str::to_string).collect();
    if let Some(first) = octets
        .first_mut()
        .and_then(|o| u8::from_str_radix(o, 16).ok().map(|b| (o, b)))
    {
        let (o, b) = first;
        *o = format!("{:02x}", ((b ^ 0x08) | 0x02) & 0xfe);
    }
    octets.join(":")
}

/// Runs `ip ARGS…`, in `netns` when given (through `nsenter`); its stdout.
async fn ip(netns: Option<&Path>, args: &[&str]) -> Result<String, VmError> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--").arg("ip");
            c
        }
        None => tokio::process::Command::new("ip"),
    };
    cmd.args(args).kill_on_drop(true);
    let op = match netns {
        Some(ns) => format!("ip {} (in {})", args.join(" "), ns.display()),
        None => format!("ip {}", args.join(" ")),
    };
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| VmError::Link {
            op: op.clone(),
            message: "timed out".into(),
        })?
        .map_err(|e| VmError::Link {
            op: op.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Link {
            op,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a link of that name exists (in `netns`, or the agent's own namespace).
async fn link_exists(netns: Option<&Path>, name: &str) -> Result<bool, VmError> {
    match ip(netns, &["link", "show", "dev", name]).await {
        Ok(_) => Ok(true),
        Err(VmError::Link { message, .. })
            if message.contains("does not exist") || message.contains("Cannot find device") =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_ifnamsiz_and_are_stable() {
        let p = VmPort::new("ns_vm", "0a4c3b9e-1111-2222-3333-444455556666", "eth1");
        assert_eq!(p.tap.len(), 13);
        assert!(p.tap.starts_with("hnt") && p.bridge.starts_with("hnb"));
        assert_eq!(p.tap[3..], p.bridge[3..]);
        assert_eq!(
            p,
            VmPort::new("ns_vm", "0a4c3b9e-1111-2222-3333-444455556666", "eth1")
        );
        assert_ne!(
            p.tap,
            VmPort::new("ns_vm", "0a4c3b9e-1111-2222-3333-444455556666", "eth2").tap
        );
    }

    #[test]
    fn the_pod_side_mac_differs_and_stays_local_unicast() {
        assert_eq!(pod_side_mac("02:aa:00:00:00:01"), "0a:aa:00:00:00:01");
        assert_eq!(pod_side_mac("0a:aa:00:00:00:01"), "02:aa:00:00:00:01");
        let b = u8::from_str_radix(&pod_side_mac("06:00:00:00:00:00")[..2], 16).unwrap();
        assert_eq!((b & 0x02, b & 0x01), (0x02, 0));
    }

    #[test]
    fn domain_names() {
        let v = VmPlugger::default();
        let pod = PodRef {
            uid: "u".into(),
            namespace: "demo".into(),
            name: "vm1".into(),
        };
        assert_eq!(v.domain_name(&pod, None), "demo_vm1");
        assert_eq!(v.domain_name(&pod, Some("")), "demo_vm1");
        assert_eq!(v.domain_name(&pod, Some("other")), "other");
    }

    #[test]
    fn interface_xml_has_mac_model_and_unmanaged_target() {
        assert_eq!(
            interface_xml("02:aa:00:00:00:01", Some("hnt1")),
            "<interface type='ethernet'><mac address='02:aa:00:00:00:01'/><target dev='hnt1' managed='no'/><model type='virtio'/></interface>"
        );
    }
}
