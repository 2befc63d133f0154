//! Backup to a `file://` destination (a directory or mounted volume) and restore from it;
//! a corrupted object, a missing object and a missing manifest are refused with a message
//! before anything is written; a destination that holds a backup is never overwritten.

use shardedstore_node::backup::manifest::{MANIFEST_NAME, object_name};
use shardedstore_tests::backup_support::{cli, wait_restored};
use shardedstore_tests::local_harness::{LocalOptions, LocalStore, lost_writes};
use shardedstore_tests::node_harness::binary_path;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// Runs `shardedstore-operator local --restore-from URL` on a fresh data directory and
/// returns (success, stderr+stdout).
fn local_restore(url: &str) -> anyhow::Result<(bool, String)> {
    let data = tempfile::tempdir()?;
    let out = Command::new(binary_path("shardedstore-operator")?)
        .args([
            "local",
            "--nodes",
            "1",
            "--replication-factor",
            "1",
            "--partitions",
            "2",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--port",
            "1",
            "--peer-port",
            "1",
            "--metrics-port",
            "1",
            "--control-port",
            "1",
        ])
        .arg("--node-binary")
        .arg(binary_path("shardedstore-node")?)
        .args(["--restore-from", url])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        !data.path().join("node-0").exists(),
        "a node was started for a refused backup: {text}"
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backups_restore_and_damaged_ones_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good");
    let url = format!("file://{}", good.display());
    let store = LocalStore::start(LocalOptions {
        partitions: 4,
        ..LocalOptions::default()
    })
    .await?;
    let client = store.client()?;
    let mut written = Vec::new();
    for i in 0..400 {
        let (k, v) = (format!("file-{i}"), format!("value-{i}"));
        client
            .put(&k, v.clone().into_bytes(), Default::default())
            .await?;
        written.push((k, v));
    }
    let token = ["--peer-token", "local-peer-token"];
    let out = cli(
        &store,
        &[&["backup", "--to", &url][..], &token].concat(),
        &[],
    )
    .await?;
    anyhow::ensure!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(good.join(MANIFEST_NAME).is_file());
    for p in 0..4 {
        anyhow::ensure!(
            good.join(object_name(p)).is_file(),
            "no object for partition {p}"
        );
    }

    // A second backup to the same place is refused; the first stays intact.
    let again = cli(
        &store,
        &[&["backup", "--to", &url][..], &token].concat(),
        &[],
    )
    .await?;
    let msg = String::from_utf8_lossy(&again.stderr);
    anyhow::ensure!(
        !again.status.success() && msg.contains("already exists"),
        "{msg}"
    );
    let verify = cli(&store, &["restore", "--verify-only", "--from", &url], &[]).await?;
    anyhow::ensure!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    drop(client);
    drop(store);

    // Damaged copies: one flipped byte, one missing object, no manifest.
    let corrupt = dir.path().join("corrupt");
    copy_dir(&good, &corrupt)?;
    let victim = corrupt.join(object_name(1));
    let mut bytes = std::fs::read(&victim)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, bytes)?;
    let missing = dir.path().join("missing");
    copy_dir(&good, &missing)?;
    std::fs::remove_file(missing.join(object_name(2)))?;
    let partial = dir.path().join("partial");
    copy_dir(&good, &partial)?;
    std::fs::remove_file(partial.join(MANIFEST_NAME))?;

    for (path, expect) in [
        (&corrupt, "the object is corrupt"),
        (&missing, "is missing: the backup is partial"),
        (&partial, "no manifest"),
    ] {
        let url = format!("file://{}", path.display());
        let (ok, text) = tokio::task::spawn_blocking(move || local_restore(&url)).await??;
        anyhow::ensure!(!ok, "a damaged backup was restored: {text}");
        anyhow::ensure!(text.contains(expect), "expected {expect:?} in: {text}");
        println!("refused as expected: {}", text.lines().last().unwrap_or(""));
    }

    // The good one restores, into a different partition count too.
    let restored = LocalStore::start(LocalOptions {
        partitions: 3,
        extra_args: vec!["--restore-from".into(), url.clone()],
        ..LocalOptions::default()
    })
    .await?;
    wait_restored(&restored, Duration::from_secs(120)).await?;
    let lost = lost_writes(&restored.client()?, &written).await;
    anyhow::ensure!(
        lost.is_empty(),
        "{} keys missing after restore: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    Ok(())
}
