//! Domain XML: the interfaces of a (live) domain, and the PCIe root ports a q35 domain needs so
//! that a number of NICs can be hot-plugged into it.
//!
//! On q35 every hot-plugged PCIe device takes a free `pcie-root-port`; libvirt adds root ports at
//! define time only for the devices the XML already has, so a domain defined without spare ports
//! refuses any hot-plug ("No more available PCI slots"). [`add_slots`] adds exactly the ports the
//! interface capacity asks for.

use std::fmt::Write as _;

/// Why a domain XML could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DomainXmlError {
    /// Not XML.
    #[error("not valid XML: {0}")]
    Xml(#[from] roxmltree::Error),
    /// The root element is not `<domain>`.
    #[error("the root element is <{0}>, not <domain>")]
    NotADomain(String),
    /// Not a q35 machine.
    #[error(
        "machine type {machine:?} is not q35: only q35 domains hot-plug NICs into pcie-root-ports \
         (use <type machine='q35'>)"
    )]
    NotQ35 {
        /// The machine type written (empty when none).
        machine: String,
    },
    /// The domain already has more NICs than the capacity allows.
    #[error("the domain already has {nics} NICs, more than the interface capacity {capacity}")]
    OverCapacity {
        /// NICs in the XML.
        nics: usize,
        /// The capacity asked for.
        capacity: usize,
    },
}

/// An `<interface>` of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainInterface {
    /// `type` (`ethernet`, `bridge`, `network`, …).
    pub kind: String,
    /// `<mac address>`, lower case.
    pub mac: Option<String>,
    /// `<model type>`.
    pub model: Option<String>,
    /// `<target dev>`.
    pub target: Option<String>,
}

/// The interfaces of a domain, in document order.
pub fn interfaces(xml: &str) -> Result<Vec<DomainInterface>, DomainXmlError> {
    let doc = parse(xml)?;
    let Some(devices) = child(doc.root_element(), "devices") else {
        return Ok(Vec::new());
    };
    Ok(devices
        .children()
        .filter(|n| n.has_tag_name("interface"))
        .map(|n| {
            let attr = |tag: &str, name: &str| {
                child(n, tag)
                    .and_then(|c| c.attribute(name))
                    .map(str::to_string)
            };
            DomainInterface {
                kind: n.attribute("type").unwrap_or_default().to_string(),
                mac: attr("mac", "address").map(|m| m.to_ascii_lowercase()),
                model: attr("model", "type"),
                target: attr("target", "dev"),
            }
        })
        .collect())
}

/// How a q35 domain's PCIe slots add up for an interface capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPlan {
    /// `pcie-root-port` controllers in the XML.
    pub root_ports: usize,
    /// `<interface>`s in the XML.
    pub nics: usize,
    /// Those of them that take a root port (not placed on the root bus).
    pub nics_on_ports: usize,
    /// Other devices that take a root port (virtio disks and controllers, the implicit USB
    /// controller and memory balloon, …).
    pub other_devices: usize,
    /// The interface capacity: NICs the domain must be able to hold in total.
    pub capacity: usize,
    /// Root ports to add so that `capacity` NICs fit.
    pub to_add: usize,
}

impl SlotPlan {
    /// NICs that can still be hot-plugged once the ports are added.
    pub fn hotplug_slots(&self) -> usize {
        self.capacity - self.nics
    }
}

/// Counts what a q35 domain has and what `capacity` NICs need.
pub fn plan_slots(xml: &str, capacity: usize) -> Result<SlotPlan, DomainXmlError> {
    let doc = parse(xml)?;
    let root = doc.root_element();
    let machine = child(root, "os")
        .and_then(|os| child(os, "type"))
        .and_then(|t| t.attribute("machine"))
        .unwrap_or_default();
    if !machine.contains("q35") {
        return Err(DomainXmlError::NotQ35 {
            machine: machine.to_string(),
        });
    }
    let mut plan = SlotPlan {
        root_ports: 0,
        nics: 0,
        nics_on_ports: 0,
        other_devices: 0,
        capacity,
        to_add: 0,
    };
    let (mut usb, mut balloon) = (false, false);
    for d in child(root, "devices")
        .into_iter()
        .flat_map(|d| d.children())
        .filter(|n| n.is_element())
    {
        let kind = d.attribute("type").unwrap_or_default();
        let model = d.attribute("model").unwrap_or_default();
        match d.tag_name().name() {
            "controller" if kind == "pci" && model == "pcie-root-port" => plan.root_ports += 1,
            "interface" => {
                plan.nics += 1;
                plan.nics_on_ports += usize::from(on_a_port(d));
            }
            "controller" if kind == "usb" => {
                usb = true;
                if model != "none" && !model.starts_with("ich9") && on_a_port(d) {
                    plan.other_devices += 1;
                }
            }
            "memballoon" => {
                balloon = true;
                if model != "none" && on_a_port(d) {
                    plan.other_devices += 1;
                }
            }
            "controller" if matches!(kind, "scsi" | "virtio-serial") && on_a_port(d) => {
                plan.other_devices += 1
            }
            "controller" if kind == "pci" && model == "pcie-to-pci-bridge" => {
                plan.other_devices += 1
            }
            "disk"
                if child(d, "target").and_then(|t| t.attribute("bus")) == Some("virtio")
                    && on_a_port(d) =>
            {
                plan.other_devices += 1
            }
            "rng" | "filesystem" | "vsock" | "hostdev" if on_a_port(d) => plan.other_devices += 1,
            "input"
                if (kind == "virtio" || d.attribute("bus") == Some("virtio")) && on_a_port(d) =>
            {
                plan.other_devices += 1
            }
            _ => {}
        }
    }
    // What libvirt adds to a q35 domain that does not say otherwise: a qemu-xhci USB controller
    // and a virtio memory balloon, each on a root port.
    plan.other_devices += usize::from(!usb) + usize::from(!balloon);
    if plan.nics > capacity {
        return Err(DomainXmlError::OverCapacity {
            nics: plan.nics,
            capacity,
        });
    }
    let needed = plan.other_devices + plan.nics_on_ports + (capacity - plan.nics);
    plan.to_add = needed.saturating_sub(plan.root_ports);
    Ok(plan)
}

/// The domain XML with the root ports [`plan_slots`] asks for added at the end of `<devices>`
/// (the rest of the document is kept byte for byte), and the plan.
pub fn add_slots(xml: &str, capacity: usize) -> Result<(String, SlotPlan), DomainXmlError> {
    let plan = plan_slots(xml, capacity)?;
    if plan.to_add == 0 {
        return Ok((xml.to_string(), plan));
    }
    let doc = parse(xml)?;
    let root = doc.root_element();
    let port = "<controller type='pci' model='pcie-root-port'/>";
    // Without an explicit pcie-root, libvirt would number the first root port 0 and refuse it.
    let has_root = child(root, "devices").is_some_and(|d| {
        d.children().any(|c| {
            c.has_tag_name("controller")
                && c.attribute("type") == Some("pci")
                && c.attribute("model") == Some("pcie-root")
        })
    });
    let mut lines: Vec<&str> = Vec::with_capacity(plan.to_add + 1);
    if !has_root {
        lines.push("<controller type='pci' index='0' model='pcie-root'/>");
    }
    lines.extend(std::iter::repeat_n(port, plan.to_add));
    let mut out = String::with_capacity(xml.len() + lines.len() * (port.len() + 8));
    match child(root, "devices") {
        Some(devices) => {
            let range = devices.range();
            let element = &xml[range.clone()];
            let indent = indent_before(xml, range.start);
            let inner = format!("{indent}  ");
            if let Some(close) = element.rfind("</") {
                // <devices>…</devices>: before the closing tag, each on its own line.
                let at = range.start + close;
                let line_start = xml[..at].rfind('\n').map_or(0, |i| i + 1);
                let insert_at = if xml[line_start..at].trim().is_empty() {
                    line_start
                } else {
                    at
                };
                out.push_str(&xml[..insert_at]);
                if insert_at == at {
                    out.push('\n');
                }
                for l in &lines {
                    let _ = writeln!(out, "{inner}{l}");
                }
                if insert_at == at {
                    out.push_str(&indent);
                }
                out.push_str(&xml[insert_at..]);
            } else {
                // <devices/>
                out.push_str(&xml[..range.start]);
                out.push_str("<devices>\n");
                for l in &lines {
                    let _ = writeln!(out, "{inner}{l}");
                }
                let _ = write!(out, "{indent}</devices>");
                out.push_str(&xml[range.end..]);
            }
        }
        None => {
            let range = root.range();
            let close = xml[..range.end].rfind("</").unwrap_or(range.end);
            out.push_str(&xml[..close]);
            out.push_str("  <devices>\n");
            for l in &lines {
                let _ = writeln!(out, "    {l}");
            }
            out.push_str("  </devices>\n");
            out.push_str(&xml[close..]);
        }
    }
    Ok((out, plan))
}

fn parse(xml: &str) -> Result<roxmltree::Document<'_>, DomainXmlError> {
    let doc = roxmltree::Document::parse(xml)?;
    let root = doc.root_element().tag_name().name().to_string();
    if root != "domain" {
        return Err(DomainXmlError::NotADomain(root));
    }
    Ok(doc)
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(tag))
}

/// Whether a device sits behind a root port: no PCI address (libvirt picks a port) or one on a
/// bus other than the root bus 0.
fn on_a_port(d: roxmltree::Node<'_, '_>) -> bool {
    match child(d, "address") {
        Some(a) if a.attribute("type") == Some("pci") => a
            .attribute("bus")
            .and_then(|b| u32::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .is_none_or(|bus| bus != 0),
        Some(_) => false,
        None => true,
    }
}

/// The whitespace between the start of the line and `at`.
fn indent_before(xml: &str, at: usize) -> String {
    let line_start = xml[..at].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &xml[line_start..at];
    if prefix.trim().is_empty() {
        prefix.to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "<domain type='qemu'>\n  <name>d</name>\n  <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>\n  <devices>\n    <controller type='pci' model='pcie-root'/>\n    <interface type='ethernet'>\n      <mac address='02:AA:00:00:00:01'/>\n      <model type='virtio'/>\n    </interface>\n  </devices>\n</domain>\n";

    #[test]
    fn counts_nics_implicit_devices_and_ports() {
        let p = plan_slots(BASE, 4).unwrap();
        // USB + balloon are implicit; the NIC already there is one of the 4.
        assert_eq!(
            (p.root_ports, p.nics, p.other_devices, p.to_add),
            (0, 1, 2, 6)
        );
        assert_eq!(p.hotplug_slots(), 3);
        let explicit = BASE.replace(
            "<controller type='pci' model='pcie-root'/>",
            "<controller type='pci' model='pcie-root'/><controller type='usb' model='none'/><memballoon model='none'/><controller type='pci' model='pcie-root-port'/>",
        );
        let p = plan_slots(&explicit, 4).unwrap();
        assert_eq!((p.root_ports, p.other_devices, p.to_add), (1, 0, 3));
    }

    #[test]
    fn adds_ports_before_the_closing_tag_keeping_the_rest() {
        let (xml, plan) = add_slots(BASE, 2).unwrap();
        assert_eq!(plan.to_add, 4);
        assert_eq!(xml.matches("model='pcie-root-port'").count(), 4);
        assert!(xml.contains("    <controller type='pci' model='pcie-root-port'/>\n  </devices>"));
        assert_eq!(
            xml.replace("    <controller type='pci' model='pcie-root-port'/>\n", ""),
            BASE
        );
        // Idempotent: the ports added satisfy the plan.
        let (again, plan) = add_slots(&xml, 2).unwrap();
        assert_eq!((plan.to_add, again), (0, xml));
    }

    #[test]
    fn a_pcie_root_comes_first_when_the_xml_has_none() {
        let bare = BASE.replace("    <controller type='pci' model='pcie-root'/>\n", "");
        let (xml, plan) = add_slots(&bare, 2).unwrap();
        assert_eq!(plan.to_add, 4);
        let root = xml.find("model='pcie-root'/>").unwrap();
        assert!(root < xml.find("model='pcie-root-port'").unwrap());
        assert_eq!(xml.matches("model='pcie-root'/>").count(), 1);
    }

    #[test]
    fn refuses_what_cannot_work() {
        assert!(matches!(
            plan_slots(&BASE.replace("q35", "pc-i440fx-8.0"), 2),
            Err(DomainXmlError::NotQ35 { .. })
        ));
        assert!(matches!(
            plan_slots(BASE, 0),
            Err(DomainXmlError::OverCapacity {
                nics: 1,
                capacity: 0
            })
        ));
        assert!(matches!(
            plan_slots("<pod/>", 1),
            Err(DomainXmlError::NotADomain(_))
        ));
        assert!(matches!(
            plan_slots("<domain", 1),
            Err(DomainXmlError::Xml(_))
        ));
    }

    #[test]
    fn devices_on_the_root_bus_take_no_port() {
        let xml = BASE.replace(
            "</interface>",
            "<address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></interface><disk type='file'><target dev='vda' bus='virtio'/></disk>",
        );
        let p = plan_slots(&xml, 2).unwrap();
        assert_eq!((p.other_devices, p.nics_on_ports), (3, 0));
        // USB, balloon, disk and the one NIC still to come.
        assert_eq!(p.to_add, 4);
    }

    #[test]
    fn reads_interfaces() {
        let i = interfaces(BASE).unwrap();
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].mac.as_deref(), Some("02:aa:00:00:00:01"));
        assert_eq!(i[0].model.as_deref(), Some("virtio"));
        assert_eq!(i[0].kind, "ethernet");
    }
}
