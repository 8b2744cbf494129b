//! The HTTP API end to end, in process: receipts checked with the project's own verifier,
//! idempotency, all-or-nothing requests, and the bad-input matrix.

use ledger::core::hash::{Blake3, from_hex};
use ledger::core::leaf::Leaf;
use ledger::core::merkle::{verify_consistency, verify_inclusion};
use ledger::core::note::open_checkpoint;
use ledger::core::receipt::{Receipt, verify_receipt};
use serde_json::{Value, json};

use crate::common::{TestServer, event, gated_clock, verifier};

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
        assert_eq!(parsed.event["event_id"], json!(format!("evt-{i}")));
    }
    // The chain: each leaf names its predecessor's leaf hash.
    for pair in all.windows(2) {
        let (_, leaf) = server
            .get_text(&format!("/v1/entries/{}", pair[1].index))
            .await;
        assert_eq!(
            Leaf::parse(leaf.as_bytes()).unwrap().prev_leaf_hash,
            pair[0].leaf_hash
        );
    }
    let (_, first) = server.get_text("/v1/entries/0").await;
    assert_eq!(
        Leaf::parse(first.as_bytes()).unwrap().prev_leaf_hash,
        "0".repeat(64)
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

/// Each row: what is sent, the status wanted, and a fragment the error or a detail path must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_matrix_gets_clear_4xx_and_appends_nothing() {
    use ledger::http::Limits;
    use ledger::sequencer::SequencerConfig;
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        max_request_events: 50,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, SequencerConfig::default()).await;
    let token = server.token.clone();

    let with = |f: &dyn Fn(&mut Value)| {
        let mut e = event(1);
        f(&mut e);
        e.to_string().into_bytes()
    };
    let json = "application/json";
    let forged = format!("{}x", &token[..token.len() - 1]);
    // (name, body, content type, auth override, wanted status, fragment of the error)
    type Case<'a> = (&'a str, Vec<u8>, &'a str, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong type",
            with(&|e| e["emergency"] = json!("yes")),
            json,
            None,
            400,
            "/emergency",
        ),
        (
            "number as id",
            with(&|e| e["event_id"] = json!(5)),
            json,
            None,
            400,
            "/event_id",
        ),
        (
            "missing field",
            with(&|e| {
                e.as_object_mut().unwrap().remove("actor");
            }),
            json,
            None,
            400,
            "actor",
        ),
        (
            "unknown type",
            with(&|e| e["type"] = json!("approval.maybe")),
            json,
            None,
            400,
            "/type",
        ),
        (
            "unknown top-level field",
            with(&|e| e["extra"] = json!(1)),
            json,
            None,
            400,
            "extra",
        ),
        (
            "bad timestamp",
            with(&|e| e["occurred_at"] = json!("yesterday")),
            json,
            None,
            400,
            "/occurred_at",
        ),
        (
            "impossible date",
            with(&|e| e["occurred_at"] = json!("2026-02-30T10:00:00Z")),
            json,
            None,
            400,
            "/occurred_at",
        ),
        (
            "timestamp without zone",
            with(&|e| e["occurred_at"] = json!("2026-11-21T10:00:00")),
            json,
            None,
            400,
            "/occurred_at",
        ),
        (
            "approved without reviewer",
            with(&|e| e["type"] = json!("approval.approved")),
            json,
            None,
            400,
            "reviewer",
        ),
        (
            "empty event_id",
            with(&|e| e["event_id"] = json!("")),
            json,
            None,
            400,
            "/event_id",
        ),
        (
            "huge string",
            with(&|e| e["reason"] = json!("x".repeat(5000))),
            json,
            None,
            400,
            "/reason",
        ),
        (
            "huge context",
            with(&|e| e["context"] = json!({"p": "x".repeat(20_000)})),
            json,
            None,
            400,
            "/context",
        ),
        (
            "deep context",
            format!(r#"{{"context":{}1{}}}"#, "[".repeat(40), "]".repeat(40)).into_bytes(),
            json,
            None,
            400,
            "nested",
        ),
        (
            "malformed JSON",
            b"{\"event_id\": ".to_vec(),
            json,
            None,
            400,
            "invalid JSON",
        ),
        (
            "trailing garbage",
            [with(&|_| {}), b"}".to_vec()].concat(),
            json,
            None,
            400,
            "invalid JSON",
        ),
        (
            "invalid UTF-8",
            [b"{\"event_id\":\"\xff\xfe\"}".as_slice()].concat(),
            json,
            None,
            400,
            "invalid JSON",
        ),
        (
            "NUL in string",
            with(&|e| e["reason"] = json!("a\u{0}b")),
            json,
            None,
            400,
            "NUL",
        ),
        (
            "duplicate key",
            br#"{"event_id":"a","event_id":"b"}"#.to_vec(),
            json,
            None,
            400,
            "duplicate",
        ),
        (
            "number beyond 2^53",
            with(&|e| e["context"] = json!({"n": 9007199254740993u64})),
            json,
            None,
            400,
            "2^53",
        ),
        ("scalar body", b"42".to_vec(), json, None, 400, "object"),
        ("empty array", b"[]".to_vec(), json, None, 400, "no events"),
        ("empty body", Vec::new(), json, None, 400, "invalid JSON"),
        (
            "oversized body",
            vec![b' '; 70 * 1024],
            json,
            None,
            413,
            "bytes",
        ),
        (
            "too many events",
            serde_json::to_vec(&(0..51).map(event).collect::<Vec<_>>()).unwrap(),
            json,
            None,
            413,
            "events",
        ),
        (
            "text/plain",
            with(&|_| {}),
            "text/plain",
            None,
            415,
            "content type",
        ),
        (
            "no content type",
            with(&|_| {}),
            "",
            None,
            415,
            "content type",
        ),
        ("no token", with(&|_| {}), json, Some(""), 401, "token"),
        (
            "wrong token",
            with(&|_| {}),
            json,
            Some("ldg_0000000000000000_AAAA"),
            401,
            "token",
        ),
        (
            "forged secret",
            with(&|_| {}),
            json,
            Some(forged.as_str()),
            401,
            "token",
        ),
        (
            "basic auth",
            with(&|_| {}),
            json,
            Some("Basic Zm9vOmJhcg=="),
            401,
            "token",
        ),
    ];
    assert!(cases.len() >= 25);
    for (name, body, content_type, auth, want_status, fragment) in cases {
        let mut req = server
            .client
            .post(format!("{}/v1/events", server.base))
            .body(body);
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        req = match auth {
            None => req.bearer_auth(&token),
            Some("") => req,
            Some(a) if a.starts_with("Basic") => req.header("authorization", a),
            Some(t) => req.bearer_auth(t),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: error body is not JSON: {e}"));
        assert_eq!(status, want_status, "{name}: {body}");
        let text = body.to_string();
        assert!(
            body["error"].is_string() && body["details"].is_array(),
            "{name}: {body}"
        );
        assert!(
            text.contains(fragment),
            "{name}: {fragment:?} not in {body}"
        );
    }
    assert_eq!(
        server.tree_size().await,
        0,
        "no bad request appended anything"
    );

    // Read endpoints reject bad parameters cleanly too.
    for (path, want) in [
        ("/v1/entries/abc", 400),
        ("/v1/entries/0", 404),
        ("/v1/proofs/inclusion?index=0&tree_size=5", 400),
        ("/v1/proofs/inclusion?index=x", 400),
        ("/v1/proofs/consistency?from=0&to=0", 400),
        ("/v1/nope", 404),
    ] {
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}");
    }
    let r = server
        .client
        .get(format!("{}/v1/entries/0", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "entries need a token");
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
    tokio::task::spawn_blocking(move || {
        entered
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap()
    })
    .await
    .unwrap();
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
        times.push(Leaf::parse(leaf.as_bytes()).unwrap().ingested_at);
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
