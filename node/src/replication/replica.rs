//! One partition's replica on this node: its log bounds, commit and apply points, the
//! in-memory tail of its log, applying committed entries, compaction and status. The
//! follower side lives in [`super::follower`], the primary side in [`super::primary`] and
//! [`super::sender`].

use super::epochs::EpochHistory;
use super::log_bytes::{self, LogBytes};
use super::primary::PrimaryState;
use crate::admin_api::{FollowerProgress, LogPosition, PartitionState, ReplicaRole};
use crate::context::Ctx;
use crate::map::{PartitionEntry, PartitionId};
use crate::metrics::WritePhase;
use crate::storage::codec::LogEntry;
use crate::storage::writer::Command;
use crate::storage::{PartitionDisk, StorageError};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// Bytes of recent log entries kept in memory for replication and apply.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes applied to the data table in one writer command.
const APPLY_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Commit marks remembered to bound the staleness of local reads.
pub(crate) const SYNC_MARKS: usize = 64;

/// Mutable state of a replica, behind [`Replica::lock`].
pub struct State {
    /// Highest epoch seen, from the map or a replication message.
    pub epoch: u64,
    pub base: LogPosition,
    pub last: LogPosition,
    pub durable_seq: u64,
    /// Times entries left the end of this log (a divergent suffix truncated, a snapshot
    /// install begun). A primary's write raises `durable_seq` to its entry when the storage
    /// reports it durable only if no cut happened since it was appended: after a cut the
    /// same sequence numbers may hold another epoch's entries, not yet durable.
    pub log_cuts: u64,
    pub history: EpochHistory,
    pub commit_seq: u64,
    pub applied_seq: u64,
    pub cache: VecDeque<Arc<LogEntry>>,
    pub cache_bytes: usize,
    /// Bytes of the log entries appended here and not yet compacted away (compaction keeps
    /// the log behind the applied point within `--log-window-bytes`).
    pub log_bytes: LogBytes,
    pub keys: u64,
    pub bytes: u64,
    /// Id of the snapshot being installed, if any (nothing is served meanwhile).
    pub installing: Option<u64>,
    /// `(commit_seq, receive time)` of recent appends not yet covered by the applied point.
    pub sync_marks: VecDeque<(u64, Instant)>,
    /// Receive time of the newest append whose commit point is applied here.
    pub last_sync: Option<Instant>,
    /// This partition's entry in the installed map.
    pub entry: PartitionEntry,
    pub min_in_sync: usize,
    pub primary: Option<PrimaryState>,
    /// Highest epoch this replica may have led before the process started; it leads only
    /// higher epochs ([`super::roles::may_lead`]).
    pub lead_floor: u64,
    /// Created empty while listed in sync: no valid in-sync member or failover candidate.
    pub unproven: bool,
    /// Newest replication session accepted from a primary ([`super::session`]).
    pub session: super::session::SessionId,
    /// Receipt times of the last messages of `session` taken in log order, at most
    /// [`super::session::APPENDS_IN_FLIGHT`]: a primary keeping N appends in flight sends a
    /// message only after the answer to the one N before it, so what a message says was
    /// true no earlier than that one's receipt (bounds `x-staleness-ms`).
    pub receipts: VecDeque<Instant>,
    /// The newest session whose probe this process answered (a pipelined session's appends
    /// may arrive out of order only once it was probed here).
    pub probed: Option<super::session::SessionId>,
}

/// One partition held by this node.
pub struct Replica {
    pub partition: PartitionId,
    pub(crate) ctx: Arc<Ctx>,
    st: Mutex<State>,
    pub(crate) applied_tx: watch::Sender<u64>,
    /// Bumped on every append and commit change; replication tasks wait on it.
    pub(crate) progress_tx: watch::Sender<u64>,
    /// Serializes changes to the log (client writes, replication messages, compaction).
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub(crate) apply_lock: tokio::sync::Mutex<()>,
    /// Wakes the partition's apply task ([`Replica::schedule_apply`]), started on first use.
    apply_wake: Arc<tokio::sync::Notify>,
    apply_started: std::sync::atomic::AtomicBool,
    /// Per-phase latency of this partition's writes (metrics only).
    pub(crate) phases: crate::metrics::WritePhases,
}

impl Replica {
    pub fn new(ctx: Arc<Ctx>, partition: PartitionId, disk: PartitionDisk) -> Arc<Self> {
        let epoch = disk.history.last_epoch();
        let st = State {
            epoch,
            base: disk.base,
            last: disk.last,
            durable_seq: disk.last.last_seq,
            log_cuts: 0,
            history: disk.history,
            commit_seq: disk.applied_seq,
            applied_seq: disk.applied_seq,
            cache: VecDeque::new(),
            cache_bytes: 0,
            log_bytes: LogBytes::default(),
            keys: disk.keys,
            bytes: disk.bytes,
            installing: None,
            sync_marks: VecDeque::new(),
            last_sync: None,
            entry: PartitionEntry::default(),
            min_in_sync: 1,
            primary: None,
            lead_floor: epoch,
            unproven: disk.unproven,
            session: (0, 0),
            receipts: VecDeque::new(),
            probed: None,
        };
        let phases = crate::metrics::WritePhases::new(&ctx.metrics.write_phase_seconds);
        Arc::new(Self {
            partition,
            ctx,
            st: Mutex::new(st),
            applied_tx: watch::channel(disk.applied_seq).0,
            progress_tx: watch::channel(0).0,
            write_lock: tokio::sync::Mutex::new(()),
            apply_lock: tokio::sync::Mutex::new(()),
            apply_wake: Arc::new(tokio::sync::Notify::new()),
            apply_started: std::sync::atomic::AtomicBool::new(false),
            phases,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn bump(&self) {
        self.progress_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Adds appended entries to the in-memory tail, evicting old durable ones.
    pub(crate) fn cache_push(st: &mut State, e: Arc<LogEntry>) {
        st.log_bytes
            .push(e.seq, e.op.size() as u64 + log_bytes::ENTRY_OVERHEAD);
        st.cache_bytes += e.op.size();
        st.cache.push_back(e);
        while st.cache_bytes > CACHE_BYTES {
            match st.cache.front() {
                Some(f) if f.seq <= st.durable_seq && f.seq <= st.applied_seq => {
                    st.cache_bytes -= f.op.size();
                    st.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    pub(crate) fn cache_truncate_after(st: &mut State, seq: u64) {
        st.log_bytes.truncate_after(seq);
        while st.cache.back().is_some_and(|e| e.seq > seq) {
            if let Some(e) = st.cache.pop_back() {
                st.cache_bytes -= e.op.size();
            }
        }
    }

    fn cache_drop_through(st: &mut State, seq: u64) {
        st.log_bytes.drop_through(seq);
        while st.cache.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = st.cache.pop_front() {
                st.cache_bytes -= e.op.size();
            }
        }
    }

    /// Notes a higher epoch; a primary of an older epoch stops acting as primary.
    pub(crate) fn raise_epoch(&self, st: &mut State, epoch: u64) {
        if epoch <= st.epoch {
            return;
        }
        st.epoch = epoch;
        if let Some(p) = st.primary.take() {
            tracing::warn!(
                partition = self.partition,
                old_epoch = p.epoch,
                epoch,
                "saw a higher epoch: no longer primary"
            );
            p.term.cancel();
        }
    }

    /// Entries with `prev_seq < seq <= up_to`, up to `max_bytes` (at least one when any
    /// exist). `None` when they are no longer retained (the caller sends a snapshot instead).
    pub async fn entries_after(
        &self,
        prev_seq: u64,
        up_to: u64,
        max_bytes: usize,
    ) -> Result<Option<Vec<Arc<LogEntry>>>, StorageError> {
        let to = {
            let st = self.lock();
            if prev_seq < st.base.last_seq {
                return Ok(None);
            }
            let to = up_to.min(st.last.last_seq);
            if prev_seq >= to {
                return Ok(Some(Vec::new()));
            }
            if st.cache.front().is_some_and(|f| f.seq <= prev_seq + 1) {
                // The cache holds consecutive entries in log order: the first one wanted is
                // at a known offset (bisection is the fallback), not found by walking the
                // thousands before it on every append and apply.
                let start = st
                    .cache
                    .front()
                    .and_then(|f| usize::try_from(prev_seq + 1 - f.seq).ok())
                    .filter(|&i| st.cache.get(i).is_some_and(|e| e.seq == prev_seq + 1))
                    .unwrap_or_else(|| st.cache.partition_point(|e| e.seq <= prev_seq));
                let mut out = Vec::new();
                let mut size = 0;
                for e in st.cache.range(start..) {
                    if e.seq > to {
                        break;
                    }
                    size += e.op.size();
                    out.push(e.clone());
                    if size >= max_bytes {
                        break;
                    }
                }
                return Ok(Some(out));
            }
            to
        };
        // Appends and truncations are answered once durable, before the database shows
        // them: wait until it shows everything queued so far (a truncation this replica has
        // seen answered included), so no entry it removed is read back.
        self.ctx.writer.settle().await?;
        let store = self.ctx.store.clone();
        let p = self.partition;
        let entries =
            tokio::task::spawn_blocking(move || store.read_log(p, prev_seq + 1, to, max_bytes))
                .await
                .map_err(|_| StorageError::WriterGone)??;
        match entries.first() {
            Some(f) if f.seq == prev_seq + 1 => Ok(Some(entries)),
            _ => Ok(None),
        }
    }

    /// Applies committed entries to the data table, in order, until the applied point
    /// reaches the commit point. Run by the replica's apply task ([`Replica::schedule_apply`]);
    /// the apply lock keeps a snapshot install from interleaving with it.
    pub async fn apply_committed(self: Arc<Self>) {
        let _a = self.apply_lock.lock().await;
        loop {
            // The test-only hold stops every batch, also one committed while an earlier batch
            // of this task was being applied.
            while crate::storage::faults::apply_held() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let (from, to) = {
                let st = self.lock();
                if st.applied_seq >= st.commit_seq || st.installing.is_some() {
                    return;
                }
                (st.applied_seq, st.commit_seq)
            };
            let entries = match self.entries_after(from, to, APPLY_BATCH_BYTES).await {
                Ok(Some(e)) => e,
                Ok(None) => Vec::new(),
                Err(e) => {
                    tracing::error!(partition = self.partition, error = %e, "reading entries to apply");
                    return;
                }
            };
            let Some(upto) = entries.last().map(|e| e.seq) else {
                tracing::error!(
                    partition = self.partition,
                    from,
                    to,
                    "committed entries missing from the log"
                );
                return;
            };
            let cmd = Command::Apply {
                partition: self.partition,
                entries,
            };
            let outcome = match self.ctx.writer.run(cmd).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(partition = self.partition, error = %e, "applying entries");
                    return;
                }
            };
            {
                let mut st = self.lock();
                st.applied_seq = upto;
                self.phases.reached(WritePhase::Applied, upto);
                st.keys = outcome.keys;
                st.bytes = outcome.bytes;
                while let Some(&(c, t)) = st.sync_marks.front() {
                    if c > upto {
                        break;
                    }
                    st.last_sync = Some(t);
                    st.sync_marks.pop_front();
                }
                if let Some(p) = st.primary.as_mut() {
                    p.pending.retain(|_, v| v.0 > upto);
                }
            }
            self.applied_tx.send_replace(upto);
        }
    }

    /// Has the partition's apply task apply what is committed. One long-lived task per
    /// replica, woken here, instead of a task per commit advance: a wake-up while it applies
    /// makes it look again once done, and wake-ups meanwhile cost nothing more.
    pub(crate) fn schedule_apply(self: &Arc<Self>) {
        if !self
            .apply_started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tokio::spawn(apply_task(Arc::downgrade(self), self.apply_wake.clone()));
        }
        self.apply_wake.notify_one();
    }

    /// Drops log entries no replica needs any more: keeps everything after the applied point,
    /// the configured window ([`retention_floor`]), and (on a primary) everything a member has
    /// not acknowledged.
    pub async fn compact(&self) -> Result<(), StorageError> {
        let pending = {
            // Only the queueing is serialized with the log's other changes: commands run in
            // queue order, and writes need not wait for the database to take this one in.
            let _w = self.write_lock.lock().await;
            let mut st = self.lock();
            if st.installing.is_some() {
                return Ok(());
            }
            let mut keep_after = st.applied_seq.min(retention_floor(
                &st,
                self.ctx.config.log_window,
                self.ctx.config.log_window_bytes,
            ));
            if let Some(p) = &st.primary {
                for f in p.followers.values() {
                    match f.acked {
                        Some(a) => keep_after = keep_after.min(a),
                        None => return Ok(()),
                    }
                }
            }
            if keep_after <= st.base.last_seq {
                return Ok(());
            }
            let base = LogPosition {
                last_epoch: st.history.epoch_at(keep_after),
                last_seq: keep_after,
            };
            let pending = self.ctx.writer.submit(Command::Compact {
                partition: self.partition,
                base,
            })?;
            // Before the entries leave the database: nobody looks for them there any more.
            st.base = base;
            Self::cache_drop_through(&mut st, base.last_seq);
            pending
        };
        pending.wait().await.map(|_| ())
    }

    /// How many milliseconds old this replica's applied state may be, when it may serve a
    /// local read (an in-sync replica that has heard from its primary).
    pub fn local_read_staleness(&self) -> Option<u64> {
        let st = self.lock();
        if st.installing.is_some() || !st.entry.is_in_sync(&self.ctx.node_id) {
            return None;
        }
        if st.primary.is_some() && self.ctx.may_serve() {
            return Some(0);
        }
        st.last_sync.map(|t| t.elapsed().as_millis() as u64)
    }

    /// Where the durable part of the log ends.
    pub fn durable_position(&self) -> LogPosition {
        let st = self.lock();
        durable_position(&st)
    }

    /// This replica's state for a heartbeat answer.
    pub fn status(&self) -> PartitionState {
        let st = self.lock();
        let me = &self.ctx.node_id;
        let role = match &st.primary {
            Some(p) if p.handoff.is_some() => ReplicaRole::HandingOff,
            Some(_) => ReplicaRole::Primary,
            None if st.unproven && st.entry.is_member(me) => ReplicaRole::Learner,
            None if st.entry.replicas.contains(me) => ReplicaRole::Follower,
            None if st.entry.learners.contains(me) => ReplicaRole::Learner,
            None => ReplicaRole::Stale,
        };
        let now = Instant::now();
        let followers = st
            .primary
            .as_ref()
            .map(|p| {
                p.followers
                    .iter()
                    .map(|(node, f)| FollowerProgress {
                        node: node.clone(),
                        acked_seq: f.acked.unwrap_or(0),
                        last_contact_ms: f.last_contact.map(|t| t.elapsed().as_millis() as u64),
                        pending_since_ms: f
                            .pending_since(st.last.last_seq, now)
                            .map(|d| d.as_millis() as u64),
                        copying: f.copying,
                    })
                    .collect()
            })
            .unwrap_or_default();
        PartitionState {
            partition: self.partition,
            role,
            epoch: st.epoch,
            position: durable_position(&st),
            commit_seq: st.commit_seq,
            applied_seq: st.applied_seq,
            followers,
            keys: st.keys,
            bytes: st.bytes,
            unproven: st.unproven,
        }
    }
}

/// A replica's apply task: applies what is committed each time it is woken, until the
/// replica is gone (its drop wakes it one last time).
async fn apply_task(replica: std::sync::Weak<Replica>, wake: Arc<tokio::sync::Notify>) {
    loop {
        wake.notified().await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        replica.apply_committed().await;
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.apply_wake.notify_one();
    }
}

/// The log position up to the durable point (the whole log once everything is durable).
fn durable_position(st: &State) -> LogPosition {
    if st.durable_seq >= st.last.last_seq {
        st.last
    } else if st.durable_seq <= st.base.last_seq {
        st.base
    } else {
        LogPosition {
            last_epoch: st.history.epoch_at(st.durable_seq),
            last_seq: st.durable_seq,
        }
    }
}

/// The point through which a replica may drop entries it has applied and every replica holds:
/// it keeps the last `window` entries, but no more than `window_bytes` of them and no more
/// than its data (at least [`MIN_RETAINED_BYTES`]): a replica further behind than that is
/// caught up by a snapshot for fewer bytes than the log would take.
pub(crate) fn retention_floor(st: &State, window: u64, window_bytes: u64) -> u64 {
    let budget = window_bytes.min(st.bytes.max(MIN_RETAINED_BYTES));
    st.last
        .last_seq
        .saturating_sub(window)
        .max(st.log_bytes.floor_for(budget))
}

/// The byte budget of a partition's retained log is at least this, however little data it holds.
pub(crate) const MIN_RETAINED_BYTES: u64 = 4 * 1024 * 1024;
