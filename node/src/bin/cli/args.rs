//! Command-line arguments of `shardedstore`; every flag can also come from an environment
//! variable.

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardedstore_node::bench::timeline::MIN_INTERVAL;
use shardedstore_node::bench::{BenchConfig, Distribution, Preset, Stop};
use std::path::PathBuf;
use std::time::Duration;

/// Client of a ShardedStore: read and write keys, inspect the partition map, benchmark.
#[derive(Parser, Debug)]
#[command(name = "shardedstore", version)]
pub struct Cli {
    /// Client API endpoints (`host:port`), repeatable or comma-separated; any node will do.
    #[arg(
        long = "endpoint",
        short = 'e',
        env = "SHARDEDSTORE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7000",
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Time budget of each operation, retries included (e.g. 500ms, 10s, 1m).
    #[arg(long, env = "SHARDEDSTORE_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    /// Send every request to the endpoints, which forward it, instead of straight to the
    /// primary's address from the map (for clients that cannot reach the nodes directly).
    #[arg(long, env = "SHARDEDSTORE_VIA_ENDPOINTS", global = true)]
    pub via_endpoints: bool,
    /// Print versions and details to stderr.
    #[arg(short, long, env = "SHARDEDSTORE_VERBOSE", global = true)]
    pub verbose: bool,
    /// CA bundle (PEM) that signed the nodes' certificates; implies HTTPS (as do `https://`
    /// endpoints). Without it, HTTPS trusts the system's roots.
    #[arg(long, env = "SHARDEDSTORE_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(
        long = "cert",
        env = "SHARDEDSTORE_CERT",
        requires = "client_key",
        global = true
    )]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        env = "SHARDEDSTORE_KEY",
        requires = "client_cert",
        global = true
    )]
    pub client_key: Option<PathBuf>,
    /// Verify the nodes' certificate for this name instead of the address dialled (a store
    /// on Kubernetes serves one certificate naming its client Service,
    /// `<store>.<namespace>.svc`, while its map addresses pods by IP).
    #[arg(long, env = "SHARDEDSTORE_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// Bearer token sent with every request (when the nodes require client tokens).
    #[arg(
        long,
        env = "SHARDEDSTORE_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Zone of this client (e.g. the `topology.kubernetes.io/zone` of its machine): `get
    /// --local` goes straight to an in-sync replica in this zone when there is one.
    #[arg(long, env = "SHARDEDSTORE_ZONE", global = true)]
    pub zone: Option<String>,
    /// Keep the session in FILE (JSON; created when missing): every command records the
    /// versions it wrote or read there, and `get --local` answers from a state that includes
    /// them — read-your-writes and monotonic reads across invocations.
    #[arg(long, value_name = "FILE", env = "SHARDEDSTORE_SESSION", global = true)]
    pub session: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the value of KEY to stdout (exit code 3 when the key is absent).
    Get {
        key: String,
        /// Read from the nearest in-sync replica (possibly stale) instead of the primary.
        #[arg(long)]
        local: bool,
        /// With --local: answer from a state that includes this version (a version printed by
        /// an earlier put or get with -v), waiting briefly or asking the primary otherwise.
        #[arg(long, value_name = "VERSION", requires = "local")]
        min_version: Option<u64>,
        /// With --local: the largest acceptable staleness; a staler replica asks the primary.
        #[arg(long, value_name = "MS", requires = "local")]
        max_staleness_ms: Option<u64>,
    },
    /// Write KEY; the value comes from VALUE, --file, or standard input.
    Put(PutArgs),
    /// Delete KEY (exit code 0 also when it was absent).
    Delete {
        key: String,
        /// Only if the key currently has this version (exit code 4 otherwise).
        #[arg(long, value_name = "VERSION")]
        if_match: Option<u64>,
    },
    /// Print the partition map as JSON.
    Map,
    /// Summarize the partition map per node and probe every node.
    Status,
    /// Run a closed-loop benchmark and print throughput and latency percentiles.
    Bench(BenchArgs),
    /// Local mode only: kill -9 the node leading the most partitions under write load, RUNS
    /// times, and print kill → first acknowledged write per affected partition (p50/p99/max).
    BenchFailover(FailoverArgs),
    /// Serve a null store (HTTP only: no storage, no replication) to measure the request
    /// path's ceiling with `bench`; runs until interrupted.
    EchoServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7990")]
        listen: std::net::SocketAddr,
        /// Bytes of the value every read returns.
        #[arg(long, default_value_t = 1024)]
        value_size: usize,
    },
    /// Back up the store to s3://bucket/prefix or file:///path (see docs/backup.md).
    Backup(super::backup::BackupArgs),
    /// Restore a backup into the store (or only verify it with --verify-only).
    Restore(super::backup::RestoreArgs),
}

#[derive(Args, Debug)]
pub struct PutArgs {
    pub key: String,
    /// The value; without it and without --file, standard input is read.
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value from this file.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Only if the key currently has this version (exit code 4 otherwise).
    #[arg(long, value_name = "VERSION", conflicts_with = "if_absent")]
    pub if_match: Option<u64>,
    /// Only if the key does not exist yet (exit code 4 otherwise).
    #[arg(long)]
    pub if_absent: bool,
}

/// YCSB core workloads.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadArg {
    /// 50% reads, 50% updates.
    YcsbA,
    /// 95% reads, 5% updates.
    YcsbB,
    /// Reads only.
    YcsbC,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributionArg {
    Zipfian,
    Uniform,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Concurrent closed-loop clients.
    #[arg(long, env = "SHARDEDSTORE_BENCH_CLIENTS", default_value_t = 16)]
    pub clients: usize,
    /// Size of the key space.
    #[arg(long, env = "SHARDEDSTORE_BENCH_KEYS", default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, env = "SHARDEDSTORE_BENCH_VALUE_SIZE", default_value_t = 100)]
    pub value_size: usize,
    /// A YCSB preset; overrides --read-ratio.
    #[arg(
        long,
        env = "SHARDEDSTORE_BENCH_WORKLOAD",
        value_enum,
        conflicts_with = "read_ratio"
    )]
    pub workload: Option<WorkloadArg>,
    /// Share of reads in the mix, 0.0..=1.0 (default 0.5).
    #[arg(long, env = "SHARDEDSTORE_BENCH_READ_RATIO", value_parser = parse_ratio)]
    pub read_ratio: Option<f64>,
    /// How long the measured phase runs.
    #[arg(long, env = "SHARDEDSTORE_BENCH_DURATION", default_value = "10s", value_parser = parse_duration, conflicts_with = "ops")]
    pub duration: Duration,
    /// Run this many operations instead of a fixed duration.
    #[arg(long, env = "SHARDEDSTORE_BENCH_OPS")]
    pub ops: Option<u64>,
    /// Key popularity.
    #[arg(
        long,
        env = "SHARDEDSTORE_BENCH_DISTRIBUTION",
        value_enum,
        default_value = "zipfian"
    )]
    pub distribution: DistributionArg,
    /// Shorthand for --distribution zipfian.
    #[arg(long, conflicts_with_all = ["uniform", "distribution"])]
    pub zipfian: bool,
    /// Shorthand for --distribution uniform.
    #[arg(long, conflicts_with = "distribution")]
    pub uniform: bool,
    /// Skip writing every key once before measuring.
    #[arg(long, env = "SHARDEDSTORE_BENCH_NO_PRELOAD")]
    pub no_preload: bool,
    /// Read with consistency=local instead of linearizable reads.
    #[arg(long, env = "SHARDEDSTORE_BENCH_LOCAL_READS")]
    pub local_reads: bool,
    /// Send every operation through the client library (retries, map refreshes, pooled
    /// connections) instead of on the load generator's own kept-alive connection to each
    /// key's primary. Either way the nodes do the same work per operation; the library costs
    /// the load generator more CPU, which on a small machine the nodes then lack. Without it,
    /// an operation that does not succeed directly is retried through the library.
    #[arg(long, env = "SHARDEDSTORE_BENCH_VIA_LIBRARY")]
    pub via_library: bool,
    /// Print the report as JSON.
    #[arg(long, env = "SHARDEDSTORE_BENCH_JSON")]
    pub json: bool,
    /// Also run the same workload against Redis at ADDR (default 127.0.0.1:6379).
    #[arg(long, env = "SHARDEDSTORE_BENCH_COMPARE_REDIS", value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:6379")]
    pub compare_redis: Option<String>,
    /// Also run the same workload against etcd, through its HTTP/JSON gateway, at these
    /// comma-separated client endpoints (e.g. 127.0.0.1:2379,127.0.0.1:22379).
    #[arg(
        long,
        env = "SHARDEDSTORE_BENCH_COMPARE_ETCD",
        value_name = "ENDPOINTS"
    )]
    pub compare_etcd: Option<String>,
    /// Skip the ShardedStore run (only the --compare-* peers run).
    #[arg(long, env = "SHARDEDSTORE_BENCH_PEERS_ONLY")]
    pub peers_only: bool,
    /// Seed of the random operation and key streams.
    #[arg(long, env = "SHARDEDSTORE_BENCH_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Open loop: schedule this many operations per second in total (spread over the
    /// clients) and measure latency from each operation's intended send time.
    #[arg(long, env = "SHARDEDSTORE_BENCH_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Also report throughput, p50, p99 and max latency for every interval of this length
    /// (e.g. 1s, 100ms; at least 10ms) in the measured run, grouping operations by the time
    /// they were sent (intended send time with --rate): shows stalls that the whole run's
    /// percentiles average away. Keeps every latency in memory, 8 bytes per operation.
    #[arg(long, env = "SHARDEDSTORE_BENCH_TIMELINE", value_name = "INTERVAL", value_parser = parse_interval)]
    pub timeline: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The local mode control endpoint (`shardedstore-operator local --control-port`).
    #[arg(
        long,
        env = "SHARDEDSTORE_BENCH_CONTROL",
        default_value = "127.0.0.1:7700"
    )]
    pub control: String,
    /// Kills to make.
    #[arg(long, env = "SHARDEDSTORE_BENCH_FAILOVER_RUNS", default_value_t = 20)]
    pub runs: u32,
    /// Bytes per written value.
    #[arg(long, env = "SHARDEDSTORE_BENCH_VALUE_SIZE", default_value_t = 1024)]
    pub value_size: usize,
    /// How long a run waits for every affected partition to acknowledge a write.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub run_timeout: Duration,
    /// How long to wait before a run for every node to run and every partition to be in sync.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl FailoverArgs {
    pub fn config(&self) -> shardedstore_node::bench::failover::FailoverConfig {
        shardedstore_node::bench::failover::FailoverConfig {
            control: self.control.clone(),
            runs: self.runs,
            value_size: self.value_size,
            run_timeout: self.run_timeout,
            settle_timeout: self.settle_timeout,
        }
    }
}

impl BenchArgs {
    /// The benchmark configuration these arguments describe.
    pub fn config(&self) -> BenchConfig {
        let preset = self.workload.map(|w| match w {
            WorkloadArg::YcsbA => Preset::YcsbA,
            WorkloadArg::YcsbB => Preset::YcsbB,
            WorkloadArg::YcsbC => Preset::YcsbC,
        });
        let distribution = if self.uniform {
            Distribution::Uniform
        } else if self.zipfian {
            Distribution::Zipfian
        } else {
            match self.distribution {
                DistributionArg::Zipfian => Distribution::Zipfian,
                DistributionArg::Uniform => Distribution::Uniform,
            }
        };
        BenchConfig {
            clients: self.clients.max(1),
            keys: self.keys.max(1),
            value_size: self.value_size,
            read_ratio: preset.map_or(self.read_ratio.unwrap_or(0.5), Preset::read_ratio),
            workload: preset.map_or_else(|| "custom".to_owned(), |p| p.name().to_owned()),
            distribution,
            stop: self.ops.map_or(Stop::After(self.duration), Stop::Ops),
            preload: !self.no_preload,
            seed: self.seed,
            rate: self.rate,
            timeline: self.timeline,
        }
    }
}

/// Why a command-line value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("{0:?} is not a duration (use e.g. 250ms, 10s, 2m, 1h)")]
    Duration(String),
    #[error("{0:?} is not a ratio between 0 and 1")]
    Ratio(String),
    #[error("{0:?} is not a positive rate in operations per second")]
    Rate(String),
    #[error("{0:?} is not an interval of at least 10ms")]
    Interval(String),
}

/// `250ms`, `1.5s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| ArgError::Duration(s.to_owned()))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(ArgError::Duration(s.to_owned())),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| ArgError::Duration(s.to_owned()))
}

/// A `--timeline` interval: a duration of at least [`MIN_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, ArgError> {
    match parse_duration(s) {
        Ok(d) if d >= MIN_INTERVAL => Ok(d),
        _ => Err(ArgError::Interval(s.to_owned())),
    }
}

pub fn parse_rate(s: &str) -> Result<f64, ArgError> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(ArgError::Rate(s.to_owned())),
    }
}

pub fn parse_ratio(s: &str) -> Result<f64, ArgError> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(ArgError::Ratio(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shardedstore").chain(args.iter().copied()))
    }

    fn ok(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bench(args: &[&str]) -> BenchConfig {
        match ok(args).command {
            Command::Bench(b) => b.config(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_ratio("1.5").is_err());
        assert_eq!(parse_ratio("0.95"), Ok(0.95));
    }

    #[test]
    fn endpoints_repeat_split_on_commas_and_default_to_local() {
        assert_eq!(ok(&["map"]).endpoints, ["127.0.0.1:7000"]);
        let cli = ok(&["-e", "a:1,b:2", "--endpoint", "c:3", "map"]);
        assert_eq!(cli.endpoints, ["a:1", "b:2", "c:3"]);
        // Global flags may follow the subcommand too.
        let cli = ok(&["get", "k", "--endpoint", "h:9", "--timeout", "2s"]);
        assert_eq!(cli.endpoints, ["h:9"]);
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert!(!cli.via_endpoints);
        assert!(ok(&["--via-endpoints", "map"]).via_endpoints);
    }

    #[test]
    fn put_takes_a_value_a_file_or_stdin_and_one_condition() {
        match ok(&["put", "greeting", "hello"]).command {
            Command::Put(p) => {
                assert_eq!(
                    (p.key.as_str(), p.value.as_deref()),
                    ("greeting", Some("hello"))
                );
                assert!(p.file.is_none() && p.if_match.is_none() && !p.if_absent);
            }
            other => panic!("{other:?}"),
        }
        match ok(&["put", "k", "--file", "/tmp/v", "--if-match", "7"]).command {
            Command::Put(p) => {
                assert_eq!(p.file, Some(PathBuf::from("/tmp/v")));
                assert_eq!(p.if_match, Some(7));
            }
            other => panic!("{other:?}"),
        }
        let conflict = |args: &[&str]| parse(args).map_err(|e| e.kind()).err();
        assert_eq!(
            conflict(&["put", "k", "v", "--file", "f"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            conflict(&["put", "k", "v", "--if-match", "1", "--if-absent"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            conflict(&["put", "k", "v", "--if-match", "x"]),
            Some(ErrorKind::ValueValidation)
        );
        assert_eq!(conflict(&["get"]), Some(ErrorKind::MissingRequiredArgument));
        assert_eq!(
            conflict(&["frobnicate"]),
            Some(ErrorKind::InvalidSubcommand)
        );
    }

    #[test]
    fn bench_presets_and_defaults() {
        let c = bench(&["bench"]);
        assert_eq!(c.read_ratio, 0.5);
        assert_eq!(c.workload, "custom");
        assert_eq!(c.distribution, Distribution::Zipfian);
        assert_eq!(c.stop, Stop::After(Duration::from_secs(10)));
        assert!(c.preload);
        let c = bench(&["bench", "--workload", "ycsb-b", "--ops", "500", "--uniform"]);
        assert_eq!((c.read_ratio, c.workload.as_str()), (0.95, "ycsb-b"));
        assert_eq!(c.stop, Stop::Ops(500));
        assert_eq!(c.distribution, Distribution::Uniform);
        let c = bench(&[
            "bench",
            "--read-ratio",
            "0.8",
            "--duration",
            "2s",
            "--no-preload",
        ]);
        assert_eq!(c.read_ratio, 0.8);
        assert_eq!(c.stop, Stop::After(Duration::from_secs(2)));
        assert!(!c.preload);
        assert_eq!(bench(&["bench", "--workload", "ycsb-c"]).read_ratio, 1.0);
        assert!(parse(&["bench", "--workload", "ycsb-a", "--read-ratio", "0.1"]).is_err());
        assert!(parse(&["bench", "--ops", "5", "--duration", "1s"]).is_err());
        assert!(parse(&["bench", "--zipfian", "--uniform"]).is_err());
        assert_eq!(bench(&["bench", "--rate", "2500"]).rate, Some(2500.0));
        assert_eq!(bench(&["bench"]).rate, None);
        assert_eq!(
            bench(&["bench", "--timeline", "250ms"]).timeline,
            Some(Duration::from_millis(250))
        );
        assert_eq!(bench(&["bench"]).timeline, None);
        assert!(parse(&["bench", "--timeline", "5ms"]).is_err());
        assert!(parse(&["bench", "--timeline", "0"]).is_err());
        assert!(parse(&["bench", "--timeline", "soon"]).is_err());
        assert!(parse(&["bench", "--rate", "0"]).is_err());
        assert!(parse(&["bench", "--rate", "fast"]).is_err());
    }

    #[test]
    fn compare_redis_has_a_default_address() {
        let redis = |args: &[&str]| match ok(args).command {
            Command::Bench(b) => b.compare_redis,
            other => panic!("{other:?}"),
        };
        assert_eq!(redis(&["bench"]), None);
        assert_eq!(
            redis(&["bench", "--compare-redis"]).as_deref(),
            Some("127.0.0.1:6379")
        );
        assert_eq!(
            redis(&["bench", "--compare-redis", "h:6380"]).as_deref(),
            Some("h:6380")
        );
    }
}
