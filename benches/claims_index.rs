//! Memory and speed of the claim cache (`hotnic::allocator::ClaimIndex`), what each webhook
//! replica keeps for every `MACAddress` in the cluster: 1,000,000 claims (cluster scope, plus a
//! network-scoped run), bytes per MAC counted by a counting global allocator, and the time of the
//! lookups admission makes. `cargo bench --bench claims_index`; fails when the index needs more
//! than 64 bytes per MAC.

use hotnic::allocator::{ClaimIndex, MacRange, Owner, Scope};
use hotnic::model::{Mac, NetworkRef};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: p was allocated by System with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: u64 = 1_000_000;

fn owner(i: u64) -> Owner {
    Owner {
        kind: "Pod".into(),
        resource: "pods".into(),
        namespace: format!("ns{}", i % 100),
        name: Some(format!("pod-{}", i / 4)),
        ..Owner::default()
    }
}

fn main() {
    let range = MacRange::default_range();
    let base = range.start().to_u64() + 1;
    // Fingerprints first, so only the index itself is counted.
    let fps: Vec<u64> = (0..N).map(|i| owner(i).fingerprint()).collect();
    let macs: Vec<Mac> = (0..N)
        .map(|i| Mac::from_u64(base + i * 7919 % (1 << 39)))
        .collect();

    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut ix = ClaimIndex::new(range);
    for (m, fp) in macs.iter().zip(&fps) {
        ix.insert(&Scope::Cluster, *m, *fp).unwrap();
    }
    let build = t.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let per_mac = bytes as f64 / N as f64;
    println!(
        "cluster scope: {} claims, index {:.1} MiB = {per_mac:.1} bytes per MAC; built in {:.0} ms ({:.0} ns per insert)",
        ix.len(),
        bytes as f64 / (1 << 20) as f64,
        build.as_secs_f64() * 1e3,
        build.as_nanos() as f64 / N as f64
    );
    assert!(per_mac <= 64.0, "{per_mac:.1} bytes per MAC > 64");

    // What admission asks: "held by another?" for a MAC, and the next free candidate.
    let probe = owner(1);
    let t = Instant::now();
    let mut held = 0;
    for m in macs.iter().take(200_000) {
        held += usize::from(ix.held_by_other(&probe, &Scope::Cluster, *m));
    }
    let lookup = t.elapsed().as_nanos() as f64 / 200_000.0;
    let t = Instant::now();
    let mut cursor = base;
    for _ in 0..100_000 {
        let m = ix.next_free(&Scope::Cluster, cursor, &|_| false).unwrap();
        cursor = m.to_u64() + 1;
    }
    let pick = t.elapsed().as_nanos() as f64 / 100_000.0;
    println!("held_by_other: {lookup:.0} ns ({held} held); next_free: {pick:.0} ns per candidate");
    drop(ix);

    // Network scope: 1,000 networks of 1,000 claims each.
    let before = LIVE.load(Ordering::Relaxed);
    let mut ix = ClaimIndex::with_capacity(range, 0);
    for (i, (m, fp)) in macs.iter().zip(&fps).enumerate() {
        let scope = Scope::Network(NetworkRef {
            namespace: format!("ns{}", i % 100),
            name: format!("net{}", i % 1000),
        });
        ix.insert(&scope, *m, *fp).unwrap();
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let per_mac = bytes as f64 / N as f64;
    println!(
        "network scope (1,000 networks): {} claims, {per_mac:.1} bytes per MAC",
        ix.len()
    );
    assert!(per_mac <= 64.0, "{per_mac:.1} bytes per MAC > 64");
}
