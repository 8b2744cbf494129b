//! Storage format upgrades: a data dir written by an earlier format is upgraded in place by the
//! first `ledger serve` of this version, and keeps every entry, node, checkpoint and proof, and
//! its idempotency records (formats 1 and 2 kept a digest of the event in them; format 3 compares
//! a repeated `event_id` with its stored event).
//!
//! `tests/fixtures/format-1` was written by the release of `337aeed` (storage format 1: tree nodes
//! keyed `[level][index]`): `ledger keygen --origin test.ledger/format-1` (a test-only key, in
//! `keys/`), `ledger sources add gateway`, then three POSTs of 7 events (21 entries, three
//! commits) and a graceful stop. The data is still in RocksDB's WAL, as after most stops.

use std::path::Path;

use ledger::core::note::VerifierKey;
use serde_json::{Value, json};

use crate::common::{
    Process, add_source, assert_extends, assert_included, copy_dir, event, head, test_key, verifier,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_is_upgraded_in_place_and_keeps_every_proof() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    let key_file = fixture.join("keys/test.key");
    let key = VerifierKey::parse(
        std::fs::read_to_string(fixture.join("keys/test.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixture.join("data"), &data);

    // Before the upgrade, the tools that open a data dir read-only say what to do.
    let fsck = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["fsck", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fsck.stderr);
    assert_eq!(fsck.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("storage format 1") && stderr.contains("ledger serve"),
        "{stderr}"
    );

    let mut server = Process::spawn(&data, &key_file);
    // (Process installs the process's TLS crypto provider, which reqwest's client needs.)
    let client = reqwest::Client::new();
    assert!(
        server.log().contains("upgrading storage format 1 to 3"),
        "{}",
        server.log()
    );
    let old = head(&server, &client, &key).await;
    assert_eq!(old.size, 21);
    for index in 0..old.size {
        assert_included(&client, &server.base, index, &old).await;
    }

    // It goes on appending: new entries, and a head consistent with the upgraded one.
    let token = {
        server.terminate();
        let token = add_source(&data, "gateway-2");
        server = Process::spawn(&data, &key_file);
        token
    };
    assert!(!server.log().contains("upgrading storage format"));
    let events: Vec<Value> = (0..11).map(event).collect();
    let status = client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&token)
        .json(&json!(events))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let new = head(&server, &client, &key).await;
    assert_eq!(new.size, 32);
    assert_extends(&client, &server.base, old.size, &old.root, &new).await;
    for index in 0..new.size {
        assert_included(&client, &server.base, index, &new).await;
    }
    server.terminate();

    // fsck agrees: every node present under its new key, nothing stray.
    let report = ledger::fsck::fsck_dir(&data, Some(&key), false).unwrap();
    assert!(report.ok, "fsck: {:?}", report.first());
    assert_eq!(report.tree_size, 32);
}

/// An upgrade that cannot finish (here: a format-1 node key that names no node) stops with the
/// reason and leaves the dir exactly as the earlier release wrote it: still format 1, its nodes
/// in place, no new column family (which the earlier release could not open).
#[test]
fn a_failed_upgrade_leaves_the_format_1_dir_as_it_was() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixture.join("data"), &data);
    let opts = rocksdb::Options::default();
    let families = |data: &Path| {
        let mut names = rocksdb::DB::list_cf(&opts, data).unwrap();
        names.sort();
        names
    };
    let before = families(&data);
    {
        let db = rocksdb::DB::open_cf(&opts, &data, &before).unwrap();
        db.put_cf(db.cf_handle("nodes").unwrap(), b"bad", [0u8; 32])
            .unwrap();
    }
    let err = ledger::store::Store::open(&data).unwrap_err().to_string();
    assert!(
        err.contains("upgrade stopped") && err.contains("still format 1"),
        "{err}"
    );
    assert_eq!(families(&data), before);
    assert!(!before.iter().any(|n| n == "tree"), "{before:?}");
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &data, &before, false).unwrap();
    let format = db.get_cf(db.cf_handle("meta").unwrap(), b"format").unwrap();
    assert_eq!(format.as_deref(), Some(&b"1"[..]));
}

/// A format-2 dir (idempotency records of 48 bytes: index, tree size and the event's digest) is
/// recorded as format 3 by a writable open, and its records still answer: the same event again
/// is a duplicate of its entry, another body under the same id a conflict, checked against the
/// stored event. New records are 16 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_dir_keeps_its_idempotency_records() {
    use ledger::core::event::prepare_bytes;
    use ledger::sequencer::{Sequencer, SequencerConfig, SequencerError};
    use ledger::store::{Store, dedup_key};
    use std::sync::Arc;

    let prepared = |value: &Value| prepare_bytes(value.to_string().as_bytes()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = |store: &Arc<Store>| {
        Sequencer::start(store.clone(), test_key(), SequencerConfig::default()).unwrap()
    };

    let store = Arc::new(Store::open(&data).unwrap());
    let (sequencer, writer) = start(&store);
    let first = sequencer
        .append("gw", vec![prepared(&event(1)), prepared(&event(2))])
        .await
        .unwrap();
    drop(sequencer);
    writer.join();
    // Back to format 2: its records carried 32 more bytes (the digest nothing reads now).
    for n in [1, 2] {
        let key = dedup_key("gw", &format!("evt-{n}"));
        let mut record = store.raw_get("dedup", &key).unwrap().unwrap();
        assert_eq!(record.len(), 16, "format 3 writes index and tree size only");
        record.extend_from_slice(&[0xAB; 32]);
        store.raw_put("dedup", &key, &record).unwrap();
    }
    store.raw_put("meta", b"format", b"2").unwrap();
    drop(store);

    let store = Arc::new(Store::open(&data).unwrap());
    assert_eq!(store.meta(b"format").unwrap().as_deref(), Some(&b"3"[..]));
    let (sequencer, writer) = start(&store);
    let again = sequencer
        .append("gw", vec![prepared(&event(3)), prepared(&event(2))])
        .await
        .unwrap();
    assert_eq!((again[0].index, again[0].duplicate), (2, false));
    assert_eq!((again[1].index, again[1].duplicate), (1, true));
    assert_eq!(again[1].leaf_hash, first[1].leaf_hash);
    let mut changed = event(1);
    changed["reason"] = json!("edited");
    let err = sequencer
        .append("gw", vec![prepared(&event(4)), prepared(&changed)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SequencerError::Conflict { item: 1, event_id } if event_id == "evt-1"),
        "{err}"
    );
    drop(sequencer);
    writer.join();
    let key = dedup_key("gw", "evt-3");
    assert_eq!(store.raw_get("dedup", &key).unwrap().unwrap().len(), 16);
    drop(store);
    let report = ledger::fsck::fsck_dir(&data, Some(&verifier()), false).unwrap();
    assert!(report.ok, "fsck: {:?}", report.first());
    assert_eq!(report.tree_size, 3);
}
