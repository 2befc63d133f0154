//! The Helm chart: lints with the real `helm`, refuses bad values through its schema, renders
//! pods that meet Pod Security "restricted", grants what the operator needs (cluster-wide or
//! in one namespace), monitors the pods the operator really creates, passes the checkov
//! security linter, and ships the same CRD as `crds/`.
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

/// Runs `cmd` expecting failure; returns its stdout and stderr.
fn run_failing(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(!out.status.success(), "{cmd:?} succeeded but must fail");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .map(|l| l.iter().filter_map(|v| v["name"].as_str()).collect())
        .unwrap_or_default();
    for v in ["datasource", "namespace", "store", "pod"] {
        assert!(variables.contains(&v), "no ${v} variable: {variables:?}");
    }
    // Every query is scoped by the variables, so pods of equal name in two namespaces or
    // stores never merge.
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let per_store = [
                "shardedstore_partitions",
                "shardedstore_requests",
                "shardedstore_stored",
            ];
            if per_store.iter().any(|m| expr.contains(m)) {
                assert!(
                    expr.contains("$namespace") && expr.contains("$store"),
                    "{expr}"
                );
            }
        }
    }
}

#[test]
fn bad_values_fail_with_a_message() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    for (set, expected) in [
        ("replicaCount=abc", "replicaCount"),
        ("metrics.serviceMonitor.enabeld=true", "enabeld"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
    ] {
        let out = run_failing(
            Command::new(&helm)
                .args(["lint", "--kube-version", "1.34.0", "--set", set])
                .arg(chart_dir()),
        );
        assert!(out.contains(expected), "--set {set}: {out}");
        let out = run_failing(
            Command::new(&helm)
                .args(["template", "rel", "--kube-version", "1.34.0", "--set", set])
                .arg(chart_dir()),
        );
        assert!(out.contains(expected), "--set {set}: {out}");
    }
}

/// Every pod the chart renders meets Pod Security "restricted" and sets requests and limits.
#[test]
fn chart_pods_are_restricted_with_resources() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    let docs = render(&helm, &["--set", "store.create=true"]);
    let mut pods = Vec::new();
    for d in of_kind(&docs, "Deployment") {
        pods.push(&d["spec"]["template"]["spec"]);
    }
    for p in of_kind(&docs, "Pod") {
        pods.push(&p["spec"]);
    }
    assert_eq!(pods.len(), 2, "the operator and the helm test Pod");
    for pod in pods {
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true), "{pod:?}");
        assert_eq!(
            psc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        let containers = pod["containers"]
            .as_sequence()
            .into_iter()
            .chain(pod["initContainers"].as_sequence())
            .flatten();
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{c:?}"
            );
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{c:?}");
            assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"), "{c:?}");
            for key in ["cpu", "memory"] {
                assert!(!c["resources"]["requests"][key].is_null(), "{c:?}");
                assert!(!c["resources"]["limits"][key].is_null(), "{c:?}");
            }
        }
    }
}

#[test]
fn operator_has_a_pdb_anti_affinity_and_a_network_policy() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    let docs = render(&helm, &[]);
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["spec"]["maxUnavailable"].as_u64(), Some(1));
    let dep = of_kind(&docs, "Deployment")[0];
    let pod = &dep["spec"]["template"];
    let anti = &pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"].as_str(), Some("kubernetes.io/hostname"));
    // The storage pods' NetworkPolicy admits the operator by this label.
    let (key, value) = shardedstore_operator::controller::build::OPERATOR_COMPONENT_LABEL;
    assert_eq!(pod["metadata"]["labels"][key].as_str(), Some(value));
    assert_eq!(of_kind(&docs, "NetworkPolicy").len(), 1);
    // One replica: no PDB (it would block every drain).
    let single = render(&helm, &["--set", "replicaCount=1"]);
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty());
}

#[test]
fn namespaced_install_uses_a_role_and_aggregated_roles_exist() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    let docs = render(&helm, &["--set", "watchNamespace=apps"]);
    let roles = of_kind(&docs, "Role");
    let main = roles
        .iter()
        .find(|r| r["metadata"]["namespace"].as_str() == Some("apps"))
        .unwrap_or_else(|| panic!("no Role in apps"));
    let rules = serde_yaml::to_string(&main["rules"]).unwrap_or_default();
    assert!(
        rules.contains("statefulsets") && rules.contains("secrets"),
        "{rules}"
    );
    // Only node reads stay cluster-wide.
    for role in of_kind(&docs, "ClusterRole") {
        let rules = serde_yaml::to_string(&role["rules"]).unwrap_or_default();
        assert!(
            !rules.contains("secrets"),
            "cluster-wide secrets in a namespaced install: {rules}"
        );
    }
    let dep = of_kind(&docs, "Deployment")[0];
    let env = serde_yaml::to_string(&dep["spec"]["template"]["spec"]["containers"][0]["env"])
        .unwrap_or_default();
    assert!(env.contains("SHARDEDSTORE_WATCH_NAMESPACE"), "{env}");

    let all = render(&helm, &[]);
    let aggregated: Vec<&str> = of_kind(&all, "ClusterRole")
        .iter()
        .flat_map(|r| {
            r["metadata"]["labels"]
                .as_mapping()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        })
        .collect();
    for role in ["view", "edit", "admin"] {
        assert!(
            aggregated.contains(&format!("rbac.authorization.k8s.io/aggregate-to-{role}").as_str()),
            "{aggregated:?}"
        );
    }
}

/// The PodMonitor selects the labels the operator really puts on storage pods.
#[test]
fn pod_monitor_matches_the_storage_pods() {
    let Some(helm) = require_tool("helm") else {
        return;
    };
    let docs = render(&helm, &["--set", "metrics.podMonitor.enabled=true"]);
    let monitor = of_kind(&docs, "PodMonitor");
    assert_eq!(monitor.len(), 1);
    let wanted: std::collections::BTreeMap<String, String> =
        serde_yaml::from_value(monitor[0]["spec"]["selector"]["matchLabels"].clone())
            .unwrap_or_else(|e| panic!("matchLabels: {e}"));
    assert!(!wanted.is_empty());
    let store: shardedstore_operator::crd::ShardedStore = serde_yaml::from_str(
        "apiVersion: shardedstore.io/v1alpha1\nkind: ShardedStore\nmetadata: {name: kv, namespace: apps, uid: u1}\nspec: {nodes: 3, image: x}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let owner = shardedstore_operator::controller::build::Owner::of(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    let sts = shardedstore_operator::controller::build::statefulset(&owner, &store.spec, 3);
    let pod_labels = sts
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    for (k, v) in &wanted {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "storage pods lack {k}={v}: {pod_labels:?}"
        );
    }
    let relabel =
        serde_yaml::to_string(&monitor[0]["spec"]["podMetricsEndpoints"]).unwrap_or_default();
    assert!(
        relabel.contains("__meta_kubernetes_pod_label_shardedstore_io_store")
            && relabel.contains("targetLabel: store"),
        "{relabel}"
    );
    assert!(pod_labels.contains_key("shardedstore.io/store"));
}

/// checkov (hack/install-tools.sh checkov) finds nothing in the rendered chart, nor in the
/// StatefulSet the operator builds; the chart's exceptions are annotated with their reasons.
#[test]
fn security_linter_finds_nothing() {
    let Some(checkov) = require_tool("checkov") else {
        return;
    };
    let Some(helm) = require_tool("helm") else {
        return;
    };
    // Not a hidden directory (tempfile's default `.tmp…`): checkov skips those.
    let dir = tempfile::Builder::new()
        .prefix("sst-checkov-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"));
    let chart = run(Command::new(&helm)
        .args([
            "template",
            "rel",
            "--namespace",
            "ops",
            "--kube-version",
            "1.34.0",
            "--set",
            "store.create=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ])
        .arg(chart_dir()));
    std::fs::write(dir.path().join("chart.yaml"), chart).unwrap_or_else(|e| panic!("{e}"));
    let store: shardedstore_operator::crd::ShardedStore = serde_yaml::from_str(
        "apiVersion: shardedstore.io/v1alpha1\nkind: ShardedStore\nmetadata: {name: kv, namespace: apps, uid: u1}\nspec: {nodes: 3, image: \"registry.example/node:1.0\"}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let owner = shardedstore_operator::controller::build::Owner::of(&store)
        .unwrap_or_else(|e| panic!("{e}"));
    // The storage pods' NetworkPolicy, as the operator creates it next to the StatefulSet.
    let policy = shardedstore_operator::controller::build::network_policy(&owner, &store.spec)
        .unwrap_or_else(|| panic!("no NetworkPolicy"));
    let mut policy = serde_yaml::to_value(&policy).unwrap_or_else(|e| panic!("{e}"));
    policy["apiVersion"] = "networking.k8s.io/v1".into();
    policy["kind"] = "NetworkPolicy".into();
    std::fs::write(
        dir.path().join("networkpolicy.yaml"),
        serde_yaml::to_string(&policy).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut sts = shardedstore_operator::controller::build::statefulset(&owner, &store.spec, 3);
    // The storage image and its pull policy come from the ShardedStore, like the chart's
    // (CKV_K8S_43, CKV_K8S_15); the rest must pass as built.
    sts.metadata.annotations = Some(
        [
            (
                "checkov.io/skip1",
                "CKV_K8S_43=the image is spec.image; pin a digest there",
            ),
            (
                "checkov.io/skip2",
                "CKV_K8S_15=the pull policy is spec.imagePullPolicy",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let mut value = serde_yaml::to_value(&sts).unwrap_or_else(|e| panic!("{e}"));
    value["apiVersion"] = "apps/v1".into();
    value["kind"] = "StatefulSet".into();
    std::fs::write(
        dir.path().join("statefulset.yaml"),
        serde_yaml::to_string(&value).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&checkov)
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--quiet",
            "--skip-download",
            "-d",
        ])
        .arg(dir.path())
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap_or_else(|e| panic!("running checkov: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "checkov failed: {report}");
    // Both files were scanned: the chart's objects and the StatefulSet.
    assert!(report.contains("Failed checks: 0"), "{report}");
    assert!(!report.contains("FAILED"), "{report}");
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
    assert!(
        of_kind(&with_monitor, "PodMonitor").is_empty(),
        "PodMonitor is a separate opt-in"
    );
    // Scraped by the ServiceMonitor, the operator carries no scrape annotations (no double
    // scraping), and the monitor keeps the per-store `namespace` label.
    let dep = of_kind(&with_monitor, "Deployment")[0];
    assert!(dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].is_null());
    let sm = of_kind(&with_monitor, "ServiceMonitor")[0];
    assert_eq!(
        sm["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    let everything = render(
        &helm,
        &[
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
    );
    assert_eq!(of_kind(&everything, "PodMonitor").len(), 1);
    let rule = of_kind(&everything, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    assert!(
        rule[0]["spec"]["groups"][0]["rules"]
            .as_sequence()
            .is_some_and(|r| r.len() >= 6),
        "{:?}",
        rule[0]["spec"]
    );
}
