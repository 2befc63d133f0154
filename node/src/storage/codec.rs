//! Byte encodings of what the node stores and sends: log entries, data values, epoch histories.
//!
//! Every encoding is little-endian and length-prefixed; decoding never panics on short or
//! garbage input and reports [`CodecError`] instead.

use crate::replication::epochs::EpochHistory;

/// Version byte at the start of every stored log entry and every peer frame.
pub const CODEC_VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("input ends early: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("unsupported encoding version {0}")]
    Version(u8),
    #[error("unknown tag {tag} for {what}")]
    Tag { what: &'static str, tag: u8 },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("length {len} exceeds the limit {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("{count} {what} cannot fit in the {remaining} bytes left")]
    Count {
        what: &'static str,
        count: usize,
        remaining: usize,
    },
}

/// A client mutation, as replicated in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    /// Approximate size in bytes, for batching and throttling; at least the size of its
    /// encoding ([`Writer::op`]).
    pub fn size(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len() + value.len() + 16,
            Op::Delete { key } => key.len() + 16,
        }
    }
}

/// One log entry: `(epoch, seq, op)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub epoch: u64,
    pub seq: u64,
    pub op: Op,
}

/// Appends primitive values to a byte buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    /// A writer whose buffer holds `bytes` before it grows: encoders size it from what they
    /// encode, so a batch of values is copied once, not again at every doubling.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }
    pub fn op(&mut self, op: &Op) {
        match op {
            Op::Put { key, value } => {
                self.u8(1);
                self.bytes(key);
                self.bytes(value);
            }
            Op::Delete { key } => {
                self.u8(2);
                self.bytes(key);
            }
        }
    }
    pub fn entry(&mut self, e: &LogEntry) {
        self.u64(e.epoch);
        self.u64(e.seq);
        self.op(&e.op);
    }
    pub fn history(&mut self, h: &EpochHistory) {
        self.u32(h.starts().len() as u32);
        for &(epoch, start) in h.starts() {
            self.u64(epoch);
            self.u64(start);
        }
    }
}

/// Reads primitive values from a byte slice, failing cleanly on short input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Upper bound on any single length-prefixed field (a key or value is far smaller).
const MAX_FIELD: usize = 64 * 1024 * 1024;

/// Smallest encoding of one epoch-history pair (two u64).
const MIN_HISTORY_PAIR: usize = 16;
/// Smallest encoding of one log entry: epoch, seq, op tag and a key length (a delete of `""`).
pub const MIN_ENTRY: usize = 8 + 8 + 1 + 4;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(CodecError::Truncated {
                offset: self.pos,
                needed: n.saturating_sub(self.buf.len() - self.pos),
            }),
        }
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u32()? as usize;
        if len > MAX_FIELD {
            return Err(CodecError::TooLong {
                len,
                limit: MAX_FIELD,
            });
        }
        self.take(len)
    }
    /// Reads a u32 item count and checks that `count` items of at least `min_item` bytes each
    /// fit in the rest of the input, so that a caller may allocate room for `count` items:
    /// the allocation is then bounded by the input's size, never by what a length field claims.
    pub fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, CodecError> {
        let count = self.u32()? as usize;
        let remaining = self.buf.len() - self.pos;
        if count.saturating_mul(min_item) > remaining {
            return Err(CodecError::Count {
                what,
                count,
                remaining,
            });
        }
        Ok(count)
    }
    pub fn op(&mut self) -> Result<Op, CodecError> {
        match self.u8()? {
            1 => {
                let key = self.bytes()?.to_vec();
                let value = self.bytes()?.to_vec();
                Ok(Op::Put { key, value })
            }
            2 => Ok(Op::Delete {
                key: self.bytes()?.to_vec(),
            }),
            tag => Err(CodecError::Tag { what: "op", tag }),
        }
    }
    /// Skips an op without copying its key or value.
    pub fn skip_op(&mut self) -> Result<(), CodecError> {
        match self.u8()? {
            1 => {
                self.bytes()?;
                self.bytes()?;
            }
            2 => {
                self.bytes()?;
            }
            tag => return Err(CodecError::Tag { what: "op", tag }),
        }
        Ok(())
    }
    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn entry(&mut self) -> Result<LogEntry, CodecError> {
        let epoch = self.u64()?;
        let seq = self.u64()?;
        let op = self.op()?;
        Ok(LogEntry { epoch, seq, op })
    }
    pub fn history(&mut self) -> Result<EpochHistory, CodecError> {
        let n = self.count("epoch history pairs", MIN_HISTORY_PAIR)?;
        let mut starts = Vec::with_capacity(n);
        for _ in 0..n {
            starts.push((self.u64()?, self.u64()?));
        }
        Ok(EpochHistory::from_starts(starts))
    }
    /// Whether every byte has been read (for optional trailing fields).
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// Encodes a log entry as stored in a partition's log table.
pub fn encode_entry(e: &LogEntry) -> Vec<u8> {
    let mut w = Writer::with_capacity(entry_size(e));
    w.u8(CODEC_VERSION);
    w.entry(e);
    w.buf
}

/// Appends a log entry, encoded as [`encode_entry`] does, to `buf`.
pub fn encode_entry_into(buf: &mut Vec<u8>, e: &LogEntry) {
    let mut w = Writer {
        buf: std::mem::take(buf),
    };
    w.u8(CODEC_VERSION);
    w.entry(e);
    *buf = w.buf;
}

/// At least the size of an entry's encoding ([`Writer::entry`], and the version byte of
/// [`encode_entry`]).
pub fn entry_size(e: &LogEntry) -> usize {
    1 + 16 + e.op.size()
}

pub fn decode_entry(b: &[u8]) -> Result<LogEntry, CodecError> {
    let mut r = Reader::new(b);
    let v = r.u8()?;
    if v != CODEC_VERSION {
        return Err(CodecError::Version(v));
    }
    let e = r.entry()?;
    r.finish()?;
    Ok(e)
}

/// Encodes a stored value: the version (sequence number of the write) then the bytes.
pub fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + value.len());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(value);
    b
}

pub fn decode_value(b: &[u8]) -> Result<(u64, &[u8]), CodecError> {
    let mut r = Reader::new(b);
    let version = r.u64()?;
    Ok((version, &b[8..]))
}

pub fn encode_history(h: &EpochHistory) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(CODEC_VERSION);
    w.history(h);
    w.buf
}

pub fn decode_history(b: &[u8]) -> Result<EpochHistory, CodecError> {
    let mut r = Reader::new(b);
    let v = r.u8()?;
    if v != CODEC_VERSION {
        return Err(CodecError::Version(v));
    }
    let h = r.history()?;
    r.finish()?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_garbage() {
        let e = LogEntry {
            epoch: 3,
            seq: 42,
            op: Op::Put {
                key: b"k".to_vec(),
                value: vec![7; 100],
            },
        };
        let b = encode_entry(&e);
        assert_eq!(decode_entry(&b), Ok(e));
        for cut in 0..b.len() {
            assert!(decode_entry(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = b.clone();
        bad[0] = 9;
        assert_eq!(decode_entry(&bad), Err(CodecError::Version(9)));
        let mut long = b;
        long.push(0);
        assert_eq!(decode_entry(&long), Err(CodecError::Trailing(1)));
    }

    #[test]
    fn values_and_histories_round_trip() {
        let v = encode_value(9, b"abc");
        assert_eq!(decode_value(&v), Ok((9, &b"abc"[..])));
        assert!(decode_value(&v[..3]).is_err());
        let h = EpochHistory::from_starts(vec![(1, 1), (4, 10)]);
        assert_eq!(decode_history(&encode_history(&h)), Ok(h));
    }

    /// Found by the `storage_codec` fuzz target: a 5-byte record claiming 65,280 history
    /// pairs made the decoder reserve 1 MiB before noticing the input was too short.
    #[test]
    fn a_history_count_beyond_the_input_is_refused_before_allocating() {
        assert_eq!(
            decode_history(&[1, 0x00, 0xff, 0x00, 0x00]),
            Err(CodecError::Count {
                what: "epoch history pairs",
                count: 0xff00,
                remaining: 0,
            })
        );
        // One pair short of the claim: refused up front too.
        let mut b = encode_history(&EpochHistory::from_starts(vec![(1, 1), (2, 5)]));
        b.truncate(b.len() - 16);
        assert_eq!(
            decode_history(&b),
            Err(CodecError::Count {
                what: "epoch history pairs",
                count: 2,
                remaining: 16,
            })
        );
    }
}
