//! The handle that wakes the dispatch loop (`services::runs::dispatch_loop`) for a runner. It is
//! an events subscriber: work queued for a runner, or the runner resumed, wakes the loop for it.

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

impl crate::events::Subscriber for Dispatcher {
    fn deliver(&self, event: &crate::events::Event, _: &mut crate::events::Delivered) {
        use crate::events::Event;
        match event {
            Event::WorkQueued { runner } => self.poke(*runner),
            Event::PauseChanged {
                runner,
                paused_by: None,
            } => self.poke(runner.id),
            _ => {}
        }
    }
}
