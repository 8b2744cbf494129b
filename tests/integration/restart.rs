//! State survives restarts, and the start-up check refuses a store that does not add up.

use ledger::core::hash::{Blake3, from_hex};
use ledger::core::merkle::verify_consistency;
use ledger::core::note::{SignerKey, open_checkpoint};
use ledger::core::receipt::{Receipt, verify_receipt};
use ledger::http::Limits;
use ledger::sequencer::{SequencerConfig, SequencerError};
use ledger::server::{ServeConfig, ServeError, serve};
use serde_json::{Value, json};

use crate::common::{TestServer, event, test_key, verifier};

fn receipts(body: &Value) -> Vec<Receipt> {
    serde_json::from_value(body["receipts"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state_and_the_new_log_extends_the_old_checkpoint() {
    let server = TestServer::start().await;
    let (_, body) = server
        .post_json(&json!((0..5).map(event).collect::<Vec<_>>()))
        .await;
    let before = receipts(&body);
    let (_, old_note) = server.get_text("/v1/checkpoint").await;
    let token = server.token.clone();
    let (dir, tmp) = server.stop().await;

    let server = TestServer::start_on(
        dir,
        token,
        tmp,
        Limits::default(),
        SequencerConfig::default(),
    )
    .await;
    let (_, note) = server.get_text("/v1/checkpoint").await;
    assert_eq!(note, old_note, "same head after restart");

    // Idempotency is durable: the original receipt comes back after a restart.
    let (status, again) = server.post_json(&event(3)).await;
    assert_eq!(status, 200);
    let mut want = before[3].clone();
    want.duplicate = true;
    assert_eq!(receipts(&again)[0], want);

    let (_, more) = server
        .post_json(&json!([event(5), event(6), event(7)]))
        .await;
    assert_eq!(receipts(&more)[0].index, 5, "indexes continue");
    let key = verifier();
    let old = open_checkpoint(&old_note, &key).unwrap();
    let (_, new_note) = server.get_text("/v1/checkpoint").await;
    let new = open_checkpoint(&new_note, &key).unwrap();
    assert_eq!(new.size, 8);
    let (_, proof) = server
        .get_json(&format!(
            "/v1/proofs/consistency?from={}&to={}",
            old.size, new.size
        ))
        .await;
    let hashes: Vec<[u8; 32]> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    verify_consistency::<Blake3>(old.size, new.size, &old.root, &new.root, &hashes).unwrap();
    for r in before {
        verify_receipt(&r, &key, None).unwrap();
    }
    // ingested_at never decreases across the restart.
    let mut last = String::new();
    for i in 0..8 {
        let (_, leaf) = server.get_text(&format!("/v1/entries/{i}")).await;
        let at = ledger::core::leaf::Leaf::parse(leaf.as_bytes())
            .unwrap()
            .ingested_at
            .to_owned();
        assert!(at >= last, "{at} < {last}");
        last = at;
    }
    server.stop().await;
}

/// Bytes in the data dir's RocksDB write-ahead logs (`NNNNNN.log`; not the info log `LOG`).
fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// A clean stop writes the memtables to table files: the WAL is left empty, so the next open (and
/// every export or fsck meanwhile, which cannot flush) has nothing to replay. Every answered
/// commit was in the WAL already; the restart test above holds the state itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_nothing_in_the_wal() {
    let server = TestServer::start().await;
    let (status, _) = server
        .post_json(&json!((0..50).map(event).collect::<Vec<_>>()))
        .await;
    assert_eq!(status, 200);
    let (dir, _tmp) = server.stop().await;
    assert_eq!(
        wal_bytes(&dir),
        0,
        "WAL files left with records after a clean stop"
    );
}

async fn start_err(dir: std::path::PathBuf, key: SignerKey) -> ServeError {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServeConfig {
        data_dir: dir,
        key,
        sequencer: SequencerConfig::default(),
        limits: Limits::default(),
        source_limits: Default::default(),
        net: Default::default(),
    };
    serve(config, listener, std::future::pending())
        .await
        .unwrap_err()
}

/// Overwrites one key of a column family behind the ledger's back, as a tampering operator would.
fn tamper(dir: &std::path::Path, cf: &str, key: &[u8], value: &[u8]) {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, &cfs).unwrap();
    db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
}

async fn populated(
    n: u64,
) -> (
    std::path::PathBuf,
    Option<std::sync::Arc<tempfile::TempDir>>,
) {
    let server = TestServer::start().await;
    let (status, _) = server
        .post_json(&json!((0..n).map(event).collect::<Vec<_>>()))
        .await;
    assert_eq!(status, 200);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_when_the_stored_root_does_not_match() {
    let (dir, _tmp) = populated(5).await;
    // Size 5 = subtree [0,4) at level 2 plus leaf 4: edit the level-2 node, the 7th node to
    // complete, in the tail record (tile 0's number, then its 8 hashes so far).
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dir).unwrap();
    let tail = {
        let db =
            rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &dir, &cfs, false)
                .unwrap();
        let tail = db.cf_handle("tail").unwrap();
        db.get_cf(tail, b"tail").unwrap().unwrap()
    };
    assert_eq!(tail.len(), 8 + 8 * 32);
    let mut edited = tail.clone();
    edited[8 + 6 * 32..8 + 7 * 32].copy_from_slice(&[7u8; 32]);
    assert_ne!(edited, tail);
    tamper(&dir, "tail", b"tail", &edited);
    let err = start_err(dir, test_key()).await;
    assert!(
        matches!(&err, ServeError::Sequencer(SequencerError::Startup(m)) if m.contains("root recomputed")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_when_the_last_entry_was_edited() {
    let (dir, _tmp) = populated(3).await;
    tamper(&dir, "entries", &2u64.to_be_bytes(), b"{\"edited\":true}");
    let err = start_err(dir, test_key()).await;
    assert!(
        matches!(&err, ServeError::Sequencer(SequencerError::Startup(m)) if m.contains("does not hash")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_an_entry_beyond_the_checkpoint() {
    let (dir, _tmp) = populated(3).await;
    tamper(&dir, "entries", &3u64.to_be_bytes(), b"{}");
    let err = start_err(dir, test_key()).await;
    assert!(
        matches!(&err, ServeError::Sequencer(SequencerError::Startup(_))),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_a_different_signing_key() {
    let (dir, _tmp) = populated(1).await;
    let other = SignerKey::from_seed("test.ledger/log", &[1u8; 32]).unwrap();
    let err = start_err(dir, other).await;
    assert!(
        err.to_string().contains("belongs to the log with key"),
        "{err}"
    );
}
