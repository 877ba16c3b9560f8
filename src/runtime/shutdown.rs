//! How the process stops: the signal handlers, installed once before anything is served, and the
//! one [`Shutdown`] every task watches (the listeners, the agent's engine, readiness).

use super::RuntimeError;
use std::future::Future;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// A shutdown that is started once, by a signal or by code, and seen by every task that waits for
/// it (also by the ones that start waiting later). Clones share it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    started: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Not started yet.
    pub fn new() -> Self {
        Shutdown {
            started: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Starts the shutdown (again: no effect).
    pub fn start(&self) {
        self.started
            .send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// Whether it has started.
    pub fn is_started(&self) -> bool {
        *self.started.borrow()
    }

    /// Resolves once the shutdown has started (at once if it has), or once every clone of this
    /// `Shutdown` is dropped (nobody is left to start it: what waits stops too). Owns what it
    /// needs, so it can be handed to a task.
    pub fn started(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.started.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// SIGTERM and SIGINT handlers. Install them before serving: once they are installed the default
/// action (exiting at once) no longer applies, so a signal that comes right after start-up drains.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs both handlers.
    pub fn install() -> Result<Self, RuntimeError> {
        let install = |kind, name| {
            signal(kind).map_err(|source| RuntimeError::Signal {
                signal: name,
                source,
            })
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT (logged by name).
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM"),
            _ = self.int.recv() => tracing::info!("SIGINT"),
        }
    }

    /// Starts `shutdown` on the first signal (from a task of its own; call inside the runtime).
    pub fn forward(self, shutdown: Shutdown) {
        tokio::spawn(async move {
            self.wait().await;
            shutdown.start();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_sees_one_start_even_a_late_one() {
        let s = Shutdown::new();
        let early = tokio::spawn(s.started());
        assert!(!s.is_started());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!early.is_finished());
        s.clone().start();
        s.start();
        assert!(s.is_started());
        tokio::time::timeout(Duration::from_secs(5), early)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), s.started())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn waiters_stop_too_when_every_handle_is_gone() {
        let s = Shutdown::new();
        let waiting = tokio::spawn(s.started());
        drop(s);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
