//! Concurrent clients over a small key set, recording every operation with its invoke and
//! complete times and what its answer proves. Each client makes exactly one attempt per
//! operation (no client-side retries), so an answer describes exactly one request.

use super::history::{Command, Cond, Nanos, Op, Outcome, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardedstore_node::client::kv::AttemptError;
use shardedstore_node::client::{Condition, KvClient, KvError, RetryPolicy};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shape of the load.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub keys: usize,
    /// Timeout of one request: a write that runs into it is indeterminate.
    pub request_timeout: Duration,
    /// Also send conditional writes (`If-Match`, `If-None-Match`, conditional deletes);
    /// without them every write is blind.
    pub conditional: bool,
}

/// Name of key `i` of a run.
pub fn key_name(i: usize) -> String {
    format!("fault-key-{i}")
}

/// 503 codes the nodes send only before appending anything (primary.rs: the serving check,
/// the `minInSync` check, waiting out a pending write; the forwarding node): such a write
/// was not applied. Every other 503 (`deposed`, `commit_timeout`, `shutting_down`,
/// `lease_expired_after_append`, ...) may come after the append. (Before 163ede0 the nodes
/// also sent `lease_expired` after the append.)
const REFUSED_BEFORE_APPEND: &[&str] = &[
    "handing_off",
    "lease_expired",
    "primary_not_ready",
    "below_min_in_sync",
    "pending_write_timeout",
    "not_primary",
    "no_primary",
];

/// What a failed request proves about its effect. Only a request never sent, a 421 or a
/// 4xx, or a 503 refused before the append ([`REFUSED_BEFORE_APPEND`]), proves a write was
/// not applied; any other 503 can come after the primary appended the entry, so like a
/// timeout or a broken connection it leaves the write indeterminate.
pub fn classify(command: &Command, err: &KvError) -> Outcome {
    let write = !matches!(command, Command::Get);
    match err {
        KvError::PreconditionFailed {
            current_version, ..
        } => Outcome::PreconditionFailed {
            current_version: *current_version,
        },
        KvError::Indeterminate { .. } if write => Outcome::Indeterminate,
        KvError::Unavailable { last, .. } if write => match last {
            AttemptError::Unavailable { code, .. }
                if REFUSED_BEFORE_APPEND.contains(&code.as_str()) =>
            {
                Outcome::Failed
            }
            AttemptError::Unavailable { .. }
            | AttemptError::Timeout { .. }
            | AttemptError::Interrupted { .. } => Outcome::Indeterminate,
            AttemptError::Connect { .. }
            | AttemptError::Misdirected { .. }
            | AttemptError::NoReplica { .. }
            | AttemptError::MapUnavailable { .. } => Outcome::Failed,
        },
        KvError::Rejected { .. } | KvError::MissingVersion { .. } if write => {
            Outcome::Indeterminate
        }
        _ => Outcome::Failed,
    }
}

fn condition(cond: Cond) -> Condition {
    match cond {
        Cond::Always => Condition::Always,
        Cond::IfVersion(v) => Condition::IfVersion(v),
        Cond::IfAbsent => Condition::IfAbsent,
    }
}

/// Sends one operation and turns its answer into an outcome.
pub async fn execute(client: &KvClient, key: &str, command: &Command) -> Outcome {
    let result = match command {
        Command::Get => client.get(key).await.map(|v| {
            Response::Read(v.map(|v| (String::from_utf8_lossy(&v.value).into_owned(), v.version)))
        }),
        Command::Put { value, cond } => client
            .put(key, value.clone().into_bytes(), condition(*cond))
            .await
            .map(|r| Response::Put {
                version: r.version,
                created: r.created,
            }),
        Command::Delete { cond } => client
            .delete(key, condition(*cond))
            .await
            .map(|existed| Response::Delete { existed }),
    };
    match result {
        Ok(r) => Outcome::Ok(r),
        Err(e) => classify(command, &e),
    }
}

/// A client of the workload: its own connection pool and map cache, no retries.
pub fn build_client(addrs: &[String], timeout: Duration) -> Result<KvClient, KvError> {
    KvClient::builder(addrs)
        .request_timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .retry_policy(RetryPolicy::none())
        .build()
}

/// Picks the next command of a client: reads, blind and conditional writes, deletes.
/// Conditional writes use the last version this client saw of the key.
fn next_command(
    rng: &mut StdRng,
    client: usize,
    n: u64,
    last_version: Option<u64>,
    conditional: bool,
) -> Command {
    let value = crate::test_value(&format!("c{client}-{n}"), n);
    let version = last_version.unwrap_or(1);
    let command = match rng.random_range(0..100u32) {
        0..35 => Command::Get,
        35..60 => Command::Put {
            value,
            cond: Cond::Always,
        },
        60..80 => Command::Put {
            value,
            cond: Cond::IfVersion(version),
        },
        80..88 => Command::Put {
            value,
            cond: Cond::IfAbsent,
        },
        88..95 => Command::Delete { cond: Cond::Always },
        _ => Command::Delete {
            cond: Cond::IfVersion(version),
        },
    };
    match command {
        Command::Put { value, .. } if !conditional => Command::Put {
            value,
            cond: Cond::Always,
        },
        Command::Delete { .. } if !conditional => Command::Delete { cond: Cond::Always },
        c => c,
    }
}

/// Runs client `id` until `stop` turns true (or `until`), returning its history.
#[allow(clippy::too_many_arguments)]
pub async fn client_loop(
    id: usize,
    conditional: bool,
    client: KvClient,
    keys: Vec<String>,
    clock: Instant,
    seed: u64,
    until: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(id as u64));
    let mut last_version: HashMap<String, u64> = HashMap::new();
    let mut ops = Vec::new();
    let since = |t: Instant| -> Nanos { t.duration_since(clock).as_nanos() as Nanos };
    let mut n = 0u64;
    while !*stop.borrow() && Instant::now() < until {
        let key = keys[rng.random_range(0..keys.len())].clone();
        let command = next_command(
            &mut rng,
            id,
            n,
            last_version.get(&key).copied(),
            conditional,
        );
        n += 1;
        let invoke = since(Instant::now());
        let outcome = execute(&client, &key, &command).await;
        let complete = since(Instant::now());
        match &outcome {
            Outcome::Ok(Response::Read(Some((_, v))))
            | Outcome::Ok(Response::Put { version: v, .. }) => {
                last_version.insert(key.clone(), *v);
            }
            Outcome::Failed | Outcome::Indeterminate => {
                // Stale routing is the usual cause: refresh the map before the next request,
                // and pause briefly so a client does not spin on a partition in failover.
                let _ = tokio::time::timeout(Duration::from_secs(2), client.map()).await;
                let _ = tokio::time::timeout(Duration::from_millis(50), stop.changed()).await;
            }
            _ => {}
        }
        ops.push(Op {
            client: id,
            key,
            command,
            invoke,
            complete,
            outcome,
        });
    }
    ops
}

/// Reads `key` until one read succeeds or `timeout` passes; records every attempt.
pub async fn final_read(
    client: &KvClient,
    key: &str,
    clock: Instant,
    timeout: Duration,
) -> (Vec<Op>, bool) {
    let deadline = Instant::now() + timeout;
    let mut ops = Vec::new();
    loop {
        let invoke = Instant::now().duration_since(clock).as_nanos() as Nanos;
        let outcome = execute(client, key, &Command::Get).await;
        let complete = Instant::now().duration_since(clock).as_nanos() as Nanos;
        let ok = matches!(outcome, Outcome::Ok(_));
        ops.push(Op {
            client: usize::MAX,
            key: key.to_owned(),
            command: Command::Get,
            invoke,
            complete,
            outcome,
        });
        if ok || Instant::now() >= deadline {
            return (ops, ok);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), client.map()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Command {
        Command::Put {
            value: "v".into(),
            cond: Cond::Always,
        }
    }

    fn unavailable(last: AttemptError) -> KvError {
        KvError::Unavailable {
            attempts: 1,
            elapsed: Duration::ZERO,
            last,
        }
    }

    #[test]
    fn a_503_leaves_a_write_indeterminate_but_a_421_does_not() {
        let e503 = unavailable(AttemptError::Unavailable {
            addr: "a".into(),
            code: "commit_timeout".into(),
            message: "m".into(),
            retry_after: None,
        });
        assert_eq!(classify(&put(), &e503), Outcome::Indeterminate);
        let refused = unavailable(AttemptError::Unavailable {
            addr: "a".into(),
            code: "below_min_in_sync".into(),
            message: "m".into(),
            retry_after: None,
        });
        assert_eq!(classify(&put(), &refused), Outcome::Failed);
        assert_eq!(classify(&Command::Get, &e503), Outcome::Failed);
        let e421 = unavailable(AttemptError::Misdirected {
            addr: "a".into(),
            code: "not_primary".into(),
            message: "m".into(),
            map_version: Some(2),
        });
        assert_eq!(classify(&put(), &e421), Outcome::Failed);
        let e412 = KvError::PreconditionFailed {
            message: "m".into(),
            current_version: Some(7),
        };
        assert_eq!(
            classify(&put(), &e412),
            Outcome::PreconditionFailed {
                current_version: Some(7)
            }
        );
    }

    #[test]
    fn commands_use_the_last_seen_version_and_unique_values() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut values = std::collections::HashSet::new();
        for n in 0..500 {
            match next_command(&mut rng, 3, n, Some(42), true) {
                Command::Put { value, cond } => {
                    assert!(values.insert(value));
                    assert!(matches!(
                        cond,
                        Cond::Always | Cond::IfAbsent | Cond::IfVersion(42)
                    ));
                }
                Command::Delete { cond } => {
                    assert!(matches!(cond, Cond::Always | Cond::IfVersion(42)));
                }
                Command::Get => {}
            }
        }
        assert!(values.len() > 200);
    }

    #[test]
    fn without_conditional_writes_every_write_is_blind() {
        let mut rng = StdRng::seed_from_u64(9);
        for n in 0..500 {
            match next_command(&mut rng, 1, n, Some(42), false) {
                Command::Put { cond, .. } | Command::Delete { cond } => {
                    assert_eq!(cond, Cond::Always)
                }
                Command::Get => {}
            }
        }
    }
}
