//! The format of one partition's backup object: a versioned header naming the partition and
//! the position of the snapshot, the key/value records in key order, and a trailer with the
//! record count (so a truncated object is recognised even without the manifest's checksum).
//!
//! ```text
//! header : "SSBACKUP" | u32 format | u32 partition | u64 epoch | u64 seq
//! record : u8 1 | u32 key length | key | u64 version | u32 value length | value
//! trailer: u8 0 | u64 record count
//! ```
//! Integers are little-endian. Pure code: the export and restore layers feed it bytes.

/// Magic bytes at the start of every partition object.
pub const MAGIC: &[u8; 8] = b"SSBACKUP";
/// Version of the partition object format.
pub const OBJECT_FORMAT: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;

/// What the header of a partition object says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectHeader {
    pub partition: u32,
    pub epoch: u64,
    pub seq: u64,
}

/// One key with its stored version and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub version: u64,
    pub value: Vec<u8>,
}

/// Why bytes are not a well-formed partition object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a ShardedStore backup object (bad magic bytes)")]
    BadMagic,
    #[error("backup object format {0} is not supported (this build reads format {OBJECT_FORMAT})")]
    UnsupportedFormat(u32),
    #[error("unknown record tag {0}")]
    BadTag(u8),
    #[error("the object ends before its trailer (truncated)")]
    Truncated,
    #[error("{0} bytes follow the trailer")]
    TrailingBytes(usize),
    #[error("the trailer counts {trailer} records, the object holds {found}")]
    CountMismatch { trailer: u64, found: u64 },
}

/// Encodes the header.
pub fn encode_header(h: &ObjectHeader) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&OBJECT_FORMAT.to_le_bytes());
    b.extend_from_slice(&h.partition.to_le_bytes());
    b.extend_from_slice(&h.epoch.to_le_bytes());
    b.extend_from_slice(&h.seq.to_le_bytes());
    b
}

/// Appends one record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, key: &[u8], version: u64, value: &[u8]) {
    buf.push(TAG_RECORD);
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
}

/// Encodes the trailer.
pub fn encode_trailer(records: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(9);
    b.push(TAG_END);
    b.extend_from_slice(&records.to_le_bytes());
    b
}

/// An item decoded from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Header(ObjectHeader),
    Record(Record),
    /// The trailer: the object is complete and holds this many records.
    End(u64),
}

/// Incremental decoder: [`Decoder::feed`] bytes as they arrive, take items with
/// [`Decoder::next_item`], and call [`Decoder::finish`] at the end of the stream.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
    header_seen: bool,
    records: u64,
    ended: bool,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Records decoded so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Item>, FormatError> {
        let rest = &self.buf[self.pos..];
        if self.ended {
            return match rest.len() {
                0 => Ok(None),
                n => Err(FormatError::TrailingBytes(n)),
            };
        }
        if !self.header_seen {
            if rest.len() < HEADER_LEN {
                if !MAGIC.starts_with(&rest[..rest.len().min(8)]) {
                    return Err(FormatError::BadMagic);
                }
                return Ok(None);
            }
            if &rest[..8] != MAGIC {
                return Err(FormatError::BadMagic);
            }
            let format = u32_at(rest, 8);
            if format != OBJECT_FORMAT {
                return Err(FormatError::UnsupportedFormat(format));
            }
            let h = ObjectHeader {
                partition: u32_at(rest, 12),
                epoch: u64_at(rest, 16),
                seq: u64_at(rest, 24),
            };
            self.pos += HEADER_LEN;
            self.header_seen = true;
            return Ok(Some(Item::Header(h)));
        }
        let Some(&tag) = rest.first() else {
            return Ok(None);
        };
        match tag {
            TAG_END => {
                if rest.len() < 9 {
                    return Ok(None);
                }
                let count = u64_at(rest, 1);
                self.pos += 9;
                self.ended = true;
                if count != self.records {
                    return Err(FormatError::CountMismatch {
                        trailer: count,
                        found: self.records,
                    });
                }
                Ok(Some(Item::End(count)))
            }
            TAG_RECORD => {
                if rest.len() < 5 {
                    return Ok(None);
                }
                let klen = u32_at(rest, 1) as usize;
                let vat = 5 + klen + 8;
                if rest.len() < vat + 4 {
                    return Ok(None);
                }
                let vlen = u32_at(rest, vat) as usize;
                let total = vat + 4 + vlen;
                if rest.len() < total {
                    return Ok(None);
                }
                let record = Record {
                    key: rest[5..5 + klen].to_vec(),
                    version: u64_at(rest, 5 + klen),
                    value: rest[vat + 4..total].to_vec(),
                };
                self.pos += total;
                self.records += 1;
                Ok(Some(Item::Record(record)))
            }
            t => Err(FormatError::BadTag(t)),
        }
    }

    /// Checks that the stream ended right after a trailer.
    pub fn finish(&self) -> Result<u64, FormatError> {
        if !self.ended {
            return Err(FormatError::Truncated);
        }
        match self.buf.len() - self.pos {
            0 => Ok(self.records),
            n => Err(FormatError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(records: &[(&[u8], u64, &[u8])]) -> Vec<u8> {
        let mut b = encode_header(&ObjectHeader {
            partition: 7,
            epoch: 3,
            seq: 42,
        });
        for (k, v, val) in records {
            encode_record(&mut b, k, *v, val);
        }
        b.extend(encode_trailer(records.len() as u64));
        b
    }

    fn decode_all(bytes: &[u8], step: usize) -> Result<Vec<Item>, FormatError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            d.feed(chunk);
            while let Some(item) = d.next_item()? {
                out.push(item);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trips_in_any_chunking() {
        let bytes = object(&[(b"a", 1, b"x"), (b"bb", 9, b""), (b"", 2, b"long value")]);
        for step in [1, 3, 7, 1000] {
            let items = decode_all(&bytes, step).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(items.len(), 5);
            assert_eq!(
                items[0],
                Item::Header(ObjectHeader {
                    partition: 7,
                    epoch: 3,
                    seq: 42
                })
            );
            assert_eq!(
                items[2],
                Item::Record(Record {
                    key: b"bb".to_vec(),
                    version: 9,
                    value: Vec::new()
                })
            );
            assert_eq!(items[4], Item::End(3));
        }
    }

    #[test]
    fn an_empty_partition_is_a_header_and_a_trailer() {
        let items = decode_all(&object(&[]), 5).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn truncation_is_detected_at_every_cut() {
        let bytes = object(&[(b"a", 1, b"x"), (b"b", 2, b"y")]);
        for cut in 0..bytes.len() {
            assert!(decode_all(&bytes[..cut], 4).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_and_miscounts_are_refused() {
        let mut bytes = object(&[(b"a", 1, b"x")]);
        bytes[0] = b'X';
        assert_eq!(decode_all(&bytes, 64), Err(FormatError::BadMagic));

        let mut bytes = object(&[(b"a", 1, b"x")]);
        bytes.push(0);
        assert_eq!(decode_all(&bytes, 64), Err(FormatError::TrailingBytes(1)));

        let mut bytes = encode_header(&ObjectHeader {
            partition: 0,
            epoch: 1,
            seq: 1,
        });
        encode_record(&mut bytes, b"k", 1, b"v");
        bytes.extend(encode_trailer(2));
        assert_eq!(
            decode_all(&bytes, 64),
            Err(FormatError::CountMismatch {
                trailer: 2,
                found: 1
            })
        );

        let mut bytes = object(&[]);
        bytes[8] = 9;
        assert_eq!(
            decode_all(&bytes, 64),
            Err(FormatError::UnsupportedFormat(9))
        );
    }
}
