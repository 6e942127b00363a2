//! Shutdown, signalled from outside: the worker stops in two steps.
//!
//! 1. **Draining**: no new run starts and no new upload is claimed; uploads in flight carry on.
//! 2. **Abandoning**: the deadline passed; uploads still in flight are dropped and their claims
//!    released, so another worker takes them at once instead of after the claim expires.
//!
//! A [`Shutdown`] is a cheap, cloneable view of the phase (a `tokio::sync::watch` receiver);
//! the [`ShutdownController`] that moves it forward belongs to whoever owns the process
//! (`main.rs` on a signal, tests directly). Phases only move forward.

use tokio::sync::watch;

/// How far shutdown has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Working normally.
    Running,
    /// Finish what is in flight; start nothing new.
    Draining,
    /// Drop what is in flight and release its claims.
    Abandoning,
}

/// Moves shutdown forward.
#[derive(Debug)]
pub struct ShutdownController {
    tx: watch::Sender<Phase>,
}

/// A view of the shutdown phase, handed to everything that must stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Phase>,
}

impl ShutdownController {
    /// A controller in the running phase, with its first view.
    pub fn new() -> (ShutdownController, Shutdown) {
        let (tx, rx) = watch::channel(Phase::Running);
        (ShutdownController { tx }, Shutdown { rx })
    }

    /// Stops claiming new work.
    pub fn drain(&self) {
        self.advance(Phase::Draining);
    }

    /// Gives up on work still in flight.
    pub fn abandon(&self) {
        self.advance(Phase::Abandoning);
    }

    /// Another view of the same phase.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    fn advance(&self, to: Phase) {
        self.tx.send_if_modified(|phase| {
            let moved = *phase < to;
            if moved {
                *phase = to;
            }
            moved
        });
    }
}

impl Shutdown {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// Whether new work must not start.
    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Resolves once draining has begun (at once if it has).
    pub async fn draining(&self) {
        self.reached(Phase::Draining).await;
    }

    /// Resolves once in-flight work must be abandoned (at once if it must).
    pub async fn abandoning(&self) {
        self.reached(Phase::Abandoning).await;
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.rx.clone();
        // An error means the controller is gone: nothing will ever move the phase, so pend.
        if rx.wait_for(|p| *p >= phase).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_move_forward_only_and_wake_waiters() {
        let (controller, shutdown) = ShutdownController::new();
        assert_eq!(shutdown.phase(), Phase::Running);
        let waiter = {
            let s = shutdown.clone();
            tokio::spawn(async move { s.draining().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        controller.drain();
        waiter.await.unwrap();
        assert!(shutdown.is_draining());
        controller.abandon();
        controller.drain();
        assert_eq!(controller.subscribe().phase(), Phase::Abandoning);
        shutdown.abandoning().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_its_controller_the_phase_stays_where_it_was() {
        let (controller, shutdown) = ShutdownController::new();
        drop(controller);
        let waited = tokio::time::timeout(Duration::from_hours(1), shutdown.draining()).await;
        assert!(waited.is_err());
        assert!(!shutdown.is_draining());
    }
}
