//! Real kube-apiserver: two operator replicas' leader election when the leader is cut off
//! from the API server (issue item 8, two operators). The leader's renewals hang (its
//! connection to the API server stops carrying bytes but stays open); it must give leadership
//! up — which stops every coordinator it runs — strictly before the other replica can take
//! the Lease over, so two replicas never coordinate at once.

use shardedstore_operator::leader::LeaderElector;
use shardedstore_tests::apiserver_harness::{ControlPlane, eventually};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Background tasks aborted when dropped, however the test ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Copies bytes until either side closes; once `cut` is set, bytes read are held forever
/// (the connection stays open, as behind a network partition that drops packets).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy on loopback to `upstream`; returns its port.
async fn proxy(
    upstream: String,
    cut: Arc<AtomicBool>,
    tasks: &mut Tasks,
) -> Result<u16, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tasks.0.push(tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, cut.clone()));
            tokio::spawn(pump(sr, cw, cut.clone()));
        }
    }));
    Ok(port)
}

/// Runs `elector` and records the instant of every change of its leadership.
fn run_elector(
    elector: LeaderElector,
    tasks: &mut Tasks,
) -> Arc<std::sync::Mutex<Vec<(Instant, bool)>>> {
    let (tx, mut rx) = watch::channel(false);
    let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = changes.clone();
    tasks.0.push(tokio::spawn(elector.run(tx)));
    tasks.0.push(tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let leads = *rx.borrow_and_update();
            if let Ok(mut c) = seen.lock() {
                c.push((Instant::now(), leads));
            }
        }
    }));
    changes
}

fn last(changes: &std::sync::Mutex<Vec<(Instant, bool)>>) -> Option<(Instant, bool)> {
    changes.lock().ok()?.last().copied()
}

/// Issue item 8 (two operators): replica A leads; its connection to the API server is cut
/// (renewals hang, nothing fails). A must stop leading — the signal that stops its
/// coordinators' heartbeats and map writes at once — before replica B acquires the Lease, and
/// within one Lease duration of the cut. B then takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_another_takes_over() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let direct = plane.client().await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(plane.kubeconfig())?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let upstream = config
        .cluster_url
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or("kubeconfig server has no authority")?;
    let mut tasks = Tasks(Vec::new());
    let cut = Arc::new(AtomicBool::new(false));
    let port = proxy(upstream, cut.clone(), &mut tasks).await?;
    config.cluster_url = format!("https://127.0.0.1:{port}").parse()?;
    let through_proxy = kube::Client::try_from(config)?;

    let lease = Duration::from_secs(4);
    let renew = Duration::from_secs(1);
    let name = "sst-test-two-operators";
    let a = LeaderElector::new(through_proxy, "default", name, "a".into(), lease, renew);
    let a_changes = run_elector(a, &mut tasks);
    eventually(Duration::from_secs(30), "replica a to lead", || {
        let c = a_changes.clone();
        async move { last(&c).filter(|(_, leads)| *leads).map(|_| ()) }
    })
    .await?;
    let b = LeaderElector::new(direct, "default", name, "b".into(), lease, renew);
    let b_changes = run_elector(b, &mut tasks);
    // b follows a live Lease for several of its rounds.
    let window = Instant::now() + 3 * renew;
    while Instant::now() < window {
        assert!(
            last(&b_changes).is_none_or(|(_, leads)| !leads),
            "b took a live Lease"
        );
        assert!(
            last(&a_changes).is_some_and(|(_, leads)| leads),
            "a lost a Lease it renews"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cut_at = Instant::now();
    cut.store(true, Ordering::SeqCst);
    let b_at = eventually(Duration::from_secs(30), "replica b to take over", || {
        let c = b_changes.clone();
        async move { last(&c).filter(|(_, leads)| *leads).map(|(t, _)| t) }
    })
    .await?;
    let a_stopped = a_changes
        .lock()
        .map_err(|_| "poisoned")?
        .iter()
        .find(|(t, leads)| *t >= cut_at && !leads)
        .map(|(t, _)| *t)
        .ok_or("replica a never stopped leading after the cut")?;
    println!(
        "cut at 0 ms; a stopped leading at {} ms; b took over at {} ms",
        (a_stopped - cut_at).as_millis(),
        (b_at - cut_at).as_millis()
    );
    assert!(
        a_stopped < b_at,
        "overlap: b led from {:?} after the cut, a only stopped at {:?}",
        b_at - cut_at,
        a_stopped - cut_at
    );
    assert!(
        a_stopped - cut_at <= lease,
        "a led {:?} after the cut, longer than the Lease duration {lease:?}",
        a_stopped - cut_at
    );
    Ok(())
}
