//! Network partitions between chosen processes of a local-mode store. Every node and the
//! operator bind their own loopback address (`--node-host-base`, `--bind`), so nftables
//! rules by source and destination address cut exactly the links a test names: isolate a
//! node, cut one direction of a link, drop packets one way, heal.
//!
//! Each [`NetFaults`] owns one nftables table (`shardedstore_netfault_<pid>_<n>`) holding
//! two sets of address pairs and one input-hook chain; a cut adds set elements, a heal
//! removes them. Dropping the value deletes the table (also while unwinding from a panic),
//! and creating one first deletes tables left by harness processes that no longer run (a
//! test killed with SIGKILL). Addresses in 127.0.0.0/16 are refused: other processes on the
//! machine use them, and a cut must never touch them.

pub mod rules;

pub use rules::Cut;
use rules::{Installed, element_script, harness_tables, table_owner, table_script};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a network fault could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetFaultError {
    #[error("nft not found (install the nftables package)")]
    NftMissing,
    #[error("running nft {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nft {what} failed: {stderr}")]
    Nft { what: &'static str, stderr: String },
    #[error("{0} is not a harness address (loopback outside 127.0.0.0/16)")]
    SharedAddress(Ipv4Addr),
}

/// One harness table of cuts; deleted on drop.
pub struct NetFaults {
    nft: PathBuf,
    table: String,
    installed: Mutex<Installed>,
}

static TABLES: AtomicU32 = AtomicU32::new(0);

/// Whether `addr` may be cut: loopback, outside 127.0.0.0/16.
pub fn is_harness_address(addr: Ipv4Addr) -> bool {
    let [a, b, _, _] = addr.octets();
    a == 127 && b != 0
}

fn run_nft(
    nft: &Path,
    what: &'static str,
    args: &[&str],
    script: Option<&str>,
) -> Result<String, NetFaultError> {
    let mut child = Command::new(nft)
        .args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetFaultError::Spawn { what, source })?;
    if let (Some(text), Some(mut stdin)) = (script, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| NetFaultError::Spawn { what, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NetFaultError::Spawn { what, source })?;
    if !out.status.success() {
        return Err(NetFaultError::Nft {
            what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes harness tables whose owning process is gone; returns their names.
pub fn sweep_leftovers() -> Result<Vec<String>, NetFaultError> {
    let nft = crate::tools::find_tool("nft").ok_or(NetFaultError::NftMissing)?;
    let listing = run_nft(&nft, "list tables", &["list", "tables"], None)?;
    let mut removed = Vec::new();
    for table in harness_tables(&listing) {
        let alive =
            table_owner(&table).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            // A concurrent sweep may have deleted it first: only a table still listed
            // afterwards is an error.
            if let Err(e) = run_nft(
                &nft,
                "delete table",
                &["delete", "table", "ip", &table],
                None,
            ) {
                let listing = run_nft(&nft, "list tables", &["list", "tables"], None)?;
                if harness_tables(&listing).contains(&table) {
                    return Err(e);
                }
            }
            removed.push(table);
        }
    }
    Ok(removed)
}

impl NetFaults {
    /// Sweeps leftovers of dead harness processes, then creates this harness's table.
    pub fn new() -> Result<Self, NetFaultError> {
        let nft = crate::tools::find_tool("nft").ok_or(NetFaultError::NftMissing)?;
        for table in sweep_leftovers()? {
            eprintln!("netfault: removed leftover nftables table {table}");
        }
        let table = format!(
            "{}{}_{}",
            rules::TABLE_PREFIX,
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        );
        run_nft(
            &nft,
            "create table",
            &["-f", "-"],
            Some(&table_script(&table)),
        )?;
        Ok(Self {
            nft,
            table,
            installed: Mutex::new(Installed::default()),
        })
    }

    /// The nftables table of this harness.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn installed(&self) -> std::sync::MutexGuard<'_, Installed> {
        self.installed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs `cut` (it takes effect for the next packet, also on open connections).
    pub fn cut(&self, cut: Cut) -> Result<(), NetFaultError> {
        for addr in cut.addresses() {
            if !is_harness_address(addr) {
                return Err(NetFaultError::SharedAddress(addr));
            }
        }
        let mut installed = self.installed();
        let new = installed.add(&cut);
        if new.is_empty() {
            return Ok(());
        }
        let script = element_script("add", &self.table, &new);
        if let Err(e) = run_nft(&self.nft, "add element", &["-f", "-"], Some(&script)) {
            installed.remove(&cut);
            return Err(e);
        }
        Ok(())
    }

    /// Installs every cut of `cuts`.
    pub fn cut_all(&self, cuts: &[Cut]) -> Result<(), NetFaultError> {
        cuts.iter().try_for_each(|c| self.cut(*c))
    }

    /// Heals one instance of `cut` (links still cut by another active cut stay cut).
    pub fn heal(&self, cut: Cut) -> Result<(), NetFaultError> {
        let mut installed = self.installed();
        let gone = installed.remove(&cut);
        if gone.is_empty() {
            return Ok(());
        }
        let script = element_script("delete", &self.table, &gone);
        run_nft(&self.nft, "delete element", &["-f", "-"], Some(&script)).map(|_| ())
    }

    /// Heals every cut.
    pub fn heal_all(&self) -> Result<(), NetFaultError> {
        let mut installed = self.installed();
        for set in [rules::Set::Packets, rules::Set::Connections] {
            run_nft(
                &self.nft,
                "flush set",
                &["flush", "set", "ip", &self.table, set.name()],
                None,
            )?;
        }
        installed.clear();
        Ok(())
    }
}

impl Drop for NetFaults {
    fn drop(&mut self) {
        if let Err(e) = run_nft(
            &self.nft,
            "delete table",
            &["delete", "table", "ip", &self.table],
            None,
        ) {
            eprintln!("netfault: could not delete table {}: {e}", self.table);
        }
    }
}

/// A random /24 of harness addresses (127.a.b.0 with a ≥ 1), so concurrent stores and test
/// processes rarely share addresses; ports are chosen free on top.
pub fn random_subnet() -> Ipv4Addr {
    let a = 1 + rand::random::<u8>() % 254;
    let b = rand::random::<u8>();
    Ipv4Addr::new(127, a, b, 0)
}
