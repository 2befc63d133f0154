//! The coordinator task's handle: start it, feed it membership and settings, read its status
//! and events, stop it.

use super::input::{Membership, Settings, StoreIdentity};
use super::runner::Runner;
use super::status::{CoordinatorEvent, CoordinatorStatus};
use super::store::MapStore;
use super::transport::NodeTransport;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Events buffered per subscriber before the slowest one starts missing some.
const EVENT_BUFFER: usize = 1024;

/// A running coordinator of one store. Dropping the handle stops the task as well.
pub struct CoordinatorHandle {
    membership: watch::Sender<Membership>,
    settings: watch::Sender<Settings>,
    status: watch::Receiver<CoordinatorStatus>,
    events: broadcast::Sender<CoordinatorEvent>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl CoordinatorHandle {
    /// Starts the coordinator task on the current Tokio runtime. It resumes from the stored
    /// map, or creates the first one once enough nodes are ready.
    pub fn spawn(
        store: StoreIdentity,
        settings: Settings,
        membership: Membership,
        map_store: Arc<dyn MapStore>,
        transport: Arc<dyn NodeTransport>,
    ) -> Self {
        let (membership_tx, membership_rx) = watch::channel(membership);
        let (settings_tx, settings_rx) = watch::channel(settings);
        let (status_tx, status_rx) = watch::channel(CoordinatorStatus::default());
        let (events_tx, _) = broadcast::channel(EVENT_BUFFER);
        let (stop_tx, stop_rx) = watch::channel(false);
        let runner = Runner::new(
            store,
            map_store,
            transport,
            membership_rx,
            settings_rx,
            status_tx,
            events_tx.clone(),
        );
        let task = tokio::spawn(runner.run(stop_rx));
        Self {
            membership: membership_tx,
            settings: settings_tx,
            status: status_rx,
            events: events_tx,
            stop: stop_tx,
            task: Some(task),
        }
    }

    /// Replaces the observed membership (takes effect at the next tick; at once when it
    /// shows a node newly ready or newly confirmed dead).
    pub fn update_membership(&self, membership: Membership) {
        self.membership.send_replace(membership);
    }

    /// Replaces the settings (takes effect at the next tick).
    pub fn update_settings(&self, settings: Settings) {
        self.settings.send_replace(settings);
    }

    /// The latest status snapshot.
    pub fn status(&self) -> CoordinatorStatus {
        self.status.borrow().clone()
    }

    /// A receiver that is notified whenever the status changes.
    pub fn watch_status(&self) -> watch::Receiver<CoordinatorStatus> {
        self.status.clone()
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> broadcast::Receiver<CoordinatorEvent> {
        self.events.subscribe()
    }

    /// Stops the task and waits for it to finish its current step.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "coordinator task ended abnormally");
        }
    }
}

impl Drop for CoordinatorHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
