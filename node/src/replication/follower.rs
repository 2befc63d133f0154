//! The follower side of replication: answering probes, appending (after truncating a
//! divergent suffix), and installing snapshots. Every handler first applies epoch fencing.

use super::epochs::EpochHistory;
use super::frame::{Append, Probe, ProbeReply, Reply, SnapshotChunk, Status};
use super::replica::{Replica, SYNC_MARKS, State};
use super::session::accept;
use crate::admin_api::LogPosition;
use crate::storage::StorageError;
use crate::storage::writer::Command;
use std::sync::Arc;
use std::time::Instant;

impl Replica {
    /// Checks a replication message's epoch and session; `Some(reply)` rejects it. An
    /// accepted message returns the receipt time of the previous accepted message of its
    /// session in `prev` (the instant its content is known to be current from).
    fn check_epoch(
        &self,
        st: &mut State,
        epoch: u64,
        leader: &str,
        session: u64,
        received: Instant,
    ) -> Result<Option<Instant>, Status> {
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
        let prev = if newest == st.session {
            st.prev_receipt
        } else {
            None
        };
        st.session = newest;
        st.prev_receipt = Some(received);
        Ok(prev)
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
        let mut st = self.lock();
        let status = self
            .check_epoch(&mut st, msg.epoch, &msg.leader, msg.session, received)
            .err()
            .unwrap_or(Status::Ok);
        ProbeReply {
            status,
            epoch: st.epoch,
            base: st.base,
            last: st.last,
            applied_seq: st.applied_seq,
            history: st.history.clone(),
        }
    }

    /// Follower side of an append: truncate if asked, check continuity, append durably,
    /// learn the commit point.
    pub async fn handle_append(self: &Arc<Self>, msg: Append) -> Result<Reply, StorageError> {
        let received = Instant::now();
        let _w = self.write_lock.lock().await;
        let (truncate, current_from) = {
            let mut st = self.lock();
            let current_from =
                match self.check_epoch(&mut st, msg.epoch, &msg.leader, msg.session, received) {
                    Ok(prev) => prev,
                    Err(status) => return Ok(Self::reply(&st, status)),
                };
            if st.installing.is_some() {
                return Ok(Self::reply(&st, Status::Mismatch));
            }
            let truncate = match msg.truncate_to {
                Some(t) if t < st.last.last_seq => {
                    if t < st.applied_seq || t < st.base.last_seq {
                        return Ok(Self::reply(&st, Status::Mismatch));
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
                    Self::cache_truncate_after(&mut st, t);
                    tracing::info!(
                        partition = self.partition,
                        to = t,
                        "truncated divergent log suffix"
                    );
                    Some((t, st.history.clone()))
                }
                _ => None,
            };
            (truncate, current_from)
        };
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
        let pending = {
            let mut st = self.lock();
            if st.last != msg.prev {
                return Ok(Self::reply(&st, Status::Mismatch));
            }
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
            if msg.entries.is_empty() {
                None
            } else {
                Some(self.ctx.writer.submit(Command::Append {
                    partition: self.partition,
                    entries: msg.entries.clone(),
                    history: st.history.clone(),
                })?)
            }
        };
        if let Some(p) = pending {
            p.wait().await?;
            let m = &self.ctx.metrics.follower_append_seconds;
            m.observe(received.elapsed().as_secs_f64());
        }
        let apply = {
            let mut st = self.lock();
            st.durable_seq = st.last.last_seq;
            let commit = msg.commit_seq.min(st.last.last_seq);
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
        let st = self.lock();
        Ok(Self::reply(&st, Status::Ok))
    }

    /// Follower side of a snapshot chunk: the first empties the partition, the last sets the
    /// log to restart after the snapshot's position.
    pub async fn handle_snapshot(
        self: &Arc<Self>,
        msg: SnapshotChunk,
    ) -> Result<Reply, StorageError> {
        let received = Instant::now();
        let _w = self.write_lock.lock().await;
        let _a = self.apply_lock.lock().await;
        {
            let mut st = self.lock();
            if let Err(status) =
                self.check_epoch(&mut st, msg.epoch, &msg.leader, msg.session, received)
            {
                return Ok(Self::reply(&st, status));
            }
            if !msg.first && st.installing != Some(msg.snapshot_id) {
                return Ok(Self::reply(&st, Status::SnapshotOutOfOrder));
            }
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
            self.ctx
                .writer
                .run(Command::SnapshotChunk {
                    partition: self.partition,
                    items: msg.items,
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
