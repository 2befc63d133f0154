//! `shardedstore-operator`: a thin dispatcher over the library's subcommands.

use clap::{Parser, Subcommand};
use shardedstore_operator::config::RunConfig;

#[derive(Parser)]
#[command(
    name = "shardedstore-operator",
    version,
    about = "Operator of ShardedStore key-value stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the Kubernetes cluster of the current kubeconfig.
    Run(RunConfig),
    /// Print the CustomResourceDefinitions (ShardedStore, ShardedStoreBackup) as YAML.
    Crd {
        /// Print only this one (default: all, as one multi-document YAML).
        #[arg(long, value_enum)]
        kind: Option<CrdKind>,
    },
    /// Time placement of a large cluster (default 4096 partitions x 100 nodes) and print it.
    BenchPlacement(shardedstore_operator::placement::bench::BenchArgs),
    /// Run a store locally: nodes as child processes on 127.0.0.1 (the demo; see --help).
    Local(shardedstore_operator::local::LocalArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    Store,
    Backup,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shardedstore_node::tls::install_crypto_provider();
    match Cli::parse().command {
        Command::Run(config) => {
            shardedstore_operator::telemetry::init();
            shardedstore_operator::controller::serve(config).await?;
        }
        Command::Crd { kind } => {
            use shardedstore_operator::crd::{backup::backup_crd_yaml, crd_yaml};
            match kind {
                Some(CrdKind::Store) => print!("{}", crd_yaml()?),
                Some(CrdKind::Backup) => print!("{}", backup_crd_yaml()?),
                None => print!("{}---\n{}", crd_yaml()?, backup_crd_yaml()?),
            }
        }
        Command::Local(args) => {
            shardedstore_operator::local::init_logging();
            shardedstore_operator::local::run(args).await?
        }
        Command::BenchPlacement(args) => {
            shardedstore_operator::placement::bench::run_and_print(&args)
        }
    }
    Ok(())
}
