//! The `shardedstore` CLI against real `shardedstore-node` processes on loopback: get, put,
//! delete, map, status and bench, with their output and exit codes.
//!
//! The nodes come from [`shardedstore_tests::node_harness`], which plays the operator
//! (installs the map, heartbeats). Binaries are taken from the cargo target directory, so
//! build them first (`cargo build --workspace --bins`, as `make test` does).

use shardedstore_node::client::kv::{Condition, KvClient};
use shardedstore_node::map::PartitionMap;
use shardedstore_tests::node_harness::{
    Cluster, NodeOptions, TaskGuard, binary_path, free_port, wait_until,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    binary_path(name).unwrap_or_else(|e| panic!("{e}"))
}

fn port() -> u16 {
    free_port().unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nodes with a map installed and leases kept alive: `partitions` partitions, every node a
/// replica of each (RF = node count), primaries spread round-robin.
struct Store {
    cluster: Cluster,
    map: PartitionMap,
    _heartbeats: TaskGuard,
}

impl Store {
    async fn start(n: usize, partitions: u32) -> Store {
        let cluster = Cluster::start(n, NodeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        cluster
            .wait_healthy()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let map = cluster.map_round_robin(partitions, n as u32, (n as u32).min(2));
        cluster
            .install(&map)
            .await
            .unwrap_or_else(|e| panic!("installing the map: {e}"));
        let heartbeats = cluster
            .heartbeat_in_background(Duration::from_secs(4))
            .await
            .unwrap_or_else(|e| panic!("first heartbeat: {e}"));
        let store = Store {
            cluster,
            map,
            _heartbeats: heartbeats,
        };
        store.wait_writable().await;
        store
    }

    fn endpoint(&self, i: usize) -> &str {
        &self.cluster.nodes[i].client_addr
    }

    fn client(&self) -> KvClient {
        let seeds: Vec<&str> = self
            .cluster
            .nodes
            .iter()
            .map(|n| n.client_addr.as_str())
            .collect();
        KvClient::new(&seeds).unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// Wait until every partition takes a write (each primary holds its lease and role).
    async fn wait_writable(&self) {
        let kv = self.client();
        let partitions = self.map.partition_count();
        let probes: Vec<String> = (0..partitions)
            .map(|p| {
                (0u32..)
                    .map(|i| format!("probe-{i}"))
                    .find(|k| self.map.partition_of(k.as_bytes()) == p)
                    .unwrap_or_default()
            })
            .collect();
        for key in &probes {
            let kv = kv.clone();
            wait_until(Duration::from_secs(30), &format!("{key} writable"), || {
                let kv = kv.clone();
                async move { kv.put(key, "x", Condition::Always).await.ok() }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.cluster.logs(20)));
        }
    }
}

/// Run the CLI with `args` (and `stdin` if given) against `endpoint`.
fn cli(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(bin("shardedstore"));
    cmd.args(["--endpoint", endpoint, "--timeout", "5s"])
        .args(args)
        .env_remove("SHARDEDSTORE_ENDPOINTS")
        .env("RUST_LOG", "off")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning shardedstore: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .unwrap_or_else(|e| panic!("writing stdin: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for shardedstore: {e}"))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(o: &Output) {
    assert_eq!(code(o), 0, "stderr: {}", stderr(o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quickstart_and_conditional_writes_against_one_node() {
    let cluster = Store::start(1, 4).await;
    let ep = cluster.endpoint(0);

    let put = cli(ep, &["put", "greeting", "hello"], None);
    assert_ok(&put);
    let get = cli(ep, &["-v", "get", "greeting"], None);
    assert_ok(&get);
    assert_eq!(get.stdout, b"hello", "exact bytes on a pipe");
    let version: u64 = stderr(&get)
        .trim()
        .strip_prefix("version ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version on stderr: {}", stderr(&get)));

    let absent = cli(ep, &["put", "greeting", "again", "--if-absent"], None);
    assert_eq!(code(&absent), 4, "{}", stderr(&absent));
    assert!(stderr(&absent).starts_with("error: precondition failed"));
    let stale = cli(
        ep,
        &[
            "put",
            "greeting",
            "x",
            "--if-match",
            &(version + 100).to_string(),
        ],
        None,
    );
    assert_eq!(code(&stale), 4);
    let ok = cli(
        ep,
        &["put", "greeting", "hi", "--if-match", &version.to_string()],
        None,
    );
    assert_ok(&ok);
    assert_eq!(cli(ep, &["get", "greeting"], None).stdout, b"hi");

    let del = cli(ep, &["delete", "greeting"], None);
    assert_ok(&del);
    let gone = cli(ep, &["get", "greeting"], None);
    assert_eq!(code(&gone), 3);
    assert_eq!(stderr(&gone).trim(), "error: key \"greeting\" not found");
    assert!(gone.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_stdin_and_files_and_awkward_keys_round_trip() {
    let cluster = Store::start(1, 4).await;
    let ep = cluster.endpoint(0);
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();

    assert_ok(&cli(ep, &["put", "from-stdin"], Some(&binary)));
    assert_eq!(cli(ep, &["get", "from-stdin"], None).stdout, binary);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("value.bin");
    std::fs::write(&file, b"file contents\n").unwrap_or_else(|e| panic!("{e}"));
    let path = file.to_string_lossy().into_owned();
    assert_ok(&cli(ep, &["put", "from-file", "--file", &path], None));
    assert_eq!(
        cli(ep, &["get", "from-file"], None).stdout,
        b"file contents\n"
    );

    for key in ["a/b", "with space", "q?x=1&y#z", "100%", "ünïcødé", "..."] {
        assert_ok(&cli(ep, &["put", key, key], None));
        let got = cli(ep, &["get", key], None);
        assert_ok(&got);
        assert_eq!(stdout(&got), key);
    }
    // The library sees the same keys: the CLI encoded them exactly.
    let kv = cluster.client();
    let v = kv.get("a/b").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.map(|v| v.value.to_vec()), Some(b"a/b".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_readable_line_with_the_documented_exit_codes() {
    let cluster = Store::start(1, 4).await;
    let ep = cluster.endpoint(0);

    let big_key = "k".repeat(2000);
    let o = cli(ep, &["put", &big_key, "v"], None);
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o).trim(),
        "error: key is 2000 bytes, over the store's limit of 1024"
    );

    let dead = format!("127.0.0.1:{}", port());
    let o = Command::new(bin("shardedstore"))
        .args(["--endpoint", &dead, "--timeout", "300ms", "get", "k"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: unavailable after"), "{err}");
    assert!(err.contains(&dead), "{err}");

    let usage = cli(ep, &["put"], None);
    assert_eq!(code(&usage), 2);
    let missing_file = cli(ep, &["put", "k", "--file", "/nonexistent/x"], None);
    assert_eq!(code(&missing_file), 1);
    assert!(stderr(&missing_file).starts_with("error: reading the value from /nonexistent/x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_rf3_route_read_locally_and_report_status() {
    let mut cluster = Store::start(3, 8).await;

    // Writes through any endpoint land on the right primary and replicate.
    for i in 0..24 {
        let ep = cluster.endpoint(i % 3).to_owned();
        assert_ok(&cli(
            &ep,
            &["put", &format!("key-{i}"), &format!("value-{i}")],
            None,
        ));
    }
    let kv = cluster.client();
    for i in 0..24 {
        let key = format!("key-{i}");
        let want = format!("value-{i}");
        let got = kv.get(&key).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.map(|v| v.value.to_vec()),
            Some(want.clone().into_bytes())
        );
        let local = cli(cluster.endpoint(2), &["-v", "get", "--local", &key], None);
        assert_ok(&local);
        assert_eq!(stdout(&local), want);
        assert!(stderr(&local).contains("staleness"), "{}", stderr(&local));
    }

    // Through one endpoint only (it forwards to each primary), as a client outside the
    // cluster network would.
    assert_ok(&cli(
        cluster.endpoint(1),
        &["--via-endpoints", "put", "via", "fwd"],
        None,
    ));
    let via = cli(
        cluster.endpoint(1),
        &["--via-endpoints", "get", "via"],
        None,
    );
    assert_ok(&via);
    assert_eq!(via.stdout, b"fwd");

    let map = cli(cluster.endpoint(1), &["map"], None);
    assert_ok(&map);
    let printed: PartitionMap =
        serde_json::from_slice(&map.stdout).unwrap_or_else(|e| panic!("map JSON: {e}"));
    assert_eq!(printed, cluster.map);

    let status = cli(cluster.endpoint(0), &["status"], None);
    assert_ok(&status);
    let text = stdout(&status);
    assert!(
        text.contains("partitions: 8 healthy, 0 under-replicated, 0 unavailable"),
        "{text}"
    );
    assert_eq!(text.matches("yes (").count(), 3, "{text}");

    cluster.cluster.nodes[2].kill9();
    let status = cli(cluster.endpoint(0), &["status"], None);
    assert_ok(&status);
    let text = stdout(&status);
    let line = text
        .lines()
        .find(|l| l.starts_with("node-2"))
        .unwrap_or_else(|| panic!("no node-2 line: {text}"));
    assert!(line.contains("NO: "), "{line}");
    assert_eq!(text.matches("yes (").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_a_fixed_number_of_operations_and_reports_json() {
    let cluster = Store::start(1, 4).await;
    let o = cli(
        cluster.endpoint(0),
        &[
            "bench",
            "--clients",
            "4",
            "--keys",
            "50",
            "--ops",
            "400",
            "--workload",
            "ycsb-a",
            "--json",
        ],
        None,
    );
    assert_ok(&o);
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("bench JSON: {e}"));
    let run = &report["runs"][0];
    assert_eq!(run["target"], "shardedstore");
    assert_eq!(run["workload"], "ycsb-a");
    assert_eq!(run["ops"], 400, "{run}");
    assert_eq!(run["read_misses"], 0, "preload wrote every key: {run}");
    // Every operation went straight to its primary on the load generator's own connections.
    assert_eq!(run["handed_to_library"], 0, "{run}");
    assert_eq!(run["preload"]["keys"], 50);
    let ops = run["operations"]
        .as_array()
        .unwrap_or_else(|| panic!("no operations: {run}"));
    assert_eq!(ops.len(), 2, "{run}");
    for op in ops {
        assert!(op["p50_us"].as_u64() > Some(0) && op["p99_us"].as_u64() >= op["p50_us"].as_u64());
    }

    let text = cli(
        cluster.endpoint(0),
        &[
            "bench",
            "--clients",
            "2",
            "--keys",
            "20",
            "--ops",
            "100",
            "--no-preload",
        ],
        None,
    );
    assert_ok(&text);
    let out = stdout(&text);
    assert!(out.contains("run: 100 ops in"), "{out}");
    assert!(out.contains("p99.9"), "{out}");
}

/// Runs only where `redis-server` is installed (`apt-get install redis-server`); elsewhere it
/// says so and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_compares_with_a_local_redis_when_one_is_installed() {
    let Ok(redis_bin) = which("redis-server") else {
        eprintln!("redis-server not installed: skipping the side-by-side comparison");
        return;
    };
    let port = port();
    let _redis = Proc(
        Command::new(redis_bin)
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server: {e}")),
    );
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "redis never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cluster = Store::start(1, 4).await;
    let o = cli(
        cluster.endpoint(0),
        &[
            "bench",
            "--clients",
            "2",
            "--keys",
            "30",
            "--ops",
            "200",
            "--json",
            "--compare-redis",
            &addr,
        ],
        None,
    );
    assert_ok(&o);
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("bench JSON: {e}"));
    let targets: Vec<&str> = report["runs"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["target"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(targets, ["shardedstore", "redis"]);
    assert_eq!(report["runs"][1]["ops"], 200);
    assert_eq!(report["runs"][1]["read_misses"], 0);
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_a_failover_through_connection_errors_and_a_map_refresh() {
    let mut store = Store::start(3, 6).await;
    let kv = store.client();
    for i in 0..30 {
        kv.put(format!("k{i}"), format!("v{i}"), Condition::Always)
            .await
            .unwrap_or_else(|e| panic!("put k{i}: {e}"));
    }
    assert_eq!(kv.cached_map().map(|m| m.version), Some(1));
    let first_led_by_node0 = (0..30)
        .find(|i| {
            let p = store.map.partition_of(format!("k{i}").as_bytes());
            store.map.partitions[p as usize].primary.as_deref() == Some("node-0")
        })
        .unwrap_or_else(|| panic!("some reads must hit the dead primary"));

    // node-0 dies; the test (playing the operator) promotes an in-sync follower of each
    // partition it led, a little later, while the client already retries.
    store.cluster.nodes[0].kill9();
    let mut next = store.map.clone();
    next.version = 2;
    for e in &mut next.partitions {
        e.in_sync.retain(|n| n != "node-0");
        if e.primary.as_deref() == Some("node-0") {
            e.primary = e.in_sync.first().cloned();
            e.epoch += 1;
        }
    }
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reads = tokio::spawn({
        let kv = kv.clone();
        let started = started.clone();
        async move {
            let mut got = Vec::new();
            for i in 0..30 {
                started.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                got.push(kv.get(format!("k{i}")).await.map(|v| v.map(|v| v.value)));
            }
            got
        }
    });
    // The new map is installed only once the client is on a read that node-0 led.
    wait_until(
        Duration::from_secs(10),
        "the client to reach a key the dead node led",
        || {
            let started = started.load(std::sync::atomic::Ordering::SeqCst);
            async move { (started > first_led_by_node0).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    store
        .cluster
        .install_on(&next, &["node-1", "node-2"])
        .await
        .unwrap_or_else(|e| panic!("installing map 2: {e}"));

    let got = reads.await.unwrap_or_else(|e| panic!("{e}"));
    for (i, r) in got.into_iter().enumerate() {
        let v = r.unwrap_or_else(|e| panic!("get k{i} after failover: {e}"));
        assert_eq!(v.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    assert_eq!(kv.cached_map().map(|m| m.version), Some(2));
    // Writes to the promoted primaries work too, through the CLI with only a live endpoint.
    assert_ok(&cli(store.endpoint(1), &["put", "k0", "after"], None));
    assert_eq!(
        cli(store.endpoint(2), &["get", "k0"], None).stdout,
        b"after"
    );
}

/// The `-v` line of `get --local`, as `(version, session-version, served-by, staleness-ms)`.
fn local_line(o: &Output) -> (u64, u64, String, u64) {
    let text = stderr(o);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("version "))
        .unwrap_or_else(|| panic!("no version line: {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        let at = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        words.get(at + 1).copied().unwrap_or_default().to_owned()
    };
    let num = |name: &str| {
        field(name)
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("{name} in {line}: {e}"))
    };
    (
        num("version"),
        num("session-version"),
        field("served-by"),
        num("staleness-ms"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_file_carries_the_session_between_invocations() {
    let cluster = Store::start(3, 4).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("session.json");
    let session = file.to_string_lossy().into_owned();
    let key = "carried";
    let p = cluster.map.partition_of(key.as_bytes());
    let entry = &cluster.map.partitions[p as usize];
    let primary = entry.primary.clone().unwrap_or_default();
    let follower = entry
        .in_sync
        .iter()
        .find(|n| **n != primary)
        .cloned()
        .unwrap_or_else(|| panic!("no follower of partition {p}"));
    let follower_ep = cluster
        .cluster
        .nodes
        .iter()
        .find(|n| n.id == follower)
        .map(|n| n.client_addr.clone())
        .unwrap_or_default();

    // A put records its version in the file; the next process's local read includes it.
    let put = cli(
        &follower_ep,
        &["--session", &session, "-v", "put", key, "v1"],
        None,
    );
    assert_ok(&put);
    let version: u64 = stderr(&put)
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version: {}", stderr(&put)));
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("no session file: {e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(saved["store"], cluster.map.store.as_str());
    assert_eq!(saved["partitions"][p.to_string()], version);
    let args = [
        "--session",
        &session,
        "--via-endpoints",
        "-v",
        "get",
        "--local",
        key,
    ];
    let read = cli(&follower_ep, &args, None);
    assert_ok(&read);
    assert_eq!(stdout(&read), "v1");
    let (v, s, by, _) = local_line(&read);
    assert!(v == version && s >= version, "{}", stderr(&read));
    assert_eq!(
        by, follower,
        "the follower holds the write and answers itself"
    );

    // The file is what the next read sends: a session ahead of every replica makes the
    // follower wait for it and then hand the read to the primary (staleness 0).
    let ahead = serde_json::json!({
        "store": cluster.map.store,
        "partitions": { p.to_string(): version + 1000 },
    });
    std::fs::write(&file, ahead.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let read = cli(&follower_ep, &args, None);
    assert_ok(&read);
    let (_, _, by, staleness) = local_line(&read);
    assert_eq!(
        (by.as_str(), staleness),
        (primary.as_str(), 0),
        "{}",
        stderr(&read)
    );
    // The same versions saved for another store are not sent.
    let foreign = serde_json::json!({
        "store": "another-store",
        "partitions": { p.to_string(): version + 1000 },
    });
    std::fs::write(&file, foreign.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let read = cli(&follower_ep, &args, None);
    assert_ok(&read);
    assert_eq!(local_line(&read).2, follower, "{}", stderr(&read));

    // A file that is not a session is refused and left alone.
    std::fs::write(&file, "not a session").unwrap_or_else(|e| panic!("{e}"));
    let bad = cli(&follower_ep, &args, None);
    assert_eq!(code(&bad), 1);
    assert!(
        stderr(&bad).contains("is not a session"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap_or_default(),
        "not a session"
    );
}
