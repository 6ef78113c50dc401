//! Real-time events between commits and connected clients, behind [`EventBus`]: [`LocalBus`] is
//! the in-process default; `crate::redis_shared::RedisBus` fans out between instances.
//!
//! Events are addressed to a user. The bus is lossy by design: a subscriber that falls behind
//! by more than [`crate::limits::BUS_CAPACITY`] events misses some and is told so (it should
//! resync from `/sync/changes`), so no slow client makes memory grow.

use cairn_protocol::api::Event;
use tokio::sync::{broadcast, watch};

use crate::limits::BUS_CAPACITY;

/// An event for one user.
#[derive(Debug, Clone)]
pub struct UserEvent {
    /// Whose folders the event is about.
    pub user_id: i64,
    /// The event.
    pub event: Event,
}

/// Publishes events and hands out subscriptions.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes to every subscriber (of every instance).
    fn publish(&self, event: UserEvent);
    /// A new subscription to all events; callers filter by user.
    fn subscribe(&self) -> broadcast::Receiver<UserEvent>;
    /// A count of the gaps in this instance's events: it moves whenever events may have been
    /// lost on their way here (the link to other instances was down), so every subscriber
    /// must resync. `None` for a bus that loses nothing on its own.
    fn gaps(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// The link to other instances for `/health`: `None` when there is none, else `ok` or
    /// what is wrong.
    fn health(&self) -> Option<String> {
        None
    }
}

/// The in-process bus: one bounded broadcast channel.
#[derive(Debug)]
pub struct LocalBus {
    sender: broadcast::Sender<UserEvent>,
}

impl Default for LocalBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(BUS_CAPACITY);
        LocalBus { sender }
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: UserEvent) {
        // No subscribers is not an error: nobody is connected.
        let _ = self.sender.send(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<UserEvent> {
        self.sender.subscribe()
    }
}
