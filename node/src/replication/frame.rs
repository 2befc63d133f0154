//! Binary frames of the replication protocol on the peer port (bodies of
//! `POST /peer/v1/partitions/{p}/{probe,append,snapshot}`).
//!
//! Every frame starts with the version byte [`CODEC_VERSION`] and a kind byte; decoding
//! rejects unknown versions and kinds, truncated input and trailing bytes.
//!
//! Probe, append and snapshot frames end with the sender's replication session id (see
//! [`super::session`]); a frame without it (from an older node) decodes with session 0.

use crate::admin_api::LogPosition;
use crate::replication::epochs::EpochHistory;
use crate::storage::codec::{CODEC_VERSION, CodecError, LogEntry, MIN_ENTRY, Reader, Writer};
use std::sync::Arc;

const KIND_PROBE: u8 = 1;
const KIND_APPEND: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
const KIND_REPLY: u8 = 4;
const KIND_PROBE_REPLY: u8 = 5;
const KIND_APPEND_BATCH: u8 = 6;
const KIND_BATCH_REPLY: u8 = 7;

/// Smallest encoded item of a batch: a partition id and an empty length-prefixed field.
const MIN_BATCH_ITEM: usize = 8;

/// Primary → replica: "where does your log end?" (the start of every catch-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub epoch: u64,
    pub leader: String,
    pub session: u64,
}

/// Replica → primary: its log bounds and epoch history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReply {
    pub status: Status,
    pub epoch: u64,
    pub base: LogPosition,
    pub last: LogPosition,
    pub applied_seq: u64,
    pub history: EpochHistory,
}

/// Primary → replica: log entries following `prev`, after optionally truncating to `truncate_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub epoch: u64,
    pub leader: String,
    pub truncate_to: Option<u64>,
    pub prev: LogPosition,
    pub commit_seq: u64,
    pub entries: Vec<Arc<LogEntry>>,
    pub session: u64,
    /// Appends the primary keeps in flight in this session (1–4): it sent this one only
    /// after the answer to the one this many before it. Encoded only when above 1, so the
    /// frames of a primary without pipelining are those of older versions.
    pub in_flight: u8,
}

/// The end of a snapshot: the position the replica's log restarts after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEnd {
    pub base: LogPosition,
    pub history: EpochHistory,
    pub keys: u64,
    pub bytes: u64,
}

/// Primary → replica: one chunk of a consistent snapshot of the partition's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub epoch: u64,
    pub leader: String,
    pub snapshot_id: u64,
    pub first: bool,
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    pub end: Option<SnapshotEnd>,
    pub session: u64,
}

/// Outcome of a replication message at the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// The message's epoch is older than the replica's; `epoch` in the reply is the newer one.
    StaleEpoch = 1,
    /// `prev` does not match the replica's log end: probe again.
    Mismatch = 2,
    /// The replica holds no copy of the partition and its map does not make it a member.
    NotMember = 3,
    /// A snapshot chunk arrived out of order: restart the snapshot.
    SnapshotOutOfOrder = 4,
    /// The message belongs to an older replication session than one the replica accepted.
    StaleSession = 5,
}

impl Status {
    fn from_u8(v: u8) -> Result<Self, CodecError> {
        Ok(match v {
            0 => Status::Ok,
            1 => Status::StaleEpoch,
            2 => Status::Mismatch,
            3 => Status::NotMember,
            4 => Status::SnapshotOutOfOrder,
            5 => Status::StaleSession,
            tag => {
                return Err(CodecError::Tag {
                    what: "status",
                    tag,
                });
            }
        })
    }
}

/// Replica → primary: the answer to an append or a snapshot chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub epoch: u64,
    /// The replica's durable log end after handling the message.
    pub last: LogPosition,
}

fn header(kind: u8) -> Writer {
    let mut w = Writer::default();
    w.u8(CODEC_VERSION);
    w.u8(kind);
    w
}

fn open(b: &[u8], kind: u8) -> Result<Reader<'_>, CodecError> {
    let mut r = Reader::new(b);
    let v = r.u8()?;
    if v != CODEC_VERSION {
        return Err(CodecError::Version(v));
    }
    let k = r.u8()?;
    if k != kind {
        return Err(CodecError::Tag {
            what: "frame kind",
            tag: k,
        });
    }
    Ok(r)
}

fn position(w: &mut Writer, p: LogPosition) {
    w.u64(p.last_epoch);
    w.u64(p.last_seq);
}

fn read_position(r: &mut Reader<'_>) -> Result<LogPosition, CodecError> {
    Ok(LogPosition {
        last_epoch: r.u64()?,
        last_seq: r.u64()?,
    })
}

fn read_string(r: &mut Reader<'_>) -> Result<String, CodecError> {
    Ok(String::from_utf8_lossy(r.bytes()?).into_owned())
}

/// The trailing session id (0 when absent: a sender older than sessions).
fn read_session(r: &mut Reader<'_>) -> Result<u64, CodecError> {
    if r.at_end() { Ok(0) } else { r.u64() }
}

impl Probe {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = header(KIND_PROBE);
        w.u64(self.epoch);
        w.bytes(self.leader.as_bytes());
        w.u64(self.session);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_PROBE)?;
        let p = Self {
            epoch: r.u64()?,
            leader: read_string(&mut r)?,
            session: read_session(&mut r)?,
        };
        r.finish()?;
        Ok(p)
    }
}

impl ProbeReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = header(KIND_PROBE_REPLY);
        w.u8(self.status as u8);
        w.u64(self.epoch);
        position(&mut w, self.base);
        position(&mut w, self.last);
        w.u64(self.applied_seq);
        w.history(&self.history);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_PROBE_REPLY)?;
        let p = Self {
            status: Status::from_u8(r.u8()?)?,
            epoch: r.u64()?,
            base: read_position(&mut r)?,
            last: read_position(&mut r)?,
            applied_seq: r.u64()?,
            history: r.history()?,
        };
        r.finish()?;
        Ok(p)
    }
}

impl Append {
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: the entries' values are copied once.
        let entries: usize = self.entries.iter().map(|e| 16 + e.op.size()).sum();
        let mut w = Writer::with_capacity(64 + self.leader.len() + entries);
        w.u8(CODEC_VERSION);
        w.u8(KIND_APPEND);
        w.u64(self.epoch);
        w.bytes(self.leader.as_bytes());
        match self.truncate_to {
            Some(t) => {
                w.u8(1);
                w.u64(t);
            }
            None => w.u8(0),
        }
        position(&mut w, self.prev);
        w.u64(self.commit_seq);
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            w.entry(e);
        }
        w.u64(self.session);
        if self.in_flight > 1 {
            w.u8(self.in_flight);
        }
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_APPEND)?;
        let epoch = r.u64()?;
        let leader = read_string(&mut r)?;
        let truncate_to = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            tag => {
                return Err(CodecError::Tag {
                    what: "option",
                    tag,
                });
            }
        };
        let prev = read_position(&mut r)?;
        let commit_seq = r.u64()?;
        let n = r.count("log entries", MIN_ENTRY)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(Arc::new(r.entry()?));
        }
        let session = read_session(&mut r)?;
        let in_flight = if r.at_end() { 1 } else { r.u8()?.max(1) };
        r.finish()?;
        Ok(Self {
            epoch,
            leader,
            truncate_to,
            prev,
            commit_seq,
            entries,
            session,
            in_flight,
        })
    }
}

impl SnapshotChunk {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = header(KIND_SNAPSHOT);
        w.u64(self.epoch);
        w.bytes(self.leader.as_bytes());
        w.u64(self.snapshot_id);
        w.u8(u8::from(self.first));
        w.u32(self.items.len() as u32);
        for (k, v) in &self.items {
            w.bytes(k);
            w.bytes(v);
        }
        match &self.end {
            Some(end) => {
                w.u8(1);
                position(&mut w, end.base);
                w.history(&end.history);
                w.u64(end.keys);
                w.u64(end.bytes);
            }
            None => w.u8(0),
        }
        w.u64(self.session);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_SNAPSHOT)?;
        let epoch = r.u64()?;
        let leader = read_string(&mut r)?;
        let snapshot_id = r.u64()?;
        let first = r.u8()? != 0;
        // An item is at least its two u32 length prefixes.
        let n = r.count("snapshot items", 8)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r.bytes()?.to_vec();
            let v = r.bytes()?.to_vec();
            items.push((k, v));
        }
        let end = match r.u8()? {
            0 => None,
            1 => Some(SnapshotEnd {
                base: read_position(&mut r)?,
                history: r.history()?,
                keys: r.u64()?,
                bytes: r.u64()?,
            }),
            tag => {
                return Err(CodecError::Tag {
                    what: "option",
                    tag,
                });
            }
        };
        let session = read_session(&mut r)?;
        r.finish()?;
        Ok(Self {
            epoch,
            leader,
            snapshot_id,
            first,
            items,
            end,
            session,
        })
    }
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = header(KIND_REPLY);
        w.u8(self.status as u8);
        w.u64(self.epoch);
        position(&mut w, self.last);
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_REPLY)?;
        let reply = Self {
            status: Status::from_u8(r.u8()?)?,
            epoch: r.u64()?,
            last: read_position(&mut r)?,
        };
        r.finish()?;
        Ok(reply)
    }
}

/// Primary node → member node: appends of several partitions in one request
/// (`POST /peer/v1/appends`). Each item is an encoded [`Append`] frame, handled exactly as if
/// it had come alone; the items are independent (at most one per partition is in flight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendBatch {
    pub items: Vec<(u32, Vec<u8>)>,
}

impl AppendBatch {
    /// Encodes already-encoded append frames, by partition.
    pub fn encode<'a>(items: impl ExactSizeIterator<Item = (u32, &'a [u8])>) -> Vec<u8> {
        let items: Vec<(u32, &[u8])> = items.collect();
        // Sized up front: the frames are copied once.
        let mut w =
            Writer::with_capacity(8 + items.iter().map(|(_, f)| 8 + f.len()).sum::<usize>());
        w.u8(CODEC_VERSION);
        w.u8(KIND_APPEND_BATCH);
        w.u32(items.len() as u32);
        for (partition, frame) in items {
            w.u32(partition);
            w.bytes(frame);
        }
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_APPEND_BATCH)?;
        let n = r.count("batched appends", MIN_BATCH_ITEM)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push((r.u32()?, r.bytes()?.to_vec()));
        }
        r.finish()?;
        Ok(Self { items })
    }
}

/// Member node → primary node: one outcome per item of an [`AppendBatch`], in its order —
/// the item's [`Reply`], or the HTTP status the append would have been answered alone
/// (400 for a malformed frame, 500 for a storage error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchReply {
    pub items: Vec<Result<Reply, u16>>,
}

impl BatchReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = header(KIND_BATCH_REPLY);
        w.u32(self.items.len() as u32);
        for item in &self.items {
            match item {
                Ok(reply) => {
                    w.u32(200);
                    w.bytes(&reply.encode());
                }
                Err(status) => {
                    w.u32(u32::from(*status));
                    w.bytes(&[]);
                }
            }
        }
        w.buf
    }
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = open(b, KIND_BATCH_REPLY)?;
        let n = r.count("batch replies", MIN_BATCH_ITEM)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let status = r.u32()?;
            let body = r.bytes()?;
            items.push(match status {
                200 => Ok(Reply::decode(body)?),
                s => Err(u16::try_from(s).map_err(|_| CodecError::Tag {
                    what: "batch item status",
                    tag: u8::MAX,
                })?),
            });
        }
        r.finish()?;
        Ok(Self { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::codec::Op;

    #[test]
    fn append_batches_and_their_replies_round_trip() {
        let a = append().encode();
        let b = Append {
            entries: Vec::new(),
            ..append()
        }
        .encode();
        let batch = AppendBatch::encode([(3, a.as_slice()), (7, b.as_slice())].into_iter());
        let items = vec![(3, a.clone()), (7, b)];
        assert_eq!(AppendBatch::decode(&batch), Ok(AppendBatch { items }));
        assert_eq!(Append::decode(&a), Ok(append()));
        // Truncated or trailing bytes are refused, like every frame.
        assert!(AppendBatch::decode(&batch[..batch.len() - 1]).is_err());
        let mut long = batch.clone();
        long.push(0);
        assert!(AppendBatch::decode(&long).is_err());
        // A count larger than the input could hold is refused before allocating.
        let mut huge = header(KIND_APPEND_BATCH);
        huge.u32(u32::MAX);
        assert!(AppendBatch::decode(&huge.buf).is_err());

        let reply = BatchReply {
            items: vec![
                Ok(Reply {
                    status: Status::Mismatch,
                    epoch: 4,
                    last: LogPosition {
                        last_epoch: 3,
                        last_seq: 9,
                    },
                }),
                Err(500),
            ],
        };
        assert_eq!(BatchReply::decode(&reply.encode()), Ok(reply));
        assert!(BatchReply::decode(&a).is_err());
    }

    fn append() -> Append {
        Append {
            epoch: 2,
            leader: "node-0".into(),
            truncate_to: Some(5),
            prev: LogPosition {
                last_epoch: 1,
                last_seq: 5,
            },
            commit_seq: 4,
            entries: vec![Arc::new(LogEntry {
                epoch: 2,
                seq: 6,
                op: Op::Delete { key: b"k".to_vec() },
            })],
            session: 9,
            in_flight: 1,
        }
    }

    #[test]
    fn frames_round_trip() {
        let a = append();
        assert_eq!(Append::decode(&a.encode()), Ok(a.clone()));
        // Without pipelining an append is encoded as by versions before it; with it, the
        // window follows the session id.
        let mut old = a.encode();
        assert_eq!(old.split_off(old.len() - 8), 9u64.to_le_bytes());
        let piped = Append { in_flight: 4, ..a };
        assert_eq!(piped.encode().len(), old.len() + 9);
        assert_eq!(Append::decode(&piped.encode()), Ok(piped));
        let s = SnapshotChunk {
            epoch: 1,
            leader: "n".into(),
            snapshot_id: 7,
            first: true,
            items: vec![(b"a".to_vec(), b"b".to_vec())],
            end: Some(SnapshotEnd {
                base: LogPosition::default(),
                history: EpochHistory::from_starts(vec![(1, 1)]),
                keys: 1,
                bytes: 2,
            }),
            session: 4,
        };
        assert_eq!(SnapshotChunk::decode(&s.encode()), Ok(s));
        let p = Probe {
            epoch: 2,
            leader: "n".into(),
            session: 5,
        };
        assert_eq!(Probe::decode(&p.encode()), Ok(p));
        // A frame of a sender older than sessions decodes with session 0.
        let mut old = append().encode();
        old.truncate(old.len() - 8);
        assert_eq!(Append::decode(&old).map(|a| a.session), Ok(0));
        let r = Reply {
            status: Status::Mismatch,
            epoch: 3,
            last: LogPosition::default(),
        };
        assert_eq!(Reply::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn truncated_garbage_and_wrong_kind_frames_are_rejected() {
        let b = append().encode();
        // Without its last 8 bytes the frame is a valid sessionless one.
        for cut in (0..b.len()).filter(|&c| c != b.len() - 8) {
            assert!(Append::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Reply::decode(&b).is_err());
        assert!(Append::decode(b"\xff\xff garbage").is_err());
        let mut huge = b[..2].to_vec();
        huge.extend_from_slice(&[0xff; 64]);
        assert!(Append::decode(&huge).is_err());
    }

    /// Found by the `peer_frame` fuzz target: a 27-byte snapshot frame claiming 419 million
    /// items made the replica reserve room for 4,096 of them (192 KiB) before reading any.
    #[test]
    fn item_counts_beyond_the_frame_are_refused_before_allocating() {
        let crash = [
            1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0x19,
        ];
        assert_eq!(
            SnapshotChunk::decode(&crash),
            Err(CodecError::Count {
                what: "snapshot items",
                count: 0x1900_0000,
                remaining: 0,
            })
        );
        // An append frame claiming more entries than its bytes can hold.
        let mut a = append();
        a.entries.clear();
        let mut b = a.encode();
        let count_at = b.len() - 8 - 4;
        b[count_at..count_at + 4].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(
            Append::decode(&b),
            Err(CodecError::Count {
                what: "log entries",
                count: 4096,
                remaining: 8,
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Append::decode(&bytes);
            let _ = SnapshotChunk::decode(&bytes);
            let _ = Probe::decode(&bytes);
            let _ = ProbeReply::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }

        #[test]
        fn corrupting_one_byte_never_panics(pos in 0usize..64, value in proptest::prelude::any::<u8>()) {
            let mut b = append().encode();
            let i = pos % b.len();
            b[i] = value;
            let _ = Append::decode(&b);
        }
    }
}
