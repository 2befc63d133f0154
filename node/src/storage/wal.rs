//! The node's write-ahead log: the durability point of log appends.
//!
//! Every partition's log appends, truncations and epoch histories, and the installed partition
//! map (the commands that must be durable before a node acknowledges them) are written here
//! as one checksummed record per writer batch, followed by one `fdatasync`. The database
//! (redb) receives the same batch afterwards, in a transaction committed *without* fsync.
//! Every so often the writer commits the database durably instead — a **checkpoint** — and
//! the log goes on with a new *generation* in the other of its two files (`node.wal` for
//! even generations, `node.wal.1` for odd ones), overwriting it from its start: the
//! generation it held is in the database once the checkpoint before completed, which the
//! writer waits for first.
//!
//! Record layout (little-endian):
//!
//! | field | size | meaning |
//! |---|---|---|
//! | `len` | 4 | length of `payload` |
//! | `sum` | 8 | xxh3-64 of `generation ‖ payload` |
//! | `generation` | 8 | generation of the log the record belongs to |
//! | `payload` | `len` | the batch's logged commands |
//!
//! **Recovery** ([`recover`]): after a crash the database is at its last completed
//! checkpoint (redb drops non-durable commits), which names generation `g` in the meta table
//! under `wal_generation`. The records of `g`, then those of `g + 1` (written while the
//! checkpoint to `g + 1` was under way), are read from the start of their files until the
//! first record that is torn, fails its checksum or carries another generation, and are
//! re-applied in order. Re-applying is safe even if some of them already reached the database:
//! every logged command is a put or a delete of whole rows, so a sequence of them ends in the
//! same state from any earlier state of that sequence. The recovery then checkpoints with
//! generation `g + 2`, so old records never replay twice and a later batch overwriting the
//! start of a file cannot be confused with what follows it.
//!
//! The file is not preallocated: on this project's reference machine an `fdatasync` after
//! overwriting zero-filled blocks measured no faster than one after an append that grows the
//! file, while zero-filling cost every node start tens of megabytes of writes. Each generation
//! overwrites its file from the start, so a file stops growing at the largest generation.

use super::codec::{self, CodecError, Reader};
use super::tables::META;
use super::writer::Command;
use super::{StorageError, write_err};
use crate::map::PartitionId;
use redb::{Database, Durability, ReadableDatabase};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Names of the two log files in the data directory: even generations go to the first, odd
/// ones to the second.
pub const FILE_NAMES: [&str; 2] = ["node.wal", "node.wal.1"];
/// Meta-table key holding the generation whose records are not yet in the database.
pub const GENERATION_KEY: &str = "wal_generation";
/// Checkpoint once this many bytes of records have been written since the last one.
pub const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// Checkpoint once the oldest change not yet in a durable database commit is this old, by
/// default (`--checkpoint-interval-ms`).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Each generation's checkpoint is due after a share of the interval drawn at random from
/// this range. Nodes that start together and take the same writes (the replicas of one
/// partition) would otherwise checkpoint in step, and on a shared machine the work of their
/// checkpoints would add up: every write's round trip slows down for as long as they run.
/// Drawn anew for every generation, the nodes drift apart within seconds. The upper end is
/// 1: the interval stays the most a change waits.
pub const CHECKPOINT_SPREAD: (f64, f64) = (0.75, 1.0);
/// The shortest and longest checkpoint intervals a node accepts.
pub const CHECKPOINT_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_secs(60));
/// Largest record accepted when reading (a batch is far smaller).
const MAX_RECORD: usize = 1 << 30;
const HEADER: usize = 4 + 8 + 8;

const TAG_APPEND: u8 = 1;
const TAG_TRUNCATE: u8 = 2;
const TAG_SET_HISTORY: u8 = 3;
const TAG_PUT_MAP: u8 = 4;

/// Whether a command is made durable by this log (otherwise a durable database commit, or
/// nothing, makes it so). The partition map is logged too: a node installing a map must not
/// wait for the database to take in everything queued before it (a new node catching up
/// has tens of megabytes queued), and the log keeps it in order with the appends around it.
pub fn logged(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Append { .. }
            | Command::Truncate { .. }
            | Command::SetHistory { .. }
            | Command::PutMap { .. }
    )
}

/// The open log, owned by the writer thread.
pub struct Wal {
    /// The two files generations alternate between ([`file_index`]).
    files: [File; 2],
    paths: [PathBuf; 2],
    generation: u64,
    /// Where the next record goes (bytes of records written in this generation).
    offset: u64,
    /// When the first change not yet in a durable database commit was made.
    dirty_since: Option<Instant>,
    /// How old that change may grow before a checkpoint is due.
    checkpoint_interval: Duration,
    /// How old it grows before this generation's checkpoint is due: drawn for every
    /// generation within [`CHECKPOINT_SPREAD`] of `checkpoint_interval`.
    due_after: Duration,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("paths", &self.paths)
            .field("generation", &self.generation)
            .field("offset", &self.offset)
            .finish()
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StorageError {
    write_err(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

impl Wal {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the writer should checkpoint now (enough bytes, or old enough changes).
    pub fn checkpoint_due(&self) -> bool {
        self.offset >= CHECKPOINT_BYTES
            || self
                .dirty_since
                .is_some_and(|t| t.elapsed() >= self.due_after)
    }

    /// Draws when the next generation's checkpoint is due ([`CHECKPOINT_SPREAD`]).
    fn draw_due_after(&mut self) {
        let (low, high) = CHECKPOINT_SPREAD;
        self.due_after = self
            .checkpoint_interval
            .mul_f64(rand::random_range(low..=high));
    }

    /// Sets how old the oldest change not yet checkpointed may grow (clamped to
    /// [`CHECKPOINT_INTERVAL_RANGE`]).
    pub fn set_checkpoint_interval(&mut self, interval: Duration) {
        let (min, max) = CHECKPOINT_INTERVAL_RANGE;
        self.checkpoint_interval = interval.clamp(min, max);
        self.draw_due_after();
    }

    /// Notes a database commit made without fsync (its changes wait for a checkpoint).
    pub fn note_volatile_commit(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Encodes the logged commands of a batch as one record payload (`None` if none is
    /// logged).
    pub fn encode_batch<'a>(cmds: impl Iterator<Item = &'a Command>) -> Option<Vec<u8>> {
        let cmds: Vec<&Command> = cmds.collect();
        let mut w =
            codec::Writer::with_capacity(4 + cmds.iter().map(|c| logged_size(c)).sum::<usize>());
        w.u32(0); // command count, patched below
        let mut n = 0u32;
        for cmd in cmds {
            match cmd {
                Command::Append {
                    partition,
                    entries,
                    history,
                } => {
                    w.u8(TAG_APPEND);
                    w.u32(*partition);
                    w.history(history);
                    w.u32(entries.len() as u32);
                    for e in entries {
                        w.entry(e);
                    }
                }
                Command::Truncate {
                    partition,
                    after_seq,
                    history,
                } => {
                    w.u8(TAG_TRUNCATE);
                    w.u32(*partition);
                    w.u64(*after_seq);
                    w.history(history);
                }
                Command::SetHistory { partition, history } => {
                    w.u8(TAG_SET_HISTORY);
                    w.u32(*partition);
                    w.history(history);
                }
                Command::PutMap { json } => {
                    w.u8(TAG_PUT_MAP);
                    w.bytes(json);
                }
                _ => continue,
            }
            n += 1;
        }
        if n == 0 {
            return None;
        }
        w.buf[..4].copy_from_slice(&n.to_le_bytes());
        Some(w.buf)
    }

    /// Writes one record and waits for `fdatasync`: when this returns `Ok`, the record
    /// survives a power loss.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), StorageError> {
        let record = frame(self.generation, payload);
        let i = file_index(self.generation);
        self.files[i]
            .write_all_at(&record, self.offset)
            .map_err(|e| io_err(&self.paths[i], "writing the write-ahead log", e))?;
        self.files[i]
            .sync_data()
            .map_err(|e| io_err(&self.paths[i], "syncing the write-ahead log", e))?;
        self.offset += record.len() as u64;
        self.note_volatile_commit();
        Ok(())
    }

    /// Starts generation `generation` at the start of its file. The writer calls this when
    /// it starts a checkpoint; the file is free because the checkpoint before, which made
    /// the database hold that file's older generation, has completed.
    pub fn start_generation(&mut self, generation: u64) {
        self.generation = generation;
        self.offset = 0;
        self.dirty_since = None;
        self.draw_due_after();
    }
}

/// One record's bytes.
/// At least the size of a command's encoding in a record ([`Wal::encode_batch`]; 0 for a
/// command the log does not hold).
fn logged_size(cmd: &Command) -> usize {
    let history = |h: &crate::replication::epochs::EpochHistory| 4 + 16 * h.starts().len();
    match cmd {
        Command::Append {
            entries,
            history: h,
            ..
        } => 9 + history(h) + entries.iter().map(|e| 16 + e.op.size()).sum::<usize>(),
        Command::Truncate { history: h, .. } => 13 + history(h),
        Command::SetHistory { history: h, .. } => 5 + history(h),
        Command::PutMap { json } => 5 + json.len(),
        _ => 0,
    }
}

fn frame(generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&checksum(generation, payload).to_le_bytes());
    record.extend_from_slice(&generation.to_le_bytes());
    record.extend_from_slice(payload);
    record
}

fn checksum(generation: u64, payload: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.digest()
}

/// The payloads of the records of `generation` at the start of `bytes`, up to the first
/// record that is torn, corrupt or of another generation.
pub fn read_records(bytes: &[u8], generation: u64) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = bytes.get(pos..pos + HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
        let sum = u64::from_le_bytes(header[4..12].try_into().unwrap_or_default());
        let gen_ = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
        if len == 0 || len > MAX_RECORD || gen_ != generation {
            break;
        }
        let Some(payload) = bytes.get(pos + HEADER..pos + HEADER + len) else {
            break; // torn: the end of the record never reached the disk
        };
        if checksum(gen_, payload) != sum {
            break;
        }
        out.push(payload);
        pos += HEADER + len;
    }
    out
}

/// Decodes one record payload into the commands it logged, in order.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Command>, CodecError> {
    let mut r = Reader::new(payload);
    let n = r.u32()?;
    let mut cmds = Vec::new();
    for _ in 0..n {
        let cmd = match r.u8()? {
            TAG_APPEND => {
                let partition: PartitionId = r.u32()?;
                let history = r.history()?;
                let count = r.u32()? as usize;
                let mut entries = Vec::with_capacity(count.min(payload.len()));
                for _ in 0..count {
                    entries.push(Arc::new(r.entry()?));
                }
                Command::Append {
                    partition,
                    entries,
                    history,
                }
            }
            TAG_TRUNCATE => Command::Truncate {
                partition: r.u32()?,
                after_seq: r.u64()?,
                history: r.history()?,
            },
            TAG_SET_HISTORY => Command::SetHistory {
                partition: r.u32()?,
                history: r.history()?,
            },
            TAG_PUT_MAP => Command::PutMap {
                json: r.bytes()?.to_vec(),
            },
            tag => {
                return Err(CodecError::Tag {
                    what: "write-ahead log command",
                    tag,
                });
            }
        };
        cmds.push(cmd);
    }
    r.finish()?;
    Ok(cmds)
}

/// Opens (creating if needed) the two log files, re-applies the records the database lacks
/// and checkpoints with a new generation. Returns the log, ready for the writer.
///
/// The database names generation `g`, that of its last checkpoint. The records of `g`, then
/// those of `g + 1` (written while the checkpoint to `g + 1` was under way, if it never
/// completed), are replayed in that order. A format-2 directory kept every generation in
/// `node.wal`, so the records of `g` are looked for in both files.
pub fn recover(
    db: &Database,
    dir: &Path,
    values: &super::values::Values,
) -> Result<Wal, StorageError> {
    let paths = [dir.join(FILE_NAMES[0]), dir.join(FILE_NAMES[1])];
    let (mut first, created_first) = open_file(&paths[0])?;
    let (mut second, created_second) = open_file(&paths[1])?;
    let generation = {
        let txn = db.begin_read().map_err(super::read_err)?;
        let meta = txn.open_table(META).map_err(super::read_err)?;
        meta.get(GENERATION_KEY)
            .map_err(super::read_err)?
            .map_or(0, |v| super::tables::u64_from(v.value()))
    };
    let mut bytes = [Vec::new(), Vec::new()];
    for (i, file) in [&mut first, &mut second].into_iter().enumerate() {
        file.read_to_end(&mut bytes[i])
            .map_err(|e| io_err(&paths[i], "reading the write-ahead log", e))?;
    }
    let own = file_index(generation);
    let mut records = read_records(&bytes[own], generation);
    if records.is_empty() {
        records = read_records(&bytes[1 - own], generation);
    }
    let next = read_records(&bytes[file_index(generation + 1)], generation + 1);
    let replayed_records = records.len() + next.len();
    records.extend(next);
    let mut txn = db.begin_write().map_err(write_err)?;
    txn.set_durability(Durability::Immediate)
        .map_err(write_err)?;
    let mut replayed = 0usize;
    let mut pending = super::writer::TxnMeta::default();
    let tail = std::sync::Mutex::new(super::log_chunks::LogTail::default());
    let memtable = std::sync::Mutex::default();
    for payload in &records {
        for cmd in decode_batch(payload)? {
            super::writer::apply_command(&txn, &cmd, &mut pending, &tail, values, &memtable)?;
            replayed += 1;
        }
    }
    pending.write_all(&txn, values)?;
    for (p, entries) in super::log_chunks::lock(&tail).snapshot() {
        super::log_chunks::write_out(&txn, p, &entries)?;
    }
    // Both generations read are now in the database: start after them.
    let start = generation + 2;
    {
        let mut meta = txn.open_table(META).map_err(write_err)?;
        meta.insert(GENERATION_KEY, &start.to_le_bytes()[..])
            .map_err(write_err)?;
    }
    txn.commit().map_err(write_err)?;
    if replayed > 0 {
        tracing::info!(
            records = replayed_records,
            commands = replayed,
            generation,
            "replayed the write-ahead log into the database"
        );
    }
    if created_first || created_second {
        sync_dir(dir)?;
    }
    let mut wal = Wal {
        files: [first, second],
        paths,
        generation: start,
        offset: 0,
        dirty_since: None,
        checkpoint_interval: CHECKPOINT_INTERVAL,
        due_after: CHECKPOINT_INTERVAL,
    };
    wal.draw_due_after();
    Ok(wal)
}

/// Which of the two files holds a generation.
fn file_index(generation: u64) -> usize {
    (generation % 2) as usize
}

fn open_file(path: &Path) -> Result<(File, bool), StorageError> {
    let created = !path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_err(path, "opening the write-ahead log", e))?;
    Ok((file, created))
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "syncing the directory", e))
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed step should name itself in the test output
mod tests {
    use super::*;
    use crate::replication::epochs::EpochHistory;
    use crate::storage::codec::{LogEntry, Op};

    fn append(p: PartitionId, seqs: std::ops::RangeInclusive<u64>) -> Command {
        Command::Append {
            partition: p,
            entries: seqs
                .map(|seq| {
                    Arc::new(LogEntry {
                        epoch: 1,
                        seq,
                        op: Op::Put {
                            key: format!("k{seq}").into_bytes(),
                            value: vec![seq as u8; 10],
                        },
                    })
                })
                .collect(),
            history: EpochHistory::from_starts(vec![(1, 1)]),
        }
    }

    fn same(a: &Command, b: &Command) -> bool {
        Wal::encode_batch(std::iter::once(a)) == Wal::encode_batch(std::iter::once(b))
    }

    #[test]
    fn batches_round_trip_and_skip_unlogged_commands() {
        let cmds = [
            append(3, 1..=4),
            Command::Compact {
                partition: 3,
                base: Default::default(),
            },
            Command::Truncate {
                partition: 3,
                after_seq: 2,
                history: EpochHistory::from_starts(vec![(1, 1), (2, 3)]),
            },
            Command::SetHistory {
                partition: 7,
                history: EpochHistory::from_starts(vec![(5, 9)]),
            },
            Command::PutMap {
                json: br#"{"version":7}"#.to_vec(),
            },
        ];
        let payload = Wal::encode_batch(cmds.iter()).expect("four logged commands");
        let back = decode_batch(&payload).expect("decodes");
        assert_eq!(back.len(), 4);
        assert!(same(&back[0], &cmds[0]));
        assert!(same(&back[1], &cmds[2]));
        assert!(same(&back[2], &cmds[3]));
        assert!(same(&back[3], &cmds[4]));
        for cut in 0..payload.len() {
            assert!(decode_batch(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let apply_only = [Command::Apply {
            partition: 1,
            entries: Vec::new(),
        }];
        assert!(Wal::encode_batch(apply_only.iter()).is_none());
    }

    #[test]
    fn reading_stops_at_a_torn_corrupt_or_older_record() {
        let a = Wal::encode_batch([append(1, 1..=2)].iter()).expect("logged");
        let b = Wal::encode_batch([append(1, 3..=3)].iter()).expect("logged");
        let mut file = frame(7, &a);
        file.extend(frame(7, &b));
        let whole = file.clone();
        file.extend(frame(6, &a)); // an older generation left behind after the new records
        file.extend(vec![0; 64]);
        assert_eq!(read_records(&file, 7), vec![&a[..], &b[..]]);
        assert!(read_records(&file, 8).is_empty());
        // A torn second record: only the first survives.
        assert_eq!(read_records(&whole[..whole.len() - 1], 7), vec![&a[..]]);
        // A flipped bit in the second record's payload: only the first survives.
        let mut bad = whole.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(read_records(&bad, 7), vec![&a[..]]);
        // Zeros (a preallocated, never written file) hold no record.
        assert!(read_records(&[0; 100], 0).is_empty());
    }

    /// A record that reached the log but not the database (a crash after the log's fdatasync,
    /// before any checkpoint) is in the database after the next open, exactly once.
    #[test]
    fn records_missing_from_the_database_are_replayed_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("open");
        for name in FILE_NAMES {
            assert!(dir.path().join(name).exists());
        }
        let mut wal = store.take_wal().expect("first taker gets the log");
        assert!(matches!(store.take_wal(), Err(StorageError::WalTaken)));
        let record = Wal::encode_batch([append(3, 1..=5)].iter()).expect("logged");
        wal.append(&record).expect("append");
        drop((wal, store));

        let store = crate::storage::Store::open(dir.path(), "n1").expect("reopen");
        let disk = store.load_partition(3).expect("load");
        assert_eq!(disk.last.last_seq, 5);
        assert_eq!(store.read_log(3, 1, 10, usize::MAX).expect("log").len(), 5);
        // The next generation's record overwrites the old one; a truncation replays on top.
        let mut wal = store.take_wal().expect("log");
        let truncate = Command::Truncate {
            partition: 3,
            after_seq: 2,
            history: EpochHistory::from_starts(vec![(1, 1)]),
        };
        wal.append(&Wal::encode_batch([truncate].iter()).expect("logged"))
            .expect("append");
        drop((wal, store));
        for _ in 0..2 {
            let store = crate::storage::Store::open(dir.path(), "n1").expect("reopen");
            assert_eq!(store.load_partition(3).expect("load").last.last_seq, 2);
        }
    }

    /// The interval set on the store reaches the log the writer takes, within its bounds.
    #[test]
    fn a_checkpoint_is_due_once_the_oldest_change_is_as_old_as_the_interval() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("open");
        store.set_checkpoint_interval(Duration::from_secs(3600));
        let mut wal = store.take_wal().expect("log");
        assert_eq!(wal.checkpoint_interval, CHECKPOINT_INTERVAL_RANGE.1);
        assert!(!wal.checkpoint_due(), "nothing changed yet");
        wal.note_volatile_commit();
        assert!(!wal.checkpoint_due(), "the change is younger than a minute");

        wal.set_checkpoint_interval(Duration::from_millis(1));
        let min = CHECKPOINT_INTERVAL_RANGE.0;
        assert_eq!(wal.checkpoint_interval, min);
        // Ages set directly rather than waited for.
        wal.dirty_since = Instant::now().checked_sub(min / 2);
        assert!(!wal.checkpoint_due(), "younger than the shortest interval");
        wal.dirty_since = Instant::now().checked_sub(min);
        assert!(wal.checkpoint_due(), "as old as the interval");
    }

    /// Every generation's checkpoint comes due within the spread below the interval, and not
    /// always after the same time: replicas that start together drift apart.
    #[test]
    fn each_generation_draws_when_its_checkpoint_is_due_within_the_spread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("open");
        let mut wal = store.take_wal().expect("log");
        wal.set_checkpoint_interval(Duration::from_secs(4));
        let (low, high) = CHECKPOINT_SPREAD;
        let mut drawn = std::collections::BTreeSet::new();
        for g in 1..=64 {
            wal.start_generation(wal.generation() + 1);
            let d = wal.due_after;
            assert!(
                d >= Duration::from_secs(4).mul_f64(low)
                    && d <= Duration::from_secs(4).mul_f64(high),
                "generation {g}: due after {d:?}"
            );
            drawn.insert(d);
            // Due exactly once the oldest change is that old.
            wal.note_volatile_commit();
            wal.dirty_since = Instant::now().checked_sub(d.mul_f64(0.99));
            assert!(!wal.checkpoint_due());
            wal.dirty_since = Instant::now().checked_sub(d);
            assert!(wal.checkpoint_due());
        }
        assert!(drawn.len() > 32, "{} distinct times of 64", drawn.len());
    }

    /// A map install answered from the log alone (its database commit never made durable)
    /// is the installed map after a crash, and a later map in the log wins over it.
    #[test]
    fn a_logged_map_is_the_installed_map_after_a_crash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("open");
        assert!(store.load_map().expect("load").is_none());
        let map = |version: u64| {
            let mut m = crate::map::PartitionMap::empty("s", 4, 3, 2);
            m.version = version;
            Command::PutMap {
                json: serde_json::to_vec(&m).expect("json"),
            }
        };
        let mut wal = store.take_wal().expect("log");
        let record = Wal::encode_batch([map(3), append(1, 1..=2)].iter()).expect("logged");
        wal.append(&record).expect("append");
        wal.append(&Wal::encode_batch([map(4)].iter()).expect("logged"))
            .expect("append");
        drop((wal, store));

        let store = crate::storage::Store::open(dir.path(), "n1").expect("reopen");
        let installed = store.load_map().expect("load").expect("a map");
        assert_eq!(installed.version, 4);
        assert_eq!(store.load_partition(1).expect("load").last.last_seq, 2);
    }

    /// A crash while a checkpoint was under way: the database still names the older
    /// generation, and the records of both it and the next one (in the other file) are
    /// replayed, in that order.
    #[test]
    fn both_generations_replay_when_a_checkpoint_never_completed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("open");
        let mut wal = store.take_wal().expect("log");
        let first = wal.generation();
        wal.append(&Wal::encode_batch([append(3, 1..=5)].iter()).expect("logged"))
            .expect("append");
        // The checkpoint starts (the log moves on to the other file) but never commits.
        wal.start_generation(first + 1);
        let cut = Command::Truncate {
            partition: 3,
            after_seq: 3,
            history: EpochHistory::from_starts(vec![(1, 1), (2, 4)]),
        };
        let mut tail = append(3, 4..=6);
        if let Command::Append { entries, .. } = &mut tail {
            for e in entries.iter_mut() {
                Arc::make_mut(e).epoch = 2;
            }
        }
        wal.append(&Wal::encode_batch([cut, tail].iter()).expect("logged"))
            .expect("append");
        drop((wal, store));

        let store = crate::storage::Store::open(dir.path(), "n1").expect("reopen");
        let disk = store.load_partition(3).expect("load");
        assert_eq!((disk.last.last_epoch, disk.last.last_seq), (2, 6));
        let log = store.read_log(3, 1, 10, usize::MAX).expect("log");
        let epochs: Vec<u64> = log.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, [1, 1, 1, 2, 2, 2]);
    }

    /// A format-2 directory kept every generation in `node.wal`, whatever its parity.
    #[test]
    fn an_odd_generation_left_in_the_first_file_is_replayed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("open");
        let db = store.db().clone();
        drop(store);
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert(GENERATION_KEY, &5u64.to_le_bytes()[..])
            .expect("insert");
        txn.commit().expect("commit");
        drop(db);
        let record = frame(
            5,
            &Wal::encode_batch([append(2, 1..=3)].iter()).expect("logged"),
        );
        std::fs::write(dir.path().join(FILE_NAMES[0]), record).expect("write");
        let store = crate::storage::Store::open(dir.path(), "n1").expect("reopen");
        assert_eq!(store.load_partition(2).expect("load").last.last_seq, 3);
    }
}
