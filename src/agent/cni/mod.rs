//! Calling CNI plugins the way the CNI spec (1.0.0, 0.4.0) and libcni do: network configuration
//! lists, per-plugin config building (`name`, `cniVersion`, `prevResult`, `runtimeConfig` from
//! declared capabilities), invocation with the `CNI_*` environment and a timeout, results and
//! error objects, and the result cache that makes DEL use exactly what ADD used.

pub mod cache;
pub mod config;
pub mod error;
pub mod exec;
pub mod result;

pub use cache::{CacheEntry, CacheState, ResultCache};
pub use config::NetConfList;
pub use error::CniError;
pub use exec::{Attachment, Invoker, RuntimeArgs};
pub use result::ResultSummary;
