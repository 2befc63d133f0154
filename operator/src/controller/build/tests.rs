//! Builds the children of the YAML fixtures in `operator/tests/fixtures/` and checks them.

use super::*;
use crate::crd::ShardedStore;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn fixture(name: &str) -> ShardedStore {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn owner_of(store: &ShardedStore) -> Owner {
    Owner::of(store).unwrap_or_else(|e| panic!("{e}"))
}

fn only_container(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> Container {
    let pod = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_else(|| panic!("no pod spec"));
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].clone()
}

fn env<'a>(c: &'a Container, name: &str) -> &'a EnvVar {
    c.env
        .as_ref()
        .and_then(|e| e.iter().find(|v| v.name == name))
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn every_child_has_a_controller_owner_reference_and_the_store_labels() {
    let store = fixture("minimal.yaml");
    let owner = owner_of(&store);
    let metas = [
        statefulset(&owner, &store.spec, 3).metadata,
        peer_service(&owner).metadata,
        client_service(&owner).metadata,
        pod_disruption_budget(&owner, 1).metadata,
        partition_map(&owner).metadata,
        peer_token(&owner, "t".into()).metadata,
    ];
    for meta in metas {
        let name = meta.name.clone().unwrap_or_default();
        assert_eq!(meta.namespace.as_deref(), Some("apps"), "{name}");
        let refs = meta.owner_references.unwrap_or_default();
        assert_eq!(refs.len(), 1, "{name}");
        assert_eq!(refs[0].kind, "ShardedStore");
        assert_eq!(refs[0].api_version, "shardedstore.io/v1alpha1");
        assert_eq!(refs[0].name, "kv");
        assert_eq!(refs[0].uid, "3b1e8c52-5f0e-4d6a-9a0e-0c7f3a1d2b11");
        assert_eq!(refs[0].controller, Some(true), "{name}");
        let labels = meta.labels.unwrap_or_default();
        assert_eq!(
            labels.get(STORE_LABEL).map(String::as_str),
            Some("kv"),
            "{name}"
        );
    }
}

#[test]
fn statefulset_is_parallel_on_delete_with_ports_probes_and_pvc_template() {
    let store = fixture("full.yaml");
    let owner = owner_of(&store);
    let sts = statefulset(&owner, &store.spec, 5);
    let spec = sts.spec.clone().unwrap_or_default();
    assert_eq!(sts.metadata.name.as_deref(), Some("orders"));
    assert_eq!(spec.replicas, Some(5));
    assert_eq!(spec.service_name.as_deref(), Some("orders-peers"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.and_then(|u| u.type_).as_deref(),
        Some("OnDelete")
    );
    // The selector must match the pod template's labels or the API server rejects it.
    let selector = spec.selector.match_labels.unwrap_or_default();
    let pod_labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert!(!selector.is_empty());
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "{k}");
    }

    let c = only_container(&sts);
    assert_eq!(
        c.image.as_deref(),
        Some("registry.example/shardedstore-node:0.2.0")
    );
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let ports: Vec<(String, i32)> = c
        .ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("client".to_owned(), 7000),
            ("peer".to_owned(), 7100),
            ("metrics".to_owned(), 9100)
        ]
    );
    let readiness = c.readiness_probe.clone().and_then(|p| p.http_get);
    assert_eq!(
        readiness.as_ref().and_then(|h| h.path.as_deref()),
        Some("/readyz")
    );
    assert_eq!(
        readiness.map(|h| h.port),
        Some(IntOrString::String("metrics".into()))
    );
    assert_eq!(
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| q.0.as_str()),
        Some("500m")
    );

    let node_id = env(&c, ENV_NODE_ID);
    assert_eq!(
        node_id
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name")
    );
    // The token comes from the Secret, mounted read-only as a file.
    let token_file = env(&c, ENV_PEER_TOKEN_FILE)
        .value
        .clone()
        .unwrap_or_else(|| panic!("no token file"));
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    let volume = pod_spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find_map(|v| v.secret)
        .unwrap_or_else(|| panic!("token not from a secret"));
    assert_eq!(volume.secret_name.as_deref(), Some("orders-peer-token"));
    let mount = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| token_file.starts_with(&m.mount_path))
        .unwrap_or_else(|| panic!("{token_file} is not on a mount"));
    assert_eq!(mount.read_only, Some(true));
    assert!(token_file.ends_with(TOKEN_KEY));
    assert_eq!(env(&c, ENV_STORE).value.as_deref(), Some("orders"));

    let retention = spec
        .persistent_volume_claim_retention_policy
        .unwrap_or_default();
    assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    let pvcs = spec.volume_claim_templates.unwrap_or_default();
    assert_eq!(pvcs.len(), 1);
    let pvc = pvcs[0].spec.clone().unwrap_or_default();
    assert_eq!(pvc.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        pvc.resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0),
        Some("50Gi".to_owned())
    );
    let mount = c.volume_mounts.unwrap_or_default();
    assert_eq!(
        mount.first().map(|m| m.name.as_str()),
        pvcs[0].metadata.name.as_deref()
    );

    let pod = spec.template.spec.unwrap_or_default();
    assert_eq!(
        pod.node_selector
            .unwrap_or_default()
            .get("disktype")
            .map(String::as_str),
        Some("ssd")
    );
    assert_eq!(pod.tolerations.unwrap_or_default().len(), 1);
    let spread = pod.topology_spread_constraints.unwrap_or_default();
    let keys: Vec<&str> = spread.iter().map(|s| s.topology_key.as_str()).collect();
    assert_eq!(keys, vec!["example.com/zone", "kubernetes.io/hostname"]);
    assert!(
        spread
            .iter()
            .all(|s| s.when_unsatisfiable == "ScheduleAnyway")
    );
}

#[test]
fn storage_pods_meet_the_restricted_pod_security_profile() {
    let store = fixture("minimal.yaml");
    let sts = statefulset(&owner_of(&store), &store.spec, 3);
    let pod = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let psc = pod.security_context.clone().unwrap_or_default();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(RUN_AS));
    // fsGroup makes a root-owned fresh volume writable by the node.
    assert_eq!(psc.fs_group, Some(RUN_AS));
    assert_eq!(
        psc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = only_container(&sts);
    let sc = c.security_context.clone().unwrap_or_default();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    // The read-only root needs a writable /tmp.
    let mounts: Vec<String> = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert_eq!(&mounts[..2], &["/data".to_owned(), "/tmp".to_owned()]);
    assert!(
        pod.volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name == "tmp" && v.empty_dir.is_some())
    );
    // Default requests and limits when the store sets none.
    let resources = c.resources.clone().unwrap_or_default();
    for key in ["cpu", "memory"] {
        assert!(
            resources
                .requests
                .as_ref()
                .is_some_and(|r| r.contains_key(key)),
            "request {key}"
        );
        assert!(
            resources
                .limits
                .as_ref()
                .is_some_and(|r| r.contains_key(key)),
            "limit {key}"
        );
    }
}

#[test]
fn startup_probe_covers_a_long_recovery_and_sigterm_leaves_time_to_hand_off() {
    let store = fixture("minimal.yaml");
    let sts = statefulset(&owner_of(&store), &store.spec, 3);
    let c = only_container(&sts);
    let startup = c.startup_probe.clone().unwrap_or_default();
    let allowed = i64::from(startup.period_seconds.unwrap_or(10))
        * i64::from(startup.failure_threshold.unwrap_or(3));
    assert!(allowed >= 30 * 60, "startup probe allows only {allowed}s");
    let grace = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(30);
    let handoff: i64 = env(&c, ENV_SHUTDOWN_HANDOFF)
        .value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no hand-off timeout"));
    assert!(
        handoff > 0 && handoff + 10 <= grace,
        "{handoff}s of {grace}s"
    );
}

#[test]
fn soft_host_anti_affinity_is_added_unless_the_user_sets_one() {
    let store = fixture("minimal.yaml");
    let sts = statefulset(&owner_of(&store), &store.spec, 3);
    let affinity = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.affinity)
        .unwrap_or_default();
    let anti = affinity.pod_anti_affinity.unwrap_or_default();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap_or_default();
    assert_eq!(preferred.len(), 1);
    assert_eq!(
        preferred[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );

    let mut own = store.clone();
    own.spec.placement.affinity = serde_yaml::from_str(
        "podAntiAffinity:\n  requiredDuringSchedulingIgnoredDuringExecution:\n  - topologyKey: kubernetes.io/hostname\n    labelSelector: {matchLabels: {a: b}}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sts = statefulset(&owner_of(&own), &own.spec, 3);
    let anti = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.affinity)
        .and_then(|a| a.pod_anti_affinity)
        .unwrap_or_default();
    assert!(
        anti.preferred_during_scheduling_ignored_during_execution
            .is_none()
    );
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_some()
    );
}

#[test]
fn a_storage_change_keeps_the_existing_volume_claims_and_says_why() {
    let store = fixture("minimal.yaml");
    let owner = owner_of(&store);
    let current = statefulset(&owner, &store.spec, 3);
    let mut same = statefulset(&owner, &store.spec, 3);
    assert_eq!(keep_volume_claims(&mut same, Some(&current)), None);
    assert_eq!(keep_volume_claims(&mut same, None), None);

    let mut bigger = store.spec.clone();
    bigger.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into());
    let mut desired = statefulset(&owner, &bigger, 3);
    let refused = keep_volume_claims(&mut desired, Some(&current))
        .unwrap_or_else(|| panic!("change not noticed"));
    assert!(
        refused.contains("20Gi") && refused.contains("10Gi"),
        "{refused}"
    );
    assert_eq!(
        desired.spec.and_then(|s| s.volume_claim_templates),
        current.spec.and_then(|s| s.volume_claim_templates)
    );
}

/// The node configuration a container's environment makes, parsed as the node parses it:
/// each variable the node knows becomes its flag. Panics on a variable the node does not know
/// or a value it refuses.
fn node_config_of(c: &Container) -> shardedstore_node::config::NodeConfig {
    use clap::CommandFactory;
    let command = shardedstore_node::config::NodeConfig::command();
    let mut args = vec!["shardedstore-node".to_owned()];
    for var in c.env.iter().flatten() {
        // The pod's name, from the downward API, as the pod would see it.
        let pod_name = var
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .filter(|f| f.field_path == "metadata.name")
            .map(|_| "store-0".to_owned());
        let Some(value) = var.value.clone().or(pod_name) else {
            continue;
        };
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var.name.as_str()))
            .unwrap_or_else(|| panic!("the node knows no {}", var.name));
        let long = arg
            .get_long()
            .unwrap_or_else(|| panic!("{} has no flag", var.name));
        args.push(format!("--{long}={value}"));
    }
    <shardedstore_node::config::NodeConfig as clap::Parser>::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the node refuses {args:?}: {e}"))
}

#[test]
fn tuning_reaches_the_node_as_settings_it_accepts_and_unset_tuning_adds_nothing() {
    let store = fixture("full.yaml");
    let c = only_container(&statefulset(&owner_of(&store), &store.spec, 5));
    let config = node_config_of(&c);
    assert_eq!(config.checkpoint_interval_ms, 250);
    assert_eq!(config.appends_in_flight, 2);
    assert_eq!(config.log_window, 50_000);
    assert_eq!(config.log_window_bytes, 16 << 20);

    // A store that sets no tuning gets the node's defaults and no variable for them, so its
    // pod template is what it was before the tuning section existed.
    let minimal = fixture("minimal.yaml");
    let c = only_container(&statefulset(&owner_of(&minimal), &minimal.spec, 3));
    for name in [
        "SHARDEDSTORE_CHECKPOINT_INTERVAL_MS",
        "SHARDEDSTORE_APPENDS_IN_FLIGHT",
        "SHARDEDSTORE_LOG_WINDOW",
        "SHARDEDSTORE_LOG_WINDOW_BYTES",
    ] {
        assert!(
            c.env.iter().flatten().all(|v| v.name != name),
            "{name} set without tuning"
        );
    }
    let defaults = node_config_of(&c);
    assert_eq!(defaults.checkpoint_interval_ms, 1000);
    assert_eq!(defaults.appends_in_flight, 1);

    // A checkpoint interval given in another unit reaches the node in milliseconds.
    let mut spec = minimal.spec.clone();
    spec.tuning.checkpoint_interval = Some("2s".into());
    let c = only_container(&statefulset(&owner_of(&minimal), &spec, 3));
    assert_eq!(node_config_of(&c).checkpoint_interval_ms, 2000);
}

#[test]
fn minimal_store_gets_default_storage_and_pull_policy() {
    let store = fixture("minimal.yaml");
    let sts = statefulset(&owner_of(&store), &store.spec, 3);
    let c = only_container(&sts);
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let pvc = sts
        .spec
        .and_then(|s| s.volume_claim_templates)
        .and_then(|v| v.into_iter().next())
        .and_then(|p| p.spec)
        .unwrap_or_default();
    assert_eq!(pvc.storage_class_name, None);
    assert_eq!(
        pvc.resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0),
        Some("10Gi".to_owned())
    );
}

#[test]
fn services_select_the_pods_headless_publishes_not_ready_client_prefers_close() {
    let store = fixture("minimal.yaml");
    let owner = owner_of(&store);
    let peers = peer_service(&owner);
    let spec = peers.spec.unwrap_or_default();
    assert_eq!(peers.metadata.name.as_deref(), Some("kv-peers"));
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(spec.selector, Some(selector_labels("kv")));

    let client = client_service(&owner);
    let spec = client.spec.unwrap_or_default();
    assert_eq!(client.metadata.name.as_deref(), Some("kv"));
    assert_eq!(spec.traffic_distribution.as_deref(), Some("PreferClose"));
    assert_eq!(spec.selector, Some(selector_labels("kv")));
    let ports = spec.ports.unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, CLIENT_PORT);
}

#[test]
fn pdb_takes_the_allowance_and_map_configmap_carries_no_data() {
    let store = fixture("minimal.yaml");
    let owner = owner_of(&store);
    let pdb = pod_disruption_budget(&owner, 0).spec.unwrap_or_default();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(
        pdb.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    assert_eq!(
        pdb.selector.and_then(|s| s.match_labels),
        Some(selector_labels("kv"))
    );
    let cm = partition_map(&owner);
    assert_eq!(cm.metadata.name.as_deref(), Some("kv-partition-map"));
    assert!(cm.data.is_none() && cm.binary_data.is_none());
    let secret = peer_token(&owner, random_token());
    let token = secret
        .string_data
        .and_then(|d| d.get(TOKEN_KEY).cloned())
        .unwrap_or_default();
    assert_eq!(token.len(), 64);
    assert_ne!(token, random_token());
}

#[test]
fn a_store_not_read_from_the_api_server_cannot_own_children() {
    let mut store = fixture("minimal.yaml");
    store.metadata.uid = None;
    assert_eq!(
        Owner::of(&store).err(),
        Some(BuildError::MissingMetadata("uid"))
    );
}

#[test]
fn scale_in_removes_only_drained_pods_from_the_top() {
    // Scale out and first creation are immediate.
    assert_eq!(statefulset_replicas(5, Some(3), |_| false), 5);
    assert_eq!(statefulset_replicas(3, None, |_| false), 3);
    // Nothing known to be drained: keep every pod.
    assert_eq!(statefulset_replicas(3, Some(5), |_| false), 5);
    // Pod 4 drained but 3 not: only pod 4 goes.
    assert_eq!(statefulset_replicas(3, Some(5), |o| o == 4), 4);
    // Pod 3 drained but 4 not: nothing goes (ordinals leave from the top).
    assert_eq!(statefulset_replicas(3, Some(5), |o| o == 3), 5);
    // Both drained: shrink to the desired count, never below it.
    assert_eq!(statefulset_replicas(3, Some(5), |_| true), 3);
}

#[test]
fn pod_ordinals_and_selector_string() {
    assert_eq!(pod_ordinal("kv", "kv-12"), Some(12));
    assert_eq!(pod_ordinal("kv", "kv-peers"), None);
    assert_eq!(pod_ordinal("kv", "kvx-1"), None);
    assert_eq!(pod_ordinal("kv", "kv-"), None);
    assert_eq!(
        selector_string("kv"),
        "app.kubernetes.io/name=shardedstore-node,shardedstore.io/store=kv"
    );
}

#[test]
fn network_policy_guards_the_peer_port_and_can_be_turned_off() {
    let store = fixture("minimal.yaml");
    let owner = owner_of(&store);
    let policy = network_policy(&owner, &store.spec)
        .and_then(|p| p.spec)
        .unwrap_or_else(|| panic!("no policy by default"));
    let rules = policy.ingress.unwrap_or_default();
    let port_of = |r: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        r.ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port.clone())
    };
    let peer = rules
        .iter()
        .find(|r| port_of(r) == Some(IntOrString::Int(PEER_PORT)))
        .unwrap_or_else(|| panic!("no peer rule"));
    let from = peer.from.clone().unwrap_or_default();
    assert_eq!(from.len(), 2);
    assert_eq!(
        from[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(selector_labels("kv"))
    );
    assert!(
        from[0].namespace_selector.is_none(),
        "store pods: same namespace only"
    );
    let (key, value) = OPERATOR_COMPONENT_LABEL;
    assert_eq!(
        from[1]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .and_then(|l| l.get(key))
            .map(String::as_str),
        Some(value)
    );
    let client = rules
        .iter()
        .find(|r| port_of(r) == Some(IntOrString::Int(CLIENT_PORT)))
        .unwrap_or_else(|| panic!("no client rule"));
    assert!(client.from.is_none(), "clients from anywhere by default");

    let mut closed = store.clone();
    closed.spec.network.clients_from =
        serde_yaml::from_str("- podSelector: {matchLabels: {role: app}}")
            .unwrap_or_else(|e| panic!("{e}"));
    let rules = network_policy(&owner, &closed.spec)
        .and_then(|p| p.spec)
        .and_then(|s| s.ingress)
        .unwrap_or_default();
    let client = rules
        .iter()
        .find(|r| port_of(r) == Some(IntOrString::Int(CLIENT_PORT)))
        .and_then(|r| r.from.clone())
        .unwrap_or_default();
    assert_eq!(
        client.len(),
        2,
        "the listed clients and the store's own pods"
    );

    let mut off = store.clone();
    off.spec.network.policy = false;
    assert!(network_policy(&owner, &off.spec).is_none());
}

#[test]
fn tls_mounts_the_secrets_and_passes_the_node_flags() {
    let mut store = fixture("minimal.yaml");
    let owner = owner_of(&store);
    let plain = only_container(&statefulset(&owner, &store.spec, 3));
    let has_env = |c: &Container, name: &str| {
        c.env
            .as_ref()
            .is_some_and(|e| e.iter().any(|v| v.name == name))
    };
    assert!(!has_env(&plain, "SHARDEDSTORE_TLS_CERT"));

    store.spec.tls = Some(crate::crd::TlsSpec {
        secret_name: Some("kv-tls".to_owned()),
        issuer_ref: None,
        client_tokens_secret_name: Some("kv-tokens".to_owned()),
        mutual_tls: true,
    });
    let sts = statefulset(&owner, &store.spec, 3);
    let c = only_container(&sts);
    let value = |name: &str| env(&c, name).value.clone().unwrap_or_default();
    assert_eq!(
        value("SHARDEDSTORE_TLS_CERT"),
        "/var/run/shardedstore/tls/tls.crt"
    );
    assert_eq!(
        value("SHARDEDSTORE_TLS_KEY"),
        "/var/run/shardedstore/tls/tls.key"
    );
    assert_eq!(
        value("SHARDEDSTORE_TLS_CA"),
        "/var/run/shardedstore/tls/ca.crt"
    );
    assert_eq!(
        value("SHARDEDSTORE_TLS_CLIENT_CA"),
        "/var/run/shardedstore/tls/ca.crt"
    );
    assert_eq!(value("SHARDEDSTORE_TLS_SERVER_NAME"), "kv.apps.svc");
    assert_eq!(
        value("SHARDEDSTORE_CLIENT_TOKEN_FILE"),
        "/var/run/shardedstore/client-tokens/tokens"
    );
    let pod = sts
        .spec
        .and_then(|s| s.template.spec)
        .unwrap_or_else(|| panic!("no pod spec"));
    let secret_of = |volume: &str| {
        pod.volumes
            .as_ref()
            .and_then(|vs| vs.iter().find(|v| v.name == volume))
            .and_then(|v| v.secret.clone())
            .unwrap_or_else(|| panic!("no secret volume {volume}"))
    };
    let tls = secret_of("tls");
    assert_eq!(tls.secret_name.as_deref(), Some("kv-tls"));
    assert_eq!(tls.default_mode, Some(0o440));
    let keys: Vec<String> = tls
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(keys, ["tls.crt", "tls.key", "ca.crt"]);
    assert_eq!(
        secret_of("client-tokens").secret_name.as_deref(),
        Some("kv-tokens")
    );
    let mounts = c.volume_mounts.unwrap_or_default();
    for (volume, dir) in [
        ("tls", "/var/run/shardedstore/tls"),
        ("client-tokens", "/var/run/shardedstore/client-tokens"),
    ] {
        let m = mounts
            .iter()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"));
        assert_eq!(m.mount_path, dir);
        assert_eq!(m.read_only, Some(true));
    }
    // Probes stay on the plain-HTTP metrics port.
    let probe_port = c.readiness_probe.and_then(|p| p.http_get).map(|h| h.port);
    assert_eq!(probe_port, Some(IntOrString::String("metrics".to_owned())));
}
