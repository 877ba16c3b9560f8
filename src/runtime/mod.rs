//! The process runtime both long-running subcommands (`hotnic webhook`, `hotnic agent`) share:
//!
//! - [`shutdown`]: SIGTERM and SIGINT, installed once ([`Signals`]), and the one [`Shutdown`]
//!   every task of the process watches;
//! - [`readiness`]: what `/readyz` answers, as named checks ([`Readiness`], [`Flag`]);
//! - [`metrics`]: the Prometheus registry each subcommand registers its metrics in
//!   ([`MetricsRegistry`]);
//! - [`server`]: the hardened HTTP listener (connection cap, handshake, header-read and idle
//!   timeouts, bounded graceful drain) the webhook's TLS listener and every admin listener run on;
//! - [`admin`]: the plain-HTTP admin listener, `/livez` `/readyz` `/metrics` ([`AdminServer`]).
//! - [`Chain`]: an error shown with its causes (log fields, `{:#}` of top-level errors).
//!
//! What each subcommand checks for readiness and which metrics it keeps stay in its own module;
//! how they are served, and how the process stops, live here only.

pub mod admin;
pub(crate) mod idle;
pub mod metrics;
pub mod readiness;
pub mod server;
pub mod shutdown;

pub use admin::{AdminLimits, AdminServer};
pub use metrics::MetricsRegistry;
pub use readiness::{Flag, Readiness};
pub use server::ConnLimits;
pub use shutdown::{Shutdown, Signals};

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;

/// Errors of the runtime: a listener that cannot be bound, a signal handler that cannot be
/// installed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The listen address cannot be bound (in use, no such address, no permission).
    #[error("binding {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener has no local address (the socket is unusable).
    #[error("reading the address of the listener")]
    LocalAddr(#[source] std::io::Error),
    /// A signal handler cannot be installed.
    #[error("installing the {signal} handler")]
    Signal {
        /// `SIGTERM` or `SIGINT`.
        signal: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// An error and its sources, `: `-separated (what `{:#}` shows for an `anyhow::Error`): for log
/// fields and for the `Display` of top-level errors asked for with `{:#}`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        write_sources(f, self.0)
    }
}

/// Writes `e`'s sources (not `e` itself), each after `: `.
pub(crate) fn write_sources(f: &mut fmt::Formatter<'_>, e: &(dyn Error + 'static)) -> fmt::Result {
    let mut next = e.source();
    while let Some(cause) = next {
        write!(f, ": {cause}")?;
        next = cause.source();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lists_every_source_once() {
        let e = RuntimeError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(e.to_string(), "binding 127.0.0.1:1");
        assert_eq!(Chain(&e).to_string(), "binding 127.0.0.1:1: address in use");
    }
}
