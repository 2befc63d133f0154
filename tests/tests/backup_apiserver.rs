//! The ShardedStoreBackup resource against a real kube-apiserver + etcd: CRD schema, CEL rule
//! of `spec.restore.from`, `kubectl explain` and printer columns, and the real backup
//! controller reporting an invalid schedule, a missing store and a waiting schedule in the
//! status. (Backups themselves run in the multi-process suites `backup_s3` and `backup_file`.)
//!
//! Skipped, with a printed reason, only when the Kubernetes binaries have not been built.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use shardedstore_operator::crd::ShardedStore;
use shardedstore_operator::crd::backup::{
    BackupPhase, ShardedStoreBackup, ShardedStoreBackupSpec, ShardedStoreBackupStatus,
};
use shardedstore_tests::apiserver_harness::{ControlPlane, eventually};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(60);

async fn install(client: &Client, crd: CustomResourceDefinition) -> TestResult {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("shardedstore-tests").force(),
        &Patch::Apply(crd),
    )
    .await?;
    eventually(WAIT, "the CRD to be Established", || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            crds.get(&name)
                .await
                .ok()?
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await?;
    Ok(())
}

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
    install(&client, ShardedStore::crd()).await?;
    install(&client, ShardedStoreBackup::crd()).await?;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "bk"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;

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
