//! `bench-placement`: times placement of a large cluster (4096 partitions × 100 nodes by
//! default) from scratch and after a scale-out. Prints figures; never asserts on timing.

use super::{PlacementNode, check, moves, place};
use shardedstore_node::map::{NodeInfo, NodeState, PartitionEntry, PartitionMap};
use std::time::{Duration, Instant};

/// Timings of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub partitions: u32,
    pub nodes: usize,
    pub replication_factor: u32,
    /// Initial placement onto an empty map.
    pub initial: Duration,
    /// Re-placement after adding 10% more nodes.
    pub scale_out: Duration,
    pub scale_out_moves: usize,
    /// Invariant violations found (expected 0).
    pub violations: usize,
}

fn nodes(count: usize, zones: usize) -> Vec<PlacementNode> {
    (0..count)
        .map(|i| PlacementNode {
            id: format!("node-{i}"),
            state: NodeState::Active,
            zone: (zones > 0).then(|| format!("zone-{}", i % zones)),
        })
        .collect()
}

/// Applies `target` to `map` as if every move had completed.
pub fn apply(map: &mut PartitionMap, target: &super::Target, nodes: &[PlacementNode]) {
    map.nodes = nodes
        .iter()
        .map(|n| {
            let info = NodeInfo {
                client_addr: String::new(),
                peer_addr: String::new(),
                zone: n.zone.clone(),
                state: n.state,
            };
            (n.id.clone(), info)
        })
        .collect();
    for (entry, tp) in map.partitions.iter_mut().zip(&target.partitions) {
        *entry = PartitionEntry {
            epoch: entry.epoch + u64::from(entry.primary != tp.primary),
            primary: tp.primary.clone(),
            replicas: tp.replicas.clone(),
            in_sync: tp.replicas.clone(),
            learners: Vec::new(),
        };
    }
    map.version += 1;
}

/// Runs the benchmark.
pub fn run(
    partitions: u32,
    node_count: usize,
    replication_factor: u32,
    zones: usize,
) -> BenchReport {
    let mut map = PartitionMap::empty("bench", partitions, replication_factor, 1);
    let mut cluster = nodes(node_count, zones);
    let start = Instant::now();
    let target = place(&map, &cluster, replication_factor);
    let initial = start.elapsed();
    let mut violations = check(&target, &cluster, replication_factor).len();
    apply(&mut map, &target, &cluster);

    cluster = nodes(node_count + node_count.div_ceil(10), zones);
    let start = Instant::now();
    let target = place(&map, &cluster, replication_factor);
    let scale_out = start.elapsed();
    violations += check(&target, &cluster, replication_factor).len();
    BenchReport {
        partitions,
        nodes: node_count,
        replication_factor,
        initial,
        scale_out,
        scale_out_moves: moves(&map, &target),
        violations,
    }
}

/// Arguments of `shardedstore-operator bench-placement`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Partition count.
    #[arg(long, default_value_t = 4096, env = "SHARDEDSTORE_BENCH_PARTITIONS")]
    pub partitions: u32,
    /// Node count.
    #[arg(long, default_value_t = 100, env = "SHARDEDSTORE_BENCH_NODES")]
    pub nodes: usize,
    /// Replication factor.
    #[arg(long, default_value_t = 3, env = "SHARDEDSTORE_BENCH_RF")]
    pub replication_factor: u32,
    /// Failure zones the nodes are spread over (0: none).
    #[arg(long, default_value_t = 3, env = "SHARDEDSTORE_BENCH_ZONES")]
    pub zones: usize,
}

/// Runs the benchmark and prints its figures.
pub fn run_and_print(args: &BenchArgs) {
    let r = run(
        args.partitions,
        args.nodes,
        args.replication_factor,
        args.zones,
    );
    println!(
        "placement of {} partitions x {} nodes (rf {}, {} zones): initial {:.2} ms; \
         scale-out to {} nodes {:.2} ms with {} replica moves; {} invariant violations",
        r.partitions,
        r.nodes,
        r.replication_factor,
        args.zones,
        r.initial.as_secs_f64() * 1e3,
        r.nodes + r.nodes.div_ceil(10),
        r.scale_out.as_secs_f64() * 1e3,
        r.scale_out_moves,
        r.violations,
    );
}
