//! Storage format upgrades: a data dir written by an earlier format is upgraded in place by the
//! first `ledger serve` of this version, and keeps every entry, node, checkpoint and proof, and
//! its idempotency records (formats 1 and 2 kept a digest of the event in them; formats 3 and 4
//! compare a repeated `event_id` with its stored event).
//!
//! Two fixtures, each written by a release of its format: `ledger keygen --origin
//! test.ledger/format-N` (a test-only key, in `keys/`), `ledger sources add gateway`, then three
//! POSTs of 7 events (`common::event(0..21)`, 21 entries, three commits) and a graceful stop.
//! - `tests/fixtures/format-1`, by the release of `337aeed` (tree nodes keyed `[level][index]`
//!   in `nodes`). Its data is still in RocksDB's WAL, as after most stops of that release.
//! - `tests/fixtures/format-3`, by the release of `b0d49b6` (one node per key in `tree`, keyed by
//!   the last leaf covered and the level). It flushed its memtables on the stop.

use std::path::{Path, PathBuf};

use ledger::core::note::VerifierKey;
use serde_json::{Value, json};

use crate::common::{Process, add_source, assert_extends, assert_included, copy_dir, event, head};

fn fixture(format: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/format-{format}"))
}

fn fixture_key(format: u32) -> VerifierKey {
    let text = std::fs::read_to_string(fixture(format).join("keys/test.pub")).unwrap();
    VerifierKey::parse(text.trim()).unwrap()
}

/// The column families of the RocksDB at `data`, sorted.
fn families(data: &Path) -> Vec<String> {
    let mut names = rocksdb::DB::list_cf(&rocksdb::Options::default(), data).unwrap();
    names.sort();
    names
}

/// The fixture of `format` is upgraded by `ledger serve`, keeps every proof, goes on appending
/// consistently, and passes fsck; `legacy` is the family its nodes were in, gone afterwards.
async fn upgrades_in_place_and_keeps_every_proof(format: u32, legacy: &str) {
    let key_file = fixture(format).join("keys/test.key");
    let key = fixture_key(format);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixture(format).join("data"), &data);
    assert!(families(&data).iter().any(|n| n == legacy));

    // Before the upgrade, the tools that open a data dir read-only say what to do.
    let fsck = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(["fsck", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fsck.stderr);
    assert_eq!(fsck.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("storage format {format}")) && stderr.contains("ledger serve"),
        "{stderr}"
    );

    let mut server = Process::spawn(&data, &key_file);
    // (Process installs the process's TLS crypto provider, which reqwest's client needs.)
    let client = reqwest::Client::new();
    assert!(
        server
            .log()
            .contains(&format!("upgrading storage format {format} to 4")),
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

    // The old family is gone, and fsck agrees: every node present in its tile, nothing stray.
    let after = families(&data);
    assert!(after.iter().any(|n| n == "tiles"), "{after:?}");
    assert!(!after.iter().any(|n| n == legacy), "{after:?}");
    let report = ledger::fsck::fsck_dir(&data, Some(&key), false).unwrap();
    assert!(report.ok, "fsck: {:?}", report.first());
    assert_eq!(report.tree_size, 32);
    assert_eq!(report.checked.nodes, 2 * 32 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_data_dir_is_upgraded_in_place_and_keeps_every_proof() {
    upgrades_in_place_and_keeps_every_proof(1, "nodes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_3_data_dir_is_upgraded_in_place_and_keeps_every_proof() {
    upgrades_in_place_and_keeps_every_proof(3, "tree").await;
}

/// An upgrade that cannot finish (here: a key in the old node family that names no node) stops
/// with the reason and leaves the dir exactly as the earlier release wrote it: still its format,
/// its nodes in place, no new column family (which the earlier release could not open).
fn a_failed_upgrade_leaves_the_dir_as_it_was(format: u32, legacy: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixture(format).join("data"), &data);
    let opts = rocksdb::Options::default();
    let before = families(&data);
    {
        let db = rocksdb::DB::open_cf(&opts, &data, &before).unwrap();
        db.put_cf(db.cf_handle(legacy).unwrap(), b"bad", [0u8; 32])
            .unwrap();
    }
    let err = ledger::store::Store::open(&data).unwrap_err().to_string();
    assert!(
        err.contains("upgrade stopped") && err.contains(&format!("still format {format}")),
        "{err}"
    );
    assert_eq!(families(&data), before);
    assert!(!before.iter().any(|n| n == "tiles"), "{before:?}");
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &data, &before, false).unwrap();
    let recorded = db.get_cf(db.cf_handle("meta").unwrap(), b"format").unwrap();
    assert_eq!(recorded, Some(format.to_string().into_bytes()));
}

#[test]
fn a_failed_upgrade_leaves_the_format_1_dir_as_it_was() {
    a_failed_upgrade_leaves_the_dir_as_it_was(1, "nodes");
}

#[test]
fn a_failed_upgrade_leaves_the_format_3_dir_as_it_was() {
    a_failed_upgrade_leaves_the_dir_as_it_was(3, "tree");
}

/// A format-2 dir (idempotency records of 48 bytes: index, tree size and the event's digest),
/// made from the format-3 fixture as the release of format 2 would have left it, is upgraded to
/// format 4, and its records still answer: the same event again is a duplicate of its entry,
/// another body under the same id a conflict, checked against the stored event. New records
/// are 16 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_dir_keeps_its_idempotency_records() {
    use ledger::core::event::prepare_bytes;
    use ledger::core::merkle::{HashReader, NodeId};
    use ledger::sequencer::{Sequencer, SequencerConfig, SequencerError};
    use ledger::store::{Store, dedup_key};
    use std::sync::Arc;

    let prepared = |value: &Value| prepare_bytes(value.to_string().as_bytes()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&fixture(3).join("data"), &data);
    {
        // Back to format 2: its records carried 32 more bytes (the digest nothing reads now).
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), &data, families(&data)).unwrap();
        let dedup = db.cf_handle("dedup").unwrap();
        for n in 0..21 {
            let key = dedup_key("gateway", &format!("evt-{n}"));
            let mut record = db.get_cf(dedup, &key).unwrap().unwrap();
            assert_eq!(record.len(), 16, "format 3 wrote index and tree size only");
            record.extend_from_slice(&[0xAB; 32]);
            db.put_cf(dedup, &key, &record).unwrap();
        }
        db.put_cf(db.cf_handle("meta").unwrap(), b"format", b"2")
            .unwrap();
    }

    let store = Arc::new(Store::open(&data).unwrap());
    assert_eq!(store.meta(b"format").unwrap().as_deref(), Some(&b"4"[..]));
    let stored_leaf = store.read_hash(NodeId::covering(0, 1)).unwrap();
    let key = ledger::keyfile::load(&fixture(3).join("keys/test.key")).unwrap();
    let (sequencer, writer) =
        Sequencer::start(store.clone(), key, SequencerConfig::default()).unwrap();
    let again = sequencer
        .append("gateway", vec![prepared(&event(21)), prepared(&event(1))])
        .await
        .unwrap();
    assert_eq!((again[0].index, again[0].duplicate), (21, false));
    assert_eq!((again[1].index, again[1].duplicate), (1, true));
    assert_eq!(again[1].leaf_hash, stored_leaf);
    let mut changed = event(1);
    changed["reason"] = json!("edited");
    let err = sequencer
        .append("gateway", vec![prepared(&event(22)), prepared(&changed)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SequencerError::Conflict { item: 1, event_id } if event_id == "evt-1"),
        "{err}"
    );
    drop(sequencer);
    writer.join();
    let key = dedup_key("gateway", "evt-21");
    assert_eq!(store.raw_get("dedup", &key).unwrap().unwrap().len(), 16);
    drop(store);
    let report = ledger::fsck::fsck_dir(&data, Some(&fixture_key(3)), false).unwrap();
    assert!(report.ok, "fsck: {:?}", report.first());
    assert_eq!(report.tree_size, 22);
}
