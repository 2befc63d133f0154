//! The single writer of the database: a dedicated thread that drains every queued command
//! (log appends of all partitions, applies, compactions, meta updates), executes the batch in
//! one write transaction and only then wakes each caller.
//!
//! Durability per batch, one fsync at most:
//! - a batch whose durable commands are all log commands (appends, truncations, epoch
//!   histories) is written to the write-ahead log as one record and `fdatasync`ed there; the
//!   database transaction is then committed without fsync;
//! - a batch holding another durable command (a map, a snapshot's start or end, a dropped
//!   partition, an unproven mark), or arriving when a checkpoint is due, is committed to the
//!   database durably — a checkpoint — and the log starts its next generation ([`wal`]);
//! - a batch of non-durable commands only (applies, compactions, snapshot chunks) is committed
//!   without fsync.
//!
//! The handle also tells how long the oldest queued command has waited
//! ([`WriterHandle::stalled_for`]): a hung disk shows there long before it fails.

use super::codec::{self, LogEntry, Op};
use super::faults::FaultHooks;
use super::tables::{self, META, data_table, log_table, meta_key};
use super::wal::{self, Wal};
use super::{StorageError, Store, write_err};
use crate::admin_api::LogPosition;
use crate::map::PartitionId;
use crate::replication::epochs::EpochHistory;
use redb::{Durability, ReadableTable, WriteTransaction};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most commands executed in one transaction.
const MAX_BATCH: usize = 4096;

/// One unit of work for the writer.
pub enum Command {
    /// Durably appends entries (in order) and stores the epoch history.
    Append {
        partition: PartitionId,
        entries: Vec<Arc<LogEntry>>,
        history: EpochHistory,
    },
    /// Durably removes log entries after `after_seq` (divergent suffix).
    Truncate {
        partition: PartitionId,
        after_seq: u64,
        history: EpochHistory,
    },
    /// Stores the epoch history alone (a new primary records where its epoch starts).
    SetHistory {
        partition: PartitionId,
        history: EpochHistory,
    },
    /// Applies committed entries to the data table (non-durable: the log is the truth).
    Apply {
        partition: PartitionId,
        entries: Vec<Arc<LogEntry>>,
    },
    /// Removes log entries up to and including `base.last_seq` (non-durable).
    Compact {
        partition: PartitionId,
        base: LogPosition,
    },
    /// Durably marks a partition's copy as unproven (or clears the mark).
    SetUnproven {
        partition: PartitionId,
        unproven: bool,
    },
    /// Durably stores the installed map (JSON).
    PutMap { json: Vec<u8> },
    /// Durably deletes every trace of a partition.
    DropPartition { partition: PartitionId },
    /// Durably marks a snapshot install as started and empties the partition.
    SnapshotBegin { partition: PartitionId },
    /// Adds `(key, stored value)` pairs of a snapshot being installed (non-durable).
    SnapshotChunk {
        partition: PartitionId,
        items: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Durably completes a snapshot install: the log restarts after `base`.
    SnapshotEnd {
        partition: PartitionId,
        base: LogPosition,
        history: EpochHistory,
        keys: u64,
        bytes: u64,
    },
}

impl Command {
    fn durable(&self) -> bool {
        !matches!(
            self,
            Command::Apply { .. } | Command::Compact { .. } | Command::SnapshotChunk { .. }
        )
    }
}

/// What a command changed, reported back to its caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// For `Apply`: keys and bytes stored in the partition afterwards.
    pub keys: u64,
    pub bytes: u64,
}

type Reply = oneshot::Sender<Result<Outcome, StorageError>>;

/// Observations the writer reports (batch sizes, commit durations).
pub trait WriterObserver: Send + 'static {
    fn batch(&self, commands: usize, durable: bool, commit_seconds: f64);
}

/// Handle to queue commands on the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<(Command, Reply)>,
    /// Queue times of the commands not yet committed, in queue order.
    queued: Arc<Mutex<VecDeque<Instant>>>,
}

impl WriterHandle {
    /// Starts the writer thread. `on_fatal` is called once if a commit fails (the node must
    /// stop: its in-memory state may be ahead of the disk).
    pub fn start(
        store: Store,
        observer: impl WriterObserver,
        on_fatal: impl FnOnce(StorageError) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(VecDeque::new()));
        let wal = match store.take_wal() {
            Ok(wal) => wal,
            Err(e) => {
                // A second writer on one store would interleave two logs: refuse it. The
                // receiver is dropped, so every command fails with `WriterGone`.
                tracing::error!(error = %e, "cannot start a second storage writer");
                on_fatal(e);
                return Self { tx, queued };
            }
        };
        let writer = Writer {
            store,
            wal,
            rx,
            queued: queued.clone(),
            hooks: FaultHooks::from_env(),
        };
        std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || writer.run(observer, on_fatal))
            .map_or_else(
                |e| tracing::error!(error = %e, "cannot start the storage writer thread"),
                |_| (),
            );
        Self { tx, queued }
    }

    /// How long the oldest queued command has waited for its commit (zero when none waits).
    pub fn stalled_for(&self) -> Duration {
        self.queued
            .lock()
            .ok()
            .and_then(|q| q.front().map(Instant::elapsed))
            .unwrap_or_default()
    }

    /// Queues a command and waits until its transaction has committed.
    pub async fn run(&self, cmd: Command) -> Result<Outcome, StorageError> {
        self.submit(cmd)?.wait().await
    }

    /// Queues a command now (commands run in queue order) and returns a handle to await it.
    pub fn submit(&self, cmd: Command) -> Result<Pending, StorageError> {
        let (done, wait) = oneshot::channel();
        // Queue order and the order of `queued` must agree: both change under this lock.
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        self.tx
            .send((cmd, done))
            .map_err(|_| StorageError::WriterGone)?;
        queued.push_back(Instant::now());
        Ok(Pending(wait))
    }
}

/// A queued command whose commit can be awaited.
pub struct Pending(oneshot::Receiver<Result<Outcome, StorageError>>);

impl Pending {
    pub async fn wait(self) -> Result<Outcome, StorageError> {
        self.0.await.map_err(|_| StorageError::WriterGone)?
    }
}

/// The writer thread's state.
struct Writer {
    store: Store,
    wal: Wal,
    rx: mpsc::UnboundedReceiver<(Command, Reply)>,
    queued: Arc<Mutex<VecDeque<Instant>>>,
    hooks: FaultHooks,
}

impl Writer {
    fn run(mut self, observer: impl WriterObserver, on_fatal: impl FnOnce(StorageError)) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let durable = batch.iter().any(|(c, _)| c.durable());
            let started = Instant::now();
            match self.execute(&batch, durable) {
                Ok(outcomes) => {
                    observer.batch(batch.len(), durable, started.elapsed().as_secs_f64());
                    if let Ok(mut q) = self.queued.lock() {
                        let n = batch.len().min(q.len());
                        q.drain(..n);
                    }
                    for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    // Nobody is woken with success: callers see the writer gone, and the
                    // node stops at once (`on_fatal`), so no unpersisted position is served.
                    tracing::error!(error = %e, "storage commit failed; the node stops");
                    for (_, reply) in batch {
                        let _ = reply.send(Err(StorageError::WriterGone));
                    }
                    on_fatal(e);
                    return;
                }
            }
        }
    }

    fn execute(
        &mut self,
        batch: &[(Command, Reply)],
        durable: bool,
    ) -> Result<Vec<Outcome>, StorageError> {
        if durable {
            self.hooks.stall();
            if self.hooks.fail() {
                return Err(write_err(std::io::Error::other(
                    "test hook: durable commit failed",
                )));
            }
        }
        let checkpoint =
            self.wal.checkpoint_due() || batch.iter().any(|(c, _)| c.durable() && !wal::logged(c));
        let mut txn = self.store.db().begin_write().map_err(write_err)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (cmd, _) in batch {
            outcomes.push(apply_command(&txn, cmd)?);
        }
        if checkpoint {
            // Everything the log holds, and this batch, reach the database durably; the log's
            // next generation starts empty.
            let next = self.wal.generation() + 1;
            {
                let mut meta = txn.open_table(META).map_err(write_err)?;
                meta.insert(wal::GENERATION_KEY, &next.to_le_bytes()[..])
                    .map_err(write_err)?;
            }
            txn.set_durability(Durability::Immediate)
                .map_err(write_err)?;
            txn.commit().map_err(write_err)?;
            self.wal.checkpointed(next);
            return Ok(outcomes);
        }
        if let Some(record) = Wal::encode_batch(batch.iter().map(|(c, _)| c)) {
            // The durability point: the record is on disk before anyone is told.
            self.wal.append(&record)?;
        }
        txn.set_durability(Durability::None).map_err(write_err)?;
        txn.commit().map_err(write_err)?;
        self.wal.note_volatile_commit();
        Ok(outcomes)
    }
}

fn put_meta(txn: &WriteTransaction, key: &str, value: &[u8]) -> Result<(), StorageError> {
    let mut meta = txn.open_table(META).map_err(write_err)?;
    meta.insert(key, value).map_err(write_err)?;
    Ok(())
}

fn get_meta(txn: &WriteTransaction, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let meta = txn.open_table(META).map_err(write_err)?;
    let v = meta
        .get(key)
        .map_err(write_err)?
        .map(|v| v.value().to_vec());
    Ok(v)
}

pub(super) fn apply_command(
    txn: &WriteTransaction,
    cmd: &Command,
) -> Result<Outcome, StorageError> {
    match cmd {
        Command::Append {
            partition,
            entries,
            history,
        } => {
            let name = log_table(*partition);
            let mut log = txn.open_table(name.as_def()).map_err(write_err)?;
            for e in entries {
                log.insert(e.seq, codec::encode_entry(e).as_slice())
                    .map_err(write_err)?;
            }
            drop(log);
            put_meta(
                txn,
                &meta_key(*partition, "history"),
                &codec::encode_history(history),
            )?;
        }
        Command::Truncate {
            partition,
            after_seq,
            history,
        } => {
            let name = log_table(*partition);
            let mut log = txn.open_table(name.as_def()).map_err(write_err)?;
            log.retain_in((after_seq + 1).., |_, _| false)
                .map_err(write_err)?;
            drop(log);
            put_meta(
                txn,
                &meta_key(*partition, "history"),
                &codec::encode_history(history),
            )?;
        }
        Command::SetHistory { partition, history } => {
            // Make sure the log table exists so the partition is found again at start-up.
            let name = log_table(*partition);
            txn.open_table(name.as_def()).map_err(write_err)?;
            put_meta(
                txn,
                &meta_key(*partition, "history"),
                &codec::encode_history(history),
            )?;
        }
        Command::Apply { partition, entries } => return apply_entries(txn, *partition, entries),
        Command::Compact { partition, base } => {
            let name = log_table(*partition);
            let mut log = txn.open_table(name.as_def()).map_err(write_err)?;
            log.retain_in(..=base.last_seq, |_, _| false)
                .map_err(write_err)?;
            drop(log);
            put_meta(
                txn,
                &meta_key(*partition, "base"),
                &tables::position_to(*base),
            )?;
        }
        Command::SetUnproven {
            partition,
            unproven,
        } => {
            // The log table marks the partition as held, so the mark is found at start-up.
            txn.open_table(log_table(*partition).as_def())
                .map_err(write_err)?;
            put_meta(
                txn,
                &meta_key(*partition, "unproven"),
                &[u8::from(*unproven)],
            )?;
        }
        Command::PutMap { json } => put_meta(txn, "map", json)?,
        Command::DropPartition { partition } => drop_partition(txn, *partition)?,
        Command::SnapshotBegin { partition } => {
            // A snapshot does not prove a copy in sync: keep the mark across the install.
            let unproven = get_meta(txn, &meta_key(*partition, "unproven"))?;
            drop_partition(txn, *partition)?;
            if let Some(mark) = unproven {
                put_meta(txn, &meta_key(*partition, "unproven"), &mark)?;
            }
            let name = log_table(*partition);
            txn.open_table(name.as_def()).map_err(write_err)?;
            put_meta(txn, &meta_key(*partition, "snapshot"), &[1])?;
        }
        Command::SnapshotChunk { partition, items } => {
            let name = data_table(*partition);
            let mut data = txn.open_table(name.as_def()).map_err(write_err)?;
            for (k, v) in items {
                data.insert(k.as_slice(), v.as_slice()).map_err(write_err)?;
            }
        }
        Command::SnapshotEnd {
            partition,
            base,
            history,
            keys,
            bytes,
        } => {
            let p = *partition;
            put_meta(txn, &meta_key(p, "base"), &tables::position_to(*base))?;
            put_meta(
                txn,
                &meta_key(p, "history"),
                &codec::encode_history(history),
            )?;
            put_meta(txn, &meta_key(p, "applied"), &base.last_seq.to_le_bytes())?;
            put_meta(txn, &meta_key(p, "stats"), &tables::pair_to(*keys, *bytes))?;
            let mut meta = txn.open_table(META).map_err(write_err)?;
            meta.remove(meta_key(p, "snapshot").as_str())
                .map_err(write_err)?;
        }
    }
    Ok(Outcome::default())
}

fn drop_partition(txn: &WriteTransaction, p: PartitionId) -> Result<(), StorageError> {
    txn.delete_table(log_table(p).as_def()).map_err(write_err)?;
    txn.delete_table(data_table(p).as_def())
        .map_err(write_err)?;
    let mut meta = txn.open_table(META).map_err(write_err)?;
    for what in [
        "base", "history", "applied", "stats", "snapshot", "unproven",
    ] {
        meta.remove(meta_key(p, what).as_str()).map_err(write_err)?;
    }
    Ok(())
}

fn apply_entries(
    txn: &WriteTransaction,
    p: PartitionId,
    entries: &[Arc<LogEntry>],
) -> Result<Outcome, StorageError> {
    let (mut keys, mut bytes) =
        get_meta(txn, &meta_key(p, "stats"))?.map_or((0, 0), |b| tables::stats_from(&b));
    let mut applied = get_meta(txn, &meta_key(p, "applied"))?.map_or(0, |b| tables::u64_from(&b));
    {
        let name = data_table(p);
        let mut data = txn.open_table(name.as_def()).map_err(write_err)?;
        for e in entries {
            if e.seq <= applied {
                continue; // already applied (a retried batch)
            }
            let old = match &e.op {
                Op::Put { key, value } => {
                    let stored = codec::encode_value(e.seq, value);
                    keys += 1;
                    bytes += (key.len() + value.len()) as u64;
                    data.insert(key.as_slice(), stored.as_slice())
                        .map_err(write_err)?
                        .map(|v| (key.len(), v.value().len()))
                }
                Op::Delete { key } => data
                    .remove(key.as_slice())
                    .map_err(write_err)?
                    .map(|v| (key.len(), v.value().len())),
            };
            if let Some((klen, vlen)) = old {
                keys = keys.saturating_sub(1);
                bytes = bytes.saturating_sub((klen + vlen.saturating_sub(8)) as u64);
            }
            applied = e.seq;
        }
    }
    put_meta(txn, &meta_key(p, "applied"), &applied.to_le_bytes())?;
    put_meta(txn, &meta_key(p, "stats"), &tables::pair_to(keys, bytes))?;
    Ok(Outcome { keys, bytes })
}
