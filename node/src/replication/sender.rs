//! The primary's replication task to one member: probe its log, truncate it to the
//! divergence point or send a snapshot, then stream appends (which also carry the commit
//! point) and record its acknowledgements.

use super::commit::{CatchUp, ReplicaLog, plan_catch_up};
use super::frame::{Append, Probe, ProbeReply, Reply, SnapshotChunk, SnapshotEnd, Status};
use super::peer_client::PeerError;
use super::replica::Replica;
use super::session::APPENDS_IN_FLIGHT;
use crate::admin_api::LogPosition;
use crate::map::NodeId;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Bytes of data per snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// A member holding nothing yet (a new replica) is filled by a snapshot rather than by the log
/// tail once the partition's data is at least this large: the snapshot writes each key once
/// on the member (its data table), the log tail twice (its log, then its data), and sends a
/// key once however often it was overwritten.
const SNAPSHOT_FOR_EMPTY_MEMBER_BYTES: u64 = 1024 * 1024;

/// Why one replication session ended (the task then probes again after a pause).
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("member unreachable")]
    Peer(#[from] PeerError),
    #[error("storage")]
    Storage(#[from] crate::storage::StorageError),
    #[error("member answered {0:?}")]
    Refused(Status),
    #[error("member is at the newer epoch {0}")]
    Fenced(u64),
    #[error("member address unknown")]
    NoAddress,
    #[error("log no longer retained")]
    NeedSnapshot,
}

/// Pause before probing again a member that answered `NotMember` (it has not installed the
/// map that adds it yet), for the first [`NOT_MEMBER_BRISK_FOR`] of such answers.
const NOT_MEMBER_RETRY: Duration = Duration::from_millis(25);
const NOT_MEMBER_BRISK_FOR: Duration = Duration::from_secs(5);

/// The pause before the next session, after one that ended in error having lasted `session`
/// (`backoff` was the pause before it; `not_member_for`: how long the member has answered
/// `NotMember`, if that is how it ended).
fn pause_after(backoff: Duration, session: Duration, not_member_for: Option<Duration>) -> Duration {
    if session > Duration::from_secs(1) {
        // A long session: a routine re-probe.
        Duration::from_millis(10)
    } else if not_member_for.is_some_and(|t| t < NOT_MEMBER_BRISK_FOR) {
        NOT_MEMBER_RETRY
    } else {
        // Sessions keep failing at once (member down, refusing, or not a member for long).
        (backoff * 2).min(Duration::from_secs(1))
    }
}

/// Runs until `task` is cancelled (membership change or loss of the primary role).
pub async fn replicate(replica: Arc<Replica>, member: NodeId, task: CancellationToken) {
    let mut backoff = Duration::from_millis(10);
    let mut not_member_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = session(&replica, &member) => r,
            _ = task.cancelled() => return,
        };
        let err = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        unprove(&replica, &member);
        if let SessionEnd::Fenced(epoch) = &err {
            let mut st = replica.lock();
            replica.raise_epoch(&mut st, *epoch);
            return;
        }
        tracing::debug!(partition = replica.partition, member = %member, error = %err, "replication session ended");
        // A member new to the partition answers `NotMember` until it has installed the map
        // that adds it, which comes to it a little after this primary: keep probing it
        // briskly for a while, or its copy would start up to a whole backoff late.
        let not_member = matches!(err, SessionEnd::Refused(Status::NotMember));
        not_member_since = match (not_member, not_member_since) {
            (false, _) => None,
            (true, None) => Some(started),
            (true, since) => since,
        };
        backoff = pause_after(
            backoff,
            started.elapsed(),
            not_member_since.map(|t| t.elapsed()),
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = task.cancelled() => return,
        }
    }
}

pub(super) fn record_ack(replica: &Arc<Replica>, member: &str, acked: u64) {
    let outside_in_sync = {
        let mut st = replica.lock();
        let last = st.last.last_seq;
        let in_sync = st.entry.is_in_sync(member);
        let advanced = st
            .primary
            .as_mut()
            .and_then(|p| p.followers.get_mut(member))
            .is_some_and(|f| f.ack(acked, Instant::now()));
        let lag = last.saturating_sub(acked) as i64;
        if lag > replica.ctx.metrics.replication_lag_entries.get() {
            replica.ctx.metrics.replication_lag_entries.set(lag);
        }
        advanced && !in_sync
    };
    replica.advance_commit();
    if outside_in_sync {
        // A learner (or lagging replica) moved on without moving the commit point (it is
        // not needed for commits, or the point was already there, e.g. with no writes):
        // wake the admissions waiting for it, which otherwise would sleep until their
        // deadline — a whole hand-off timeout per move on an idle partition.
        replica.bump();
    }
}

/// Forgets what `member` was proven to hold (a session starts or ended): until the next probe
/// is answered it is neither counted for the commit point nor answered ready to an admission.
fn unprove(replica: &Replica, member: &str) {
    let mut st = replica.lock();
    if let Some(f) = st
        .primary
        .as_mut()
        .and_then(|p| p.followers.get_mut(member))
    {
        f.unprove();
    }
}

fn epoch_and_id(replica: &Replica) -> Option<u64> {
    replica.lock().primary.as_ref().map(|p| p.epoch)
}

async fn session(replica: &Arc<Replica>, member: &str) -> Result<(), SessionEnd> {
    let ctx = &replica.ctx;
    let p = replica.partition;
    let addr = ctx.peer_addr(member).ok_or(SessionEnd::NoAddress)?;
    let Some(epoch) = epoch_and_id(replica) else {
        return Ok(());
    };
    let session = ctx.sessions.next();
    unprove(replica, member);
    let probe = Probe {
        epoch,
        leader: ctx.node_id.clone(),
        session,
    };
    let theirs: ProbeReply = ctx
        .peers
        .call(&addr, p, "probe", probe.encode(), ProbeReply::decode)
        .await?;
    match theirs.status {
        Status::Ok => {}
        Status::StaleEpoch if theirs.epoch > epoch => return Err(SessionEnd::Fenced(theirs.epoch)),
        s => return Err(SessionEnd::Refused(s)),
    }
    let plan = {
        let st = replica.lock();
        let mine = ReplicaLog {
            base: st.base,
            last: st.last,
            applied_seq: st.applied_seq,
            history: &st.history,
        };
        let other = ReplicaLog {
            base: theirs.base,
            last: theirs.last,
            applied_seq: theirs.applied_seq,
            history: &theirs.history,
        };
        match plan_catch_up(&mine, &other) {
            CatchUp::Tail { .. } if fill_by_snapshot(&theirs, st.applied_seq, st.bytes) => {
                CatchUp::Snapshot
            }
            plan => plan,
        }
    };
    let (mut prev, mut truncate) = match plan {
        CatchUp::Tail { prev, truncate } => (prev, truncate),
        CatchUp::Snapshot => (
            send_snapshot(replica, member, &addr, epoch, session).await?,
            false,
        ),
    };
    if !truncate {
        record_ack(replica, member, prev.last_seq);
    }
    let mut progress = replica.progress_tx.subscribe();
    let mut sent_commit = u64::MAX;
    // Appends sent and not yet answered, oldest first, with where each leaves the member's
    // log. Up to the configured window (never above APPENDS_IN_FLIGHT): the member takes
    // them in log order whatever order they arrive in (`Replica::handle_append`).
    let window = ctx.config.appends_in_flight.clamp(1, APPENDS_IN_FLIGHT);
    let mut in_flight = FuturesOrdered::new();
    loop {
        while in_flight.len() < window {
            let (commit_seq, last_seq) = {
                let st = replica.lock();
                if st.primary.as_ref().is_none_or(|x| x.epoch != epoch) {
                    return Ok(());
                }
                (st.commit_seq, st.last.last_seq)
            };
            if last_seq <= prev.last_seq && commit_seq == sent_commit && !truncate {
                break; // nothing new to send
            }
            let entries = replica
                .entries_after(prev.last_seq, u64::MAX, ctx.config.max_append_bytes)
                .await?
                .ok_or(SessionEnd::NeedSnapshot)?;
            let msg = Append {
                epoch,
                leader: ctx.node_id.clone(),
                truncate_to: truncate.then_some(prev.last_seq),
                prev,
                commit_seq,
                entries,
                session,
                in_flight: window as u8,
            };
            let sent_last = msg.entries.last().map_or(prev, |e| LogPosition {
                last_epoch: e.epoch,
                last_seq: e.seq,
            });
            let timed = !msg.entries.is_empty();
            // Batched with the appends of other partitions bound for the same node.
            let reply = ctx.peers.append(&addr, p, msg.encode());
            let sent = Instant::now();
            in_flight.push_back(async move { (reply.await, sent_last, sent, timed) });
            truncate = false;
            sent_commit = commit_seq;
            prev = sent_last;
        }
        if in_flight.is_empty() {
            // Nothing new: wait for an append or a commit, or send an idle append.
            let _ = tokio::time::timeout(ctx.config.idle_append, progress.changed()).await;
            let st = replica.lock();
            if st.last.last_seq <= prev.last_seq && st.commit_seq == sent_commit {
                sent_commit = u64::MAX; // force an idle append carrying the commit point
            }
            continue;
        }
        let window_full = in_flight.len() >= window;
        tokio::select! {
            answered = in_flight.next() => {
                let Some((reply, sent_last, sent, timed)) = answered else {
                    continue;
                };
                let reply: Reply = reply?;
                if timed {
                    let m = &ctx.metrics.append_round_trip_seconds;
                    m.observe(sent.elapsed().as_secs_f64());
                }
                accepted(&reply, epoch)?;
                record_ack(replica, member, reply.last.last_seq.min(sent_last.last_seq));
            }
            // New entries or a new commit point: send them while earlier appends travel.
            _ = progress.changed(), if !window_full => {}
        }
    }
}

/// Whether a member that holds nothing yet — an empty log that never applied or compacted
/// anything — is better filled by a snapshot of the `bytes` applied up to `applied_seq` than
/// by streaming the log: a new replica of a partition with at least
/// [`SNAPSHOT_FOR_EMPTY_MEMBER_BYTES`] of data.
fn fill_by_snapshot(theirs: &ProbeReply, applied_seq: u64, bytes: u64) -> bool {
    theirs.last.last_seq == 0
        && theirs.base.last_seq == 0
        && theirs.applied_seq == 0
        && applied_seq > 0
        && bytes >= SNAPSHOT_FOR_EMPTY_MEMBER_BYTES
}

/// Whether a member accepted a message sent at `epoch`: a newer epoch fences this primary,
/// any other refusal ends the session.
fn accepted(reply: &Reply, epoch: u64) -> Result<(), SessionEnd> {
    match reply.status {
        Status::Ok => Ok(()),
        Status::StaleEpoch if reply.epoch > epoch => Err(SessionEnd::Fenced(reply.epoch)),
        s => Err(SessionEnd::Refused(s)),
    }
}

/// Streams a consistent snapshot (one read transaction at applied seq S), throttled to the
/// catch-up bandwidth; returns the position the member's log restarts after.
async fn send_snapshot(
    replica: &Arc<Replica>,
    member: &str,
    addr: &str,
    epoch: u64,
    session: u64,
) -> Result<LogPosition, SessionEnd> {
    let ctx = &replica.ctx;
    let p = replica.partition;
    let _copying = Copying::start(replica, member);
    let store = ctx.store.clone();
    let reader = Arc::new(
        tokio::task::spawn_blocking(move || store.snapshot(p))
            .await
            .map_err(|_| crate::storage::StorageError::WriterGone)??,
    );
    let seq = reader.applied_seq;
    let (base, history) = {
        let st = replica.lock();
        let base = LogPosition {
            last_epoch: st.history.epoch_at(seq),
            last_seq: seq,
        };
        (base, st.history.up_to(seq))
    };
    let snapshot_id: u64 = rand::random();
    tracing::info!(
        partition = p,
        to = addr,
        seq,
        keys = reader.keys,
        bytes = reader.bytes,
        "sending a snapshot"
    );
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut first = true;
    let read = |after: Option<Vec<u8>>| {
        let r = reader.clone();
        tokio::task::spawn_blocking(move || r.chunk(after.as_deref(), SNAPSHOT_CHUNK_BYTES))
    };
    let mut next = read(None);
    loop {
        let items = (&mut next)
            .await
            .map_err(|_| crate::storage::StorageError::WriterGone)??;
        let done = items.is_empty();
        if !done {
            // Read the next chunk while this one is on the wire and being stored: the disk
            // read and the member's write overlap instead of taking turns. (A read left
            // behind by an error below only reads.)
            next = read(items.last().map(|(k, _)| k.clone()));
        }
        let size: u64 = items.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        let chunk = SnapshotChunk {
            epoch,
            leader: ctx.node_id.clone(),
            snapshot_id,
            first,
            items,
            end: done.then(|| SnapshotEnd {
                base,
                history: history.clone(),
                keys: reader.keys,
                bytes: reader.bytes,
            }),
            session,
        };
        first = false;
        let reply: Reply = ctx
            .peers
            .call(addr, p, "snapshot", chunk.encode(), Reply::decode)
            .await?;
        accepted(&reply, epoch)?;
        // A chunk taken in is progress: the member's pending clock must not count the
        // snapshot's duration, or a report made meanwhile has the member dropped from
        // `inSync` by the operator as soon as it is admitted.
        if let Some(f) = replica
            .lock()
            .primary
            .as_mut()
            .and_then(|p| p.followers.get_mut(member))
        {
            f.progress_at = Instant::now();
        }
        sent += size;
        ctx.metrics
            .catchup_bytes
            .with_label_values(&["sent"])
            .inc_by(size);
        if done {
            tracing::info!(partition = p, to = addr, seq, bytes = sent, "snapshot sent");
            return Ok(base);
        }
        if let Some(wait) = throttle_delay(sent, ctx.catchup_rate(), started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Marks a member as being sent a snapshot for as long as it lives (reports show it, and an
/// admission asked to wait for the copy waits on it, [`Replica::admit`]).
struct Copying<'a> {
    replica: &'a Arc<Replica>,
    member: &'a str,
}

impl<'a> Copying<'a> {
    fn start(replica: &'a Arc<Replica>, member: &'a str) -> Self {
        set_copying(replica, member, true);
        Self { replica, member }
    }
}

impl Drop for Copying<'_> {
    fn drop(&mut self) {
        set_copying(self.replica, self.member, false);
    }
}

/// Marks whether `member` is being sent a snapshot on the primary `replica`, and wakes what
/// waits on its progress.
pub(super) fn set_copying(replica: &Replica, member: &str, copying: bool) {
    if let Some(f) = replica
        .lock()
        .primary
        .as_mut()
        .and_then(|p| p.followers.get_mut(member))
    {
        f.copying = copying;
    }
    replica.bump();
}

/// How long to pause after sending `sent` bytes in `elapsed` so the stream stays at or below
/// `bytes_per_second` (0 = unlimited).
pub fn throttle_delay(sent: u64, bytes_per_second: u64, elapsed: Duration) -> Option<Duration> {
    if bytes_per_second == 0 {
        return None;
    }
    let due = Duration::from_secs_f64(sent as f64 / bytes_per_second as f64);
    due.checked_sub(elapsed).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_keeps_the_stream_at_the_rate() {
        let mb = 1024 * 1024;
        assert_eq!(throttle_delay(10 * mb, 0, Duration::ZERO), None);
        assert_eq!(
            throttle_delay(10 * mb, 5 * mb, Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(throttle_delay(mb, 5 * mb, Duration::from_secs(1)), None);
    }

    /// A member not yet holding the map that adds it is probed again every 25 ms for its
    /// first 5 s of `NotMember` answers, whatever the backoff had grown to; other failures
    /// double the pause up to 1 s, and a long session resets it.
    #[test]
    fn a_member_not_yet_holding_its_map_is_probed_briskly_then_backed_off() {
        let ms = Duration::from_millis;
        assert_eq!(pause_after(ms(640), ms(3), Some(ms(800))), NOT_MEMBER_RETRY);
        assert_eq!(pause_after(ms(25), ms(3), Some(ms(4900))), NOT_MEMBER_RETRY);
        assert_eq!(pause_after(ms(25), ms(3), Some(ms(5100))), ms(50));
        assert_eq!(pause_after(ms(640), ms(3), None), ms(1000));
        assert_eq!(pause_after(ms(20), ms(3), None), ms(40));
        assert_eq!(pause_after(ms(1000), ms(1500), Some(ms(10))), ms(10));
    }
}
