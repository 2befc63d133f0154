//! The storage record codec (`storage::codec`): log entries, stored values and epoch
//! histories as they are read back from the database, plus the fixed-size meta values of
//! `storage::tables`.
//!
//! Checks: decoding never panics and allocates only for what the input holds; the log-entry
//! and value encodings are canonical (a decoded record re-encodes to exactly the input bytes);
//! a decoded epoch history keeps its ordering invariant (epochs and start sequence numbers
//! strictly increase) and round-trips; and a log entry built from the input's bytes survives
//! encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardedstore_node::replication::epochs::EpochHistory;
use shardedstore_node::storage::codec::{self, LogEntry, Op};
use shardedstore_node::storage::tables;

fn u64_at(b: &[u8], at: usize) -> u64 {
    tables::u64_from(b.get(at..).unwrap_or_default())
}

/// A log entry made from raw bytes: epoch, seq, kind, then key and value split at a byte.
fn entry_from(data: &[u8]) -> Option<LogEntry> {
    let rest = data.get(18..)?;
    let split = usize::from(data[17]).min(rest.len());
    let (key, value) = rest.split_at(split);
    let op = if data[16] & 1 == 0 {
        Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    } else {
        Op::Delete { key: key.to_vec() }
    };
    Some(LogEntry {
        epoch: u64_at(data, 0),
        seq: u64_at(data, 8),
        op,
    })
}

fn check_history(h: &EpochHistory) {
    for w in h.starts().windows(2) {
        assert!(w[0].0 < w[1].0, "epochs must increase: {:?}", h.starts());
        assert!(
            w[0].1 < w[1].1,
            "start seqs must increase: {:?}",
            h.starts()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    shardedstore_fuzz::with_allocation_limit(data.len(), || {
        if let Ok(e) = codec::decode_entry(data) {
            assert_eq!(
                codec::encode_entry(&e),
                data,
                "log entry encoding is not canonical"
            );
        }
        if let Ok((version, value)) = codec::decode_value(data) {
            assert_eq!(codec::encode_value(version, value), data);
        }
        if let Ok(h) = codec::decode_history(data) {
            check_history(&h);
            assert_eq!(codec::decode_history(&codec::encode_history(&h)), Ok(h));
        }
        if let Some(e) = entry_from(data) {
            assert_eq!(codec::decode_entry(&codec::encode_entry(&e)), Ok(e));
        }
        let p = tables::position_from(data);
        assert_eq!(tables::position_from(&tables::position_to(p)), p);
        let _ = (tables::stats_from(data), tables::u32_from(data));
    });
});
