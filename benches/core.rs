//! Criterion benchmarks of the pure core, with `Throughput` set so results read as elements/s:
//! event validation + JCS, leaf encoding and hashing, tree append, proofs, checkpoint signatures.
//!
//! Run: `cargo bench --bench core`.

use std::collections::HashMap;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ledger::core::event::{parse_strict, prepare, prepare_bytes, prepare_fast};
use ledger::core::hash::{Blake3, Hash, TreeHasher};
use ledger::core::jcs;
use ledger::core::leaf::{LeafHeader, encode_leaf, format_micros};
use ledger::core::merkle::{
    Frontier, NodeId, consistency_proof, inclusion_proof, verify_consistency, verify_inclusion,
};
use ledger::core::note::{SignerKey, checkpoint_body, open_checkpoint};
use ledger::core::projection::{Projection, parse_row_leaf};
use serde_json::json;

fn sample_event(n: u64) -> Vec<u8> {
    json!({
        "event_id": format!("evt-{n}"),
        "type": "approval.approved",
        "request_id": format!("req-{n}"),
        "occurred_at": "2026-11-21T10:00:00Z",
        "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
        "action": {"name": "export customers", "category": "data_export", "risk": "high"},
        "resource": {"id": "s3://bucket/customers", "environment": "prod"},
        "reviewer": {"id": "bob", "idp": "okta", "groups": ["security"]},
        "channel": "slack",
        "context": {"prompt": "export the customer table for the quarterly review", "model": "m-1"},
    })
    .to_string()
    .into_bytes()
}

/// The same event with its members in the order a client is likely to write them (not sorted).
fn unsorted_event() -> Vec<u8> {
    concat!(
        r#"{"event_id":"evt-1","type":"approval.approved","request_id":"req-1","#,
        r#""occurred_at":"2026-11-21T10:00:00Z","#,
        r#""actor":{"id":"agent-7","kind":"agent","on_behalf_of":"alice"},"#,
        r#""action":{"name":"export customers","category":"data_export","risk":"high"},"#,
        r#""resource":{"id":"s3://bucket/customers","environment":"prod"},"#,
        r#""reviewer":{"id":"bob","idp":"okta","groups":["security"]},"channel":"slack","#,
        r#""context":{"prompt":"export the customer table for the quarterly review","model":"m-1"}}"#
    )
    .as_bytes()
    .to_vec()
}

fn events(c: &mut Criterion) {
    let body = sample_event(1);
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate_jcs", |b| {
        b.iter(|| prepare_bytes(&body).unwrap())
    });
    g.bench_function("parse_strict", |b| b.iter(|| parse_strict(&body).unwrap()));
    // The ingest fast path (core::dom): one borrowed parse, validated in place; against the
    // Value path on the same bytes, sorted (as above) and in a client's order.
    g.bench_function("prepare_fast", |b| {
        b.iter(|| prepare_fast(&body, true, 1).unwrap())
    });
    let unsorted = unsorted_event();
    assert_eq!(
        prepare_fast(&unsorted, true, 1).unwrap()[0],
        prepare_bytes(&unsorted).unwrap()
    );
    g.bench_function("prepare_fast_unsorted", |b| {
        b.iter(|| prepare_fast(&unsorted, true, 1).unwrap())
    });
    g.bench_function("parse_validate_jcs_unsorted", |b| {
        b.iter(|| prepare_bytes(&unsorted).unwrap())
    });
    let json = parse_strict(&body).unwrap();
    g.bench_function("validate_and_jcs", |b| b.iter(|| prepare(&json).unwrap()));
    g.bench_function("jcs_serde_jcs", |b| {
        b.iter(|| serde_jcs::to_vec(json.value()).unwrap())
    });
    g.bench_function("jcs_core", |b| {
        b.iter(|| ledger::core::jcs::to_vec(json.value()))
    });
    let prepared = prepare_bytes(&body).unwrap();
    let at = format_micros(1_795_251_960_123_456).unwrap();
    g.bench_function("encode_leaf", |b| {
        b.iter(|| {
            encode_leaf(
                &LeafHeader {
                    index: 123_456,
                    ingested_at: &at,
                    source: "ci-runner",
                    prev_leaf_hash: &[7; 32],
                    origin_signature: None,
                },
                &prepared.jcs,
            )
        })
    });
    let leaf = encode_leaf(
        &LeafHeader {
            index: 123_456,
            ingested_at: &at,
            source: "ci-runner",
            prev_leaf_hash: &[7; 32],
            origin_signature: None,
        },
        &prepared.jcs,
    );
    g.throughput(Throughput::Bytes(leaf.len() as u64));
    g.bench_function("leaf_hash", |b| b.iter(|| Blake3::leaf(&leaf)));
    // What export and verify do per stored leaf: the one-pass canonical check and the projection
    // to bundle columns; and, as the baseline in the same run, the check it replaced (parse into
    // a JSON tree, write it back, compare).
    g.bench_function("leaf_parse_project", |b| {
        b.iter(|| Projection::of(&parse_row_leaf(&leaf).unwrap()).unwrap())
    });
    g.bench_function("leaf_reparse_tree_baseline", |b| {
        b.iter(|| {
            let tree: serde_json::Value = serde_json::from_slice(&leaf).unwrap();
            jcs::to_vec(&tree) == leaf
        })
    });
    g.finish();
}

fn tree(c: &mut Criterion) {
    const N: u64 = 1 << 16;
    let mut frontier = Frontier::<Blake3>::empty();
    let mut store: HashMap<NodeId, Hash> = HashMap::new();
    let mut out = Vec::new();
    for i in 0..N {
        out.clear();
        frontier.append(Blake3::leaf(&i.to_be_bytes()), &mut out);
        store.extend(out.iter().copied());
    }
    let root = frontier.root();
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("append_1024", |b| {
        b.iter_batched(
            || frontier.clone(),
            |mut f| {
                let mut out = Vec::with_capacity(2048);
                for i in 0..1024u64 {
                    f.append(Blake3::leaf(&i.to_be_bytes()), &mut out);
                }
                f.root()
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let index = 12_345;
    g.bench_function("inclusion_proof_64k", |b| {
        b.iter(|| inclusion_proof::<Blake3>(index, N, &store).unwrap())
    });
    let proof = inclusion_proof::<Blake3>(index, N, &store).unwrap();
    let leaf = Blake3::leaf(&index.to_be_bytes());
    g.bench_function("verify_inclusion_64k", |b| {
        b.iter(|| verify_inclusion::<Blake3>(index, N, &leaf, &proof, &root).unwrap())
    });
    let old = 40_000;
    let old_root = ledger::core::merkle::tree_hash::<Blake3>(old, &store).unwrap();
    g.bench_function("consistency_proof_64k", |b| {
        b.iter(|| consistency_proof::<Blake3>(old, N, &store).unwrap())
    });
    let cproof = consistency_proof::<Blake3>(old, N, &store).unwrap();
    g.bench_function("verify_consistency_64k", |b| {
        b.iter(|| verify_consistency::<Blake3>(old, N, &old_root, &root, &cproof).unwrap())
    });
    g.finish();
}

fn checkpoints(c: &mut Criterion) {
    let key = SignerKey::from_seed("bench.example/log", &[9; 32]).unwrap();
    let body = checkpoint_body("bench.example/log", 1_000_000, &[3; 32]);
    let note = key.sign_note(&body);
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter(|| key.sign_note(&body)));
    g.bench_function("open_verify", |b| {
        b.iter(|| open_checkpoint(&note, key.verifier()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, events, tree, checkpoints);
criterion_main!(benches);
