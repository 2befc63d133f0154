//! Rows applied since the last checkpoint, kept in memory instead of in the data tables.
//!
//! A write applied to redb one transaction at a time copies the B-tree leaf its key lives in
//! (redb is copy-on-write) and writes the copy out at the transaction's commit: about a page
//! (4 KiB) per applied write, on every replica, whatever the value's size. The database
//! thread now keeps each partition's applied rows (key → the row the data table would hold,
//! or `None` for a deleted key) here, with the partition's applied point and counters, and
//! writes them into the data tables at the next checkpoint, where each leaf is copied once
//! for all the writes to it since the checkpoint before. The write-ahead log stays the
//! durability point: a crash loses the rows here together with everything applied since the
//! last checkpoint, and recovery applies the log after it again, as before.
//!
//! Readers see the data table with these rows laid over it:
//! - a key's read looks here first, then in the data table;
//! - a snapshot (a copy sent to a new replica, a backup) copies the partition's rows and
//!   applied point here and opens its read transaction while holding the lock, so it sees a
//!   data table and rows of the same moment.
//!
//! The database thread publishes a transaction's rows here before its commit, once their
//! values are written out (so every row here can be resolved), and the applied point and
//! counters with them; it removes the rows it wrote into the data tables after the commit
//! (every row at a checkpoint, a compacting partition's rows in any transaction: a value-file
//! compaction moves the values the data table points to, so it must find them all there).
//! Between the two a reader may see a row both here and in the data table: the same row.

use super::tables;
use crate::map::PartitionId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// A key's row as the data table would hold it, or `None` for a deleted key.
pub type Row = Option<Vec<u8>>;

/// A partition's rows not yet in its data table, and its applied point and counters.
#[derive(Clone, Debug, Default)]
pub struct Unflushed {
    pub rows: BTreeMap<Vec<u8>, Row>,
    /// `(applied seq, keys, bytes)` as of `rows`; newer than the meta table's until the
    /// transaction that wrote them there commits.
    pub applied: Option<(u64, u64, u64)>,
}

/// Every partition's unflushed rows.
#[derive(Default)]
pub struct Memtable {
    parts: HashMap<PartitionId, Unflushed>,
}

/// The memtable shared by the database thread (its only writer) and readers.
pub type SharedMemtable = Arc<Mutex<Memtable>>;

pub fn lock(m: &Mutex<Memtable>) -> MutexGuard<'_, Memtable> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memtable {
    /// The row of `key` in partition `p` if it is here: `Some(None)` for a deleted key.
    pub fn get(&self, p: PartitionId, key: &[u8]) -> Option<&Row> {
        self.parts.get(&p)?.rows.get(key)
    }

    pub fn part(&self, p: PartitionId) -> Option<&Unflushed> {
        self.parts.get(&p)
    }

    /// Partitions with rows here.
    pub fn with_rows(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.parts
            .iter()
            .filter(|(_, u)| !u.rows.is_empty())
            .map(|(p, _)| *p)
    }

    /// Publishes one transaction's changes (before its commit): partitions emptied by it
    /// (dropped, or a snapshot install begun) first, then its rows and applied points.
    pub fn publish(&mut self, txn: Staged) {
        for p in &txn.cleared {
            self.parts.remove(p);
        }
        for (p, rows) in txn.rows {
            self.parts.entry(p).or_default().rows.extend(rows);
        }
        for (p, applied) in txn.applied {
            self.parts.entry(p).or_default().applied = Some(applied);
        }
    }

    /// Forgets what a committed transaction wrote into the data tables (and whose applied
    /// points it wrote into the meta table): everything after a checkpoint, else the
    /// partitions in `flushed`.
    pub fn committed(&mut self, checkpoint: bool, flushed: &[PartitionId]) {
        if checkpoint {
            self.parts.clear();
        } else {
            for p in flushed {
                self.parts.remove(p);
            }
        }
    }
}

/// One transaction's changes to the memtable, published before its commit.
#[derive(Default)]
pub struct Staged {
    pub rows: HashMap<PartitionId, BTreeMap<Vec<u8>, Row>>,
    /// Partitions emptied by the transaction: their earlier rows are void.
    pub cleared: std::collections::HashSet<PartitionId>,
    pub applied: HashMap<PartitionId, (u64, u64, u64)>,
    /// Partitions whose rows (and applied point) must reach the tables in this transaction
    /// whatever else it is: a snapshot install that ends, a log compacted (its new start
    /// must not pass the applied point stored).
    pub flush: std::collections::HashSet<PartitionId>,
}

impl Staged {
    /// The row of `key` as the transaction stands, if the transaction or the memtable (unless
    /// the partition was emptied since) holds it.
    pub fn lookup<'a>(&'a self, mem: &'a Memtable, p: PartitionId, key: &[u8]) -> Option<&'a Row> {
        if let Some(r) = self.rows.get(&p).and_then(|rows| rows.get(key)) {
            return Some(r);
        }
        if self.cleared.contains(&p) {
            return None;
        }
        mem.get(p, key)
    }

    /// Partition `p` is emptied (dropped, or a snapshot install begun).
    pub fn clear(&mut self, p: PartitionId) {
        self.rows.remove(&p);
        self.applied.remove(&p);
        self.flush.remove(&p);
        self.cleared.insert(p);
    }

    /// The rows of `p` to write into its data table: the memtable's (unless emptied since),
    /// then the transaction's over them.
    pub fn to_flush(&self, mem: &Memtable, p: PartitionId) -> BTreeMap<Vec<u8>, Row> {
        let mut out = match mem.part(p) {
            Some(u) if !self.cleared.contains(&p) => u.rows.clone(),
            _ => BTreeMap::new(),
        };
        if let Some(rows) = self.rows.get(&p) {
            out.extend(rows.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}

/// A partition's rows copied for a snapshot, laid over its data table in key order.
pub fn overlay<'a, E>(
    table: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>> + 'a,
    rows: &'a BTreeMap<Vec<u8>, Row>,
    after: Option<&'a [u8]>,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>> + 'a {
    let mut mem = match after {
        Some(k) => {
            rows.range::<[u8], _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
        }
        None => rows.range::<[u8], _>(..),
    }
    .peekable();
    let mut table = table.peekable();
    std::iter::from_fn(move || {
        loop {
            let from_table = match table.peek() {
                Some(Ok((k, _))) => match mem.peek() {
                    Some((mk, _)) => k.as_slice() < mk.as_slice(),
                    None => true,
                },
                Some(Err(_)) => return table.next(),
                None => false,
            };
            if from_table {
                return table.next();
            }
            let (mk, row) = mem.next()?;
            if matches!(table.peek(), Some(Ok((k, _))) if k == mk) {
                table.next();
            }
            if let Some(row) = row {
                return Some(Ok((mk.clone(), row.clone())));
            }
        }
    })
}

/// `(applied seq, keys, bytes)` from the meta table's encodings.
pub fn applied_from(applied: Option<&[u8]>, stats: Option<&[u8]>) -> (u64, u64, u64) {
    let (keys, bytes) = stats.map_or((0, 0), tables::stats_from);
    (applied.map_or(0, tables::u64_from), keys, bytes)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed step should name itself in the test output
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn rows_lay_over_the_table_in_key_order_with_deletes_hiding_keys() {
        let table = vec![kv("a", "1"), kv("c", "1"), kv("e", "1"), kv("g", "1")];
        let mut rows = BTreeMap::new();
        rows.insert(b"b".to_vec(), Some(b"2".to_vec()));
        rows.insert(b"c".to_vec(), Some(b"2".to_vec()));
        rows.insert(b"e".to_vec(), None);
        rows.insert(b"f".to_vec(), None);
        rows.insert(b"h".to_vec(), Some(b"2".to_vec()));
        let all: Vec<_> = overlay(table.clone().into_iter().map(Ok::<_, ()>), &rows, None)
            .map(|r| r.expect("ok"))
            .collect();
        assert_eq!(
            all,
            vec![
                kv("a", "1"),
                kv("b", "2"),
                kv("c", "2"),
                kv("g", "1"),
                kv("h", "2")
            ]
        );
        // Resuming after a key: the table's side starts there too (as its range does).
        let after_c: Vec<_> = overlay(
            table
                .into_iter()
                .filter(|(k, _)| k.as_slice() > b"c".as_slice())
                .map(Ok::<_, ()>),
            &rows,
            Some(b"c"),
        )
        .map(|r| r.expect("ok"))
        .collect();
        assert_eq!(after_c, vec![kv("g", "1"), kv("h", "2")]);
    }

    #[test]
    fn a_cleared_partition_hides_its_earlier_rows_until_published() {
        let mut mem = Memtable::default();
        let mut t = Staged::default();
        t.rows
            .entry(1)
            .or_default()
            .insert(b"k".to_vec(), Some(b"r1".to_vec()));
        t.applied.insert(1, (5, 1, 10));
        mem.publish(t);
        let mut t = Staged::default();
        assert_eq!(t.lookup(&mem, 1, b"k"), Some(&Some(b"r1".to_vec())));
        t.clear(1);
        assert_eq!(t.lookup(&mem, 1, b"k"), None);
        assert!(t.to_flush(&mem, 1).is_empty());
        t.rows
            .entry(1)
            .or_default()
            .insert(b"j".to_vec(), Some(b"r2".to_vec()));
        mem.publish(t);
        assert_eq!(mem.get(1, b"k"), None);
        assert_eq!(mem.get(1, b"j"), Some(&Some(b"r2".to_vec())));
        assert_eq!(mem.part(1).and_then(|u| u.applied), None);
        mem.committed(false, &[1]);
        assert!(mem.part(1).is_none());
    }
}
