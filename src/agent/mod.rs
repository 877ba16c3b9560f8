//! The node agent (`hotnic agent`): makes running pods' NICs match their specs with real CNI
//! plugins.
//!
//! - [`cni`]: plugin invocation, configs, results, the result cache;
//! - [`netns`]: pod → network namespace ([`netns::NetnsResolver`]);
//! - [`links`]: what is in a namespace;
//! - [`desired`]: a pod's wanted NICs (via the dialect readers);
//! - [`reconcile`]: the per-pod reconciler;
//! - [`status`]: NIC status and Multus `network-status`;
//! - [`metrics`]: metrics and admin endpoints.

pub mod cni;
pub mod desired;
pub mod links;
pub mod metrics;
pub mod netns;
pub mod reconcile;
pub mod status;
