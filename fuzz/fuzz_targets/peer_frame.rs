//! Peer replication frames (`replication::frame`): the bodies a node accepts on its peer port.
//!
//! Every input is offered to each frame decoder. Checks: decoding returns `Err` instead of
//! panicking; it allocates only for what the input holds (see the crate docs); a decoded frame
//! re-encodes to bytes that decode to the same frame, and that encoding is a fixed point
//! (encode ∘ decode ∘ encode = encode), so a frame relayed by a node is relayed unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardedstore_node::replication::frame::{Append, Probe, ProbeReply, Reply, SnapshotChunk};
use shardedstore_node::storage::codec::CodecError;
use std::fmt::Debug;

fn check<T: PartialEq + Debug>(
    data: &[u8],
    decode: fn(&[u8]) -> Result<T, CodecError>,
    encode: fn(&T) -> Vec<u8>,
) {
    let Ok(frame) = decode(data) else { return };
    let bytes = encode(&frame);
    let again = decode(&bytes);
    assert_eq!(
        again.as_ref(),
        Ok(&frame),
        "a re-encoded frame decodes differently"
    );
    if let Ok(again) = again {
        assert_eq!(encode(&again), bytes, "encoding is not a fixed point");
    }
}

fuzz_target!(|data: &[u8]| {
    shardedstore_fuzz::with_allocation_limit(data.len(), || {
        check(data, Probe::decode, Probe::encode);
        check(data, ProbeReply::decode, ProbeReply::encode);
        check(data, Append::decode, Append::encode);
        check(data, SnapshotChunk::decode, SnapshotChunk::encode);
        check(data, Reply::decode, Reply::encode);
    });
});
