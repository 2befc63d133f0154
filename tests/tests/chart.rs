//! The Helm chart: lints with the real `helm`, renders, grants what the operator needs, and
//! ships the same CRD as `crds/`.
//!
//! `helm` is found as [`shardedstore_tests::tools`] describes.

use std::path::{Path, PathBuf};
use std::process::Command;

use shardedstore_tests::tools::require_tool;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/shardedstore-operator")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn render(helm: &Path, extra: &[&str]) -> Vec<serde_yaml::Value> {
    let text = run(Command::new(helm)
        .args([
            "template",
            "rel",
            "--namespace",
            "ops",
            "--kube-version",
            "1.34.0",
        ])
        .arg(chart_dir())
        .args(extra));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("rendered YAML: {e}"))
        })
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn chart_crd_is_the_generated_one() {
    let generated =
        std::fs::read_to_string(repo_root().join("crds/shardedstore.io_shardedstores.yaml"))
            .unwrap_or_else(|e| panic!("crds/: {e}"));
    let in_chart =
        std::fs::read_to_string(chart_dir().join("crds/shardedstore.io_shardedstores.yaml"))
            .unwrap_or_else(|e| panic!("chart crds/: {e}"));
    assert!(
        generated == in_chart,
        "the chart's CRD differs from crds/; run `make crds`"
    );
}

#[test]
fn dashboard_is_valid_json_with_panels() {
    let text = std::fs::read_to_string(chart_dir().join("dashboards/shardedstore.json"))
        .unwrap_or_else(|e| panic!("dashboard: {e}"));
    let dash: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard JSON: {e}"));
    let panels = dash["panels"].as_array().map(Vec::len).unwrap_or(0);
    assert!(panels >= 8, "dashboard has {panels} panels");
}

#[test]
fn chart_lints() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    run(Command::new(&helm)
        .args(["lint", "--strict", "--kube-version", "1.34.0"])
        .arg(chart_dir()));
}

#[test]
fn chart_renders_operator_with_the_rights_it_needs() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    let docs = render(&helm, &[]);

    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let dep = deployments[0];
    assert_eq!(dep["metadata"]["namespace"].as_str(), Some("ops"));
    assert_eq!(
        dep["spec"]["replicas"].as_u64(),
        Some(2),
        "two replicas with leader election"
    );
    let pod = &dep["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        of_kind(&docs, "ServiceAccount")
            .iter()
            .any(|s| s["metadata"]["name"].as_str() == Some(&sa))
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["containers"][0]["args"][0].as_str(), Some("run"));

    let role = of_kind(&docs, "ClusterRole");
    let rules = serde_yaml::to_string(&role[0]["rules"]).unwrap_or_default();
    for needed in [
        "shardedstores/status",
        "shardedstores/scale",
        "statefulsets",
        "poddisruptionbudgets",
        "secrets",
        "nodes",
    ] {
        assert!(
            rules.contains(needed),
            "ClusterRole lacks {needed}: {rules}"
        );
    }
    let lease_role = serde_yaml::to_string(&of_kind(&docs, "Role")[0]["rules"]).unwrap_or_default();
    assert!(
        lease_role.contains("leases"),
        "leader election needs leases: {lease_role}"
    );

    assert!(
        of_kind(&docs, "ServiceMonitor").is_empty(),
        "ServiceMonitor is opt-in"
    );
    let with_monitor = render(&helm, &["--set", "metrics.serviceMonitor.enabled=true"]);
    assert_eq!(of_kind(&with_monitor, "ServiceMonitor").len(), 1);
    assert_eq!(of_kind(&with_monitor, "PodMonitor").len(), 1);
}
