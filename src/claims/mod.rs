//! Cluster-wide MAC uniqueness through the API server: `MACAddress` claim objects
//! (`hotnic.io/v1alpha1`, cluster-scoped, one per MAC, named after it), the allocator that
//! creates them if absent ([`KubeAllocator`], `--allocator kubernetes`) with a watch-fed compact
//! cache, and the repair loop ([`repair`]) that one replica at a time ([`lease`]) runs to bind,
//! release and adopt claims and to report duplicates.

pub mod allocator;
pub mod crd;
pub mod lease;
pub mod repair;

pub use allocator::KubeAllocator;
pub use crd::MacAddress;
pub use repair::Repairer;
