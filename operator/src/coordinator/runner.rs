//! The coordinator loop: every heartbeat interval, contact the nodes, plan, write the map with
//! compare-and-swap, push it, start the calls the plan asks for, publish the status.
//!
//! Heartbeats never wait for the map store: while it cannot be read, nodes are heartbeated
//! from the last known map and only planning and map writes wait. Every map store call is
//! bounded so that a hung API server cannot stretch the heartbeat interval.

use super::calls::{self, Outcome};
use super::input::{Membership, Settings, StoreIdentity};
use super::liveness::{Health, Liveness};
use super::planner::{Call, Inputs, Observations, plan};
use super::status::{CoordinatorEvent, CoordinatorStatus};
use super::store::{MapStore, MapStoreError, Revision};
use super::summary::summarize;
use super::transport::NodeTransport;
use crate::placement::Target;
use futures::future::join_all;
use shardedstore_node::admin_api::HeartbeatRequest;
use shardedstore_node::map::{NodeId, PartitionId, PartitionMap};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};

/// Planning rounds per tick: a map write often enables the next step at once.
const ROUNDS_PER_TICK: usize = 4;

/// Planning passes between two ticks at most, woken by answers (see [`Runner::wait_for_tick`]).
/// A failover of every partition a node led takes one pass per partition whose candidates'
/// positions come back apart from the others: 8 left most of twenty such partitions waiting
/// for the next tick.
const MAX_REPLANS_PER_TICK: usize = 32;

/// Ticks per heartbeat interval while moves are in flight ([`Runner::tick_interval`]): 50 ms
/// at the default 500 ms interval. A copy of a small partition takes about as long, so a
/// slower tick rarely saw it under way (and so could not ask its primary to admit it once in,
/// [`Outcome::Admitted`]), and saw it done only at the next tick: with four ticks per
/// interval a 192 MiB scale-out spent about a third of its moves' time waiting for ticks.
const MOVE_TICKS_PER_INTERVAL: u32 = 10;

/// The shortest interval between ticks while moves are in flight.
const MIN_MOVE_TICK: Duration = Duration::from_millis(50);

/// How long after a node became ready the coordinator keeps ticking every [`MIN_MOVE_TICK`]
/// until it holds a lease ([`Runner::joining`]).
const JOINING_BRISK_FOR: Duration = Duration::from_secs(5);

/// [`Runner::tick_interval`] for a heartbeat interval and the map as it stands; `joining`:
/// a node that became ready a moment ago has not answered yet.
fn tick_interval(interval: Duration, map: Option<&PartitionMap>, joining: bool) -> Duration {
    let moving = map.is_some_and(|m| m.partitions.iter().any(|p| !p.learners.is_empty()));
    if joining {
        MIN_MOVE_TICK.min(interval)
    } else if moving {
        (interval / MOVE_TICKS_PER_INTERVAL).max(MIN_MOVE_TICK.min(interval))
    } else {
        interval
    }
}

/// The nodes a membership shows ready (and not confirmed dead).
fn ready_nodes(m: &Membership) -> BTreeSet<NodeId> {
    m.nodes
        .iter()
        .filter(|n| n.ready && !n.confirmed_dead)
        .map(|n| n.id.clone())
        .collect()
}

/// What ended a wait between ticks.
enum Wake {
    /// Tick now: the interval passed, a node was confirmed dead (contact the nodes and plan
    /// at once), or the coordinator is stopping.
    Tick,
    /// An answer a decision waits for arrived: plan again now.
    Plan,
}

/// What contacting a node showed.
enum Contact {
    /// It answered a heartbeat (with this seq, received at this instant).
    Report(
        shardedstore_node::admin_api::HeartbeatResponse,
        u64,
        Instant,
    ),
    /// It answered a probe (a heartbeat that grants no lease).
    Probed(shardedstore_node::admin_api::HeartbeatResponse),
    /// No answer (the reason is logged).
    Silent(String),
}

impl Contact {
    /// What the answer of node `expected` at `addr` to a heartbeat (`full`, numbered `seq`,
    /// its answer `received` then) or to a probe counts as. An answer carrying another node id
    /// (an address now used by another node: pod IP reuse, two nodes' addresses swapped) is no
    /// answer: that node's report, and the lease its heartbeat confirms, must not be credited
    /// to the expected node (issue item 11).
    fn of<E: std::fmt::Display>(
        expected: &str,
        addr: &str,
        full: bool,
        seq: u64,
        answer: Result<shardedstore_node::admin_api::HeartbeatResponse, E>,
        received: Instant,
    ) -> Self {
        match answer {
            Ok(report) if report.node_id != expected => Contact::Silent(format!(
                "answered as {} at {addr}, expected {expected}",
                report.node_id
            )),
            Ok(report) if full => Contact::Report(report, seq, received),
            Ok(report) => Contact::Probed(report),
            Err(e) => Contact::Silent(e.to_string()),
        }
    }
}

pub(crate) struct Runner {
    store: StoreIdentity,
    map_store: Arc<dyn MapStore>,
    transport: Arc<dyn NodeTransport>,
    membership: watch::Receiver<Membership>,
    settings: watch::Receiver<Settings>,
    status: watch::Sender<CoordinatorStatus>,
    events: broadcast::Sender<CoordinatorEvent>,
    /// The last map read from or written to the store (kept while the store is unreadable).
    map: Option<(PartitionMap, Revision)>,
    /// `map` is what the store holds as far as we know; planning waits while it is not.
    loaded: bool,
    /// When this coordinator started: fences of nodes it has not heard from start here.
    started: Instant,
    /// Random id of this coordinator run: nodes chain heartbeats (and leases) per coordinator.
    coordinator_id: String,
    health: BTreeMap<NodeId, Health>,
    /// Disk identity each node answered with, since this coordinator started (the first
    /// answer is the baseline: a copy persisted before reports itself unproven anyway).
    disk_ids: BTreeMap<NodeId, String>,
    obs: Observations,
    target: Option<Target>,
    inflight: BTreeSet<Call>,
    results_tx: mpsc::UnboundedSender<(Call, Outcome)>,
    results_rx: mpsc::UnboundedReceiver<(Call, Outcome)>,
    /// Nodes the membership confirmed dead when last looked at.
    confirmed_dead: BTreeSet<NodeId>,
    /// Nodes the membership showed ready when last looked at.
    ready: BTreeSet<NodeId>,
    /// Nodes that became ready while this coordinator ran (or were ready when it started)
    /// and are not yet known to hold a lease of it, with when they became ready
    /// ([`Runner::membership_news`]).
    joining: BTreeMap<NodeId, Instant>,
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
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        // Nodes ready when this coordinator starts are joining too: none holds a lease of
        // this coordinator yet, and the first map (or a hand-off after an operator restart)
        // waits for leases, which take two heartbeats.
        let ready = ready_nodes(&membership.borrow());
        let joining = ready.iter().map(|id| (id.clone(), started)).collect();
        Self {
            store,
            map_store,
            transport,
            membership,
            settings,
            status,
            events,
            map: None,
            loaded: false,
            started,
            coordinator_id: format!("{:016x}", rand::random::<u64>()),
            health: BTreeMap::new(),
            disk_ids: BTreeMap::new(),
            obs: Observations::new(started),
            target: None,
            inflight: BTreeSet::new(),
            results_tx,
            results_rx,
            confirmed_dead: BTreeSet::new(),
            ready,
            joining,
        }
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            // Stopping (lost leadership, store deleted) interrupts a tick at once: no further
            // heartbeat or map write leaves this coordinator.
            tokio::select! {
                _ = stop.changed() => return,
                () = self.tick() => {}
            }
            let next_tick = tokio::time::Instant::now() + self.tick_interval();
            let mut replans = 0;
            loop {
                match self.wait_for_tick(&mut stop, next_tick).await {
                    Wake::Tick => break,
                    Wake::Plan if replans < MAX_REPLANS_PER_TICK => {
                        replans += 1;
                        tokio::select! {
                            _ = stop.changed() => return,
                            () = self.replan() => {}
                        }
                    }
                    Wake::Plan => {}
                }
            }
        }
    }

    /// The wait until the next tick: the heartbeat interval, or a tenth of it (at least
    /// [`MIN_MOVE_TICK`]) while a partition has a learner. A learner's copy shows complete
    /// only in its primary's next report, and only then is it admitted and the next move
    /// started; with a tick per heartbeat interval a move of a small partition spent more
    /// time waiting for that report than copying (a 4 MiB copy took about 0.3 s and its move
    /// about a second, in waves at the 500 ms ticks).
    ///
    /// It is [`MIN_MOVE_TICK`] too while a node that became ready less than
    /// [`JOINING_BRISK_FOR`] ago holds no lease yet: a scale-out's moves start once the new
    /// node has answered a heartbeat, and a node process just started (local mode) or a pod
    /// marked ready a moment before its server listens refuses the tick its readiness woke.
    /// Without this the moves of a scale-out started up to a heartbeat interval (500 ms)
    /// after the new node was up: a third of the time a 192 MiB catch-up took. And a node
    /// back from a restart is handed its primaries only once it holds a lease, which takes
    /// two heartbeats: at 500 ms they came up to a second after it was back.
    fn tick_interval(&self) -> Duration {
        tick_interval(
            self.settings.borrow().heartbeat_interval,
            self.map.as_ref().map(|(m, _)| m),
            !self.joining.is_empty(),
        )
    }

    /// Forgets joining nodes that hold a lease, or that became ready too long ago.
    fn prune_joining(&mut self, now: Instant) {
        let health = &self.health;
        self.joining.retain(|id, since| {
            now.duration_since(*since) < JOINING_BRISK_FOR
                && !health.get(id).is_some_and(Health::holds_lease)
        });
    }

    /// Waits for the next tick, or less when a decision waits on something that just
    /// arrived: the log positions of a failover's candidates, a hand-off's answer or an
    /// admission (planned at once, [`Wake::Plan`]: a move's next map change does not wait
    /// for the tick), or a node confirmed dead (its pod or process is gone) or newly ready (a
    /// scale-out's new node, a node back from a restart): a tick at once, [`Wake::Tick`],
    /// which contacts it and plans. Without this a failover took two ticks after the death
    /// was seen — one to ask the candidates' positions, one to elect — plus the wait for the
    /// first: about a second at the default 500 ms heartbeat interval.
    async fn wait_for_tick(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        next_tick: tokio::time::Instant,
    ) -> Wake {
        loop {
            tokio::select! {
                _ = stop.changed() => return Wake::Tick,
                () = tokio::time::sleep_until(next_tick) => return Wake::Tick,
                Some((call, outcome)) = self.results_rx.recv() => {
                    let decisive = matches!(
                        outcome,
                        Outcome::Position(..) | Outcome::Handoff(..) | Outcome::Admitted(..)
                    );
                    self.absorb(call, outcome);
                    if decisive {
                        return Wake::Plan;
                    }
                }
                Ok(()) = self.membership.changed() => {
                    if self.membership_news() {
                        return Wake::Tick;
                    }
                }
            }
        }
    }

    /// Whether the membership now confirms the death of a node it did not before, or shows
    /// ready a node it did not before (each counts once). A newly ready node is `joining`
    /// until it answers.
    fn membership_news(&mut self) -> bool {
        let (dead, ready) = {
            let m = self.membership.borrow_and_update();
            let dead: BTreeSet<NodeId> = m
                .nodes
                .iter()
                .filter(|n| n.confirmed_dead)
                .map(|n| n.id.clone())
                .collect();
            (dead, ready_nodes(&m))
        };
        let newly_dead = dead.iter().any(|id| !self.confirmed_dead.contains(id));
        let now = Instant::now();
        let mut newly_ready = false;
        for id in ready.difference(&self.ready) {
            newly_ready = true;
            self.joining.insert(id.clone(), now);
        }
        self.confirmed_dead = dead;
        self.ready = ready;
        newly_dead || newly_ready
    }

    /// Plans again from what has arrived since the tick, without contacting the nodes.
    async fn replan(&mut self) {
        self.collect_outcomes();
        if !self.loaded {
            return;
        }
        let membership = self.membership.borrow().clone();
        let settings = self.settings.borrow().clone();
        self.plan_rounds(&membership, &settings).await;
        self.publish_status();
    }

    fn emit(&self, event: CoordinatorEvent) {
        tracing::info!(?event, "coordinator");
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    async fn tick(&mut self) {
        let membership = self.membership.borrow().clone();
        let settings = self.settings.borrow().clone();
        if !self.loaded {
            self.reload(&settings).await;
        }
        self.contact_nodes(&membership, &settings).await;
        self.prune_joining(Instant::now());
        self.collect_outcomes();
        if !self.loaded {
            // Heartbeats went out from the last known map; decisions wait for the store.
            self.publish_status();
            return;
        }

        self.plan_rounds(&membership, &settings).await;
        self.publish_status();
    }

    /// Up to [`ROUNDS_PER_TICK`] planning rounds, while each wrote a map.
    async fn plan_rounds(&mut self, membership: &Membership, settings: &Settings) {
        for _ in 0..ROUNDS_PER_TICK {
            let p = {
                let inputs = Inputs {
                    store: &self.store.name,
                    map: self.map.as_ref().map(|(m, _)| m),
                    membership,
                    settings,
                    obs: &self.obs,
                };
                plan(&inputs)
            };
            if p.target.is_some() {
                self.target = p.target.clone();
            }
            let wrote = match p.map {
                Some(next) => self.write_map(next, &p.events).await,
                None => {
                    for e in p.events {
                        self.emit(e);
                    }
                    false
                }
            };
            for call in p.calls {
                self.start_call(call, settings);
            }
            if !wrote {
                break;
            }
        }
    }

    /// How long one map store call may take before this tick goes on without it.
    fn store_timeout(settings: &Settings) -> Duration {
        settings.heartbeat_interval.max(settings.lease / 4)
    }

    /// Reads the stored map; on failure keeps the last known one (and `loaded` false).
    async fn reload(&mut self, settings: &Settings) {
        let timeout = Self::store_timeout(settings);
        match tokio::time::timeout(timeout, self.map_store.load()).await {
            Ok(Ok(map)) => {
                self.map = map;
                self.loaded = true;
                self.settle_new_disks();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "loading the partition map; heartbeating from the last known map");
            }
            Err(_) => {
                tracing::warn!(
                    ?timeout,
                    "loading the partition map timed out; heartbeating from the last known map"
                );
            }
        }
    }

    /// Whether a heartbeat answer shows the node's storage stalled beyond the node's own
    /// bound (past which it takes no lease and serves nothing itself).
    fn storage_stalled(report: &shardedstore_node::admin_api::HeartbeatResponse) -> bool {
        Duration::from_millis(report.storage_stalled_ms)
            > shardedstore_node::context::STORAGE_STALL_BOUND
    }

    fn publish_status(&self) {
        if let Some((map, _)) = &self.map {
            let status = summarize(map, self.target.as_ref(), &self.obs);
            self.status.send_if_modified(|s| {
                let changed = *s != status;
                *s = status;
                changed
            });
        }
    }

    /// Heartbeats nodes that answer; probes the others with the map, which grants no lease.
    async fn contact_nodes(&mut self, membership: &Membership, settings: &Settings) {
        let now = Instant::now();
        self.obs.now = now;
        let fence = settings.lease + settings.drift_margin;
        let map = self.map.as_ref().map(|(m, _)| m.clone());
        let version = map.as_ref().map_or(0, |m| m.version);
        let req = HeartbeatRequest {
            store: self.store.name.clone(),
            map_version: version,
            lease_ms: settings.lease.as_millis() as u64,
            ..HeartbeatRequest::default()
        };
        let started = self.started;
        let mut contacts = Vec::new();
        // Nodes of the map whose pod (or process) is gone cannot be contacted: silent, so
        // dead only once fenced (a force-deleted pod's container may still run).
        if let Some(map) = &map {
            for id in map.nodes.keys() {
                if membership.node(id).is_none() {
                    self.health
                        .entry(id.clone())
                        .or_insert_with(|| Health::new(started))
                        .failed();
                }
            }
        }
        for n in &membership.nodes {
            let h = self
                .health
                .entry(n.id.clone())
                .or_insert_with(|| Health::new(started));
            if n.confirmed_dead {
                h.confirm_dead(now);
                continue;
            }
            let heartbeat = h.may_heartbeat();
            // A silent node gets no lease, but a probe (a heartbeat granting no lease) may show
            // it is back before it is presumed dead. Without a map, so is a node that did not
            // answer yet (a process or pod not listening when the coordinator started: the
            // first map waits for it, and used to wait until it was presumed dead, 4.5 s);
            // one never contacted, or presumed dead, is heartbeated.
            let full =
                heartbeat || (map.is_none() && h.liveness(now, fence) != Liveness::Suspected);
            let (seq, confirmed_seq) = h.next_heartbeat(now);
            // A node whose storage is stalled gets heartbeats that grant nothing, so its
            // lease runs out by its fence (`liveness.rs`); so does a probed one.
            let grants = full && h.may_grant_lease() && req.lease_ms > 0;
            if grants {
                h.granting(seq, confirmed_seq, now, settings.lease);
            }
            let request = HeartbeatRequest {
                node: n.id.clone(),
                coordinator: self.coordinator_id.clone(),
                seq,
                confirmed_seq,
                lease_ms: if grants { req.lease_ms } else { 0 },
                ..req.clone()
            };
            contacts.push((n.id.clone(), n.peer_addr.clone(), full, request));
        }
        let transport = &self.transport;
        // Probes of silent nodes must not stretch the tick (and so the heartbeats of the
        // others): they get one heartbeat interval. A probe no longer installs the map: the
        // map is pushed after the answer showed the node's disk identity (issue item 6: a
        // node back on an empty disk gets no map that lists it in sync).
        let probe_timeout = settings.heartbeat_interval;
        let results = join_all(
            contacts
                .into_iter()
                .map(|(id, addr, full, req)| async move {
                    let answer = if full {
                        transport.heartbeat(&addr, &req).await
                    } else {
                        match tokio::time::timeout(probe_timeout, transport.heartbeat(&addr, &req))
                            .await
                        {
                            Ok(r) => r,
                            Err(_) => {
                                return (id, addr, Contact::Silent("probe timed out".to_owned()));
                            }
                        }
                    };
                    // Received now: the fence of this node is measured from here.
                    let contact = Contact::of(&id, &addr, full, req.seq, answer, Instant::now());
                    (id, addr, contact)
                }),
        )
        .await;
        let mut stale: Vec<(String, String)> = Vec::new();
        for (id, addr, answer) in results {
            let h = self
                .health
                .entry(id.clone())
                .or_insert_with(|| Health::new(started));
            match answer {
                Contact::Report(report, seq, received) => {
                    let stalled = Self::storage_stalled(&report);
                    if stalled && h.may_grant_lease() {
                        tracing::warn!(
                            node = %id,
                            stalled_ms = report.storage_stalled_ms,
                            revoked = report.lease_revoked,
                            "storage stalled: no more leases; failed over once fenced (at once when it revoked its lease)"
                        );
                    }
                    h.reported(seq, received, stalled, stalled && report.lease_revoked);
                    h.incarnation_answered(seq, report.incarnation);
                    self.note_disk(&id, &report.disk_id);
                    if report.map_version < version && !self.obs.new_disks.contains(&id) {
                        stale.push((id.clone(), addr));
                    }
                    self.obs.installed.remove(&id);
                    self.obs.reports.insert(id, report);
                }
                Contact::Probed(report) => {
                    h.answered();
                    self.note_disk(&id, &report.disk_id);
                    if report.map_version < version && !self.obs.new_disks.contains(&id) {
                        stale.push((id.clone(), addr));
                    }
                }
                Contact::Silent(error) => {
                    tracing::debug!(node = %id, %error, "no answer");
                    let was_alive = h.may_heartbeat();
                    h.failed();
                    if was_alive {
                        self.emit(CoordinatorEvent::HeartbeatFailed { node: id.clone() });
                    }
                    self.obs.reports.remove(&id);
                }
            }
        }
        self.push_map(stale).await;
        self.obs.liveness.clear();
        self.obs.leased.clear();
        for (id, h) in self.health.iter_mut() {
            let l = h.liveness(now, fence);
            self.obs.liveness.insert(id.clone(), l);
            if h.holds_lease() {
                self.obs.leased.insert(id.clone());
            }
            match h.dead_since() {
                Some(t) => {
                    self.obs.dead_since.insert(id.clone(), t);
                }
                None => {
                    self.obs.dead_since.remove(id);
                }
            }
        }
    }

    /// Installs the current map on `nodes`; records the version each now holds.
    async fn push_map(&mut self, nodes: Vec<(String, String)>) {
        let Some((map, _)) = &self.map else {
            return;
        };
        let transport = &self.transport;
        let results = join_all(nodes.into_iter().map(|(id, addr)| async move {
            let r = transport.install_map(&addr, map).await;
            (id, r)
        }))
        .await;
        for (id, r) in results {
            match r {
                Ok(resp) => {
                    // The report keeps the version it was made under (its partition roles
                    // are as of that map); the node now holds this one.
                    self.obs.installed.insert(id, resp.version);
                }
                Err(e) => tracing::debug!(node = %id, error = %e, "pushing the map"),
            }
        }
    }

    async fn write_map(&mut self, next: PartitionMap, events: &[CoordinatorEvent]) -> bool {
        let expected = self.map.as_ref().map(|(_, r)| r.clone());
        let timeout = Self::store_timeout(&self.settings.borrow());
        let cas = self.map_store.compare_and_swap(expected.as_ref(), &next);
        let result = match tokio::time::timeout(timeout, cas).await {
            Ok(r) => r,
            Err(_) => {
                // The write may still land: only a reload tells.
                tracing::warn!(?timeout, "writing the partition map timed out; reloading");
                self.loaded = false;
                return false;
            }
        };
        match result {
            Ok(rev) => {
                for e in events {
                    self.emit(e.clone());
                }
                self.map = Some((next, rev));
                self.after_write();
                let alive: Vec<(String, String)> = self
                    .map
                    .iter()
                    .flat_map(|(m, _)| m.nodes.iter())
                    .filter(|(id, _)| self.obs.is_alive(id) && !self.obs.new_disks.contains(*id))
                    .map(|(id, n)| (id.clone(), n.peer_addr.clone()))
                    .collect();
                self.push_map(alive).await;
                true
            }
            Err(MapStoreError::Conflict) => {
                tracing::warn!("the partition map changed under us; reloading");
                self.loaded = false;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the partition map");
                false
            }
        }
    }

    /// Notes the disk identity a node answered with. Another one than before (an empty or
    /// foreign data directory) makes it a new disk (issue item 6): what it answered from its
    /// old disk (admission, log positions, hand-off readiness) is forgotten, and while the
    /// stored map lists it in sync it gets no map and the planner drops it from `inSync`.
    fn note_disk(&mut self, id: &str, disk_id: &str) {
        if disk_id.is_empty() {
            return;
        }
        match self.disk_ids.insert(id.to_owned(), disk_id.to_owned()) {
            Some(old) if old != disk_id => {
                tracing::warn!(
                    node = %id,
                    old = %old,
                    new = %disk_id,
                    "the node answers with a new disk identity (empty or foreign data directory): \
                     it leaves every inSync set and rejoins as a learner"
                );
                self.obs.new_disks.insert(id.to_owned());
                self.obs.admitted.retain(|(_, _, n)| n != id);
                for positions in self.obs.positions.values_mut() {
                    positions.remove(id);
                }
                self.obs.handoffs.retain(|_, o| o.to != id);
                self.settle_new_disks();
            }
            _ => {}
        }
    }

    /// A node on a new disk stops being one once the stored map lists it in no `inSync`:
    /// from then on it is an ordinary learner or lagging replica.
    fn settle_new_disks(&mut self) {
        let map = self.map.as_ref().map(|(m, _)| m);
        self.obs
            .new_disks
            .retain(|n| map.is_some_and(|m| m.partitions.iter().any(|e| e.is_in_sync(n))));
    }

    /// Drops observations a new map made stale.
    fn after_write(&mut self) {
        self.settle_new_disks();
        let Some((map, _)) = &self.map else {
            return;
        };
        let epoch = |p: PartitionId| map.entry(p).map_or(0, |e| e.epoch);
        self.obs.handoffs.clear();
        self.obs.node_maps.clear();
        self.obs.positions.retain(|(p, e), _| epoch(*p) == *e);
        self.obs
            .admitted
            .retain(|(p, e, n)| epoch(*p) == *e && map.entry(*p).is_some_and(|x| !x.is_in_sync(n)));
    }

    fn collect_outcomes(&mut self) {
        while let Ok((call, outcome)) = self.results_rx.try_recv() {
            self.absorb(call, outcome);
        }
    }

    /// Records what a background call answered.
    fn absorb(&mut self, call: Call, outcome: Outcome) {
        self.inflight.remove(&call);
        match outcome {
            Outcome::Position(p, epoch, node, pos) => {
                self.obs
                    .positions
                    .entry((p, epoch))
                    .or_default()
                    .insert(node, pos);
            }
            Outcome::Admitted(p, epoch, node) => {
                self.obs.admitted.insert((p, epoch, node));
            }
            Outcome::Handoff(p, o) => {
                if !o.ready {
                    self.obs.handoff_failed_at.insert(p, Instant::now());
                }
                self.obs.handoffs.insert(p, o);
            }
            Outcome::Dropped(partition, node) => {
                self.emit(CoordinatorEvent::ReplicaDropped { partition, node });
            }
            Outcome::Map(node, map) => {
                self.obs.node_maps.insert(node, *map);
            }
            Outcome::Nothing => {}
        }
    }

    /// Starts `call` in the background unless the same call is still running.
    fn start_call(&mut self, call: Call, settings: &Settings) {
        let map = self.map.as_ref().map(|(m, _)| m);
        if self.inflight.insert(call.clone()) {
            calls::spawn(
                call,
                map,
                self.transport.clone(),
                self.results_tx.clone(),
                settings.handoff_timeout,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Contact;
    use shardedstore_node::admin_api::HeartbeatResponse;
    use std::time::Instant;

    fn answer(node: &str) -> Result<HeartbeatResponse, String> {
        Ok(HeartbeatResponse {
            node_id: node.to_owned(),
            map_version: 3,
            partitions: Vec::new(),
            incarnation: 1,
            disk_id: "d".into(),
            seq: 7,
            storage_stalled_ms: 0,
            lease_revoked: false,
        })
    }

    /// Issue item 11 (node id checked in heartbeat replies): with node-1's and node-2's
    /// addresses swapped, the answer at node-1's address comes from node-2. It counts as no
    /// answer from node-1 (neither a report that would confirm node-1's lease and fence nor a
    /// probe answer that would make it alive), while node-1's own answer is a report.
    #[test]
    fn an_answer_from_another_node_id_is_no_answer() {
        let now = Instant::now();
        match Contact::of("node-1", "10.0.0.2:7100", true, 7, answer("node-2"), now) {
            Contact::Silent(why) => assert!(why.contains("answered as node-2"), "{why}"),
            Contact::Report(..) => panic!("another node's heartbeat answer credited as a report"),
            Contact::Probed(_) => panic!("another node's heartbeat answer credited as a probe"),
        }
        assert!(matches!(
            Contact::of("node-1", "10.0.0.2:7100", false, 7, answer("node-2"), now),
            Contact::Silent(_)
        ));
        assert!(matches!(
            Contact::of("node-1", "10.0.0.1:7100", true, 7, answer("node-1"), now),
            Contact::Report(r, 7, t) if r.node_id == "node-1" && t == now
        ));
        assert!(matches!(
            Contact::of("node-1", "10.0.0.1:7100", false, 7, answer("node-1"), now),
            Contact::Probed(r) if r.node_id == "node-1"
        ));
        assert!(matches!(
            Contact::of("node-1", "10.0.0.1:7100", true, 7, Err::<HeartbeatResponse, _>("refused"), now),
            Contact::Silent(why) if why == "refused"
        ));
    }

    /// While a partition has a learner the coordinator ticks ten times as often (not
    /// below 50 ms, nor above the interval itself); while a node that just became ready has
    /// not answered, every 50 ms; otherwise once per heartbeat interval.
    #[test]
    fn ticks_come_faster_while_a_move_is_in_flight() {
        use super::tick_interval;
        use shardedstore_node::map::PartitionMap;
        use std::time::Duration;
        let ms = Duration::from_millis;
        let mut map = PartitionMap::empty("s", 4, 3, 2);
        map.partitions[1].replicas = vec!["node-0".into()];
        assert_eq!(tick_interval(ms(500), None, false), ms(500));
        assert_eq!(tick_interval(ms(500), Some(&map), false), ms(500));
        map.partitions[2].learners = vec!["node-3".into()];
        assert_eq!(tick_interval(ms(500), Some(&map), false), ms(50));
        assert_eq!(tick_interval(ms(2000), Some(&map), false), ms(200));
        assert_eq!(tick_interval(ms(120), Some(&map), false), ms(50));
        assert_eq!(tick_interval(ms(30), Some(&map), false), ms(30));
        assert_eq!(tick_interval(ms(500), None, true), ms(50));
        assert_eq!(tick_interval(ms(500), Some(&map), true), ms(50));
        assert_eq!(tick_interval(ms(30), None, true), ms(30));
    }
}
