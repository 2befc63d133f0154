//! The node: the set of partitions it holds, installing maps (taking and dropping roles,
//! deleting partitions it no longer holds), heartbeats and the lease, and background upkeep.

use crate::admin_api::{HeartbeatRequest, HeartbeatResponse, LogPosition};
use crate::context::Ctx;
use crate::lease::Beat;
use crate::map::{MapError, PartitionId, PartitionMap};
use crate::replication::replica::Replica;
use crate::replication::roles::unproven_when_created;
use crate::storage::writer::{Command, Pending};
use crate::storage::{PartitionDisk, StorageError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a map was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid map: {0}")]
    Invalid(#[from] MapError),
    #[error(
        "the map has {offered} partitions, the installed map {installed}: the partition count never changes"
    )]
    PartitionCount { offered: u32, installed: u32 },
    #[error("the map belongs to store {found}, this node to {expected}")]
    WrongStore { found: String, expected: String },
    #[error("map version {offered} is older than the installed version {installed}")]
    Older { offered: u64, installed: u64 },
    #[error("encoding the map")]
    Encode(#[source] serde_json::Error),
    #[error("persisting the map")]
    Persist(#[from] StorageError),
}

/// Why a heartbeat was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat for store {found}, this node belongs to {expected}")]
    WrongStore { found: String, expected: String },
    #[error("heartbeat for node {found}, this is node {expected}")]
    WrongNode { found: String, expected: String },
}

/// Why a partition was not dropped.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("the installed map still lists this node as a member of partition {0}")]
    StillMember(PartitionId),
    #[error("dropping the partition")]
    Storage(#[from] StorageError),
}

/// The epoch floor of partition `p` after a restart: its entry's epoch in the map persisted
/// before the start (0 without one).
fn start_floor(start_map: Option<&PartitionMap>, p: PartitionId) -> u64 {
    start_map.and_then(|m| m.entry(p)).map_or(0, |e| e.epoch)
}

fn lock_set(
    set: &std::sync::Mutex<BTreeSet<PartitionId>>,
) -> std::sync::MutexGuard<'_, BTreeSet<PartitionId>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until partition `p`'s queued drop `d` is durable, then lets replicas of `p` be
/// created again (`Node::dropping`).
async fn finish_drop(
    dropping: &std::sync::Mutex<BTreeSet<PartitionId>>,
    p: PartitionId,
    d: Pending,
) -> Result<(), StorageError> {
    let done = d.wait().await;
    lock_set(dropping).remove(&p);
    done?;
    tracing::info!(partition = p, "dropped local copy of partition");
    Ok(())
}

/// A storage node.
pub struct Node {
    pub ctx: Arc<Ctx>,
    replicas: RwLock<BTreeMap<PartitionId, Arc<Replica>>>,
    install_lock: tokio::sync::Mutex<()>,
    /// Partitions whose drop is queued but not yet durable. No replica is created for them
    /// meanwhile ([`Node::replica_for_peer`]), so nothing of such a partition is logged
    /// before its drop is on disk: the log does not wait for a drop's checkpoint
    /// (`storage::writer`), and a record of the partition replayed after a crash that lost
    /// the drop would land on the old copy.
    dropping: Arc<std::sync::Mutex<BTreeSet<PartitionId>>>,
    /// The map persisted when the process started: every epoch this node may have led
    /// before is at most its entry's epoch (maps are persisted before they are obeyed).
    start_map: Option<Arc<PartitionMap>>,
}

impl Node {
    /// Loads every partition found on disk (discarding interrupted snapshot installs) and
    /// obeys the persisted map, if any.
    pub async fn start(ctx: Arc<Ctx>) -> Result<Arc<Self>, StorageError> {
        let start_map = ctx.map();
        let mut replicas = BTreeMap::new();
        for (p, interrupted) in ctx.store.partitions()? {
            if interrupted {
                tracing::warn!(partition = p, "discarding an interrupted snapshot install");
                ctx.writer
                    .run(Command::DropPartition { partition: p })
                    .await?;
                continue;
            }
            let disk = ctx.store.load_partition(p)?;
            tracing::info!(partition = p, last = ?disk.last, applied = disk.applied_seq, unproven = disk.unproven, "loaded partition");
            let r = Replica::new(ctx.clone(), p, disk);
            {
                let mut st = r.lock();
                st.lead_floor = st.lead_floor.max(start_floor(start_map.as_deref(), p));
            }
            replicas.insert(p, r);
        }
        let node = Arc::new(Self {
            ctx,
            replicas: RwLock::new(replicas),
            install_lock: tokio::sync::Mutex::new(()),
            dropping: Arc::default(),
            start_map,
        });
        if let Some(map) = node.ctx.map() {
            let _g = node.install_lock.lock().await;
            node.reconcile(&map).await?;
        }
        Ok(node)
    }

    pub fn replica(&self, p: PartitionId) -> Option<Arc<Replica>> {
        self.replicas.read().ok()?.get(&p).cloned()
    }

    fn all(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The replica a replication message addresses: held already, or created when the
    /// installed map makes this node a member.
    pub fn replica_for_peer(&self, p: PartitionId) -> Option<Arc<Replica>> {
        if let Some(r) = self.replica(p) {
            return Some(r);
        }
        let map = self.ctx.map()?;
        let entry = map.entry(p)?;
        if !entry.is_member(&self.ctx.node_id) {
            return None;
        }
        let mut replicas = self.replicas.write().ok()?;
        if self.is_dropping(p) {
            // Its old copy's drop is not durable yet: the peer asks again.
            return None;
        }
        let mut created = false;
        let r = replicas
            .entry(p)
            .or_insert_with(|| {
                created = true;
                Replica::new(self.ctx.clone(), p, PartitionDisk::default())
            })
            .clone();
        {
            let mut st = r.lock();
            st.entry = entry.clone();
            st.min_in_sync = map.min_in_sync as usize;
            st.epoch = st.epoch.max(entry.epoch);
            st.lead_floor = st.lead_floor.max(start_floor(self.start_map.as_deref(), p));
            let recorded = map.disks.get(&self.ctx.node_id).map(String::as_str);
            let own = self.ctx.store.disk_id();
            if created && unproven_when_created(entry, &self.ctx.node_id, recorded, own) {
                st.unproven = true;
                tracing::warn!(
                    partition = p,
                    epoch = entry.epoch,
                    recorded_disk = recorded.unwrap_or(""),
                    disk = own,
                    "no copy on this disk although the map lists this node in sync: the new copy is unproven"
                );
                // Queued before any append of this copy, so it is durable no later than they are.
                let cmd = Command::SetUnproven {
                    partition: p,
                    unproven: true,
                };
                if let Err(e) = self.ctx.writer.submit(cmd) {
                    tracing::error!(partition = p, error = %e, "persisting the unproven mark");
                }
            }
        }
        Some(r)
    }

    /// Installs a map: validated, only a higher version, persisted before it is obeyed.
    /// Re-sending the installed version is accepted and changes nothing.
    pub async fn install_map(&self, map: PartitionMap) -> Result<u64, InstallError> {
        map.validate()?;
        if map.store != self.ctx.store_name {
            return Err(InstallError::WrongStore {
                found: map.store,
                expected: self.ctx.store_name.clone(),
            });
        }
        let _g = self.install_lock.lock().await;
        if let Some(current) = self.ctx.map()
            && current.partition_count() != map.partition_count()
        {
            return Err(InstallError::PartitionCount {
                offered: map.partition_count(),
                installed: current.partition_count(),
            });
        }
        let installed = self.ctx.map_version();
        if map.version == installed && installed > 0 {
            return Ok(installed);
        }
        if map.version < installed {
            return Err(InstallError::Older {
                offered: map.version,
                installed,
            });
        }
        let json = serde_json::to_vec(&map).map_err(InstallError::Encode)?;
        self.ctx.writer.run(Command::PutMap { json }).await?;
        let map = Arc::new(map);
        self.ctx.set_map(map.clone());
        tracing::info!(version = map.version, "installed partition map");
        self.reconcile(&map).await?;
        Ok(map.version)
    }

    /// Makes every partition obey `map`: members take their roles, non-members drop their copy.
    ///
    /// A dropped copy leaves at once (its replica stops and is forgotten, its drop is queued
    /// to storage ahead of anything queued later), but the map's installer is not kept waiting
    /// for the drop to be durable: a drop is made durable by a checkpoint, which under load
    /// takes 100–250 ms, and the coordinator's next step of a move waited for it (every move
    /// of a scale-out finishes by dropping the source's copy). The drops' completion is
    /// awaited in the background. A copy created again for the partition later starts empty
    /// in memory, and its storage commands queue behind the drop, so it never sees the old
    /// copy's rows; a crash before the drop is durable leaves the old copy on disk, which
    /// the next start drops again because the persisted map no longer lists this node.
    async fn reconcile(&self, map: &PartitionMap) -> Result<(), StorageError> {
        let me = self.ctx.node_id.clone();
        let mut drops = Vec::new();
        for (i, entry) in map.partitions.iter().enumerate() {
            let p = i as PartitionId;
            if entry.is_member(&me) {
                let replica = match self.replica(p) {
                    Some(r) => r,
                    None => match self.replica_for_peer(p) {
                        Some(r) => r,
                        None => continue,
                    },
                };
                replica.apply_map(entry.clone(), map.min_in_sync).await;
            } else if let Some(d) = self.begin_remove(p).await? {
                drops.push((p, d));
            }
        }
        // Partitions beyond the map's range cannot exist in a valid history; drop them too.
        let beyond: Vec<PartitionId> = self
            .all()
            .iter()
            .map(|r| r.partition)
            .filter(|&p| p >= map.partition_count())
            .collect();
        for p in beyond {
            if let Some(d) = self.begin_remove(p).await? {
                drops.push((p, d));
            }
        }
        if !drops.is_empty() {
            let dropping = self.dropping.clone();
            tokio::spawn(async move {
                for (p, d) in drops {
                    // An error means the writer has failed: the node stops.
                    if let Err(e) = finish_drop(&dropping, p, d).await {
                        tracing::error!(partition = p, error = %e, "dropping the local copy of a partition");
                    }
                }
            });
        }
        Ok(())
    }

    fn is_dropping(&self, p: PartitionId) -> bool {
        lock_set(&self.dropping).contains(&p)
    }

    /// Removes partition `p`'s replica, if this node holds one, and waits until its drop is
    /// durable.
    async fn remove(&self, p: PartitionId) -> Result<(), StorageError> {
        match self.begin_remove(p).await? {
            Some(d) => finish_drop(&self.dropping, p, d).await,
            None => Ok(()),
        }
    }

    /// Stops and forgets partition `p`'s replica, if this node holds one, and queues its drop
    /// once no change to its log is under way (behind the replica's write lock); returns the
    /// queued drop.
    async fn begin_remove(&self, p: PartitionId) -> Result<Option<Pending>, StorageError> {
        let removed = self.replicas.write().ok().and_then(|mut r| {
            let removed = r.remove(&p);
            // Under the same lock as `replica_for_peer`'s check: no replica of `p` is created
            // between the two.
            if removed.is_some() {
                lock_set(&self.dropping).insert(p);
            }
            removed
        });
        let Some(r) = removed else {
            return Ok(None);
        };
        r.stop();
        let _w = r.write_lock.lock().await;
        self.ctx
            .writer
            .submit(Command::DropPartition { partition: p })
            .map(Some)
            .inspect_err(|_| {
                lock_set(&self.dropping).remove(&p);
            })
    }

    /// Drops a partition on request; refused while the installed map lists this node.
    pub async fn drop_partition(&self, p: PartitionId) -> Result<(), DropError> {
        let _g = self.install_lock.lock().await;
        let member = self
            .ctx
            .map()
            .and_then(|m| m.entry(p).map(|e| e.is_member(&self.ctx.node_id)))
            .unwrap_or(false);
        if member {
            return Err(DropError::StillMember(p));
        }
        self.remove(p).await?;
        Ok(())
    }

    /// Applies the lease rule ([`crate::lease`]) and reports every partition's state.
    pub fn heartbeat(
        self: &Arc<Self>,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, HeartbeatError> {
        if req.store != self.ctx.store_name {
            return Err(HeartbeatError::WrongStore {
                found: req.store.clone(),
                expected: self.ctx.store_name.clone(),
            });
        }
        if !req.node.is_empty() && req.node != self.ctx.node_id {
            return Err(HeartbeatError::WrongNode {
                found: req.node.clone(),
                expected: self.ctx.node_id.clone(),
            });
        }
        let stalled = self.ctx.writer.stalled_for();
        let may_extend = stalled <= crate::context::STORAGE_STALL_BOUND;
        let lease = Duration::from_millis(req.lease_ms);
        let lease_revoked = !may_extend && !req.coordinator.is_empty();
        if req.coordinator.is_empty() {
            if may_extend {
                self.ctx.lease.grant_from_receipt(lease);
            }
            if !self.ctx.legacy_operator.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "heartbeat without a coordinator id: the operator predates the incarnation \
                     rule; a restarted node may lead its old epochs again"
                );
                let node = self.clone();
                tokio::spawn(async move { node.reobey_map().await });
            }
        } else {
            let beat = Beat {
                coordinator: &req.coordinator,
                seq: req.seq,
                confirmed_seq: req.confirmed_seq,
                lease,
            };
            self.ctx.lease.on_heartbeat(&beat, may_extend);
        }
        let replicas = self.all();
        for r in &replicas {
            r.advance_commit();
        }
        Ok(HeartbeatResponse {
            node_id: self.ctx.node_id.clone(),
            map_version: self.ctx.map_version(),
            partitions: replicas.iter().map(|r| r.status()).collect(),
            incarnation: self.ctx.incarnation,
            disk_id: self.ctx.store.disk_id().to_owned(),
            seq: req.seq,
            storage_stalled_ms: stalled.as_millis() as u64,
            lease_revoked,
        })
    }

    /// Where the partition's durable log ends (entries appended but not yet durable are not
    /// reported: a failover chooses by positions that survive a crash).
    /// Obeys the installed map again (after a rule that decides roles changed).
    async fn reobey_map(&self) {
        let _g = self.install_lock.lock().await;
        if let Some(map) = self.ctx.map()
            && let Err(e) = self.reconcile(&map).await
        {
            tracing::error!(error = %e, "obeying the installed map again");
        }
    }

    pub fn position(&self, p: PartitionId) -> Option<LogPosition> {
        self.replica(p).map(|r| r.durable_position())
    }

    /// Background upkeep until `shutdown`: log compaction and the stored-data gauges.
    pub async fn upkeep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let (mut keys, mut bytes, mut lag, mut entries) = (0u64, 0u64, 0u64, 0u64);
            let mut log_bytes = 0u64;
            for r in self.all() {
                if let Err(e) = r.compact().await {
                    tracing::warn!(partition = r.partition, error = %e, "log compaction failed");
                }
                let st = r.lock();
                keys += st.keys;
                bytes += st.bytes;
                entries += st.last.last_seq.saturating_sub(st.base.last_seq);
                log_bytes += st.log_bytes.total();
                if let Some(p) = &st.primary {
                    for f in p.followers.values() {
                        lag = lag.max(st.last.last_seq.saturating_sub(f.acked.unwrap_or(0)));
                    }
                }
            }
            let m = &self.ctx.metrics;
            m.stored_keys.set(keys as i64);
            m.stored_bytes.set(bytes as i64);
            m.replication_lag_entries.set(lag as i64);
            m.log_entries.set(entries as i64);
            m.log_bytes
                .set(i64::try_from(log_bytes).unwrap_or(i64::MAX));
            let values = self.ctx.store.values();
            m.value_file_bytes
                .set(i64::try_from(values.file_bytes()).unwrap_or(i64::MAX));
            let compactions = values.compactions();
            m.value_compactions
                .inc_by(compactions.saturating_sub(m.value_compactions.get()));
        }
    }
}
