//! `shardedstore-node`: the storage server. Configuration: flags or environment variables
//! (see `--help`); logs with `tracing` (JSON when `LOG_FORMAT=json`, level from `RUST_LOG`).

use clap::Parser;
use shardedstore_node::config::NodeConfig;
use tracing_subscriber::EnvFilter;

fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// jemalloc, not glibc's malloc: over six alternated pairs of runs it cost 16 % less CPU per
/// write and carried 19 % more writes (docs/benchmarks.md, "The node's allocator"). It
/// serves 1 KiB values from per-thread caches, which glibc does not, and keeps freed pages
/// for reuse instead of handing them back to the kernel at once.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardedstore_node::tls::install_crypto_provider();
    let cfg = NodeConfig::parse();
    init_logs();
    match shardedstore_node::server::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(error = %msg, "node stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
