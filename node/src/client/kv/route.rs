//! Routing as pure functions: endpoint lists, key encoding, and which node serves a key.

use super::LocalReadOptions;
use super::error::{AttemptError, KvError};
use crate::map::{Limits, PartitionMap};

/// Normalize endpoint arguments: each may be a comma-separated list, may carry an
/// `http://` or `https://` scheme or a trailing `/`; empty items are dropped.
pub fn parse_endpoints<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|item| item.as_ref().split(','))
        .map(|e| {
            let e = e.trim();
            let e = e.strip_prefix("http://").unwrap_or(e);
            let e = e.strip_prefix("https://").unwrap_or(e);
            e.trim_end_matches('/').to_owned()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// True when any endpoint argument names the `https` scheme.
pub fn wants_https<S: AsRef<str>>(items: &[S]) -> bool {
    items
        .iter()
        .flat_map(|item| item.as_ref().split(','))
        .any(|e| e.trim().starts_with("https://"))
}

/// Percent-encode a key as one URL path segment: every byte outside the RFC 3986
/// unreserved set (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, so any byte string round-trips.
pub fn encode_key(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len() * 3);
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Client-side key check, so a request that the node must refuse is never sent.
pub fn check_key(key: &[u8], limits: Option<&Limits>) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    // URL parsers resolve `.` and `..` segments (even percent-encoded) before sending.
    match key {
        b"." => return Err(KvError::UnaddressableKey(".")),
        b".." => return Err(KvError::UnaddressableKey("..")),
        _ => {}
    }
    if let Some(l) = limits
        && key.len() > l.max_key_bytes as usize
    {
        return Err(KvError::KeyTooLarge {
            len: key.len(),
            max: l.max_key_bytes,
        });
    }
    Ok(())
}

/// Client-side value check against the store's limits.
pub fn check_value(value: &[u8], limits: &Limits) -> Result<(), KvError> {
    if value.len() > limits.max_value_bytes as usize {
        return Err(KvError::ValueTooLarge {
            len: value.len(),
            max: limits.max_value_bytes,
        });
    }
    Ok(())
}

/// URL of a key on the node at `addr`; a local read carries its consistency and staleness
/// bound in the query.
pub fn kv_url(scheme: &str, addr: &str, key: &[u8], local: Option<&LocalReadOptions>) -> String {
    let mut url = format!("{scheme}://{addr}/v1/kv/{}", encode_key(key));
    if let Some(o) = local {
        url.push_str("?consistency=local");
        if let Some(max) = o.max_staleness {
            url.push_str(&format!("&max-staleness-ms={}", max.as_millis()));
        }
    }
    url
}

/// Client address of the primary of `key`'s partition.
pub fn primary_addr<'m>(map: &'m PartitionMap, key: &[u8]) -> Result<&'m str, AttemptError> {
    let partition = map.partition_of(key);
    map.entry(partition)
        .and_then(|e| e.primary.as_ref())
        .and_then(|p| map.nodes.get(p))
        .map(|n| n.client_addr.as_str())
        .ok_or(AttemptError::NoReplica {
            partition,
            map_version: map.version,
        })
}

/// Client address of an in-sync replica of `key`'s partition for a `consistency=local`
/// read: one in `zone` when there is one, otherwise the `pick`-th in-sync replica (callers
/// pass a random number to spread reads).
pub fn local_read_addr<'m>(
    map: &'m PartitionMap,
    key: &[u8],
    zone: Option<&str>,
    pick: usize,
) -> Result<&'m str, AttemptError> {
    let partition = map.partition_of(key);
    let candidates: Vec<_> = map
        .entry(partition)
        .map(|e| e.in_sync.iter().filter_map(|n| map.nodes.get(n)).collect())
        .unwrap_or_default();
    let in_zone = zone.and_then(|z| {
        candidates
            .iter()
            .find(|n| n.zone.as_deref() == Some(z))
            .copied()
    });
    in_zone
        .or_else(|| candidates.get(pick % candidates.len().max(1)).copied())
        .map(|n| n.client_addr.as_str())
        .ok_or(AttemptError::NoReplica {
            partition,
            map_version: map.version,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{NodeInfo, NodeState, PartitionEntry};

    pub(crate) fn node(addr: &str, zone: Option<&str>) -> NodeInfo {
        NodeInfo {
            client_addr: addr.into(),
            peer_addr: format!("peer-{addr}"),
            zone: zone.map(Into::into),
            state: NodeState::Active,
        }
    }

    fn three_node_map() -> PartitionMap {
        let mut m = PartitionMap::empty("s", 8, 3, 2);
        m.version = 5;
        for (i, z) in ["a", "b", "c"].iter().enumerate() {
            m.nodes
                .insert(format!("node-{i}"), node(&format!("h{i}:7000"), Some(z)));
        }
        for (p, e) in m.partitions.iter_mut().enumerate() {
            let primary = format!("node-{}", p % 3);
            *e = PartitionEntry {
                epoch: 1,
                primary: Some(primary.clone()),
                replicas: vec!["node-0".into(), "node-1".into(), "node-2".into()],
                in_sync: vec![primary, format!("node-{}", (p + 1) % 3)],
                learners: vec![],
            };
        }
        m
    }

    #[test]
    fn endpoints_accept_lists_schemes_and_repeats() {
        let got = parse_endpoints(&["a:1, b:2", "http://c:3/", " ", "d:4,", "https://e:5"]);
        assert_eq!(got, vec!["a:1", "b:2", "c:3", "d:4", "e:5"]);
        assert!(parse_endpoints::<&str>(&[]).is_empty());
        assert!(wants_https(&["a:1,https://e:5"]));
        assert!(!wants_https(&["a:1", "http://c:3"]));
    }

    #[test]
    fn keys_encode_as_one_path_segment() {
        assert_eq!(encode_key(b"greeting"), "greeting");
        assert_eq!(encode_key(b"a/b c?d#e%"), "a%2Fb%20c%3Fd%23e%25");
        assert_eq!(encode_key(b"A-z.0_9~"), "A-z.0_9~");
        assert_eq!(encode_key(&[0x00, 0xff, b'+']), "%00%FF%2B");
        assert_eq!(encode_key("é".as_bytes()), "%C3%A9");
        let local = LocalReadOptions::default();
        assert_eq!(
            kv_url("http", "h:7000", b"x y", Some(&local)),
            "http://h:7000/v1/kv/x%20y?consistency=local"
        );
        let bounded = LocalReadOptions {
            max_staleness: Some(std::time::Duration::from_millis(250)),
            ..local
        };
        assert_eq!(
            kv_url("https", "h:7000", b"k", Some(&bounded)),
            "https://h:7000/v1/kv/k?consistency=local&max-staleness-ms=250"
        );
        assert_eq!(
            kv_url("http", "h:7000", b"k", None),
            "http://h:7000/v1/kv/k"
        );
    }

    #[test]
    fn every_byte_string_round_trips_through_the_encoding() {
        let key: Vec<u8> = (0..=255u8).collect();
        let enc = encode_key(&key);
        assert!(enc.bytes().all(|b| b.is_ascii_graphic() && b != b'/'));
        let mut back = Vec::new();
        let bytes = enc.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                back.push(u8::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{e}")));
                i += 3;
            } else {
                back.push(bytes[i]);
                i += 1;
            }
        }
        assert_eq!(back, key);
    }

    #[test]
    fn key_checks_follow_the_limits() {
        let l = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
        };
        assert!(matches!(check_key(b"", None), Err(KvError::EmptyKey)));
        assert!(matches!(
            check_key(b"..", None),
            Err(KvError::UnaddressableKey(_))
        ));
        assert!(check_key(b"...", None).is_ok());
        assert!(check_key(b"abcd", Some(&l)).is_ok());
        assert!(matches!(
            check_key(b"abcde", Some(&l)),
            Err(KvError::KeyTooLarge { len: 5, max: 4 })
        ));
        assert!(check_value(&[0; 8], &l).is_ok());
        assert!(matches!(
            check_value(&[0; 9], &l),
            Err(KvError::ValueTooLarge { len: 9, max: 8 })
        ));
    }

    #[test]
    fn keys_route_to_the_primary_of_their_partition() {
        let m = three_node_map();
        for i in 0..200 {
            let key = format!("k{i}");
            let p = crate::map::partition_of(key.as_bytes(), 8) as usize;
            let want = format!("h{}:7000", p % 3);
            assert_eq!(primary_addr(&m, key.as_bytes()).ok(), Some(want.as_str()));
        }
    }

    #[test]
    fn a_partition_without_primary_is_reported() {
        let mut m = three_node_map();
        let p = m.partition_of(b"k");
        m.partitions[p as usize].primary = None;
        assert!(matches!(
            primary_addr(&m, b"k"),
            Err(AttemptError::NoReplica { partition, map_version: 5 }) if partition == p
        ));
    }

    #[test]
    fn local_reads_prefer_the_zone_and_use_only_in_sync_replicas() {
        let m = three_node_map();
        let key = b"some-key";
        let p = m.partition_of(key) as usize;
        let in_sync: Vec<String> = [p % 3, (p + 1) % 3]
            .iter()
            .map(|i| format!("h{i}:7000"))
            .collect();
        for pick in 0..10 {
            let got = local_read_addr(&m, key, None, pick).unwrap_or("none");
            assert!(in_sync.iter().any(|a| a == got), "{got}");
        }
        let zone = ["a", "b", "c"][(p + 1) % 3];
        assert_eq!(
            local_read_addr(&m, key, Some(zone), 0).ok(),
            Some(in_sync[1].as_str())
        );
        // A zone without an in-sync replica falls back to any in-sync replica.
        let other = ["a", "b", "c"][(p + 2) % 3];
        let got = local_read_addr(&m, key, Some(other), 1).unwrap_or("none");
        assert!(in_sync.iter().any(|a| a == got), "{got}");
    }
}
