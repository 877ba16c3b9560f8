//! Spec change → NIC Ready through the agent's reconciler with the real bridge plugin and
//! host-local IPAM (as root, in namespaces the bench creates): a pod's spec gains 1 NIC, or 32
//! NICs at once; measured from reading the pod object through the dialect reader to every NIC
//! Ready with its result cached. Unplugging afterwards is not measured, but checked: no lease
//! and no interface left. `HOTNIC_BENCH_PARALLEL_PLUGS` sets `--parallel-plugs`.
#[path = "../tests/support/agent_env.rs"]
mod agent_env;

use agent_env::*;
use criterion::{Criterion, criterion_group, criterion_main};
use hotnic::agent::cni::{Invoker, ResultCache};
use hotnic::agent::desired::{NetworkConfig, read_pod};
use hotnic::agent::metrics::Metrics;
use hotnic::agent::netns::TemplateResolver;
use hotnic::agent::reconcile::Reconciler;
use hotnic::agent::status::NicState;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bench(c: &mut Criterion) {
    require_root_and_plugins();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let node = Node::new();
    let pod_ns = Netns::new("bench");
    let mut inv = Invoker::new("/usr/lib/cni", Duration::from_secs(30));
    inv.plugin_netns = Some(node.ns.path());
    let mut rec = Reconciler::new(
        inv,
        ResultCache::new(&node.state_dir()),
        Arc::new(TemplateResolver::new("/run/netns/{uid}")),
        Arc::new(Metrics::new()),
    );
    // `--parallel-plugs` (default: the agent's).
    if let Ok(n) = std::env::var("HOTNIC_BENCH_PARALLEL_PLUGS") {
        rec.parallel_plugs = n.parse().expect("HOTNIC_BENCH_PARALLEL_PLUGS: a number");
    }
    let nad = node.bridge_nad("bench", "bnet", "hnbrb", "10.120.0.0/16");
    let config = nad["spec"]["config"].as_str().unwrap().to_string();
    let mut g = c.benchmark_group("agent_plug");
    g.sample_size(10);
    for n in [1usize, 32] {
        let nets: Vec<(String, String, String)> = (0..n)
            .map(|i| {
                (
                    "bnet".into(),
                    format!("eth{}", i + 1),
                    format!("02:00:00:20:00:{:02x}", i + 1),
                )
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = nets
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        let pod = multus_pod("bench", "p", &pod_ns.name, &refs);
        g.bench_function(format!("{n}_nics_spec_to_ready"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rt.block_on(async {
                        let start = Instant::now();
                        let mut d = read_pod(&pod).unwrap();
                        for w in &mut d.nics {
                            w.config = NetworkConfig::Found(config.clone());
                        }
                        let rep = rec.reconcile(&d.pod, &d.nics).await;
                        total += start.elapsed();
                        assert!(
                            rep.nics.len() == n
                                && rep.nics.iter().all(|s| s.state == NicState::Ready),
                            "{rep:?}"
                        );
                        let down = rec.reconcile(&d.pod, &[]).await;
                        assert!(down.errors.is_empty(), "{down:?}");
                        // Nothing leaked: every lease released, no interface left behind.
                        assert!(node.leases("bnet").is_empty(), "{:?}", node.leases("bnet"));
                        assert_eq!(pod_ns.links().len(), 1, "{:?}", pod_ns.links());
                    });
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
