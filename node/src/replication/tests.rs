//! Unit tests of a replica against a real (temporary) database: log append and truncation,
//! epoch fencing, group-commit wake-ups, snapshot + tail install.

use super::frame::{Append, Probe, SnapshotChunk, SnapshotEnd, Status};
use super::primary::{Condition, ServeError};
use super::replica::Replica;
use crate::admin_api::{AdmitRequest, AdmitResponse, LogPosition};
use crate::context::{Ctx, ReplicationConfig};
use crate::map::PartitionEntry;
use crate::metrics::{NodeMetrics, WriterMetrics};
use crate::replication::epochs::EpochHistory;
use crate::replication::peer_client::PeerClient;
use crate::storage::codec::{LogEntry, Op};
use crate::storage::writer::{Command, WriterHandle, WriterObserver};
use crate::storage::{PartitionDisk, Store};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) ctx: Arc<Ctx>,
}

pub(super) fn fixture(node: &str, observer: impl WriterObserver) -> Fixture {
    fixture_with(node, observer, ReplicationConfig::default())
}

pub(super) fn fixture_with(
    node: &str,
    observer: impl WriterObserver,
    config: ReplicationConfig,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path(), node).unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(NodeMetrics::new().unwrap_or_else(|e| panic!("{e}")));
    let writer = WriterHandle::start(store.clone(), observer, |e| panic!("{e}"));
    let peers =
        PeerClient::new("t".into(), Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
    let ctx = Ctx::new(
        node.into(),
        "s".into(),
        store,
        writer,
        peers,
        metrics,
        config,
        None,
    );
    Fixture {
        _dir: dir,
        ctx: Arc::new(ctx),
    }
}

pub(super) fn plain(node: &str) -> Fixture {
    configured(node, ReplicationConfig::default())
}

pub(super) fn configured(node: &str, config: ReplicationConfig) -> Fixture {
    let m = NodeMetrics::new().unwrap_or_else(|e| panic!("{e}"));
    fixture_with(
        node,
        WriterMetrics {
            batch: m.commit_batch_commands.clone(),
            fsync: m.fsync_seconds.clone(),
            checkpoint: m.checkpoint_seconds.clone(),
        },
        config,
    )
}

pub(super) fn put(epoch: u64, seq: u64, key: &str, value: &str) -> Arc<LogEntry> {
    Arc::new(LogEntry {
        epoch,
        seq,
        op: Op::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        },
    })
}

pub(super) fn pos(e: u64, s: u64) -> LogPosition {
    LogPosition {
        last_epoch: e,
        last_seq: s,
    }
}

pub(super) fn append(
    epoch: u64,
    prev: LogPosition,
    truncate_to: Option<u64>,
    commit: u64,
    entries: Vec<Arc<LogEntry>>,
) -> Append {
    Append {
        epoch,
        leader: "primary".into(),
        truncate_to,
        prev,
        commit_seq: commit,
        entries,
        session: 0,
        in_flight: 1,
    }
}

pub(super) async fn wait_applied(r: &Replica, seq: u64) {
    let mut rx = r.applied_tx.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| *a >= seq)).await;
    assert!(waited.is_ok(), "applied point never reached {seq}");
}

#[tokio::test]
async fn log_append_and_truncation_survive_a_reload() {
    let f = plain("f");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let entries = (1..=5).map(|s| put(1, s, &format!("k{s}"), "v1")).collect();
    let reply = r
        .handle_append(append(1, pos(0, 0), None, 0, entries))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 5)));

    // A new primary at epoch 2 kept only 1..=3: truncate and append its entries.
    let tail = vec![put(2, 4, "k4", "v2"), put(2, 5, "k5", "v2")];
    let reply = r
        .handle_append(append(2, pos(1, 3), Some(3), 4, tail))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(2, 5)));
    wait_applied(&r, 4).await;

    f.ctx
        .writer
        .settle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = f
        .ctx
        .store
        .read_log(0, 1, 100, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    let epochs: Vec<(u64, u64)> = log.iter().map(|e| (e.epoch, e.seq)).collect();
    assert_eq!(epochs, vec![(1, 1), (1, 2), (1, 3), (2, 4), (2, 5)]);
    let disk = f
        .ctx
        .store
        .load_partition(0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(disk.last, pos(2, 5));
    assert_eq!(
        disk.history,
        EpochHistory::from_starts(vec![(1, 1), (2, 4)])
    );
    assert_eq!(disk.applied_seq, 4);
    let v = f.ctx.store.get(0, b"k4").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.map(|v| (v.version, v.value)), Some((4, b"v2".to_vec())));

    // An append that does not continue the log is refused and changes nothing.
    let reply = r
        .handle_append(append(2, pos(2, 9), None, 4, vec![put(2, 10, "x", "y")]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Mismatch, pos(2, 5)));
}

/// A follower that took in and applied `n` entries of `value_bytes` each, all of one key
/// (so the partition's data stays one value), then compacted its log.
async fn compacted_after(config: ReplicationConfig, n: u64, value_bytes: usize) -> (Fixture, u64) {
    let f = configured("f", config);
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let value = "v".repeat(value_bytes);
    let entries = (1..=n).map(|s| put(1, s, "k", &value)).collect();
    let reply = r
        .handle_append(append(1, pos(0, 0), None, n, entries))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, n)));
    wait_applied(&r, n).await;
    r.compact().await.unwrap_or_else(|e| panic!("{e}"));
    let base = r.lock().base.last_seq;
    (f, base)
}

/// Bytes of the log entries `f`'s partition 0 still holds, and the first one's sequence number.
fn retained(f: &Fixture) -> (u64, Option<u64>) {
    let log = f
        .ctx
        .store
        .read_log(0, 0, u64::MAX, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = log
        .iter()
        .map(|e| e.op.size() as u64 + super::log_bytes::ENTRY_OVERHEAD)
        .sum();
    (bytes, log.first().map(|e| e.seq))
}

#[tokio::test]
async fn the_retained_log_is_bounded_by_entries_bytes_and_the_partitions_data() {
    const KIB: u64 = 1024;
    // 200 entries of 64 KiB (12.8 MiB of log) over one key (64 KiB of data).
    let entries = 200;
    let value = 64 * 1024;

    // By entries: the last 10 are kept.
    let config = ReplicationConfig {
        log_window: 10,
        log_window_bytes: u64::MAX,
        ..ReplicationConfig::default()
    };
    let (f, base) = compacted_after(config, entries, value).await;
    assert_eq!(base, entries - 10);
    assert_eq!(retained(&f).1, Some(entries - 9));

    // By bytes: at most 1 MiB of entries, and within a run (256 KiB) of it.
    let config = ReplicationConfig {
        log_window_bytes: 1024 * KIB,
        ..ReplicationConfig::default()
    };
    let (f, base) = compacted_after(config, entries, value).await;
    let (bytes, first) = retained(&f);
    assert_eq!(first, Some(base + 1));
    assert!(bytes <= 1024 * KIB, "{bytes} bytes retained");
    assert!(
        bytes > 1024 * KIB - 256 * KIB - value as u64,
        "{bytes} bytes retained"
    );

    // By the partition's data: a 64 KiB partition keeps the floor of 4 MiB of log, not the
    // default 64 MiB window.
    let (f, _) = compacted_after(ReplicationConfig::default(), entries, value).await;
    let (bytes, _) = retained(&f);
    let floor = super::replica::MIN_RETAINED_BYTES;
    assert!(bytes <= floor, "{bytes} bytes retained");
    assert!(
        bytes > floor - 256 * KIB - value as u64,
        "{bytes} bytes retained"
    );
}

#[tokio::test]
async fn entries_after_reads_the_range_asked_from_the_cache_or_the_log() {
    let f = plain("f");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let entries = (1..=50).map(|s| put(1, s, &format!("k{s}"), "v")).collect();
    let reply = r
        .handle_append(append(1, pos(0, 0), None, 0, entries))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.last, pos(1, 50));
    let seqs = |got: Option<Vec<Arc<LogEntry>>>| -> Vec<u64> {
        got.unwrap_or_else(|| panic!("not retained"))
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    let read = |prev, up_to, max| {
        let r = &r;
        async move {
            r.entries_after(prev, up_to, max)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    // From the cache: the first entry after `prev`, none past `up_to`, at least one entry
    // even over the byte budget.
    assert_eq!(seqs(read(20, 24, usize::MAX).await), vec![21, 22, 23, 24]);
    assert_eq!(seqs(read(0, 3, usize::MAX).await), vec![1, 2, 3]);
    assert_eq!(seqs(read(47, u64::MAX, usize::MAX).await), vec![48, 49, 50]);
    assert_eq!(seqs(read(10, u64::MAX, 1).await), vec![11]);
    assert!(seqs(read(24, 24, usize::MAX).await).is_empty());
    assert!(seqs(read(50, u64::MAX, usize::MAX).await).is_empty());
    // From the log on disk when the cache no longer starts early enough.
    {
        let mut st = r.lock();
        st.cache.clear();
        st.cache_bytes = 0;
    }
    assert_eq!(seqs(read(20, 24, usize::MAX).await), vec![21, 22, 23, 24]);
    assert_eq!(seqs(read(47, u64::MAX, usize::MAX).await), vec![48, 49, 50]);
}

#[tokio::test]
async fn stale_epochs_are_rejected_and_a_higher_epoch_deposes_the_primary() {
    let f = plain("a");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let entry = PartitionEntry {
        epoch: 2,
        primary: Some("a".into()),
        replicas: vec!["a".into(), "b".into()],
        in_sync: vec!["a".into(), "b".into()],
        learners: vec![],
    };
    r.apply_map(entry, 1).await;
    let term = r.lock().primary.as_ref().map(|p| p.term.clone());
    assert!(term.is_some(), "the map made this node primary");

    let reply = r
        .handle_append(append(1, pos(0, 0), None, 0, vec![put(1, 1, "k", "old")]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.epoch), (Status::StaleEpoch, 2));
    assert!(r.lock().primary.is_some());
    f.ctx
        .writer
        .settle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        f.ctx
            .store
            .read_log(0, 1, 10, usize::MAX)
            .map(|l| l.len())
            .ok(),
        Some(0)
    );

    let reply = r
        .handle_append(append(3, pos(0, 0), None, 0, vec![put(3, 1, "k", "new")]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.epoch), (Status::Ok, 3));
    assert!(
        r.lock().primary.is_none(),
        "a higher epoch deposes the primary"
    );
    assert!(term.is_some_and(|t| t.is_cancelled()));
}

/// Records the size of every committed batch.
struct Batches(Arc<Mutex<Vec<usize>>>);

impl WriterObserver for Batches {
    fn batch(&self, commands: usize, _durable: bool, _seconds: f64) {
        if let Ok(mut b) = self.0.lock() {
            b.push(commands);
        }
    }
}

#[tokio::test]
async fn group_commit_wakes_every_caller_after_its_batch_commits() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let f = fixture("g", Batches(batches.clone()));
    let mut pending = Vec::new();
    for i in 0..200u64 {
        let cmd = Command::Append {
            partition: (i % 8) as u32,
            entries: vec![put(1, i / 8 + 1, &format!("k{i}"), "v")],
            history: EpochHistory::from_starts(vec![(1, 1)]),
        };
        pending.push(f.ctx.writer.submit(cmd).unwrap_or_else(|e| panic!("{e}")));
    }
    for p in pending {
        assert!(p.wait().await.is_ok());
    }
    let sizes = batches.lock().map(|b| b.clone()).unwrap_or_default();
    assert_eq!(sizes.iter().sum::<usize>(), 200, "{sizes:?}");
    assert!(sizes.len() < 200, "appends were not grouped: {sizes:?}");
    // Every woken caller's entry is on disk.
    f.ctx
        .writer
        .settle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for p in 0..8 {
        let log = f
            .ctx
            .store
            .read_log(p, 1, 1000, usize::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.len(), 25);
    }
}

#[tokio::test]
async fn snapshot_then_tail_installs_on_a_fresh_replica() {
    // The source: ten entries appended and applied.
    let src = plain("src");
    let entries: Vec<_> = (1..=10)
        .map(|s| put(1, s, &format!("key-{s:02}"), &format!("value-{s}")))
        .collect();
    let history = EpochHistory::from_starts(vec![(1, 1)]);
    let w = &src.ctx.writer;
    w.run(Command::Append {
        partition: 0,
        entries: entries.clone(),
        history: history.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    w.run(Command::Apply {
        partition: 0,
        entries,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let reader = src.ctx.store.snapshot(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reader.applied_seq, 10);
    let first = reader.chunk(None, 60).unwrap_or_else(|e| panic!("{e}"));
    let rest = reader
        .chunk(first.last().map(|(k, _)| k.as_slice()), usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.is_empty() && !rest.is_empty());
    assert_eq!(first.len() + rest.len(), 10);

    let dst = plain("dst");
    let r = Replica::new(dst.ctx.clone(), 0, PartitionDisk::default());
    let chunk = |first_chunk: bool, id: u64, items, end| SnapshotChunk {
        epoch: 1,
        leader: "src".into(),
        snapshot_id: id,
        first: first_chunk,
        items,
        end,
        session: 0,
    };
    let reply = r
        .handle_snapshot(chunk(true, 7, first, None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, Status::Ok);
    // A chunk of another snapshot is refused.
    let reply = r
        .handle_snapshot(chunk(false, 8, vec![], None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, Status::SnapshotOutOfOrder);
    let end = SnapshotEnd {
        base: pos(1, 10),
        history,
        keys: reader.keys,
        bytes: reader.bytes,
    };
    let reply = r
        .handle_snapshot(chunk(false, 7, rest, Some(end)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 10)));

    // Then the tail from S + 1.
    let tail = vec![
        put(1, 11, "key-01", "rewritten"),
        put(1, 12, "key-11", "new"),
    ];
    let reply = r
        .handle_append(append(1, pos(1, 10), None, 12, tail))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 12)));
    wait_applied(&r, 12).await;
    let get = |k: &str| {
        dst.ctx
            .store
            .get(0, k.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|v| (v.version, v.value))
    };
    assert_eq!(get("key-05"), Some((5, b"value-5".to_vec())));
    assert_eq!(get("key-01"), Some((11, b"rewritten".to_vec())));
    assert_eq!(get("key-11"), Some((12, b"new".to_vec())));
    let disk = dst
        .ctx
        .store
        .load_partition(0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (disk.base, disk.last, disk.applied_seq, disk.keys),
        (pos(1, 10), pos(1, 12), 12, 11)
    );
    dst.ctx
        .writer
        .settle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = dst
        .ctx
        .store
        .read_log(0, 1, 100, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![11, 12]);
}

#[tokio::test]
async fn an_epoch_started_without_entries_does_not_mislabel_later_entries() {
    let f = plain("a");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let entries = (1..=3).map(|s| put(1, s, "k", "v")).collect();
    let reply = r
        .handle_append(append(1, pos(0, 0), None, 0, entries))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, Status::Ok);
    // Briefly primary at epoch 3 (records epoch 3 from seq 4) without writing anything.
    let lead = PartitionEntry {
        epoch: 3,
        primary: Some("a".into()),
        replicas: vec!["a".into(), "b".into()],
        in_sync: vec!["a".into(), "b".into()],
        learners: vec![],
    };
    r.apply_map(lead.clone(), 1).await;
    // Epoch 4's primary ships entries that an epoch-2 primary wrote at 4..=5.
    let follow = PartitionEntry {
        epoch: 4,
        primary: Some("b".into()),
        ..lead
    };
    r.apply_map(follow, 1).await;
    let tail = vec![put(2, 4, "k", "e2"), put(2, 5, "k", "e2")];
    let reply = r
        .handle_append(append(4, pos(1, 3), None, 0, tail))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(2, 5)));
    let history = r.lock().history.clone();
    assert_eq!(history.epoch_at(4), 2, "{history:?}");
    assert_eq!(history.epoch_at(3), 1);
}

pub(super) fn primary_entry(in_sync: &[&str]) -> PartitionEntry {
    PartitionEntry {
        epoch: 2,
        primary: Some("a".into()),
        replicas: in_sync.iter().map(|n| (*n).into()).collect(),
        in_sync: in_sync.iter().map(|n| (*n).into()).collect(),
        learners: vec![],
    }
}

/// The map entry of a primary "a" (epoch 2) whose partition also lists "c" as a replica
/// outside `inSync`: a learner or lagging replica to admit.
pub(super) fn entry_with_learner() -> PartitionEntry {
    PartitionEntry {
        replicas: vec!["a".into(), "c".into()],
        ..primary_entry(&["a"])
    }
}

/// A leased primary of partition 0 on `f` under [`entry_with_learner`].
pub(super) async fn primary_with_learner(f: &Fixture) -> Arc<Replica> {
    leased_primary(f, entry_with_learner()).await
}

/// A leased primary of partition 0 on `f` under the map entry `entry`.
pub(super) async fn leased_primary(f: &Fixture, entry: PartitionEntry) -> Arc<Replica> {
    f.ctx.lease.grant_for_tests(Duration::from_secs(60));
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    r.apply_map(entry, 1).await;
    r
}

/// Starts an admit call for "c" at epoch 2 with a 60 s timeout on `r`, in the background.
pub(super) fn admit_c(
    r: &Arc<Replica>,
) -> tokio::task::JoinHandle<Result<AdmitResponse, super::primary::AdminRefusal>> {
    let r = r.clone();
    let req = AdmitRequest {
        epoch: 2,
        learner: "c".into(),
        timeout_ms: 60_000,
        wait_for_copy_within: None,
    };
    tokio::spawn(async move { r.admit(&req).await })
}

/// Polls `cond` every millisecond for up to ten seconds, for state that signals nothing
/// when it changes (writer-thread counters, admissions).
pub(super) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Whether the primary `r` waits for `member` before anything commits (an admission holds).
pub(super) fn requires(r: &Replica, member: &str) -> bool {
    r.lock()
        .primary
        .as_ref()
        .is_some_and(|p| p.admitted.requires(member, std::time::Instant::now()))
}

#[tokio::test]
async fn a_refused_condition_reports_the_committed_version() {
    let f = plain("a");
    let r = leased_primary(&f, primary_entry(&["a"])).await;
    let w = r.write(b"k".to_vec(), Some(b"v".to_vec()), Condition::Always);
    let version = w.await.unwrap_or_else(|e| panic!("{e}")).version;
    let refused = r
        .write(b"k".to_vec(), Some(b"w".to_vec()), Condition::IfAbsent)
        .await;
    assert!(
        matches!(refused, Err(ServeError::PreconditionFailed { current: Some(v) }) if v == version),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_condition_failing_only_against_an_uncommitted_write_is_not_refused() {
    let f = plain("a");
    // "b" is in sync but never acknowledges: nothing commits.
    let r = leased_primary(&f, primary_entry(&["a", "b"])).await;
    let first = {
        let r = r.clone();
        tokio::spawn(async move {
            r.write(b"k".to_vec(), Some(b"1".to_vec()), Condition::IfAbsent)
                .await
        })
    };
    let mut progress = r.progress_tx.subscribe();
    let appended = tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|_| {
            r.lock()
                .primary
                .as_ref()
                .is_some_and(|p| !p.pending.is_empty())
        }),
    )
    .await
    .is_ok(); // (the borrow it returns would block every later send on the channel)
    assert!(appended, "the first write was never appended");
    let mut second = {
        let r = r.clone();
        tokio::spawn(async move {
            r.write(b"k".to_vec(), Some(b"2".to_vec()), Condition::IfAbsent)
                .await
        })
    };
    // Refusing now would reveal a write that may never commit: the second write must wait.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(
        early.is_err(),
        "answered on an uncommitted write: {early:?}"
    );
    // The first write never commits: a higher epoch deposes this primary.
    let reply = r
        .handle_append(append(3, pos(0, 0), None, 0, vec![]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.epoch, 3);
    assert!(
        r.lock().primary.is_none(),
        "a higher epoch deposes the primary"
    );
    let first = tokio::time::timeout(Duration::from_secs(10), first).await;
    assert!(
        matches!(first, Ok(Ok(Err(ServeError::Unavailable("deposed"))))),
        "{first:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(10), second).await;
    assert!(
        matches!(second, Ok(Ok(Err(ServeError::NotPrimary { .. })))),
        "{second:?}"
    );
}

/// Moves on an idle partition: a learner's acknowledgement that does not move the commit
/// point (nothing is being written) still wakes the admission waiting for it, which answers
/// ready at once instead of at its deadline.
#[tokio::test]
async fn an_admission_wakes_when_the_learner_acknowledges_on_an_idle_partition() {
    let f = plain("a");
    let r = primary_with_learner(&f).await;
    r.write(b"k".to_vec(), Some(b"v".to_vec()), Condition::Always)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let last = r.lock().last.last_seq;
    let call = admit_c(&r);
    // The admission is registered (the learner has acknowledged nothing yet), then "c"
    // acknowledges the whole log: no write follows, so the commit point stays where it is.
    // (Registering wakes nothing to wait on: poll.)
    until("the admission registered", || requires(&r, "c")).await;
    super::sender::record_ack(&r, "c", last);
    let answer = tokio::time::timeout(Duration::from_secs(10), call).await;
    let Ok(Ok(Ok(answer))) = answer else {
        panic!(
            "the admission did not answer within 10 s of the acknowledgement (its deadline is 60 s): {answer:?}"
        );
    };
    assert!(answer.ready, "{answer:?}");
}

/// Waits until the primary `r` tracks "c", then marks it as being sent a snapshot.
async fn copying_c(r: &Replica) {
    until("the primary tracks c", || {
        r.lock()
            .primary
            .as_ref()
            .is_some_and(|p| p.followers.contains_key("c"))
    })
    .await;
    super::sender::set_copying(r, "c", true);
}

/// An admission asked while the learner's copy is under way holds nothing back until the
/// copy is in and the learner is close: writes commit without the learner meanwhile, and the
/// call answers ready as soon as the learner holds the commit point. Asked with a short
/// timeout while the copy never ends, it answers not ready and leaves nothing behind.
#[tokio::test]
async fn an_admission_asked_during_a_copy_waits_for_it_without_holding_writes_back() {
    let f = plain("a");
    let r = primary_with_learner(&f).await;
    copying_c(&r).await;
    let call = {
        let r = r.clone();
        let req = AdmitRequest {
            epoch: 2,
            learner: "c".into(),
            timeout_ms: 60_000,
            wait_for_copy_within: Some(10),
        };
        tokio::spawn(async move { r.admit(&req).await })
    };
    // While the copy is under way, writes commit without "c".
    for i in 0..3 {
        let w = r.write(
            format!("k{i}").into_bytes(),
            Some(b"v".to_vec()),
            Condition::Always,
        );
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .unwrap_or_else(|_| panic!("write {i} held back by an admission during the copy"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!requires(&r, "c"), "admitted while copying");
    }
    // The copy ends with "c" holding everything: the call admits it and answers ready.
    let last = r.lock().last.last_seq;
    super::sender::record_ack(&r, "c", last);
    super::sender::set_copying(&r, "c", false);
    let answer = tokio::time::timeout(Duration::from_secs(10), call).await;
    let Ok(Ok(Ok(answer))) = answer else {
        panic!("the admission did not answer within 10 s of the copy's end: {answer:?}");
    };
    assert!(answer.ready, "{answer:?}");
    assert!(requires(&r, "c"), "admitted: commits wait for c now");

    // A copy that never ends: the call's deadline passes without an admission.
    let f = plain("a");
    let r = primary_with_learner(&f).await;
    copying_c(&r).await;
    let req = AdmitRequest {
        epoch: 2,
        learner: "c".into(),
        timeout_ms: 200,
        wait_for_copy_within: Some(10),
    };
    let answer = r.admit(&req).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!answer.ready, "{answer:?}");
    assert!(
        !requires(&r, "c"),
        "nothing admitted by a call that never saw the copy end"
    );
    let w = r.write(b"late".to_vec(), Some(b"v".to_vec()), Condition::Always);
    tokio::time::timeout(Duration::from_secs(10), w)
        .await
        .unwrap_or_else(|_| panic!("a write held back after the call"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// An append of a session whose primary keeps `in_flight` appends in flight.
fn piped(append: Append, in_flight: u8) -> Append {
    Append {
        in_flight,
        ..append
    }
}

async fn probe(r: &Replica, epoch: u64) {
    let reply = r
        .handle_probe(Probe {
            epoch,
            leader: "primary".into(),
            session: 0,
        })
        .await;
    assert_eq!(reply.status, Status::Ok);
}

/// Appends are pipelined: one sent after another may arrive first. It waits for its
/// predecessor, and both are taken in log order.
#[tokio::test]
async fn appends_arriving_out_of_order_are_taken_in_log_order() {
    let f = plain("f");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    probe(&r, 1).await;
    let second = {
        let r = r.clone();
        let entries = vec![put(1, 3, "c", "3"), put(1, 4, "d", "4")];
        let msg = piped(append(1, pos(1, 2), None, 0, entries), 4);
        tokio::spawn(async move { r.handle_append(msg).await })
    };
    let mut second = std::pin::pin!(second);
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(early.is_err(), "taken before its predecessor: {early:?}");
    let first = vec![put(1, 1, "a", "1"), put(1, 2, "b", "2")];
    let reply = r
        .handle_append(piped(append(1, pos(0, 0), None, 0, first), 4))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 2)));
    let reply = tokio::time::timeout(Duration::from_secs(10), second).await;
    let reply = match reply {
        Ok(Ok(Ok(reply))) => reply,
        other => panic!("the second append: {other:?}"),
    };
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 4)));

    // Without pipelining, or from a session this process never answered the probe of (a
    // primary that believes this log holds what it does not, say after a restart on an
    // empty disk), an append beyond the log's end is refused at once: only the refusal
    // makes the primary probe again.
    for msg in [
        append(1, pos(1, 9), None, 0, vec![put(1, 10, "x", "y")]),
        Append {
            session: 7,
            ..piped(append(1, pos(1, 9), None, 0, vec![put(1, 10, "x", "y")]), 4)
        },
    ] {
        let reply = tokio::time::timeout(Duration::from_secs(1), r.handle_append(msg)).await;
        assert!(
            matches!(&reply, Ok(Ok(reply)) if reply.status == Status::Mismatch),
            "{reply:?}"
        );
    }
}

/// An empty append (a commit point) overtaken by the append that truncates a divergent
/// suffix commits nothing of that suffix: only up to where it was sent from.
#[tokio::test]
async fn an_overtaken_empty_append_commits_only_up_to_where_it_was_sent_from() {
    let f = plain("f");
    let r = Replica::new(f.ctx.clone(), 0, PartitionDisk::default());
    let entries = (1..=5)
        .map(|s| put(1, s, &format!("k{s}"), "old"))
        .collect();
    let reply = r
        .handle_append(append(1, pos(0, 0), None, 0, entries))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(1, 5)));

    // The primary of epoch 2 holds 1..=3 of epoch 1 and its own 4, committed up to 4. Its
    // truncating append (sent first, from 3) is overtaken by an empty one sent from 3 too.
    probe(&r, 2).await;
    let reply = r
        .handle_append(piped(append(2, pos(1, 3), None, 4, vec![]), 4))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status, Status::Ok);
    wait_applied(&r, 3).await;
    assert_eq!(
        r.lock().commit_seq,
        3,
        "committed beyond where the append was sent from"
    );
    let reply = r
        .handle_append(append(
            2,
            pos(1, 3),
            Some(3),
            4,
            vec![put(2, 4, "k4", "new")],
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reply.status, reply.last), (Status::Ok, pos(2, 4)));
    wait_applied(&r, 4).await;
    let v = f.ctx.store.get(0, b"k4").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.map(|v| v.value), Some(b"new".to_vec()));
    assert_eq!(
        f.ctx.store.get(0, b"k5").unwrap_or_else(|e| panic!("{e}")),
        None
    );
}

/// A write waits for its own entry to commit: an acknowledgement that commits an earlier
/// entry answers that entry's write and leaves a later one waiting, and nothing stays
/// registered once both are answered.
#[tokio::test]
async fn a_commit_answers_the_writes_it_commits_and_no_later_one() {
    let f = plain("a");
    // "b" is in sync: nothing commits before it acknowledges.
    let r = leased_primary(&f, primary_entry(&["a", "b"])).await;
    let write = |key: &'static str| {
        let r = r.clone();
        tokio::spawn(async move {
            r.write(
                key.as_bytes().to_vec(),
                Some(b"v".to_vec()),
                Condition::Always,
            )
            .await
        })
    };
    let first = write("k1");
    until("the first write is durable here", || {
        r.lock().durable_seq >= 1
    })
    .await;
    let mut second = write("k2");
    until("the second write is durable here", || {
        r.lock().durable_seq >= 2
    })
    .await;
    super::sender::record_ack(&r, "b", 1);
    let first = tokio::time::timeout(Duration::from_secs(10), first).await;
    assert!(
        matches!(&first, Ok(Ok(Ok(w))) if w.version == 1),
        "{first:?}"
    );
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(early.is_err(), "answered before it committed: {early:?}");
    super::sender::record_ack(&r, "b", 2);
    let second = tokio::time::timeout(Duration::from_secs(10), second).await;
    assert!(
        matches!(&second, Ok(Ok(Ok(w))) if w.version == 2),
        "{second:?}"
    );
    let waiting = r.lock().primary.as_ref().map(|p| p.commit_waiters.len());
    assert_eq!(waiting, Some(0));
}
