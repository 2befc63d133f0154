//! The fault-injecting file system (`shardedstore-faultfs`) observed for real through a FUSE
//! mount: a frozen disk blocks fsync until thawed, an fsync delay slows fsync, a capacity
//! gives ENOSPC, failing fsync/write give EIO, a power loss drops exactly the unsynced data,
//! and a real `shardedstore-node` whose data directory is on the mount keeps every
//! acknowledged write across a power loss; the mount of a server killed with SIGKILL is
//! swept. Needs root and /dev/fuse (else SKIPPED).

use shardedstore_faultfs::{Command, FaultFs, send_command};
use shardedstore_node::client::AdminClient;
use shardedstore_node::map::{PartitionEntry, PartitionMap};
use shardedstore_tests::node_harness::{
    Cluster, Heartbeater, NodeOptions, NodeProcess, binary_path, metric_value, wait_until,
};
use shardedstore_tests::tools::require_fuse;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A mounted FaultFs over a fresh backing directory; both directories are removed after the
/// file system (declared first, so dropped last) is unmounted.
struct Mounted {
    fs: FaultFs,
    backing: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn mount() -> anyhow::Result<Mounted> {
    let backing = tempfile::tempdir()?;
    let mnt = tempfile::tempdir()?;
    let fs = FaultFs::mount(backing.path(), mnt.path())?;
    Ok(Mounted {
        fs,
        backing: backing.path().to_owned(),
        _dirs: (backing, mnt),
    })
}

impl Mounted {
    fn path(&self, name: &str) -> PathBuf {
        self.fs.mountpoint().join(name)
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Waits (polling, with a deadline) until `check` holds.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn a_frozen_disk_blocks_fsync_until_thawed_while_reads_go_on() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let m = mount()?;
    let control = m.fs.control();
    let file = open_rw(&m.path("f"))?;
    file.write_all_at(b"before freeze", 0)?;
    control.freeze();
    let (done_tx, done_rx) = mpsc::channel();
    let syncing = file.try_clone()?;
    let t = std::thread::spawn(move || {
        let _ = done_tx.send(syncing.sync_all().map_err(|e| e.to_string()));
    });
    wait_for("the fsync to block", || control.counters().waiting_ops == 1)?;
    assert!(
        done_rx.try_recv().is_err(),
        "fsync returned on a frozen disk"
    );
    // Reads are not blocked, and see the unsynced data.
    assert_eq!(std::fs::read(m.path("f"))?, b"before freeze");
    control.thaw();
    let result = done_rx.recv_timeout(Duration::from_secs(20))?;
    assert_eq!(result, Ok(()));
    let _ = t.join();
    assert_eq!(control.counters().blocked_ops, 1);
    assert_eq!(std::fs::read(m.backing.join("f"))?, b"before freeze");
    Ok(())
}

#[test]
fn an_fsync_delay_slows_every_fsync() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let m = mount()?;
    let control = m.fs.control();
    let file = open_rw(&m.path("f"))?;
    file.write_all_at(b"x", 0)?;
    let delay = Duration::from_millis(300);
    control.set_fsync_delay(delay);
    let started = Instant::now();
    file.sync_data()?;
    let took = started.elapsed();
    assert!(took >= delay, "fsync took {took:?} with a {delay:?} delay");
    control.heal();
    file.sync_data()?;
    assert_eq!(control.counters().fsyncs, 2);
    Ok(())
}

#[test]
fn a_full_disk_refuses_growth_with_enospc() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let m = mount()?;
    let control = m.fs.control();
    std::fs::write(m.backing.join("existing"), vec![1u8; 16 * 1024])?;
    control.set_capacity(Some(64 * 1024));
    let file = open_rw(&m.path("f"))?;
    file.write_all_at(&[2u8; 32 * 1024], 0)?;
    let err = file
        .write_all_at(&[3u8; 32 * 1024], 32 * 1024)
        .err()
        .ok_or_else(|| anyhow::anyhow!("the write past the capacity succeeded"))?;
    assert_eq!(err.raw_os_error(), Some(nix_enospc()), "{err}");
    let err = file
        .set_len(1 << 20)
        .err()
        .ok_or_else(|| anyhow::anyhow!("growing past capacity"))?;
    assert_eq!(err.raw_os_error(), Some(nix_enospc()), "{err}");
    // Overwriting what exists needs no space.
    file.write_all_at(&[4u8; 1024], 0)?;
    assert!(control.counters().enospc_errors >= 2);
    control.set_capacity(None);
    file.write_all_at(&[3u8; 32 * 1024], 32 * 1024)?;
    Ok(())
}

fn nix_enospc() -> i32 {
    28 // ENOSPC on Linux
}

fn nix_eio() -> i32 {
    5 // EIO on Linux
}

#[test]
fn a_failing_disk_gives_eio_on_fsync_and_write() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let m = mount()?;
    let control = m.fs.control();
    let file = open_rw(&m.path("f"))?;
    file.write_all_at(b"data", 0)?;
    control.fail_fsync(true);
    let err = file
        .sync_all()
        .err()
        .ok_or_else(|| anyhow::anyhow!("fsync succeeded on a failing disk"))?;
    assert_eq!(err.raw_os_error(), Some(nix_eio()), "{err}");
    let err = file
        .sync_data()
        .err()
        .ok_or_else(|| anyhow::anyhow!("fdatasync succeeded"))?;
    assert_eq!(err.raw_os_error(), Some(nix_eio()), "{err}");
    assert_eq!(
        control.unsynced_bytes(),
        4,
        "a failed fsync made data durable"
    );
    control.fail_fsync(false);
    control.fail_writes(true);
    let err = file
        .write_all_at(b"more", 4)
        .err()
        .ok_or_else(|| anyhow::anyhow!("write succeeded"))?;
    assert_eq!(err.raw_os_error(), Some(nix_eio()), "{err}");
    control.heal();
    file.sync_all()?;
    assert_eq!(control.unsynced_bytes(), 0);
    assert_eq!(std::fs::read(m.backing.join("f"))?, b"data");
    let c = control.counters();
    assert_eq!((c.fsync_errors, c.write_errors), (2, 1));
    Ok(())
}

#[test]
fn power_loss_drops_unsynced_data_and_keeps_synced_data() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let m = mount()?;
    let control = m.fs.control();
    {
        let file = open_rw(&m.path("log"))?;
        file.write_all_at(b"AAAA", 0)?;
        file.sync_data()?;
        file.write_all_at(b"BBBB", 4)?;
        file.write_all_at(b"aa", 0)?; // overwrites synced bytes, unsynced
        assert_eq!(std::fs::read(m.path("log"))?, b"aaAABBBB");
        // close does not make data durable
    }
    // Truncation goes through; unsynced data past the new end is gone at once.
    let t = open_rw(&m.path("trunc"))?;
    t.write_all_at(&[7u8; 100], 0)?;
    t.sync_all()?;
    t.set_len(50)?;
    t.write_all_at(b"late", 80)?;
    assert_eq!(t.metadata()?.len(), 84);
    drop(t);
    std::fs::write(m.path("never-synced"), b"gone")?;

    let lost = control.power_loss();
    assert_eq!(lost.files, 3, "{lost:?}");
    assert_eq!(lost.bytes, 4 + 2 + 4 + 4, "{lost:?}");
    assert_eq!(std::fs::read(m.path("log"))?, b"AAAA");
    assert_eq!(std::fs::read(m.path("trunc"))?, vec![7u8; 50]);
    assert_eq!(std::fs::read(m.path("never-synced"))?, b"");
    // The file system goes on working after a power loss.
    let file = open_rw(&m.path("log"))?;
    file.write_all_at(b"CC", 4)?;
    file.sync_all()?;
    assert_eq!(std::fs::read(m.backing.join("log"))?, b"AAAACC");
    Ok(())
}

/// A one-node partition map (rf 1) over `node`.
fn single_node_map(node: &NodeProcess, store: &str, partitions: u32) -> PartitionMap {
    let mut map = PartitionMap::empty(store, partitions, 1, 1);
    map.version = 1;
    map.nodes.insert(node.id.clone(), node.info());
    for entry in &mut map.partitions {
        *entry = PartitionEntry {
            epoch: 1,
            primary: Some(node.id.clone()),
            replicas: vec![node.id.clone()],
            in_sync: vec![node.id.clone()],
            learners: Vec::new(),
        };
    }
    map
}

async fn heartbeat(beats: &Heartbeater, node: &NodeProcess) -> anyhow::Result<()> {
    beats
        .grant(&node.id, &node.peer_addr, Duration::from_secs(30))
        .await?;
    Ok(())
}

async fn wait_healthy(http: &reqwest::Client, node: &NodeProcess) -> anyhow::Result<()> {
    let url = format!("http://{}/healthz", node.metrics_addr);
    wait_until(Duration::from_secs(30), "the node healthy", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", node.log_tail(30)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_faultfs_keeps_every_acknowledged_write_across_a_power_loss() -> anyhow::Result<()>
{
    if !require_fuse() {
        return Ok(());
    }
    let m = mount()?;
    let control = m.fs.control();
    let options = NodeOptions::default();
    let store = options.store.clone();
    // Declared after the mount, so the node is killed before the file system is unmounted.
    let mut node = NodeProcess::spawn("node-0", &m.path("node-0"), &options)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let admin = AdminClient::new(options.token.clone(), Duration::from_secs(10))?;
    let beats = Heartbeater::new(admin.clone(), &store);
    wait_healthy(&http, &node).await?;
    admin
        .install_map(&node.peer_addr, &single_node_map(&node, &store, 4))
        .await?;
    heartbeat(&beats, &node).await?;

    let mut acked = Vec::new();
    for i in 0..150u32 {
        let (key, value) = (format!("k{i}"), format!("value-{i}").into_bytes());
        let url = format!("http://{}/v1/kv/{key}", node.client_addr);
        // A fresh primary may refuse writes (503) until it has been admitted; retry those.
        let status = wait_until(Duration::from_secs(30), "the write accepted", || {
            let (http, url, value) = (http.clone(), url.clone(), value.clone());
            async move {
                let r = http.put(&url).body(value).send().await.ok()?;
                (r.status().as_u16() != 503).then_some(r.status())
            }
        })
        .await?;
        anyhow::ensure!(
            status.is_success(),
            "put {key}: {status}\n{}",
            node.log_tail(20)
        );
        acked.push((key, value));
    }
    assert!(control.counters().fsyncs > 0, "the node never fsynced");

    // The unacknowledged tail: with a slow disk, writes sit in the database file unsynced
    // (waiting for their fsync) when the power goes.
    let logged = control.unsynced_bytes(); // the node's log is never fsynced
    control.set_fsync_delay(Duration::from_secs(2));
    let mut in_flight = Vec::new();
    for i in 150..200u32 {
        let url = format!("http://{}/v1/kv/k{i}", node.client_addr);
        let http = http.clone();
        in_flight.push(tokio::spawn(async move {
            let _ = http.put(&url).body(format!("value-{i}")).send().await;
        }));
    }
    let disk = control.clone();
    wait_until(Duration::from_secs(20), "unsynced database pages", || {
        let disk = disk.clone();
        async move { (disk.unsynced_bytes() >= logged + 4096).then_some(()) }
    })
    .await?;
    // Power fails at the instant of the kill: SIGKILL, drop the unsynced data, then reap
    // (the delayed fsync in flight is refused, so nothing written before it lands).
    let pid = node
        .pid()
        .ok_or_else(|| anyhow::anyhow!("node not running"))?;
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    let lost = control.power_loss();
    node.kill9();
    for t in in_flight {
        t.abort();
    }
    eprintln!("power loss dropped {lost:?}");
    assert!(
        lost.files >= 2 && lost.bytes >= 4096,
        "the database had no unsynced data at the power loss: {lost:?}"
    );
    control.heal();

    node.start()?;
    wait_healthy(&http, &node).await?;
    heartbeat(&beats, &node).await?;
    // A restarted node leads no epoch it led before: fail over to it at the next epoch.
    let mut next = single_node_map(&node, &store, 4);
    next.version += 1;
    for e in &mut next.partitions {
        e.epoch += 1;
    }
    admin.install_map(&node.peer_addr, &next).await?;
    for (key, value) in &acked {
        let url = format!("http://{}/v1/kv/{key}", node.client_addr);
        let (status, body) = wait_until(Duration::from_secs(20), "the node serving", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let r = http.get(&url).send().await.ok()?;
                let status = r.status().as_u16();
                (status != 503).then_some((status, r.bytes().await.ok()?.to_vec()))
            }
        })
        .await?;
        assert_eq!(
            status,
            200,
            "acknowledged {key} lost\n{}",
            node.log_tail(30)
        );
        assert_eq!(&body, value, "{key}");
    }
    node.kill9();
    Ok(())
}

/// A learner on the mount takes in a partition by snapshot (node-0's log is compacted past
/// it); a snapshot's start is not durable on its own and its end's checkpoint does not stop
/// the log. Once the primary shows the learner holding everything, the power fails, node-0
/// is killed, and node-1 alone serves every value from its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_taken_in_by_snapshot_survives_a_power_loss() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    const KEYS: u64 = 300;
    let m = mount()?;
    let control = m.fs.control();
    let options = NodeOptions {
        extra_args: vec!["--log-window".into(), "50".into()],
        ..NodeOptions::default()
    };
    // Declared after the mount, so the nodes are killed before it is unmounted.
    let mut cluster = Cluster::start(1, options.clone())?;
    cluster
        .nodes
        .push(NodeProcess::spawn("node-1", &m.path("node-1"), &options)?);
    cluster.wait_healthy().await?;
    let mut map = cluster.map_round_robin(1, 1, 1);
    map.partitions[0] = PartitionEntry {
        epoch: 1,
        primary: Some("node-0".into()),
        replicas: vec!["node-0".into()],
        in_sync: vec!["node-0".into()],
        learners: vec![],
    };
    cluster.install(&map).await?;
    let _beats = cluster
        .heartbeat_in_background(Duration::from_secs(6))
        .await?;
    let mut acked = Vec::new();
    for n in 0..KEYS {
        let (key, value) = (format!("k{n}"), shardedstore_tests::test_value("v", n));
        let (status, version) = wait_until(Duration::from_secs(20), "the write accepted", || {
            let (cluster, key, value) = (&cluster, key.clone(), value.clone());
            async move {
                let r = cluster.put(0, &key, value.into_bytes()).await.ok()?;
                (r.0 != 503).then_some(r)
            }
        })
        .await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "put {key}: {status}\n{}",
            cluster.logs(20)
        );
        acked.push((key, version, value));
    }
    wait_until(
        Duration::from_secs(20),
        "node-0's log compacted",
        || async {
            let m = cluster.metrics(0).await.ok()?;
            let keys = metric_value(&m, "shardedstore_stored_keys ", "");
            let entries = metric_value(&m, "shardedstore_log_entries ", "");
            (keys >= KEYS as f64 && entries <= 200.0).then_some(())
        },
    )
    .await?;

    let mut v2 = map.clone();
    v2.version += 1;
    v2.partitions[0].learners = vec!["node-1".into()];
    cluster.install(&v2).await?;
    wait_until(
        Duration::from_secs(30),
        "the learner holding everything",
        || async {
            let r = cluster.report(0).await.ok()?;
            let p = r.partitions.iter().find(|p| p.partition == 0)?;
            let f = p.followers.iter().find(|f| f.node == "node-1")?;
            (f.acked_seq >= KEYS && f.acked_seq >= p.commit_seq).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", cluster.logs(30)))?;

    let pid = cluster.nodes[1]
        .pid()
        .ok_or_else(|| anyhow::anyhow!("node-1 not running"))?;
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    let lost = control.power_loss();
    cluster.nodes[1].kill9();
    eprintln!("power loss dropped {lost:?}");
    // node-0 goes too, so nothing can send node-1 its copy again.
    cluster.nodes[0].kill9();
    if let Ok(mut skip) = cluster.heartbeat_skip.lock() {
        skip.push("node-0".into());
    }
    control.heal();
    cluster.nodes[1].start()?;
    cluster.wait_healthy().await?;

    let r = cluster.report(1).await?;
    let p = r
        .partitions
        .iter()
        .find(|p| p.partition == 0)
        .ok_or_else(|| anyhow::anyhow!("node-1 lost its copy: {r:?}"))?;
    assert_eq!(p.keys, KEYS, "node-1's copy after the power loss: {p:?}");
    // node-1 alone leads the next epoch and serves every value it holds.
    let mut v3 = v2.clone();
    v3.version += 1;
    v3.partitions[0] = PartitionEntry {
        epoch: 2,
        primary: Some("node-1".into()),
        replicas: vec!["node-1".into()],
        in_sync: vec!["node-1".into()],
        learners: vec![],
    };
    cluster.install_on(&v3, &["node-1"]).await?;
    for (key, version, value) in &acked {
        let (status, v, body) = wait_until(Duration::from_secs(20), "node-1 serving", || async {
            let r = cluster.get(1, key).await.ok()?;
            (r.0 != 503).then_some(r)
        })
        .await?;
        assert_eq!((status, v), (200, *version), "{key}\n{}", cluster.logs(20));
        assert_eq!(body, value.as_bytes(), "{key}");
    }
    Ok(())
}

/// Stops the `shardedstore-faultfs` binary with SIGTERM (it unmounts); if it does not
/// exit, kills it and detaches the mount lazily.
struct ServerGuard {
    child: std::process::Child,
    mountpoint: PathBuf,
}

fn is_mounted(mountpoint: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(&*mountpoint.to_string_lossy()))
        })
        .unwrap_or(false)
}

impl ServerGuard {
    fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(Instant::now() < deadline, "faultfs did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() && self.stop().is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

#[test]
fn the_binary_mounts_obeys_its_control_socket_and_unmounts_on_sigterm() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let (backing, mnt, ctl) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let socket = ctl.path().join("ctl.sock");
    let mountpoint = mnt.path().canonicalize()?;
    let child = std::process::Command::new(binary_path("shardedstore-faultfs")?)
        .arg("mount")
        .arg("--backing")
        .arg(backing.path())
        .arg("--mountpoint")
        .arg(&mountpoint)
        .arg("--control")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut server = ServerGuard { child, mountpoint };
    wait_for("the control socket", || {
        send_command(&socket, Command::Status).is_ok()
    })?;
    assert!(is_mounted(&server.mountpoint));
    std::fs::write(server.mountpoint.join("f"), b"unsynced")?;
    let status = send_command(&socket, Command::Status)?;
    assert!(status.contains("unsynced_bytes=8"), "{status}");
    assert_eq!(
        send_command(&socket, Command::PowerLoss)?,
        "files=1 bytes=8"
    );
    assert_eq!(std::fs::read(server.mountpoint.join("f"))?, b"");
    let exit = server.stop()?;
    assert!(exit.success(), "{exit:?}");
    assert!(
        !is_mounted(&server.mountpoint),
        "still mounted after SIGTERM"
    );
    assert!(!socket.exists(), "control socket left behind");
    Ok(())
}

#[test]
fn mounts_of_a_killed_server_are_swept_and_live_ones_are_kept() -> anyhow::Result<()> {
    if !require_fuse() {
        return Ok(());
    }
    let (backing, mnt, ctl) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let socket = ctl.path().join("ctl.sock");
    let mountpoint = mnt.path().canonicalize()?;
    let child = std::process::Command::new(binary_path("shardedstore-faultfs")?)
        .arg("mount")
        .arg("--backing")
        .arg(backing.path())
        .arg("--mountpoint")
        .arg(&mountpoint)
        .arg("--control")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut server = ServerGuard { child, mountpoint };
    wait_for("the control socket", || {
        send_command(&socket, Command::Status).is_ok()
    })?;
    // A live mount of this process is never swept (nor the live server's). (Stale mounts
    // of other dead runs on this machine may be swept along.)
    let live = mount()?;
    let swept = shardedstore_faultfs::sweep_stale_mounts()?;
    assert!(
        !swept.contains(&server.mountpoint) && !swept.iter().any(|m| m == live.fs.mountpoint()),
        "{swept:?}"
    );
    assert!(is_mounted(&server.mountpoint) && is_mounted(live.fs.mountpoint()));
    // SIGKILL: the server cannot unmount, the mount stays behind, dead.
    server.child.kill()?;
    server.child.wait()?;
    assert!(is_mounted(&server.mountpoint), "the kernel unmounted it");
    let swept = shardedstore_faultfs::sweep_stale_mounts()?;
    assert!(swept.contains(&server.mountpoint), "{swept:?}");
    assert!(
        !is_mounted(&server.mountpoint),
        "still mounted after the sweep"
    );
    assert!(is_mounted(live.fs.mountpoint()), "a live mount was swept");
    std::fs::write(live.path("f"), b"still served")?;
    assert_eq!(std::fs::read(live.path("f"))?, b"still served");
    Ok(())
}
