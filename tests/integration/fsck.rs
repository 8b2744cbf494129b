//! `ledger fsck` catches every edit, deletion or swap of a stored entry, node or checkpoint made
//! behind the ledger's back, and names where: each case corrupts a copy of one populated data dir
//! through `Store`'s raw test-support writes, then runs the CLI binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ledger::core::hash::{Blake3, TreeHasher};
use ledger::core::merkle::NodeId;
use ledger::core::note::checkpoint_body;
use ledger::store::{Store, TILE_NODES};
use serde_json::{Value, json};

use crate::common::{TestServer, copy_dir, event, test_key};

/// Requests of this many events, one commit each: checkpoints at 0, 4, 8, ..., 48. The tree's
/// 94 nodes fill tile 0 (in `tiles`) and 30 places of tile 1 (the `tail` record); the ninth
/// commit's run across the two.
const PER_COMMIT: u64 = 4;
const COMMITS: u64 = 12;
const SIZE: u64 = PER_COMMIT * COMMITS;

/// A stopped data dir with `SIZE` entries in `COMMITS` commits.
async fn populated() -> (PathBuf, tempfile::TempDir) {
    let server = TestServer::start().await;
    for c in 0..COMMITS {
        let events: Vec<Value> = (c * PER_COMMIT..(c + 1) * PER_COMMIT).map(event).collect();
        let (status, body) = server.post_json(&json!(events)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.tree_size().await, SIZE);
    let (dir, tmp) = server.stop().await;
    let keep = tempfile::tempdir().unwrap();
    let base = keep.path().join("base");
    copy_dir(&dir, &base);
    drop(tmp);
    (base, keep)
}

pub fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env("LEDGER_LOG", "warn")
        .output()
        .unwrap()
}

/// Runs `ledger fsck --json` on `dir`: exit code and report.
pub fn fsck_json(dir: &Path) -> (i32, Value) {
    let out = ledger(&["fsck", "--data-dir", dir.to_str().unwrap(), "--json"]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

fn entry_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// A tree node's key: the last leaf it covers, then its level.
/// Where node `(level, index)` is stored: column family, key, and its byte offset in the value
/// (a whole tile in `tiles`, or the tail record: the tile's number, then its hashes).
fn node_at(store: &Store, level: u8, index: u64) -> (&'static str, Vec<u8>, usize) {
    let place = NodeId { level, index }.stored_index().unwrap();
    let key = (place / TILE_NODES).to_be_bytes().to_vec();
    let offset = usize::try_from(place % TILE_NODES).unwrap() * 32;
    if store.raw_get("tiles", &key).unwrap().is_some() {
        ("tiles", key, offset)
    } else {
        assert_eq!(get(store, "tail", b"tail")[..8], key[..]);
        ("tail", b"tail".to_vec(), 8 + offset)
    }
}

fn node(store: &Store, level: u8, index: u64) -> [u8; 32] {
    let (cf, key, at) = node_at(store, level, index);
    get(store, cf, &key)[at..at + 32].try_into().unwrap()
}

/// Overwrites node `(level, index)` where it is stored.
fn put_node(store: &Store, level: u8, index: u64, hash: &[u8; 32]) {
    let (cf, key, at) = node_at(store, level, index);
    let mut value = get(store, cf, &key);
    value[at..at + 32].copy_from_slice(hash);
    store.raw_put(cf, &key, &value).unwrap();
}

fn swap_nodes(store: &Store, a: (u8, u64), b: (u8, u64)) {
    let (ha, hb) = (node(store, a.0, a.1), node(store, b.0, b.1));
    put_node(store, a.0, a.1, &hb);
    put_node(store, b.0, b.1, &ha);
}

/// A copy of `base` corrupted by `damage` (with the data dir opened through `Store`).
fn corrupted(base: &Path, name: &str, damage: impl FnOnce(&Store)) -> PathBuf {
    let dir = base.parent().unwrap().join(name);
    copy_dir(base, &dir);
    let store = Store::open(&dir).unwrap();
    damage(&store);
    drop(store);
    dir
}

fn get(store: &Store, cf: &str, key: &[u8]) -> Vec<u8> {
    store.raw_get(cf, key).unwrap().unwrap()
}

fn swap(store: &Store, cf: &str, a: &[u8], b: &[u8]) {
    let (va, vb) = (get(store, cf, a), get(store, cf, b));
    store.raw_put(cf, a, &vb).unwrap();
    store.raw_put(cf, b, &va).unwrap();
}

/// An entry's leaf with its action name changed: still a canonical leaf with the same index.
fn edited_leaf(store: &Store, index: u64) -> Vec<u8> {
    let leaf = String::from_utf8(get(store, "entries", &entry_key(index))).unwrap();
    assert!(leaf.contains("export customers"));
    leaf.replacen("export customers", "export suppliers", 1)
        .into_bytes()
}

/// Asserts fsck fails (exit 1) and its first problem is `want` (a subset of its JSON fields).
fn assert_first(dir: &Path, case: &str, want: Value) -> Value {
    let (code, report) = fsck_json(dir);
    assert_eq!(code, 1, "{case}: fsck should fail: {report:#}");
    assert_eq!(report["ok"], false, "{case}");
    eprintln!(
        "== {case}: {}",
        serde_json::to_string(&report["problems"]).unwrap()
    );
    let first = &report["problems"][0];
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&first[k], v, "{case}: first problem {first:#}");
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_passes_a_clean_data_dir_and_reports_what_it_checked() {
    let (base, _keep) = populated().await;
    let (code, report) = fsck_json(&base);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["tree_size"], SIZE);
    assert_eq!(report["log_key"], test_key().verifier().encode());
    let checked = &report["checked"];
    assert_eq!(checked["entries"], SIZE);
    // n leaves plus n - popcount(n) interior nodes.
    assert_eq!(checked["nodes"], 2 * SIZE - u64::from(SIZE.count_ones()));
    assert_eq!(checked["checkpoints"], COMMITS + 1);
    assert_eq!(checked["index_records"], 2 * SIZE);
    // Read-only: not one file of the data dir changed.
    let before = snapshot(&base);
    let text = ledger(&["fsck", "--data-dir", base.to_str().unwrap()]);
    assert!(text.status.success());
    assert!(
        String::from_utf8_lossy(&text.stdout).starts_with(&format!("ok: tree size {SIZE};")),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    assert_eq!(snapshot(&base), before, "fsck modified the data dir");
}

/// Every file of a directory with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_names_an_edited_deleted_swapped_or_added_entry() {
    let (base, _keep) = populated().await;

    let dir = corrupted(&base, "edit", |s| {
        s.raw_put("entries", &entry_key(7), &edited_leaf(s, 7))
            .unwrap();
    });
    assert_first(&dir, "edited entry", json!({"at": "entry", "index": 7}));
    // The same in words, with exit code 1 and the index on stderr.
    let out = ledger(&["fsck", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("FAIL entry 7: "), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the first at entry 7"), "{stderr}");

    // An editor who also rewrites the leaf hash (the idempotency record keeps only the index,
    // which still points here): the parent node no longer matches its children, and the next
    // entry's chain link no longer matches.
    let dir = corrupted(&base, "consistent-edit", |s| {
        let leaf = edited_leaf(s, 7);
        s.raw_put("entries", &entry_key(7), &leaf).unwrap();
        put_node(s, 0, 7, &Blake3::leaf(&leaf));
    });
    let report = assert_first(
        &dir,
        "consistent edit",
        json!({"at": "node", "level": 1, "index": 3}),
    );
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["at"] == "entry"
                && p["index"] == 8
                && p["message"].as_str().unwrap().contains("chain")),
        "{report:#}"
    );

    let dir = corrupted(&base, "delete-middle", |s| {
        s.raw_delete("entries", &entry_key(7)).unwrap();
    });
    let report = assert_first(&dir, "deleted entry", json!({"at": "entry", "index": 7}));
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{report:#}"
    );

    let dir = corrupted(&base, "delete-last", |s| {
        s.raw_delete("entries", &entry_key(SIZE - 1)).unwrap();
    });
    assert_first(
        &dir,
        "deleted last entry",
        json!({"at": "entry", "index": SIZE - 1}),
    );

    let dir = corrupted(&base, "delete-first", |s| {
        s.raw_delete("entries", &entry_key(0)).unwrap();
    });
    assert_first(&dir, "deleted entry 0", json!({"at": "entry", "index": 0}));

    let dir = corrupted(&base, "swap", |s| {
        swap(s, "entries", &entry_key(3), &entry_key(12));
    });
    assert_first(&dir, "swapped entries", json!({"at": "entry", "index": 3}));

    let dir = corrupted(&base, "append", |s| {
        let last = get(s, "entries", &entry_key(SIZE - 1));
        s.raw_put("entries", &entry_key(SIZE), &last).unwrap();
    });
    assert_first(&dir, "added entry", json!({"at": "entry", "index": SIZE}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_names_an_edited_deleted_swapped_or_added_node() {
    let (base, _keep) = populated().await;

    let dir = corrupted(&base, "leaf-hash", |s| {
        put_node(s, 0, 7, &[9u8; 32]);
    });
    let report = assert_first(&dir, "edited leaf hash", json!({"at": "entry", "index": 7}));
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("leaf hash"),
        "{report:#}"
    );

    // Not on the right edge of the tree, so the start-up check never reads it.
    let dir = corrupted(&base, "interior", |s| {
        put_node(s, 2, 1, &[9u8; 32]);
    });
    assert_first(
        &dir,
        "edited interior node",
        json!({"at": "node", "level": 2, "index": 1}),
    );

    // The tile cut short right before node (1, 5): it and every node after it are gone.
    let dir = corrupted(&base, "delete-node", |s| {
        let (cf, key, at) = node_at(s, 1, 5);
        assert_eq!(cf, "tiles");
        let tile = get(s, cf, &key);
        s.raw_put(cf, &key, &tile[..at]).unwrap();
    });
    let report = assert_first(
        &dir,
        "deleted node",
        json!({"at": "node", "level": 1, "index": 5}),
    );
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("missing"),
        "{report:#}"
    );

    let dir = corrupted(&base, "swap-nodes", |s| {
        swap_nodes(s, (0, 2), (0, 9));
    });
    assert_first(
        &dir,
        "swapped leaf hashes",
        json!({"at": "entry", "index": 2}),
    );

    let dir = corrupted(&base, "swap-interior", |s| {
        swap_nodes(s, (1, 1), (1, 4));
    });
    assert_first(
        &dir,
        "swapped interior nodes",
        json!({"at": "node", "level": 1, "index": 1}),
    );

    // A key that names no tile (4 bytes, not 8), stored before tile 0: reported, and it hides
    // nothing (leaf 5's edit is still found).
    let dir = corrupted(&base, "no-tile-key", |s| {
        s.raw_put("tiles", &[0u8; 4], &[9u8; 32]).unwrap();
        put_node(s, 0, 5, &[9u8; 32]);
    });
    let report = assert_first(
        &dir,
        "key of no tile",
        json!({"at": "column_family", "name": "tiles"}),
    );
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("is not a tile's key"),
        "{report:#}"
    );
    assert_eq!(problems[1]["at"], "entry", "{report:#}");
    assert_eq!(problems[1]["index"], 5, "{report:#}");
    assert!(
        !problems.iter().any(|p| p["message"]
            .as_str()
            .unwrap()
            .contains("not a node of the tree")),
        "{report:#}"
    );

    // A tile that is not whole hashes: reported, and none of its nodes is taken.
    let dir = corrupted(&base, "tile-size", |s| {
        let mut tile = get(s, "tiles", &0u64.to_be_bytes());
        tile.extend_from_slice(&[9u8; 5]);
        s.raw_put("tiles", &0u64.to_be_bytes(), &tile).unwrap();
    });
    let report = assert_first(
        &dir,
        "malformed tile",
        json!({"at": "column_family", "name": "tiles"}),
    );
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("not 1 to 64 hashes"),
        "{report:#}"
    );
    assert_eq!(problems[1]["at"], "entry", "{report:#}");
    assert_eq!(problems[1]["index"], 0, "{report:#}");

    // A tail record naming a tile stored whole: reported, not read as nodes over again.
    let dir = corrupted(&base, "tail-twice", |s| {
        let mut tail = get(s, "tail", b"tail");
        tail[..8].copy_from_slice(&0u64.to_be_bytes());
        s.raw_put("tail", b"tail", &tail).unwrap();
    });
    let report = assert_first(
        &dir,
        "tail over a whole tile",
        json!({"at": "column_family", "name": "tiles"}),
    );
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("stored twice"),
        "{report:#}"
    );

    // One more hash at the end of the tail: the node the next leaf would complete.
    let dir = corrupted(&base, "stray", |s| {
        let mut tail = get(s, "tail", b"tail");
        assert_eq!(tail.len(), 8 + 30 * 32, "tile 1's 30 nodes");
        tail.extend_from_slice(&[9u8; 32]);
        s.raw_put("tail", b"tail", &tail).unwrap();
    });
    assert_first(
        &dir,
        "stray node",
        json!({"at": "node", "level": 0, "index": SIZE}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_names_an_edited_deleted_swapped_or_forged_checkpoint() {
    let (base, _keep) = populated().await;

    let dir = corrupted(&base, "edit-cp", |s| {
        let note = String::from_utf8(get(s, "checkpoints", &8u64.to_be_bytes())).unwrap();
        let edited = note.replacen("\n8\n", "\n9\n", 1);
        assert_ne!(note, edited);
        s.raw_put("checkpoints", &8u64.to_be_bytes(), edited.as_bytes())
            .unwrap();
    });
    assert_first(
        &dir,
        "edited checkpoint",
        json!({"at": "checkpoint", "size": 8}),
    );

    for size in [0, 8, SIZE] {
        let dir = corrupted(&base, &format!("delete-cp-{size}"), |s| {
            s.raw_delete("checkpoints", &size.to_be_bytes()).unwrap();
        });
        let report = assert_first(
            &dir,
            &format!("deleted checkpoint {size}"),
            json!({"at": "checkpoint", "size": size}),
        );
        assert!(
            report["problems"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("missing"),
            "{report:#}"
        );
    }

    let dir = corrupted(&base, "swap-cp", |s| {
        swap(s, "checkpoints", &4u64.to_be_bytes(), &12u64.to_be_bytes());
    });
    assert_first(
        &dir,
        "swapped checkpoints",
        json!({"at": "checkpoint", "size": 4}),
    );

    // Signed with the log's own key, but over a root that is not the stored tree's: only the
    // recomputed root tells.
    let dir = corrupted(&base, "forged-cp", |s| {
        let note = test_key().sign_note(&checkpoint_body(crate::common::ORIGIN, 12, &[5u8; 32]));
        s.raw_put("checkpoints", &12u64.to_be_bytes(), note.as_bytes())
            .unwrap();
    });
    let report = assert_first(
        &dir,
        "forged checkpoint",
        json!({"at": "checkpoint", "size": 12}),
    );
    assert!(
        report["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("root"),
        "{report:#}"
    );

    // A well-signed, correct checkpoint at a size where no commit ended: the idempotency records
    // place the commits, so it is out of place.
    let dir = corrupted(&base, "added-cp", |s| {
        let root = ledger::core::merkle::tree_hash::<Blake3>(10, s).unwrap();
        let note = test_key().sign_note(&checkpoint_body(crate::common::ORIGIN, 10, &root));
        s.raw_put("checkpoints", &10u64.to_be_bytes(), note.as_bytes())
            .unwrap();
    });
    assert_first(
        &dir,
        "added checkpoint",
        json!({"at": "checkpoint", "size": 10}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_checks_the_given_key_and_runs_beside_a_running_server() {
    let server = TestServer::start().await;
    let (status, _) = server
        .post_json(&json!((0..6).map(event).collect::<Vec<_>>()))
        .await;
    assert_eq!(status, 200);
    // The server keeps the data dir open (and locked): fsck reads it as a secondary.
    let (code, report) = fsck_json(&server.data_dir);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["tree_size"], 6);

    let tmp = tempfile::tempdir().unwrap();
    let right = tmp.path().join("right.pub");
    std::fs::write(&right, test_key().verifier().encode()).unwrap();
    let other =
        ledger::core::note::SignerKey::from_seed(crate::common::ORIGIN, &[1u8; 32]).unwrap();
    let wrong = tmp.path().join("wrong.pub");
    std::fs::write(&wrong, other.verifier().encode()).unwrap();
    let d = server.data_dir.to_str().unwrap();
    let ok = ledger(&[
        "fsck",
        "--data-dir",
        d,
        "--key-file",
        right.to_str().unwrap(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = ledger(&[
        "fsck",
        "--data-dir",
        d,
        "--key-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stdout)
            .starts_with("FAIL meta: the data dir records the log key"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    server.stop().await;

    let missing = ledger(&[
        "fsck",
        "--data-dir",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("hint:"));
}

/// Export reads every entry of its period: a stored entry that is not a contract leaf stops it
/// with the entry's index, and no bundle (not even a partial one) is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_stops_at_a_corrupt_entry_and_leaves_no_bundle() {
    use std::os::unix::fs::PermissionsExt as _;
    let (base, _keep) = populated().await;
    let dir = corrupted(&base, "spaced-leaf", |s| {
        let leaf = String::from_utf8(get(s, "entries", &entry_key(7))).unwrap();
        let spaced = leaf.replacen(",\"index\":", ", \"index\":", 1);
        s.raw_put("entries", &entry_key(7), spaced.as_bytes())
            .unwrap();
    });
    let key = base.parent().unwrap().join("ledger.key");
    // The log's own key (the test server's), private to its owner as `ledger keygen` writes it.
    std::fs::write(&key, test_key().encode()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = base.parent().unwrap().join("bundle");
    let export = |data_dir: &Path| {
        ledger(&[
            "export",
            "--framework",
            "soc2",
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2100-01-01T00:00:00Z",
            "--out",
            out.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    };
    let run = export(&dir);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("stored entry 7") && stderr.contains("canonical"),
        "{stderr}"
    );
    assert!(!out.exists(), "a partial bundle was left");
    // The same export of the undamaged copy succeeds.
    let run = export(&base);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("events.parquet").exists());
}
