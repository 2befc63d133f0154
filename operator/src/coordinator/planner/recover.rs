//! Recovering a lost map: when the map store holds no map (ConfigMap or `map.json` deleted,
//! store re-created over retained volumes), or an older one than some node holds, the newest
//! map the nodes persisted is adopted instead of bootstrapping a fresh one over them.
//!
//! Maps are written to the store before any node installs them, so a node can only hold a
//! newer map than the store when the store lost it. Bootstrapping version 1 then would make
//! every node refuse it (they never go back to an older map), and once its version passed
//! theirs, its low epochs and fresh placement would depose every primary and drop copies.

use super::{BOOTSTRAP_GRACE, Call, Inputs, Plan};
use crate::coordinator::status::CoordinatorEvent;
use shardedstore_node::map::NodeId;

/// The alive node reporting the newest installed map, and that map's version (none when no
/// alive node holds a map).
pub(super) fn newest_on_nodes(inputs: &Inputs<'_>) -> Option<(NodeId, u64)> {
    let obs = inputs.obs;
    obs.reports
        .iter()
        .filter(|(n, r)| obs.is_alive(n) && r.map_version > 0)
        .max_by_key(|(n, r)| (r.map_version, std::cmp::Reverse((*n).clone())))
        .map(|(n, r)| (n.clone(), r.map_version))
}

/// Adopts the newest map held by `node` (`version` as reported): fetches it, then writes it
/// to the store unchanged, so the version sequence continues from the nodes'.
pub(super) fn recover(inputs: &Inputs<'_>, node: &NodeId, version: u64) -> Plan {
    let Inputs {
        store,
        membership,
        obs,
        ..
    } = inputs;
    // With no stored map at all, give every node a chance to report before choosing the
    // newest (the same wait as the first map's).
    if inputs.map.is_none() {
        let all = membership.nodes.iter().all(|n| obs.is_alive(&n.id));
        if !all && obs.now < obs.started + BOOTSTRAP_GRACE {
            return Plan::default();
        }
    }
    match obs.node_maps.get(node) {
        Some(map) if map.version >= version && map.store == *store && map.validate().is_ok() => {
            Plan {
                events: vec![CoordinatorEvent::MapRecovered {
                    version: map.version,
                    from: node.clone(),
                }],
                map: Some(map.clone()),
                calls: Vec::new(),
                target: None,
            }
        }
        _ => {
            let Some(member) = membership.node(node) else {
                return Plan::default();
            };
            Plan {
                calls: vec![Call::FetchMap {
                    node: node.clone(),
                    client_addr: member.client_addr.clone(),
                }],
                ..Plan::default()
            }
        }
    }
}
