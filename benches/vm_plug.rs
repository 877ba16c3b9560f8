//! VM NIC attach and detach latency through a real libvirtd with QEMU (TCG) and the tiny test
//! guest: [`VmPlugger::attach`] (tap made, attached live, moved into the pod's namespace and
//! bridged, until the live domain XML shows the MAC: what the agent waits for before Ready), the
//! time until the guest's kernel has the NIC (its console line), and [`VmPlugger::detach`] (until
//! the live XML no longer shows it, then tap and bridge removed).
//!
//! `cargo bench --bench vm_plug` (root, libvirt tier, guest from `examples/vm/build-guest.sh`).
//! Knob: `HOTNIC_BENCH_ROUNDS` (20). Prints p50/p99 of each.
#[path = "../tests/support/agent_env.rs"]
mod agent_env;
#[path = "../tests/support/libvirt.rs"]
mod libvirt;

use agent_env::{Netns, sh, unique};
use hotnic::agent::vm::{VmPlugger, VmPort};
use hotnic::libvirt::virsh::Virsh;
use libvirt::*;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let Some(lv) = libvirt_or_skip("vm_plug bench") else {
        return;
    };
    let Some(guest) = guest_or_skip("vm_plug bench") else {
        return;
    };
    let rounds: usize = std::env::var("HOTNIC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let name = format!("{DOMAIN_PREFIX}bench{}", unique());
    let dom = TestDomain::start(lv, &name, 2, &["02:ee:00:00:00:01"], Some(&guest));
    let booted = Instant::now();
    while !dom
        .guest_nics()
        .is_some_and(|n| n.contains("02:ee:00:00:00:01"))
    {
        assert!(
            booted.elapsed() < Duration::from_secs(120),
            "guest did not boot"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The pod: a namespace with a stand-in for the CNI interface.
    let pod = Netns::new("vmbench");
    sh(&[
        "ip", "-n", &pod.name, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
    ]);
    let plugger = VmPlugger {
        virsh: Virsh::new(URI),
        poll: Duration::from_millis(10),
        ..VmPlugger::default()
    };
    let port = VmPort::new(&name, &pod.name, "eth1");
    let (mut attach, mut seen, mut detach) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let mac = format!("02:ee:00:00:01:{:02x}", i % 256);
        let t = Instant::now();
        plugger
            .attach(&port, &pod.path(), "eth1", &mac)
            .await
            .expect("attach");
        attach.push(t.elapsed());
        while !dom.guest_nics().is_some_and(|n| n.contains(&mac)) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "guest never saw {mac}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen.push(t.elapsed());
        let t = Instant::now();
        plugger
            .detach(&port, Some(&pod.path()), &mac)
            .await
            .expect("detach");
        detach.push(t.elapsed());
        while dom.guest_nics().is_some_and(|n| n.contains(&mac)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    println!("vm_plug: {rounds} rounds, q35 TCG guest (1 vCPU, 128 MiB), libvirt via virsh");
    for (what, v) in [
        ("attach until the live XML shows it (Ready)", &mut attach),
        ("attach until the guest kernel has it", &mut seen),
        (
            "detach until the live XML drops it (+ tap, bridge removed)",
            &mut detach,
        ),
    ] {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!("  {what:<62} p50 {:>9}  p99 {:>9}", ms(p50), ms(p99));
    }
}
