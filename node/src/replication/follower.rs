//! The follower side of replication: answering probes, appending (after truncating a
//! divergent suffix), and installing snapshots. Every handler first applies epoch fencing.

use super::epochs::EpochHistory;
use super::frame::{Append, Probe, ProbeReply, Reply, SnapshotChunk, Status};
use super::replica::{Replica, SYNC_MARKS, State};
use super::session::APPENDS_IN_FLIGHT;
use super::session::accept;
use crate::admin_api::LogPosition;
use crate::storage::StorageError;
use crate::storage::writer::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an append waits for the appends of its session sent before it (they travel in
/// other requests and may arrive later) before it is refused. A newer session, or the
/// predecessor's arrival, ends the wait at once.
const PREDECESSOR_WAIT: Duration = Duration::from_secs(2);

/// What [`Replica::take_in_order`] took of an append that may go on.
struct InOrder {
    /// The divergent suffix to truncate durably: after this seq, leaving this history.
    truncate: Option<(u64, EpochHistory)>,
    /// The instant the append's content is current from (bounds `x-staleness-ms`).
    current_from: Option<Instant>,
    /// An empty append a later one of its session overtook ([`Replica::overtaken`]).
    overtaken: bool,
}

impl Replica {
    /// Checks a replication message's epoch and session; `Err(status)` rejects it, `Ok(true)`
    /// accepts it as the first of a newer session: the caller then calls [`Replica::bump`]
    /// once it has released the state lock, so appends of the older session waiting for
    /// their predecessors give up (bumping under the lock could deadlock with a watcher
    /// that reads the state).
    fn check_epoch(
        &self,
        st: &mut State,
        epoch: u64,
        leader: &str,
        session: u64,
    ) -> Result<bool, Status> {
        if epoch < st.epoch {
            return Err(Status::StaleEpoch);
        }
        self.raise_epoch(st, epoch);
        if st.primary.is_some() || leader == self.ctx.node_id {
            return Err(Status::Mismatch);
        }
        let Some(newest) = accept(st.session, (epoch, session)) else {
            tracing::info!(
                partition = self.partition,
                epoch,
                session,
                newest = st.session.1,
                "refused a message of an older replication session"
            );
            return Err(Status::StaleSession);
        };
        let newer = newest != st.session;
        if newer {
            st.session = newest;
            st.receipts.clear();
        }
        Ok(newer)
    }

    /// Records the receipt of the next message of the current session, taken in log order,
    /// and returns the instant its content is known to be current from: the receipt of the
    /// message `in_flight` before it (or of the session's first message), since the primary
    /// sends a message only once it holds the answer to that one.
    fn note_receipt(st: &mut State, received: Instant, in_flight: u8) -> Option<Instant> {
        let back = usize::from(in_flight).clamp(1, APPENDS_IN_FLIGHT);
        let from = st
            .receipts
            .get(st.receipts.len().saturating_sub(back))
            .copied();
        st.receipts.push_back(received);
        while st.receipts.len() > APPENDS_IN_FLIGHT {
            st.receipts.pop_front();
        }
        from
    }

    fn reply(st: &State, status: Status) -> Reply {
        Reply {
            status,
            epoch: st.epoch,
            last: st.last,
        }
    }

    /// Follower side of a probe: where this replica's log ends.
    pub async fn handle_probe(&self, msg: Probe) -> ProbeReply {
        let received = Instant::now();
        let _w = self.write_lock.lock().await;
        let (reply, newer) = {
            let mut st = self.lock();
            let (status, newer) =
                match self.check_epoch(&mut st, msg.epoch, &msg.leader, msg.session) {
                    Ok(newer) => {
                        Self::note_receipt(&mut st, received, 1);
                        st.probed = Some(st.session);
                        (Status::Ok, newer)
                    }
                    Err(status) => (status, false),
                };
            let reply = ProbeReply {
                status,
                epoch: st.epoch,
                base: st.base,
                last: st.last,
                applied_seq: st.applied_seq,
                history: st.history.clone(),
            };
            (reply, newer)
        };
        if newer {
            self.bump();
        }
        reply
    }

    /// The part of an append taken under the write lock before anything is written: checks
    /// epoch and session, and truncates a divergent suffix in memory when asked. `Ok(None)`:
    /// an append sent before this one has not arrived yet. `Ok(Some(..))`: what the rest of
    /// the append needs ([`InOrder`]).
    fn take_in_order(
        &self,
        st: &mut State,
        msg: &Append,
        received: Instant,
        newer: &mut bool,
    ) -> Result<Option<InOrder>, Reply> {
        *newer = self
            .check_epoch(st, msg.epoch, &msg.leader, msg.session)
            .map_err(|status| Self::reply(st, status))?;
        if st.installing.is_some() {
            return Err(Self::reply(st, Status::Mismatch));
        }
        let pipelined = Self::pipelined(st, msg);
        if pipelined && msg.truncate_to.is_none() && msg.prev.last_seq > st.last.last_seq {
            return Ok(None);
        }
        if pipelined && Self::overtaken(st, msg) {
            // Only its commit point is taken; it tells nothing newer than what overtook it.
            return Ok(Some(InOrder {
                truncate: None,
                current_from: None,
                overtaken: true,
            }));
        }
        let current_from = Self::note_receipt(st, received, msg.in_flight);
        let truncate = match msg.truncate_to {
            Some(t) if t < st.last.last_seq => {
                if t < st.applied_seq || t < st.base.last_seq {
                    return Err(Self::reply(st, Status::Mismatch));
                }
                st.history.truncate_after(t);
                st.last = if t == st.base.last_seq {
                    st.base
                } else {
                    LogPosition {
                        last_epoch: st.history.epoch_at(t),
                        last_seq: t,
                    }
                };
                st.durable_seq = st.durable_seq.min(t);
                st.log_cuts += 1;
                st.commit_seq = st.commit_seq.min(t).max(st.applied_seq);
                Self::cache_truncate_after(st, t);
                tracing::info!(
                    partition = self.partition,
                    to = t,
                    "truncated divergent log suffix"
                );
                Some((t, st.history.clone()))
            }
            _ => None,
        };
        Ok(Some(InOrder {
            truncate,
            current_from,
            overtaken: false,
        }))
    }

    /// Whether `msg` belongs to a pipelined session (its primary keeps more than one append in
    /// flight) that this process answered the probe of. Only then may an append arrive
    /// ahead of, or after, another one of its session. Any other append that does not
    /// continue the log is refused at once, as it always was: it comes from a session that
    /// believes this log holds what it does not (a process restarted on an empty disk, say),
    /// and only the refusal makes the primary probe again and forget that belief.
    fn pipelined(st: &State, msg: &Append) -> bool {
        msg.in_flight > 1 && st.probed == Some((msg.epoch, msg.session))
    }

    /// Whether `msg` is an append without entries that a later append of its session
    /// overtook on the way: its `prev` lies inside this log, on an entry of the same epoch.
    /// This log then matches the primary's up to `prev` (not necessarily further: the append
    /// that truncates a divergent suffix may still be on its way), so the caller takes its
    /// commit point only up to `prev`.
    fn overtaken(st: &State, msg: &Append) -> bool {
        let prev = msg.prev;
        msg.entries.is_empty()
            && msg.truncate_to.is_none()
            && prev.last_seq < st.last.last_seq
            && (prev == st.base
                || (prev.last_seq > st.base.last_seq
                    && st.history.epoch_at(prev.last_seq) == prev.last_epoch))
    }

    /// Follower side of an append: wait for the appends sent before it, truncate if asked,
    /// check continuity, append durably, learn the commit point.
    pub async fn handle_append(self: &Arc<Self>, msg: Append) -> Result<Reply, StorageError> {
        let received = Instant::now();
        let deadline = tokio::time::Instant::now() + PREDECESSOR_WAIT;
        let (_w, taken) = loop {
            let mut progress = self.progress_tx.subscribe();
            let w = self.write_lock.lock().await;
            let mut newer = false;
            let step = {
                let mut st = self.lock();
                self.take_in_order(&mut st, &msg, received, &mut newer)
            };
            if newer {
                self.bump();
            }
            match step {
                Err(reply) => return Ok(reply),
                Ok(Some(taken)) => break (w, taken),
                Ok(None) => {
                    // The primary keeps several appends in flight and they travel in
                    // separate requests: one sent earlier has not been appended yet.
                    drop(w);
                    if tokio::time::timeout_at(deadline, progress.changed())
                        .await
                        .is_err()
                    {
                        let st = self.lock();
                        return Ok(Self::reply(&st, Status::Mismatch));
                    }
                }
            }
        };
        let InOrder {
            truncate,
            current_from,
            overtaken,
        } = taken;
        if let Some((after_seq, history)) = truncate {
            self.ctx
                .writer
                .run(Command::Truncate {
                    partition: self.partition,
                    after_seq,
                    history,
                })
                .await?;
        }
        let (pending, known) = {
            let mut st = self.lock();
            // How far this log is known to match the primary's once the entries are in.
            let known = if st.last == msg.prev {
                msg.entries.last().map_or(msg.prev.last_seq, |e| e.seq)
            } else if overtaken {
                msg.prev.last_seq
            } else {
                return Ok(Self::reply(&st, Status::Mismatch));
            };
            let contiguous =
                msg.entries.iter().enumerate().all(|(i, e)| {
                    e.seq == msg.prev.last_seq + 1 + i as u64 && e.epoch <= msg.epoch
                });
            if !contiguous {
                return Ok(Self::reply(&st, Status::Mismatch));
            }
            if !msg.entries.is_empty() {
                // Epochs this replica started but never wrote (as a short-lived primary)
                // must not claim the sequence numbers the primary's entries now take.
                let last = st.last.last_seq;
                st.history.truncate_after(last);
            }
            for e in &msg.entries {
                st.history.record(e.epoch, e.seq);
                st.last = LogPosition {
                    last_epoch: e.epoch,
                    last_seq: e.seq,
                };
                Self::cache_push(&mut st, e.clone());
            }
            let pending = if msg.entries.is_empty() {
                None
            } else {
                Some(self.ctx.writer.submit(Command::Append {
                    partition: self.partition,
                    entries: msg.entries.clone(),
                    history: st.history.clone(),
                })?)
            };
            (pending, known)
        };
        if let Some(p) = pending {
            p.wait().await?;
            let m = &self.ctx.metrics.follower_append_seconds;
            m.observe(received.elapsed().as_secs_f64());
        }
        let apply = {
            let mut st = self.lock();
            st.durable_seq = st.last.last_seq;
            let commit = msg.commit_seq.min(known);
            if commit > st.commit_seq {
                st.commit_seq = commit;
            }
            // The commit point in this message was current when the primary sent it, which
            // is after this replica answered the previous message of the session.
            if let Some(from) = current_from {
                if msg.commit_seq <= st.applied_seq {
                    st.last_sync = Some(st.last_sync.map_or(from, |t| t.max(from)));
                } else {
                    if st.sync_marks.len() >= SYNC_MARKS {
                        st.sync_marks.pop_front();
                    }
                    st.sync_marks.push_back((msg.commit_seq, from));
                }
            }
            st.commit_seq > st.applied_seq
        };
        if apply {
            self.schedule_apply();
        }
        // Wake the appends of this session that arrived before this one.
        self.bump();
        let st = self.lock();
        Ok(Self::reply(&st, Status::Ok))
    }

    /// Follower side of a snapshot chunk: the first empties the partition, the last sets the
    /// log to restart after the snapshot's position.
    pub async fn handle_snapshot(
        self: &Arc<Self>,
        msg: SnapshotChunk,
    ) -> Result<Reply, StorageError> {
        let _w = self.write_lock.lock().await;
        let _a = self.apply_lock.lock().await;
        let newer = {
            let mut st = self.lock();
            let newer = match self.check_epoch(&mut st, msg.epoch, &msg.leader, msg.session) {
                Ok(newer) => newer,
                Err(status) => return Ok(Self::reply(&st, status)),
            };
            if !msg.first && st.installing != Some(msg.snapshot_id) {
                return Ok(Self::reply(&st, Status::SnapshotOutOfOrder));
            }
            newer
        };
        if newer {
            self.bump();
        }
        if msg.first {
            self.ctx
                .writer
                .run(Command::SnapshotBegin {
                    partition: self.partition,
                })
                .await?;
            let mut st = self.lock();
            st.installing = Some(msg.snapshot_id);
            st.base = LogPosition::default();
            st.last = LogPosition::default();
            st.history = EpochHistory::default();
            st.durable_seq = 0;
            st.log_cuts += 1;
            st.commit_seq = 0;
            st.applied_seq = 0;
            st.keys = 0;
            st.bytes = 0;
            st.cache.clear();
            st.cache_bytes = 0;
            st.log_bytes.clear();
            st.sync_marks.clear();
            st.last_sync = None;
            tracing::info!(
                partition = self.partition,
                snapshot = msg.snapshot_id,
                "installing a snapshot"
            );
        }
        if !msg.items.is_empty() {
            let size: usize = msg.items.iter().map(|(k, v)| k.len() + v.len()).sum();
            // The values go to the value file from here, not from the one database thread
            // every partition's writes share.
            let store = self.ctx.store.clone();
            let p = self.partition;
            let items = msg.items;
            let (items, at) = tokio::task::spawn_blocking(move || {
                let at = store.write_snapshot_values(p, &items);
                (items, at)
            })
            .await
            .map_err(|_| StorageError::WriterGone)?;
            self.ctx
                .writer
                .run(Command::SnapshotChunk {
                    partition: p,
                    items,
                    at: at?,
                })
                .await?;
            self.ctx
                .metrics
                .catchup_bytes
                .with_label_values(&["received"])
                .inc_by(size as u64);
        }
        if let Some(end) = msg.end {
            self.ctx
                .writer
                .run(Command::SnapshotEnd {
                    partition: self.partition,
                    base: end.base,
                    history: end.history.clone(),
                    keys: end.keys,
                    bytes: end.bytes,
                })
                .await?;
            {
                let mut st = self.lock();
                st.installing = None;
                st.base = end.base;
                st.last = end.base;
                st.history = end.history;
                st.durable_seq = end.base.last_seq;
                st.commit_seq = end.base.last_seq;
                st.applied_seq = end.base.last_seq;
                st.keys = end.keys;
                st.bytes = end.bytes;
            }
            self.phases.skip_through(end.base.last_seq);
            self.applied_tx.send_replace(end.base.last_seq);
            tracing::info!(
                partition = self.partition,
                seq = end.base.last_seq,
                "snapshot installed"
            );
        }
        let st = self.lock();
        Ok(Self::reply(&st, Status::Ok))
    }
}
