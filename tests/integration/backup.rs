//! `ledger backup` makes a consistent copy while the server writes: the copy passes fsck, serves,
//! holds every event answered before the backup began, and the original's head extends its head.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger::core::hash::{Blake3, TreeHasher, from_hex};
use ledger::core::merkle::verify_consistency;
use ledger::core::note::{Checkpoint, VerifierKey, open_checkpoint};
use ledger::core::receipt::{Receipt, verify_receipt};
use serde_json::{Value, json};

use crate::common::{CliLedger, Process, cli_ledger, event, ledger_cmd};
use crate::fsck::{fsck_json, ledger};

fn post(client: &reqwest::blocking::Client, base: &str, token: &str, body: &Value) -> Vec<Receipt> {
    let r = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .json(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    serde_json::from_value(v["receipts"].clone()).unwrap()
}

fn head(client: &reqwest::blocking::Client, base: &str, key: &VerifierKey) -> Checkpoint {
    let note = client
        .get(format!("{base}/v1/checkpoint"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    open_checkpoint(&note, key).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn backup_while_writing_is_a_consistent_prefix_that_passes_fsck_and_serves() {
    let CliLedger {
        tmp,
        data,
        key_file,
        key,
        token,
    } = cli_ledger("test.backup/log");
    let server = Process::spawn(&data, &key_file);
    let client = reqwest::blocking::Client::new();
    let mut answered: Vec<Receipt> = post(
        &client,
        &server.base,
        &token,
        &json!((0..10).map(event).collect::<Vec<_>>()),
    );

    // A writer posts two events per request until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<Mutex<Vec<Receipt>>> = Arc::default();
    let writer = {
        let (stop, written, base, token, client) = (
            stop.clone(),
            written.clone(),
            server.base.clone(),
            token.clone(),
            client.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 1_000u64;
            while !stop.load(Ordering::Relaxed) {
                let receipts = post(&client, &base, &token, &json!([event(n), event(n + 1)]));
                n += 2;
                written.lock().unwrap().extend(receipts);
            }
        })
    };
    wait_for("the writer to get going", || {
        written.lock().unwrap().len() >= 40
    });
    // Everything answered up to here must be in the copy.
    answered.extend(written.lock().unwrap().iter().cloned());

    let copy = tmp.path().join("copy");
    let out = ledger_cmd(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert!(out.contains("made by the running server"), "{out}");
    // The server kept writing through the backup and after it.
    let during = written.lock().unwrap().len();
    wait_for("writes after the backup", || {
        written.lock().unwrap().len() >= during + 20
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // The copy is a closed data dir of its own, and complete.
    let (code, report) = fsck_json(&copy);
    assert_eq!(code, 0, "{report:#}");
    // The original too, read beside its running server.
    let (code, original) = fsck_json(&data);
    assert_eq!(code, 0, "{original:#}");

    let restored = Process::spawn(&copy, &key_file);
    let old = head(&client, &restored.base, &key);
    let new = head(&client, &server.base, &key);
    assert_eq!(report["tree_size"], old.size);
    let last_answered = answered.iter().map(|r| r.index).max().unwrap();
    assert!(
        old.size > last_answered,
        "copy at {} lacks answered index {last_answered}",
        old.size
    );
    assert!(
        old.size < new.size,
        "the original grew after the backup ({} vs {})",
        old.size,
        new.size
    );
    // The original's head extends the copy's: same history up to the copy's size.
    let proof: Value = client
        .get(format!(
            "{}/v1/proofs/consistency?from={}&to={}",
            server.base, old.size, new.size
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let hashes: Vec<[u8; 32]> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    verify_consistency::<Blake3>(old.size, new.size, &old.root, &new.root, &hashes).unwrap();
    // Every event answered before the backup began is in the copy, byte for byte.
    for r in &answered {
        let leaf = client
            .get(format!("{}/v1/entries/{}", restored.base, r.index))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(
            hex::encode(Blake3::leaf(&leaf)),
            r.leaf_hash,
            "entry {}",
            r.index
        );
        verify_receipt(r, &key, Some(&leaf)).unwrap();
    }
    // The restored copy takes writes and keeps its idempotency records.
    let again = post(&client, &restored.base, &token, &json!(event(3)));
    assert!(again[0].duplicate);
    assert_eq!(again[0].index, answered[3].index);
}

#[test]
fn backup_offline_and_refusals() {
    let CliLedger {
        tmp,
        data,
        key_file,
        key,
        token,
    } = cli_ledger("test.backup/log");
    let d = data.to_str().unwrap();
    {
        let server = Process::spawn(&data, &key_file);
        let client = reqwest::blocking::Client::new();
        post(
            &client,
            &server.base,
            &token,
            &json!((0..7).map(event).collect::<Vec<_>>()),
        );
    } // killed: no graceful shutdown, a stale control socket is left behind

    let copy = tmp.path().join("offline");
    let out = ledger_cmd(&["backup", "--data-dir", d, "--out", copy.to_str().unwrap()]);
    assert!(
        out.contains("made offline") && out.contains("tree size 7"),
        "{out}"
    );
    let (code, report) = fsck_json(&copy);
    assert_eq!(code, 0, "{report:#}");

    let again = ledger(&["backup", "--data-dir", d, "--out", copy.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let inside = ledger(&[
        "backup",
        "--data-dir",
        d,
        "--out",
        data.join("b").to_str().unwrap(),
    ]);
    assert_eq!(inside.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&inside.stderr).contains("hint:"));

    // The copy serves the same head as the original.
    let server = Process::spawn(&copy, &key_file);
    let client = reqwest::blocking::Client::new();
    assert_eq!(head(&client, &server.base, &key).size, 7);
}
