//! The primary side of a partition: taking and dropping the primary role as maps arrive,
//! the write and read paths, the commit rule, learner admission and hand-off.

use super::commit::{CommitInput, commit_point};
use super::replica::{Replica, State};
use super::roles::{
    Admissions, LeadCheck, NoLead, holds_every_committed, may_lead, still_unproven,
};
use crate::admin_api::{AdmitRequest, AdmitResponse, HandoffRequest, HandoffResponse, LogPosition};
use crate::map::{NodeId, PartitionEntry};
use crate::metrics::{WritePhase, replicated_through};
use crate::storage::codec::{LogEntry, Op};
use crate::storage::writer::Command;
use crate::storage::{StorageError, Versioned};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A member's replication progress as the primary sees it.
pub struct Progress {
    /// Highest sequence number it durably holds in agreement with this log, as proven by the
    /// live replication session to it: `None` from the start of every session until its probe
    /// is answered (finding C1: a position acknowledged in an earlier session may be gone, e.g.
    /// the member restarted and discarded an interrupted snapshot install, or a snapshot install
    /// just emptied it).
    pub acked: Option<u64>,
    /// Highest position acknowledged in this term (any session): only a position above it
    /// counts as progress for [`Progress::progress_at`], so re-probing is not progress.
    pub high: Option<u64>,
    pub last_contact: Option<Instant>,
    /// Last acknowledged progress, or when entries became outstanding for a member that had
    /// acknowledged everything ([`Progress::pending_since`]).
    pub progress_at: Instant,
    /// Stops the replication task to this member.
    pub task: CancellationToken,
    /// A snapshot is being sent to it (reported as `copying` in the heartbeat answer).
    pub copying: bool,
}

/// State that exists only while this node is the partition's primary.
pub struct PrimaryState {
    pub epoch: u64,
    /// Cancelled when this node stops being primary at `epoch`.
    pub term: CancellationToken,
    /// Log end when the role was taken: nothing is served before it is applied.
    pub barrier_seq: u64,
    /// Set during a hand-off: no writes or reads until a newer map.
    pub handoff: Option<NodeId>,
    pub followers: BTreeMap<NodeId, Progress>,
    /// Learners that must acknowledge before anything commits.
    pub admitted: Admissions,
    /// Latest appended but not yet applied write per key: `(version, exists)`.
    pub pending: HashMap<Vec<u8>, (u64, bool)>,
    /// Writes waiting for their entry to commit, by sequence number: an advance of the
    /// commit point wakes only the writes it commits (a watch would wake every write of the
    /// partition at every advance). Dropped with the role, which cancels `term` first.
    pub commit_waiters: BTreeMap<u64, tokio::sync::oneshot::Sender<()>>,
}

impl PrimaryState {
    /// Wakes the writes whose entries are at or below the commit point `commit_seq`.
    fn wake_committed(&mut self, commit_seq: u64) {
        let waiting = self.commit_waiters.split_off(&commit_seq.saturating_add(1));
        for (_, waiter) in std::mem::replace(&mut self.commit_waiters, waiting) {
            let _ = waiter.send(());
        }
    }
}

/// Why a client request cannot be served here.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("this node is not the primary of the partition")]
    NotPrimary { primary: Option<NodeId> },
    #[error("partition unavailable: {0}")]
    Unavailable(&'static str),
    /// The condition does not hold against the committed state (`current`: the key's version).
    #[error("precondition failed")]
    PreconditionFailed { current: Option<u64> },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why an admin request about a partition is refused (answered 409).
#[derive(Debug, thiserror::Error)]
pub enum AdminRefusal {
    #[error("this node is not the primary of the partition")]
    NotPrimary,
    #[error("the primary is at epoch {current}, not {requested}")]
    StaleEpoch { current: u64, requested: u64 },
    #[error("{0} is not a member of the partition")]
    NotMember(NodeId),
    #[error("{0} is not in sync")]
    NotInSync(NodeId),
}

impl AdminRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            AdminRefusal::NotPrimary => "not_primary",
            AdminRefusal::StaleEpoch { .. } => "stale_epoch",
            AdminRefusal::NotMember(_) => "not_member",
            AdminRefusal::NotInSync(_) => "not_in_sync",
        }
    }
}

/// Precondition of a conditional write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// `If-Match: <version>`.
    IfVersion(u64),
    /// `If-Match: *`.
    IfExists,
    /// `If-None-Match: *`.
    IfAbsent,
}

impl Condition {
    /// Whether the condition holds given the key's current version.
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Condition::Always => true,
            Condition::IfVersion(v) => current == Some(v),
            Condition::IfExists => current.is_some(),
            Condition::IfAbsent => current.is_none(),
        }
    }
}

/// Result of an acknowledged write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub version: u64,
    /// Whether the key existed before the write.
    pub existed: bool,
}

impl Progress {
    /// How long the member has had outstanding entries without acknowledging progress
    /// (`None` when it holds everything up to `last_seq`).
    pub fn pending_since(&self, last_seq: u64, now: Instant) -> Option<Duration> {
        if self.acked.is_some_and(|a| a >= last_seq) {
            return None;
        }
        Some(now.saturating_duration_since(self.progress_at))
    }

    /// A member's progress when this node takes the primary role or adds the member.
    pub fn new(task: CancellationToken, now: Instant) -> Self {
        Self {
            acked: None,
            high: None,
            last_contact: None,
            progress_at: now,
            task,
            copying: false,
        }
    }

    /// Records an acknowledgement; progress (a higher position than any this term) restarts
    /// the pending clock. Returns whether the proven position moved up.
    pub fn ack(&mut self, acked: u64, now: Instant) -> bool {
        if self.high.is_none_or(|h| acked > h) {
            self.progress_at = now;
            self.high = Some(acked);
        }
        let advanced = self.acked.is_none_or(|a| acked > a);
        self.acked = Some(acked);
        self.last_contact = Some(now);
        advanced
    }

    /// A replication session to the member starts (or ended): nothing it held before is
    /// proven any more until the new session's probe is answered.
    pub fn unprove(&mut self) {
        self.acked = None;
    }
}

impl Replica {
    /// Obeys a newly installed map entry: takes, keeps or drops the primary role and
    /// starts or stops replication tasks to the members.
    pub async fn apply_map(self: &Arc<Self>, entry: PartitionEntry, min_in_sync: u32) {
        let me = self.ctx.node_id.clone();
        let mut spawn = Vec::new();
        let mut new_history = None;
        let mut clear_unproven = false;
        {
            let mut st = self.lock();
            st.min_in_sync = min_in_sync as usize;
            if entry.epoch > st.epoch {
                self.raise_epoch(&mut st, entry.epoch);
            }
            let check = LeadCheck {
                entry_epoch: entry.epoch,
                named_primary: entry.primary.as_deref() == Some(me.as_str()),
                known_epoch: st.epoch,
                lead_floor: if self.ctx.legacy_operator.load(Ordering::Relaxed) {
                    0
                } else {
                    st.lead_floor
                },
                unproven: st.unproven,
                installing: st.installing.is_some(),
            };
            let lead = match may_lead(&check) {
                Ok(()) => true,
                Err(NoLead::LedBeforeRestart) if st.primary.is_none() => {
                    tracing::warn!(
                        partition = self.partition,
                        epoch = entry.epoch,
                        floor = st.lead_floor,
                        "restarted since possibly leading this epoch: waiting for a higher epoch"
                    );
                    false
                }
                Err(NoLead::Unproven) => {
                    tracing::warn!(
                        partition = self.partition,
                        epoch = entry.epoch,
                        "this copy was created empty while listed in sync: not taking the primary role"
                    );
                    false
                }
                // Already primary at this epoch in this process: keep the role.
                Err(NoLead::LedBeforeRestart) => true,
                Err(_) => false,
            };
            if st.unproven && !still_unproven(true, &entry, &me) {
                st.unproven = false;
                clear_unproven = true;
                tracing::info!(
                    partition = self.partition,
                    "no longer listed in sync: this copy rejoins as a learner"
                );
            }
            st.entry = entry.clone();
            if lead {
                let same_term = st.primary.as_ref().is_some_and(|p| p.epoch == entry.epoch);
                if !same_term {
                    if let Some(p) = st.primary.take() {
                        p.term.cancel();
                    }
                    let next = st.last.last_seq + 1;
                    st.history.record(entry.epoch, next);
                    new_history = Some(st.history.clone());
                    let barrier_seq = st.last.last_seq;
                    tracing::info!(
                        partition = self.partition,
                        epoch = entry.epoch,
                        barrier_seq,
                        "taking the primary role"
                    );
                    st.primary = Some(PrimaryState {
                        epoch: entry.epoch,
                        term: CancellationToken::new(),
                        barrier_seq,
                        handoff: None,
                        followers: BTreeMap::new(),
                        admitted: Admissions::default(),
                        pending: HashMap::new(),
                        commit_waiters: BTreeMap::new(),
                    });
                }
                if let Some(p) = st.primary.as_mut() {
                    // A newer map ends any hand-off (an aborted one names this node again).
                    p.handoff = None;
                    let members: BTreeSet<NodeId> =
                        entry.members().filter(|n| **n != me).cloned().collect();
                    p.followers.retain(|n, f| {
                        let keep = members.contains(n);
                        if !keep {
                            f.task.cancel();
                        }
                        keep
                    });
                    p.admitted.retain(&entry);
                    p.admitted.forget_lapsed(Instant::now());
                    for m in members {
                        if !p.followers.contains_key(&m) {
                            let task = p.term.child_token();
                            p.followers
                                .insert(m.clone(), Progress::new(task.clone(), Instant::now()));
                            spawn.push((m, task));
                        }
                    }
                }
            } else if let Some(p) = st.primary.take() {
                tracing::info!(
                    partition = self.partition,
                    epoch = st.epoch,
                    "giving up the primary role"
                );
                p.term.cancel();
            }
        }
        if clear_unproven {
            let cmd = Command::SetUnproven {
                partition: self.partition,
                unproven: false,
            };
            if let Err(e) = self.ctx.writer.run(cmd).await {
                tracing::error!(partition = self.partition, error = %e, "clearing the unproven mark");
            }
        }
        if let Some(history) = new_history {
            let cmd = Command::SetHistory {
                partition: self.partition,
                history,
            };
            if let Err(e) = self.ctx.writer.run(cmd).await {
                tracing::error!(partition = self.partition, error = %e, "recording the new epoch");
            }
        }
        for (member, token) in spawn {
            tokio::spawn(super::sender::replicate(self.clone(), member, token));
        }
        self.advance_commit();
        self.bump();
    }

    /// Stops acting as primary (the partition is being dropped).
    pub fn stop(&self) {
        let mut st = self.lock();
        if let Some(p) = st.primary.take() {
            p.term.cancel();
        }
    }

    /// Recomputes the commit point from the members' acknowledgements; applies what became
    /// committed.
    pub fn advance_commit(self: &Arc<Self>) {
        let advanced = {
            let mut st = self.lock();
            let input = commit_input(&st, &self.ctx.node_id, self.ctx.may_serve());
            if let Some(r) = input
                .as_ref()
                .and_then(|i| replicated_through(&i.required_acks))
            {
                self.phases.reached(WritePhase::Replicated, r);
            }
            match input {
                Some(input) => match commit_point(&input) {
                    Some(c) if c > st.commit_seq => {
                        st.commit_seq = c;
                        self.phases.reached(WritePhase::Committed, c);
                        if let Some(p) = st.primary.as_mut() {
                            p.wake_committed(c);
                        }
                        true
                    }
                    point => {
                        if st.commit_seq < st.last.last_seq {
                            tracing::trace!(
                                partition = self.partition,
                                ?input,
                                ?point,
                                commit = st.commit_seq,
                                "commit point not advancing"
                            );
                        }
                        false
                    }
                },
                None => false,
            }
        };
        if advanced {
            self.bump();
            self.schedule_apply();
        }
    }

    /// Checks that this node may serve the partition as primary right now.
    fn serving_check(&self, st: &State) -> Result<CancellationToken, ServeError> {
        let Some(p) = st.primary.as_ref() else {
            return Err(ServeError::NotPrimary {
                primary: st.entry.primary.clone(),
            });
        };
        if p.handoff.is_some() {
            return Err(ServeError::Unavailable("handing_off"));
        }
        if self.ctx.storage_stalled() {
            return Err(ServeError::Unavailable("storage_stalled"));
        }
        if !self.ctx.lease.valid() {
            return Err(ServeError::Unavailable("lease_expired"));
        }
        if st.applied_seq < p.barrier_seq {
            return Err(ServeError::Unavailable("primary_not_ready"));
        }
        Ok(p.term.clone())
    }

    /// A linearizable read at the primary: after [`Replica::read_barrier`], the applied
    /// state holds every write acknowledged before the read began. Returns the value and the
    /// applied point it is at least as new as.
    pub async fn read(&self, key: &[u8]) -> Result<(Option<Versioned>, u64), ServeError> {
        let term = {
            let st = self.lock();
            self.serving_check(&st)?
        };
        let applied = self
            .read_barrier(&term, self.ctx.config.write_timeout)
            .await?;
        Ok((self.ctx.store.get(self.partition, key)?, applied))
    }

    /// Waits until this replica has applied everything committed when the call began
    /// (writes are acknowledged at commit, before their apply). Returns the applied point
    /// reached. `term`: the primary term the caller checked; its end ends the wait.
    pub async fn read_barrier(
        &self,
        term: &CancellationToken,
        wait: Duration,
    ) -> Result<u64, ServeError> {
        // Subscribe before reading the commit point, so no apply is missed.
        let mut applied = self.applied_tx.subscribe();
        let target = self.lock().commit_seq;
        let reached = tokio::select! {
            r = applied.wait_for(|a| *a >= target) => match r {
                Ok(a) => *a,
                Err(_) => return Err(ServeError::Unavailable("shutting_down")),
            },
            _ = term.cancelled() => return Err(ServeError::Unavailable("deposed")),
            _ = tokio::time::sleep(wait) => return Err(ServeError::Unavailable("apply_behind")),
        };
        Ok(reached)
    }

    /// For a primary that may serve: waits (up to `wait`) until it has applied everything
    /// committed when the call began, so that its applied state holds every acknowledged
    /// write (a local read here claims zero staleness). `false` when it could not.
    pub async fn settle_primary(&self, wait: Duration) -> bool {
        let term = {
            let st = self.lock();
            match st.primary.as_ref() {
                Some(p) => p.term.clone(),
                None => return true,
            }
        };
        self.read_barrier(&term, wait).await.is_ok()
    }

    /// Reads the applied state without any primary check (local reads).
    pub fn read_applied(&self, key: &[u8]) -> Result<Option<Versioned>, ServeError> {
        Ok(self.ctx.store.get(self.partition, key)?)
    }

    /// A write at the primary: assign the next sequence number, append, replicate, and
    /// answer once it is committed (every in-sync member holds it durably) and the lease
    /// holds. The apply follows; reads here wait for it ([`Replica::read_barrier`]).
    pub async fn write(
        self: &Arc<Self>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        condition: Condition,
    ) -> Result<WriteOutcome, ServeError> {
        let arrived = Instant::now();
        let timeout = self.ctx.config.write_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (guard, current) = loop {
            let guard = self.write_lock.lock().await;
            let (pending, term) = {
                let st = self.lock();
                let term = self.serving_check(&st)?;
                if st.entry.in_sync.len() < st.min_in_sync {
                    return Err(ServeError::Unavailable("below_min_in_sync"));
                }
                let pending = st
                    .primary
                    .as_ref()
                    .and_then(|p| p.pending.get(&key).copied());
                (pending, term)
            };
            // With no pending write of this key, the data table is current (writes are
            // serialized).
            let current = match pending {
                Some((version, exists)) => exists.then_some(version),
                None => self.ctx.store.version_of(self.partition, &key)?,
            };
            // A condition that holds against a pending write may be decided on it: this
            // write is appended after it and commits only if it does.
            if condition.holds(current) {
                break (guard, current);
            }
            // A refusal must not reveal a write that may never commit: wait until the pending
            // write of this key is applied (or this term ends), then decide again.
            let Some((pending_seq, _)) = pending else {
                return Err(ServeError::PreconditionFailed { current });
            };
            drop(guard);
            let mut applied = self.applied_tx.subscribe();
            tokio::select! {
                r = applied.wait_for(|a| *a >= pending_seq) => {
                    if r.is_err() {
                        return Err(ServeError::Unavailable("shutting_down"));
                    }
                }
                // Nothing of this write was appended: the serving check decides next round.
                _ = term.cancelled() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ServeError::Unavailable("pending_write_timeout"));
                }
            }
        };
        let (seq, cuts, term, waiter, timer) = {
            let mut st = self.lock();
            let term = self.serving_check(&st)?;
            let epoch = st.epoch;
            let seq = st.last.last_seq + 1;
            let op = match value {
                Some(value) => Op::Put {
                    key: key.clone(),
                    value,
                },
                None => Op::Delete { key: key.clone() },
            };
            let entry = Arc::new(LogEntry { epoch, seq, op });
            let timer = self.phases.start(seq, arrived);
            if let Some(p) = st.primary.as_mut() {
                // Members that held everything start their pending clock with this entry.
                let now = Instant::now();
                for f in p.followers.values_mut() {
                    if f.acked.is_some_and(|a| a >= seq - 1) {
                        f.progress_at = now;
                    }
                }
            }
            st.history.record(epoch, seq);
            st.last = LogPosition {
                last_epoch: epoch,
                last_seq: seq,
            };
            Self::cache_push(&mut st, entry.clone());
            let exists = matches!(entry.op, Op::Put { .. });
            if let Some(p) = st.primary.as_mut() {
                p.pending.insert(key, (seq, exists));
            }
            let waiter = self.ctx.writer.submit(Command::Append {
                partition: self.partition,
                entries: vec![entry],
                history: st.history.clone(),
            })?;
            (seq, st.log_cuts, term, waiter, timer)
        };
        drop(guard);
        self.bump();
        waiter.wait().await?;
        {
            let mut st = self.lock();
            // The storage made this entry and every one before it durable. If the log was
            // cut meanwhile (deposed, then truncated by a new primary), `seq` may already
            // name another epoch's entry whose append has not finished: the follower path
            // raises `durable_seq` for those once they are durable.
            if st.log_cuts == cuts {
                st.durable_seq = st.durable_seq.max(seq);
            }
            self.phases
                .reached(WritePhase::LocalDurable, st.durable_seq);
        }
        self.advance_commit();
        // Acknowledge at commit: the entry is durable on every in-sync member. Reads at this
        // primary wait for the apply to catch up ([`Replica::read_barrier`]).
        // One timer for the whole wait, however often this write is woken meanwhile.
        let commit_deadline = tokio::time::sleep(timeout);
        tokio::pin!(commit_deadline);
        loop {
            let committed = {
                let mut st = self.lock();
                // Checked under the state lock together with the term: a deposed primary's
                // commit point no longer speaks for this entry.
                if term.is_cancelled() {
                    return Err(ServeError::Unavailable("deposed"));
                }
                if st.commit_seq >= seq {
                    break;
                }
                // Registered under the same lock as the check: an advance past `seq` after
                // it finds the waiter.
                let Some(p) = st.primary.as_mut() else {
                    return Err(ServeError::Unavailable("deposed"));
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                p.commit_waiters.insert(seq, tx);
                rx
            };
            tokio::select! {
                // Woken, or the role's state is gone (its term is cancelled first): look again.
                _ = committed => {}
                _ = term.cancelled() => return Err(ServeError::Unavailable("deposed")),
                _ = &mut commit_deadline => {
                    return Err(ServeError::Unavailable("commit_timeout"));
                }
            }
        }
        if !self.ctx.may_serve() {
            // Unlike the serving check's `lease_expired`, the entry is appended and committed:
            // the write took effect although it cannot be acknowledged.
            return Err(ServeError::Unavailable("lease_expired_after_append"));
        }
        timer.acknowledged();
        Ok(WriteOutcome {
            version: seq,
            existed: current.is_some(),
        })
    }

    /// Admits a learner: until the request's `timeout_ms` passes it must acknowledge before
    /// anything commits. Ready once it holds every committed entry; waits up to `timeout_ms`
    /// for that. A ready answer confirms the admission (kept across map installs until a map
    /// lists the learner in sync or drops it); otherwise it lapses at the deadline, also when
    /// the caller gave up (issue item 4: an admission cannot stall writes for longer than its
    /// call; [`Admissions`]).
    pub async fn admit(
        self: &Arc<Self>,
        req: &AdmitRequest,
    ) -> Result<AdmitResponse, AdminRefusal> {
        let timeout = Duration::from_millis(req.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let lapses_at = Instant::now() + timeout;
        let mut progress = self.progress_tx.subscribe();
        if let Some(within) = req.wait_for_copy_within {
            // Nothing is held back while the copy is under way: the learner is only admitted
            // (and commits wait for it) once it is close.
            loop {
                let (close, answer) = self.copy_close(req, within)?;
                if close {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(answer);
                }
                let _ = tokio::time::timeout_at(deadline, progress.changed()).await;
            }
        }
        let mut timer = None;
        loop {
            let answer = self.admit_once(req, lapses_at)?;
            if timer.is_none() && !answer.ready {
                // Recompute the commit point once the admission lapsed, even if this call
                // is dropped (the caller gave up) before its deadline.
                let replica = self.clone();
                timer = Some(tokio::spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    replica.advance_commit();
                }));
            }
            if answer.ready || tokio::time::Instant::now() >= deadline {
                return Ok(answer);
            }
            let _ = tokio::time::timeout_at(deadline, progress.changed()).await;
        }
    }

    /// Refuses an admission unless this node is the partition's primary at the request's
    /// epoch and the learner is another member of the partition.
    fn check_admission(&self, st: &State, req: &AdmitRequest) -> Result<(), AdminRefusal> {
        primary_at(st, req.epoch)?;
        if !st.entry.is_member(&req.learner) || req.learner == self.ctx.node_id {
            return Err(AdminRefusal::NotMember(req.learner.clone()));
        }
        Ok(())
    }

    /// Whether the learner of an admission asked to wait for its copy has it (no snapshot
    /// under way, a position proven in this session) and is within `within` entries of the
    /// commit point; with the answer to give if the wait ends here. Refuses as
    /// [`Replica::admit`] does.
    fn copy_close(
        &self,
        req: &AdmitRequest,
        within: u64,
    ) -> Result<(bool, AdmitResponse), AdminRefusal> {
        let st = self.lock();
        self.check_admission(&st, req)?;
        let commit_seq = st.commit_seq;
        let f = st
            .primary
            .as_ref()
            .and_then(|p| p.followers.get(&req.learner));
        let acked = f.and_then(|f| f.acked);
        let close = f.is_some_and(|f| !f.copying)
            && acked.is_some_and(|a| {
                (a > 0 || commit_seq == 0) && commit_seq.saturating_sub(a) <= within
            });
        Ok((
            close,
            AdmitResponse {
                ready: false,
                learner_acked_seq: acked.unwrap_or(0),
                commit_seq,
            },
        ))
    }

    fn admit_once(
        self: &Arc<Self>,
        req: &AdmitRequest,
        lapses_at: Instant,
    ) -> Result<AdmitResponse, AdminRefusal> {
        let answer = {
            let mut st = self.lock();
            self.check_admission(&st, req)?;
            let commit_seq = st.commit_seq;
            let Some(p) = st.primary.as_mut() else {
                return Err(AdminRefusal::NotPrimary);
            };
            p.admitted.admit(&req.learner, lapses_at);
            let acked = p.followers.get(&req.learner).and_then(|f| f.acked);
            let ready = holds_every_committed(acked, commit_seq, p.barrier_seq);
            if ready {
                p.admitted.confirm(&req.learner);
            }
            tracing::debug!(
                partition = self.partition,
                learner = %req.learner,
                ready,
                acked = ?acked,
                commit_seq,
                "admission"
            );
            AdmitResponse {
                ready,
                learner_acked_seq: acked.unwrap_or(0),
                commit_seq,
            }
        };
        self.advance_commit();
        Ok(answer)
    }

    /// Hand-off: stop taking writes, wait until `to` holds (and the primary has committed)
    /// the whole log, then answer ready with the final position.
    pub async fn handoff(
        self: &Arc<Self>,
        req: &HandoffRequest,
    ) -> Result<HandoffResponse, AdminRefusal> {
        {
            let _w = self.write_lock.lock().await;
            let mut st = self.lock();
            primary_at(&st, req.epoch)?;
            if !st.entry.is_in_sync(&req.to) || req.to == self.ctx.node_id {
                return Err(AdminRefusal::NotInSync(req.to.clone()));
            }
            let Some(p) = st.primary.as_mut() else {
                return Err(AdminRefusal::NotPrimary);
            };
            p.handoff = Some(req.to.clone());
            tracing::info!(partition = self.partition, to = %req.to, "handing off: writes stopped");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms);
        let mut progress = self.progress_tx.subscribe();
        loop {
            {
                let st = self.lock();
                let Some(p) = st.primary.as_ref() else {
                    return Err(AdminRefusal::NotPrimary);
                };
                let acked = p.followers.get(&req.to).and_then(|f| f.acked);
                let done = acked.is_some_and(|a| a >= st.last.last_seq)
                    && st.commit_seq >= st.last.last_seq;
                if done || tokio::time::Instant::now() >= deadline {
                    return Ok(HandoffResponse {
                        ready: done,
                        position: st.last,
                    });
                }
            }
            let _ = tokio::time::timeout_at(deadline, progress.changed()).await;
        }
    }
}

/// Inputs of the commit rule from a replica's state (`None` when not primary).
fn commit_input(st: &State, me: &str, lease_valid: bool) -> Option<CommitInput> {
    let p = st.primary.as_ref()?;
    let ack = |n: &NodeId| p.followers.get(n).and_then(|f| f.acked);
    let mut required_acks: Vec<Option<u64>> = st
        .entry
        .in_sync
        .iter()
        .filter(|n| n.as_str() != me)
        .map(ack)
        .collect();
    required_acks.extend(
        p.admitted
            .required(Instant::now())
            .filter(|n| !st.entry.in_sync.contains(n))
            .map(ack),
    );
    Some(CommitInput {
        own_durable: st.durable_seq,
        required_acks,
        in_sync: st.entry.in_sync.len(),
        min_in_sync: st.min_in_sync,
        lease_valid,
        barrier_seq: p.barrier_seq,
    })
}

/// Refuses an admin call (admission, hand-off) unless this node is the partition's primary
/// at `epoch`.
fn primary_at(st: &State, epoch: u64) -> Result<(), AdminRefusal> {
    let Some(p) = st.primary.as_ref() else {
        return Err(AdminRefusal::NotPrimary);
    };
    if p.epoch != epoch {
        return Err(AdminRefusal::StaleEpoch {
            current: p.epoch,
            requested: epoch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_compare_with_the_current_version() {
        assert!(Condition::Always.holds(None));
        assert!(Condition::IfVersion(3).holds(Some(3)));
        assert!(!Condition::IfVersion(3).holds(Some(4)));
        assert!(!Condition::IfVersion(3).holds(None));
        assert!(Condition::IfAbsent.holds(None));
        assert!(!Condition::IfAbsent.holds(Some(1)));
        assert!(Condition::IfExists.holds(Some(1)));
        assert!(!Condition::IfExists.holds(None));
    }
}
