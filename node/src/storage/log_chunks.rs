//! How a partition's log is kept in the database: in **chunks**, written at checkpoints.
//!
//! A log append is durable once its write-ahead log record is synced ([`super::wal`]). The
//! database does not need it before the next checkpoint, which lets the log generation
//! holding it be reused. So the database thread keeps the appended entries in memory, in the
//! [`LogTail`], and writes them to the partition's log table only in a checkpoint's
//! transaction: every partition's new entries as a few rows of up to [`CHUNK_BYTES`]
//! instead of one B-tree insert per entry (a quarter of the database thread's work when every
//! entry had its row).
//!
//! Layout of `log.{p}`: key = sequence number of the **last** entry of the chunk, value = the
//! chunk's entries in order, each encoded as [`codec::encode_entry`] (so a row of an older
//! layout, one entry keyed by its own sequence number, is a chunk of one). Chunks of a
//! partition cover disjoint ranges in key order. Dropping every entry up to a position
//! removes the chunks keyed at or below it; a chunk straddling it stays whole, and readers
//! skip what lies before the range they ask for.
//!
//! Readers ([`super::Store::read_log`]) copy the tail before they open their read
//! transaction: an entry leaves the tail only after the transaction that wrote it to its
//! chunk has committed, so no entry falls between the two.

use super::codec::{self, CODEC_VERSION, CodecError, LogEntry, Reader};
use super::tables::log_table;
use super::{StorageError, read_err, write_err};
use crate::map::PartitionId;
use redb::{ReadableTable, WriteTransaction};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A chunk takes no more entries once its encoding reaches this size (it holds at least one).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Entries appended since the last checkpoint, per partition, in log order.
#[derive(Default)]
pub struct LogTail {
    parts: HashMap<PartitionId, VecDeque<Arc<LogEntry>>>,
}

/// The log tail shared by the database thread (its only writer) and readers of the log.
pub type SharedTail = Arc<Mutex<LogTail>>;

pub fn lock(tail: &Mutex<LogTail>) -> std::sync::MutexGuard<'_, LogTail> {
    tail.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogTail {
    /// Takes appended entries. An entry at a sequence number the tail already holds replaces
    /// it and everything after it (as a truncation would).
    pub fn append(&mut self, p: PartitionId, entries: &[Arc<LogEntry>]) {
        let Some(first) = entries.first() else {
            return;
        };
        let run = self.parts.entry(p).or_default();
        while run.back().is_some_and(|e| e.seq >= first.seq) {
            run.pop_back();
        }
        run.extend(entries.iter().cloned());
    }

    /// Drops the entries after `after_seq`.
    pub fn truncate_after(&mut self, p: PartitionId, after_seq: u64) {
        if let Some(run) = self.parts.get_mut(&p) {
            while run.back().is_some_and(|e| e.seq > after_seq) {
                run.pop_back();
            }
        }
    }

    /// Drops the entries up to and including `through_seq`.
    pub fn compact(&mut self, p: PartitionId, through_seq: u64) {
        if let Some(run) = self.parts.get_mut(&p) {
            while run.front().is_some_and(|e| e.seq <= through_seq) {
                run.pop_front();
            }
        }
    }

    /// Forgets a partition (dropped, or emptied for a snapshot).
    pub fn forget(&mut self, p: PartitionId) {
        self.parts.remove(&p);
    }

    /// Where the tail of `p` starts (every entry of `p` from there on is in the tail) and
    /// its entries with `from <= seq <= to`.
    fn read(&self, p: PartitionId, from: u64, to: u64) -> (u64, Vec<Arc<LogEntry>>) {
        let Some(run) = self.parts.get(&p).filter(|r| !r.is_empty()) else {
            return (u64::MAX, Vec::new());
        };
        let start = run.front().map_or(u64::MAX, |e| e.seq);
        let first = run.partition_point(|e| e.seq < from);
        let entries = run
            .range(first..)
            .take_while(|e| e.seq <= to)
            .cloned()
            .collect();
        (start, entries)
    }

    /// The last entry held for `p`.
    pub fn last(&self, p: PartitionId) -> Option<&Arc<LogEntry>> {
        self.parts.get(&p).and_then(|r| r.back())
    }

    /// A copy of every partition's entries (the database thread writes them out with it
    /// while readers go on using the tail).
    pub fn snapshot(&self) -> Vec<(PartitionId, Vec<Arc<LogEntry>>)> {
        self.parts
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(p, r)| (*p, r.iter().cloned().collect()))
            .collect()
    }

    /// Drops what a committed checkpoint wrote out (`written`, as [`LogTail::snapshot`] gave it).
    pub fn written(&mut self, written: &[(PartitionId, Vec<Arc<LogEntry>>)]) {
        for (p, entries) in written {
            if let Some(last) = entries.last() {
                self.compact(*p, last.seq);
            }
            if self.parts.get(p).is_some_and(VecDeque::is_empty) {
                self.parts.remove(p);
            }
        }
    }
}

/// Writes a partition's entries from the tail into its log table, in chunks. Entries the
/// table holds at or after the first of them are removed first.
pub fn write_out(
    txn: &WriteTransaction,
    p: PartitionId,
    entries: &[Arc<LogEntry>],
) -> Result<(), StorageError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    truncate_after(txn, p, first.seq.saturating_sub(1))?;
    let name = log_table(p);
    let mut log = txn.open_table(name.as_def()).map_err(write_err)?;
    let all: usize = entries.iter().map(|e| codec::entry_size(e)).sum();
    let mut chunk = Vec::with_capacity(all.min(CHUNK_BYTES + 64 * 1024));
    for (i, e) in entries.iter().enumerate() {
        codec::encode_entry_into(&mut chunk, e);
        let next_starts_chunk = entries.get(i + 1).is_none() || chunk.len() >= CHUNK_BYTES;
        if next_starts_chunk {
            log.insert(e.seq, chunk.as_slice()).map_err(write_err)?;
            chunk.clear();
        }
    }
    Ok(())
}

/// Removes a partition's log entries after `after_seq` from its log table: the chunks keyed
/// after it go, and the entries up to it of a chunk straddling it stay, keyed at `after_seq`.
pub fn truncate_after(
    txn: &WriteTransaction,
    p: PartitionId,
    after_seq: u64,
) -> Result<(), StorageError> {
    let name = log_table(p);
    let mut log = txn.open_table(name.as_def()).map_err(write_err)?;
    let kept = match log
        .range(after_seq.saturating_add(1)..)
        .map_err(write_err)?
        .next()
    {
        None => return Ok(()),
        Some(item) => {
            let (_, chunk) = item.map_err(write_err)?;
            let chunk = chunk.value();
            let end = prefix_through(chunk, after_seq)?;
            chunk[..end].to_vec()
        }
    };
    log.retain_in(after_seq.saturating_add(1).., |_, _| false)
        .map_err(write_err)?;
    if !kept.is_empty() {
        log.insert(after_seq, kept.as_slice()).map_err(write_err)?;
    }
    Ok(())
}

/// Removes the chunks whose entries all lie at or before `through_seq`.
pub fn compact(
    txn: &WriteTransaction,
    p: PartitionId,
    through_seq: u64,
) -> Result<(), StorageError> {
    let name = log_table(p);
    let mut log = txn.open_table(name.as_def()).map_err(write_err)?;
    log.retain_in(..=through_seq, |_, _| false)
        .map_err(write_err)?;
    Ok(())
}

/// Reads one entry header of a chunk: `(epoch, seq)`, leaving the reader at its op.
fn header(r: &mut Reader<'_>) -> Result<(u64, u64), CodecError> {
    let v = r.u8()?;
    if v != CODEC_VERSION {
        return Err(CodecError::Version(v));
    }
    Ok((r.u64()?, r.u64()?))
}

/// Length in bytes of the chunk's leading entries with `seq <= through_seq`.
fn prefix_through(chunk: &[u8], through_seq: u64) -> Result<usize, CodecError> {
    let mut r = Reader::new(chunk);
    let mut end = 0;
    while !r.at_end() {
        let (_, seq) = header(&mut r)?;
        if seq > through_seq {
            break;
        }
        r.skip_op()?;
        end = r.position();
    }
    Ok(end)
}

/// Decodes a chunk's entries with `from <= seq <= to` (skipping the others unallocated).
pub fn decode_chunk(chunk: &[u8], from: u64, to: u64) -> Result<Vec<LogEntry>, CodecError> {
    let mut r = Reader::new(chunk);
    let mut out = Vec::new();
    while !r.at_end() {
        let (epoch, seq) = header(&mut r)?;
        if seq > to {
            break;
        }
        if seq < from {
            r.skip_op()?;
            continue;
        }
        out.push(LogEntry {
            epoch,
            seq,
            op: r.op()?,
        });
    }
    Ok(out)
}

/// The last entry of a chunk.
pub fn last_of_chunk(chunk: &[u8]) -> Result<Option<LogEntry>, CodecError> {
    Ok(decode_chunk(chunk, 0, u64::MAX)?.pop())
}

/// Log entries of `p` with `from <= seq <= to`, from its log table and `tail`, stopping after
/// `max_bytes` (at least one entry) or at a gap.
pub fn read(
    db: &redb::Database,
    tail: &Mutex<LogTail>,
    p: PartitionId,
    from: u64,
    to: u64,
    max_bytes: usize,
) -> Result<Vec<Arc<LogEntry>>, StorageError> {
    use redb::ReadableDatabase;
    // The tail before the table: see the module doc.
    let (tail_start, tail_entries) = lock(tail).read(p, from, to);
    let mut out: Vec<Arc<LogEntry>> = Vec::new();
    let mut size = 0;
    let full = |size: usize| size >= max_bytes;
    let table_to = to.min(tail_start.saturating_sub(1));
    if from <= table_to {
        let txn = db.begin_read().map_err(read_err)?;
        match txn.open_table(log_table(p).as_def()) {
            Ok(log) => {
                'chunks: for item in log.range(from..).map_err(read_err)? {
                    let (last, chunk) = item.map_err(read_err)?;
                    for e in decode_chunk(chunk.value(), from, table_to)? {
                        if out.last().is_some_and(|l| l.seq + 1 != e.seq) {
                            return Ok(out);
                        }
                        size += e.op.size();
                        out.push(Arc::new(e));
                        if full(size) {
                            return Ok(out);
                        }
                    }
                    if last.value() >= table_to {
                        break 'chunks;
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    for e in tail_entries {
        if out.last().is_some_and(|l| l.seq + 1 != e.seq) {
            break;
        }
        size += e.op.size();
        out.push(e);
        if full(size) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use codec::Op;
    use redb::ReadableDatabase;

    fn entry(epoch: u64, seq: u64) -> Arc<LogEntry> {
        Arc::new(LogEntry {
            epoch,
            seq,
            op: Op::Put {
                key: format!("k{seq}").into_bytes(),
                value: vec![seq as u8; 100],
            },
        })
    }

    fn seqs(entries: &[Arc<LogEntry>]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.epoch, e.seq)).collect()
    }

    fn commit(db: &redb::Database, f: impl FnOnce(&WriteTransaction)) {
        let txn = db.begin_write().expect("txn");
        f(&txn);
        txn.commit().expect("commit");
    }

    fn keys(db: &redb::Database, p: PartitionId) -> Vec<u64> {
        let txn = db.begin_read().expect("read");
        let log = txn.open_table(log_table(p).as_def()).expect("table");
        log.iter()
            .expect("iter")
            .map(|i| i.expect("item").0.value())
            .collect()
    }

    /// Entries written out in chunks, truncated inside a chunk, compacted and appended again
    /// read back exactly as a log of one row per entry would, whether they are in the table,
    /// the tail or both.
    #[test]
    fn chunks_and_tail_read_back_as_one_log() {
        let dir = tempfile::tempdir().expect("dir");
        let db = redb::Database::create(dir.path().join("t.redb")).expect("db");
        let tail = Mutex::new(LogTail::default());
        let all =
            |tail: &Mutex<LogTail>| read(&db, tail, 1, 0, u64::MAX, usize::MAX).expect("read");

        // An older layout's rows (one entry each) are chunks of one.
        commit(&db, |txn| {
            let mut log = txn.open_table(log_table(1).as_def()).expect("table");
            for seq in 1..=3 {
                log.insert(seq, codec::encode_entry(&entry(1, seq)).as_slice())
                    .expect("insert");
            }
        });
        lock(&tail).append(1, &(4..=40).map(|s| entry(1, s)).collect::<Vec<_>>());
        assert_eq!(
            seqs(&all(&tail)),
            (1..=40).map(|s| (1, s)).collect::<Vec<_>>()
        );

        // Written out: the tail empties, the table holds it all.
        let written = lock(&tail).snapshot();
        commit(&db, |txn| {
            for (p, entries) in &written {
                write_out(txn, *p, entries).expect("write out");
            }
        });
        lock(&tail).written(&written);
        assert!(lock(&tail).last(1).is_none());
        assert_eq!(keys(&db, 1), vec![1, 2, 3, 40]);
        assert_eq!(
            seqs(&all(&tail)),
            (1..=40).map(|s| (1, s)).collect::<Vec<_>>()
        );

        // A truncation inside the chunk keeps its prefix; new entries go to the tail.
        commit(&db, |txn| truncate_after(txn, 1, 20).expect("truncate"));
        assert_eq!(keys(&db, 1), vec![1, 2, 3, 20]);
        lock(&tail).append(1, &(21..=25).map(|s| entry(2, s)).collect::<Vec<_>>());
        let got = all(&tail);
        assert_eq!(got.len(), 25);
        assert_eq!((got[19].epoch, got[20].epoch), (1, 2));
        // Ranges and byte limits cut across the table and the tail.
        let mid = read(&db, &tail, 1, 19, 22, usize::MAX).expect("read");
        assert_eq!(seqs(&mid), vec![(1, 19), (1, 20), (2, 21), (2, 22)]);
        let two = read(&db, &tail, 1, 10, 30, 2 * entry(1, 1).op.size()).expect("read");
        assert_eq!(seqs(&two), vec![(1, 10), (1, 11)]);

        // Compaction removes whole chunks only; what is asked for is still found.
        commit(&db, |txn| compact(txn, 1, 3).expect("compact"));
        assert_eq!(keys(&db, 1), vec![20]);
        assert_eq!(
            seqs(&read(&db, &tail, 1, 4, 6, usize::MAX).expect("read")),
            vec![(1, 4), (1, 5), (1, 6)]
        );

        // Writing out the tail replaces what the table held from its first entry on.
        lock(&tail).append(1, &(18..=19).map(|s| entry(3, s)).collect::<Vec<_>>());
        let written = lock(&tail).snapshot();
        commit(&db, |txn| {
            for (p, entries) in &written {
                write_out(txn, *p, entries).expect("write out");
            }
        });
        lock(&tail).written(&written);
        assert_eq!(keys(&db, 1), vec![17, 19]);
        let got = all(&tail);
        assert_eq!(got.first().map(|e| e.seq), Some(4));
        assert_eq!(got.last().map(|e| (e.epoch, e.seq)), Some((3, 19)));
        assert_eq!(got.len(), 16);
        assert_eq!(
            last_of_chunk(&codec::encode_entry(&entry(5, 9)))
                .expect("decode")
                .map(|e| e.seq),
            Some(9)
        );
    }
}
