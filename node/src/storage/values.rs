//! Values kept beside the database, in one append-only file per partition
//! (`<data-dir>/values/<id>.values`).
//!
//! A B-tree that stores a value in its leaf rewrites a whole 4 KiB page for every write to a
//! key it has not touched since its last durable commit: with 1 KiB values and random keys,
//! nearly every write costs a page on every replica. So a data-table row holds a value only
//! when it is small ([`INLINE_MAX`]); a larger value is appended to its partition's value
//! file and the row holds where it is (file, offset, length, checksum). The data table's pages
//! then hold many rows each, and the value is written once, in order.
//!
//! Rules that keep this as durable as the database alone:
//! - the bytes a row points to are written to the file before the transaction that holds the
//!   row commits, and the files written since the last checkpoint are `fdatasync`ed (and the
//!   directory, when a file was created) before a checkpoint commits, so a durable row never
//!   points past what is on disk;
//! - a file is only appended to; bytes written after the last checkpoint and lost in a crash
//!   are never pointed to by the database that survives it (a restarted node appends after
//!   whatever is there);
//! - a file the database no longer names (a partition dropped, or its live values moved to a
//!   new file by a compaction) is deleted only after a checkpoint has made that
//!   durable, and only once no reader can still need it: readers take the file handles under
//!   the same lock the deletion takes ([`Values::pinned`]), and a single read that finds its
//!   file gone reads again in a newer transaction;
//! - at start-up, files the durable database does not name (made after its last checkpoint,
//!   or retired before a deletion finished) are deleted.
//!
//! A partition's rows point into its current file (meta key `p/{p}/vfile`) or, while a
//! compaction is under way, into the file it empties (`p/{p}/vfile.old`). A compaction starts
//! when a file holds more dead bytes than live ones (and at least [`COMPACT_MIN_DEAD`]), times
//! a factor of 1 to 1.5 drawn per file so that partitions do not all compact at once: new
//! values go to a new file from then on, and every database transaction moves a bounded
//! number of the old file's live values over ([`Values::compact_steps`]), so no transaction
//! grows with the partition. A compaction cut short by a crash starts again from the first
//! key at the next start (rows already moved name the new file and are passed over).

use super::codec::CodecError;
use super::tables::{self, META, data_table, meta_key};
use super::{StorageError, read_err, write_err};
use crate::map::PartitionId;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Directory of the value files, under the data directory.
pub const DIR: &str = "values";
/// Values up to this many bytes stay in the data table.
pub const INLINE_MAX: usize = 64;
/// A partition's file is rewritten with only its live values once its dead bytes exceed both
/// its live bytes and this, times a factor of 1 to 1.5 drawn per file ([`compact_threshold`]),
/// so a byte written costs at most one more write later.
const COMPACT_MIN_DEAD: u64 = 4 << 20;
/// Rows a compaction looks at per step (one step per partition per database transaction).
const COMPACT_STEP: usize = 1024;
/// Bytes of values a compaction moves per step.
const COMPACT_STEP_BYTES: u64 = 4 << 20;
/// Times a read tries again when the file its row named was retired meanwhile.
const READ_ATTEMPTS: usize = 8;

const TAG_INLINE: u8 = 0;
const TAG_POINTER: u8 = 1;
const POINTER_ROW: usize = 1 + 8 + 8 + 8 + 4 + 8;

/// Where a value is: its file, offset, length and checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub file: u64,
    pub offset: u64,
    pub len: u32,
    pub sum: u64,
}

/// A data-table row's value: in the row, or in a value file.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    Inline(&'a [u8]),
    At(Pointer),
}

/// A decoded data-table row.
#[derive(Debug, PartialEq, Eq)]
pub struct Row<'a> {
    pub version: u64,
    pub value: Stored<'a>,
}

impl Row<'_> {
    /// Length of the value the row stands for.
    pub fn value_len(&self) -> usize {
        match self.value {
            Stored::Inline(v) => v.len(),
            Stored::At(p) => p.len as usize,
        }
    }
}

/// A row holding its value.
pub fn encode_inline(version: u64, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + value.len());
    b.push(TAG_INLINE);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(value);
    b
}

/// A row pointing at its value.
pub fn encode_pointer(version: u64, p: Pointer) -> [u8; POINTER_ROW] {
    let mut b = [0u8; POINTER_ROW];
    b[0] = TAG_POINTER;
    b[1..9].copy_from_slice(&version.to_le_bytes());
    b[9..17].copy_from_slice(&p.file.to_le_bytes());
    b[17..25].copy_from_slice(&p.offset.to_le_bytes());
    b[25..29].copy_from_slice(&p.len.to_le_bytes());
    b[29..37].copy_from_slice(&p.sum.to_le_bytes());
    b
}

pub fn decode_row(b: &[u8]) -> Result<Row<'_>, CodecError> {
    let mut r = super::codec::Reader::new(b);
    let tag = r.u8()?;
    let version = r.u64()?;
    let value = match tag {
        TAG_INLINE => Stored::Inline(&b[9..]),
        TAG_POINTER => {
            let file = r.u64()?;
            let offset = r.u64()?;
            let len = r.u32()?;
            let sum = r.u64()?;
            if b.len() != POINTER_ROW {
                return Err(CodecError::Trailing(b.len() - POINTER_ROW));
            }
            Stored::At(Pointer {
                file,
                offset,
                len,
                sum,
            })
        }
        tag => {
            return Err(CodecError::Tag {
                what: "stored value",
                tag,
            });
        }
    };
    Ok(Row { version, value })
}

/// Dead bytes at which partition `p`'s file `file` holding `live` bytes is compacted: the
/// larger of `live` and [`COMPACT_MIN_DEAD`], times a factor between 1 and 1.5 fixed by the
/// partition and the file. Partitions written at the same rate would otherwise reach their
/// thresholds together and compact all at once, a burst that took a sixth of a node's write
/// rate for seconds at a time; drawn anew for every file, the factors spread the compactions
/// out over time (and every compaction frees at least as many bytes as it copies).
fn compact_threshold(p: PartitionId, file: u64, live: u64) -> u64 {
    let base = live.max(COMPACT_MIN_DEAD);
    let mut seed = [0u8; 12];
    seed[..4].copy_from_slice(&p.to_le_bytes());
    seed[4..].copy_from_slice(&file.to_le_bytes());
    // 0 ..= 1023: how much of half the base to add, in 1023rds.
    let draw = xxhash_rust::xxh3::xxh3_64(&seed) % 1024;
    base.saturating_add(base / 2 * draw / 1023)
}

fn checksum(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value)
}

fn file_name(id: u64) -> String {
    format!("{id:016x}.values")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".values")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StorageError {
    write_err(std::io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

/// The file a partition's new values are appended to.
struct Active {
    id: u64,
    file: Arc<File>,
    /// Offset where `pending` starts (the file's length once it is written out).
    pending_at: u64,
    /// Values appended in the transaction under way, not yet written to the file.
    pending: Vec<u8>,
}

impl Active {
    fn end(&self) -> u64 {
        self.pending_at + self.pending.len() as u64
    }

    fn push(&mut self, value: &[u8]) -> Result<Pointer, StorageError> {
        let len = value_len(value)?;
        let offset = self.end();
        self.pending.extend_from_slice(value);
        Ok(Pointer {
            file: self.id,
            offset,
            len,
            sum: checksum(value),
        })
    }
}

/// A value's length as a pointer holds it.
fn value_len(value: &[u8]) -> Result<u32, StorageError> {
    u32::try_from(value.len()).map_err(|_| {
        write_err(std::io::Error::other(format!(
            "a value of {} bytes is too large to store",
            value.len()
        )))
    })
}

/// The database thread's side: files being appended to, and what the next checkpoint must
/// sync or may delete.
#[derive(Default)]
struct Writing {
    next_id: u64,
    active: HashMap<PartitionId, Active>,
    /// Files written since the last checkpoint.
    dirty: HashMap<u64, Arc<File>>,
    /// A file was created since the last checkpoint.
    dir_dirty: bool,
    /// Files no longer named by the database as of the transactions committed so far:
    /// deleted once a checkpoint has made that durable.
    retired: Vec<u64>,
    /// Compactions under way, by partition.
    compacting: HashMap<PartitionId, Compaction>,
}

/// A partition's file being emptied into its current one ([`Values::compact_steps`]).
struct Compaction {
    /// The file being emptied (meta key `p/{p}/vfile.old`).
    old: u64,
    /// The last key looked at; the next step goes on after it.
    after: Option<Vec<u8>>,
    moved: u64,
    started: std::time::Instant,
}

/// The node's value files (cheap to share).
pub struct Values {
    dir: PathBuf,
    /// Every file the database may name, by id. Readers and deletions take this lock.
    files: Mutex<HashMap<u64, Arc<File>>>,
    writing: Mutex<Writing>,
    /// Compactions finished since the node started.
    compactions: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Values {
    /// Opens `data_dir/values`, deleting the files the database does not name. Fails if a
    /// file it names is missing.
    pub fn open(db: &Database, data_dir: &Path) -> Result<Self, StorageError> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "creating", e))?;
        let mut named: HashMap<u64, PartitionId> = HashMap::new();
        let mut compacting = HashMap::new();
        {
            let txn = db.begin_read().map_err(read_err)?;
            let meta = txn.open_table(META).map_err(read_err)?;
            for row in meta.iter().map_err(read_err)? {
                let (k, v) = row.map_err(read_err)?;
                let Some((p, what)) = k.value().strip_prefix("p/").and_then(|s| s.split_once('/'))
                else {
                    continue;
                };
                let (Ok(p), "vfile" | "vfile.old") = (p.parse::<PartitionId>(), what) else {
                    continue;
                };
                let id = tables::u64_from(v.value());
                named.insert(id, p);
                if what == "vfile.old" {
                    // Interrupted: it starts again from the first key (rows already moved
                    // name the new file and are passed over).
                    compacting.insert(
                        p,
                        Compaction {
                            old: id,
                            after: None,
                            moved: 0,
                            started: std::time::Instant::now(),
                        },
                    );
                }
            }
        }
        let mut files = HashMap::new();
        let mut highest = named.keys().copied().max().unwrap_or(0);
        let mut removed = false;
        let listing = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, "listing", e))?;
        for entry in listing {
            let entry = entry.map_err(|e| io_err(&dir, "listing", e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(parse_file_name) else {
                continue;
            };
            highest = highest.max(id);
            let path = entry.path();
            if named.contains_key(&id) {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, "opening the value file", e))?;
                files.insert(id, Arc::new(file));
            } else {
                std::fs::remove_file(&path)
                    .map_err(|e| io_err(&path, "removing an unused value file", e))?;
                tracing::info!(path = %path.display(), "removed a value file the database does not name");
                removed = true;
            }
        }
        if let Some((id, p)) = named.iter().find(|(id, _)| !files.contains_key(id)) {
            return Err(StorageError::MissingValues {
                partition: *p,
                path: dir.join(file_name(*id)).display().to_string(),
            });
        }
        if removed {
            sync_dir(&dir)?;
        }
        Ok(Self {
            dir,
            files: Mutex::new(files),
            writing: Mutex::new(Writing {
                next_id: highest + 1,
                compacting,
                ..Writing::default()
            }),
            compactions: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Bytes in the value files (live and dead), as the files' lengths say.
    pub fn file_bytes(&self) -> u64 {
        let files: Vec<Arc<File>> = lock(&self.files).values().cloned().collect();
        files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Compactions finished since the store was opened.
    pub fn compactions(&self) -> u64 {
        self.compactions.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(file_name(id))
    }

    /// Runs `begin` (which opens a read transaction) and takes every file's handle under the
    /// lock deletions take, so every file the transaction can name stays readable through the
    /// handles.
    pub fn pinned<T>(&self, begin: impl FnOnce() -> T) -> (T, Pinned) {
        let files = lock(&self.files);
        let t = begin();
        (
            t,
            Pinned {
                files: files.clone(),
                dir: self.dir.clone(),
            },
        )
    }

    /// Reads a value, or `None` when its file has been deleted since the reader's transaction
    /// began (a newer transaction names another file).
    fn read(&self, p: &Pointer) -> Result<Option<Vec<u8>>, StorageError> {
        let file = lock(&self.files).get(&p.file).cloned();
        file.map(|f| read_at(&f, p, &self.path(p.file))).transpose()
    }

    /// Reads the value of a row read by `read_row` (a fresh read transaction each call),
    /// reading again when the row named a file deleted in between.
    pub fn resolve(
        &self,
        mut read_row: impl FnMut() -> Result<Option<Vec<u8>>, StorageError>,
    ) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        for _ in 0..READ_ATTEMPTS {
            let Some(row) = read_row()? else {
                return Ok(None);
            };
            let row_ = decode_row(&row)?;
            match row_.value {
                Stored::Inline(v) => return Ok(Some((row_.version, v.to_vec()))),
                Stored::At(p) => {
                    if let Some(v) = self.read(&p)? {
                        return Ok(Some((row_.version, v)));
                    }
                }
            }
        }
        Err(read_err(std::io::Error::other(
            "the value file a row names kept being replaced while reading it",
        )))
    }

    /// The row to store for `value`: the value itself when small, else a pointer to where it is
    /// appended in partition `p`'s file.
    pub fn put(
        &self,
        txn: &WriteTransaction,
        p: PartitionId,
        version: u64,
        value: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        if value.len() <= INLINE_MAX {
            return Ok(encode_inline(version, value));
        }
        let mut w = lock(&self.writing);
        let active = self.active(&mut w, txn, p)?;
        let ptr = active.push(value)?;
        Ok(encode_pointer(version, ptr).to_vec())
    }

    /// Opens partition `p`'s current file now, creating it (and naming it in the meta table)
    /// when it has none, so [`Values::append_outside`] has a file to write to.
    pub fn open_current(&self, txn: &WriteTransaction, p: PartitionId) -> Result<(), StorageError> {
        let mut w = lock(&self.writing);
        self.active(&mut w, txn, p).map(|_| ())
    }

    /// The id of partition `p`'s current file, if the database thread has it open.
    pub fn current(&self, p: PartitionId) -> Option<u64> {
        lock(&self.writing).active.get(&p).map(|a| a.id)
    }

    /// Writes `values` to partition `p`'s current file from the calling thread, not the
    /// database thread: a snapshot being installed writes its chunks' values while the
    /// database thread takes in other work. Returns where each value is, or `None` when the
    /// partition has no file open (the database thread then writes the values itself).
    ///
    /// The space is reserved under the lock the database thread appends under (after writing
    /// out what it has buffered for the partition), then written outside it. The file is
    /// marked as written since the last checkpoint only once the bytes are in it, and the
    /// caller hands the pointers to the database thread only after this returns, so the
    /// checkpoint that makes a row holding one of them durable syncs the bytes first. A
    /// pointer is only stored while it still names the partition's current file
    /// ([`Values::put_at`]); bytes reserved and never pointed to are dead bytes, like those
    /// of a value overwritten.
    pub fn append_outside(
        &self,
        p: PartitionId,
        values: &[&[u8]],
    ) -> Result<Option<Vec<Pointer>>, StorageError> {
        let mut total: u64 = 0;
        for v in values {
            value_len(v)?;
            total += v.len() as u64;
        }
        let (id, file, offset) = {
            let mut w = lock(&self.writing);
            let Writing { active, dirty, .. } = &mut *w;
            let Some(a) = active.get_mut(&p) else {
                return Ok(None);
            };
            let id = a.id;
            write_active(a, dirty, || self.path(id))?;
            let offset = a.pending_at;
            a.pending_at += total;
            (a.id, a.file.clone(), offset)
        };
        let mut buf = Vec::with_capacity(total as usize);
        let mut at = Vec::with_capacity(values.len());
        for v in values {
            at.push(Pointer {
                file: id,
                offset: offset + buf.len() as u64,
                len: v.len() as u32,
                sum: checksum(v),
            });
            buf.extend_from_slice(v);
        }
        file.write_all_at(&buf, offset)
            .map_err(|e| io_err(&self.path(id), "writing the value file", e))?;
        lock(&self.writing).dirty.insert(id, file);
        Ok(Some(at))
    }

    /// The row for `value` written at `at` by [`Values::append_outside`] while `current` is
    /// still the partition's current file ([`Values::current`], looked up after the values
    /// were written); otherwise written again as by [`Values::put`].
    pub fn put_at(
        &self,
        txn: &WriteTransaction,
        p: PartitionId,
        version: u64,
        value: &[u8],
        at: Option<Pointer>,
        current: Option<u64>,
    ) -> Result<Vec<u8>, StorageError> {
        match at {
            Some(ptr) if current == Some(ptr.file) && ptr.len as usize == value.len() => {
                Ok(encode_pointer(version, ptr).to_vec())
            }
            _ => self.put(txn, p, version, value),
        }
    }

    /// Partition `p`'s current file, opened (or created and named in the meta table) on
    /// first use.
    fn active<'w>(
        &self,
        w: &'w mut Writing,
        txn: &WriteTransaction,
        p: PartitionId,
    ) -> Result<&'w mut Active, StorageError> {
        if !w.active.contains_key(&p) {
            let key = meta_key(p, "vfile");
            let named = {
                let meta = txn.open_table(META).map_err(write_err)?;
                meta.get(key.as_str())
                    .map_err(write_err)?
                    .map(|v| tables::u64_from(v.value()))
            };
            let active = match named {
                Some(id) => {
                    let path = self.path(id);
                    let file = lock(&self.files).get(&id).cloned().ok_or_else(|| {
                        StorageError::MissingValues {
                            partition: p,
                            path: path.display().to_string(),
                        }
                    })?;
                    let len = file
                        .metadata()
                        .map_err(|e| io_err(&path, "reading the length of", e))?
                        .len();
                    Active {
                        id,
                        file,
                        pending_at: len,
                        pending: Vec::new(),
                    }
                }
                None => {
                    let active = self.create(w)?;
                    let mut meta = txn.open_table(META).map_err(write_err)?;
                    meta.insert(key.as_str(), &active.id.to_le_bytes()[..])
                        .map_err(write_err)?;
                    active
                }
            };
            w.active.insert(p, active);
        }
        w.active
            .get_mut(&p)
            .ok_or_else(|| write_err(std::io::Error::other("value file vanished")))
    }

    fn create(&self, w: &mut Writing) -> Result<Active, StorageError> {
        let id = w.next_id;
        w.next_id += 1;
        let path = self.path(id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err(&path, "creating the value file", e))?;
        let file = Arc::new(file);
        lock(&self.files).insert(id, file.clone());
        w.dir_dirty = true;
        Ok(Active {
            id,
            file,
            pending_at: 0,
            pending: Vec::new(),
        })
    }

    /// Forgets partition `p`'s file: it is deleted after the next checkpoint.
    pub fn drop_partition(
        &self,
        txn: &WriteTransaction,
        p: PartitionId,
    ) -> Result<(), StorageError> {
        let mut w = lock(&self.writing);
        w.active.remove(&p);
        w.compacting.remove(&p);
        let mut meta = txn.open_table(META).map_err(write_err)?;
        for what in ["vfile", "vfile.old"] {
            let named = meta
                .remove(meta_key(p, what).as_str())
                .map_err(write_err)?
                .map(|v| tables::u64_from(v.value()));
            if let Some(id) = named {
                w.retired.push(id);
            }
        }
        Ok(())
    }

    /// Starts a compaction of partition `p`'s file when it is mostly dead bytes (`live` is
    /// the partition's stored bytes, an upper bound of what is live): new values go to a new
    /// file from now on, and [`Values::compact_steps`] moves the live ones over.
    pub fn maybe_compact(
        &self,
        txn: &WriteTransaction,
        p: PartitionId,
        live: u64,
    ) -> Result<(), StorageError> {
        let mut w = lock(&self.writing);
        if w.compacting.contains_key(&p) {
            return Ok(());
        }
        let Some(old) = w.active.get(&p) else {
            return Ok(());
        };
        let dead = old.end().saturating_sub(live);
        if dead < compact_threshold(p, old.id, live) {
            return Ok(());
        }
        let (old_id, old_len) = (old.id, old.end());
        // The rows of this transaction may point into what is not written out yet.
        self.write_out(&mut w)?;
        let new = self.create(&mut w)?;
        let mut meta = txn.open_table(META).map_err(write_err)?;
        meta.insert(meta_key(p, "vfile").as_str(), &new.id.to_le_bytes()[..])
            .map_err(write_err)?;
        meta.insert(meta_key(p, "vfile.old").as_str(), &old_id.to_le_bytes()[..])
            .map_err(write_err)?;
        tracing::info!(
            partition = p,
            old = old_id,
            new = new.id,
            old_bytes = old_len,
            live,
            "compacting a partition's value file"
        );
        w.active.insert(p, new);
        w.compacting.insert(
            p,
            Compaction {
                old: old_id,
                after: None,
                moved: 0,
                started: std::time::Instant::now(),
            },
        );
        Ok(())
    }

    /// Partitions whose value file is being compacted: their rows must all be in the data
    /// table for a compaction step to find them ([`super::memtable`]).
    pub fn compacting(&self) -> Vec<PartitionId> {
        lock(&self.writing).compacting.keys().copied().collect()
    }

    /// Moves the next live values of every compaction under way from the file being emptied
    /// to the partition's current one (at most [`COMPACT_STEP`] rows or
    /// [`COMPACT_STEP_BYTES`] per partition per call, so a transaction stays short); a file
    /// emptied is retired.
    pub fn compact_steps(&self, txn: &WriteTransaction) -> Result<(), StorageError> {
        let mut w = lock(&self.writing);
        let partitions: Vec<PartitionId> = w.compacting.keys().copied().collect();
        for p in partitions {
            self.compact_step(&mut w, txn, p)?;
        }
        Ok(())
    }

    fn compact_step(
        &self,
        w: &mut Writing,
        txn: &WriteTransaction,
        p: PartitionId,
    ) -> Result<(), StorageError> {
        let Some(c) = w.compacting.get(&p) else {
            return Ok(());
        };
        let (old, after) = (c.old, c.after.clone());
        let mut table = txn.open_table(data_table(p).as_def()).map_err(write_err)?;
        let mut rows: Vec<(Vec<u8>, u64, Pointer)> = Vec::new();
        let mut scanned = 0usize;
        let mut bytes = 0u64;
        let mut last = after.clone();
        {
            let range = match &after {
                Some(k) => table.range::<&[u8]>((
                    std::ops::Bound::Excluded(k.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => table.range::<&[u8]>(..),
            }
            .map_err(write_err)?;
            for item in range {
                if scanned >= COMPACT_STEP || bytes >= COMPACT_STEP_BYTES {
                    break;
                }
                let (k, v) = item.map_err(write_err)?;
                scanned += 1;
                last = Some(k.value().to_vec());
                let row = decode_row(v.value())?;
                if let Stored::At(ptr) = row.value
                    && ptr.file == old
                {
                    bytes += u64::from(ptr.len);
                    rows.push((k.value().to_vec(), row.version, ptr));
                }
            }
        }
        let done = scanned < COMPACT_STEP && bytes < COMPACT_STEP_BYTES;
        let active = self.active(w, txn, p)?;
        for (key, version, ptr) in &rows {
            let value = self.read(ptr)?.ok_or_else(|| StorageError::MissingValues {
                partition: p,
                path: self.path(ptr.file).display().to_string(),
            })?;
            let moved_to = active.push(&value)?;
            table
                .insert(key.as_slice(), &encode_pointer(*version, moved_to)[..])
                .map_err(write_err)?;
        }
        drop(table);
        let Some(c) = w.compacting.get_mut(&p) else {
            return Ok(());
        };
        c.after = last;
        c.moved += bytes;
        if done {
            let mut meta = txn.open_table(META).map_err(write_err)?;
            meta.remove(meta_key(p, "vfile.old").as_str())
                .map_err(write_err)?;
            tracing::info!(
                partition = p,
                old = old,
                moved = c.moved,
                seconds = c.started.elapsed().as_secs_f64(),
                "compacted a partition's value file"
            );
            w.compacting.remove(&p);
            w.retired.push(old);
            self.compactions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes every buffered value to its file (before the transaction that points at them
    /// commits).
    pub fn write_out_all(&self) -> Result<(), StorageError> {
        let mut w = lock(&self.writing);
        self.write_out(&mut w)
    }

    fn write_out(&self, w: &mut Writing) -> Result<(), StorageError> {
        let Writing { active, dirty, .. } = w;
        for a in active.values_mut() {
            // Most files have nothing buffered: no path is built for them.
            let id = a.id;
            write_active(a, dirty, || self.path(id))?;
        }
        Ok(())
    }

    /// Before a checkpoint commits: every buffered value written, every file written since
    /// the last checkpoint synced, and the directory if a file was created.
    pub fn sync(&self) -> Result<(), StorageError> {
        let mut w = lock(&self.writing);
        self.write_out(&mut w)?;
        let dirty: Vec<(u64, Arc<File>)> = w.dirty.drain().collect();
        sync_files(&dirty)
            .map_err(|(id, e)| io_err(&self.path(id), "syncing the value file", e))?;
        if w.dir_dirty {
            sync_dir(&self.dir)?;
            w.dir_dirty = false;
        }
        Ok(())
    }

    /// After a checkpoint committed: deletes the files it made unnamed.
    pub fn checkpointed(&self) {
        let retired = std::mem::take(&mut lock(&self.writing).retired);
        for id in retired {
            lock(&self.files).remove(&id);
            let path = self.path(id);
            if let Err(e) = std::fs::remove_file(&path) {
                // Deleted again at the next start.
                tracing::warn!(path = %path.display(), error = %e, "removing a retired value file failed");
            }
        }
    }
}

/// Writes a file's buffered values; `path` names the file in an error.
fn write_active(
    a: &mut Active,
    dirty: &mut HashMap<u64, Arc<File>>,
    path: impl FnOnce() -> PathBuf,
) -> Result<(), StorageError> {
    if a.pending.is_empty() {
        return Ok(());
    }
    a.file
        .write_all_at(&a.pending, a.pending_at)
        .map_err(|e| io_err(&path(), "writing the value file", e))?;
    a.pending_at += a.pending.len() as u64;
    a.pending.clear();
    dirty.insert(a.id, a.file.clone());
    Ok(())
}

fn read_at(file: &File, p: &Pointer, path: &Path) -> Result<Vec<u8>, StorageError> {
    let mut buf = vec![0u8; p.len as usize];
    file.read_exact_at(&mut buf, p.offset)
        .map_err(|e| io_err(path, "reading the value file", e))?;
    if checksum(&buf) != p.sum {
        return Err(StorageError::CorruptValue {
            path: path.display().to_string(),
            offset: p.offset,
        });
    }
    Ok(buf)
}

/// Most threads syncing value files at once.
const SYNC_THREADS: usize = 8;

/// `fdatasync`s the files, several at once: a checkpoint syncs every partition's file written
/// since the last one (64 files is common), and one after the other each waited for its own
/// device flush: 42 ms of each checkpoint at the median at 5 000 writes/s, 17 ms with eight at
/// once (flushes in flight together are served together). The first failure, with its file's
/// id, if any; the node stops on it, as on any failed checkpoint.
fn sync_files(files: &[(u64, Arc<File>)]) -> Result<(), (u64, std::io::Error)> {
    let threads = files.len().min(SYNC_THREADS);
    if threads <= 1 {
        return files
            .iter()
            .try_for_each(|(id, f)| f.sync_data().map_err(|e| (*id, e)));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((id, f)) = files.get(i) else { break };
                    if let Err(e) = f.sync_data() {
                        lock(&failed).get_or_insert((*id, e));
                    }
                }
            });
        }
    });
    match lock(&failed).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "syncing the directory", e))
}

/// The value files as of one read transaction ([`Values::pinned`]).
pub struct Pinned {
    files: HashMap<u64, Arc<File>>,
    dir: PathBuf,
}

impl Pinned {
    /// The value a row of that transaction stands for.
    pub fn value(&self, row: &Row<'_>) -> Result<Vec<u8>, StorageError> {
        match row.value {
            Stored::Inline(v) => Ok(v.to_vec()),
            Stored::At(p) => {
                let path = self.dir.join(file_name(p.file));
                let file = self.files.get(&p.file).ok_or_else(|| {
                    read_err(std::io::Error::other(format!(
                        "value file {} is not open",
                        path.display()
                    )))
                })?;
                read_at(file, &p, &path)
            }
        }
    }
}

/// Rewrites the rows of a format-5 database (version, then the value) as rows holding their
/// value ([`encode_inline`]).
pub fn upgrade_rows(txn: &WriteTransaction) -> Result<u64, StorageError> {
    let names: Vec<String> = txn
        .list_tables()
        .map_err(write_err)?
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .filter(|n| n.starts_with("data."))
        .collect();
    let mut rows = 0u64;
    for name in names {
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
        let mut table = txn.open_table(def).map_err(write_err)?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch: Vec<(Vec<u8>, Vec<u8>)> = {
                let range = match &after {
                    Some(k) => table.range::<&[u8]>((
                        std::ops::Bound::Excluded(k.as_slice()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => table.range::<&[u8]>(..),
                }
                .map_err(write_err)?;
                range
                    .take(COMPACT_STEP)
                    .map(|item| {
                        item.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                            .map_err(write_err)
                    })
                    .collect::<Result<_, _>>()?
            };
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            for (k, old) in &batch {
                let (version, value) = super::codec::decode_value(old)?;
                table
                    .insert(k.as_slice(), encode_inline(version, value).as_slice())
                    .map_err(write_err)?;
                rows += 1;
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed step should name itself in the test output
mod tests {
    use super::*;
    use crate::storage::codec;

    #[test]
    fn rows_round_trip_and_bad_rows_are_refused() {
        let inline = encode_inline(7, b"abc");
        assert_eq!(
            decode_row(&inline),
            Ok(Row {
                version: 7,
                value: Stored::Inline(b"abc")
            })
        );
        let p = Pointer {
            file: 3,
            offset: 4096,
            len: 1024,
            sum: 99,
        };
        let row = encode_pointer(9, p);
        assert_eq!(
            decode_row(&row),
            Ok(Row {
                version: 9,
                value: Stored::At(p)
            })
        );
        assert!(decode_row(&row[..20]).is_err());
        assert!(decode_row(&[7, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_row(&[TAG_INLINE, 1]).is_err());
        assert_eq!(parse_file_name(&file_name(0xabc)), Some(0xabc));
        assert_eq!(parse_file_name("x.values"), None);
    }

    use crate::admin_api::LogPosition;
    use crate::storage::codec::{LogEntry, Op};
    use crate::storage::writer::{Command, WriterHandle, WriterObserver};
    use crate::storage::{STORAGE_FORMAT, Store};

    struct Quiet;
    impl WriterObserver for Quiet {
        fn batch(&self, _: usize, _: bool, _: f64) {}
    }

    fn put(seq: u64, key: &str, value: &[u8]) -> Arc<LogEntry> {
        Arc::new(LogEntry {
            epoch: 1,
            seq,
            op: Op::Put {
                key: key.as_bytes().to_vec(),
                value: value.to_vec(),
            },
        })
    }

    /// Applies `entries` to partition `p` and forces a checkpoint after them.
    async fn apply_and_checkpoint(w: &WriterHandle, p: PartitionId, entries: Vec<Arc<LogEntry>>) {
        w.run(Command::Apply {
            partition: p,
            entries,
        })
        .await
        .expect("apply");
        // Not logged: made durable by a checkpoint of the database.
        w.run(Command::SetUnproven {
            partition: p,
            unproven: false,
        })
        .await
        .expect("checkpoint");
    }

    fn value_files(dir: &Path) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = std::fs::read_dir(dir.join(DIR))
            .expect("list")
            .filter_map(|e| {
                let e = e.expect("entry");
                let id = parse_file_name(e.file_name().to_str()?)?;
                Some((id, e.metadata().expect("len").len()))
            })
            .collect();
        out.sort_unstable();
        out
    }

    use crate::storage::writer::tests::reopen;

    /// A snapshot's values written outside the database thread read back after a reopen,
    /// interleaved with the database thread's own appends to the same file; values written
    /// into a file that stopped being the partition's current one before their chunk was
    /// taken in (the install started again) are written again, never pointed to in a file
    /// that is deleted.
    #[tokio::test]
    async fn snapshot_values_written_outside_the_database_thread_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), "n").expect("open");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        let p = 6;
        let item = |k: &str, version: u64, len: usize| {
            let value = vec![k.as_bytes()[0]; len];
            (k.as_bytes().to_vec(), codec::encode_value(version, &value))
        };
        let chunk = |items: Vec<(Vec<u8>, Vec<u8>)>, at| Command::SnapshotChunk {
            partition: p,
            items,
            at,
        };
        let end = |base, keys, bytes| Command::SnapshotEnd {
            partition: p,
            base,
            history: crate::replication::epochs::EpochHistory::default(),
            keys,
            bytes,
        };
        // No file open for the partition yet: the database thread writes them.
        assert_eq!(
            store
                .write_snapshot_values(p, &[item("q", 1, 500)])
                .expect("values"),
            Vec::new()
        );
        w.run(Command::SnapshotBegin { partition: p })
            .await
            .expect("begin");
        let first = store
            .current_values_file(p)
            .expect("a file opened at the start");
        let a = vec![item("a", 3, 300), item("b", 4, 10), item("c", 5, 700)];
        let at = store.write_snapshot_values(p, &a).expect("values");
        assert_eq!(
            at.iter().map(Option::is_some).collect::<Vec<_>>(),
            [true, false, true]
        );
        // The database thread appends to the same file in between (its own chunk).
        w.run(chunk(vec![item("d", 6, 400)], Vec::new()))
            .await
            .expect("chunk");
        w.run(chunk(a, at)).await.expect("chunk");
        // Written into the first file, then the install starts again in a new one before
        // the chunk is taken in.
        let stale = vec![item("e", 7, 900)];
        let stale_at = store.write_snapshot_values(p, &stale).expect("values");
        w.run(Command::SnapshotBegin { partition: p })
            .await
            .expect("begin again");
        assert_ne!(store.current_values_file(p), Some(first));
        w.run(chunk(stale, stale_at)).await.expect("chunk");
        let f = vec![item("f", 8, 200)];
        let at = store.write_snapshot_values(p, &f).expect("values");
        w.run(chunk(f, at)).await.expect("chunk");
        w.run(end(
            LogPosition {
                last_epoch: 1,
                last_seq: 8,
            },
            2,
            1102,
        ))
        .await
        .expect("end");
        drop((w, store));
        let store = reopen(dir.path()).await;
        let files = value_files(dir.path());
        assert_eq!(files.len(), 1, "the first file is gone: {files:?}");
        assert_eq!(files[0].1, 1100, "e written twice would be 2000: {files:?}");
        for (k, version, len) in [("e", 7, 900), ("f", 8, 200)] {
            let got = store.get(p, k.as_bytes()).expect("get").expect(k);
            assert_eq!((got.version, got.value.len()), (version, len));
            assert!(got.value.iter().all(|b| *b == k.as_bytes()[0]));
        }
        for k in ["a", "b", "c", "d"] {
            assert!(store.get(p, k.as_bytes()).expect("get").is_none(), "{k}");
        }
        // Without the restart: all of the first install's values read back.
        drop(store);
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), "n").expect("open");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        w.run(Command::SnapshotBegin { partition: p })
            .await
            .expect("begin");
        let a = vec![item("a", 3, 300), item("b", 4, 10), item("c", 5, 700)];
        let at = store.write_snapshot_values(p, &a).expect("values");
        w.run(chunk(vec![item("d", 6, 400)], Vec::new()))
            .await
            .expect("chunk");
        w.run(chunk(a, at)).await.expect("chunk");
        w.run(end(
            LogPosition {
                last_epoch: 1,
                last_seq: 6,
            },
            4,
            1414,
        ))
        .await
        .expect("end");
        drop((w, store));
        let store = reopen(dir.path()).await;
        assert_eq!(value_files(dir.path())[0].1, 1400);
        for (k, version, len) in [("a", 3, 300), ("b", 4, 10), ("c", 5, 700), ("d", 6, 400)] {
            let got = store.get(p, k.as_bytes()).expect("get").expect(k);
            assert_eq!((got.version, got.value.len()), (version, len));
            assert!(got.value.iter().all(|b| *b == k.as_bytes()[0]));
        }
    }

    /// Large values go to the partition's value file, small ones stay in the row; both read
    /// back, also after a reopen, and a snapshot carries them in the wire layout.
    #[tokio::test]
    async fn large_values_live_in_a_value_file_and_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), "n").expect("open");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        let big = vec![7u8; 1000];
        apply_and_checkpoint(&w, 4, vec![put(1, "big", &big), put(2, "small", b"s")]).await;
        let files = value_files(dir.path());
        assert_eq!(files.len(), 1, "one file for the partition: {files:?}");
        assert_eq!(files[0].1, 1000, "only the large value is in it");
        let got = store.get(4, b"big").expect("get").expect("present");
        assert_eq!((got.version, got.value.as_slice()), (1, big.as_slice()));
        assert_eq!(store.version_of(4, b"small").expect("version"), Some(2));
        let snap = store.snapshot(4).expect("snapshot");
        let items = snap.chunk(None, usize::MAX).expect("chunk");
        assert_eq!(
            items,
            vec![
                (b"big".to_vec(), codec::encode_value(1, &big)),
                (b"small".to_vec(), codec::encode_value(2, b"s")),
            ]
        );
        drop((snap, w, store));
        let store = reopen(dir.path()).await;
        assert_eq!(
            store.get(4, b"big").expect("get").map(|v| v.value),
            Some(big)
        );
        assert_eq!(
            store.get(4, b"small").expect("get").map(|v| v.value),
            Some(b"s".to_vec())
        );
    }

    #[test]
    fn compaction_thresholds_lie_between_one_and_one_and_a_half_times_the_base_and_spread() {
        for live in [0, 1 << 20, COMPACT_MIN_DEAD, 100 << 20] {
            let base = live.max(COMPACT_MIN_DEAD);
            let t: Vec<u64> = (0..64u32).map(|p| compact_threshold(p, 7, live)).collect();
            assert!(
                t.iter().all(|&t| t >= base && t <= base + base / 2),
                "{t:?}"
            );
            let (lo, hi) = (t.iter().min().copied(), t.iter().max().copied());
            let spread = hi.unwrap_or(0) - lo.unwrap_or(0);
            assert!(
                spread > base / 3,
                "64 partitions spread over {spread} of {base}"
            );
        }
        // A partition's next file draws again.
        let next: Vec<u64> = (1..9u64).map(|f| compact_threshold(3, f, 0)).collect();
        assert!(next.windows(2).any(|w| w[0] != w[1]), "{next:?}");
    }

    /// Overwriting the same keys fills the file with dead bytes until it is rewritten with the
    /// live values only; the old file goes once a checkpoint has the new one, while a snapshot
    /// opened before still reads its own values from it.
    #[tokio::test]
    async fn a_file_of_dead_values_is_compacted_and_an_open_snapshot_still_reads_the_old_one() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), "n").expect("open");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        let keys = 64u64;
        let value = |round: u64, k: u64| vec![(round * 31 + k) as u8; 8192];
        let round_of = |round: u64| -> Vec<Arc<LogEntry>> {
            (0..keys)
                .map(|k| put(round * keys + k + 1, &format!("k{k:03}"), &value(round, k)))
                .collect()
        };
        apply_and_checkpoint(&w, 0, round_of(0)).await;
        let first = value_files(dir.path());
        let snap = store.snapshot(0).expect("snapshot");
        let rounds = 40u64; // 40 × 64 × 8 KiB = 20 MiB written over 0.5 MiB live
        for round in 1..rounds {
            apply_and_checkpoint(&w, 0, round_of(round)).await;
        }
        let last = value_files(dir.path());
        assert_eq!(last.len(), 1, "the old file is gone: {last:?}");
        assert!(store.values().compactions() >= 1);
        assert_eq!(store.values().file_bytes(), last[0].1);
        assert_ne!(last[0].0, first[0].0, "a new file holds the values");
        assert!(
            last[0].1 < (COMPACT_MIN_DEAD * 3 / 2 + 2 * keys * 8192),
            "the new file holds little besides the live values: {last:?}"
        );
        for k in 0..keys {
            let got = store
                .get(0, format!("k{k:03}").as_bytes())
                .expect("get")
                .expect("present");
            assert_eq!(got.value, value(rounds - 1, k));
            assert_eq!(got.version, (rounds - 1) * keys + k + 1);
        }
        let old = snap
            .chunk(None, usize::MAX)
            .expect("the pinned old file reads");
        assert_eq!(old.len(), keys as usize);
        for (k, (key, stored)) in old.iter().enumerate() {
            assert_eq!(key, format!("k{k:03}").as_bytes());
            assert_eq!(
                stored,
                &codec::encode_value(k as u64 + 1, &value(0, k as u64))
            );
        }
        drop((snap, w, store));
        let store = reopen(dir.path()).await;
        let got = store.get(0, b"k005").expect("get").expect("present");
        assert_eq!(got.value, value(rounds - 1, 5));
    }

    /// A compaction moves a bounded number of values per transaction, survives a restart
    /// half way (both files stay named and every value reads back), and ends with the old
    /// file deleted.
    #[tokio::test]
    async fn a_compaction_cut_short_by_a_restart_goes_on_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), "n").expect("open");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        let keys = 3000u64;
        let value = |round: u64, k: u64| vec![(round * 7 + k) as u8; 2000];
        let round_of = |round: u64| -> Vec<Arc<LogEntry>> {
            (0..keys)
                .map(|k| put(round * keys + k + 1, &format!("k{k:05}"), &value(round, k)))
                .collect()
        };
        apply_and_checkpoint(&w, 1, round_of(0)).await;
        apply_and_checkpoint(&w, 1, round_of(1)).await;
        assert_eq!(
            value_files(dir.path()).len(),
            1,
            "dead bytes not above live ones yet"
        );
        // Round 2 makes two thirds of the file dead: the compaction starts in its transaction
        // and moves one step there and one in the checkpoint's; 3 000 rows take three steps.
        apply_and_checkpoint(&w, 1, round_of(2)).await;
        let files = value_files(dir.path());
        assert_eq!(files.len(), 2, "old and new file both named: {files:?}");
        drop((w, store));
        let store = reopen(dir.path()).await;
        assert_eq!(
            value_files(dir.path()),
            files,
            "nothing removed at the restart"
        );
        for k in [0, 1500, 2999] {
            let got = store
                .get(1, format!("k{k:05}").as_bytes())
                .expect("get")
                .expect("present");
            assert_eq!(got.value, value(2, k));
        }
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        // Any transaction moves the next step, a write to another partition too.
        apply_and_checkpoint(&w, 9, vec![put(1, "x", b"y")]).await;
        apply_and_checkpoint(&w, 9, vec![put(2, "x", b"z")]).await;
        let after = value_files(dir.path());
        assert_eq!(after.len(), 1, "the old file is gone: {after:?}");
        assert_eq!(after[0].0, files[1].0);
        for k in 0..keys {
            let got = store
                .get(1, format!("k{k:05}").as_bytes())
                .expect("get")
                .expect("present");
            assert_eq!(got.value, value(2, k), "key {k}");
        }
    }

    /// A file the database does not name (made after the last checkpoint of a node that
    /// crashed) is deleted at start-up and its id not reused; a value whose bytes changed on
    /// disk is refused, not served.
    #[tokio::test]
    async fn unnamed_files_are_removed_and_a_damaged_value_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), "n").expect("open");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        apply_and_checkpoint(&w, 2, vec![put(1, "k", &[1u8; 500])]).await;
        drop((w, store));
        let stray = dir.path().join(DIR).join(file_name(0x40));
        std::fs::write(&stray, b"junk").expect("stray file");
        let named = value_files(dir.path())[0].0;
        let store = reopen(dir.path()).await;
        assert!(!stray.exists(), "the unnamed file is removed");
        let w = WriterHandle::start(store.clone(), Quiet, |e| panic!("{e}"));
        apply_and_checkpoint(&w, 3, vec![put(1, "k", &[2u8; 500])]).await;
        let files = value_files(dir.path());
        assert_eq!(files.len(), 2);
        assert!(files[1].0 > 0x40, "ids are not reused: {files:?}");

        let path = dir.path().join(DIR).join(file_name(named));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 0xff;
        std::fs::write(&path, bytes).expect("damage");
        assert!(matches!(
            store.get(2, b"k"),
            Err(StorageError::CorruptValue { offset: 0, .. })
        ));
        assert_eq!(
            store.get(3, b"k").expect("get").map(|v| v.value),
            Some(vec![2u8; 500])
        );
        drop((w, store));
        drop(reopen(dir.path()).await); // the writer's threads have let go of the database
        std::fs::remove_file(&path).expect("lose the file");
        let opened = Store::open(dir.path(), "n");
        assert!(
            matches!(
                opened,
                Err(StorageError::MissingValues { partition: 2, .. })
            ),
            "{:?}",
            opened.err()
        );
    }

    /// A format-5 database (rows of version then value) opens with its rows rewritten in the
    /// tagged layout.
    #[test]
    fn format_5_rows_read_back_after_the_upgrade() {
        let dir = tempfile::tempdir().expect("dir");
        drop(Store::open(dir.path(), "n").expect("create"));
        {
            let db = Database::create(dir.path().join("node.redb")).expect("db");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("format", &5u32.to_le_bytes()[..])
                .expect("format");
            let mut data = txn.open_table(data_table(6).as_def()).expect("data");
            for i in 0..3000u64 {
                let value = vec![i as u8; 100 + i as usize % 200];
                data.insert(
                    format!("k{i:05}").as_bytes(),
                    codec::encode_value(i + 1, &value).as_slice(),
                )
                .expect("row");
            }
            drop(data);
            txn.commit().expect("commit");
        }
        let store = Store::open(dir.path(), "n").expect("open a format-5 directory");
        for i in [0u64, 1023, 1024, 2999] {
            let got = store
                .get(6, format!("k{i:05}").as_bytes())
                .expect("get")
                .expect("present");
            assert_eq!(got.version, i + 1);
            assert_eq!(got.value, vec![i as u8; 100 + i as usize % 200]);
        }
        assert_eq!(
            store.snapshot(6).expect("snapshot").len().expect("len"),
            3000
        );
        let _ = STORAGE_FORMAT;
    }
}
