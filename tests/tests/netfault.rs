//! The partition harness cuts exactly the links it names: real TCP connections and UDP
//! datagrams between harness addresses, tried across cut and uncut links with deadlines,
//! before and after healing; tables are removed on drop and leftovers are swept.

use shardedstore_tests::netfault::{Cut, NetFaultError, NetFaults, random_subnet, sweep_leftovers};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// How long a blocked attempt is given before it counts as blocked; an open link answers
/// in well under a millisecond, so this is generous for a loaded machine.
const BLOCKED_AFTER: Duration = Duration::from_millis(1500);

/// Returns a harness or `None` (printing why) when nft is missing outside CI.
fn harness() -> Option<NetFaults> {
    shardedstore_tests::tools::require_tool("nft")?;
    Some(NetFaults::new().unwrap_or_else(|e| panic!("{e}")))
}

/// Three harness addresses, each with a TCP echo listener and a UDP socket.
struct Hosts {
    addrs: Vec<Ipv4Addr>,
    tcp: Vec<SocketAddr>,
    udp: Vec<UdpSocket>,
}

async fn hosts() -> Hosts {
    let subnet = u32::from(random_subnet());
    let addrs: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::from(subnet + i)).collect();
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for a in &addrs {
        let l = TcpListener::bind((*a, 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.push(l.local_addr().unwrap_or_else(|e| panic!("{e}")));
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).await.is_ok() {
                        if c.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        udp.push(
            UdpSocket::bind((*a, 0))
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    Hosts { addrs, tcp, udp }
}

/// Sends one byte over `c` and waits for its echo.
async fn echo(c: &mut TcpStream, deadline: Duration) -> bool {
    tokio::time::timeout(deadline, async {
        c.write_all(b"x").await?;
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.map(|_| ())
    })
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Opens a connection from `src` to `dst` and exchanges one byte, within `deadline`.
async fn tcp_reaches(src: Ipv4Addr, dst: SocketAddr, deadline: Duration) -> bool {
    let attempt = async {
        let s = TcpSocket::new_v4()?;
        s.bind((src, 0).into())?;
        s.connect(dst).await
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Ok(mut c)) => echo(&mut c, deadline).await,
        _ => false,
    }
}

/// Which (source index, destination index) TCP pairs work; index 3 is 127.0.0.1.
async fn tcp_matrix(h: &Hosts) -> Vec<(usize, usize, bool)> {
    let mut sources = h.addrs.clone();
    sources.push(Ipv4Addr::LOCALHOST);
    let mut tasks = Vec::new();
    for (si, src) in sources.iter().enumerate() {
        for (di, dst) in h.tcp.iter().enumerate() {
            if si != di {
                let (src, dst) = (*src, *dst);
                tasks.push((si, di, tokio::spawn(tcp_reaches(src, dst, BLOCKED_AFTER))));
            }
        }
    }
    let mut out = Vec::new();
    for (si, di, t) in tasks {
        out.push((si, di, t.await.unwrap_or(false)));
    }
    out
}

/// Asserts that exactly the `blocked` (source, destination) pairs fail.
async fn assert_tcp_blocked(h: &Hosts, blocked: &[(usize, usize)], when: &str) {
    for (si, di, ok) in tcp_matrix(h).await {
        let expect_ok = !blocked.contains(&(si, di));
        assert_eq!(
            ok, expect_ok,
            "{when}: tcp {si} -> {di} reachable = {ok}, expected {expect_ok}"
        );
    }
}

/// Whether a datagram from host `from` reaches host `to` within the deadline.
async fn udp_reaches(h: &Hosts, from: usize, to: usize) -> bool {
    let dst = h.udp[to].local_addr().unwrap_or_else(|e| panic!("{e}"));
    let token = rand::random::<u64>().to_be_bytes();
    let _ = h.udp[from].send_to(&token, dst).await;
    let mut buf = [0u8; 8];
    tokio::time::timeout(BLOCKED_AFTER, async {
        loop {
            let (n, _) = h.udp[to].recv_from(&mut buf).await?;
            if n == 8 && buf == token {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await
    .is_ok_and(|r| r.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_symmetric_cut_blocks_that_link_both_ways_and_nothing_else() {
    let Some(nf) = harness() else { return };
    let h = hosts().await;
    assert_tcp_blocked(&h, &[], "before").await;
    let cut = Cut::Both {
        a: h.addrs[0],
        b: h.addrs[1],
    };
    nf.cut(cut).unwrap_or_else(|e| panic!("{e}"));
    assert_tcp_blocked(&h, &[(0, 1), (1, 0)], "cut 0<->1").await;
    assert!(!udp_reaches(&h, 0, 1).await && !udp_reaches(&h, 1, 0).await);
    assert!(udp_reaches(&h, 0, 2).await && udp_reaches(&h, 2, 1).await);
    nf.heal(cut).unwrap_or_else(|e| panic!("{e}"));
    assert_tcp_blocked(&h, &[], "healed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_of_initiated_connections_blocks_one_direction_only() {
    let Some(nf) = harness() else { return };
    let h = hosts().await;
    nf.cut(Cut::Initiated {
        from: h.addrs[0],
        to: h.addrs[1],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // 0 cannot open connections to 1; 1 still opens connections to 0 and talks over them.
    assert_tcp_blocked(&h, &[(0, 1)], "cut 0->1 connections").await;
    nf.heal_all().unwrap_or_else(|e| panic!("{e}"));
    assert_tcp_blocked(&h, &[], "healed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_way_drop_loses_packets_in_one_direction() {
    let Some(nf) = harness() else { return };
    let h = hosts().await;
    nf.cut(Cut::OneWay {
        from: h.addrs[0],
        to: h.addrs[1],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!udp_reaches(&h, 0, 1).await, "0 -> 1 datagrams are dropped");
    assert!(udp_reaches(&h, 1, 0).await, "1 -> 0 datagrams still arrive");
    // TCP needs both directions: connections either way stall (the SYN-ACK of 1 -> 0 is lost).
    assert_tcp_blocked(&h, &[(0, 1), (1, 0)], "one-way 0->1").await;
    nf.heal_all().unwrap_or_else(|e| panic!("{e}"));
    assert!(udp_reaches(&h, 0, 1).await);
    assert_tcp_blocked(&h, &[], "healed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_connection_stalls_during_a_cut_and_resumes_after_the_heal() {
    let Some(nf) = harness() else { return };
    let h = hosts().await;
    let s = TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    s.bind((h.addrs[0], 0).into())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = s.connect(h.tcp[1]).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(echo(&mut c, BLOCKED_AFTER).await);
    let cut = Cut::Both {
        a: h.addrs[0],
        b: h.addrs[1],
    };
    nf.cut(cut).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !echo(&mut c, BLOCKED_AFTER).await,
        "the cut must stall an open connection"
    );
    nf.heal(cut).unwrap_or_else(|e| panic!("{e}"));
    // TCP retransmits the pending byte and its echo; both arrive once the link is back
    // (the earlier echo completes first, then this one).
    let mut b = [0u8; 2];
    c.write_all(b"y").await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut b))
        .await
        .unwrap_or_else(|_| panic!("no echo within 20 s of the heal"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&b, b"xy");
}

#[test]
fn cuts_naming_shared_addresses_are_refused() {
    let Some(nf) = harness() else { return };
    let r = nf.cut(Cut::Both {
        a: Ipv4Addr::LOCALHOST,
        b: Ipv4Addr::new(127, 5, 5, 5),
    });
    assert!(matches!(r, Err(NetFaultError::SharedAddress(a)) if a == Ipv4Addr::LOCALHOST));
}

fn tables() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_table_is_deleted_on_drop_also_when_a_test_panics() {
    let Some(nf) = harness() else { return };
    let table = nf.table().to_owned();
    assert!(tables().contains(&table));
    let r = std::panic::catch_unwind(move || {
        let _nf = nf;
        panic!("a failing test");
    });
    assert!(r.is_err());
    assert!(!tables().contains(&table), "{table} left behind");
}

#[test]
fn tables_left_by_dead_processes_are_swept() {
    if shardedstore_tests::tools::require_tool("nft").is_none() {
        return;
    }
    // No process has pid 0: this is what a harness killed with SIGKILL leaves.
    let leftover = "shardedstore_netfault_0_7";
    let ok = std::process::Command::new("nft")
        .args(["add", "table", "ip", leftover])
        .status()
        .unwrap_or_else(|e| panic!("{e}"))
        .success();
    assert!(ok);
    // A concurrent test's harness may sweep it first; either way it must be gone.
    sweep_leftovers().unwrap_or_else(|e| panic!("{e}"));
    assert!(!tables().contains(leftover));
}
