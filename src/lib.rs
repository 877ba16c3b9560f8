//! hotnic: NIC hot-plug for Kubernetes.
//!
//! - [`model`]: the NIC model every dialect reads into (NICs, MACs, capacity, causes);
//! - [`dialect`]: the three dialects (Arktos pods, Multus pods, KubeVirt) that read and write it;
//! - [`allocator`]: MAC allocation (range, allocator trait, in-memory allocator);
//! - [`policy`]: the admission policy (mutations and rules);
//! - [`claims`]: cluster-wide MAC claims (`MACAddress` objects), their allocator and repair loop;
//! - [`check`]: `hotnic check`, the policy run offline on manifests;
//! - [`admission`], [`webhook`], [`certs`]: AdmissionReview v1 on the wire, the TLS server, certificates;
//! - [`agent`]: the node agent (CRI network-namespace lookup, ...);
//! - [`runtime`]: what the webhook and the agent share as processes: signals and shutdown,
//!   readiness, the metrics registry, the hardened admin listener.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod agent;
pub mod allocator;
pub mod certs;
pub mod check;
pub mod claims;
pub mod cli;
pub mod dialect;
pub mod fast_hash;
pub mod json_text;
pub mod libvirt;
pub mod log_writer;
pub mod model;
pub mod nic;
pub mod policy;
pub mod runtime;
pub mod webhook;
