//! The HTTP API end to end, in process: receipts checked with the project's own verifier,
//! idempotency, all-or-nothing requests, and the bad-input matrix.

use ledger::core::hash::{Blake3, from_hex};
use ledger::core::leaf::Leaf;
use ledger::core::merkle::{verify_consistency, verify_inclusion};
use ledger::core::note::open_checkpoint;
use ledger::core::receipt::{BatchReceipt, Receipt, verify_batch_receipt, verify_receipt};
use serde_json::{Value, json};

use crate::common::{TestServer, event, gated_clock, verifier, writer_entered};

fn receipts(body: &Value) -> Vec<Receipt> {
    serde_json::from_value(body["receipts"].clone()).unwrap()
}

fn hashes(v: &Value) -> Vec<[u8; 32]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| from_hex(h.as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_receipts_verify_against_the_served_checkpoint() {
    let server = TestServer::start().await;
    let key = verifier();

    let (status, body) = server.post_json(&event(0)).await;
    assert_eq!(status, 200, "{body}");
    let (status, batch) = server
        .post_json(&json!([event(1), event(2), event(3)]))
        .await;
    assert_eq!(status, 200, "{batch}");
    let ndjson = format!("{}\n{}\n", event(4), event(5));
    let (status, nd) = server.post("application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{nd}");

    let mut all = receipts(&body);
    all.extend(receipts(&batch));
    all.extend(receipts(&nd));
    assert_eq!(
        all.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.event_id, format!("evt-{i}"));
        assert!(!r.duplicate);
        let (status, leaf) = server.get_text(&format!("/v1/entries/{}", r.index)).await;
        assert_eq!(status, 200);
        verify_receipt(r, &key, Some(leaf.as_bytes())).unwrap();
        let parsed = Leaf::parse(leaf.as_bytes()).unwrap();
        assert_eq!(parsed.index, r.index);
        assert_eq!(parsed.source, "ci-runner");
        assert_eq!(
            parsed.fields.str("/event_id").as_deref(),
            Some(format!("evt-{i}").as_str())
        );
    }
    // The chain: each leaf names its predecessor's leaf hash.
    for pair in all.windows(2) {
        let (_, leaf) = server
            .get_text(&format!("/v1/entries/{}", pair[1].index))
            .await;
        assert_eq!(
            ledger::core::hash::to_hex(&Leaf::parse(leaf.as_bytes()).unwrap().prev_leaf_hash),
            pair[0].leaf_hash
        );
    }
    let (_, first) = server.get_text("/v1/entries/0").await;
    assert_eq!(
        Leaf::parse(first.as_bytes()).unwrap().prev_leaf_hash,
        [0u8; 32]
    );

    // Every receipt is also provable against the latest checkpoint, and that checkpoint extends
    // each receipt's checkpoint.
    let (status, note) = server.get_text("/v1/checkpoint").await;
    assert_eq!(status, 200);
    let latest = open_checkpoint(&note, &key).unwrap();
    assert_eq!(latest.size, 6);
    for r in &all {
        let (_, proof) = server
            .get_json(&format!(
                "/v1/proofs/inclusion?index={}&tree_size={}",
                r.index, latest.size
            ))
            .await;
        let leaf_hash = from_hex(&r.leaf_hash).unwrap();
        assert_eq!(proof["leaf_hash"], json!(r.leaf_hash));
        verify_inclusion::<Blake3>(
            r.index,
            latest.size,
            &leaf_hash,
            &hashes(&proof["hashes"]),
            &latest.root,
        )
        .unwrap();
        let old = open_checkpoint(&r.checkpoint, &key).unwrap();
        let (_, c) = server
            .get_json(&format!(
                "/v1/proofs/consistency?from={}&to={}",
                old.size, latest.size
            ))
            .await;
        verify_consistency::<Blake3>(
            old.size,
            latest.size,
            &old.root,
            &latest.root,
            &hashes(&c["hashes"]),
        )
        .unwrap();
    }

    let (status, vk) = server.get_text("/v1/verifier-key").await;
    assert_eq!((status, vk.trim()), (200, key.encode().as_str()));

    // One request's lifecycle: req-1 holds evt-3, evt-4, evt-5.
    let (status, req) = server.get_json("/v1/requests/req-1").await;
    assert_eq!(status, 200, "{req}");
    let indexes: Vec<u64> = req["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [3, 4, 5]);
    assert_eq!(server.get_json("/v1/requests/nope").await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_repost_returns_the_original_receipt_and_conflict_is_409() {
    let server = TestServer::start().await;
    let (_, first) = server.post_json(&json!([event(1), event(2)])).await;
    let original = receipts(&first);
    let (_, more) = server.post_json(&event(3)).await;
    assert_eq!(receipts(&more)[0].index, 2);

    // Same body (keys reordered, whitespace changed: the canonical form is what counts).
    let reordered: Value = serde_json::from_str(&event(2).to_string()).unwrap();
    let pretty = serde_json::to_string_pretty(&json!([reordered])).unwrap();
    let (status, again) = server.post("application/json", pretty).await;
    assert_eq!(status, 200, "{again}");
    let dup = &receipts(&again)[0];
    assert!(dup.duplicate);
    let mut want = original[1].clone();
    want.duplicate = true;
    assert_eq!(dup, &want, "the original receipt, flagged as duplicate");
    assert_eq!(server.tree_size().await, 3, "nothing appended");

    // Same id, different body: 409, and nothing of the request is appended.
    let mut changed = event(2);
    changed["reason"] = json!("edited");
    let (status, body) = server.post_json(&json!([event(10), changed])).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["details"][0]["item"], json!(1));
    assert_eq!(server.tree_size().await, 3);

    // A duplicate inside one request is appended once.
    let (status, body) = server.post_json(&json!([event(20), event(20)])).await;
    assert_eq!(status, 200, "{body}");
    let r = receipts(&body);
    assert_eq!(
        (r[0].index, r[0].duplicate, r[1].index, r[1].duplicate),
        (3, false, 3, true)
    );
    assert_eq!(r[0].leaf_hash, r[1].leaf_hash);
    // ... and one id with two bodies inside one request is a conflict.
    let mut other = event(30);
    other["reason"] = json!("x");
    let (status, _) = server.post_json(&json!([event(30), other])).await;
    assert_eq!(status, 409);
    assert_eq!(server.tree_size().await, 4);
    server.stop().await;
}

/// Jobs committed together: a later job repeating an event of an earlier job of the same batch
/// gets its entry (same body) or a conflict (another body), compared with the earlier job's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_in_one_commit_is_compared_with_the_earlier_job() {
    use ledger::core::event::prepare_bytes;
    use ledger::sequencer::{Sequencer, SequencerConfig, SequencerError};
    use ledger::store::Store;
    use std::future::Future;
    use std::task::Poll;

    let prepared = |value: &Value| prepare_bytes(value.to_string().as_bytes()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(tmp.path()).unwrap());
    let (clock, entered, release) = gated_clock();
    let config = SequencerConfig {
        clock,
        ..SequencerConfig::default()
    };
    let (sequencer, writer) = Sequencer::start(store, crate::common::test_key(), config).unwrap();
    let first = {
        let s = sequencer.clone();
        tokio::spawn(async move { s.append("gw", vec![prepared(&event(1))]).await })
    };
    // The writer holds the first job inside the clock; the next three queue behind it and are
    // taken together as one batch.
    writer_entered(entered).await;
    let mut changed = event(7);
    changed["reason"] = json!("edited");
    let mut a = Box::pin(sequencer.append("gw", vec![prepared(&event(7))]));
    let mut b = Box::pin(sequencer.append("gw", vec![prepared(&event(8)), prepared(&event(7))]));
    let mut c = Box::pin(sequencer.append("gw", vec![prepared(&changed)]));
    // One poll each queues the job (in this order) and leaves it waiting for its commit.
    std::future::poll_fn(|cx| {
        for f in [a.as_mut(), b.as_mut(), c.as_mut()] {
            let _ = f.poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap()[0].index, 0);
    let (a, b, c) = tokio::join!(a, b, c);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a[0].index, a[0].duplicate), (1, false));
    assert_eq!((b[0].index, b[0].duplicate), (2, false));
    assert_eq!((b[1].index, b[1].duplicate), (1, true));
    assert_eq!(b[1].leaf_hash, a[0].leaf_hash);
    let err = c.unwrap_err();
    assert!(
        matches!(&err, SequencerError::Conflict { item: 0, event_id } if event_id == "evt-7"),
        "{err}"
    );
    assert_eq!(
        sequencer.latest().size,
        3,
        "the conflicting job appended nothing"
    );
    drop(sequencer);
    writer.join();
}

/// A commit in flight: the batch the writer builds meanwhile finds the in-flight events by their
/// ids before the store has them. A repeat is answered as a duplicate of that commit (proven
/// against its checkpoint), another body as a conflict, and neither is appended again. (The
/// repeat is the first job queued, so the batch the clock reports holds it, whichever jobs the
/// writer has taken by then; the conflict may be found in flight or, later, in the store.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_built_while_a_commit_is_in_flight_checks_ids_against_it() {
    use ledger::core::event::prepare_bytes;
    use ledger::sequencer::{Clock, CommitHook, Sequencer, SequencerConfig, SequencerError};
    use ledger::store::Store;
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::task::Poll;

    let prepared = |value: &Value| prepare_bytes(value.to_string().as_bytes()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path()).unwrap());
    // The commit of tree size 1 is held until released; the clock says when the writer builds a
    // batch meanwhile (after its idempotency lookup in the store).
    let held = Arc::new(AtomicBool::new(false));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (held_tx, held_rx) = mpsc::channel();
    let gate = Mutex::new(Some((held_tx, release_rx)));
    let flag = held.clone();
    let before_commit: CommitHook = Arc::new(move |size| {
        if size == 1
            && let Some((held_tx, release)) = gate.lock().unwrap().take()
        {
            flag.store(true, Ordering::SeqCst);
            held_tx.send(()).unwrap();
            release.recv().unwrap();
        }
    });
    let (building_tx, building_rx) = mpsc::channel();
    let building_tx = Mutex::new(building_tx);
    let clock: Clock = Arc::new(move || {
        if held.load(Ordering::SeqCst) {
            let _ = building_tx.lock().unwrap().send(());
        }
        1_795_251_960_000_000
    });
    let config = SequencerConfig {
        clock,
        before_commit: Some(before_commit),
        // Every batch is built at once, however small, while the commit is in flight.
        pipeline_min_events: 1,
        ..SequencerConfig::default()
    };
    let (sequencer, writer) = Sequencer::start(store, crate::common::test_key(), config).unwrap();
    let first = {
        let s = sequencer.clone();
        tokio::spawn(async move { s.append("gw", vec![prepared(&event(1))]).await })
    };
    let wait = |rx: mpsc::Receiver<()>| {
        tokio::task::spawn_blocking(move || {
            rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap()
        })
    };
    wait(held_rx).await.unwrap();
    let mut changed = event(1);
    changed["reason"] = json!("edited");
    let mut same = Box::pin(sequencer.append("gw", vec![prepared(&event(1))]));
    let mut other = Box::pin(sequencer.append("gw", vec![prepared(&changed)]));
    let mut new = Box::pin(sequencer.append("gw", vec![prepared(&event(2))]));
    std::future::poll_fn(|cx| {
        for f in [same.as_mut(), other.as_mut(), new.as_mut()] {
            let _ = f.poll(cx);
        }
        Poll::Ready(())
    })
    .await;
    wait(building_rx).await.unwrap();
    release_tx.send(()).unwrap();

    let first = first.await.unwrap().unwrap();
    let (same, other, new) = tokio::join!(same, other, new);
    let (same, new) = (same.unwrap(), new.unwrap());
    assert_eq!((first[0].index, first[0].duplicate), (0, false));
    assert_eq!((same[0].index, same[0].duplicate), (0, true));
    assert_eq!(same[0].leaf_hash, first[0].leaf_hash);
    assert_eq!(
        same[0].checkpoint.size, 1,
        "proven against the commit that appended it"
    );
    verify_inclusion::<Blake3>(
        0,
        1,
        &same[0].leaf_hash,
        &same[0].proof,
        &same[0].checkpoint.root,
    )
    .unwrap();
    let err = other.unwrap_err();
    assert!(
        matches!(&err, SequencerError::Conflict { item: 0, event_id } if event_id == "evt-1"),
        "{err}"
    );
    assert_eq!((new[0].index, new[0].duplicate), (1, false));
    assert_eq!(sequencer.latest().size, 2, "appended once each");
    drop(sequencer);
    writer.join();
}

/// A committer that panics (a bug) stops the sequencer instead of leaving the writer waiting for
/// it: later appends are refused at once, and the writer thread can be joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_committer_stops_the_sequencer_without_a_hang() {
    use ledger::core::event::prepare_bytes;
    use ledger::sequencer::{CommitHook, Sequencer, SequencerConfig, SequencerError};
    use ledger::store::Store;
    use std::sync::Arc;

    let prepared = |value: &Value| prepare_bytes(value.to_string().as_bytes()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tmp.path()).unwrap());
    let before_commit: CommitHook = Arc::new(|_| panic!("a bug in the committer"));
    let config = SequencerConfig {
        before_commit: Some(before_commit),
        // Two events go to the committer thread; one waits for it (and is then written by the
        // writer itself).
        pipeline_min_events: 2,
        ..SequencerConfig::default()
    };
    let (sequencer, writer) = Sequencer::start(store, crate::common::test_key(), config).unwrap();
    // Its answer channel is dropped with the panic: no receipt, so no durability claim.
    let first = sequencer
        .append("gw", vec![prepared(&event(1)), prepared(&event(3))])
        .await;
    assert!(first.is_err());
    // A small batch waits for the commit in flight; the committer is gone, so it is refused.
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sequencer.append("gw", vec![prepared(&event(2))]),
    )
    .await
    .expect("refused at once, not left waiting for the committer");
    assert!(
        matches!(&second, Err(SequencerError::CommitFailed(why)) if why.contains("panicked")),
        "{:?}",
        second.map(|r| r.len())
    );
    assert!(!sequencer.is_accepting());
    drop(sequencer);
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        writer.join();
        joined_tx.send(()).unwrap();
    });
    tokio::task::spawn_blocking(move || {
        joined_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the writer thread ends")
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_receipts_prove_every_event_against_one_checkpoint() {
    let server = TestServer::start().await;
    let (_, first) = server.post_json(&json!([event(1), event(2)])).await;
    let original = receipts(&first);
    let batch = "/v1/events?receipts=batch";
    let body = json!([event(3), event(2), event(4), event(3), event(5)]).to_string();
    let (status, answer) = server.post_to(batch, "application/json", body).await;
    assert_eq!(status, 200, "{answer}");
    let receipt: BatchReceipt = serde_json::from_value(answer.clone()).unwrap();
    let listed: Vec<_> = receipt
        .entries
        .iter()
        .map(|e| (e.event_id.as_str(), e.index, e.duplicate))
        .collect();
    // New events take the next indexes in request order; a repeat inside the request and a
    // duplicate of an earlier commit keep their index.
    assert_eq!(
        listed,
        [
            ("evt-3", 2, false),
            ("evt-2", 1, true),
            ("evt-4", 3, false),
            ("evt-3", 2, true),
            ("evt-5", 4, false),
        ]
    );
    assert_eq!(receipt.entries[1].leaf_hash, original[1].leaf_hash);
    assert_eq!(receipt.tree_size, 5);
    // One checkpoint, one multi-proof of indexes 1..=4, checked with the stored leaves.
    let mut leaves = Vec::new();
    for e in &receipt.entries {
        let (status, text) = server.get_text(&format!("/v1/entries/{}", e.index)).await;
        assert_eq!(status, 200);
        leaves.push(text.into_bytes());
    }
    let leaf_refs: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();
    let checkpoint = verify_batch_receipt(&receipt, &verifier(), Some(&leaf_refs)).unwrap();
    assert_eq!(checkpoint.size, 5);
    assert!(receipt.multi_proof.len() <= 3, "{:?}", receipt.multi_proof);

    // Anything changed fails: a leaf hash, an index, a proof hash, a dropped or added hash, a
    // leaf, and one index claimed with two leaf hashes.
    let mut tampered = Vec::new();
    let mut t = receipt.clone();
    t.entries[2].leaf_hash = original[0].leaf_hash.clone();
    tampered.push(t);
    let mut t = receipt.clone();
    t.entries[4].index = 0;
    tampered.push(t);
    let mut t = receipt.clone();
    t.multi_proof[0] = original[1].leaf_hash.clone();
    tampered.push(t);
    let mut t = receipt.clone();
    t.multi_proof.pop();
    tampered.push(t);
    let mut t = receipt.clone();
    t.multi_proof.push(original[0].leaf_hash.clone());
    tampered.push(t);
    let mut t = receipt.clone();
    t.entries[3].leaf_hash = t.entries[2].leaf_hash.clone();
    tampered.push(t);
    for t in &tampered {
        assert!(verify_batch_receipt(t, &verifier(), None).is_err(), "{t:?}");
    }
    let mut swapped = leaf_refs.clone();
    swapped.swap(0, 2);
    assert!(verify_batch_receipt(&receipt, &verifier(), Some(&swapped)).is_err());

    // `each` is the default form; any other value is a 400 that appends nothing.
    let (status, each) = server
        .post_to(
            "/v1/events?receipts=each",
            "application/json",
            event(6).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    verify_receipt(&receipts(&each)[0], &verifier(), None).unwrap();
    for query in ["?receipts=compact", "?receipts=", "?receipt=batch"] {
        let path = format!("/v1/events{query}");
        let (status, body) = server
            .post_to(&path, "application/json", event(7).to_string())
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("receipt"),
            "{body}"
        );
    }
    assert_eq!(server.tree_size().await, 6);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_get_distinct_contiguous_indexes() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let s = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..10 {
                let (status, body) = s.post_json(&event(t * 100 + i)).await;
                assert_eq!(status, 200, "{body}");
                got.push(receipts(&body)[0].clone());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let key = verifier();
    for r in &all {
        verify_receipt(r, &key, None).unwrap();
    }
    let mut indexes: Vec<u64> = all.iter().map(|r| r.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..160).collect::<Vec<_>>());
    assert_eq!(server.tree_size().await, 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_item_fails_the_whole_request() {
    let server = TestServer::start().await;
    let mut bad = event(2);
    bad["actor"]["kind"] = json!("robot");
    let (status, body) = server.post_json(&json!([event(1), bad, event(3)])).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["item"], json!(1));
    assert_eq!(body["details"][0]["path"], json!("/actor/kind"));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was appended")
    );
    let ndjson = format!("{}\nnot json\n", event(1));
    let (status, body) = server.post("application/x-ndjson", ndjson).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["line"], json!(2));
    assert_eq!(server.tree_size().await, 0);
    // The same events, corrected, go in.
    let (status, _) = server
        .post_json(&json!([event(1), event(2), event(3)]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.tree_size().await, 3);
}

/// Who a malformed request claims to be.
#[derive(Clone)]
enum Auth {
    /// The server's source token.
    Source,
    /// No `Authorization` header.
    Nothing,
    /// `Bearer <token>`.
    Bearer(String),
    /// The header's whole value.
    Raw(String),
    /// The header's whole value, not necessarily UTF-8.
    Bytes(&'static [u8]),
}

/// One malformed request and what it must get: the status and a fragment of the JSON error.
struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    content_type: Option<&'static str>,
    auth: Auth,
    body: Vec<u8>,
    status: u16,
    fragment: &'static str,
}

/// `POST /v1/events` with `body` as JSON, by the source.
fn post(name: &'static str, body: impl Into<Vec<u8>>, status: u16, fragment: &'static str) -> Case {
    Case {
        name,
        method: reqwest::Method::POST,
        path: "/v1/events".into(),
        content_type: Some("application/json"),
        auth: Auth::Source,
        body: body.into(),
        status,
        fragment,
    }
}

/// `GET path` by the source.
fn get(name: &'static str, path: impl Into<String>, status: u16, fragment: &'static str) -> Case {
    Case {
        method: reqwest::Method::GET,
        path: path.into(),
        content_type: None,
        body: Vec::new(),
        ..post(name, Vec::new(), status, fragment)
    }
}

impl Case {
    fn content_type(self, content_type: Option<&'static str>) -> Self {
        Self {
            content_type,
            ..self
        }
    }

    fn auth(self, auth: Auth) -> Self {
        Self { auth, ..self }
    }

    fn to(self, method: reqwest::Method, path: &str) -> Self {
        Self {
            method,
            path: path.into(),
            ..self
        }
    }
}

/// The hostile-input matrix: every row gets its 4xx with a JSON error naming the problem, and
/// the log is exactly as before (same tree size, same checkpoint bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_matrix_gets_clear_4xx_and_appends_nothing() {
    use ledger::http::Limits;
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        max_request_events: 50,
        ..Limits::default()
    };
    let (server, auditor, admin) = TestServer::start_with_roles(limits).await;
    let token = server.token.clone();
    // A revoked source token, and a log that is not empty.
    let r = server
        .client
        .post(format!("{}/v1/admin/credentials", server.base))
        .bearer_auth(&admin)
        .json(&json!({"role": "source", "name": "old-ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let revoked = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = server
        .client
        .delete(format!(
            "{}/v1/admin/credentials/source/old-ci",
            server.base
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = server
        .post_json(&json!([event(100), event(101), event(102)]))
        .await;
    assert_eq!(status, 200);
    let (_, checkpoint_before) = server.get_text("/v1/checkpoint").await;
    let size_before = server.tree_size().await;
    assert_eq!(size_before, 3);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut e = event(1);
        f(&mut e);
        e.to_string().into_bytes()
    };
    let nested =
        |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
    let ndjson = Some("application/x-ndjson");
    let forged = format!("{}x", &token[..token.len() - 1]);
    let bearer = |t: &str| Auth::Bearer(t.to_owned());
    let cases: Vec<Case> = vec![
        // The event against the schema.
        post(
            "wrong type",
            with(&|e| e["emergency"] = json!("yes")),
            400,
            "/emergency",
        ),
        post(
            "number as id",
            with(&|e| e["event_id"] = json!(5)),
            400,
            "/event_id",
        ),
        post(
            "missing field",
            with(&|e| {
                e.as_object_mut().unwrap().remove("actor");
            }),
            400,
            "actor",
        ),
        post(
            "unknown type",
            with(&|e| e["type"] = json!("approval.maybe")),
            400,
            "/type",
        ),
        post(
            "unknown top-level field",
            with(&|e| e["extra"] = json!(1)),
            400,
            "extra",
        ),
        post(
            "unknown nested field",
            with(&|e| e["actor"]["x"] = json!(1)),
            400,
            "/actor",
        ),
        post(
            "bad timestamp",
            with(&|e| e["occurred_at"] = json!("yesterday")),
            400,
            "/occurred_at",
        ),
        post(
            "impossible date",
            with(&|e| e["occurred_at"] = json!("2026-02-30T10:00:00Z")),
            400,
            "/occurred_at",
        ),
        post(
            "timestamp without zone",
            with(&|e| e["occurred_at"] = json!("2026-11-21T10:00:00")),
            400,
            "/occurred_at",
        ),
        post(
            "approved without reviewer",
            with(&|e| e["type"] = json!("approval.approved")),
            400,
            "reviewer",
        ),
        post(
            "empty event_id",
            with(&|e| e["event_id"] = json!("")),
            400,
            "/event_id",
        ),
        post(
            "huge event_id",
            with(&|e| e["event_id"] = json!("e".repeat(300))),
            400,
            "/event_id",
        ),
        post(
            "huge string",
            with(&|e| e["reason"] = json!("x".repeat(5000))),
            400,
            "/reason",
        ),
        post(
            "huge label key",
            with(&|e| e["labels"] = json!({"k".repeat(200): "v"})),
            400,
            "/labels",
        ),
        post(
            "too many labels",
            with(&|e| {
                e["labels"] = (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
            }),
            400,
            "/labels",
        ),
        post(
            "huge context",
            with(&|e| e["context"] = json!({"p": "x".repeat(20_000)})),
            400,
            "/context",
        ),
        post(
            "wrong type in array",
            with(&|e| e["reviewer"] = json!([])),
            400,
            "/reviewer",
        ),
        // JSON the strict parser refuses.
        post(
            "deep context",
            format!(r#"{{"context":{}}}"#, nested("[", "]", 40)),
            400,
            "nested",
        ),
        post("deep top level", nested("[", "]", 40), 400, "nested"),
        post("deep objects", nested("{\"a\":", "}", 40), 400, "nested"),
        post("malformed JSON", "{\"event_id\": ", 400, "invalid JSON"),
        post(
            "trailing garbage",
            [with(&|_| {}), b"}".to_vec()].concat(),
            400,
            "invalid JSON",
        ),
        post(
            "two values",
            [with(&|_| {}), with(&|_| {})].concat(),
            400,
            "invalid JSON",
        ),
        post(
            "invalid UTF-8",
            b"{\"event_id\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid JSON",
        ),
        post(
            "UTF-8 BOM",
            [b"\xef\xbb\xbf".to_vec(), with(&|_| {})].concat(),
            400,
            "invalid JSON",
        ),
        post(
            "UTF-16 body",
            "{\"a\":1}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
            400,
            "invalid JSON",
        ),
        post(
            "NUL in string",
            with(&|e| e["reason"] = json!("a\u{0}b")),
            400,
            "NUL",
        ),
        post(
            "NUL in key",
            with(&|e| e["context"] = json!({"a\u{0}": 1})),
            400,
            "NUL",
        ),
        post(
            "raw NUL byte",
            b"{\"event_id\":\"a\0b\"}".to_vec(),
            400,
            "invalid JSON",
        ),
        post(
            "duplicate key",
            r#"{"event_id":"a","event_id":"b"}"#,
            400,
            "duplicate",
        ),
        post(
            "duplicate nested key",
            r#"{"actor":{"id":"a","kind":"agent","id":"b"}}"#,
            400,
            "duplicate",
        ),
        post(
            "number beyond 2^53",
            with(&|e| e["context"] = json!({"n": 9007199254740993u64})),
            400,
            "2^53",
        ),
        post(
            "number below -2^53",
            r#"{"context":{"n":-9007199254740993}}"#,
            400,
            "2^53",
        ),
        post(
            "number beyond 2^64",
            r#"{"context":{"n":18446744073709551616}}"#,
            400,
            "2^53",
        ),
        post(
            "huge exponent",
            r#"{"context":{"n":1e400}}"#,
            400,
            "invalid JSON",
        ),
        post("scalar body", "42", 400, "object"),
        post(
            "array of a scalar",
            [b"[".to_vec(), with(&|_| {}), b",5]".to_vec()].concat(),
            400,
            "object",
        ),
        post(
            "nested array",
            [b"[[".to_vec(), with(&|_| {}), b"]]".to_vec()].concat(),
            400,
            "object",
        ),
        post("empty array", "[]", 400, "no events"),
        post("empty body", "", 400, "invalid JSON"),
        // NDJSON.
        post(
            "NDJSON bad line",
            format!("{}\nnot json\n", event(1)),
            400,
            "line 2",
        )
        .content_type(ndjson),
        post("NDJSON invalid UTF-8", b"\xff\n".to_vec(), 400, "line 1").content_type(ndjson),
        post(
            "NDJSON array line",
            format!("[{}]\n", event(1)),
            400,
            "object",
        )
        .content_type(ndjson),
        post("NDJSON blank lines only", "\n\r\n  \n", 400, "no events").content_type(ndjson),
        // Sizes.
        post("oversized body", vec![b' '; 70 * 1024], 413, "bytes"),
        post(
            "too many events",
            serde_json::to_vec(&(0..51).map(event).collect::<Vec<_>>()).unwrap(),
            413,
            "events",
        ),
        // Content types.
        post("text/plain", with(&|_| {}), 415, "content type").content_type(Some("text/plain")),
        post("no content type", with(&|_| {}), 415, "content type").content_type(None),
        post("XML", with(&|_| {}), 415, "content type").content_type(Some("application/xml")),
        post("form", with(&|_| {}), 415, "content type")
            .content_type(Some("application/x-www-form-urlencoded")),
        post("JSON look-alike", with(&|_| {}), 415, "content type")
            .content_type(Some("application/json-seq")),
        // Tokens: missing, unknown, forged, another role's, revoked, overlong.
        post("no token", with(&|_| {}), 401, "token").auth(Auth::Nothing),
        post("wrong token", with(&|_| {}), 401, "token").auth(bearer("ldg_0000000000000000_AAAA")),
        post("forged secret", with(&|_| {}), 401, "token").auth(bearer(&forged)),
        post("basic auth", with(&|_| {}), 401, "token")
            .auth(Auth::Raw("Basic Zm9vOmJhcg==".into())),
        post("empty bearer", with(&|_| {}), 401, "token").auth(Auth::Raw("Bearer ".into())),
        post("two tokens", with(&|_| {}), 401, "token")
            .auth(Auth::Raw(format!("Bearer {token} {token}"))),
        post("token not UTF-8", with(&|_| {}), 401, "token")
            .auth(Auth::Bytes(b"Bearer ldg_\xff\xfe")),
        post("overlong token", with(&|_| {}), 401, "token").auth(bearer(&"A".repeat(16 * 1024))),
        post("revoked token", with(&|_| {}), 401, "token").auth(bearer(&revoked)),
        post("auditor token", with(&|_| {}), 403, "role").auth(bearer(&auditor)),
        post("admin token", with(&|_| {}), 403, "role").auth(bearer(&admin)),
        // Routes and methods.
        post("wrong method", with(&|_| {}), 405, "method").to(reqwest::Method::PUT, "/v1/events"),
        post("no such route", with(&|_| {}), 404, "no such route")
            .to(reqwest::Method::POST, "/v1/event"),
        // Reads with bad parameters.
        get("entry not a number", "/v1/entries/abc", 400, "index"),
        get("negative entry", "/v1/entries/-1", 400, "index"),
        get(
            "entry beyond u64",
            "/v1/entries/18446744073709551616",
            400,
            "index",
        ),
        get("entry not UTF-8", "/v1/entries/%FF", 400, "index"),
        get("entry beyond the head", "/v1/entries/99", 404, "no entry"),
        get("entry without token", "/v1/entries/0", 401, "token").auth(Auth::Nothing),
        get("entry with admin token", "/v1/entries/0", 403, "role").auth(bearer(&admin)),
        get(
            "inclusion beyond head",
            "/v1/proofs/inclusion?index=0&tree_size=99",
            400,
            "tree_size",
        ),
        get(
            "inclusion index not a number",
            "/v1/proofs/inclusion?index=x",
            400,
            "index",
        ),
        get(
            "inclusion without index",
            "/v1/proofs/inclusion",
            400,
            "index",
        ),
        get(
            "inclusion index twice",
            "/v1/proofs/inclusion?index=0&index=1",
            400,
            "index",
        ),
        get(
            "inclusion index as float",
            "/v1/proofs/inclusion?index=1e3",
            400,
            "index",
        ),
        get(
            "inclusion index past size",
            "/v1/proofs/inclusion?index=3&tree_size=3",
            400,
            "index",
        ),
        get(
            "consistency from 0",
            "/v1/proofs/consistency?from=0&to=0",
            400,
            "from",
        ),
        get(
            "consistency backwards",
            "/v1/proofs/consistency?from=3&to=2",
            400,
            "from",
        ),
        get(
            "consistency not UTF-8",
            "/v1/proofs/consistency?from=%FF",
            400,
            "from",
        ),
        get("request id NUL", "/v1/requests/%00", 400, "request_id"),
        get(
            "request id too long",
            format!("/v1/requests/{}", "r".repeat(300)),
            400,
            "request_id",
        ),
        get("unknown request", "/v1/requests/nope", 404, "nope"),
        get(
            "locate not a number",
            "/v1/export/locate?micros=abc&tree_size=0",
            400,
            "micros",
        )
        .auth(bearer(&auditor)),
        get(
            "locate by a source",
            "/v1/export/locate?micros=0&tree_size=0",
            403,
            "role",
        ),
        get(
            "rows backwards",
            "/v1/export/rows?start=2&end=1&tree_size=3",
            400,
            "start",
        )
        .auth(bearer(&auditor)),
        get(
            "rows too many",
            "/v1/export/rows?start=0&end=20000&tree_size=3",
            400,
            "rows",
        )
        .auth(bearer(&auditor)),
        get(
            "context not a number",
            "/v1/export/context?request_id=r&before=x",
            400,
            "before",
        )
        .auth(bearer(&auditor)),
        get(
            "unknown role",
            "/v1/admin/credentials?role=root",
            400,
            "role",
        )
        .auth(bearer(&admin)),
        get(
            "credentials by an auditor",
            "/v1/admin/credentials",
            403,
            "role",
        )
        .auth(bearer(&auditor)),
        // Other writes.
        post(
            "credential name",
            r#"{"role":"source","name":"Bad Name"}"#,
            400,
            "name",
        )
        .to(reqwest::Method::POST, "/v1/admin/credentials")
        .auth(bearer(&admin)),
        post(
            "credential extra field",
            r#"{"role":"source","name":"x","x":1}"#,
            400,
            "unknown field",
        )
        .to(reqwest::Method::POST, "/v1/admin/credentials")
        .auth(bearer(&admin)),
        post("credential not JSON", "[", 400, "invalid admin request")
            .to(reqwest::Method::POST, "/v1/admin/credentials")
            .auth(bearer(&admin)),
        post("revoke unknown role", "", 400, "role")
            .to(reqwest::Method::DELETE, "/v1/admin/credentials/root/x")
            .auth(bearer(&admin)),
        post("manifest garbage", r#"{"format":1}"#, 400, "manifest")
            .to(reqwest::Method::POST, "/v1/export/manifest-signature")
            .auth(bearer(&auditor)),
        post("origin key not a key", r#"{"key":"nope"}"#, 400, "key")
            .to(
                reqwest::Method::POST,
                "/v1/admin/credentials/source/ci-runner/origin-keys",
            )
            .auth(bearer(&admin)),
        get("source keys by an admin", "/v1/source-keys", 403, "role").auth(bearer(&admin)),
        post("manifest by a source", "{}", 403, "role")
            .to(reqwest::Method::POST, "/v1/export/manifest-signature"),
    ];
    let names: std::collections::BTreeSet<_> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    assert!(cases.len() >= 50);
    for case in cases {
        let name = case.name;
        let mut req = server
            .client
            .request(case.method, format!("{}{}", server.base, case.path))
            .body(case.body);
        if let Some(content_type) = case.content_type {
            req = req.header("content-type", content_type);
        }
        req = match case.auth {
            Auth::Source => req.bearer_auth(&token),
            Auth::Nothing => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Raw(value) => req.header("authorization", value),
            Auth::Bytes(value) => req.header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            ),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        assert_eq!(
            r.headers().get("content-type").map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{name}"
        );
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: error body is not JSON: {e}"));
        assert_eq!(status, case.status, "{name}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()) && body["details"].is_array(),
            "{name}: {body}"
        );
        assert!(
            body.to_string().contains(case.fragment),
            "{name}: {:?} not in {body}",
            case.fragment
        );
    }
    assert_eq!(
        server.tree_size().await,
        size_before,
        "nothing was appended"
    );
    let (_, checkpoint_after) = server.get_text("/v1/checkpoint").await;
    assert_eq!(checkpoint_after, checkpoint_before, "no new checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_appends_nothing_of_it() {
    use ledger::http::Limits;
    use ledger::sequencer::SequencerConfig;
    let (clock, entered, release) = gated_clock();
    let sequencer = SequencerConfig {
        max_batch_events: 8,
        max_queued_events: 1,
        clock,
        ..SequencerConfig::default()
    };
    let limits = Limits {
        max_request_events: 1,
        ..Limits::default()
    };
    let server = std::sync::Arc::new(TestServer::start_with(limits, sequencer).await);
    let first = {
        let s = server.clone();
        tokio::spawn(async move { s.post_json(&event(1)).await })
    };
    // The writer now holds the first request (and its queue permit) inside the clock.
    writer_entered(entered).await;
    let r = server
        .client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&server.token)
        .json(&event(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("capacity"),
        "{body}"
    );
    release.send(()).unwrap();
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.tree_size().await,
        1,
        "only the first request was appended"
    );
    let (status, _) = server.post_json(&event(2)).await;
    assert_eq!(status, 200, "accepted once the queue drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_at_never_decreases_when_the_clock_steps_back() {
    use ledger::http::Limits;
    use ledger::sequencer::SequencerConfig;
    use std::sync::atomic::{AtomicI64, Ordering};
    // Each read is one second earlier than the last.
    let now = std::sync::Arc::new(AtomicI64::new(1_795_251_960_000_000));
    let clock = {
        let now = now.clone();
        std::sync::Arc::new(move || now.fetch_sub(1_000_000, Ordering::SeqCst))
    };
    let sequencer = SequencerConfig {
        clock,
        ..SequencerConfig::default()
    };
    let server = TestServer::start_with(Limits::default(), sequencer).await;
    for i in 0..4 {
        assert_eq!(server.post_json(&event(i)).await.0, 200);
    }
    let mut times = Vec::new();
    for i in 0..4 {
        let (_, leaf) = server.get_text(&format!("/v1/entries/{i}")).await;
        times.push(Leaf::parse(leaf.as_bytes()).unwrap().ingested_at.to_owned());
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(times[0], "2026-11-21T09:06:00.000000Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_time_limit_gets_a_json_408() {
    use ledger::http::Limits;
    use ledger::sequencer::SequencerConfig;
    let (clock, entered, release) = gated_clock();
    let sequencer = SequencerConfig {
        clock,
        ..SequencerConfig::default()
    };
    let limits = Limits {
        request_timeout: std::time::Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, sequencer).await;
    let (status, body) = server.post_json(&event(1)).await;
    assert_eq!(status, 408, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("time limit"),
        "{body}"
    );
    assert!(body["details"].is_array());
    // The writer held the event all along; once released it commits, and a retry gets the
    // original receipt.
    entered
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    release.send(()).unwrap();
    let (status, body) = server.post_json(&event(1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receipts"][0]["duplicate"], json!(true));
}

/// A client that goes away mid-request gets nothing appended, even though every byte it did send
/// belongs to whole, valid events: the body is shorter than its `Content-Length`, or a chunked
/// body never gets its last chunk. The same events posted whole afterwards append normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_request_appends_nothing() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    enum Leave {
        /// Shut down the write side, then read until the server closes: by then the body can
        /// no longer complete, so the handler has failed or been dropped before its append.
        HalfClose,
        /// Reset the connection (`SO_LINGER` 0) at once.
        Reset,
    }
    let server = TestServer::start().await;
    assert_eq!(server.post_json(&event(0)).await.0, 200);
    let before = server.tree_size().await;
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let array = json!([event(1), event(2)]).to_string();
    let ndjson = format!("{}\n{}\n", event(3), event(4));
    let head = |content_type: &str, framing: String| {
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\n{framing}\r\n",
            server.token
        )
    };
    let short = head(
        "application/json",
        format!("Content-Length: {}\r\n", array.len() + 100),
    ) + &array;
    let unfinished = head(
        "application/x-ndjson",
        "Transfer-Encoding: chunked\r\n".into(),
    ) + &format!("{:x}\r\n{ndjson}\r\n", ndjson.len());
    for (what, request, leave) in [
        ("short body, half close", &short, Leave::HalfClose),
        (
            "unfinished chunked body, half close",
            &unfinished,
            Leave::HalfClose,
        ),
        ("short body, reset", &short, Leave::Reset),
        ("unfinished chunked body, reset", &unfinished, Leave::Reset),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        match leave {
            Leave::HalfClose => {
                stream.shutdown().await.unwrap();
                let mut answer = Vec::new();
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
                    .await
                    .unwrap_or_else(|_| panic!("{what}: the server never closed"))
                    .unwrap();
                let answer = String::from_utf8_lossy(&answer);
                assert!(!answer.starts_with("HTTP/1.1 2"), "{what}: {answer}");
                assert_eq!(server.tree_size().await, before, "{what}");
            }
            Leave::Reset => {
                stream.set_zero_linger().unwrap();
                drop(stream);
            }
        }
    }
    // Posted whole, the same events are new: had a cut-off request appended them before, these
    // would be duplicates (and one appended later would be a duplicate of these, adding nothing).
    let (status, first) = server.post_json(&json!([event(1), event(2)])).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = server.post("application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{second}");
    let got: Vec<(u64, bool)> = receipts(&first)
        .into_iter()
        .chain(receipts(&second))
        .map(|r| (r.index, r.duplicate))
        .collect();
    let want: Vec<(u64, bool)> = (before..before + 4).map(|i| (i, false)).collect();
    assert_eq!(got, want);
    assert_eq!(server.tree_size().await, before + 4);
}
