//! Criterion benchmarks of the log at size, with `Throughput` set:
//!
//! - `proof_1m`: inclusion and consistency proofs built from a RocksDB node store holding a
//!   1,048,576-leaf tree (the store the server reads), and verified: one at a time, and a run of
//!   4,096 consecutive leaves' proofs in order, alone and through `PathVerifier` (as `ledger
//!   verify` checks a bundle's rows).
//! - `proof_100m`: the same at 100,000,000 leaves. Building that tree would take 200 M stored nodes
//!   (about 10 GB), so the builder reads from a node source that derives any node's hash from its
//!   position: a proof's cost is the nodes it reads and the right-edge hashes it computes, neither
//!   of which depends on the values. Verification is timed against the root the proof implies
//!   (the same hashes a real root would take).
//! - `bundle`: `ledger export` of a 50,000-event ledger (rows/s, per-row proofs, Parquet, summary)
//!   and `ledger verify` of that bundle (rows/s, all checks).
//!
//! Run: `cargo bench --bench log` (about 3 minutes; the setup writes 1 M nodes and 50 k events).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledger::core::event::prepare_bytes;
use ledger::core::hash::{Blake3, Hash, TreeHasher};
use ledger::core::merkle::{
    Frontier, HashReader, NodeId, PathVerifier, ProofCursor, TreeError, consistency_proof,
    inclusion_proof, root_from_inclusion, tree_hash, verify_consistency, verify_inclusion,
};
use ledger::core::note::SignerKey;
use ledger::export::{ExportConfig, Source, export};
use ledger::sequencer::{Sequencer, SequencerConfig};
use ledger::store::{Commit, Store};

/// A RocksDB store holding the nodes of a `size`-leaf tree, and its root.
fn node_store(dir: &std::path::Path, size: u64) -> (Store, Hash) {
    let store = Store::open(dir).expect("open store");
    let mut frontier = Frontier::<Blake3>::empty();
    let mut nodes = Vec::new();
    for i in 0..size {
        frontier.append(Blake3::leaf(&i.to_be_bytes()), &mut nodes);
        if nodes.len() >= 1 << 16 || i + 1 == size {
            let commit = Commit {
                nodes: std::mem::take(&mut nodes),
                ..Commit::default()
            };
            store.commit(&commit).expect("commit nodes");
        }
    }
    (store, frontier.root())
}

fn proof_1m(c: &mut Criterion) {
    const N: u64 = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let (store, root) = node_store(tmp.path(), N);
    let mut g = c.benchmark_group("proof_1m");
    g.throughput(Throughput::Elements(1));
    let mut index = 0u64;
    g.bench_function("inclusion_build_rocksdb", |b| {
        b.iter(|| {
            // A different leaf each time: spread over the tree, as receipts and auditors ask.
            index = (index + 7_919) % N;
            inclusion_proof::<Blake3>(index, N, &store).unwrap()
        })
    });
    let at = 777_777;
    let proof = inclusion_proof::<Blake3>(at, N, &store).unwrap();
    let leaf = Blake3::leaf(&at.to_be_bytes());
    g.bench_function("inclusion_verify", |b| {
        b.iter(|| verify_inclusion::<Blake3>(at, N, &leaf, &proof, &root).unwrap())
    });
    let old = 654_321;
    let old_root = tree_hash::<Blake3>(old, &store).unwrap();
    g.bench_function("consistency_build_rocksdb", |b| {
        b.iter(|| consistency_proof::<Blake3>(old, N, &store).unwrap())
    });
    let cproof = consistency_proof::<Blake3>(old, N, &store).unwrap();
    g.bench_function("consistency_verify", |b| {
        b.iter(|| verify_consistency::<Blake3>(old, N, &old_root, &root, &cproof).unwrap())
    });
    // The proofs of a run of consecutive leaves checked in order, as `ledger verify` checks a
    // bundle's rows: each alone (the baseline, 20 node hashes each), and through one
    // `PathVerifier` (each node of the run's tree hashed once: about one per leaf).
    const RUN: u64 = 4_096;
    let first = 300_000;
    let mut cursor = ProofCursor::<Blake3>::new(N);
    let run: Vec<(Hash, Vec<Hash>)> = (first..first + RUN)
        .map(|i| {
            let proof = cursor.proof(i, &store).unwrap().to_vec();
            (Blake3::leaf(&i.to_be_bytes()), proof)
        })
        .collect();
    let at = |k: usize| first + k as u64;
    g.throughput(Throughput::Elements(RUN));
    g.bench_function("inclusion_verify_run_each", |b| {
        b.iter(|| {
            for (k, (leaf, proof)) in run.iter().enumerate() {
                verify_inclusion::<Blake3>(at(k), N, leaf, proof, &root).unwrap();
            }
        })
    });
    g.bench_function("inclusion_verify_run_shared", |b| {
        b.iter(|| {
            let mut paths = PathVerifier::<Blake3>::new(N, root);
            for (k, (leaf, proof)) in run.iter().enumerate() {
                paths.verify(at(k), leaf, proof).unwrap();
            }
            paths.hashes()
        })
    });
    g.finish();
}

/// Any node of any tree, its hash derived from its position (see the module docs).
struct Positional;

impl HashReader for Positional {
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
        let mut bytes = [0u8; 9];
        bytes[0] = id.level;
        bytes[1..].copy_from_slice(&id.index.to_be_bytes());
        Ok(Blake3::leaf(&bytes))
    }
}

fn proof_100m(c: &mut Criterion) {
    const N: u64 = 100_000_000;
    let mut g = c.benchmark_group("proof_100m");
    g.throughput(Throughput::Elements(1));
    let mut index = 0u64;
    g.bench_function("inclusion_build", |b| {
        b.iter(|| {
            index = (index + 7_919_993) % N;
            inclusion_proof::<Blake3>(index, N, &Positional).unwrap()
        })
    });
    let at = 77_777_777;
    let proof = inclusion_proof::<Blake3>(at, N, &Positional).unwrap();
    let leaf = Positional.read_hash(NodeId::covering(0, at)).unwrap();
    let root = root_from_inclusion::<Blake3>(at, N, &leaf, &proof).unwrap();
    g.bench_function("inclusion_verify", |b| {
        b.iter(|| verify_inclusion::<Blake3>(at, N, &leaf, &proof, &root).unwrap())
    });
    g.bench_function("consistency_build", |b| {
        b.iter(|| consistency_proof::<Blake3>(65_432_109, N, &Positional).unwrap())
    });
    // Proofs of consecutive leaves, as export builds them: each from scratch (the baseline), and
    // each from the last one (`ProofCursor`).
    let mut next = 0u64;
    g.bench_function("inclusion_run_each", |b| {
        b.iter(|| {
            next = (next + 1) % N;
            inclusion_proof::<Blake3>(next, N, &Positional).unwrap()
        })
    });
    let mut cursor = ProofCursor::<Blake3>::new(N);
    let mut next = 0u64;
    g.bench_function("inclusion_run_cursor", |b| {
        b.iter(|| {
            next = (next + 1) % N;
            cursor.proof(next, &Positional).unwrap().len()
        })
    });
    g.finish();
}

const EVENTS: u64 = 50_000;

/// A data dir of `EVENTS` events written through the sequencer, and its signing key.
fn ledger_dir(dir: &std::path::Path) -> SignerKey {
    let key = SignerKey::from_seed("bench.example/log", &[5; 32]).unwrap();
    let store = Arc::new(Store::open(dir).unwrap());
    let (sequencer, writer) =
        Sequencer::start(store, key.clone(), SequencerConfig::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for first in (0..EVENTS).step_by(1000) {
            let events = (first..first + 1000)
                .map(|n| prepare_bytes(ledger::bench::event_json("b", n).as_bytes()).unwrap())
                .collect();
            sequencer.append("bench", events).await.unwrap();
        }
    });
    drop(sequencer);
    writer.join();
    key
}

fn bundle(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = ledger_dir(&data);
    let config = |out: std::path::PathBuf| ExportConfig {
        framework: "soc2".into(),
        from: 0,
        // 2100-01-01T00:00:00Z: after every entry.
        to: 4_102_444_800_000_000,
        out,
        source: Source::DataDir {
            path: data.clone(),
            key: Box::new(key.clone()),
        },
        since: None,
        now: 1_795_251_960_000_000,
        progress: false,
    };
    let mut g = c.benchmark_group("bundle");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    let mut n = 0;
    g.bench_function("export_rows", |b| {
        b.iter(|| {
            n += 1;
            let out = tmp.path().join(format!("bundle-{n}"));
            export(&config(out.clone())).unwrap();
            std::fs::remove_dir_all(out).unwrap();
        })
    });
    let out = tmp.path().join("bundle");
    export(&config(out.clone())).unwrap();
    g.bench_function("verify_rows", |b| {
        b.iter(|| {
            let v = ledger::verify::verify(&out, key.verifier(), None).unwrap();
            assert!(v.ok, "{:?}", v.checks);
        })
    });
    g.finish();
}

criterion_group!(benches, proof_1m, proof_100m, bundle);
criterion_main!(benches);
