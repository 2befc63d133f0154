//! Durable storage of one node: a single redb database holding, per partition, a log table
//! and a data table, plus a meta table (format, node id, installed map, per-partition state);
//! values larger than a few bytes are kept beside it, one append-only file per partition
//! ([`values`]), and the data table holds where they are.
//!
//! Reads go straight to the database; every write goes through the group-commit
//! [`writer`] task so that one transaction and one fsync cover many appends. Log appends are
//! made durable by the node's write-ahead log ([`wal`]); the database is committed durably
//! only at checkpoints, and takes the log entries appended since the last one only then, in
//! chunks ([`log_chunks`]).

pub mod cache;
pub mod codec;
pub mod faults;
pub mod log_chunks;
pub mod memtable;
pub mod tables;
pub mod values;
pub mod wal;
pub mod writer;

use crate::admin_api::LogPosition;
use crate::map::PartitionId;
use crate::replication::epochs::EpochHistory;
use codec::{CodecError, LogEntry};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};
use std::path::Path;
use std::sync::Arc;
use tables::{META, data_table, log_table, meta_key};

/// Version of the on-disk layout; stored under `format` in the meta table. Format 2 adds the
/// write-ahead log (`node.wal`); format 3 alternates its generations between `node.wal` and
/// `node.wal.1`, so a checkpoint no longer stops the log; format 4 logs the partition map in
/// it too (a record an older build could not read); format 5 stores the log in chunks of many
/// entries ([`log_chunks`]; a row of an older format is a chunk of one); format 6 keeps larger
/// values in value files ([`values`]) and tags every data row (a format-5 row is rewritten as a
/// row holding its value when opened). An older database is upgraded when
/// opened, and a build that only knows an older format refuses a newer directory instead of
/// ignoring part of its log.
pub const STORAGE_FORMAT: u32 = 6;
/// Older layouts this build opens (and upgrades).
const UPGRADABLE_FORMATS: [u32; 5] = [1, 2, 3, 4, 5];

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("creating the data directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the database {path}")]
    Open {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("database format {found} is not supported (this build reads format {STORAGE_FORMAT})")]
    UnsupportedFormat { found: u32 },
    #[error("the database belongs to node {found}, not {expected}")]
    WrongNode { found: String, expected: String },
    #[error("reading from the database")]
    Read(#[source] redb::Error),
    #[error("writing to the database")]
    Write(#[source] redb::Error),
    #[error("decoding stored bytes")]
    Decode(#[from] CodecError),
    #[error("decoding the stored partition map")]
    DecodeMap(#[source] serde_json::Error),
    #[error("the writer task has stopped")]
    WriterGone,
    #[error("the write-ahead log is already owned by a writer")]
    WalTaken,
    #[error("the value file {path} of partition {partition} is missing")]
    MissingValues {
        partition: PartitionId,
        path: String,
    },
    #[error("a value in {path} at offset {offset} fails its checksum")]
    CorruptValue { path: String, offset: u64 },
}

pub(crate) fn read_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Read(e.into())
}

pub(crate) fn write_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Write(e.into())
}

/// What the database says about one partition at start-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionDisk {
    /// Position just before the first retained log entry (after a snapshot or compaction).
    pub base: LogPosition,
    /// Position of the last log entry (equal to `base` when the log is empty).
    pub last: LogPosition,
    pub history: EpochHistory,
    pub applied_seq: u64,
    pub keys: u64,
    pub bytes: u64,
    /// The copy was created empty while the map listed this node in sync (see
    /// [`crate::replication::roles`]); kept until a map drops the node from `inSync`.
    pub unproven: bool,
}

/// A stored value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub value: Vec<u8>,
}

/// Handle to the node's database (cheap to clone).
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    disk_id: Arc<str>,
    /// The recovered write-ahead log until the writer takes it.
    wal: Arc<std::sync::Mutex<Option<wal::Wal>>>,
    /// Log entries appended since the last checkpoint ([`log_chunks`]).
    tail: log_chunks::SharedTail,
    /// Rows applied since the last checkpoint ([`memtable`]).
    memtable: memtable::SharedMemtable,
    values: Arc<values::Values>,
}

impl Store {
    /// Opens (or creates) `dir/node.redb`, checking the format and the owning node id, with
    /// the default page cache for this process's memory limit ([`cache`]).
    pub fn open(dir: &Path, node_id: &str) -> Result<Self, StorageError> {
        Self::open_with_cache(dir, node_id, cache::cache_bytes(None))
    }

    /// [`Store::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(
        dir: &Path,
        node_id: &str,
        cache_bytes: u64,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("node.redb");
        if !path.exists() {
            Self::create_atomically(dir, &path, node_id)?;
        }
        let db = Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .create(&path)
            .map_err(|e| StorageError::Open {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        let db = Arc::new(db);
        let disk_id = Self::init_meta(&db, node_id)?;
        let values = Arc::new(values::Values::open(&db, dir)?);
        let wal = wal::recover(&db, dir, &values)?;
        Ok(Self {
            db,
            disk_id: disk_id.into(),
            wal: Arc::new(std::sync::Mutex::new(Some(wal))),
            tail: Arc::default(),
            memtable: Arc::default(),
            values,
        })
    }

    /// Sets how often the writer checkpoints the database (see [`wal::Wal::checkpoint_due`]);
    /// takes effect for a writer started afterwards.
    pub fn set_checkpoint_interval(&self, interval: std::time::Duration) {
        if let Some(wal) = self.wal.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            wal.set_checkpoint_interval(interval);
        }
    }

    /// Hands the write-ahead log to the (single) writer.
    pub(crate) fn take_wal(&self) -> Result<wal::Wal, StorageError> {
        self.wal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or(StorageError::WalTaken)
    }

    /// Creates and initialises a new database under a temporary name and renames it into
    /// place, so a crash while creating it never leaves a half-written `node.redb` that no
    /// later start can open (a fresh directory is then simply created again).
    fn create_atomically(dir: &Path, path: &Path, node_id: &str) -> Result<(), StorageError> {
        let tmp = dir.join("node.redb.creating");
        let io = |source: std::io::Error| StorageError::CreateDir {
            path: tmp.display().to_string(),
            source,
        };
        match std::fs::remove_file(&tmp) {
            Ok(()) => {
                tracing::warn!(path = %tmp.display(), "removed a database whose creation was interrupted")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let db = Database::create(&tmp).map_err(|e| StorageError::Open {
            path: tmp.display().to_string(),
            source: e.into(),
        })?;
        Self::init_meta(&db, node_id)?;
        drop(db);
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    pub(crate) fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub(crate) fn tail(&self) -> &log_chunks::SharedTail {
        &self.tail
    }

    pub(crate) fn values(&self) -> &values::Values {
        &self.values
    }

    pub(crate) fn memtable(&self) -> &memtable::SharedMemtable {
        &self.memtable
    }

    /// The id of partition `p`'s current value file, if the database thread has it open.
    #[cfg(test)]
    pub(crate) fn current_values_file(&self, p: PartitionId) -> Option<u64> {
        self.values.current(p)
    }

    /// Writes the values of a snapshot chunk of partition `p` (`(key, stored value)` pairs) to
    /// the partition's value file from the calling thread, for
    /// [`writer::Command::SnapshotChunk`]'s `at`: one entry per item, `None` for a value kept
    /// in its row. Empty when the partition has no file open (the database thread then
    /// writes them). Blocking.
    pub fn write_snapshot_values(
        &self,
        p: PartitionId,
        items: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<Option<values::Pointer>>, StorageError> {
        let mut outside = Vec::new();
        let mut which = Vec::with_capacity(items.len());
        for (_, v) in items {
            let (_, value) = codec::decode_value(v)?;
            which.push(value.len() > values::INLINE_MAX);
            if value.len() > values::INLINE_MAX {
                outside.push(value);
            }
        }
        let Some(written) = self.values.append_outside(p, &outside)? else {
            return Ok(Vec::new());
        };
        let mut written = written.into_iter();
        Ok(which
            .into_iter()
            .map(|w| if w { written.next() } else { None })
            .collect())
    }

    /// Random identity of this database, created with it (`disk_id` in the meta table).
    pub fn disk_id(&self) -> &str {
        &self.disk_id
    }

    /// Checks format and owner, creating them (and the disk identity) in a new database.
    /// Returns the disk identity.
    fn init_meta(db: &Database, node_id: &str) -> Result<String, StorageError> {
        let txn = db.begin_write().map_err(write_err)?;
        let disk_id;
        let mut upgrade_rows = false;
        {
            let mut meta = txn.open_table(META).map_err(write_err)?;
            let format = meta
                .get("format")
                .map_err(write_err)?
                .map(|v| tables::u32_from(v.value()));
            match format {
                Some(STORAGE_FORMAT) => {}
                Some(f) if UPGRADABLE_FORMATS.contains(&f) => {
                    tracing::info!(
                        from = f,
                        to = STORAGE_FORMAT,
                        "upgrading the database format"
                    );
                    meta.insert("format", &STORAGE_FORMAT.to_le_bytes()[..])
                        .map_err(write_err)?;
                    upgrade_rows = true;
                }
                Some(f) => return Err(StorageError::UnsupportedFormat { found: f }),
                None => {
                    meta.insert("format", &STORAGE_FORMAT.to_le_bytes()[..])
                        .map_err(write_err)?;
                }
            }
            let owner = meta
                .get("node_id")
                .map_err(write_err)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match owner {
                Some(found) if found != node_id => {
                    return Err(StorageError::WrongNode {
                        found,
                        expected: node_id.to_owned(),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("node_id", node_id.as_bytes())
                        .map_err(write_err)?;
                }
            }
            let stored = meta
                .get("disk_id")
                .map_err(write_err)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            disk_id = match stored {
                Some(id) => id,
                None => {
                    let id = format!(
                        "{:016x}{:016x}",
                        rand::random::<u64>(),
                        rand::random::<u64>()
                    );
                    meta.insert("disk_id", id.as_bytes()).map_err(write_err)?;
                    tracing::info!(disk_id = %id, "created the disk identity of a new database");
                    id
                }
            };
        }
        if upgrade_rows {
            let rows = values::upgrade_rows(&txn)?;
            tracing::info!(rows, "rewrote the data rows in the tagged layout");
        }
        txn.commit().map_err(write_err)?;
        Ok(disk_id)
    }

    /// The installed partition map, if any.
    pub fn load_map(&self) -> Result<Option<crate::map::PartitionMap>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta = txn.open_table(META).map_err(read_err)?;
        match meta.get("map").map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(StorageError::DecodeMap),
            None => Ok(None),
        }
    }

    /// Partitions that have a log table, and whether a snapshot install was interrupted.
    pub fn partitions(&self) -> Result<Vec<(PartitionId, bool)>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta = txn.open_table(META).map_err(read_err)?;
        let mut out = Vec::new();
        for t in txn.list_tables().map_err(read_err)? {
            let Some(p) = t
                .name()
                .strip_prefix("log.")
                .and_then(|s| s.parse::<PartitionId>().ok())
            else {
                continue;
            };
            let pending = meta
                .get(meta_key(p, "snapshot").as_str())
                .map_err(read_err)?
                .is_some();
            out.push((p, pending));
        }
        Ok(out)
    }

    /// Loads a partition's positions, epoch history and counters.
    pub fn load_partition(&self, p: PartitionId) -> Result<PartitionDisk, StorageError> {
        // Newer than the meta table's while the memtable holds it ([`memtable`]).
        let unflushed = memtable::lock(&self.memtable)
            .part(p)
            .and_then(|u| u.applied);
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta = txn.open_table(META).map_err(read_err)?;
        let get = |what: &str| -> Result<Option<Vec<u8>>, StorageError> {
            Ok(meta
                .get(meta_key(p, what).as_str())
                .map_err(read_err)?
                .map(|v| v.value().to_vec()))
        };
        let base = get("base")?
            .map(|b| tables::position_from(&b))
            .unwrap_or_default();
        let history = match get("history")? {
            Some(b) => codec::decode_history(&b)?,
            None => EpochHistory::default(),
        };
        let (applied_seq, keys, bytes) = match unflushed {
            Some(applied) => applied,
            None => memtable::applied_from(get("applied")?.as_deref(), get("stats")?.as_deref()),
        };
        let unproven = get("unproven")?.is_some_and(|b| b.first() == Some(&1));
        let position = |e: &LogEntry| LogPosition {
            last_epoch: e.epoch,
            last_seq: e.seq,
        };
        let in_tail = log_chunks::lock(&self.tail).last(p).map(|e| position(e));
        let last = match (in_tail, txn.open_table(log_table(p).as_def())) {
            (Some(last), _) => last,
            (None, Ok(log)) => match log.last().map_err(read_err)? {
                Some((_, chunk)) => {
                    log_chunks::last_of_chunk(chunk.value())?.map_or(base, |e| position(&e))
                }
                None => base,
            },
            (None, Err(redb::TableError::TableDoesNotExist(_))) => base,
            (None, Err(e)) => return Err(read_err(e)),
        };
        Ok(PartitionDisk {
            base,
            last,
            history,
            applied_seq,
            keys,
            bytes,
            unproven,
        })
    }

    /// Reads one key of a partition's data table.
    pub fn get(&self, p: PartitionId, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let found = self
            .values
            .resolve(|| self.read_key(p, key, |stored| Ok(stored.to_vec())))?;
        Ok(found.map(|(version, value)| Versioned { version, value }))
    }

    /// The version of one key of a partition's data table, without reading its value (what
    /// a write needs to decide its condition).
    pub fn version_of(&self, p: PartitionId, key: &[u8]) -> Result<Option<u64>, StorageError> {
        self.read_key(p, key, |stored| Ok(values::decode_row(stored)?.version))
    }

    fn read_key<T>(
        &self,
        p: PartitionId,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, codec::CodecError>,
    ) -> Result<Option<T>, StorageError> {
        // Rows leave the memtable only once the data table holds them.
        let unflushed = memtable::lock(&self.memtable).get(p, key).cloned();
        if let Some(row) = unflushed {
            return match row {
                Some(row) => Ok(Some(decode(&row)?)),
                None => Ok(None),
            };
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = match txn.open_table(data_table(p).as_def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Log entries with `from <= seq <= to`, stopping after `max_bytes` (at least one entry)
    /// or before a gap.
    pub fn read_log(
        &self,
        p: PartitionId,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Arc<LogEntry>>, StorageError> {
        log_chunks::read(&self.db, &self.tail, p, from, to, max_bytes)
    }

    /// Opens a consistent snapshot of a partition: its data table and applied sequence
    /// number as of one read transaction.
    pub fn snapshot(&self, p: PartitionId) -> Result<SnapshotReader, StorageError> {
        // The partition's unflushed rows and the read transaction of one moment: the
        // database thread publishes and removes rows under this lock ([`memtable`]).
        let (unflushed, (txn, files)) = {
            let mem = memtable::lock(&self.memtable);
            let unflushed = mem.part(p).cloned().unwrap_or_default();
            (unflushed, self.values.pinned(|| self.db.begin_read()))
        };
        let txn = txn.map_err(read_err)?;
        let meta = txn.open_table(META).map_err(read_err)?;
        let (applied_seq, keys, bytes) = match unflushed.applied {
            Some(applied) => applied,
            None => {
                let applied = meta
                    .get(meta_key(p, "applied").as_str())
                    .map_err(read_err)?;
                let stats = meta.get(meta_key(p, "stats").as_str()).map_err(read_err)?;
                memtable::applied_from(
                    applied.as_ref().map(|v| v.value()),
                    stats.as_ref().map(|v| v.value()),
                )
            }
        };
        let table = match txn.open_table(data_table(p).as_def()) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(read_err(e)),
        };
        Ok(SnapshotReader {
            table,
            rows: unflushed.rows,
            files,
            applied_seq,
            keys,
            bytes,
        })
    }
}

/// A `(key, stored value)` pair of a snapshot, the value as [`codec::encode_value`] lays it
/// out (its version, then its bytes).
pub type SnapshotItem = (Vec<u8>, Vec<u8>);

/// A key and its row as the data table holds it.
type KeyRow = (Vec<u8>, Vec<u8>);

/// A partition's data as of one read transaction, read in key order chunk by chunk.
pub struct SnapshotReader {
    table: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    /// The partition's rows not yet in the table, laid over it.
    rows: std::collections::BTreeMap<Vec<u8>, memtable::Row>,
    /// The value files as of the read transaction.
    files: values::Pinned,
    pub applied_seq: u64,
    pub keys: u64,
    pub bytes: u64,
}

impl SnapshotReader {
    /// Up to `max_bytes` of `(key, stored value)` pairs with keys after `after`
    /// (from the start when `None`). An empty answer means the end.
    pub fn chunk(
        &self,
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<Vec<SnapshotItem>, StorageError> {
        let mut out = Vec::new();
        let mut size = 0;
        for item in self.items(after)? {
            let (k, v) = item?;
            let row = values::decode_row(&v)?;
            let value = self.files.value(&row)?;
            size += k.len() + value.len();
            out.push((k, codec::encode_value(row.version, &value)));
            if size >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// `(key, row)` pairs after `after` in key order: the table's, with the unflushed rows
    /// laid over them.
    fn items<'a>(
        &'a self,
        after: Option<&'a [u8]>,
    ) -> Result<impl Iterator<Item = Result<KeyRow, StorageError>> + 'a, StorageError> {
        let range = match &self.table {
            Some(table) => Some(
                match after {
                    Some(k) => table
                        .range::<&[u8]>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
                    None => table.range::<&[u8]>(..),
                }
                .map_err(read_err)?,
            ),
            None => None,
        };
        let table = range.into_iter().flatten().map(|item| {
            item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(read_err)
        });
        Ok(memtable::overlay(table, &self.rows, after))
    }

    /// Number of stored entries (for logs and tests).
    pub fn len(&self) -> Result<u64, StorageError> {
        if self.rows.is_empty() {
            return match &self.table {
                Some(t) => t.len().map_err(read_err),
                None => Ok(0),
            };
        }
        let mut n = 0;
        for item in self.items(None)? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    pub fn is_empty(&self) -> Result<bool, StorageError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed step should name itself in the test output
mod tests {
    use super::*;

    fn set_format(dir: &Path, format: u32) {
        let db = Database::create(dir.join("node.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert("format", &format.to_le_bytes()[..])
            .expect("format");
        txn.commit().expect("commit");
    }

    /// A format-4 directory (one log row per entry) opens as format 5 with its log intact;
    /// a directory of a newer format is refused.
    #[test]
    fn a_format_4_log_reads_back_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        drop(Store::open(dir.path(), "n").expect("create"));
        set_format(dir.path(), 4);
        {
            let db = Database::create(dir.path().join("node.redb")).expect("db");
            let txn = db.begin_write().expect("txn");
            let mut log = txn.open_table(log_table(7).as_def()).expect("log");
            for seq in 1..=5 {
                let e = LogEntry {
                    epoch: 2,
                    seq,
                    op: codec::Op::Delete {
                        key: format!("k{seq}").into_bytes(),
                    },
                };
                log.insert(seq, codec::encode_entry(&e).as_slice())
                    .expect("row");
            }
            drop(log);
            txn.commit().expect("commit");
        }
        let store = Store::open(dir.path(), "n").expect("open a format-4 directory");
        let log = store.read_log(7, 2, 10, usize::MAX).expect("log");
        assert_eq!(
            log.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        let disk = store.load_partition(7).expect("load");
        assert_eq!((disk.last.last_epoch, disk.last.last_seq), (2, 5));
        drop(store);
        let db = Database::create(dir.path().join("node.redb")).expect("db");
        let format = db
            .begin_read()
            .expect("read")
            .open_table(META)
            .expect("meta")
            .get("format")
            .expect("get")
            .map(|v| tables::u32_from(v.value()));
        assert_eq!(format, Some(STORAGE_FORMAT));
        drop(db);

        set_format(dir.path(), STORAGE_FORMAT + 1);
        assert!(matches!(
            Store::open(dir.path(), "n"),
            Err(StorageError::UnsupportedFormat { found }) if found == STORAGE_FORMAT + 1
        ));
    }
}
