//! VM pods through a real libvirtd with QEMU (TCG): `hotnic agent --pods-dir` plugs NICs into the
//! pod's libvirt domain, the guest sees them, unplug waits for the guest to let go, and the
//! capacity the webhook enforces is exactly what `domain-slots` reserves.
//!
//! The libvirt tier (see `support/libvirt.rs`): root, libvirtd, virsh, QEMU; the guest tests also
//! the tiny guest from `examples/vm/build-guest.sh`. Otherwise each test prints SKIPPED.

#[path = "support/agent_env.rs"]
mod agent_env;
#[path = "support/libvirt.rs"]
mod libvirt;

use agent_env::*;
use libvirt::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// An Arktos VM pod as the webhook leaves it (`hotnic check` mutates it: MACs, capacity), with
/// `eth0` the primary NIC and the others on network `vmnet`.
fn vm_pod(namespace: &str, uid: &str, capacity: u8, nics: &[&str]) -> Value {
    let list: Vec<Value> = nics
        .iter()
        .enumerate()
        .map(|(i, n)| match i {
            0 => json!({"name": n, "portID": format!("port-{n}")}),
            _ => json!({"name": n, "portID": format!("port-{n}"), "subnetName": "vmnet"}),
        })
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vm", "namespace": namespace, "uid": uid,
            "annotations": {"hotnic.io/interface-capacity": capacity.to_string()}},
        "spec": {"nics": list, "virtualMachine": {"name": "vm", "image": "tiny"}}});
    let (code, out, err) = check(&["--new"], &pod, None);
    assert_eq!(code, 0, "the webhook's policy refused the pod: {out}{err}");
    yaml_object(&out)
}

/// Runs `hotnic check ARGS <file>` (`--old` file when `old`): (exit code, stdout, stderr).
fn check(args: &[&str], obj: &Value, patch: Option<&Value>) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("obj.json");
    std::fs::write(&file, obj.to_string()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hotnic"));
    cmd.arg("check").args(args).arg(&file);
    if let Some(p) = patch {
        let pf = dir.path().join("patch.json");
        std::fs::write(&pf, p.to_string()).unwrap();
        cmd.arg("--json-patch").arg(pf);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The object `hotnic check` printed after its verdict line and `---`.
fn yaml_object(out: &str) -> Value {
    let doc = out.split_once("\n---\n").map_or(out, |(_, d)| d);
    serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("check output: {e}:\n{out}"))
}

/// The MAC the webhook gave a NIC.
fn mac_of(pod: &Value, nic: &str) -> String {
    let map: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["hotnic.io/mac-addresses"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    map[nic].as_str().unwrap().to_string()
}

/// `hotnic agent --pods-dir` in this (libvirtd's) namespace, CNI plugins run in the node's.
fn vm_agent(node: &Node, detach_timeout: &str) -> Agent {
    let log = node.dir.path().join(format!("agent-{}.log", unique()));
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hotnic"))
        .arg("agent")
        .arg("--pods-dir")
        .arg(node.pods_dir())
        .arg("--state-dir")
        .arg(node.state_dir())
        .arg("--plugin-netns")
        .arg(node.ns.path())
        .args(["--netns-path-template", "/run/netns/{uid}"])
        .args(["--poll-interval", "100ms", "--backoff-base", "200ms"])
        .args(["--backoff-max", "1s", "--libvirt-uri", URI])
        .args(["--vm-detach-timeout", detach_timeout])
        .env("RUST_LOG", "hotnic=debug")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("starting hotnic agent");
    Agent { child, log }
}

/// Waits until the status file shows the NICs in these states.
fn states(
    node: &Node,
    ns: &str,
    want: &[(&str, &str)],
    agent: &Agent,
) -> Vec<(String, String, String)> {
    let limit = LIMIT;
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("NIC states {want:?}"), limit, || {
            let s = node.status(ns, "vm").ok_or("no status file")?;
            let st = nic_states(&s);
            let matches = st.len() == want.len()
                && want
                    .iter()
                    .all(|(n, w)| st.iter().any(|(name, state, _)| name == n && state == w));
            if matches {
                Ok(st)
            } else {
                Err(format!("{st:?}"))
            }
        })
    }));
    got.unwrap_or_else(|e| {
        eprintln!("agent log:\n{}", agent.log());
        std::panic::resume_unwind(e)
    })
}

fn link_exists_anywhere(name: &str, ns: &Netns) -> bool {
    let host = Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .unwrap();
    let pod = Command::new("ip")
        .args(["-n", &ns.name, "link", "show", "dev", name])
        .output()
        .unwrap();
    host.status.success() || pod.status.success()
}

fn taps(ns: &Netns) -> Vec<String> {
    ns.links()
        .into_iter()
        .filter(|l| l.starts_with("hnt"))
        .collect()
}

/// With capacity 3, the domain gets the slots for exactly 3 NICs: eth0 at boot and the two the
/// agent hot-plugs fill them; the webhook refuses a 4th NIC, and libvirt would have refused it too.
#[test]
fn capacity_n_fits_exactly_n_nics_and_the_webhook_refuses_the_next() {
    let Some(lv) =
        libvirt_or_skip("capacity_n_fits_exactly_n_nics_and_the_webhook_refuses_the_next")
    else {
        return;
    };
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("vmpod");
    let ns = format!("{DOMAIN_PREFIX}{}", unique());
    let pod = vm_pod(&ns, &pod_ns.name, 3, &["eth0", "eth1", "eth2"]);
    let dom = TestDomain::start(lv, &format!("{ns}_vm"), 3, &[&mac_of(&pod, "eth0")], None);
    node.put(
        "nad",
        &node.bridge_nad(&ns, "vmnet", "hnbrv1", "10.93.0.0/24"),
    );
    node.put("pod", &pod);
    let agent = vm_agent(&node, "2s");

    states(&node, &ns, &[("eth1", "Ready"), ("eth2", "Ready")], &agent);
    let mut want: Vec<(String, String)> = ["eth0", "eth1", "eth2"]
        .iter()
        .map(|n| (mac_of(&pod, n), "virtio".to_string()))
        .collect();
    let mut got = dom.iflist();
    want.sort();
    got.sort();
    assert_eq!(got, want, "domiflist: the NICs' MACs, virtio");
    // The tap of each hot-plugged NIC sits in the pod's namespace, in a bridge with the CNI link.
    assert_eq!(taps(&pod_ns).len(), 2, "{:?}", pod_ns.links());

    // A 4th NIC: the webhook denies it, naming the field and the capacity.
    let add = json!([{"op": "add", "path": "/spec/nics/-",
        "value": {"name": "eth3", "portID": "port-eth3", "subnetName": "vmnet"}}]);
    let (code, out, err) = check(&["--old"], &pod, Some(&add));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("spec.nics[3]") && out.contains("interface capacity 3"),
        "{out}"
    );
    // And the domain really has no slot left for it.
    let extra = node.dir.path().join("extra.xml");
    std::fs::write(
        &extra,
        "<interface type='ethernet'><mac address='02:ee:00:00:00:04'/><model type='virtio'/></interface>",
    )
    .unwrap();
    let (ok, _, err) = virsh(&[
        "attach-device",
        &dom.name,
        extra.to_str().unwrap(),
        "--live",
    ]);
    assert!(
        !ok,
        "a 4th NIC was attached: the domain had more slots than the capacity"
    );
    assert!(err.contains("PCI"), "{err}");
    drop(agent);
}

/// A domain with no OS never releases a NIC: the unplug ends Failed with the reason, nothing is
/// torn down (tap, lease, cache entry stay); once the domain is gone the unplug completes.
#[test]
fn a_guest_that_never_releases_the_nic_ends_failed_not_torn_down() {
    let Some(lv) = libvirt_or_skip("a_guest_that_never_releases_the_nic_ends_failed_not_torn_down")
    else {
        return;
    };
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("vmpod");
    let ns = format!("{DOMAIN_PREFIX}{}", unique());
    let pod = vm_pod(&ns, &pod_ns.name, 2, &["eth0", "eth1"]);
    let dom = TestDomain::start(lv, &format!("{ns}_vm"), 2, &[], None);
    node.put(
        "nad",
        &node.bridge_nad(&ns, "vmnet", "hnbrv2", "10.94.0.0/24"),
    );
    node.put("pod", &pod);
    let agent = vm_agent(&node, "1s");
    states(&node, &ns, &[("eth1", "Ready")], &agent);
    let mac = mac_of(&pod, "eth1");
    assert_eq!(dom.iflist(), [(mac.clone(), "virtio".to_string())]);
    let tap = taps(&pod_ns);
    assert_eq!(tap.len(), 1);
    assert_eq!(node.leases("vmnet").len(), 1);

    // Unplug eth1 (edit the pod file): the guest never lets go.
    let (code, out, err) = check(
        &["--old"],
        &pod,
        Some(&json!([{"op": "remove", "path": "/spec/nics/1"}])),
    );
    assert_eq!(code, 0, "{out}{err}");
    node.put("pod", &yaml_object(&out));
    let st = states(&node, &ns, &[("eth1", "Failed")], &agent);
    assert!(
        st[0].2.contains("did not release NIC") && st[0].2.contains(&mac),
        "{st:?}"
    );
    assert_eq!(dom.iflist().len(), 1, "still attached");
    assert!(link_exists_anywhere(&tap[0], &pod_ns), "the tap must stay");
    assert_eq!(node.leases("vmnet").len(), 1, "the lease must stay");
    assert!(!node.cache_files().is_empty(), "the cache entry must stay");

    // The VM goes away: its devices with it; the retry tears everything down.
    dom.destroy();
    wait_for("the unplug to complete", LIMIT, || {
        let s = node.status(&ns, "vm").ok_or("no status")?;
        let st = nic_states(&s);
        let done = st.is_empty()
            && node.leases("vmnet").is_empty()
            && node.cache_files().is_empty()
            && !link_exists_anywhere(&tap[0], &pod_ns);
        if done {
            Ok(())
        } else {
            Err(format!("{st:?} leases {:?}", node.leases("vmnet")))
        }
    });
    drop(agent);
}

/// The README's walkthrough: a VM pod file, a running tiny guest; editing the file in plugs eth1,
/// the guest sees it by its MAC; editing it out unplugs it, the tap and the lease are freed.
#[test]
fn the_guest_sees_a_hot_plugged_nic_and_lets_it_go() {
    let test = "the_guest_sees_a_hot_plugged_nic_and_lets_it_go";
    let Some(lv) = libvirt_or_skip(test) else {
        return;
    };
    let Some(guest) = guest_or_skip(test) else {
        return;
    };
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("vmpod");
    let ns = format!("{DOMAIN_PREFIX}{}", unique());
    let one = vm_pod(&ns, &pod_ns.name, 4, &["eth0"]);
    let eth0 = mac_of(&one, "eth0");
    let dom = TestDomain::start(lv, &format!("{ns}_vm"), 4, &[&eth0], Some(&guest));
    node.put(
        "nad",
        &node.bridge_nad(&ns, "vmnet", "hnbrv3", "10.95.0.0/24"),
    );
    node.put("pod", &one);
    let agent = vm_agent(&node, "20s");
    wait_for("the guest to boot", LIMIT, || {
        dom.guest_nics()
            .filter(|n| n.contains(&eth0))
            .ok_or_else(|| dom.console())
    });

    // Hot-plug eth1: an edit of the pod file, through the webhook's policy.
    let add = json!([{"op": "add", "path": "/spec/nics/-",
        "value": {"name": "eth1", "portID": "port-eth1", "subnetName": "vmnet"}}]);
    let (code, out, err) = check(&["--old"], &one, Some(&add));
    assert_eq!(code, 0, "{out}{err}");
    let two = yaml_object(&out);
    let mac = mac_of(&two, "eth1");
    node.put("pod", &two);
    states(&node, &ns, &[("eth1", "Ready")], &agent);
    let seen = wait_for("the guest to see eth1's MAC", LIMIT, || {
        dom.guest_nics()
            .filter(|n| n.contains(&mac))
            .ok_or_else(|| dom.guest_nics().unwrap_or_default())
    });
    assert!(seen.contains(&format!("eth1={mac}")), "{seen}");
    let tap = taps(&pod_ns);
    assert_eq!(tap.len(), 1);
    assert_eq!(node.leases("vmnet").len(), 1);

    // Unplug: the guest releases it, then tap, bridge and lease go.
    node.put("pod", &one);
    states(&node, &ns, &[], &agent);
    let after = dom.guest_nics().unwrap_or_default();
    assert!(!after.contains(&mac), "{after}");
    assert_eq!(dom.iflist().len(), 1);
    assert!(!link_exists_anywhere(&tap[0], &pod_ns));
    assert!(node.leases("vmnet").is_empty());
    assert!(node.cache_files().is_empty());
    drop(agent);
}
