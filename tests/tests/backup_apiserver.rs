//! The ShardedStoreBackup resource against a real kube-apiserver + etcd: CRD schema, CEL rule
//! of `spec.restore.from`, `kubectl explain` and printer columns, and the real backup
//! controller reporting an invalid schedule, a missing store and a waiting schedule in the
//! status. Retention: the controller backs up a real (local-mode) store every minute into
//! moto's S3 server and, with `keep: 1`, deletes the older backup from the bucket — checked
//! by listing the bucket. (Backups and restores under load run in `backup_s3` and
//! `backup_file`; on a real cluster in the e2e suite.)
//!
//! Skipped, with a printed reason, only when the Kubernetes binaries (or moto) are missing.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::{Api, CustomResourceExt};
use shardedstore_node::backup::Destination;
use shardedstore_operator::controller::build::{
    MAP_KEY, TOKEN_KEY, partition_map_name, peer_token_name,
};
use shardedstore_operator::crd::ShardedStore;
use shardedstore_operator::crd::backup::{
    BackupPhase, ShardedStoreBackup, ShardedStoreBackupSpec, ShardedStoreBackupStatus,
};
use shardedstore_tests::apiserver_harness::{
    ControlPlane, create_namespace, eventually, install_crd,
};
use shardedstore_tests::local_harness::{LocalOptions, LocalStore};
use shardedstore_tests::s3_server::{ACCESS_KEY_ID, REGION, S3Server, SECRET_ACCESS_KEY};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(60);

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn backup(name: &str, yaml: &str) -> Result<ShardedStoreBackup, serde_yaml::Error> {
    let spec: ShardedStoreBackupSpec = serde_yaml::from_str(yaml)?;
    Ok(ShardedStoreBackup::new(name, spec))
}

async fn status_of(
    api: &Api<ShardedStoreBackup>,
    name: &str,
    what: &str,
    ok: impl Fn(&ShardedStoreBackupStatus) -> bool,
) -> Result<ShardedStoreBackupStatus, Box<dyn std::error::Error + Send + Sync>> {
    Ok(eventually(WAIT, what, || {
        let api = api.clone();
        let name = name.to_owned();
        let ok = &ok;
        async move {
            let s = api.get(&name).await.ok()?.status?;
            ok(&s).then_some(s)
        }
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_resource_schema_and_controller_status() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let client = plane.client().await?;
    install_crd(&client, ShardedStore::crd()).await?;
    install_crd(&client, ShardedStoreBackup::crd()).await?;
    create_namespace(&client, "bk", &[]).await?;

    // spec.restore.from names exactly one source.
    let stores: Api<ShardedStore> = Api::namespaced(client.clone(), "bk");
    let both: ShardedStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "shardedstore.io/v1alpha1", "kind": "ShardedStore",
        "metadata": {"name": "r"},
        "spec": {"nodes": 3, "restore": {"from": {"backup": "x", "url": "s3://b/p"}}}
    }))?;
    match stores.create(&PostParams::default(), &both).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("exactly one"), "{}", s.message),
        other => panic!("a restore with two sources was accepted: {other:?}"),
    }

    // `kubectl explain` reads the published schema, which appears shortly after Established.
    let mut last = String::new();
    for _ in 0..60 {
        let out = plane.kubectl(&["explain", "sstb.spec.schedule"])?;
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if last.contains("Cron schedule") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last.contains("Cron schedule"), "{last}");

    let _controller = AbortOnDrop(tokio::spawn(shardedstore_operator::backup::run(
        client.clone(),
        Some("bk".into()),
    )));
    let api: Api<ShardedStoreBackup> = Api::namespaced(client.clone(), "bk");
    let pp = PostParams::default();
    api.create(
        &pp,
        &backup(
            "bad",
            "store: kv\ndestination: {url: s3://b/kv}\nschedule: '61 * * * *'\n",
        )?,
    )
    .await?;
    api.create(
        &pp,
        &backup("orphan", "store: missing\ndestination: {url: s3://b/x}\n")?,
    )
    .await?;
    api.create(
        &pp,
        &backup(
            "nightly",
            "store: kv\ndestination: {url: s3://b/kv}\nschedule: '0 3 * * *'\nkeep: 3\n",
        )?,
    )
    .await?;

    let bad = status_of(&api, "bad", "the invalid schedule to be reported", |s| {
        s.phase == BackupPhase::Failed
    })
    .await?;
    let failed = bad.conditions.iter().find(|c| c.type_ == "Failed");
    assert!(
        failed.is_some_and(|c| c.reason == "InvalidSpec" && c.message.contains("minute")),
        "{bad:?}"
    );
    let orphan = status_of(
        &api,
        "orphan",
        "the missing store to fail the backup",
        |s| s.phase == BackupPhase::Failed,
    )
    .await?;
    let failed = orphan.conditions.iter().find(|c| c.type_ == "Failed");
    assert!(
        failed.is_some_and(
            |c| c.reason == "BackupFailed" && c.message.contains("missing-partition-map")
        ),
        "{orphan:?}"
    );
    assert!(orphan.start_time.is_some() && orphan.completion_time.is_some());
    let nightly = status_of(&api, "nightly", "the schedule to wait", |s| {
        s.phase == BackupPhase::Scheduled && s.next_schedule_time.is_some()
    })
    .await?;
    assert!(
        nightly
            .next_schedule_time
            .as_deref()
            .is_some_and(|t| t.contains("T03:00:00")),
        "{nightly:?}"
    );

    let table = plane.kubectl(&["-n", "bk", "get", "sstb"])?;
    let table = String::from_utf8_lossy(&table.stdout);
    let header = table.lines().next().unwrap_or_default();
    for column in ["STORE", "PHASE", "DONE", "PARTITIONS", "BYTES", "SCHEDULE"] {
        assert!(header.contains(column), "no {column} column: {table}");
    }
    assert!(
        table.contains("Scheduled") && table.contains("Failed"),
        "{table}"
    );
    Ok(())
}

/// Every object name in `bucket`.
async fn list_bucket(
    s3: &S3Server,
    bucket: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
    let opened = Destination::new(format!("s3://{bucket}"), s3.options()).open()?;
    let objects: Vec<_> = opened.store.list(None).try_collect().await?;
    let mut names: Vec<String> = objects
        .into_iter()
        .map(|o| o.location.to_string())
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_deletes_aged_out_backups_from_the_bucket() -> TestResult {
    let Some(plane) = ControlPlane::start()? else {
        return Ok(());
    };
    let Some(s3) = S3Server::start().await? else {
        return Ok(());
    };
    s3.create_bucket("retention").await?;
    let store = LocalStore::start(LocalOptions {
        partitions: 4,
        ..LocalOptions::default()
    })
    .await?;
    let kv = store.client()?;
    for i in 0..100 {
        kv.put(format!("kept-{i}"), vec![b'v'; 100], Default::default())
            .await?;
    }
    let map = kv.map().await?;

    let client = plane.client().await?;
    install_crd(&client, ShardedStore::crd()).await?;
    install_crd(&client, ShardedStoreBackup::crd()).await?;
    create_namespace(&client, "retention", &[]).await?;
    // The ShardedStore `kv` itself (the backup controller reads its TLS settings; no store
    // controller runs here), then what the store controller publishes for it: its partition
    // map and peer token (here those of the local-mode store), plus the bucket's credentials.
    let pp = PostParams::default();
    let store_obj: ShardedStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "shardedstore.io/v1alpha1", "kind": "ShardedStore",
        "metadata": {"name": "kv"},
        "spec": {"nodes": 3, "partitions": 4}
    }))?;
    Api::<ShardedStore>::namespaced(client.clone(), "retention")
        .create(&pp, &store_obj)
        .await?;
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": partition_map_name("kv")},
        "data": {MAP_KEY: serde_json::to_string(&*map)?},
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), "retention")
        .create(&pp, &cm)
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "retention");
    let token: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": peer_token_name("kv")},
        "stringData": {TOKEN_KEY: "local-peer-token"},
    }))?;
    secrets.create(&pp, &token).await?;
    let creds: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY},
    }))?;
    secrets.create(&pp, &creds).await?;

    let _controller = AbortOnDrop(tokio::spawn(shardedstore_operator::backup::run(
        client.clone(),
        Some("retention".into()),
    )));
    let api: Api<ShardedStoreBackup> = Api::namespaced(client.clone(), "retention");
    let yaml = format!(
        "store: kv\ndestination:\n  url: s3://retention/kv\n  s3: {{endpoint: '{}', region: {REGION}, credentialsSecret: s3-creds}}\nschedule: '* * * * *'\nkeep: 1\n",
        s3.endpoint
    );
    api.create(&pp, &backup("every-minute", &yaml)?).await?;

    // A backup at the next minute, then one a minute later, which ages the first out.
    let wait = Duration::from_secs(150);
    let first = eventually(wait, "the first scheduled backup", || {
        let api = api.clone();
        async move {
            let s = api.get("every-minute").await.ok()?.status?;
            (s.phase == BackupPhase::Completed).then(|| s.backups.first().cloned())?
        }
    })
    .await?;
    let first_prefix = first.url.trim_start_matches("s3://retention/").to_owned();
    let listed = list_bucket(&s3, "retention").await?;
    println!("after the first backup: {listed:?}");
    assert!(
        listed.contains(&format!("{first_prefix}/manifest.json")),
        "{listed:?}"
    );
    assert_eq!(
        listed
            .iter()
            .filter(|n| n.starts_with(&format!("{first_prefix}/")))
            .count(),
        5,
        "manifest + 4 partition objects: {listed:?}"
    );

    let second = eventually(wait, "the second backup to replace the first", || {
        let api = api.clone();
        let first = first.url.clone();
        async move {
            let s = api.get("every-minute").await.ok()?.status?;
            (s.phase == BackupPhase::Completed && s.backups.len() == 1 && s.backups[0].url != first)
                .then(|| s.backups[0].clone())
        }
    })
    .await?;
    let second_prefix = second.url.trim_start_matches("s3://retention/").to_owned();
    let listed = list_bucket(&s3, "retention").await?;
    println!("after the second backup: {listed:?}");
    assert!(
        listed
            .iter()
            .all(|n| n.starts_with(&format!("{second_prefix}/"))),
        "objects of the aged-out backup {first_prefix} are still in the bucket: {listed:?}"
    );
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(
        listed.contains(&format!("{second_prefix}/manifest.json")),
        "{listed:?}"
    );
    Ok(())
}
