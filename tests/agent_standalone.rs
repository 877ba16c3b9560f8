//! `hotnic agent --pods-dir` end to end, as root, with the real bridge and macvlan plugins and
//! host-local IPAM, in network namespaces the tests create (a "node" namespace that holds the
//! bridges and the macvlan master, and one namespace per pod).

#[path = "support/agent_env.rs"]
mod agent_env;

use agent_env::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn ready_nics(node: &Node, ns: &str, name: &str, want: usize) -> serde_json::Value {
    wait_for(&format!("{want} Ready NICs of {ns}/{name}"), LIMIT, || {
        let s = node.status(ns, name).ok_or("no status file")?;
        let states = nic_states(&s);
        if states.len() == want && states.iter().all(|(_, st, _)| st == "Ready") {
            Ok(s)
        } else {
            Err(format!("{states:?}"))
        }
    })
}

#[test]
fn plug_two_nics_unplug_one_then_delete_the_pod() {
    require_root_and_plugins();
    let node = Node::new();
    sh(&[
        "ip",
        "-n",
        &node.ns.name,
        "link",
        "add",
        "mvm0",
        "type",
        "veth",
        "peer",
        "name",
        "mvm0p",
    ]);
    sh(&["ip", "-n", &node.ns.name, "link", "set", "mvm0", "up"]);
    let pod_ns = Netns::new("pod");
    node.put(
        "nad-br",
        &node.bridge_nad("t1", "brnet", "hnbr0", "10.91.0.0/24"),
    );
    node.put(
        "nad-mv",
        &node.macvlan_nad("t1", "mvnet", "mvm0", "10.92.0.0/24"),
    );
    let two = [
        ("brnet", "eth1", "02:00:00:0a:00:01"),
        ("mvnet", "eth2", "02:00:00:0a:00:02"),
    ];
    node.put("pod", &multus_pod("t1", "web", &pod_ns.name, &two));
    let agent = node.agent(&[], &[]);

    let status = ready_nics(&node, "t1", "web", 2);
    let addrs = pod_ns.addrs();
    let find = |n: &str| addrs.iter().find(|(i, _, _)| i == n).cloned();
    let eth1 = find("eth1").expect("eth1 in the pod");
    let eth2 = find("eth2").expect("eth2 in the pod");
    assert_eq!(eth1.1, "02:00:00:0a:00:01");
    assert_eq!(eth2.1, "02:00:00:0a:00:02");
    assert!(
        eth1.2.len() == 1 && eth1.2[0].starts_with("10.91.0."),
        "{eth1:?}"
    );
    assert!(
        eth2.2.len() == 1 && eth2.2[0].starts_with("10.92.0."),
        "{eth2:?}"
    );
    assert_eq!(
        node.leases("brnet"),
        vec![eth1.2[0].split('/').next().unwrap().to_string()]
    );
    assert_eq!(
        node.leases("mvnet"),
        vec![eth2.2[0].split('/').next().unwrap().to_string()]
    );
    // Multus network-status: default entry first and untouched, then ours in order.
    let ns_text = status["annotations"]["k8s.v1.cni.cncf.io/network-status"]
        .as_str()
        .unwrap();
    let ns_list: serde_json::Value = serde_json::from_str(ns_text).unwrap();
    let ifaces: Vec<_> = ns_list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["interface"].as_str().unwrap())
        .collect();
    assert_eq!(ifaces, ["eth0", "eth1", "eth2"]);
    assert_eq!(ns_list[0]["ips"][0], "10.244.0.9");
    assert_eq!(ns_list[1]["name"], "t1/brnet");
    assert_eq!(ns_list[2]["mac"], "02:00:00:0a:00:02");
    assert!(
        status["annotations"]["hotnic.io/nic-status"]
            .as_str()
            .unwrap()
            .contains("Ready")
    );

    // Unplug eth2: gone, its lease released, eth1 untouched.
    node.put("pod", &multus_pod("t1", "web", &pod_ns.name, &two[..1]));
    wait_for("eth2 to be unplugged", LIMIT, || {
        let l = pod_ns.links();
        if l.contains(&"eth2".to_string()) {
            Err(format!("{l:?}"))
        } else {
            Ok(())
        }
    });
    wait_for("the mvnet lease to be released", LIMIT, || {
        let l = node.leases("mvnet");
        if l.is_empty() {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    assert_eq!(
        find("eth1"),
        pod_ns.addrs().into_iter().find(|(i, _, _)| i == "eth1")
    );
    assert_eq!(node.leases("brnet").len(), 1);
    ready_nics(&node, "t1", "web", 1);

    // Delete the pod: everything it had is released and forgotten.
    node.remove("pod");
    wait_for("teardown of the deleted pod", LIMIT, || {
        let (links, leases, cache) = (pod_ns.links(), node.leases("brnet"), node.cache_files());
        let status = node.status("t1", "web");
        if links == ["lo"] && leases.is_empty() && cache.is_empty() && status.is_none() {
            Ok(())
        } else {
            Err(format!(
                "links {links:?} leases {leases:?} cache {cache:?} status {status:?}"
            ))
        }
    });
    drop(agent);
}

#[test]
fn pod_deleted_after_its_namespace_is_gone_still_releases_leases() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    node.put(
        "nad",
        &node.bridge_nad("t2", "net2", "hnbr2", "10.93.0.0/24"),
    );
    node.put(
        "pod",
        &multus_pod(
            "t2",
            "gone",
            &pod_ns.name,
            &[("net2", "eth1", "02:00:00:0b:00:01")],
        ),
    );
    let agent = node.agent(&[], &[]);
    ready_nics(&node, "t2", "gone", 1);
    assert_eq!(node.leases("net2").len(), 1);
    drop(pod_ns); // the sandbox dies first
    node.remove("pod");
    wait_for("lease release without a namespace", LIMIT, || {
        let (leases, cache) = (node.leases("net2"), node.cache_files());
        if leases.is_empty() && cache.is_empty() {
            Ok(())
        } else {
            Err(format!("{leases:?} {cache:?}"))
        }
    });
    drop(agent);
}

#[test]
fn agent_killed_between_add_and_status_write_converges_on_restart() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    node.put(
        "nad",
        &node.bridge_nad("t3", "net3", "hnbr3", "10.94.0.0/24"),
    );
    node.put(
        "pod",
        &multus_pod(
            "t3",
            "crash",
            &pod_ns.name,
            &[("net3", "eth1", "02:00:00:0c:00:01")],
        ),
    );
    let mut first = node.agent(&[], &[("HOTNIC_AGENT_TEST_EXIT_AFTER_ADD", "true")]);
    assert_eq!(first.wait_exit(LIMIT), Some(86), "log: {}", first.log());
    // The ADD happened; Ready was never reported (at most the InProgress shown before the ADD).
    let shown = node.status("t3", "crash").map(|s| nic_states(&s));
    assert!(
        shown
            .as_ref()
            .is_none_or(|st| st.iter().all(|(_, s, _)| s == "InProgress")),
        "{shown:?}"
    );
    let before = pod_ns.addrs();
    let eth1 = before
        .iter()
        .find(|(i, _, _)| i == "eth1")
        .cloned()
        .expect("eth1 plugged before the crash");
    let lease = node.leases("net3");
    assert_eq!(lease.len(), 1);

    let second = node.agent(&[], &[]);
    let status = ready_nics(&node, "t3", "crash", 1);
    assert_eq!(status["nics"][0]["mac"], "02:00:00:0c:00:01");
    // Same interface, same address, one lease: no leak and no re-ADD.
    assert_eq!(
        pod_ns.addrs().into_iter().find(|(i, _, _)| i == "eth1"),
        Some(eth1)
    );
    assert_eq!(node.leases("net3"), lease);
    let log = second.log();
    assert!(!log.contains("plug failed"), "{log}");
    assert!(
        !log.contains("NICPlugged"),
        "the restarted agent re-plugged: {log}"
    );
    node.remove("pod");
    wait_for("teardown", LIMIT, || {
        let (links, leases) = (pod_ns.links(), node.leases("net3"));
        if links == ["lo"] && leases.is_empty() {
            Ok(())
        } else {
            Err(format!("{links:?} {leases:?}"))
        }
    });
}

#[test]
fn bad_configs_fail_with_the_plugin_message_and_are_retried() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    let mut bad_subnet = node.bridge_nad("t4", "badnet", "hnbr4", "10.95.0.0/24");
    let cfg = bad_subnet["spec"]["config"]
        .as_str()
        .unwrap()
        .replace("10.95.0.0/24", "10.95.0.0/33");
    bad_subnet["spec"]["config"] = cfg.into();
    node.put("nad-bad", &bad_subnet);
    let mut no_plugin = node.bridge_nad("t4", "noplug", "hnbr5", "10.96.0.0/24");
    let cfg = no_plugin["spec"]["config"].as_str().unwrap().replace(
        "\"bridge\",\"bridge\"",
        "\"hotnic-no-such-plugin\",\"bridge\"",
    );
    assert!(cfg.contains("hotnic-no-such-plugin"), "{cfg}");
    no_plugin["spec"]["config"] = cfg.into();
    node.put("nad-noplug", &no_plugin);
    let nets = [
        ("badnet", "eth1", "02:00:00:0d:00:01"),
        ("noplug", "eth2", "02:00:00:0d:00:02"),
    ];
    node.put("pod", &multus_pod("t4", "bad", &pod_ns.name, &nets));
    // The node namespace has its own port space: a fixed admin port is fine.
    let agent = node.agent(&["--admin-listen", "127.0.0.1:9808"], &[]);
    let states = wait_for("both NICs Failed", LIMIT, || {
        let s = node.status("t4", "bad").ok_or("no status")?;
        let st = nic_states(&s);
        if st.len() == 2 && st.iter().all(|(_, s, _)| s == "Failed") {
            Ok(st)
        } else {
            Err(format!("{st:?}"))
        }
    });
    assert!(
        states[0].2.contains("10.95.0.0/33"),
        "host-local's own message expected: {}",
        states[0].2
    );
    assert!(
        states[1]
            .2
            .contains("failed to find plugin \"hotnic-no-such-plugin\""),
        "{}",
        states[1].2
    );
    // Retried with backoff: more failed attempts show up in the log over time.
    wait_for("retries", LIMIT, || {
        let n = agent.log().matches("plug failed").count();
        if n >= 6 {
            Ok(())
        } else {
            Err(format!("{n} failed plugs"))
        }
    });
    assert_eq!(
        pod_ns.links(),
        ["lo"],
        "a failed plug left an interface behind"
    );
    // Only in-flight attempts (InProgress, rolled back on failure) may be cached; nothing Added.
    let added: Vec<_> = node
        .cache_files()
        .into_iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains("\"Added\"")
        })
        .collect();
    assert!(
        node.leases("badnet").is_empty() && added.is_empty(),
        "{added:?}"
    );
    // Fixing the network makes the next retry succeed.
    node.put(
        "nad-bad",
        &node.bridge_nad("t4", "badnet", "hnbr4", "10.95.0.0/24"),
    );
    wait_for("eth1 Ready after the fix", LIMIT, || {
        let st = nic_states(&node.status("t4", "bad").ok_or("no status")?);
        if st[0].1 == "Ready" && st[1].1 == "Failed" {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    });
    node.remove("pod");
    wait_for("teardown", LIMIT, || {
        let l = pod_ns.links();
        if l == ["lo"] && node.cache_files().is_empty() {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
}

#[test]
fn agent_killed_at_arbitrary_points_converges_without_leaks() {
    require_root_and_plugins();
    let node = Node::new();
    let pod_ns = Netns::new("pod");
    node.put(
        "nad",
        &node.bridge_nad("t5", "net5", "hnbr6", "10.104.0.0/24"),
    );
    let nics: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("eth{i}"), format!("02:00:00:14:00:{i:02x}")))
        .collect();
    let spec: Vec<(&str, &str, &str)> = nics
        .iter()
        .map(|(n, m)| ("net5", n.as_str(), m.as_str()))
        .collect();
    node.put("pod", &multus_pod("t5", "kill", &pod_ns.name, &spec));
    // SIGKILL the agent at varying points of plugging (no cleanup code runs).
    for delay_ms in [15u64, 35, 60, 25, 90, 45] {
        let mut a = node.agent(&[], &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        a.child.kill().unwrap();
        a.child.wait().unwrap();
    }
    let agent = node.agent(&[], &[]);
    ready_nics(&node, "t5", "kill", 6);
    // Exactly what is wanted: six interfaces with their MACs, six leases, six finished entries.
    let addrs = pod_ns.addrs();
    for (n, m) in &nics {
        let a = addrs
            .iter()
            .find(|(i, _, _)| i == n)
            .unwrap_or_else(|| panic!("{n} missing: {addrs:?}"));
        assert_eq!(&a.1, m);
        assert_eq!(a.2.len(), 1, "{a:?}");
    }
    assert_eq!(addrs.len(), 7, "{addrs:?}");
    let leased: Vec<String> = node.leases("net5");
    let mut assigned: Vec<String> = addrs
        .iter()
        .filter(|(i, _, _)| i != "lo")
        .flat_map(|(_, _, ips)| ips.iter().map(|c| c.split('/').next().unwrap().to_string()))
        .collect();
    assigned.sort();
    assert_eq!(leased, assigned, "every lease belongs to a live interface");
    let cache = node.cache_files();
    assert_eq!(
        cache
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
            .count(),
        6
    );
    node.remove("pod");
    wait_for("teardown", LIMIT, || {
        let (l, leases, cache) = (pod_ns.links(), node.leases("net5"), node.cache_files());
        if l == ["lo"] && leases.is_empty() && cache.is_empty() {
            Ok(())
        } else {
            Err(format!("{l:?} {leases:?} {cache:?}"))
        }
    });
    drop(agent);
}
