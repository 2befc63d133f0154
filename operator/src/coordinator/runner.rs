//! The coordinator loop: every heartbeat interval, observe, plan, execute, publish status.

use super::input::{Membership, Settings, StoreIdentity};
use super::status::{CoordinatorEvent, CoordinatorStatus};
use super::store::MapStore;
use super::transport::NodeTransport;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

pub(crate) struct Runner {
    store: StoreIdentity,
    map_store: Arc<dyn MapStore>,
    transport: Arc<dyn NodeTransport>,
    membership: watch::Receiver<Membership>,
    settings: watch::Receiver<Settings>,
    status: watch::Sender<CoordinatorStatus>,
    events: broadcast::Sender<CoordinatorEvent>,
}

impl Runner {
    pub(crate) fn new(
        store: StoreIdentity,
        map_store: Arc<dyn MapStore>,
        transport: Arc<dyn NodeTransport>,
        membership: watch::Receiver<Membership>,
        settings: watch::Receiver<Settings>,
        status: watch::Sender<CoordinatorStatus>,
        events: broadcast::Sender<CoordinatorEvent>,
    ) -> Self {
        Self {
            store,
            map_store,
            transport,
            membership,
            settings,
            status,
            events,
        }
    }

    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let _ = (&self.store, &self.transport, &self.membership, &self.events);
        loop {
            if *stop.borrow() {
                return;
            }
            if let Ok(Some((map, _))) = self.map_store.load().await {
                self.status.send_modify(|s| s.map_version = map.version);
            }
            let interval = self.settings.borrow().heartbeat_interval;
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
