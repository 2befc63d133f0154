//! Oversized request bodies are answered, not dropped: a client that sends a 2 MiB value
//! without `Expect: 100-continue` receives the 413 JSON error (and a refused peer request
//! its 401) instead of a connection reset or a broken pipe — checked with Python's standard
//! `http.client` and `urllib` and with curl, on the client and the peer port.

use shardedstore_tests::node_harness::{Cluster, NodeOptions};
use std::process::Command;
use std::time::Duration;

/// Sends a 2 MiB body with `http.client` (with `Content-Length`, then chunked) and with
/// `urllib`; prints `<status> <error code>` per request, and after the first one the status
/// of a small GET on the same connection (the connection survives the refusal).
const PYTHON: &str = r#"
import http.client, json, sys, urllib.request, urllib.error
host, port, method, path, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
body = b"x" * (2 * 1024 * 1024)
headers = {"Content-Type": "application/octet-stream"}
if token:
    headers["Authorization"] = "Bearer " + token
def code(raw):
    return json.loads(raw)["error"]["code"]
c = http.client.HTTPConnection(host, port, timeout=60)
c.request(method, path, body=body, headers=headers)
r = c.getresponse()
print(r.status, code(r.read()))
c.request("GET", "/v1/kv/absent-key", headers=headers)
r = c.getresponse()
r.read()
print("then", r.status)
c.close()
c = http.client.HTTPConnection(host, port, timeout=60)
chunks = iter([b"y" * 65536] * 32)
c.request(method, path, body=chunks, headers=headers, encode_chunked=True)
r = c.getresponse()
print(r.status, code(r.read()))
c.close()
req = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method=method, headers=headers)
try:
    urllib.request.urlopen(req, timeout=60)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, code(e.read()))
"#;

fn python(addr: &str, method: &str, path: &str, token: &str) -> anyhow::Result<Vec<String>> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad address {addr}"))?;
    let out = Command::new("python3")
        .args(["-c", PYTHON, host, port, method, path, token])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// `curl` with `Expect:` removed (curl adds `Expect: 100-continue` to large bodies): the
/// status code and the error code of the answer.
fn curl(url: &str, method: &str, file: &std::path::Path, token: &str) -> anyhow::Result<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-X", method, "-H", "Expect:"])
        .args(["-H", "Content-Type: application/octet-stream"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .args(["-w", "\n%{http_code}"]);
    if !token.is_empty() {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(url).output()?;
    anyhow::ensure!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text
        .rsplit_once('\n')
        .ok_or_else(|| anyhow::anyhow!("no status in {text:?}"))?;
    let v: serde_json::Value = serde_json::from_str(body)?;
    Ok(format!(
        "{status} {}",
        v["error"]["code"].as_str().unwrap_or("")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_their_error_answer_not_a_reset() -> anyhow::Result<()> {
    let options = NodeOptions {
        extra_args: vec!["--max-peer-body-bytes".into(), "1048576".into()],
        ..NodeOptions::default()
    };
    let cluster = Cluster::start(1, options)?;
    cluster.wait_healthy().await?;
    let map = cluster.map_round_robin(4, 1, 1);
    cluster.install(&map).await?;
    cluster.heartbeat_all(Duration::from_secs(60)).await?;
    let node = &cluster.nodes[0];
    let token = cluster.options.token.clone();

    // Client port: the value limit is 1 MiB.
    let lines = python(&node.client_addr, "PUT", "/v1/kv/big", "")?;
    assert_eq!(
        lines,
        vec![
            "413 value_too_large",
            "then 404",
            "413 value_too_large",
            "413 value_too_large"
        ],
        "{}",
        cluster.logs(20)
    );
    // Peer port: a body over --max-peer-body-bytes, and a body without the peer token.
    let lines = python(&node.peer_addr, "POST", "/admin/v1/map", &token)?;
    assert_eq!(lines[0], "413 body_too_large", "{lines:?}");
    assert_eq!(lines[2..], ["413 body_too_large", "413 body_too_large"]);
    let lines = python(&node.peer_addr, "POST", "/admin/v1/map", "")?;
    assert_eq!(lines[0], "401 unauthenticated", "{lines:?}");
    assert_eq!(lines[2..], ["401 unauthenticated", "401 unauthenticated"]);

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("value");
    std::fs::write(&file, vec![b'z'; 2 * 1024 * 1024])?;
    let client_url = format!("http://{}/v1/kv/big", node.client_addr);
    assert_eq!(curl(&client_url, "PUT", &file, "")?, "413 value_too_large");
    let peer_url = format!("http://{}/admin/v1/map", node.peer_addr);
    assert_eq!(
        curl(&peer_url, "POST", &file, &token)?,
        "413 body_too_large"
    );
    assert_eq!(curl(&peer_url, "POST", &file, "")?, "401 unauthenticated");

    // Nothing was written and the node still serves.
    let (status, _, _) = cluster.get(0, "big").await?;
    assert_eq!(status, 404);
    let (status, _) = cluster.put(0, "small", b"v".to_vec()).await?;
    assert_eq!(status, 201);
    Ok(())
}
