//! The handle that wakes the dispatch loop (`services::runs::dispatch_loop`) for a runner: held in
//! the shared state, so anything that may have made work startable can poke it.

use tether_domain::RunnerId;
use tokio::sync::mpsc;

/// Wakes the dispatch loop for a runner.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    tx: mpsc::UnboundedSender<RunnerId>,
}

impl Dispatcher {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<RunnerId>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn poke(&self, runner: RunnerId) {
        let _ = self.tx.send(runner);
    }
}
