//! Names and layouts of the redb tables, and the fixed-size encodings of meta values.
//!
//! - `meta` (`&str → bytes`): `format`, `node_id`, `disk_id` (random, created with the
//!   database), `map` (JSON) and per partition `p/{p}/base`, `p/{p}/history`,
//!   `p/{p}/applied`, `p/{p}/stats`, `p/{p}/snapshot`, `p/{p}/unproven`.
//! - `log.{p}` (`u64 last seq → chunk of encoded entries`, see [`super::log_chunks`]),
//!   `data.{p}` (`key → version + value`).

use crate::admin_api::LogPosition;
use crate::map::PartitionId;
use redb::TableDefinition;

pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Name of a per-partition log table.
pub struct LogTable(String);
/// Name of a per-partition data table.
pub struct DataTable(String);

pub fn log_table(p: PartitionId) -> LogTable {
    LogTable(format!("log.{p}"))
}

pub fn data_table(p: PartitionId) -> DataTable {
    DataTable(format!("data.{p}"))
}

impl LogTable {
    pub fn as_def(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.0)
    }
}

impl DataTable {
    pub fn as_def(&self) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
        TableDefinition::new(&self.0)
    }
}

pub fn meta_key(p: PartitionId, what: &str) -> String {
    format!("p/{p}/{what}")
}

pub fn u32_from(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    u32::from_le_bytes(a)
}

pub fn u64_from(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

pub fn pair_to(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

fn pair_from(b: &[u8]) -> (u64, u64) {
    let first = u64_from(b);
    let second = b.get(8..).map_or(0, u64_from);
    (first, second)
}

pub fn position_from(b: &[u8]) -> LogPosition {
    let (last_epoch, last_seq) = pair_from(b);
    LogPosition {
        last_epoch,
        last_seq,
    }
}

pub fn position_to(p: LogPosition) -> [u8; 16] {
    pair_to(p.last_epoch, p.last_seq)
}

pub fn stats_from(b: &[u8]) -> (u64, u64) {
    pair_from(b)
}
