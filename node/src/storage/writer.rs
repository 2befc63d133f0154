//! The single writer of the database, in two threads that work one after the other on a
//! stream of batches:
//!
//! - the **log thread** drains every queued command (log appends of all partitions, applies,
//!   compactions, meta updates) into a batch, writes the batch's log commands to the
//!   write-ahead log as one record and `fdatasync`s it ([`wal`]), answers the log commands'
//!   callers, then hands the batch on;
//! - the **database thread** applies the batches it is handed to redb, every batch waiting for
//!   it in one transaction committed without fsync, and then answers the other commands'
//!   callers.
//!
//! So a log append waits for its record's fsync only, and readers of the database may see it
//! a little later ([`WriterHandle::settle`] waits for that). Any other command is answered
//! once the database has it, durably if it is durable.
//!
//! Durability per batch, one fsync at most:
//! - a batch whose durable commands are all log commands (appends, truncations, epoch
//!   histories, the partition map) is durable once its log record is synced;
//! - a batch holding another durable command (an unproven mark) is
//!   committed to the database durably, together with everything handed on before it — a
//!   checkpoint — and the log thread writes nothing more until that commit is on disk;
//! - a batch holding a snapshot's end or a dropped partition also ends a checkpoint, but the
//!   log goes on in the next generation meanwhile (the end or drop is answered once the
//!   checkpoint is on disk); when a checkpoint is still under way, the batch is handed on
//!   without one and its end or drop is answered at the next checkpoint, which starts as
//!   soon as the one under way is done, so a burst of them never stops the log; a
//!   snapshot's start is not durable on its own: a crash before the next checkpoint leaves
//!   the copy the partition had before, and the primary sends the snapshot again;
//! - every 1 s (or 16 MiB of records) the log thread starts a checkpoint nobody waits for: it
//!   hands the database thread a marker and goes on in the log's next generation, in the
//!   other file ([`wal`]); the next checkpoint waits for this one;
//! - a batch of non-durable commands only (applies, compactions, snapshot chunks) needs no
//!   fsync.
//!
//! Within one transaction, metadata that many commands update (a partition's epoch history,
//! applied point and counters) is written once, at its end ([`TxnMeta`]).
//!
//! The handle also tells how long the oldest queued command has waited to become durable
//! ([`WriterHandle::stalled_for`]): a hung disk shows there long before it fails.

use super::codec::{self, LogEntry, Op};
use super::faults::FaultHooks;
use super::log_chunks::{self, LogTail};
use super::memtable::{self, Memtable, Staged};
use super::tables::{self, META, data_table, log_table, meta_key};
use super::values::{self, Pointer, Values};
use super::wal::{self, Wal};
use super::{StorageError, Store, write_err};
use crate::admin_api::LogPosition;
use crate::map::PartitionId;
use crate::replication::epochs::EpochHistory;
use redb::{Durability, ReadableTable, WriteTransaction};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most commands executed in one transaction.
const MAX_BATCH: usize = 4096;

/// One unit of work for the writer.
///
/// The log commands (`Append`, `Truncate`, `SetHistory`) are answered as soon as they are
/// durable in the write-ahead log; readers of the database may see them a little later
/// ([`WriterHandle::settle`]). Every other command is answered once the database has it
/// (durably, if the command is durable).
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
    /// Marks a snapshot install as started and empties the partition. Not durable on its
    /// own (a crash before the next checkpoint leaves the copy the partition had before):
    /// the snapshot's end is.
    SnapshotBegin { partition: PartitionId },
    /// Adds `(key, stored value)` pairs of a snapshot being installed (non-durable). `at`
    /// is empty, or holds for each item where its value was already written to the
    /// partition's value file ([`Store::write_snapshot_values`]; `None` for a value kept in
    /// its row).
    SnapshotChunk {
        partition: PartitionId,
        items: Vec<(Vec<u8>, Vec<u8>)>,
        at: Vec<Option<Pointer>>,
    },
    /// Durably completes a snapshot install: the log restarts after `base`.
    SnapshotEnd {
        partition: PartitionId,
        base: LogPosition,
        history: EpochHistory,
        keys: u64,
        bytes: u64,
    },
    /// Does nothing; answered once everything queued before it is in the database.
    Settle,
}

impl Command {
    fn durable(&self) -> bool {
        !matches!(
            self,
            Command::Apply { .. }
                | Command::Compact { .. }
                | Command::SnapshotBegin { .. }
                | Command::SnapshotChunk { .. }
                | Command::Settle
        )
    }

    /// A durable command the database makes durable (not the log) after which nothing may
    /// be written to the log until it is on disk: an unproven mark. A snapshot's end and a
    /// dropped partition are durable by a checkpoint too, but the log goes on meanwhile
    /// ([`Command::ends_checkpoint`]).
    fn quiets_log(&self) -> bool {
        self.durable() && !wal::logged(self) && !self.ends_checkpoint()
    }

    /// A durable command made durable by a checkpoint that ends with its batch (or, when a
    /// checkpoint is under way, by the next one), while the log goes on in the next
    /// generation ([`LogThread::step`]): a snapshot's end, a dropped partition. Their callers
    /// log nothing more of the partition before they are answered:
    /// a follower installing a snapshot holds the partition's locks until its end is
    /// answered, and a node creates no replica of a partition whose drop is not yet durable
    /// (`Node::replica_for_peer`).
    fn ends_checkpoint(&self) -> bool {
        matches!(
            self,
            Command::SnapshotEnd { .. } | Command::DropPartition { .. }
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
pub trait WriterObserver: Send + Sync + 'static {
    /// One batch is durable and about to be reported to its callers: `commands` in it,
    /// whether it held durable commands, and how long making it durable took (its log record's
    /// write and fsync, or its checkpoint).
    fn batch(&self, commands: usize, durable: bool, commit_seconds: f64);

    /// A checkpoint (a durable database commit) took `seconds`.
    fn checkpoint(&self, _seconds: f64) {}
}

/// What the log thread is sent: a command, or a nudge from the database thread (a
/// checkpoint is done, and commands handed on since wait for the next one).
enum ToLog {
    Command(Command, Reply),
    Nudge,
}

/// Handle to queue commands on the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<ToLog>,
    /// Queue times of the commands not yet durable (or handed on), in queue order.
    queued: Arc<Mutex<VecDeque<Instant>>>,
}

/// The fatal-error callback, shared by the two threads and called at most once.
type Fatal = Arc<Mutex<Option<Box<dyn FnOnce(StorageError) + Send>>>>;

fn call_fatal(fatal: &Fatal, e: StorageError) {
    let f = fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(f) = f {
        f(e);
    }
}

impl WriterHandle {
    /// Starts the writer threads. `on_fatal` is called once if a write or commit fails (the
    /// node must stop: its in-memory state may be ahead of the disk).
    pub fn start(
        store: Store,
        observer: impl WriterObserver,
        on_fatal: impl FnOnce(StorageError) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(VecDeque::new()));
        let fatal: Fatal = Arc::new(Mutex::new(Some(Box::new(on_fatal))));
        let wal = match store.take_wal() {
            Ok(wal) => wal,
            Err(e) => {
                // A second writer on one store would interleave two logs: refuse it. The
                // receiver is dropped, so every command fails with `WriterGone`.
                tracing::error!(error = %e, "cannot start a second storage writer");
                call_fatal(&fatal, e);
                return Self { tx, queued };
            }
        };
        let observer: Arc<dyn WriterObserver> = Arc::new(observer);
        let (to_db, from_log) = std::sync::mpsc::sync_channel(MAX_HANDED_ON);
        let log = LogThread {
            wal,
            rx,
            to_db,
            hooks: FaultHooks::from_env(),
            observer: observer.clone(),
            queued: queued.clone(),
            fatal: fatal.clone(),
            checkpoint: None,
            owed: false,
        };
        let db = DbThread {
            store,
            rx: from_log,
            observer,
            fatal,
            known: Known::default(),
            // Weak: the log thread ends when every handle is gone, and the database thread
            // after it.
            nudge: tx.downgrade(),
            deferred: Vec::new(),
            nudged: false,
        };
        let spawned = std::thread::Builder::new()
            .name("storage-db".into())
            .spawn(move || db.run())
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("storage-log".into())
                    .spawn(move || log.run())
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the storage writer threads");
        }
        Self { tx, queued }
    }

    /// How long the oldest queued command has waited to become durable (zero when none
    /// waits).
    pub fn stalled_for(&self) -> Duration {
        self.queued
            .lock()
            .ok()
            .and_then(|q| q.front().map(Instant::elapsed))
            .unwrap_or_default()
    }

    /// Queues a command and waits until it is done (see [`Command`] for what "done" means
    /// for each kind).
    pub async fn run(&self, cmd: Command) -> Result<Outcome, StorageError> {
        self.submit(cmd)?.wait().await
    }

    /// Waits until every command queued before this call is visible to readers of the
    /// database (log appends are answered once durable, which can be before that).
    pub async fn settle(&self) -> Result<(), StorageError> {
        self.run(Command::Settle).await.map(|_| ())
    }

    /// Queues a command now (commands run in queue order) and returns a handle to await it.
    pub fn submit(&self, cmd: Command) -> Result<Pending, StorageError> {
        let (done, wait) = oneshot::channel();
        // Queue order and the order of `queued` must agree: both change under this lock.
        let mut queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        self.tx
            .send(ToLog::Command(cmd, done))
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

/// Most batches (log records) one database transaction covers.
const MAX_STAGES: usize = 64;
/// Most batches the log thread may have handed on and the database thread not yet applied;
/// beyond it the log thread waits (memory stays bounded when the database falls behind).
const MAX_HANDED_ON: usize = 256;

/// A command and its caller, who is `None` once told (a log command, when its record is
/// durable).
type Queued = (Command, Option<Reply>);

/// A batch the log thread hands to the database thread.
struct Stage {
    batch: Vec<Queued>,
    /// Set when the database must be committed durably after this batch, with everything
    /// before it: a checkpoint.
    checkpoint: Option<Checkpoint>,
}

/// A checkpoint request: the log generation the database records, and where to say whether
/// the durable commit succeeded.
struct Checkpoint {
    generation: u64,
    done: std::sync::mpsc::SyncSender<bool>,
}

/// Fails every caller of a batch not told yet: nobody is woken with success when its command
/// may not be on disk.
fn fail_batch(batch: Vec<Queued>) {
    for (_, reply) in batch {
        if let Some(reply) = reply {
            let _ = reply.send(Err(StorageError::WriterGone));
        }
    }
}

/// The log thread's state: makes batches durable in the write-ahead log.
struct LogThread {
    wal: Wal,
    rx: mpsc::UnboundedReceiver<ToLog>,
    to_db: std::sync::mpsc::SyncSender<Stage>,
    hooks: FaultHooks,
    observer: Arc<dyn WriterObserver>,
    queued: Arc<Mutex<VecDeque<Instant>>>,
    fatal: Fatal,
    /// The checkpoint under way: it answers once the database holds the generation before.
    checkpoint: Option<std::sync::mpsc::Receiver<bool>>,
    /// A batch ending a checkpoint was handed on without one (another was under way): the
    /// next checkpoint starts as soon as that one is done ([`LogThread::start_owed_checkpoint`]).
    owed: bool,
}

impl LogThread {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                if let ToLog::Command(c, r) = item {
                    batch.push((c, Some(r)));
                }
                if batch.len() < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            // The node stops on an error (`on_fatal`, called by whichever thread failed);
            // dropping the receiver fails every later command with `WriterGone`.
            if self.start_owed_checkpoint().is_err() {
                return;
            }
            if !batch.is_empty() && self.step(batch).is_err() {
                return;
            }
        }
    }

    /// Commands of a batch are done being queued: they are durable, or the database thread
    /// has them.
    fn dequeue(&self, n: usize) {
        if let Ok(mut q) = self.queued.lock() {
            let n = n.min(q.len());
            q.drain(..n);
        }
    }

    fn hand_on(&self, stage: Stage) -> Result<(), ()> {
        self.to_db.send(stage).map_err(|e| fail_batch(e.0.batch))
    }

    /// Whether a checkpoint is under way, without waiting for it.
    fn checkpoint_under_way(&mut self) -> Result<bool, ()> {
        let Some(done) = &self.checkpoint else {
            return Ok(false);
        };
        match done.try_recv() {
            Ok(true) => {
                self.checkpoint = None;
                Ok(false)
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => Ok(true),
            Ok(false) | Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(()),
        }
    }

    /// Starts the checkpoint that batches handed on while another was under way wait for,
    /// once that one is done; never waits for it. The database thread nudges this thread when
    /// it holds such batches and the checkpoint before is done, so this runs then even when
    /// nothing else is queued.
    fn start_owed_checkpoint(&mut self) -> Result<(), ()> {
        if !self.owed || self.checkpoint_under_way()? {
            return Ok(());
        }
        let answer = self.start_checkpoint(Vec::new())?;
        self.checkpoint = Some(answer);
        Ok(())
    }

    /// Waits for the checkpoint under way, if any.
    fn finish_checkpoint(&mut self) -> Result<(), ()> {
        match self.checkpoint.take().map(|done| done.recv()) {
            None | Some(Ok(true)) => Ok(()),
            Some(_) => Err(()),
        }
    }

    /// Starts a checkpoint: the database will be committed durably once it has everything
    /// handed on so far (and `batch`, if given); from now on the log writes the next
    /// generation, in the other file. Returns where the checkpoint answers.
    fn start_checkpoint(
        &mut self,
        batch: Vec<Queued>,
    ) -> Result<std::sync::mpsc::Receiver<bool>, ()> {
        // The other file holds the generation before the one being written; it is free once
        // the previous checkpoint has put that generation in the database.
        self.finish_checkpoint()?;
        // It covers everything handed on so far, batches that owed one included.
        self.owed = false;
        let generation = self.wal.generation() + 1;
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.hand_on(Stage {
            batch,
            checkpoint: Some(Checkpoint { generation, done }),
        })?;
        self.wal.start_generation(generation);
        Ok(answer)
    }

    fn step(&mut self, mut batch: Vec<Queued>) -> Result<(), ()> {
        let durable = batch.iter().any(|(c, _)| c.durable());
        let started = Instant::now();
        if durable {
            self.hooks.stall();
            if self.hooks.fail() {
                tracing::error!("test hook: durable commit failed; the node stops");
                fail_batch(batch);
                call_fatal(
                    &self.fatal,
                    write_err(std::io::Error::other("test hook: durable commit failed")),
                );
                return Err(());
            }
        }
        let n = batch.len();
        if batch.iter().any(|(c, _)| c.quiets_log()) {
            // An unproven mark is made durable by the database itself: this batch ends a
            // checkpoint, and nothing more is written to the log
            // before that checkpoint is on disk, so nothing later can survive a crash that
            // loses it.
            let answer = self.start_checkpoint(batch)?;
            return match answer.recv() {
                Ok(true) => {
                    self.dequeue(n);
                    Ok(())
                }
                _ => Err(()),
            };
        }
        // A snapshot's end or a dropped partition is made durable by a checkpoint that ends
        // with its batch; when a checkpoint is under way, by the next one (`owed`): the log
        // does not stop to wait for the one under way.
        let ends_checkpoint = batch.iter().any(|(c, _)| c.ends_checkpoint());
        let owes = ends_checkpoint && self.checkpoint_under_way()?;
        let ends_checkpoint = ends_checkpoint && !owes;
        if self.wal.checkpoint_due() && !ends_checkpoint && !owes {
            // Everything handed on so far reaches the database durably while the log goes
            // on in the next generation: nobody waits for this checkpoint. (A batch that
            // owes one has the next start once the one under way is done.)
            let answer = self.start_checkpoint(Vec::new())?;
            self.checkpoint = Some(answer);
        }
        if let Some(record) = Wal::encode_batch(batch.iter().map(|(c, _)| c)) {
            // The durability point: the record is on disk before anyone is told.
            if let Err(e) = self.wal.append(&record) {
                tracing::error!(error = %e, "writing the write-ahead log failed; the node stops");
                fail_batch(batch);
                call_fatal(&self.fatal, e);
                return Err(());
            }
        }
        // The database commit will not be synced: it waits for the next checkpoint.
        self.wal.note_volatile_commit();
        if !ends_checkpoint {
            // (A batch ending a checkpoint is counted with its checkpoint.)
            self.observer
                .batch(n, durable, started.elapsed().as_secs_f64());
        }
        self.dequeue(n);
        // Log commands are done once durable; the others once the database has them.
        for (cmd, reply) in &mut batch {
            if wal::logged(cmd)
                && let Some(reply) = reply.take()
            {
                let _ = reply.send(Ok(Outcome::default()));
            }
        }
        if owes {
            // The database thread holds back the answers of its ends and drops until a
            // checkpoint covers them; the next one starts once the one under way is done.
            // Until they are answered their callers log nothing more of their partitions, so
            // the rule below holds for the batches logged meanwhile too.
            self.owed = true;
        }
        if ends_checkpoint {
            // The snapshot's end or the drop (answered by the database thread once the
            // checkpoint is on disk) ends a checkpoint, and the log goes on in the next
            // generation without waiting for it, as for a due checkpoint. This batch's log
            // commands are in the generation the checkpoint covers, so a crash that loses the
            // checkpoint replays them. Nothing of the partition can be logged after its end
            // or drop before that is durable ([`Command::ends_checkpoint`]), so no record
            // replayed after such a crash lands on a copy whose end or drop was lost.
            let answer = self.start_checkpoint(batch)?;
            self.checkpoint = Some(answer);
            return Ok(());
        }
        self.hand_on(Stage {
            batch,
            checkpoint: None,
        })
    }
}

/// The database thread's state: applies batches to redb and wakes the callers still waiting.
struct DbThread {
    store: Store,
    rx: std::sync::mpsc::Receiver<Stage>,
    observer: Arc<dyn WriterObserver>,
    fatal: Fatal,
    /// Metadata as the last committed transaction left it.
    known: Known,
    /// Wakes the log thread to start a checkpoint that `deferred` waits for.
    nudge: mpsc::WeakUnboundedSender<ToLog>,
    /// Callers of snapshot ends and drops applied by a commit that was not a checkpoint (one
    /// was under way when the log thread took them): answered at the next checkpoint.
    deferred: Vec<(Reply, Outcome)>,
    /// Whether the log thread was nudged for `deferred` already.
    nudged: bool,
}

impl DbThread {
    fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut stages = vec![first];
            // Take what the log thread has handed on meanwhile, up to a checkpoint (which
            // then covers all of them).
            while stages.len() < MAX_STAGES && stages.last().is_some_and(|s| s.checkpoint.is_none())
            {
                match self.rx.try_recv() {
                    Ok(s) => stages.push(s),
                    Err(_) => break,
                }
            }
            let generation = stages
                .last()
                .and_then(|s| s.checkpoint.as_ref())
                .map(|c| c.generation);
            let started = Instant::now();
            match self.commit(&stages, generation) {
                Ok(outcomes) => {
                    let seconds = started.elapsed().as_secs_f64();
                    let mut outcomes = outcomes.into_iter();
                    for stage in stages {
                        if let Some(c) = &stage.checkpoint {
                            if !stage.batch.is_empty() {
                                // A batch made durable by this commit, not by the log.
                                let durable = stage.batch.iter().any(|(c, _)| c.durable());
                                self.observer.batch(stage.batch.len(), durable, seconds);
                            }
                            self.observer.checkpoint(seconds);
                            tracing::debug!(generation = c.generation, seconds, "checkpoint");
                        }
                        let durable = stage.checkpoint.is_some();
                        for ((cmd, reply), outcome) in stage.batch.into_iter().zip(&mut outcomes) {
                            match reply {
                                // Durable only once a checkpoint commits it.
                                Some(reply) if !durable && cmd.ends_checkpoint() => {
                                    self.deferred.push((reply, outcome));
                                }
                                Some(reply) => {
                                    let _ = reply.send(Ok(outcome));
                                }
                                None => {}
                            }
                        }
                        if let Some(c) = stage.checkpoint {
                            // This commit holds everything applied before it.
                            for (reply, outcome) in self.deferred.drain(..) {
                                let _ = reply.send(Ok(outcome));
                            }
                            self.nudged = false;
                            let _ = c.done.send(true);
                        }
                    }
                    if !self.deferred.is_empty() && !self.nudged {
                        // The checkpoint under way when the log thread handed these on came
                        // before them in its queue, so it is done: the next may start.
                        if let Some(tx) = self.nudge.upgrade() {
                            let _ = tx.send(ToLog::Nudge);
                        }
                        self.nudged = true;
                    }
                }
                Err(e) => {
                    // Nobody still waiting is woken with success: callers see the writer gone,
                    // and the node stops at once (`on_fatal`), so no unpersisted position is
                    // served.
                    tracing::error!(error = %e, "storage commit failed; the node stops");
                    for stage in stages {
                        fail_batch(stage.batch);
                        if let Some(c) = stage.checkpoint {
                            let _ = c.done.send(false);
                        }
                    }
                    for (reply, _) in self.deferred.drain(..) {
                        let _ = reply.send(Err(StorageError::WriterGone));
                    }
                    call_fatal(&self.fatal, e);
                    return;
                }
            }
        }
    }

    /// Applies the stages' commands in one transaction, durable (a checkpoint recording
    /// log generation `generation`) or not. Returns one outcome per command, in order.
    fn commit(
        &mut self,
        stages: &[Stage],
        generation: Option<u64>,
    ) -> Result<Vec<Outcome>, StorageError> {
        let mut txn = self.store.db().begin_write().map_err(write_err)?;
        let mut meta = TxnMeta::after(std::mem::take(&mut self.known));
        let mut outcomes = Vec::new();
        let tail = self.store.tail();
        let values = self.store.values();
        let mem = self.store.memtable();
        for (cmd, _) in stages.iter().flat_map(|s| &s.batch) {
            outcomes.push(apply_command(&txn, cmd, &mut meta, tail, values, mem)?);
        }
        for (p, a) in &meta.applied {
            values.maybe_compact(&txn, *p, a.bytes)?;
        }
        let Finished {
            staged,
            flushed,
            known,
        } = meta.finish(&txn, mem, values, generation.is_some())?;
        let written = match generation {
            Some(g) => {
                super::faults::hold_checkpoint();
                // The log generation before `g` is reused once this commit is durable: the
                // entries it holds must be in the log tables by then.
                let written = log_chunks::lock(tail).snapshot();
                for (p, entries) in &written {
                    log_chunks::write_out(&txn, *p, entries)?;
                }
                put_meta(&txn, wal::GENERATION_KEY, &g.to_le_bytes())?;
                txn.set_durability(Durability::Immediate)
                    .map_err(write_err)?;
                // No durable row may point past what is on disk.
                values.sync()?;
                written
            }
            None => {
                txn.set_durability(Durability::None).map_err(write_err)?;
                values.write_out_all()?;
                Vec::new()
            }
        };
        // Every value the rows point to is written out: readers may see them now.
        memtable::lock(mem).publish(staged);
        txn.commit().map_err(write_err)?;
        memtable::lock(mem).committed(generation.is_some(), &flushed);
        self.known = known;
        if generation.is_some() {
            values.checkpointed();
        }
        // Only now: readers copy the tail before they read the database.
        log_chunks::lock(tail).written(&written);
        Ok(outcomes)
    }
}

/// Per-partition metadata that many commands of one transaction update, kept here and
/// written once when the transaction's commands are all applied ([`TxnMeta::flush`]).
#[derive(Default)]
pub(super) struct TxnMeta {
    /// Encoded epoch history to store, per partition.
    history: HashMap<PartitionId, Vec<u8>>,
    /// Applied point and counters, per partition.
    applied: HashMap<PartitionId, Applied>,
    /// What earlier transactions left, so this one need not read it back.
    known: Known,
    /// The rows applied by this transaction ([`memtable`]).
    staged: Staged,
}

/// What [`TxnMeta::finish`] leaves for the commit.
pub(super) struct Finished {
    /// The transaction's changes to the memtable, published before the commit.
    staged: Staged,
    /// Partitions whose rows the transaction wrote into the data tables: they leave the
    /// memtable after the commit ([`Memtable::committed`]).
    flushed: Vec<PartitionId>,
    /// What the next transaction may take as known once this one commits.
    known: Known,
}

/// Metadata the database thread keeps across its transactions, so that a transaction does
/// not read back or write again what the ones before it wrote: every partition's applied
/// point and counters, its epoch history as stored, and which partitions' log tables exist.
/// Only that thread writes the database while it runs, so what it wrote last is what is there
/// (a failed transaction stops the node).
#[derive(Default)]
pub(super) struct Known {
    applied: HashMap<PartitionId, Applied>,
    /// The encoded epoch history stored last: every append carries its partition's history,
    /// which changes only when an epoch starts, so most transactions need not store it again.
    history: HashMap<PartitionId, Vec<u8>>,
    logs: std::collections::HashSet<PartitionId>,
    /// Partitions whose applied point and counters changed since they were last written to
    /// the meta table: they are written with the partition's rows, at a checkpoint or when
    /// the rows are written into the data table before it ([`memtable`]), never ahead of
    /// them. A commit that is not durable may still be made durable (redb does so when the
    /// database is closed), so every commit must leave rows and applied points that agree.
    unwritten: std::collections::HashSet<PartitionId>,
}

#[derive(Clone, Copy)]
struct Applied {
    seq: u64,
    keys: u64,
    bytes: u64,
}

impl TxnMeta {
    /// Starts a transaction's metadata from what the transactions before it left.
    fn after(known: Known) -> Self {
        TxnMeta {
            known,
            ..TxnMeta::default()
        }
    }

    /// Forgets what is pending or known for a partition whose metadata is being removed.
    fn forget(&mut self, p: PartitionId) {
        self.history.remove(&p);
        self.applied.remove(&p);
        self.known.applied.remove(&p);
        self.known.history.remove(&p);
        self.known.logs.remove(&p);
        self.known.unwritten.remove(&p);
    }

    /// Creates partition `p`'s log table unless it exists (it marks the partition as held, so
    /// it is found at start-up).
    fn ensure_log(&mut self, txn: &WriteTransaction, p: PartitionId) -> Result<(), StorageError> {
        if !self.known.logs.contains(&p) {
            txn.open_table(log_table(p).as_def()).map_err(write_err)?;
            self.known.logs.insert(p);
        }
        Ok(())
    }

    /// The applied point and counters as the transaction stands.
    fn applied(&mut self, txn: &WriteTransaction, p: PartitionId) -> Result<Applied, StorageError> {
        if let Some(a) = self.applied.get(&p).or_else(|| self.known.applied.get(&p)) {
            return Ok(*a);
        }
        let (keys, bytes) =
            get_meta(txn, &meta_key(p, "stats"))?.map_or((0, 0), |b| tables::stats_from(&b));
        let seq = get_meta(txn, &meta_key(p, "applied"))?.map_or(0, |b| tables::u64_from(&b));
        Ok(Applied { seq, keys, bytes })
    }

    /// Writes every row the transaction applied into the data tables, and its metadata (for
    /// a transaction without a memtable: the write-ahead log's replay at start-up).
    pub(super) fn write_all(
        self,
        txn: &WriteTransaction,
        values: &Values,
    ) -> Result<Known, StorageError> {
        flush_rows(txn, &self.staged, &Mutex::default(), true, values)?;
        self.flush(txn, true, &[])
    }

    /// Ends the database thread's transaction before its commit: writes the rows a
    /// checkpoint makes durable, or a value-file compaction must find in the data table
    /// ([`memtable`]), takes the compactions' next steps, and writes the metadata.
    pub(super) fn finish(
        mut self,
        txn: &WriteTransaction,
        mem: &Mutex<Memtable>,
        values: &Values,
        checkpoint: bool,
    ) -> Result<Finished, StorageError> {
        let mut staged = std::mem::take(&mut self.staged);
        let flushed = flush_rows(txn, &staged, mem, checkpoint, values)?;
        values.compact_steps(txn)?;
        for (p, a) in &self.applied {
            staged.applied.insert(*p, (a.seq, a.keys, a.bytes));
        }
        let known = self.flush(txn, checkpoint, &flushed)?;
        Ok(Finished {
            staged,
            flushed,
            known,
        })
    }

    /// Writes what is pending: epoch histories, and the applied points and counters of the
    /// partitions whose rows are in the data tables once this transaction commits (every
    /// partition's at a checkpoint, else those in `flushed`). Returns what the next
    /// transaction may take as known once this one commits.
    fn flush(
        mut self,
        txn: &WriteTransaction,
        checkpoint: bool,
        flushed: &[PartitionId],
    ) -> Result<Known, StorageError> {
        let mut meta = txn.open_table(META).map_err(write_err)?;
        for (p, history) in self.history {
            if self.known.history.get(&p) != Some(&history) {
                meta.insert(meta_key(p, "history").as_str(), history.as_slice())
                    .map_err(write_err)?;
                self.known.history.insert(p, history);
            }
        }
        for (p, a) in self.applied {
            self.known.applied.insert(p, a);
            self.known.unwritten.insert(p);
        }
        let due: Vec<PartitionId> = if checkpoint {
            self.known.unwritten.drain().collect()
        } else {
            flushed
                .iter()
                .copied()
                .filter(|p| self.known.unwritten.remove(p))
                .collect()
        };
        for p in due {
            let Some(a) = self.known.applied.get(&p) else {
                continue;
            };
            meta.insert(meta_key(p, "applied").as_str(), &a.seq.to_le_bytes()[..])
                .map_err(write_err)?;
            meta.insert(
                meta_key(p, "stats").as_str(),
                &tables::pair_to(a.keys, a.bytes)[..],
            )
            .map_err(write_err)?;
        }
        Ok(self.known)
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
    pending: &mut TxnMeta,
    tail: &Mutex<LogTail>,
    values: &Values,
    mem: &Mutex<Memtable>,
) -> Result<Outcome, StorageError> {
    match cmd {
        Command::Append {
            partition,
            entries,
            history,
        } => {
            // The entries reach the log table at the next checkpoint ([`log_chunks`]); the
            // table is created now so the partition is found at start-up.
            pending.ensure_log(txn, *partition)?;
            log_chunks::lock(tail).append(*partition, entries);
            pending
                .history
                .insert(*partition, codec::encode_history(history));
        }
        Command::Truncate {
            partition,
            after_seq,
            history,
        } => {
            log_chunks::lock(tail).truncate_after(*partition, *after_seq);
            log_chunks::truncate_after(txn, *partition, *after_seq)?;
            pending
                .history
                .insert(*partition, codec::encode_history(history));
        }
        Command::SetHistory { partition, history } => {
            // Make sure the log table exists so the partition is found again at start-up.
            pending.ensure_log(txn, *partition)?;
            pending
                .history
                .insert(*partition, codec::encode_history(history));
        }
        Command::Apply { partition, entries } => {
            return apply_entries(txn, *partition, entries, pending, values, mem);
        }
        Command::Compact { partition, base } => {
            // The log's new start may pass the applied seq stored last (rows are written
            // behind): they go to the tables with it, or a commit made durable at close
            // would lack both the rows and the entries they came from.
            pending.staged.flush.insert(*partition);
            log_chunks::lock(tail).compact(*partition, base.last_seq);
            log_chunks::compact(txn, *partition, base.last_seq)?;
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
            pending.ensure_log(txn, *partition)?;
            put_meta(
                txn,
                &meta_key(*partition, "unproven"),
                &[u8::from(*unproven)],
            )?;
        }
        Command::PutMap { json } => put_meta(txn, "map", json)?,
        Command::DropPartition { partition } => {
            pending.forget(*partition);
            pending.staged.clear(*partition);
            log_chunks::lock(tail).forget(*partition);
            drop_partition(txn, *partition, values)?;
        }
        Command::SnapshotBegin { partition } => {
            // A snapshot does not prove a copy in sync: keep the mark across the install.
            let unproven = get_meta(txn, &meta_key(*partition, "unproven"))?;
            pending.forget(*partition);
            pending.staged.clear(*partition);
            log_chunks::lock(tail).forget(*partition);
            drop_partition(txn, *partition, values)?;
            if let Some(mark) = unproven {
                put_meta(txn, &meta_key(*partition, "unproven"), &mark)?;
            }
            pending.ensure_log(txn, *partition)?;
            put_meta(txn, &meta_key(*partition, "snapshot"), &[1])?;
            // The chunks' values are written by the tasks receiving them.
            values.open_current(txn, *partition)?;
        }
        Command::Settle => {}
        Command::SnapshotChunk {
            partition,
            items,
            at,
        } => {
            let name = data_table(*partition);
            let mut data = txn.open_table(name.as_def()).map_err(write_err)?;
            let current = values.current(*partition);
            for (i, (k, v)) in items.iter().enumerate() {
                let (version, value) = codec::decode_value(v)?;
                let at = at.get(i).copied().flatten();
                let row = values.put_at(txn, *partition, version, value, at, current)?;
                data.insert(k.as_slice(), row.as_slice())
                    .map_err(write_err)?;
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
            // The copy's rows are in the data table already: its applied point goes with
            // them, in this transaction.
            pending.staged.flush.insert(p);
            put_meta(txn, &meta_key(p, "base"), &tables::position_to(*base))?;
            pending.history.insert(p, codec::encode_history(history));
            pending.applied.insert(
                p,
                Applied {
                    seq: base.last_seq,
                    keys: *keys,
                    bytes: *bytes,
                },
            );
            let mut meta = txn.open_table(META).map_err(write_err)?;
            meta.remove(meta_key(p, "snapshot").as_str())
                .map_err(write_err)?;
        }
    }
    Ok(Outcome::default())
}

fn drop_partition(
    txn: &WriteTransaction,
    p: PartitionId,
    values: &Values,
) -> Result<(), StorageError> {
    values.drop_partition(txn, p)?;
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
    pending: &mut TxnMeta,
    values: &Values,
    mem: &Mutex<Memtable>,
) -> Result<Outcome, StorageError> {
    let Applied {
        seq: mut applied,
        mut keys,
        mut bytes,
    } = pending.applied(txn, p)?;
    {
        let name = data_table(p);
        // Only read here: the rows go to the memtable, and into the table at a checkpoint.
        let data = txn.open_table(name.as_def()).map_err(write_err)?;
        for e in entries {
            if e.seq <= applied {
                continue; // already applied (a retried batch)
            }
            let key = match &e.op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            // The key's length and its value's, if it is stored before this entry. The
            // memtable is locked for its own lookup only, not while the data table is read
            // (which may wait for the disk): the primary's version reads wait on that lock.
            let unflushed = {
                let mem = memtable::lock(mem);
                pending
                    .staged
                    .lookup(&mem, p, key)
                    .map(|row| row.as_deref().map(stored_len))
            };
            let old = match unflushed {
                Some(len) => len,
                None => data
                    .get(key.as_slice())
                    .map_err(write_err)?
                    .map(|v| stored_len(v.value())),
            }
            .map(|vlen| (key.len(), vlen));
            let row = match &e.op {
                Op::Put { key, value } => {
                    let stored = values.put(txn, p, e.seq, value)?;
                    keys += 1;
                    bytes += (key.len() + value.len()) as u64;
                    Some(stored)
                }
                Op::Delete { .. } => None,
            };
            pending
                .staged
                .rows
                .entry(p)
                .or_default()
                .insert(key.clone(), row);
            if let Some((klen, vlen)) = old {
                keys = keys.saturating_sub(1);
                bytes = bytes.saturating_sub((klen + vlen) as u64);
            }
            applied = e.seq;
        }
    }
    pending.applied.insert(
        p,
        Applied {
            seq: applied,
            keys,
            bytes,
        },
    );
    Ok(Outcome { keys, bytes })
}

/// Writes unflushed rows into the data tables: every partition's at a checkpoint, else those
/// of partitions whose value file is being compacted, whose log is compacted or whose snapshot
/// install ends. Returns the partitions written, whose
/// rows leave the memtable once the transaction commits ([`memtable`]).
fn flush_rows(
    txn: &WriteTransaction,
    staged: &Staged,
    mem: &Mutex<Memtable>,
    checkpoint: bool,
    values: &Values,
) -> Result<Vec<PartitionId>, StorageError> {
    let rows: Vec<(
        PartitionId,
        std::collections::BTreeMap<Vec<u8>, memtable::Row>,
    )> = {
        let m = memtable::lock(mem);
        let partitions: std::collections::BTreeSet<PartitionId> = if checkpoint {
            m.with_rows()
                .chain(staged.rows.keys().copied())
                .chain(staged.flush.iter().copied())
                .collect()
        } else {
            values
                .compacting()
                .into_iter()
                .filter(|p| {
                    staged.rows.contains_key(p)
                        || (!staged.cleared.contains(p) && m.part(*p).is_some())
                })
                .chain(staged.flush.iter().copied())
                .collect()
        };
        partitions
            .into_iter()
            .map(|p| (p, staged.to_flush(&m, p)))
            .collect()
    };
    let mut written = Vec::with_capacity(rows.len());
    for (p, rows) in rows {
        if !rows.is_empty() {
            let mut data = txn.open_table(data_table(p).as_def()).map_err(write_err)?;
            for (key, row) in &rows {
                match row {
                    Some(row) => {
                        data.insert(key.as_slice(), row.as_slice())
                            .map_err(write_err)?;
                    }
                    None => {
                        data.remove(key.as_slice()).map_err(write_err)?;
                    }
                }
            }
        }
        written.push(p);
    }
    Ok(written)
}

/// Length of the value a stored row stands for.
fn stored_len(row: &[u8]) -> usize {
    values::decode_row(row).map_or(0, |r| r.value_len())
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed step should name itself in the test output
pub(super) mod tests {
    use super::*;
    use crate::storage::PartitionDisk;

    /// A partition's state, and the values of a few keys in it.
    type Seen = (PartitionId, PartitionDisk, Vec<Option<Vec<u8>>>);
    use codec::Op;

    fn entry(epoch: u64, seq: u64, key: &str, value: &str) -> Arc<LogEntry> {
        Arc::new(LogEntry {
            epoch,
            seq,
            op: Op::Put {
                key: key.into(),
                value: value.into(),
            },
        })
    }

    fn history(starts: &[(u64, u64)]) -> EpochHistory {
        EpochHistory::from_starts(starts.to_vec())
    }

    /// Commands on two partitions that update the same metadata many times, drop a partition
    /// (twice) and install a snapshot in between.
    fn script() -> Vec<Command> {
        let e = |seq, key: &str| entry(1, seq, key, &format!("v{seq}"));
        vec![
            Command::Append {
                partition: 1,
                entries: vec![e(1, "a"), e(2, "b")],
                history: history(&[(1, 1)]),
            },
            Command::Apply {
                partition: 1,
                entries: vec![e(1, "a")],
            },
            Command::Append {
                partition: 1,
                entries: vec![e(3, "a")],
                history: history(&[(1, 1)]),
            },
            Command::Truncate {
                partition: 1,
                after_seq: 2,
                history: history(&[(1, 1), (2, 3)]),
            },
            Command::Append {
                partition: 2,
                entries: vec![e(1, "x")],
                history: history(&[(1, 1)]),
            },
            Command::Apply {
                partition: 2,
                entries: vec![e(1, "x")],
            },
            Command::DropPartition { partition: 2 },
            Command::SetHistory {
                partition: 2,
                history: history(&[(4, 1)]),
            },
            Command::Apply {
                partition: 1,
                entries: vec![e(2, "b")],
            },
            Command::SnapshotBegin { partition: 3 },
            Command::SnapshotChunk {
                partition: 3,
                items: vec![(b"s".to_vec(), codec::encode_value(9, b"sv"))],
                at: Vec::new(),
            },
            Command::SnapshotEnd {
                partition: 3,
                base: LogPosition {
                    last_epoch: 2,
                    last_seq: 9,
                },
                history: history(&[(2, 1)]),
                keys: 1,
                bytes: 3,
            },
            Command::Apply {
                partition: 3,
                entries: vec![entry(2, 9, "s", "old"), entry(2, 10, "t", "tv")],
            },
            // The same history as before the drop: stored again.
            Command::DropPartition { partition: 2 },
            Command::SetHistory {
                partition: 2,
                history: history(&[(4, 1)]),
            },
        ]
    }

    fn state(store: &Store) -> Vec<Seen> {
        (1..=3)
            .map(|p| {
                let disk = store.load_partition(p).expect("load");
                let values = ["a", "b", "x", "s", "t"]
                    .iter()
                    .map(|k| store.get(p, k.as_bytes()).expect("get").map(|v| v.value))
                    .collect();
                (p, disk, values)
            })
            .collect()
    }

    /// Writing a partition's history, applied point and counters once per transaction leaves
    /// the database exactly as writing them after every command would, and so does carrying
    /// them from one transaction to the next instead of reading them back.
    #[test]
    fn metadata_written_once_per_transaction_equals_writing_it_per_command() {
        let one_dir = tempfile::tempdir().expect("temp dir");
        let one = Store::open(one_dir.path(), "n").expect("open");
        let txn = one.db().begin_write().expect("txn");
        let mut pending = TxnMeta::default();
        for cmd in script() {
            apply_command(
                &txn,
                &cmd,
                &mut pending,
                one.tail(),
                one.values(),
                one.memtable(),
            )
            .expect("apply");
        }
        pending.write_all(&txn, one.values()).expect("flush");
        txn.commit().expect("commit");

        let each_dir = tempfile::tempdir().expect("temp dir");
        let each = Store::open(each_dir.path(), "n").expect("open");
        for cmd in script() {
            let txn = each.db().begin_write().expect("txn");
            let mut pending = TxnMeta::default();
            apply_command(
                &txn,
                &cmd,
                &mut pending,
                each.tail(),
                each.values(),
                each.memtable(),
            )
            .expect("apply");
            pending.write_all(&txn, each.values()).expect("flush");
            txn.commit().expect("commit");
        }
        // As the database thread runs: a transaction per command, each taking what the one
        // before it left as known instead of reading it back, its rows kept in the memtable
        // until a checkpoint writes them into the data tables.
        let carried_dir = tempfile::tempdir().expect("temp dir");
        let carried = Store::open(carried_dir.path(), "n").expect("open");
        let mem = carried.memtable();
        let mut known = Known::default();
        for cmd in script() {
            let txn = carried.db().begin_write().expect("txn");
            let mut pending = TxnMeta::after(known);
            apply_command(
                &txn,
                &cmd,
                &mut pending,
                carried.tail(),
                carried.values(),
                mem,
            )
            .expect("apply");
            let done = pending
                .finish(&txn, mem, carried.values(), false)
                .expect("finish");
            known = done.known;
            memtable::lock(mem).publish(done.staged);
            txn.commit().expect("commit");
            memtable::lock(mem).committed(false, &done.flushed);
        }
        let got = state(&one);
        assert_eq!(got, state(&each));
        assert_eq!(got, state(&carried), "read through the memtable");
        // A checkpoint writes the rows into the data tables and empties the memtable.
        let txn = carried.db().begin_write().expect("txn");
        let done = TxnMeta::after(known)
            .finish(&txn, mem, carried.values(), true)
            .expect("finish");
        txn.commit().expect("commit");
        memtable::lock(mem).committed(true, &done.flushed);
        assert_eq!(got, state(&carried), "read from the data tables");
        assert_eq!(
            carried.partitions().expect("partitions"),
            each.partitions().expect("partitions"),
            "the same partitions are found at start-up"
        );
        // And the script did what it says.
        assert_eq!(got[0].1.history, history(&[(1, 1), (2, 3)]));
        assert_eq!(got[0].1.applied_seq, 2);
        assert_eq!(got[1].1.history, history(&[(4, 1)]));
        assert_eq!(got[1].1.applied_seq, 0);
        assert_eq!(got[1].2[2], None, "the dropped partition's data is gone");
        assert_eq!(got[2].1.applied_seq, 10);
        assert_eq!((got[2].1.keys, got[2].1.bytes), (2, 6));
    }

    /// A store in `dir` and its writer, which reports nothing and panics on a failure.
    fn start_writer(dir: &std::path::Path) -> (Store, WriterHandle) {
        struct Quiet;
        impl WriterObserver for Quiet {
            fn batch(&self, _: usize, _: bool, _: f64) {}
        }
        let store = Store::open(dir, "n").expect("open");
        let writer = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        (store, writer)
    }

    /// Opens the store in `dir` again once the writer's threads, whose handles are gone, have
    /// closed it.
    pub(in crate::storage) async fn reopen(dir: &std::path::Path) -> Store {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(dir, "n") {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("reopen: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Rows kept in memory never fall behind the applied point a commit stores: redb makes
    /// the last commit durable when the database is closed, a checkpoint or not, so a node
    /// stopped cleanly must find every row its applied point covers (it applies only the
    /// entries after it again).
    #[tokio::test]
    async fn a_closed_database_holds_every_row_its_applied_point_covers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, writer) = start_writer(dir.path());
        let value = |i: u64| "v".repeat(100 + i as usize);
        let entries: Vec<_> = (1..=20u64)
            .map(|i| entry(1, i, &format!("k{i}"), &value(i)))
            .collect();
        writer
            .run(Command::Append {
                partition: 3,
                entries: entries.clone(),
                history: history(&[(1, 1)]),
            })
            .await
            .expect("append");
        for chunk in entries.chunks(5) {
            writer
                .run(Command::Apply {
                    partition: 3,
                    entries: chunk.to_vec(),
                })
                .await
                .expect("apply");
        }
        let got = store.get(3, b"k20").expect("get").map(|v| v.value);
        assert_eq!(
            got,
            Some(value(20).into_bytes()),
            "readers see applied rows"
        );
        assert_eq!(store.load_partition(3).expect("load").applied_seq, 20);
        // The log compacted behind the applied point.
        writer
            .run(Command::Compact {
                partition: 3,
                base: LogPosition {
                    last_epoch: 1,
                    last_seq: 10,
                },
            })
            .await
            .expect("compact");
        drop(writer);
        drop(store);
        let store = reopen(dir.path()).await;
        let disk = store.load_partition(3).expect("load");
        assert!(
            disk.base.last_seq <= disk.applied_seq,
            "the log starts after {} but only {} is applied: entries lost",
            disk.base.last_seq,
            disk.applied_seq
        );
        for i in 1..=disk.applied_seq {
            let got = store.get(3, format!("k{i}").as_bytes()).expect("get");
            assert_eq!(
                got.map(|v| v.value),
                Some(value(i).into_bytes()),
                "k{i} is covered by the applied point {} but missing",
                disk.applied_seq
            );
        }
        assert_eq!(
            disk.keys, disk.applied_seq,
            "the counters agree with the rows"
        );
    }

    /// Commands queued from many tasks, with checkpoints among them, are all committed in
    /// queue order and survive a reopen.
    #[tokio::test]
    async fn commands_with_checkpoints_among_them_all_reach_the_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, writer) = start_writer(dir.path());
        let mut pending = Vec::new();
        for i in 1..=300u64 {
            // Three partitions' logs, interleaved: 1, 2, … 100 each.
            let (p, seq) = ((i % 3) as PartitionId, i.div_ceil(3));
            let cmd = Command::Append {
                partition: p,
                entries: vec![entry(1, seq, &format!("k{i}"), "v")],
                history: history(&[(1, 1)]),
            };
            pending.push(writer.submit(cmd).expect("submit"));
            if i % 50 == 0 {
                // Not logged: forces a checkpoint, which writes the log tails out.
                let cmd = Command::SetUnproven {
                    partition: p,
                    unproven: false,
                };
                pending.push(writer.submit(cmd).expect("submit"));
            }
            if i % 60 == 0 {
                // A snapshot install: its start is not durable, its end ends a checkpoint
                // while the log goes on (appends of the other partitions keep coming).
                let p = 10 + (i / 60) as PartitionId;
                let value = "x".repeat(200 + i as usize);
                let items = vec![
                    (b"s1".to_vec(), codec::encode_value(7, value.as_bytes())),
                    (b"s2".to_vec(), codec::encode_value(6, b"small")),
                ];
                let begin = writer
                    .submit(Command::SnapshotBegin { partition: p })
                    .expect("submit");
                // Every other install writes its values from here, as a follower does; the
                // others leave them to the database thread.
                let at = if i % 120 == 0 {
                    begin.wait().await.expect("begun");
                    let at = store.write_snapshot_values(p, &items).expect("values");
                    assert_eq!(at.len(), 2);
                    assert!(at[0].is_some() && at[1].is_none(), "{at:?}");
                    at
                } else {
                    pending.push(begin);
                    Vec::new()
                };
                for cmd in [
                    Command::SnapshotChunk {
                        partition: p,
                        items,
                        at,
                    },
                    Command::SnapshotEnd {
                        partition: p,
                        base: LogPosition {
                            last_epoch: 1,
                            last_seq: 7,
                        },
                        history: history(&[(1, 1)]),
                        keys: 2,
                        bytes: 4 + value.len() as u64 + 5,
                    },
                ] {
                    pending.push(writer.submit(cmd).expect("submit"));
                }
            }
            if i % 70 == 0 {
                // Logged: no checkpoint.
                let map = format!("{{\"n\":{i}}}").into_bytes();
                pending.push(
                    writer
                        .submit(Command::PutMap { json: map })
                        .expect("submit"),
                );
            }
        }
        for p in pending {
            p.wait().await.expect("committed");
        }
        writer.settle().await.expect("settled");
        assert_eq!(writer.stalled_for(), Duration::ZERO);
        for p in 0..3 {
            assert_eq!(
                store.read_log(p, 0, 1000, usize::MAX).expect("log").len(),
                100
            );
        }
        drop((writer, store));
        // The writer's threads close the database once they see the handle gone.
        let store = reopen(dir.path()).await;
        for p in 0..3 {
            assert_eq!(store.load_partition(p).expect("load").last.last_seq, 100);
            assert_eq!(
                store.read_log(p, 0, 1000, usize::MAX).expect("log").len(),
                100
            );
        }
        for i in 1..=5u64 {
            let p = 10 + i as PartitionId;
            let disk = store.load_partition(p).expect("load");
            assert_eq!((disk.base.last_seq, disk.applied_seq, disk.keys), (7, 7, 2));
            let s1 = store.get(p, b"s1").expect("get").expect("snapshot key s1");
            assert_eq!((s1.version, s1.value.len()), (7, 200 + 60 * i as usize));
            let s2 = store.get(p, b"s2").expect("get").expect("snapshot key s2");
            assert_eq!(s2.value, b"small");
            assert!(
                store
                    .partitions()
                    .expect("partitions")
                    .contains(&(p, false)),
                "partition {p} is no longer marked as being installed"
            );
        }
    }

    /// Drops one after the other, each in its own batch while the checkpoint of the one
    /// before is likely still under way: every drop is answered (those that came during a
    /// checkpoint at the next one, which starts without anything else queued), the appends
    /// between them too, and after a reopen the dropped partitions are gone and the others
    /// whole.
    #[tokio::test]
    async fn drops_in_a_burst_are_all_answered_and_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, writer) = start_writer(dir.path());
        let append = |p: PartitionId, seq: u64| Command::Append {
            partition: p,
            entries: vec![entry(1, seq, &format!("k{p}-{seq}"), "v")],
            history: history(&[(1, 1)]),
        };
        for p in 0..20 {
            writer.run(append(p, 1)).await.expect("appended");
        }
        let mut drops = Vec::new();
        for p in 0..10 {
            drops.push(
                writer
                    .submit(Command::DropPartition { partition: p })
                    .expect("submit"),
            );
            // Logged after the drop, in a later batch: the log goes on.
            writer.run(append(10 + p, 2)).await.expect("appended");
        }
        for d in drops {
            tokio::time::timeout(Duration::from_secs(10), d.wait())
                .await
                .expect("a drop was never answered")
                .expect("dropped");
        }
        drop((writer, store));
        let store = reopen(dir.path()).await;
        let held: Vec<PartitionId> = store
            .partitions()
            .expect("partitions")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(held, (10..20).collect::<Vec<_>>());
        for p in 10..20 {
            assert_eq!(store.load_partition(p).expect("load").last.last_seq, 2);
        }
    }
}
