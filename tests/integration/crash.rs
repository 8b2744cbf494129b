//! Durability under SIGKILL: a real `ledger serve` process is killed mid-load; after restart every
//! answered event is present with its receipt's index and hash, and the new head is consistent with
//! every checkpoint handed out before the kill.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger::core::hash::{Blake3, TreeHasher, from_hex};
use ledger::core::merkle::verify_consistency;
use ledger::core::note::{VerifierKey, open_checkpoint};
use ledger::core::receipt::{Receipt, verify_receipt};
use serde_json::{Value, json};

use crate::common::{Process, event};

const ROUNDS: u64 = 3;
const CLIENTS: u64 = 8;
/// Answered receipts to wait for before each kill (a condition, not a sleep).
const ANSWERED_BEFORE_KILL: usize = 200;

fn ledger_cmd(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_answered_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = tmp.path().join("keys");
    let (data_s, keys_s) = (data.to_str().unwrap(), keys.to_str().unwrap());
    ledger_cmd(&["keygen", "--origin", "test.crash/log", "--out", keys_s]);
    let key = VerifierKey::parse(
        std::fs::read_to_string(keys.join("ledger.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let token = ledger_cmd(&["sources", "add", "gateway", "--data-dir", data_s])
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let key_file = keys.join("ledger.key");
    let client = ledger::tls::ClientTls::default().client().build().unwrap();
    let answered: Arc<Mutex<Vec<Receipt>>> = Arc::default();

    for round in 0..ROUNDS {
        let mut server = Process::spawn(&data, &key_file);
        let stop = Arc::new(AtomicBool::new(false));
        let before = answered.lock().unwrap().len();
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, base, token, stop, answered) = (
                client.clone(),
                server.base.clone(),
                token.clone(),
                stop.clone(),
                answered.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = (round * CLIENTS + c) * 1_000_000 + n;
                    n += 1;
                    let body = json!([event(id), event(id + 500_000)]);
                    let sent = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(&token)
                        .json(&body)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    if response.status() != 200 {
                        break;
                    }
                    let Ok(v) = response.json::<Value>().await else {
                        break;
                    };
                    let receipts: Vec<Receipt> =
                        serde_json::from_value(v["receipts"].clone()).unwrap();
                    answered.lock().unwrap().extend(receipts);
                }
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while answered.lock().unwrap().len() < before + ANSWERED_BEFORE_KILL {
            assert!(Instant::now() < deadline, "load made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }

        // Restart and check every receipt ever answered.
        let server = Process::spawn(&data, &key_file);
        let head_note = client
            .get(format!("{}/v1/checkpoint", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let head = open_checkpoint(&head_note, &key).unwrap();
        let receipts = answered.lock().unwrap().clone();
        assert!(receipts.len() >= before + ANSWERED_BEFORE_KILL);
        let mut sizes = std::collections::BTreeMap::new();
        for r in &receipts {
            assert!(
                r.index < head.size,
                "answered index {} beyond restarted head {}",
                r.index,
                head.size
            );
            let leaf = client
                .get(format!("{}/v1/entries/{}", server.base, r.index))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(
                hex::encode(Blake3::leaf(&leaf)),
                r.leaf_hash,
                "entry {} changed",
                r.index
            );
            let cp = verify_receipt(r, &key, Some(&leaf)).unwrap();
            sizes.insert(cp.size, cp.root);
        }
        for (size, root) in sizes {
            let proof: Value = client
                .get(format!(
                    "{}/v1/proofs/consistency?from={size}&to={}",
                    server.base, head.size
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let hashes: Vec<[u8; 32]> = proof["hashes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| from_hex(h.as_str().unwrap()).unwrap())
                .collect();
            verify_consistency::<Blake3>(size, head.size, &root, &head.root, &hashes)
                .unwrap_or_else(|e| {
                    panic!(
                        "round {round}: head {} does not extend checkpoint {size}: {e}",
                        head.size
                    )
                });
        }
        drop(server);
    }
}
