//! Log key rotation: old and new keys cosign during the grace period, everything signed before
//! keeps verifying with the old key, and the key history is published and chained.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ledger::core::hash::{Blake3, from_hex};
use ledger::core::leaf::format_micros;
use ledger::core::merkle::verify_consistency;
use ledger::core::note::{SignerKey, open_checkpoint, parse_note};
use ledger::keys::{rotate, transition_text};
use ledger::sequencer::SequencerConfig;
use ledger::store::Store;

use crate::common::{ORIGIN, TestServer, add_source, event, test_key};

const T0: i64 = 1_795_000_000_000_000;
const HOUR: i64 = 3_600_000_000;

fn config(clock: &Arc<AtomicI64>, cosigners: Vec<SignerKey>) -> SequencerConfig {
    let c = clock.clone();
    SequencerConfig {
        clock: Arc::new(move || c.load(Ordering::SeqCst)),
        cosigners,
        ..SequencerConfig::default()
    }
}

async fn post(s: &TestServer, n: u64) -> String {
    let (status, body) = s.post_json(&event(n)).await;
    assert_eq!(status, 200, "{body}");
    body["receipts"][0]["checkpoint"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_cosigns_for_the_grace_period_and_keeps_old_signatures_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let token = add_source(&dir, "ci-runner");
    let clock = Arc::new(AtomicI64::new(T0));
    let (old, new) = (test_key(), SignerKey::from_seed(ORIGIN, &[7; 32]).unwrap());

    let s = TestServer::start_keyed(
        dir.clone(),
        token.clone(),
        None,
        Default::default(),
        config(&clock, vec![]),
        old.clone(),
    )
    .await;
    let before = post(&s, 1).await;
    post(&s, 2).await;
    let (dir, _) = s.stop().await;

    // Refusals change nothing: another log name, the same key, the wrong current key.
    let store = Store::open(&dir).unwrap();
    let until = format_micros(T0 + HOUR).unwrap();
    let stranger = SignerKey::from_seed("other.example/log", &[8; 32]).unwrap();
    assert!(rotate(&store, &old, &stranger, &until).is_err());
    assert!(rotate(&store, &old, &old, &until).is_err());
    assert!(rotate(&store, &new, &old, &until).is_err());
    let history = rotate(&store, &old, &new, &until).unwrap();
    assert_eq!(history.keys.len(), 2);
    assert!(
        rotate(&store, &old, &new, &until).is_err(),
        "old is no longer current"
    );
    drop(store);

    // The old key cannot serve the rotated dir.
    let refused = ledger::server::serve(
        ledger::server::ServeConfig {
            data_dir: dir.clone(),
            key: old.clone(),
            sequencer: config(&clock, vec![]),
            limits: Default::default(),
            source_limits: Default::default(),
            net: Default::default(),
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        async {},
    )
    .await;
    assert!(refused.is_err());

    // During the grace period new checkpoints carry both signatures.
    let s = TestServer::start_keyed(
        dir,
        token,
        None,
        Default::default(),
        config(&clock, vec![old.clone()]),
        new.clone(),
    )
    .await;
    let during = post(&s, 3).await;
    for key in [old.verifier(), new.verifier()] {
        open_checkpoint(&during, key).unwrap();
    }
    // The published history: the transition statement is signed by both keys and says where.
    let (_, keys) = s.get_json("/v1/keys").await;
    let epochs = keys["keys"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert_eq!(
        (
            epochs[0]["retired_at_size"].as_u64(),
            epochs[1]["from_size"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let statement = parse_note(epochs[1]["transition"].as_str().unwrap()).unwrap();
    assert_eq!(
        statement.text,
        transition_text(ORIGIN, 2, old.verifier(), new.verifier())
    );
    for key in [old.verifier(), new.verifier()] {
        statement.verify(key).unwrap();
    }
    // After it, only the new key signs; what the old key signed before still verifies.
    clock.store(T0 + 2 * HOUR, Ordering::SeqCst);
    let after = post(&s, 4).await;
    open_checkpoint(&after, new.verifier()).unwrap();
    assert!(open_checkpoint(&after, old.verifier()).is_err());
    let before = open_checkpoint(&before, old.verifier()).unwrap();
    // And the log only grew across the rotation.
    let after = open_checkpoint(&after, new.verifier()).unwrap();
    let (_, proof) = s
        .get_json(&format!(
            "/v1/proofs/consistency?from={}&to={}",
            before.size, after.size
        ))
        .await;
    let hashes: Vec<_> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    verify_consistency::<Blake3>(before.size, after.size, &before.root, &after.root, &hashes)
        .unwrap();
    let (dir, _) = s.stop().await;

    // fsck accepts every checkpoint under the key of its epoch.
    let store = Store::open(&dir).unwrap();
    let report = ledger::fsck::fsck(&store, None, false).unwrap();
    assert!(report.ok, "{:?}", report.problems);

    // A history edited on disk (a transition not signed by the key it replaces) is refused, so
    // it cannot vouch for forged checkpoints.
    let mut forged = ledger::keys::history(&store).unwrap();
    let stranger = SignerKey::from_seed(ORIGIN, &[9; 32]).unwrap();
    let text = parse_note(forged.keys[1].transition.as_deref().unwrap())
        .unwrap()
        .text;
    forged.keys[1].transition = Some(new.cosign(&stranger.sign_note(&text)).unwrap());
    assert!(forged.check_chain().is_err());
    store
        .put_meta(
            ledger::store::META_KEY_HISTORY,
            &serde_json::to_vec(&forged).unwrap(),
        )
        .unwrap();
    let report = ledger::fsck::fsck(&store, None, false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("key history")),
        "{:?}",
        report.problems
    );
}
