//! The node agent: plugs and unplugs NICs in running pods.
//!
//! - [`cri`]: finds a pod's network namespace through the CRI runtime (containerd, CRI-O).

pub mod cri;
