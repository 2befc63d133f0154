//! Node metrics: a struct that owns its own Prometheus registry (never the global one).
//!
//! Names are prefixed `shardedstore_`, counters end in `_total`, durations are histograms in
//! seconds, and every label takes a bounded set of values (never a key or an error text).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Instant;

mod phases;
pub use phases::{WritePhase, WritePhases, WriteTimer, replicated_through};

/// Bucket bounds for write-path latencies: 0.1 ms to 1 s.
const WRITE_PATH_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
];

/// Why the metrics could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric")]
    Register(#[from] prometheus::Error),
}

/// Every metric the node exports.
pub struct NodeMetrics {
    registry: Registry,
    /// Client requests by operation (`get`, `put`, `delete`, `map`) and status class (`2xx`…).
    pub requests: IntCounterVec,
    /// Client requests answered with an error, by operation and the error's `code`.
    pub request_errors: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Largest number of entries any follower of a partition this node leads is behind.
    pub replication_lag_entries: IntGauge,
    pub commit_batch_commands: Histogram,
    pub fsync_seconds: Histogram,
    pub checkpoint_seconds: Histogram,
    pub stored_bytes: IntGauge,
    pub stored_keys: IntGauge,
    /// Bytes of snapshots sent or received while catching a replica up (`direction`).
    pub catchup_bytes: IntCounterVec,
    /// Log entries retained across partitions (bounded by retention and compaction).
    pub log_entries: IntGauge,
    /// Bytes of those entries appended since the process started (`--log-window-bytes`).
    pub log_bytes: IntGauge,
    pub value_file_bytes: IntGauge,
    pub value_compactions: IntCounter,
    pub forwarded_requests: IntCounter,
    pub rejected_frames: IntCounter,
    /// Append streams open between this node and others (`side`: `outgoing` to the members of
    /// partitions this node leads, `incoming` from their primaries).
    pub append_streams: IntGaugeVec,
    /// Primary: time from a write's arrival at its partition to each [`WritePhase`].
    pub write_phase_seconds: HistogramVec,
    /// Follower: time from an append's arrival to its entries being durable.
    pub follower_append_seconds: Histogram,
    /// Primary: time from an append leaving its partition's replication task to the member's
    /// answer (batching, the request, the member's durable write and the way back).
    pub append_round_trip_seconds: Histogram,
    /// Changed TLS files taken up (`result="applied"`) or refused (`"refused"`), copied
    /// from [`crate::tls::reload_counts`] when rendered.
    tls_reloads: IntCounterVec,
}

impl NodeMetrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "shardedstore_requests_total",
                "Client API requests by operation and status class",
            ),
            &["operation", "status"],
        )?;
        let request_errors = IntCounterVec::new(
            Opts::new(
                "shardedstore_request_errors_total",
                "Client API requests answered with an error (4xx, 5xx), by operation and error code (the `code` of the JSON error body, e.g. not_primary, handing_off, storage_stalled, commit_timeout)",
            ),
            &["operation", "code"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "shardedstore_request_duration_seconds",
                "Client API request duration by operation",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["operation"],
        )?;
        let replication_lag_entries = IntGauge::new(
            "shardedstore_replication_lag_entries",
            "Largest number of log entries a follower of a partition led here is behind",
        )?;
        let commit_batch_commands = Histogram::with_opts(
            HistogramOpts::new(
                "shardedstore_commit_batch_commands",
                "Commands group-committed in one storage batch (one write-ahead log record)",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 4096.0,
            ]),
        )?;
        let fsync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shardedstore_fsync_duration_seconds",
                "Duration of making one storage batch durable (its write-ahead log record's write and fsync, or the checkpoint it needed)",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )?;
        let checkpoint_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shardedstore_checkpoint_duration_seconds",
                "Duration of checkpoints: durable database commits after which the write-ahead log starts a new generation",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        let stored_bytes = IntGauge::new(
            "shardedstore_stored_bytes",
            "Bytes of keys and values stored on this node",
        )?;
        let stored_keys = IntGauge::new("shardedstore_stored_keys", "Keys stored on this node")?;
        let catchup_bytes = IntCounterVec::new(
            Opts::new(
                "shardedstore_catchup_bytes_total",
                "Snapshot bytes streamed to catch replicas up",
            ),
            &["direction"],
        )?;
        let log_entries = IntGauge::new(
            "shardedstore_log_entries",
            "Log entries retained across the partitions of this node",
        )?;
        let log_bytes = IntGauge::new(
            "shardedstore_log_bytes",
            "Bytes of the retained log entries appended since this process started (entries already on disk at its start are not counted)",
        )?;
        let value_file_bytes = IntGauge::new(
            "shardedstore_value_file_bytes",
            "Bytes in this node's value files (values larger than 64 bytes), live and not yet compacted away",
        )?;
        let value_compactions = IntCounter::new(
            "shardedstore_value_compactions_total",
            "Value files emptied of their live values into a new file",
        )?;
        let forwarded_requests = IntCounter::new(
            "shardedstore_forwarded_requests_total",
            "Client requests forwarded to another node",
        )?;
        let rejected_frames = IntCounter::new(
            "shardedstore_rejected_peer_frames_total",
            "Malformed replication frames rejected on the peer port",
        )?;
        let append_streams = IntGaugeVec::new(
            Opts::new(
                "shardedstore_append_streams",
                "Append streams open between this node and other nodes, by side (outgoing, incoming)",
            ),
            &["side"],
        )?;
        let write_phase_seconds = HistogramVec::new(
            HistogramOpts::new(
                "shardedstore_write_phase_duration_seconds",
                "Primary: time from a write's arrival to each phase (local_durable, replicated, committed, applied, acknowledged)",
            )
            .buckets(WRITE_PATH_BUCKETS.to_vec()),
            &["phase"],
        )?;
        let follower_append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shardedstore_follower_append_duration_seconds",
                "Follower: time from a replication append's arrival to its entries being durable",
            )
            .buckets(WRITE_PATH_BUCKETS.to_vec()),
        )?;
        let append_round_trip_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shardedstore_append_round_trip_duration_seconds",
                "Primary: time from a replication append leaving its partition's task to the member's answer",
            )
            .buckets(WRITE_PATH_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_errors.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(replication_lag_entries.clone()))?;
        registry.register(Box::new(commit_batch_commands.clone()))?;
        registry.register(Box::new(fsync_seconds.clone()))?;
        registry.register(Box::new(checkpoint_seconds.clone()))?;
        registry.register(Box::new(stored_bytes.clone()))?;
        registry.register(Box::new(stored_keys.clone()))?;
        registry.register(Box::new(catchup_bytes.clone()))?;
        registry.register(Box::new(log_entries.clone()))?;
        registry.register(Box::new(log_bytes.clone()))?;
        registry.register(Box::new(value_file_bytes.clone()))?;
        registry.register(Box::new(value_compactions.clone()))?;
        registry.register(Box::new(forwarded_requests.clone()))?;
        registry.register(Box::new(rejected_frames.clone()))?;
        registry.register(Box::new(append_streams.clone()))?;
        registry.register(Box::new(write_phase_seconds.clone()))?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "shardedstore_tls_reloads_total",
                "Changed TLS certificate, key or CA files taken up (applied) or refused, keeping the previous ones (refused)",
            ),
            &["result"],
        )?;
        for result in ["applied", "refused"] {
            tls_reloads.with_label_values(&[result]);
        }
        registry.register(Box::new(follower_append_seconds.clone()))?;
        registry.register(Box::new(append_round_trip_seconds.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_errors,
            request_seconds,
            replication_lag_entries,
            commit_batch_commands,
            fsync_seconds,
            checkpoint_seconds,
            stored_bytes,
            stored_keys,
            catchup_bytes,
            log_entries,
            log_bytes,
            value_file_bytes,
            value_compactions,
            forwarded_requests,
            rejected_frames,
            append_streams,
            write_phase_seconds,
            append_round_trip_seconds,
            follower_append_seconds,
            tls_reloads,
        })
    }

    /// Records one finished client request; `code` is an error answer's code.
    pub fn observe_request(
        &self,
        operation: &'static str,
        status: u16,
        code: Option<&str>,
        started: Instant,
    ) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[operation, class]).inc();
        if status >= 400 {
            let code = code.unwrap_or("other");
            self.request_errors
                .with_label_values(&[operation, code])
                .inc();
        }
        self.request_seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let (applied, refused) = crate::tls::reload_counts();
        for (result, total) in [("applied", applied), ("refused", refused)] {
            let c = self.tls_reloads.with_label_values(&[result]);
            c.inc_by(total.saturating_sub(c.get()));
        }
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Feeds the storage writer's observations into the metrics.
pub struct WriterMetrics {
    pub batch: Histogram,
    pub fsync: Histogram,
    pub checkpoint: Histogram,
}

impl crate::storage::writer::WriterObserver for WriterMetrics {
    fn batch(&self, commands: usize, durable: bool, commit_seconds: f64) {
        self.batch.observe(commands as f64);
        if durable {
            self.fsync.observe(commit_seconds);
        }
    }

    fn checkpoint(&self, seconds: f64) {
        self.checkpoint.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics() {
        let m = NodeMetrics::new().unwrap_or_else(|e| panic!("{e}"));
        m.observe_request("get", 404, Some("not_found"), Instant::now());
        m.observe_request("put", 503, Some("handing_off"), Instant::now());
        m.observe_request("put", 200, None, Instant::now());
        let text = m.render();
        assert!(text.contains("shardedstore_requests_total{operation=\"get\",status=\"4xx\"} 1"));
        assert!(text.contains(
            "shardedstore_request_errors_total{code=\"handing_off\",operation=\"put\"} 1"
        ));
        assert!(
            text.contains(
                "shardedstore_request_errors_total{code=\"not_found\",operation=\"get\"} 1"
            )
        );
        assert!(!text.contains("request_errors_total{code=\"other\""));
        assert!(text.contains("shardedstore_request_duration_seconds_bucket"));
    }
}
