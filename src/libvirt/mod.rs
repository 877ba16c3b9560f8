//! Libvirt-managed VMs: the domain XML hotnic reads and writes ([`domain`]) and the `virsh`
//! client the agent drives ([`virsh`]).
//!
//! hotnic talks to libvirt through `virsh` (libvirt-clients) rather than binding the C library:
//! the crate then builds and tests on machines without libvirt's headers, nothing LGPL is linked
//! into the binary, and every call is a child process with a timeout the async runtime never
//! blocks on. A plug is a handful of calls of ~10 ms each, far below the time a guest takes to
//! see the device.

pub mod domain;
pub mod virsh;

use std::io::{Read, Write};

/// Arguments of `hotnic domain-slots`.
#[derive(Debug, Clone, clap::Args)]
pub struct DomainSlotsArgs {
    /// Interface capacity: NICs the domain must be able to hold in total (boot NICs included),
    /// the same number the webhook enforces on the workload.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub capacity: u8,
}

/// `hotnic domain-slots --capacity N < domain.xml > domain.xml`: adds the `pcie-root-port`s a q35
/// domain needs so that N NICs fit, and says on stderr what it counted. Exit 0, or 2 on input it
/// cannot use (nothing written to stdout then).
pub fn domain_slots(
    args: &DomainSlotsArgs,
    input: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut xml = String::new();
    if let Err(e) = input.read_to_string(&mut xml) {
        let _ = writeln!(err, "hotnic domain-slots: reading the domain XML: {e}");
        return 2;
    }
    match domain::add_slots(&xml, usize::from(args.capacity)) {
        Ok((xml, p)) => {
            let _ = writeln!(
                err,
                "hotnic domain-slots: capacity {}: {} NIC(s) in the XML, {} other device(s) on root \
                 ports, {} root port(s) there; added {} (room for {} hot-plugged NIC(s))",
                p.capacity,
                p.nics,
                p.other_devices,
                p.root_ports,
                p.to_add,
                p.hotplug_slots()
            );
            match out.write_all(xml.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = writeln!(err, "hotnic domain-slots: writing: {e}");
                    1
                }
            }
        }
        Err(e) => {
            let _ = writeln!(err, "hotnic domain-slots: {e}");
            2
        }
    }
}
