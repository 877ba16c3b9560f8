//! hotnic: NIC hot-plug for Kubernetes.
//!
//! - [`model`]: the NIC model every dialect reads into (NICs, MACs, capacity, causes);
//! - [`dialect`]: the three dialects (Arktos pods, Multus pods, KubeVirt) that read and write it;
//! - [`allocator`]: MAC allocation (range, allocator trait, in-memory allocator);
//! - [`policy`]: the admission policy (mutations and rules);
//! - [`agent`]: the node agent (CRI network-namespace lookup, ...).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod allocator;
pub mod dialect;
pub mod model;
pub mod policy;
