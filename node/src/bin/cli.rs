//! `shardedstore`: the command-line client — get, put, delete, map, status, bench, backup, restore.

// A binary's root resolves modules beside it, so the submodules are named by path.
#[path = "cli/args.rs"]
mod args;
#[path = "cli/backup.rs"]
mod backup;
#[path = "cli/commands.rs"]
mod commands;
#[path = "cli/session.rs"]
mod session;
#[path = "cli/status.rs"]
mod status;

use args::{Cli, Command};
use clap::Parser;
use commands::CliError;
use shardedstore_node::client::kv::{KvClient, LocalReadOptions, RetryPolicy, wants_https};
use shardedstore_node::tls::ClientTls;
use std::process::ExitCode;
use std::time::Duration;

/// jemalloc, as in the node: `shardedstore bench` allocates a request and an answer per
/// operation on every client task, and glibc's malloc made a fifth of its CPU
/// (docs/benchmarks.md, "The load generator's own cost").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An error and its causes on one line: `outer: cause: root cause`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Some layers repeat their cause's text; keep the line readable.
        if parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let policy = RetryPolicy {
        deadline: cli.timeout,
        ..RetryPolicy::default()
    };
    let tls = ClientTls {
        ca: cli.ca.clone(),
        cert: cli.client_cert.clone(),
        key: cli.client_key.clone(),
        server_name: cli.tls_server_name.clone(),
        ca_pem: None,
    };
    let mut kv = KvClient::builder(&cli.endpoints)
        .request_timeout(cli.timeout.min(Duration::from_secs(5)))
        .retry_policy(policy)
        .direct_routing(!cli.via_endpoints)
        .tls(tls.clone());
    if let Some(t) = &cli.token {
        kv = kv.token(t.clone());
    }
    if let Some(z) = &cli.zone {
        kv = kv.zone(z.clone());
    }
    if let Some(path) = &cli.session {
        kv = kv.session(session::load(path)?);
    }
    let kv = kv.build()?;
    let https = wants_https(&cli.endpoints) || tls.is_configured();
    let peer_tls = backup::PeerTls {
        https,
        tls: tls.clone(),
    };
    let result = command(&kv, cli.command, cli.verbose, &peer_tls).await;
    // What the command saw before a failure counts too (versions only ever grow).
    if let Some(path) = &cli.session {
        session::save(path, &kv.session())?;
    }
    result
}

async fn command(
    kv: &KvClient,
    command: Command,
    verbose: bool,
    peer_tls: &backup::PeerTls,
) -> Result<(), CliError> {
    match command {
        Command::Get {
            key,
            local,
            min_version,
            max_staleness_ms,
        } => {
            let local = local.then_some(LocalReadOptions {
                min_version,
                max_staleness: max_staleness_ms.map(Duration::from_millis),
            });
            commands::get(kv, &key, local, verbose).await
        }
        Command::Put(p) => commands::put(kv, p, verbose).await,
        Command::Delete { key, if_match } => commands::delete(kv, &key, if_match, verbose).await,
        Command::Map => commands::map(kv).await,
        Command::Status => commands::status(kv).await,
        Command::EchoServer { listen, value_size } => {
            commands::echo_server(listen, value_size).await
        }
        Command::Bench(b) => commands::bench(kv, &b).await,
        Command::BenchFailover(f) => commands::bench_failover(kv, &f).await,
        Command::Backup(b) => Ok(backup::backup(kv, &b, peer_tls).await.map_err(Box::new)?),
        Command::Restore(r) => Ok(backup::restore(kv, &r).await.map_err(Box::new)?),
    }
}

fn main() -> ExitCode {
    shardedstore_node::tls::install_crypto_provider();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn tls_and_session_flags_parse_beside_the_key_argument() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "shardedstore",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--token",
            "t",
            "get",
            "some-key",
            "--local",
            "--min-version",
            "42",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.client_key.as_deref(),
            Some(std::path::Path::new("k.pem"))
        );
        assert_eq!(cli.token.as_deref(), Some("t"));
        match cli.command {
            Command::Get {
                key, min_version, ..
            } => assert_eq!((key.as_str(), min_version), ("some-key", Some(42))),
            other => panic!("parsed {other:?}"),
        }
        assert!(Cli::try_parse_from(["shardedstore", "--cert", "c.pem", "map"]).is_err());
    }

    #[test]
    fn error_chains_print_on_one_line() {
        let e = Outer(std::io::Error::other("root cause"));
        assert_eq!(error_chain(&e), "outer: root cause");
        let nf = CliError::NotFound("k".into());
        assert_eq!(
            (error_chain(&nf).as_str(), nf.exit_code()),
            ("key \"k\" not found", 3)
        );
        let pf = CliError::Kv(shardedstore_node::client::KvError::PreconditionFailed {
            message: "version is 3".into(),
            current_version: Some(3),
        });
        assert_eq!(pf.exit_code(), 4);
        assert_eq!(error_chain(&pf), "precondition failed: version is 3");
    }
}
