//! Partition-map JSON (`map::PartitionMap`) as a node decodes it from `POST /peer/v1/map`,
//! from its own database and from `GET /v1/map`, followed by `PartitionMap::validate`.
//!
//! Checks: decoding and validation never panic and allocate only for what the input holds; a
//! decoded map serializes and decodes back to the same map with the same verdict; and a map
//! that validates satisfies what the node relies on afterwards: every key routes to an existing
//! partition, every primary is an in-sync replica, every member is a known node.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardedstore_node::map::PartitionMap;

fuzz_target!(|data: &[u8]| {
    shardedstore_fuzz::with_allocation_limit(data.len(), || {
        let Ok(map) = serde_json::from_slice::<PartitionMap>(data) else {
            return;
        };
        let verdict = map.validate();
        let json = serde_json::to_vec(&map).expect("a decoded map serializes");
        let back: PartitionMap = serde_json::from_slice(&json).expect("a serialized map decodes");
        assert_eq!(back, map, "the map does not survive a JSON round trip");
        assert_eq!(back.validate(), verdict);
        if verdict.is_err() {
            return;
        }
        let p = map.partition_of(data);
        assert!(p < map.partition_count() && map.entry(p).is_some());
        for entry in &map.partitions {
            if let Some(primary) = &entry.primary {
                assert!(entry.is_in_sync(primary) && entry.is_member(primary));
            }
            assert!(entry.members().all(|n| map.nodes.contains_key(n)));
        }
    });
});
