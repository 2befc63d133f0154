//! The subcommands: each takes parsed arguments and a client, does its I/O, and reports
//! failures as [`CliError`] with the exit code the documentation promises.

use super::args::{BenchArgs, FailoverArgs, PutArgs};
use super::status::{self, Reach};
use shardedstore_node::bench::{
    self, BenchError, EtcdTarget, RedisTarget, RunReport, ShardedStoreTarget, render_comparison,
    render_text,
};
use shardedstore_node::client::kv::{Condition, KvClient, KvError, LocalRead, LocalReadOptions};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("reading the value from {}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the value from standard input")]
    ReadStdin(#[source] std::io::Error),
    #[error("writing to standard output")]
    WriteOutput(#[source] std::io::Error),
    #[error("encoding the report as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("benchmark")]
    Bench(#[source] BenchError),
    #[error(transparent)]
    Failover(#[from] bench::failover::FailoverError),
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("serving the echo server on {addr}")]
    Serve {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backup(#[from] Box<super::backup::BackupCliError>),
    #[error("reading the session file {}", .path.display())]
    SessionRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the session file {} is not a session (delete it to start a new one)", .path.display())]
    SessionFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the session file {}", .path.display())]
    SessionWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// 1 general failure, 3 key not found, 4 precondition failed (2, usage, comes from clap).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound(_) => 3,
            Self::Kv(KvError::PreconditionFailed { .. }) => 4,
            _ => 1,
        }
    }
}

fn stdout_write(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).map_err(CliError::WriteOutput)?;
    out.flush().map_err(CliError::WriteOutput)
}

/// `local`: a `consistency=local` read with these options; `None`: linearizable.
pub async fn get(
    kv: &KvClient,
    key: &str,
    local: Option<LocalReadOptions>,
    verbose: bool,
) -> Result<(), CliError> {
    let (value, line) = match local {
        Some(options) => match kv.get_local_with(key, options).await? {
            Some(r) => {
                let line = local_read_line(&r);
                (r.value, line)
            }
            None => return Err(CliError::NotFound(key.to_owned())),
        },
        None => match kv.get(key).await? {
            Some(v) => (v.value, format!("version {}", v.version)),
            None => return Err(CliError::NotFound(key.to_owned())),
        },
    };
    if verbose {
        eprintln!("{line}");
    }
    stdout_write(&value)?;
    // A terminal gets a final newline; pipes get the exact bytes.
    if std::io::stdout().is_terminal() && !value.ends_with(b"\n") {
        stdout_write(b"\n")?;
    }
    Ok(())
}

/// What `get --local -v` reports: the version, the session version to pass on with
/// `--min-version`, the serving node and the staleness bound.
pub fn local_read_line(r: &LocalRead) -> String {
    let mut line = format!(
        "version {} session-version {}",
        r.version, r.session_version
    );
    if let Some(node) = &r.served_by {
        line.push_str(&format!(" served-by {node}"));
    }
    if let Some(s) = r.staleness {
        line.push_str(&format!(" staleness-ms {}", s.as_millis()));
    }
    line
}

pub async fn put(kv: &KvClient, args: PutArgs, verbose: bool) -> Result<(), CliError> {
    let value = match (args.value, &args.file) {
        (Some(v), _) => v.into_bytes(),
        (None, Some(path)) => std::fs::read(path).map_err(|source| CliError::ReadFile {
            path: path.clone(),
            source,
        })?,
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(CliError::ReadStdin)?;
            buf
        }
    };
    let condition = match (args.if_match, args.if_absent) {
        (Some(v), _) => Condition::IfVersion(v),
        (None, true) => Condition::IfAbsent,
        (None, false) => Condition::Always,
    };
    let r = kv.put(&args.key, value, condition).await?;
    if verbose {
        let what = if r.created { "created" } else { "updated" };
        eprintln!("{what}, version {}", r.version);
    }
    Ok(())
}

pub async fn delete(
    kv: &KvClient,
    key: &str,
    if_match: Option<u64>,
    verbose: bool,
) -> Result<(), CliError> {
    let condition = if_match.map_or(Condition::Always, Condition::IfVersion);
    // The node answers 204 whether or not the key existed: nothing more to report.
    kv.delete(key, condition).await?;
    if verbose {
        eprintln!("deleted");
    }
    Ok(())
}

pub async fn map(kv: &KvClient) -> Result<(), CliError> {
    let map = kv.map().await?;
    let mut json = serde_json::to_vec_pretty(&*map).map_err(CliError::Encode)?;
    json.push(b'\n');
    stdout_write(&json)
}

pub async fn status(kv: &KvClient) -> Result<(), CliError> {
    let map = kv.map().await?;
    let probes = map.nodes.iter().map(|(id, info)| async move {
        let t0 = Instant::now();
        let reach = match kv.map_from(&info.client_addr).await {
            Ok(m) => Reach::Up {
                map_version: m.version,
                latency: t0.elapsed(),
            },
            Err(e) => Reach::Down {
                error: super::error_chain(&e),
            },
        };
        (id.clone(), reach)
    });
    let reach: BTreeMap<_, _> = futures::future::join_all(probes)
        .await
        .into_iter()
        .collect();
    let text = status::render(&map, &status::summarize(&map), &reach);
    stdout_write(text.as_bytes())
}

pub async fn echo_server(addr: std::net::SocketAddr, value_size: usize) -> Result<(), CliError> {
    let serve_err = |source| CliError::Serve { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(serve_err)?;
    bench::echo::serve(listener, value_size)
        .await
        .map_err(serve_err)
}

pub async fn bench_failover(kv: &KvClient, args: &FailoverArgs) -> Result<(), CliError> {
    let report = bench::failover::run(kv, &args.config()).await?;
    if args.json {
        let mut json = serde_json::to_vec_pretty(&report).map_err(CliError::Encode)?;
        json.push(b'\n');
        stdout_write(&json)
    } else {
        stdout_write(bench::failover::render(&report).as_bytes())
    }
}

pub async fn bench(kv: &KvClient, args: &BenchArgs) -> Result<(), CliError> {
    let cfg = args.config();
    let mut runs: Vec<RunReport> = Vec::new();
    if !args.peers_only {
        let target = ShardedStoreTarget {
            client: kv.clone(),
            local_reads: args.local_reads,
            via_library: args.via_library,
            pool: Default::default(),
        };
        runs.push(bench::run(&target, &cfg).await.map_err(CliError::Bench)?);
    }
    if let Some(addr) = &args.compare_redis {
        let redis = RedisTarget { addr: addr.clone() };
        runs.push(bench::run(&redis, &cfg).await.map_err(CliError::Bench)?);
    }
    if let Some(endpoints) = &args.compare_etcd {
        let etcd = EtcdTarget::new(endpoints);
        runs.push(bench::run(&etcd, &cfg).await.map_err(CliError::Bench)?);
    }
    if !args.json {
        for (i, run) in runs.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            stdout_write(format!("{sep}{}", render_text(run)).as_bytes())?;
        }
        if runs.len() > 1 {
            stdout_write(format!("\n{}", render_comparison(&runs)).as_bytes())?;
        }
    }
    if args.json {
        let mut json = serde_json::to_vec_pretty(&serde_json::json!({ "runs": runs }))
            .map_err(CliError::Encode)?;
        json.push(b'\n');
        stdout_write(&json)?;
    }
    Ok(())
}
