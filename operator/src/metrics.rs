//! Prometheus metrics of the operator: one non-global registry, served on `/metrics`.
//!
//! The controller records reconciles; the coordinator's events and status snapshots feed
//! the partition metrics through [`Metrics::observe_event`] and [`Metrics::observe_status`],
//! so local mode can share the same struct through an `Arc`.

use crate::coordinator::{CoordinatorEvent, CoordinatorStatus};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::net::SocketAddr;
use warp::Filter;

/// Why metrics could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric {name}")]
    Register {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
    #[error("binding the metrics endpoint to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Identifies a store in metric labels (bounded: one value per store).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreLabels {
    pub namespace: String,
    pub store: String,
}

impl StoreLabels {
    fn values(&self) -> [&str; 2] {
        [&self.namespace, &self.store]
    }
}

/// Health classes of the `shardedstore_partitions` gauge.
const HEALTH: [&str; 4] = ["healthy", "under_replicated", "unavailable", "moving"];

/// The operator's metrics and the registry that owns them.
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub leader: IntGauge,
    pub failovers: IntCounterVec,
    pub moves_started: IntCounterVec,
    pub moves_finished: IntCounterVec,
    pub moves_failed: IntCounterVec,
    pub heartbeat_failures: IntCounterVec,
    pub partitions: IntGaugeVec,
    pub map_version: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    metric: Result<T, prometheus::Error>,
) -> Result<T, MetricsError> {
    let metric = metric.map_err(|source| MetricsError::Register { name, source })?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|source| MetricsError::Register { name, source })?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let store = &["namespace", "store"];
        let per_store = |name: &'static str, help: &str| {
            register(&r, name, IntCounterVec::new(Opts::new(name, help), store))
        };
        Ok(Self {
            reconciles: register(
                &r,
                "shardedstore_reconciles_total",
                IntCounter::new("shardedstore_reconciles_total", "Reconciliations started."),
            )?,
            reconcile_errors: register(
                &r,
                "shardedstore_reconcile_errors_total",
                IntCounterVec::new(
                    Opts::new(
                        "shardedstore_reconcile_errors_total",
                        "Reconciliations that failed, by error category.",
                    ),
                    &["category"],
                ),
            )?,
            reconcile_duration: register(
                &r,
                "shardedstore_reconcile_duration_seconds",
                Histogram::with_opts(
                    HistogramOpts::new(
                        "shardedstore_reconcile_duration_seconds",
                        "Duration of reconciliations.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                ),
            )?,
            leader: register(
                &r,
                "shardedstore_operator_leader",
                IntGauge::new(
                    "shardedstore_operator_leader",
                    "1 while this operator replica holds the leader Lease.",
                ),
            )?,
            failovers: per_store("shardedstore_failovers_total", "Primary failovers.")?,
            moves_started: per_store("shardedstore_moves_started_total", "Replica moves started.")?,
            moves_finished: per_store(
                "shardedstore_moves_finished_total",
                "Replica moves completed.",
            )?,
            moves_failed: per_store(
                "shardedstore_moves_failed_total",
                "Replica moves that failed.",
            )?,
            heartbeat_failures: per_store(
                "shardedstore_heartbeat_failures_total",
                "Heartbeats to storage nodes that failed.",
            )?,
            partitions: register(
                &r,
                "shardedstore_partitions",
                IntGaugeVec::new(
                    Opts::new("shardedstore_partitions", "Partitions by health."),
                    &["namespace", "store", "health"],
                ),
            )?,
            map_version: register(
                &r,
                "shardedstore_map_version",
                IntGaugeVec::new(
                    Opts::new("shardedstore_map_version", "Version of the partition map."),
                    store,
                ),
            )?,
            registry: r,
        })
    }

    /// Starts timing a reconciliation; the duration is recorded when the guard drops.
    pub fn reconcile_timer(&self) -> prometheus::HistogramTimer {
        self.reconciles.inc();
        self.reconcile_duration.start_timer()
    }

    /// Counts a failed reconciliation under its error category.
    pub fn reconcile_failed(&self, category: &'static str) {
        self.reconcile_errors.with_label_values(&[category]).inc();
    }

    /// Counts what a coordinator reports.
    pub fn observe_event(&self, store: &StoreLabels, event: &CoordinatorEvent) {
        let labels = store.values();
        match event {
            CoordinatorEvent::Failover { .. } => self.failovers.with_label_values(&labels).inc(),
            CoordinatorEvent::MoveStarted { .. } => {
                self.moves_started.with_label_values(&labels).inc()
            }
            CoordinatorEvent::MoveFinished { .. } => {
                self.moves_finished.with_label_values(&labels).inc()
            }
            CoordinatorEvent::MoveFailed { .. } => {
                self.moves_failed.with_label_values(&labels).inc()
            }
            CoordinatorEvent::HeartbeatFailed { .. } => {
                self.heartbeat_failures.with_label_values(&labels).inc()
            }
            _ => {}
        }
    }

    /// Sets the partition gauges from a coordinator's status snapshot.
    pub fn observe_status(&self, store: &StoreLabels, status: &CoordinatorStatus) {
        let s = &status.partition_summary;
        let [namespace, name] = store.values();
        for (health, value) in
            HEALTH
                .iter()
                .zip([s.healthy, s.under_replicated, s.unavailable, s.moving])
        {
            self.partitions
                .with_label_values(&[namespace, name, health])
                .set(i64::from(value));
        }
        self.map_version
            .with_label_values(&[namespace, name])
            .set(i64::try_from(status.map_version).unwrap_or(i64::MAX));
    }

    /// Drops every series of a deleted store.
    pub fn forget_store(&self, store: &StoreLabels) {
        let labels = store.values();
        for vec in [
            &self.failovers,
            &self.moves_started,
            &self.moves_finished,
            &self.moves_failed,
            &self.heartbeat_failures,
        ] {
            let _ = vec.remove_label_values(&labels);
        }
        let _ = self.map_version.remove_label_values(&labels);
        for health in HEALTH {
            let _ = self
                .partitions
                .remove_label_values(&[labels[0], labels[1], health]);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// `/metrics`, `/healthz`, `/readyz`; boxed so the server future is `Send` for any caller.
fn routes(
    metrics: std::sync::Arc<Metrics>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let metrics_route = warp::path("metrics")
        .and(warp::path::end())
        .map(move || text_reply(metrics.render()));
    let health = warp::path("healthz")
        .or(warp::path("readyz"))
        .unify()
        .and(warp::path::end())
        .map(|| text_reply("ok\n".to_owned()));
    metrics_route.or(health).unify().boxed()
}

fn text_reply(body: String) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(body.into());
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is dropped.
pub async fn serve(metrics: std::sync::Arc<Metrics>, addr: SocketAddr) -> Result<(), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    serve_on(metrics, listener).await;
    Ok(())
}

/// Serves the metrics endpoints on an already bound listener.
pub async fn serve_on(metrics: std::sync::Arc<Metrics>, listener: tokio::net::TcpListener) {
    warp::serve(routes(metrics)).incoming(listener).run().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::PartitionSummary;

    #[test]
    fn metrics_render_with_bounded_labels() {
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        {
            let _timer = m.reconcile_timer();
        }
        m.reconcile_failed("Apply");
        let store = StoreLabels {
            namespace: "ns".into(),
            store: "kv".into(),
        };
        m.observe_event(
            &store,
            &CoordinatorEvent::Failover {
                partition: 3,
                from: None,
                to: "kv-1".into(),
                epoch: 2,
                confirmed: true,
            },
        );
        m.observe_status(
            &store,
            &CoordinatorStatus {
                map_version: 9,
                partition_summary: PartitionSummary {
                    total: 4,
                    healthy: 3,
                    under_replicated: 1,
                    ..PartitionSummary::default()
                },
                ..CoordinatorStatus::default()
            },
        );
        let text = m.render();
        for line in [
            "shardedstore_reconciles_total 1",
            "shardedstore_reconcile_duration_seconds_count 1",
            "shardedstore_reconcile_errors_total{category=\"Apply\"} 1",
            "shardedstore_failovers_total{namespace=\"ns\",store=\"kv\"} 1",
            "shardedstore_partitions{health=\"under_replicated\",namespace=\"ns\",store=\"kv\"} 1",
            "shardedstore_map_version{namespace=\"ns\",store=\"kv\"} 9",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.forget_store(&store);
        assert!(!m.render().contains("store=\"kv\""));
    }

    #[tokio::test]
    async fn metrics_and_health_are_served_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let m = std::sync::Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        m.reconcile_failed("Apply");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(serve_on(m, listener));
        let get = |path: &'static str| async move {
            let mut conn = tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            conn.write_all(req.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut body = String::new();
            conn.read_to_string(&mut body)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            body
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(
            metrics.contains("shardedstore_reconcile_errors_total{category=\"Apply\"} 1"),
            "{metrics}"
        );
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
