//! Disk full while ingesting: clients get 503, nothing answered is lost, nothing half-written is
//! visible, and ingestion resumes after the operator restarts the server (the sequencer is
//! fail-stop: docs/architecture.md, "When a commit fails").
//!
//! The full disk is a file size limit on the server process (`RLIMIT_FSIZE`, set with the shell's
//! `ulimit -f`, with `SIGXFSZ` ignored so an oversized write fails with `EFBIG` instead of killing
//! the process). The kernel then fails RocksDB's own WAL `write(2)` partway through a batch's
//! record, exactly where a full disk would: no mount privilege, no test hook in the product, and
//! certain to happen once the WAL reaches the limit. "Space returns" is a restart without the limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ledger::core::hash::{Blake3, Hash, TreeHasher, from_hex};
use ledger::core::leaf::Leaf;
use ledger::core::merkle::verify_inclusion;
use ledger::core::note::{Checkpoint, VerifierKey, open_checkpoint};
use ledger::core::receipt::Receipt;
use serde_json::{Value, json};

use crate::common::{CliLedger, Process, assert_extends, cli_ledger, event, head};

/// Largest file the limited server may write. Start-up writes an OPTIONS file of ~60 KiB (and an
/// info LOG whose write errors RocksDB ignores); the WAL reaches the limit after ~100 events.
const FILE_SIZE_LIMIT: u64 = 256 << 10;
const CLIENTS: u64 = 4;

/// `command` run with every file it writes limited to `bytes` (`ulimit -f` counts 512-byte blocks;
/// the ignored `SIGXFSZ` survives the `exec`).
fn with_file_size_limit(command: &Command, bytes: u64) -> Command {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg(format!(
            r#"trap '' XFSZ && ulimit -f {} && exec "$@""#,
            bytes / 512
        ))
        .arg("sh")
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            limited.env(name, value);
        }
    }
    limited
}

/// An event with a 2 KiB context, so the WAL fills in a few dozen commits.
fn big_event(n: u64) -> Value {
    let mut e = event(n);
    e["context"]["pad"] = json!("x".repeat(2048));
    e
}

/// How a client's requests ended.
#[derive(Default)]
struct Outcome {
    answered: Vec<Receipt>,
    /// The error of the 503 that stopped it, and that request's events.
    refused: Option<(String, Vec<Value>)>,
}

/// Posts arrays of `events` events until the first answer that is not 200 (which must be a 503).
async fn post_until_refused(
    client: reqwest::Client,
    base: String,
    token: String,
    events: u64,
    next: Arc<AtomicU64>,
) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        let first = next.fetch_add(events, Ordering::Relaxed);
        let body: Vec<Value> = (first..first + events).map(big_event).collect();
        let response = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let v: Value = response.json().await.unwrap();
        match status {
            200 => outcome
                .answered
                .extend(serde_json::from_value::<Vec<Receipt>>(v["receipts"].clone()).unwrap()),
            503 => {
                outcome.refused = Some((v["error"].as_str().unwrap().to_owned(), body));
                return outcome;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
}

async fn get(client: &reqwest::Client, url: String, token: &str) -> reqwest::Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

fn fsck(data: &Path, key: &VerifierKey) -> u64 {
    let report = ledger::fsck::fsck_dir(data, Some(key), false).unwrap();
    assert!(report.ok, "fsck: {:?}", report.first());
    report.tree_size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_503_loses_nothing_and_resumes_after_a_restart() {
    let CliLedger {
        tmp: _tmp,
        data,
        key_file,
        key,
        token,
    } = cli_ledger("test.diskfull/log");
    let client = ledger::tls::ClientTls::default().client().build().unwrap();

    // Fill the disk under concurrent load: every client ends on a 503.
    let mut server = Process::launch(with_file_size_limit(
        &Process::serve_command(&data, &key_file),
        FILE_SIZE_LIMIT,
    ));
    server.wait_ready();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(post_until_refused(
                client.clone(),
                server.base.clone(),
                token.clone(),
                1 + c % 3,
                next.clone(),
            ))
        })
        .collect();
    let mut answered: BTreeMap<u64, Receipt> = BTreeMap::new();
    // Events of the requests whose batch failed to commit (they may or may not be in the WAL).
    let mut failed_batch: BTreeSet<String> = BTreeSet::new();
    let mut failed_requests: Vec<Vec<Value>> = Vec::new();
    for task in tasks {
        let outcome = task.await.unwrap();
        for r in outcome.answered {
            assert!(
                answered.insert(r.index, r).is_none(),
                "index answered twice"
            );
        }
        let (error, events) = outcome.refused.unwrap();
        if error.starts_with("commit failed: rocksdb") {
            assert!(error.contains("File too large"), "{error}");
            failed_batch.extend(
                events
                    .iter()
                    .map(|e| e["event_id"].as_str().unwrap().to_owned()),
            );
        } else {
            assert!(
                error.contains("stopped writing after a failed commit"),
                "{error}"
            );
        }
        failed_requests.push(events);
    }
    assert!(!failed_batch.is_empty(), "no client saw the failed commit");
    let answered_size = answered.values().map(|r| r.tree_size).max().unwrap();
    assert!(
        answered.keys().copied().eq(0..answered_size),
        "answered indexes are not 0..{answered_size}"
    );

    // Fail-stop: writes get 503 (retryable), reads still work and show nothing of the failed
    // batch, and the data dir as RocksDB recovers it right now passes fsck.
    let (status, retry_after, body) = {
        let r = client
            .post(format!("{}/v1/events", server.base))
            .bearer_auth(&token)
            .json(&big_event(1 << 40))
            .send()
            .await
            .unwrap();
        let retry_after = r.headers().get("retry-after").cloned();
        (r.status().as_u16(), retry_after, r.text().await.unwrap())
    };
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some());
    assert!(body.contains("restart"), "{body}");
    let ready = get(&client, format!("{}/readyz", server.base), "").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(head(&server, &client, &key).await.size, answered_size);
    let first = get(&client, format!("{}/v1/entries/0", server.base), &token).await;
    assert_eq!(first.status(), 200);
    let beyond = get(
        &client,
        format!("{}/v1/entries/{answered_size}", server.base),
        &token,
    )
    .await;
    assert_eq!(beyond.status(), 404);
    let (d, k) = (data.clone(), key.clone());
    let seen = tokio::task::spawn_blocking(move || fsck(&d, &k))
        .await
        .unwrap();
    let batch = u64::try_from(failed_batch.len()).unwrap();
    assert!(
        seen == answered_size || seen == answered_size + batch,
        "fsck of the live data dir sees {seen} entries; answered {answered_size}, failed batch {batch}"
    );

    // Space returns; the operator restarts the server.
    let status = server.terminate();
    assert!(status.success(), "{status}; log:\n{}", server.log());
    drop(server);
    let server = Process::spawn(&data, &key_file);
    let head = head(&server, &client, &key).await;
    assert!(
        head.size == answered_size || head.size == answered_size + batch,
        "restarted head {}; answered {answered_size}, failed batch {batch}",
        head.size
    );

    // The tree is exactly the answered events plus, possibly, the whole failed batch.
    let mut notes: HashMap<String, Checkpoint> = HashMap::new();
    let mut handed_out: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut landed: BTreeSet<String> = BTreeSet::new();
    for index in 0..head.size {
        let leaf = get(
            &client,
            format!("{}/v1/entries/{index}", server.base),
            &token,
        )
        .await
        .bytes()
        .await
        .unwrap();
        let leaf_hash = Blake3::leaf(&leaf);
        if let Some(r) = answered.get(&index) {
            assert_eq!(hex::encode(leaf_hash), r.leaf_hash, "entry {index}");
            let cp = notes
                .entry(r.checkpoint.clone())
                .or_insert_with(|| open_checkpoint(&r.checkpoint, &key).unwrap());
            let proof: Vec<Hash> = r
                .inclusion_proof
                .iter()
                .map(|h| from_hex(h).unwrap())
                .collect();
            verify_inclusion::<Blake3>(index, cp.size, &leaf_hash, &proof, &cp.root).unwrap();
            handed_out.insert(cp.size, cp.root);
        } else {
            let leaf = Leaf::parse(&leaf).unwrap();
            let id = leaf.fields.str("/event_id").unwrap().into_owned();
            assert!(
                failed_batch.contains(&id),
                "entry {index} ({id}) is neither answered nor of the failed batch"
            );
            landed.insert(id);
        }
    }
    assert!(
        landed.is_empty() || landed == failed_batch,
        "part of the failed batch is in the log: {} of {} events",
        landed.len(),
        failed_batch.len()
    );
    for (&size, root) in handed_out.range(1..) {
        assert_extends(&client, &server.base, size, root, &head).await;
    }
    let (d, k) = (data.clone(), key.clone());
    let checked = tokio::task::spawn_blocking(move || fsck(&d, &k))
        .await
        .unwrap();
    assert_eq!(checked, head.size);
    println!(
        "answered {answered_size} events; the failed batch of {batch} {}",
        if landed.is_empty() {
            "was dropped (torn WAL record)"
        } else {
            "landed whole"
        }
    );

    // Ingestion resumes: retried requests land whole (or were already there, whole), new ones
    // continue the log.
    let ready = get(&client, format!("{}/readyz", server.base), "").await;
    assert_eq!(ready.status(), 200);
    for events in failed_requests {
        let r = client
            .post(format!("{}/v1/events", server.base))
            .bearer_auth(&token)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let receipts: Vec<Receipt> = serde_json::from_value(v["receipts"].clone()).unwrap();
        for r in receipts {
            assert_eq!(r.duplicate, landed.contains(&r.event_id), "{}", r.event_id);
        }
    }
    let r = client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&token)
        .json(&big_event(1 << 41))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let receipt: Receipt = serde_json::from_value(v["receipts"][0].clone()).unwrap();
    assert!(!receipt.duplicate);
    assert!(receipt.index >= head.size);
    ledger::core::receipt::verify_receipt(&receipt, &key, None).unwrap();
    drop(server);
}
