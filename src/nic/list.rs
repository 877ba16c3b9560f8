//! `list`: the NICs of an object as rows (from the dialect readers' `Workload`), the agent's
//! reported state from `hotnic.io/nic-status`, and the interface capacity.

use super::edit::{self, EditError};
use super::render::table;
use crate::agent::status::NicStatus;
use crate::dialect::{Kind, annotations};
use crate::model::{Dialect, Nic, Workload};
use serde::Serialize;
use serde_json::Value;

/// Why a NIC cannot be hot-unplugged: the primary.
pub const WHY_PRIMARY: &str = "primary NIC";
/// Why a NIC cannot be hot-unplugged: KubeVirt unplugs bridge interfaces only.
pub const WHY_BINDING: &str = "KubeVirt: only bridge binding can be unplugged";
/// Why a NIC cannot be hot-unplugged: it is being unplugged.
pub const WHY_ABSENT: &str = "already being unplugged";

/// One NIC as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NicRow {
    /// Interface name (`None`: unnamed, which hotnic's webhook denies).
    pub name: Option<String>,
    /// The network (`ns/name`; the subnet for Arktos; `(pod network)`, `(cluster default)`).
    pub network: Option<String>,
    /// The MAC.
    pub mac: Option<String>,
    /// The workload's primary NIC.
    pub primary: bool,
    /// Present (not KubeVirt `state: absent`).
    pub present: bool,
    /// Whether `remove` may unplug it.
    pub hot_unpluggable: bool,
    /// Why not, when it may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_unpluggable_because: Option<String>,
    /// Binding method (KubeVirt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    /// Static IPs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Arktos port ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    /// State the node agent reported (`Ready`, `InProgress`, `Failed`, `Unknown`), or `absent`
    /// for a KubeVirt interface being unplugged that no agent reported on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why it is not Ready, as reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Field path of the NIC in the object.
    pub field: String,
}

/// The NICs of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    /// `Pod`, `VirtualMachine`, `VirtualMachineInstance`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `multus`, `arktos`, `kubevirt-vm`, `kubevirt-vmi`.
    pub dialect: String,
    /// The interface capacity, when set.
    pub capacity: Option<u8>,
    /// Where the capacity comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_from: Option<String>,
    /// NICs that count against the capacity (present ones, the primary included).
    pub in_use: usize,
    /// Slots left for hot-plug (`None`: no capacity set).
    pub remaining: Option<usize>,
    /// The NICs, in order.
    pub nics: Vec<NicRow>,
}

/// The statuses the agent reported: `hotnic.io/nic-status`, else Arktos `status.nicStatuses`.
fn statuses(obj: &Value) -> Vec<NicStatus> {
    let from_annotation = annotations::get(obj, annotations::NIC_STATUS)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Vec<NicStatus>>(s).ok());
    from_annotation
        .or_else(|| {
            obj.get("status")
                .and_then(|s| s.get("nicStatuses"))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
        })
        .unwrap_or_default()
}

fn network_of(w: &Workload, nic: &Nic) -> Option<String> {
    if nic.implicit {
        let custom = w.primary_network.as_ref().and_then(|f| f.value.as_str());
        return Some(custom.map_or("(cluster default)".to_string(), str::to_string));
    }
    if nic.binding_field("network.pod").is_some() {
        return Some("(pod network)".into());
    }
    let net = nic.network.as_ref()?;
    Some(match w.dialect {
        Dialect::Arktos => net.name.clone(),
        _ => net.to_string(),
    })
}

/// Why a NIC cannot be hot-unplugged, if it cannot.
pub fn why_not_unpluggable(w: &Workload, nic: &Nic) -> Option<&'static str> {
    if nic.primary || nic.implicit {
        Some(WHY_PRIMARY)
    } else if !nic.present {
        Some(WHY_ABSENT)
    } else if w.dialect.is_kubevirt() && nic.method.as_deref() != Some("bridge") {
        Some(WHY_BINDING)
    } else {
        None
    }
}

/// The row of one NIC.
pub fn row(w: &Workload, nic: &Nic, statuses: &[NicStatus]) -> NicRow {
    let why = why_not_unpluggable(w, nic);
    let reported = nic
        .name
        .as_deref()
        .and_then(|n| statuses.iter().find(|s| s.name == n));
    let state = reported
        .and_then(|s| serde_json::to_value(s.state).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .or_else(|| (!nic.present).then(|| "absent".to_string()));
    NicRow {
        name: nic.name.clone(),
        network: network_of(w, nic),
        mac: nic.mac.clone(),
        primary: nic.primary,
        present: nic.present,
        hot_unpluggable: why.is_none(),
        not_unpluggable_because: why.map(str::to_string),
        binding: nic.method.clone(),
        ips: nic.ips.clone(),
        port_id: nic.port_id.clone(),
        state,
        reason: reported.map(|s| s.reason.clone()).filter(|r| !r.is_empty()),
        field: nic.path.to_string(),
    }
}

/// Lists an object's NICs (`default_ns` for objects that name no namespace).
pub fn listing(kind: Kind, obj: &Value, default_ns: &str) -> Result<Listing, EditError> {
    let w = edit::workload(kind, obj, default_ns)?;
    let st = statuses(obj);
    let capacity = w.capacity.effective();
    let capacity_from = capacity.map(|_| {
        let valid = |f: &Option<crate::model::Field>| {
            f.as_ref()
                .is_some_and(|f| crate::model::parse_capacity(&f.value).is_ok())
        };
        if valid(&w.capacity.annotation) {
            annotations::CAPACITY.to_string()
        } else {
            format!(
                "resources.requests[{}]",
                annotations::KUBEVIRT_INTERFACE_RESOURCE
            )
        }
    });
    let in_use = w.present().count();
    let meta = |k: &str| {
        obj.get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(Listing {
        kind: kind.as_str().to_string(),
        namespace: edit::namespace_of(obj, default_ns).to_string(),
        name: meta("name"),
        dialect: w.dialect.as_str().to_string(),
        capacity,
        capacity_from,
        in_use,
        remaining: capacity.map(|c| usize::from(c).saturating_sub(in_use)),
        nics: w.nics.iter().map(|n| row(&w, n, &st)).collect(),
    })
}

/// The table's header.
pub const HEADER: [&str; 7] = [
    "NAME",
    "NETWORK",
    "MAC",
    "PRIMARY",
    "HOT-UNPLUGGABLE",
    "STATE",
    "REASON",
];
/// The extra columns of `-o wide`.
pub const WIDE: [&str; 4] = ["BINDING", "IPS", "PORT-ID", "FIELD"];

fn dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

fn yes_no(b: bool) -> String {
    (if b { "yes" } else { "no" }).to_string()
}

/// The cells of a row.
pub fn cells(r: &NicRow, wide: bool) -> Vec<String> {
    let mut c = vec![
        dash(r.name.as_deref()),
        dash(r.network.as_deref()),
        dash(r.mac.as_deref()),
        yes_no(r.primary),
        match &r.not_unpluggable_because {
            None => "yes".to_string(),
            Some(why) => format!("no ({why})"),
        },
        dash(r.state.as_deref()),
        dash(r.reason.as_deref()),
    ];
    if wide {
        c.push(dash(r.binding.as_deref()));
        c.push(if r.ips.is_empty() {
            "-".into()
        } else {
            r.ips.join(",")
        });
        c.push(dash(r.port_id.as_deref()));
        c.push(r.field.clone());
    }
    c
}

/// The table of some rows (header first).
pub fn rows_table(rows: &[&NicRow], wide: bool) -> String {
    let mut header: Vec<String> = HEADER.iter().map(|s| s.to_string()).collect();
    if wide {
        header.extend(WIDE.iter().map(|s| s.to_string()));
    }
    let mut all = vec![header];
    all.extend(rows.iter().map(|r| cells(r, wide)));
    table(&all)
}

/// The capacity line.
pub fn capacity_line(l: &Listing) -> String {
    let nics = if l.in_use == 1 { "NIC" } else { "NICs" };
    match (l.capacity, l.remaining) {
        (Some(c), Some(left)) => format!(
            "Capacity: {c} ({}); {} {nics} in use, {left} slot{} remaining",
            l.capacity_from.as_deref().unwrap_or(""),
            l.in_use,
            if left == 1 { "" } else { "s" }
        ),
        _ => format!(
            "Capacity: not set ({} unset); {} {nics} in use, hot-plug not limited by hotnic",
            annotations::CAPACITY,
            l.in_use
        ),
    }
}

/// The whole listing as a table plus the capacity line.
pub fn render_table(l: &Listing, wide: bool) -> String {
    let rows: Vec<&NicRow> = l.nics.iter().collect();
    format!("{}\n{}\n", rows_table(&rows, wide), capacity_line(l))
}
