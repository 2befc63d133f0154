//! Unit tests of the safety rules on a replica with a real (temporary) database: sessions,
//! admission across map installs, the restart epoch floor, unproven copies, pending clocks.

use super::frame::{SnapshotChunk, Status};
use super::primary::{Condition, ServeError};
use super::replica::Replica;
use super::tests::{
    admit_c, append, entry_with_learner, fixture, plain, pos, primary_entry, primary_with_learner,
    put, requires, until, wait_applied,
};
use crate::admin_api::AdmitRequest;
use crate::map::PartitionEntry;
use crate::storage::PartitionDisk;
use crate::storage::writer::WriterObserver;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Issue item 7 (sessions): after a newer session has been accepted, a delayed truncate or
/// first snapshot chunk of an older session is refused and the log stays as it is.
#[tokio::test]
async fn a_delayed_truncate_or_snapshot_of_an_older_session_is_refused() {
    let f = plain("f");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let mut first = append(
        1,
        pos(0, 0),
        None,
        0,
        (1..=3).map(|s| put(1, s, "k", "v")).collect(),
    );
    first.session = 5;
    let reply = r
        .handle_append(first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 3)));

    let mut delayed = append(1, pos(1, 1), Some(1), 0, vec![]);
    delayed.session = 4;
    let reply = r
        .handle_append(delayed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (reply.status, reply.last),
        (Status::StaleSession, pos(1, 3))
    );

    let wipe = SnapshotChunk {
        epoch: 1,
        leader: "primary".into(),
        snapshot_id: 1,
        first: true,
        items: vec![],
        end: None,
        session: 4,
    };
    let reply = r
        .handle_snapshot(wipe)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (reply.status, reply.last),
        (Status::StaleSession, pos(1, 3))
    );
    f.ctx
        .writer
        .settle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = f
        .ctx
        .store
        .read_log(0, 1, 10, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.len(), 3);

    // The current session (and a newer one) still work.
    let mut next = append(1, pos(1, 3), None, 0, vec![put(1, 4, "k", "w")]);
    next.session = 6;
    let reply = r
        .handle_append(next)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 4)));
}

/// Issue item 6 (stale admission): a lagging replica admitted by the primary stays admitted
/// (required for every commit) across a map install that changes nothing about it.
#[tokio::test]
async fn an_admitted_replica_stays_admitted_across_an_unrelated_map_install() {
    let f = plain("a");
    let r = primary_with_learner(&f).await;
    // The call waits for c (which never acknowledges); its admission holds meanwhile.
    let call = admit_c(&r);
    until("c admitted", || requires(&r, "c")).await;
    // Another map version (only other partitions changed) re-applies the same entry.
    r.apply_map(entry_with_learner(), 1).await;
    let admitted = requires(&r, "c");
    assert!(
        admitted,
        "the admission was forgotten by an unrelated map install"
    );
    // So nothing commits without c's acknowledgement.
    let w = tokio::time::timeout(
        Duration::from_millis(500),
        r.write(
            b"k".to_vec(),
            Some(b"v".to_vec()),
            super::primary::Condition::Always,
        ),
    )
    .await;
    assert!(
        w.is_err(),
        "a write committed without the admitted replica: {w:?}"
    );
    call.abort();
}

/// Issue item 4 (gray failures; admit calls abortable): an admission whose call ends without
/// the learner becoming ready lapses, and writes commit again without it.
#[tokio::test]
async fn an_admission_that_never_becomes_ready_lapses_with_its_call() {
    let f = plain("a");
    let r = primary_with_learner(&f).await;
    let req = AdmitRequest {
        epoch: 2,
        learner: "c".into(),
        timeout_ms: 300,
        wait_for_copy_within: None,
    };
    let answer = r.admit(&req).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!answer.ready, "c never acknowledged anything");
    let w = tokio::time::timeout(
        Duration::from_secs(5),
        r.write(
            b"k".to_vec(),
            Some(b"v".to_vec()),
            super::primary::Condition::Always,
        ),
    )
    .await;
    assert!(
        matches!(w, Ok(Ok(_))),
        "the lapsed admission still stalls writes: {w:?}"
    );
}

/// Issue item 1 (same-epoch restart): a replica whose lead floor is the map's epoch (it
/// restarted after possibly leading it) does not take the primary role until a higher epoch.
#[tokio::test]
async fn a_replica_does_not_lead_at_or_below_its_lead_floor() {
    let f = plain("a");
    let r = Arc::new(Replica::new(f.ctx.clone(), 0, PartitionDisk::default()));
    r.lock().lead_floor = 2;
    r.apply_map(primary_entry(&["a"]), 1).await;
    assert!(
        r.lock().primary.is_none(),
        "led epoch 2 again after a restart"
    );
    let next = PartitionEntry {
        epoch: 3,
        ..primary_entry(&["a"])
    };
    r.apply_map(next, 1).await;
    assert!(
        r.lock().primary.is_some(),
        "a higher epoch makes it primary"
    );
}

/// Issue item 6 (empty disk): an unproven copy does not lead; a map that drops it from
/// `inSync` clears the mark durably.
#[tokio::test]
async fn an_unproven_copy_does_not_lead_until_dropped_from_in_sync() {
    let f = plain("a");
    let r = Arc::new(Replica::new(f.ctx.clone(), 0, PartitionDisk::default()));
    r.lock().unproven = true;
    f.ctx
        .writer
        .run(crate::storage::writer::Command::SetUnproven {
            partition: 0,
            unproven: true,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        f.ctx
            .store
            .load_partition(0)
            .map(|d| d.unproven)
            .unwrap_or(false)
    );
    r.apply_map(primary_entry(&["a", "b"]), 1).await;
    assert!(
        r.lock().primary.is_none(),
        "an unproven copy took the primary role"
    );
    let demoted = PartitionEntry {
        epoch: 3,
        primary: Some("b".into()),
        replicas: vec!["b".into()],
        in_sync: vec!["b".into()],
        learners: vec!["a".into()],
    };
    r.apply_map(demoted, 1).await;
    assert!(!r.lock().unproven);
    let stored = f
        .ctx
        .store
        .load_partition(0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!stored.unproven);
}

/// Issue item 4 (gray failures): the pending clock runs from the last acknowledged
/// progress, not from contacts, and stops when the member holds everything.
#[test]
fn the_pending_clock_runs_from_the_last_acknowledged_progress() {
    use super::primary::Progress;
    let t0 = std::time::Instant::now();
    let mut p = Progress::new(tokio_util::sync::CancellationToken::new(), t0);
    p.ack(5, t0);
    assert_eq!(p.pending_since(5, t0), None);
    let t1 = t0 + Duration::from_secs(3);
    assert_eq!(p.pending_since(7, t1), Some(Duration::from_secs(3)));
    // A contact without progress does not reset the clock.
    p.ack(5, t1);
    assert_eq!(
        p.pending_since(7, t1 + Duration::from_secs(1)),
        Some(Duration::from_secs(4))
    );
    p.ack(6, t1 + Duration::from_secs(1));
    assert_eq!(
        p.pending_since(7, t1 + Duration::from_secs(2)),
        Some(Duration::from_secs(1))
    );
    p.ack(7, t1 + Duration::from_secs(2));
    assert_eq!(p.pending_since(7, t1 + Duration::from_secs(9)), None);
    // A new session re-probes: nothing is proven meanwhile, and re-acknowledging the same
    // position is no progress.
    p.unprove();
    assert_eq!(p.acked, None);
    p.ack(7, t1 + Duration::from_secs(10));
    assert_eq!(
        p.pending_since(8, t1 + Duration::from_secs(11)),
        Some(Duration::from_secs(9))
    );
}

/// Finding L2: a follower that learned the commit point one append late and is then the
/// sole in-sync member of a new epoch (below `minInSync`) commits the entries of earlier
/// epochs it holds, so it serves reads of them; writes of the new epoch stay refused.
#[tokio::test]
async fn a_sole_in_sync_primary_below_min_in_sync_serves_reads_of_what_it_holds() {
    let f = plain("b");
    f.ctx.lease.grant_for_tests(Duration::from_secs(60));
    let r = Arc::new(Replica::new(f.ctx.clone(), 0, PartitionDisk::default()));
    let entries = (1..=3).map(|s| put(1, s, "k", &format!("v{s}"))).collect();
    let reply = r
        .handle_append(append(1, pos(0, 0), None, 1, entries))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 3)));
    assert_eq!(r.lock().commit_seq, 1);

    let alone = PartitionEntry {
        epoch: 2,
        primary: Some("b".into()),
        replicas: vec!["a".into(), "b".into(), "c".into()],
        in_sync: vec!["b".into()],
        learners: vec![],
    };
    r.apply_map(alone, 2).await;
    assert!(
        r.lock().primary.is_some(),
        "b did not take the primary role"
    );
    // The barrier (seq 3) commits and is applied: the read is served, not `primary_not_ready`.
    wait_applied(&r, 3).await;
    let (read, _) = r.read(b"k").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.map(|v| v.value), Some(b"v3".to_vec()));
    assert_eq!(r.lock().commit_seq, 3);
    let write = r
        .write(b"k".to_vec(), Some(b"new".to_vec()), Condition::Always)
        .await;
    assert!(
        matches!(write, Err(ServeError::Unavailable("below_min_in_sync"))),
        "a write of the new epoch was not refused below minInSync: {write:?}"
    );
}

/// A writer observer that, while closed, holds every committed batch before its callers are
/// told (the data is on disk, nobody knows yet) until the test hands out a permit.
struct Gate {
    closed: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    permits: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl WriterObserver for Gate {
    fn batch(&self, _commands: usize, _durable: bool, _seconds: f64) {
        if self.closed.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            if let Ok(p) = self.permits.lock() {
                let _ = p.recv();
            }
        }
    }
}

/// A deposed primary's write whose append the storage finishes after a new primary cut the
/// log below it must not raise the durable point: the same sequence numbers then name the new
/// epoch's entries, whose append is still running, and a durable position reported from them
/// (to a primary counting acknowledgements, or to the operator ranking failover candidates)
/// would claim entries this disk does not hold yet.
#[tokio::test]
async fn a_write_finishing_after_its_log_was_cut_does_not_raise_the_durable_point() {
    let closed = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let (permit, permits) = std::sync::mpsc::channel();
    let f = fixture(
        "a",
        Gate {
            closed: closed.clone(),
            held: held.clone(),
            permits: std::sync::Mutex::new(permits),
        },
    );
    f.ctx.lease.grant_for_tests(Duration::from_secs(60));
    let r = Arc::new(Replica::new(f.ctx.clone(), 0, PartitionDisk::default()));
    r.apply_map(primary_entry(&["a"]), 1).await;
    let first = r
        .write(b"k".to_vec(), Some(b"first".to_vec()), Condition::Always)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.version, 1);
    wait_applied(&r, 1).await;

    // The primary's write of seq 2 reaches the disk; its caller is not told yet.
    closed.store(true, Ordering::SeqCst);
    let writer = r.clone();
    let write = tokio::spawn(async move {
        writer
            .write(b"k".to_vec(), Some(b"old".to_vec()), Condition::Always)
            .await
    });
    until("the write's batch is held", || {
        held.load(Ordering::SeqCst) == 1
    })
    .await;

    // A primary of epoch 3 cuts the log back to seq 1 and sends its own seq 2 and 3.
    let follower = r.clone();
    let append_task = tokio::spawn(async move {
        follower
            .handle_append(append(
                3,
                pos(2, 1),
                Some(1),
                0,
                vec![put(3, 2, "k", "new"), put(3, 3, "k", "newer")],
            ))
            .await
    });
    until("the log is cut to seq 1", || {
        let st = r.lock();
        st.epoch == 3 && st.last == pos(2, 1)
    })
    .await;

    // The old write learns its append is durable (and that its term ended); the truncate is
    // held next.
    permit.send(()).unwrap_or_else(|e| panic!("{e}"));
    let old = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(old.is_err(), "a deposed primary acknowledged: {old:?}");

    // The truncate finishes; the new epoch's entries are in memory, their append held.
    permit.send(()).unwrap_or_else(|e| panic!("{e}"));
    until("the new entries are appended in memory", || {
        r.lock().last == pos(3, 3)
    })
    .await;
    // (The entries reach memory before their batch reaches the writer: wait for the batch.)
    until("the new entries' append is held", || {
        held.load(Ordering::SeqCst) == 3
    })
    .await;
    let durable = r.lock().durable_seq;
    assert!(
        durable <= 1,
        "durable point {durable} covers epoch 3's entries before their append finished"
    );

    closed.store(false, Ordering::SeqCst);
    permit.send(()).unwrap_or_else(|e| panic!("{e}"));
    let reply = tokio::time::timeout(Duration::from_secs(10), append_task)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(3, 3)));
    assert_eq!(r.lock().durable_seq, 3);
}
