//! Durability under SIGKILL: a real `ledger serve` process is killed at a pseudo-random moment,
//! [`ROUNDS`] times over one data dir. After each restart every answered event is present with its
//! receipt's index and hash, the new head is consistent with every checkpoint handed out before,
//! and every request cut by the kill landed whole or not at all. At the end the data dir passes
//! `fsck`.
//!
//! The moments come from a seed printed first (captured output, shown on failure); rerun a failure
//! with `LEDGER_CRASH_SEED=<seed>`. Rounds cycle through a kill during start-up (RocksDB's WAL
//! replay and recovery flush, the start-up check), a kill right after start as the first requests
//! arrive, kills under light load (a few clients, small requests, small group commits) and under
//! heavy load (many clients, large requests, group commits of hundreds of events mid-fsync). The
//! test requires that at least [`MIN_ROUNDS_CUTTING_REQUESTS`] rounds really cut requests in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger::core::hash::{Blake3, Hash, TreeHasher, from_hex};
use ledger::core::merkle::verify_inclusion;
use ledger::core::note::{Checkpoint, VerifierKey, open_checkpoint};
use ledger::core::receipt::Receipt;
use serde_json::Value;

use crate::common::{CliLedger, Process, assert_extends, cli_ledger, event, head};

const ROUNDS: u64 = 20;
/// Rounds that must kill the server while a client's request is on the wire (the connection broke
/// after the request was sent). Load rounds nearly always do; this leaves slack.
const MIN_ROUNDS_CUTTING_REQUESTS: usize = 5;

/// splitmix64: a seeded generator small enough to state here, so a schedule replays exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// When a round kills the server.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// `delay` after exec, ready or not.
    Startup { delay: Duration },
    /// Once `answered` events of this round have receipts, while `clients` clients post arrays of
    /// `events` events back to back.
    Load {
        clients: u64,
        events: u64,
        answered: u64,
    },
}

fn schedule(round: u64, rng: &mut Rng) -> Kill {
    match round % 5 {
        // Start-up takes 100-300 ms in a debug build: most of these land inside it.
        0 => Kill::Startup {
            delay: Duration::from_millis(rng.below(80)),
        },
        // Right after start: the first requests are arriving.
        1 => Kill::Load {
            clients: 4,
            events: 1,
            answered: rng.below(4),
        },
        // Light load: batches of a few small requests.
        2 | 3 => Kill::Load {
            clients: 2 + rng.below(7),
            events: 1 + rng.below(4),
            answered: 10 + rng.below(60),
        },
        // Heavy load: large requests, group commits of hundreds of events.
        _ => Kill::Load {
            clients: 12,
            events: 24,
            answered: 48 + rng.below(500),
        },
    }
}

/// How a client stopped.
enum Ended {
    /// The connection broke after the request was sent, and the request was started before the
    /// kill was: it was in flight. Its events, to check on restart that it landed whole or not at all.
    Cut(Vec<Value>),
    /// Connection refused, or the request was started once the kill was under way.
    Refused,
}

/// What one load client shares with the round.
#[derive(Clone)]
struct Load {
    client: reqwest::Client,
    base: String,
    token: String,
    events: u64,
    next_event: Arc<AtomicU64>,
    answered: Arc<Mutex<Vec<Receipt>>>,
    answered_events: Arc<AtomicU64>,
    killing: Arc<AtomicBool>,
}

/// Posts arrays of events until the server goes away, collecting the receipts.
async fn post_until_killed(load: Load) -> Ended {
    loop {
        let first = load.next_event.fetch_add(load.events, Ordering::Relaxed);
        let body: Vec<Value> = (first..first + load.events).map(event).collect();
        let before_kill = !load.killing.load(Ordering::SeqCst);
        let sent = load
            .client
            .post(format!("{}/v1/events", load.base))
            .bearer_auth(&load.token)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() || !before_kill => return Ended::Refused,
            Err(_) => return Ended::Cut(body),
        };
        let status = response.status();
        let Ok(text) = response.text().await else {
            return if before_kill {
                Ended::Cut(body)
            } else {
                Ended::Refused
            };
        };
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let receipts: Vec<Receipt> = serde_json::from_value(v["receipts"].clone()).unwrap();
        assert_eq!(receipts.len(), body.len());
        load.answered.lock().unwrap().extend(receipts);
        load.answered_events
            .fetch_add(load.events, Ordering::SeqCst);
    }
}

/// What the clients were told, and how much of it a restarted server has been checked against.
#[derive(Default)]
struct Told {
    /// Every receipt ever answered.
    receipts: Vec<Receipt>,
    /// `receipts[..checked]` have been checked against a restarted server's entries.
    checked: usize,
    /// Checkpoints handed out and not yet proven consistent with a restarted head, by size.
    pending: BTreeMap<u64, Hash>,
    /// Every size handed out and its root: a restarted log must never sign another root for one.
    roots: BTreeMap<u64, Hash>,
    /// The last restarted head checked.
    head: Option<Checkpoint>,
    /// Requests cut by a kill, to check on the next restart.
    cut: Vec<Vec<Value>>,
}

impl Told {
    fn record_root(&mut self, size: u64, root: Hash) {
        let known = *self.roots.entry(size).or_insert(root);
        assert_eq!(known, root, "two roots handed out for tree size {size}");
    }

    fn hand_out(&mut self, size: u64, root: Hash) {
        self.record_root(size, root);
        self.pending.insert(size, root);
    }
}

/// Checks a restarted server against everything told before.
///
/// Every receipt not yet checked: its entry's bytes hash to its leaf hash and its inclusion proof
/// verifies against its signed checkpoint. Every checkpoint handed out since the last check, and
/// the last checked head, are proven consistent with the new head; older checkpoints were proven
/// consistent with that older head, so (consistency is transitive) with this one too, and every
/// receipt ever answered is in this head's tree at its index with its leaf hash. Then every cut
/// request is posted again: its events must come back all as duplicates or all as new.
async fn check_restart(
    server: &Process,
    client: &reqwest::Client,
    token: &str,
    key: &VerifierKey,
    told: &mut Told,
) {
    let head = head(server, client, key).await;

    let fetched = fetch_entries(server, client, token, &told.receipts[told.checked..]).await;
    let notes = open_notes(fetched.iter().map(|(r, _)| &r.checkpoint), key).await;
    for (r, leaf) in fetched {
        let cp = &notes[&r.checkpoint];
        assert_eq!(cp.size, r.tree_size, "receipt of entry {}", r.index);
        let leaf_hash = Blake3::leaf(&leaf);
        assert_eq!(
            hex::encode(leaf_hash),
            r.leaf_hash,
            "entry {} differs from its receipt",
            r.index
        );
        let proof: Vec<Hash> = r
            .inclusion_proof
            .iter()
            .map(|h| from_hex(h).unwrap())
            .collect();
        verify_inclusion::<Blake3>(r.index, cp.size, &leaf_hash, &proof, &cp.root)
            .unwrap_or_else(|e| panic!("receipt of entry {}: {e}", r.index));
        told.hand_out(cp.size, cp.root);
    }
    told.checked = told.receipts.len();

    if let Some(previous) = told.head.take() {
        told.pending.insert(previous.size, previous.root);
    }
    // Size 0 is a prefix of every tree (RFC 9162 has no proof for it).
    for (&size, root) in told.pending.range(1..) {
        assert!(
            size <= head.size,
            "checkpoint {size} was handed out; the restarted head is {}",
            head.size
        );
        assert_extends(client, &server.base, size, root, &head).await;
    }
    told.pending.clear();
    told.record_root(head.size, head.root);
    told.head = Some(head);

    for body in std::mem::take(&mut told.cut) {
        let response = client
            .post(format!("{}/v1/events", server.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let v: Value = response.json().await.unwrap();
        let receipts: Vec<Receipt> = serde_json::from_value(v["receipts"].clone()).unwrap();
        let landed = receipts.iter().filter(|r| r.duplicate).count();
        assert!(
            landed == 0 || landed == receipts.len(),
            "a request cut by the kill landed in part: {landed} of {} events",
            receipts.len()
        );
        told.receipts.extend(receipts);
    }
}

/// `GET /v1/entries/{index}` of each receipt, eight at a time; each must exist.
async fn fetch_entries(
    server: &Process,
    client: &reqwest::Client,
    token: &str,
    receipts: &[Receipt],
) -> Vec<(Receipt, Vec<u8>)> {
    let mut fetches = tokio::task::JoinSet::new();
    for chunk in receipts.chunks(receipts.len().div_ceil(8).max(1)) {
        let (client, base, token, chunk) = (
            client.clone(),
            server.base.clone(),
            token.to_owned(),
            chunk.to_vec(),
        );
        fetches.spawn(async move {
            let mut leaves = Vec::with_capacity(chunk.len());
            for r in chunk {
                let response = client
                    .get(format!("{base}/v1/entries/{}", r.index))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    200,
                    "answered entry {} missing after restart",
                    r.index
                );
                leaves.push((r, response.bytes().await.unwrap().to_vec()));
            }
            leaves
        });
    }
    let mut fetched = Vec::with_capacity(receipts.len());
    while let Some(leaves) = fetches.join_next().await {
        fetched.extend(leaves.unwrap());
    }
    fetched
}

/// Verifies each distinct checkpoint note once, on the blocking pool (receipts of one commit share
/// a note, and Ed25519 is slow in a debug build).
async fn open_notes<'a>(
    notes: impl Iterator<Item = &'a String>,
    key: &VerifierKey,
) -> HashMap<String, Checkpoint> {
    let mut verifying = tokio::task::JoinSet::new();
    for note in notes.collect::<HashSet<_>>() {
        let (note, key) = (note.clone(), key.clone());
        verifying.spawn_blocking(move || {
            let checkpoint = open_checkpoint(&note, &key).unwrap();
            (note, checkpoint)
        });
    }
    let mut opened = HashMap::new();
    while let Some(verified) = verifying.join_next().await {
        let (note, checkpoint) = verified.unwrap();
        opened.insert(note, checkpoint);
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_answered_event() {
    let seed = std::env::var("LEDGER_CRASH_SEED").map_or_else(
        |_| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_secs() ^ u64::from(now.subsec_nanos())
        },
        |s| s.parse().expect("LEDGER_CRASH_SEED is a u64"),
    );
    println!("kill schedule seed {seed}: rerun with LEDGER_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let CliLedger {
        tmp: _tmp,
        data,
        key_file,
        key,
        token,
    } = cli_ledger("test.crash/log");
    let client = ledger::tls::ClientTls::default().client().build().unwrap();
    let next_event = Arc::new(AtomicU64::new(0));
    let mut told = Told::default();
    let mut rounds_cutting_requests = 0;

    for round in 0..ROUNDS {
        let kill = schedule(round, &mut rng);
        let mut server = Process::launch(Process::serve_command(&data, &key_file));
        let (clients, events, answered_before_kill) = match kill {
            Kill::Startup { delay } => {
                // The delay picks the moment; nothing waits on it for correctness.
                tokio::time::sleep(delay).await;
                server.kill9();
                println!("round {round}: {kill:?}");
                continue;
            }
            Kill::Load {
                clients,
                events,
                answered,
            } => (clients, events, answered),
        };
        server.wait_ready();
        check_restart(&server, &client, &token, &key, &mut told).await;

        let load = Load {
            client: client.clone(),
            base: server.base.clone(),
            token: token.clone(),
            events,
            next_event: next_event.clone(),
            answered: Arc::default(),
            answered_events: Arc::default(),
            killing: Arc::default(),
        };
        let tasks: Vec<_> = (0..clients)
            .map(|_| tokio::spawn(post_until_killed(load.clone())))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while load.answered_events.load(Ordering::SeqCst) < answered_before_kill {
            assert!(
                Instant::now() < deadline,
                "round {round}: load made no progress"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        load.killing.store(true, Ordering::SeqCst);
        server.kill9();
        let mut cut = 0;
        for task in tasks {
            if let Ended::Cut(body) = task.await.unwrap() {
                cut += 1;
                told.cut.push(body);
            }
        }
        rounds_cutting_requests += usize::from(cut > 0);
        let answered = std::mem::take(&mut *load.answered.lock().unwrap());
        println!(
            "round {round}: {kill:?}: {} events answered, {cut} requests cut",
            answered.len()
        );
        told.receipts.extend(answered);
    }

    // The last restart: everything told is there, and the whole data dir passes fsck.
    let server = Process::spawn(&data, &key_file);
    check_restart(&server, &client, &token, &key, &mut told).await;
    let head_size = told.head.as_ref().unwrap().size;
    let report = tokio::task::spawn_blocking(move || {
        ledger::fsck::fsck_dir(&data, Some(&key), false).unwrap()
    })
    .await
    .unwrap();
    assert!(report.ok, "fsck: {:?}", report.first());
    assert!(report.tree_size >= head_size);
    drop(server);
    assert!(
        rounds_cutting_requests >= MIN_ROUNDS_CUTTING_REQUESTS,
        "only {rounds_cutting_requests} rounds killed the server with requests in flight"
    );
}
