//! A null store for measuring the limits of the request path: the same HTTP server stack
//! (warp on hyper, one listener) and the same client answer shape as a node, with no storage
//! and no replication. `shardedstore echo-server` serves it; `shardedstore bench` against it
//! measures what the load generator, the client library and the HTTP layer alone sustain on
//! this machine, so ShardedStore's figures can be read against that ceiling.
//!
//! It answers `GET /v1/map` with a one-partition map naming itself, `PUT /v1/kv/{key}` with
//! 200 (the body is read and dropped) and `GET /v1/kv/{key}` with a fixed value.

use crate::map::{NodeInfo, NodeState, PartitionEntry, PartitionMap};
use bytes::Bytes;
use std::net::SocketAddr;
use warp::Filter;
use warp::http::StatusCode;

/// Node id the echo server gives itself in its map.
pub const ECHO_NODE: &str = "echo";

/// A valid one-partition map whose only node, [`ECHO_NODE`], is at `addr`.
pub fn echo_map(addr: SocketAddr) -> PartitionMap {
    let mut map = PartitionMap::empty("echo", 1, 1, 1);
    map.version = 1;
    map.nodes.insert(
        ECHO_NODE.to_owned(),
        NodeInfo {
            client_addr: addr.to_string(),
            peer_addr: addr.to_string(),
            zone: None,
            state: NodeState::Active,
        },
    );
    map.partitions[0] = PartitionEntry {
        epoch: 1,
        primary: Some(ECHO_NODE.to_owned()),
        replicas: vec![ECHO_NODE.to_owned()],
        in_sync: vec![ECHO_NODE.to_owned()],
        learners: Vec::new(),
    };
    map
}

/// Serve the null store on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, value_size: usize) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let map = warp::path!("v1" / "map")
        .and(warp::get())
        .map(move || warp::reply::json(&echo_map(addr)));
    let put = warp::path!("v1" / "kv" / String)
        .and(warp::put())
        .and(warp::body::bytes())
        .map(|_key: String, _body: Bytes| {
            warp::reply::with_header(
                warp::reply::with_status(warp::reply(), StatusCode::OK),
                "x-version",
                "1",
            )
        });
    let value = Bytes::from(vec![b'x'; value_size]);
    let get = warp::path!("v1" / "kv" / String)
        .and(warp::get())
        .map(move |_key: String| {
            warp::reply::with_header(
                warp::reply::with_status(value.to_vec(), StatusCode::OK),
                "x-version",
                "1",
            )
        });
    warp::serve(map.or(put).or(get))
        .incoming(listener)
        .run()
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_echo_map_is_a_valid_single_node_map() {
        let map = echo_map(SocketAddr::from(([127, 0, 0, 1], 7999)));
        assert!(map.validate().is_ok(), "{:?}", map.validate());
        assert_eq!(map.partitions[0].primary.as_deref(), Some(ECHO_NODE));
        assert_eq!(map.nodes[ECHO_NODE].client_addr, "127.0.0.1:7999");
    }
}
