//! The monitoring shipped with the chart: every metric the Grafana dashboard or an alert
//! queries is one the code registers (or one the kubelet exports), the alert rules pass
//! `promtool check rules`, and their unit tests (`tests/promtool/rules_test.yaml`) pass
//! `promtool test rules`.

use shardedstore_tests::tools::require_tool;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Identifiers in `text` that start with one of `prefixes` (a PromQL metric name is a run
/// of `[a-zA-Z0-9_:]`).
fn names_with(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !ident(bytes[i - 1]))
            && prefixes
                .iter()
                .any(|p| text.get(i..).is_some_and(|rest| rest.starts_with(p)));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !ident(bytes[j]))
                .unwrap_or(bytes.len());
            names.insert(text[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Metric families the code registers: the string literals naming them in the two metrics
/// modules.
fn registered() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["node/src/metrics.rs", "operator/src/metrics.rs"] {
        let text = read(file);
        for quoted in text.split('"').skip(1).step_by(2) {
            if quoted.starts_with("shardedstore_")
                && quoted.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                // Test assertions in those files quote series names too (`…_bucket`).
                names.insert(family_of(quoted).to_owned());
            }
        }
    }
    names
}

/// Series Kubernetes itself exports (kubelet volume stats, cAdvisor), queried on purpose.
const FROM_KUBERNETES: [&str; 5] = [
    "kubelet_volume_stats_used_bytes",
    "kubelet_volume_stats_capacity_bytes",
    "kubelet_volume_stats_available_bytes",
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
];

fn family_of(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| series.strip_suffix(s))
        .unwrap_or(series)
}

fn queried(text: &str) -> BTreeSet<String> {
    names_with(text, &["shardedstore_", "kubelet_", "container_"])
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let code = registered();
    assert!(
        code.len() >= 20,
        "found only {code:?} in the metrics modules"
    );
    for file in [
        "charts/shardedstore-operator/dashboards/shardedstore.json",
        "charts/shardedstore-operator/rules/shardedstore.rules.yaml",
    ] {
        let used = queried(&read(file));
        assert!(!used.is_empty(), "{file} queries nothing");
        for series in &used {
            let known =
                code.contains(family_of(series)) || FROM_KUBERNETES.contains(&series.as_str());
            assert!(known, "{file} queries {series}, which nothing exports");
        }
    }
    // The check can fail: a misspelt metric is caught.
    let typo = queried("rate(shardedstore_request_total[5m])");
    assert!(typo.iter().any(|s| !code.contains(family_of(s))));
}

#[test]
fn dashboard_has_a_panel_for_every_metric_family() {
    let used: BTreeSet<String> = queried(&read(
        "charts/shardedstore-operator/dashboards/shardedstore.json",
    ))
    .iter()
    .map(|s| family_of(s).to_owned())
    .collect();
    for family in registered() {
        assert!(used.contains(&family), "no dashboard panel shows {family}");
    }
}

fn promtool(args: &[&str]) -> Option<String> {
    let promtool = require_tool("promtool")?;
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Some(text)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(checked) = promtool(&[
        "check",
        "rules",
        "charts/shardedstore-operator/rules/shardedstore.rules.yaml",
    ]) else {
        return;
    };
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/promtool/rules_test.yaml"]).unwrap_or_default();
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has at least one unit test.
    let rules = read("charts/shardedstore-operator/rules/shardedstore.rules.yaml");
    let tests = read("tests/promtool/rules_test.yaml");
    for line in rules.lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {alert}")),
                "alert {alert} has no unit test"
            );
        }
    }
}
