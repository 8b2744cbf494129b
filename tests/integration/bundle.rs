//! Evidence bundles: export from a populated ledger, verify offline, and catch every tamper by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ledger::bundle::{self, Row, RowWriter, files};
use ledger::core::findings::Summary;
use ledger::core::note::SignerKey;
use ledger::export::{ExportConfig, Source, export};
use ledger::http::Limits;
use ledger::sequencer::SequencerConfig;
use ledger::verify::{Verification, verify};
use serde_json::{Value, json};

use crate::common::{TestServer, add_source, copy_dir, test_key, verifier};

const DAY: i64 = 86_400_000_000;
/// 2026-11-01T00:00:00Z
const NOV1: i64 = 1_793_491_200_000_000;

fn ev(id: &str, kind: &str, request: &str, at: &str) -> Value {
    json!({
        "event_id": id, "type": kind, "request_id": request, "occurred_at": at,
        "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
        "action": {"name": "grant admin", "category": "privilege_escalation", "risk": "critical"},
        "resource": {"id": "iam://prod/role/admin", "environment": "prod"},
    })
}

fn decided(id: &str, kind: &str, request: &str, at: &str, reviewer: &str) -> Value {
    let mut e = ev(id, kind, request, at);
    e["reviewer"] = json!({"id": reviewer, "idp": "okta"});
    e["channel"] = json!("slack");
    e
}

/// A ledger whose clock the test sets: day 1 (Nov 1) context, day 2 (Nov 2) the period, day 3 after.
struct Fixture {
    server: TestServer,
    clock: Arc<AtomicI64>,
    tmp: tempfile::TempDir,
    auditor: String,
}

impl Fixture {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let token = add_source(&dir, "gateway");
        let auditor = crate::common::add_auditor(&dir, "external-audit");
        let clock = Arc::new(AtomicI64::new(NOV1 + 3_600_000_000));
        let c = clock.clone();
        let sequencer = SequencerConfig {
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
            ..SequencerConfig::default()
        };
        let server = TestServer::start_on(dir, token, None, Limits::default(), sequencer).await;
        Self {
            server,
            clock,
            tmp,
            auditor,
        }
    }

    async fn post_at(&self, micros: i64, events: Vec<Value>) {
        self.clock.store(micros, Ordering::SeqCst);
        let (status, body) = self.server.post_json(&json!(events)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// The scenario of docs/bundle-format.md: one case per finding rule.
    async fn populate(&self) {
        let d1 = NOV1 + 3_600_000_000;
        let d2 = NOV1 + DAY + 3_600_000_000;
        self.post_at(
            d1,
            vec![
                ev("a1", "approval.requested", "req-A", "2026-11-01T01:00:00Z"),
                ev("b1", "approval.requested", "req-B", "2026-11-01T01:00:00Z"),
                ev("x1", "approval.requested", "req-X", "2026-11-01T01:00:00Z"),
            ],
        )
        .await;
        self.post_at(
            d2,
            vec![
                decided(
                    "a2",
                    "approval.approved",
                    "req-A",
                    "2026-11-02T01:00:00Z",
                    "bob",
                ),
                ev("a3", "action.executed", "req-A", "2026-11-02T01:05:00Z"),
                decided(
                    "b2",
                    "approval.approved",
                    "req-B",
                    "2026-11-02T01:00:00Z",
                    "alice",
                ),
                ev("c1", "action.executed", "req-C", "2026-11-02T02:00:00Z"),
            ],
        )
        .await;
        let mut emergency = ev("e1", "action.executed", "req-E", "2026-11-02T03:00:00Z");
        emergency["emergency"] = json!(true);
        self.post_at(
            d2 + 60_000_000,
            vec![
                ev("d1", "approval.requested", "req-D", "2026-11-02T02:00:00Z"),
                decided(
                    "d2",
                    "approval.denied",
                    "req-D",
                    "2026-11-02T02:10:00Z",
                    "bob",
                ),
                ev("d3", "action.executed", "req-D", "2026-11-02T02:20:00Z"),
                emergency,
                decided(
                    "e2",
                    "approval.approved",
                    "req-E",
                    "2026-11-02T03:30:00Z",
                    "carol",
                ),
                ev("f1", "approval.requested", "req-F", "2026-11-02T04:00:00Z"),
            ],
        )
        .await;
        self.post_at(
            NOV1 + 2 * DAY + 3_600_000_000,
            vec![
                decided(
                    "f2",
                    "approval.approved",
                    "req-F",
                    "2026-11-03T01:00:00Z",
                    "bob",
                ),
                ev("g1", "approval.requested", "req-G", "2026-11-03T01:00:00Z"),
            ],
        )
        .await;
    }

    fn export(
        &self,
        name: &str,
        from: i64,
        to: i64,
        framework: &str,
        since: Option<String>,
    ) -> PathBuf {
        let out = self.tmp.path().join(name);
        let config = ExportConfig {
            framework: framework.into(),
            from,
            to,
            out: out.clone(),
            source: Source::DataDir {
                path: self.server.data_dir.clone(),
                key: Box::new(test_key()),
            },
            since,
            now: NOV1 + 10 * DAY,
            progress: false,
        };
        export(&config).unwrap();
        out
    }
}

fn failed(v: &Verification) -> Vec<&'static str> {
    v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
}

fn assert_passes(dir: &Path) -> Verification {
    let v = verify(dir, &verifier(), None).unwrap();
    assert!(v.ok, "{:#?}", v.checks);
    v
}

fn rows(path: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    bundle::read_rows(path, |r| {
        out.push(r);
        Ok(())
    })
    .unwrap();
    out
}

fn write_rows(path: &Path, rows: Vec<Row>) {
    let mut w = RowWriter::create(path).unwrap();
    for r in rows {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
}

/// Applies `tamper` to a copy of `bundle` and returns the failing checks.
fn tampered(bundle: &Path, name: &str, tamper: impl FnOnce(&Path)) -> Vec<&'static str> {
    let copy = bundle.parent().unwrap().join(format!("tampered-{name}"));
    copy_dir(bundle, &copy);
    tamper(&copy);
    let v = verify(&copy, &verifier(), None).unwrap();
    assert!(!v.ok, "{name}: tamper not detected");
    failed(&v)
}

/// The Parquet choices `bundle::writer_properties` documents: zstd; no dictionary where values
/// are all distinct; no min/max statistics on the leaf and hash columns, but on the rest.
fn assert_writer_choices(path: &Path) {
    use parquet::basic::{Compression, Encoding};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    for column in group.columns() {
        let name = column.column_path().string();
        assert!(
            matches!(column.compression(), Compression::ZSTD(_)),
            "{name}"
        );
        let dictionary = column.encodings().any(|e| e == Encoding::RLE_DICTIONARY);
        // (Booleans are never dictionary-encoded.)
        let distinct = [
            "index",
            "leaf",
            "leaf_hash",
            "event_id",
            "request_id",
            "emergency",
        ];
        assert_eq!(dictionary, !distinct.contains(&name.as_str()), "{name}");
        let no_stats = ["leaf", "leaf_hash", "inclusion_proof.list.item"];
        assert_eq!(
            column.statistics().is_none(),
            no_stats.contains(&name.as_str()),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_findings_and_every_tamper_is_caught_by_name() {
    let f = Fixture::new().await;
    f.populate().await;
    // An older genuine checkpoint (size 7), read beside the running server.
    let scratch = tempfile::tempdir().unwrap();
    let early_note = ledger::store::Store::open_secondary(&f.server.data_dir, scratch.path())
        .unwrap()
        .checkpoint_at(7)
        .unwrap()
        .unwrap();
    let day2 = f.export("soc2", NOV1 + DAY, NOV1 + 2 * DAY, "soc2", None);
    let v = assert_passes(&day2);
    assert!(
        v.checks
            .iter()
            .any(|c| c.name == "summary recomputed" && c.ok)
    );

    let manifest: bundle::Manifest =
        serde_json::from_slice(&std::fs::read(day2.join(files::MANIFEST)).unwrap()).unwrap();
    assert_eq!(
        (manifest.index_range.start, manifest.index_range.end),
        (3, 13)
    );
    assert_writer_choices(&day2.join(files::EVENTS));
    assert_eq!(
        (
            manifest.rows.events,
            manifest.rows.boundaries,
            manifest.rows.context
        ),
        (10, 2, 2)
    );
    let summary: Summary =
        serde_json::from_slice(&std::fs::read(day2.join(files::SUMMARY)).unwrap()).unwrap();
    let ids = |l: &[ledger::core::findings::Finding]| {
        l.iter().map(|f| f.request_id.clone()).collect::<Vec<_>>()
    };
    let fi = &summary.findings;
    assert_eq!(ids(&fi.self_approval), ["req-B"]);
    assert_eq!(ids(&fi.executed_without_approval), ["req-C"]);
    assert_eq!(ids(&fi.executed_after_denial_or_expiry), ["req-D"]);
    assert_eq!(ids(&fi.emergency_late_approval), ["req-E"]);
    assert_eq!(
        ids(&fi.open_requests),
        ["req-F"],
        "req-F is decided only on day 3"
    );
    assert!(fi.approved_after_execution.is_empty());
    assert_eq!(summary.population.rows, 10);
    assert_eq!(summary.population.by_type["action.executed"], 4);
    // The raw JSON carries the contract keys.
    let raw: Value =
        serde_json::from_slice(&std::fs::read(day2.join(files::SUMMARY)).unwrap()).unwrap();
    for key in [
        "self_approval",
        "executed_without_approval",
        "approved_after_execution",
        "executed_after_denial_or_expiry",
        "emergency_late_approval",
        "open_requests",
    ] {
        assert!(raw["findings"][key].is_array(), "{key}");
    }
    assert!(raw["population"]["by_type"].is_object());
    let report = std::fs::read_to_string(day2.join(files::REPORT)).unwrap();
    assert!(report.contains("<svg") && report.contains("req-B") && !report.contains("<script"));

    // Every tamper, caught and named.
    let events = |d: &Path| d.join(files::EVENTS);
    let has = |list: &[&str], name: &str| list.contains(&name);
    let t = tampered(&day2, "leaf-byte", |d| {
        let mut r = rows(&events(d));
        let at = r[2].leaf.len() / 2;
        r[2].leaf[at] ^= 0x01;
        write_rows(&events(d), r);
    });
    assert!(has(&t, "leaf hashes"), "{t:?}");
    let t = tampered(&day2, "projection", |d| {
        let mut r = rows(&events(d));
        r[4].projection.reviewer_id = Some("mallory".into());
        write_rows(&events(d), r);
    });
    assert!(has(&t, "projections") && !has(&t, "leaf hashes"), "{t:?}");
    let t = tampered(&day2, "dropped", |d| {
        let mut r = rows(&events(d));
        r.remove(3);
        write_rows(&events(d), r);
    });
    assert!(
        has(&t, "indexes contiguous") && has(&t, "hash chain"),
        "{t:?}"
    );
    let t = tampered(&day2, "swapped", |d| {
        let mut r = rows(&events(d));
        r.swap(1, 2);
        write_rows(&events(d), r);
    });
    assert!(
        has(&t, "indexes contiguous") && has(&t, "hash chain"),
        "{t:?}"
    );
    let t = tampered(&day2, "duplicated", |d| {
        let mut r = rows(&events(d));
        let dup = r[5].clone();
        r.insert(5, dup);
        write_rows(&events(d), r);
    });
    assert!(has(&t, "indexes contiguous"), "{t:?}");
    let t = tampered(&day2, "boundary", |d| {
        let path = d.join(files::BOUNDARIES);
        let mut r = rows(&path);
        r.pop();
        write_rows(&path, r);
    });
    assert!(has(&t, "period boundaries"), "{t:?}");
    let t = tampered(&day2, "old-checkpoint", |d| {
        std::fs::write(d.join(files::CHECKPOINT), &early_note).unwrap()
    });
    assert!(
        !has(&t, "checkpoint signature"),
        "an older checkpoint is genuine: {t:?}"
    );
    assert!(
        has(&t, "manifest matches checkpoint") || has(&t, "inclusion proofs"),
        "{t:?}"
    );
    let t = tampered(&day2, "forged-sig", |d| {
        let forger = SignerKey::from_seed(crate::common::ORIGIN, &[13; 32]).unwrap();
        let manifest = std::fs::read(d.join(files::MANIFEST)).unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD.encode(forger.sign_bytes(&manifest));
        std::fs::write(d.join(files::MANIFEST_SIG), sig).unwrap();
    });
    assert_eq!(t, ["manifest signature"]);
    let t = tampered(&day2, "summary-count", |d| {
        let path = d.join(files::SUMMARY);
        let mut s: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        s["population"]["rows"] = json!(9);
        std::fs::write(&path, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    });
    assert!(
        has(&t, "summary recomputed") && has(&t, "file hashes"),
        "{t:?}"
    );
    // controls.json is recomputed from the rows' controls as verify reads them.
    let t = tampered(&day2, "controls-count", |d| {
        let path = d.join(files::CONTROLS);
        let mut c: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let n = c["controls"][0]["rows_in_period"].as_u64().unwrap();
        c["controls"][0]["rows_in_period"] = json!(n + 1);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    });
    assert!(
        has(&t, "controls recomputed") && has(&t, "file hashes"),
        "{t:?}"
    );
    // An events file cut short cannot be read: every check that needs its rows fails.
    let t = tampered(&day2, "truncated-events", |d| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(events(d))
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len / 2).unwrap();
    });
    for check in ["file hashes", "controls recomputed", "indexes contiguous"] {
        assert!(has(&t, check), "{check}: {t:?}");
    }
    let t = tampered(&day2, "row-controls", |d| {
        let mut r = rows(&events(d));
        r[0].controls.clear();
        write_rows(&events(d), r);
    });
    assert!(
        has(&t, "controls recomputed") && has(&t, "projections"),
        "{t:?}"
    );
    let t = tampered(&day2, "report", |d| {
        let path = d.join(files::REPORT);
        let html = std::fs::read_to_string(&path)
            .unwrap()
            .replace("Self-approval (1)", "Self-approval (0)");
        std::fs::write(&path, html).unwrap();
    });
    assert!(has(&t, "report and OSCAL recomputed"), "{t:?}");
    // Indexes and times at the ends of their ranges fail checks; they must not overflow the
    // verifier's arithmetic (a panic in a debug build, wrapped sums in a release one).
    let t = tampered(&day2, "extreme-index", |d| {
        let mut r = rows(&events(d));
        r[2].projection.index = u64::MAX;
        write_rows(&events(d), r);
        let path = d.join(files::BOUNDARIES);
        let mut r = rows(&path);
        r[0].projection.index = u64::MAX;
        write_rows(&path, r);
    });
    assert!(
        has(&t, "indexes contiguous") && has(&t, "period boundaries"),
        "{t:?}"
    );
    let t = tampered(&day2, "extreme-time", |d| {
        let mut r = rows(&events(d));
        r.iter_mut()
            .for_each(|r| r.projection.occurred_at = i64::MAX);
        write_rows(&events(d), r);
        let path = d.join(files::CONTEXT);
        let mut r = rows(&path);
        r.iter_mut()
            .for_each(|r| r.projection.occurred_at = i64::MIN);
        write_rows(&path, r);
    });
    assert!(
        has(&t, "projections") && has(&t, "summary recomputed"),
        "{t:?}"
    );
    let other = f.export("soc2-day3", NOV1 + 2 * DAY, NOV1 + 3 * DAY, "soc2", None);
    assert_passes(&other);
    let t = tampered(&day2, "swapped-file", |d| {
        std::fs::copy(other.join(files::CONTEXT), d.join(files::CONTEXT)).unwrap();
    });
    assert!(has(&t, "file hashes"), "{t:?}");

    // The key must come from the user: another key fails even on an intact bundle.
    let stranger = SignerKey::from_seed(crate::common::ORIGIN, &[99; 32]).unwrap();
    let v = verify(&day2, stranger.verifier(), None).unwrap();
    assert!(
        failed(&v).contains(&"checkpoint signature") && failed(&v).contains(&"manifest signature")
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fedramp_bundle_has_oscal_and_a_period_without_events_verifies() {
    let f = Fixture::new().await;
    f.populate().await;
    let fed = f.export("fedramp", NOV1 + DAY, NOV1 + 2 * DAY, "fedramp", None);
    assert_passes(&fed);
    let oscal: Value =
        serde_json::from_slice(&std::fs::read(fed.join(files::OSCAL)).unwrap()).unwrap();
    let ar = &oscal["assessment-results"];
    let uuid_v4 = |v: &Value| {
        let s = v.as_str().unwrap();
        s.len() == 36 && s.as_bytes()[14] == b'4'
    };
    assert!(uuid_v4(&ar["uuid"]));
    assert_eq!(ar["metadata"]["oscal-version"], "1.1.2");
    for k in ["title", "last-modified", "version"] {
        assert!(ar["metadata"][k].is_string(), "{k}");
    }
    assert!(ar["import-ap"]["href"].is_string());
    let result = &ar["results"][0];
    assert_eq!(result["start"], "2026-11-02T00:00:00.000000Z");
    let reviewed: Vec<&str> =
        result["reviewed-controls"]["control-selections"][0]["include-controls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["control-id"].as_str().unwrap())
            .collect();
    for id in ["ac-2", "ac-5", "ac-6.9", "au-9.3", "au-10", "cm-3", "si-7"] {
        assert!(reviewed.contains(&id), "{id}");
    }
    assert!(!result["findings"].as_array().unwrap().is_empty());
    let t = tampered(&fed, "oscal", |d| {
        let path = d.join(files::OSCAL);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("not-satisfied", "satisfied");
        std::fs::write(&path, text).unwrap();
    });
    assert!(t.contains(&"report and OSCAL recomputed"), "{t:?}");
    assert!(
        result["observations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| uuid_v4(&o["uuid"]))
    );

    // A period with no entries: no rows, both boundaries, everything verifies.
    let quiet_from = NOV1 + DAY + 12 * 3_600_000_000;
    let empty = f.export(
        "empty",
        quiet_from,
        quiet_from + 3_600_000_000,
        "soc2",
        None,
    );
    let v = assert_passes(&empty);
    let m: bundle::Manifest =
        serde_json::from_slice(&std::fs::read(empty.join(files::MANIFEST)).unwrap()).unwrap();
    assert_eq!((m.rows.events, m.rows.boundaries), (0, 2));
    assert!(v.checks.iter().all(|c| c.ok));
    // Regression: period_before_the_first_entry_verifies (its only boundary is entry 0).
    let before = f.export("before", NOV1 - DAY, NOV1, "soc2", None);
    assert_passes(&before);
    // Removing a boundary of the empty period is still caught.
    let t = tampered(&empty, "empty-boundary", |d| {
        let path = d.join(files::BOUNDARIES);
        let mut r = rows(&path);
        r.remove(0);
        write_rows(&path, r);
    });
    assert!(t.contains(&"period boundaries"), "{t:?}");
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_while_ingesting_and_consistency_since_an_earlier_export() {
    let f = Arc::new(Fixture::new().await);
    f.populate().await;
    let first = f.export("first", NOV1, NOV1 + 3 * DAY, "soc2", None);
    assert_passes(&first);
    let first_checkpoint = std::fs::read_to_string(first.join(files::CHECKPOINT)).unwrap();

    // Keep the server ingesting while exporting from its data dir.
    let writer = {
        let f = f.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let e = ev(
                    &format!("live-{i}"),
                    "approval.requested",
                    &format!("req-live-{i}"),
                    "2026-11-04T00:00:00Z",
                );
                f.post_at(NOV1 + 3 * DAY + i * 1_000_000, vec![e]).await;
            }
        })
    };
    let f2 = f.clone();
    let old = first_checkpoint.clone();
    let second = tokio::task::spawn_blocking(move || {
        f2.export("second", NOV1, NOV1 + 30 * DAY, "soc2", Some(old))
    })
    .await
    .unwrap();
    writer.await.unwrap();
    assert_passes(&second);
    let v = verify(&second, &verifier(), Some(&first_checkpoint)).unwrap();
    assert!(v.ok, "{:#?}", v.checks);
    assert!(
        v.checks
            .iter()
            .any(|c| c.name == "consistency with earlier checkpoint" && c.ok)
    );
    // A checkpoint from a different history is refused.
    let forked = test_key().sign_note(&ledger::core::note::checkpoint_body(
        crate::common::ORIGIN,
        5,
        &[1; 32],
    ));
    let v = verify(&second, &verifier(), Some(&forked)).unwrap();
    assert!(failed(&v).contains(&"consistency with earlier checkpoint"));
    // The server kept serving: the export never blocked or changed it.
    let (status, _) = f
        .server
        .post_json(&ev(
            "after",
            "approval.requested",
            "req-after",
            "2026-11-05T00:00:00Z",
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_over_http_with_an_auditor_token_matches_the_data_dir_export() {
    let f = Arc::new(Fixture::new().await);
    f.populate().await;
    let (from, to) = (NOV1 + DAY, NOV1 + 2 * DAY);
    let local = f.export("local", from, to, "soc2", None);
    let remote_out = f.tmp.path().join("remote");
    let config = ExportConfig {
        framework: "soc2".into(),
        from,
        to,
        out: remote_out.clone(),
        source: Source::Server {
            url: f.server.base.clone(),
            token: f.auditor.clone(),
            tls: Default::default(),
        },
        since: None,
        now: NOV1 + 10 * DAY,
        progress: false,
    };
    tokio::task::spawn_blocking(move || export(&config).unwrap())
        .await
        .unwrap();
    assert_passes(&remote_out);
    for file in [files::EVENTS, files::BOUNDARIES, files::CONTEXT] {
        assert_eq!(
            rows(&local.join(file)),
            rows(&remote_out.join(file)),
            "{file}"
        );
    }
    assert_eq!(
        std::fs::read(local.join(files::SUMMARY)).unwrap(),
        std::fs::read(remote_out.join(files::SUMMARY)).unwrap()
    );

    // Roles: a source cannot use the export API, an auditor cannot write, no token is 401.
    let c = &f.server.client;
    let base = &f.server.base;
    let r = c
        .get(format!("{base}/v1/export/rows?start=0&end=1&tree_size=1"))
        .bearer_auth(&f.server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{base}/v1/export/rows?start=0&end=1&tree_size=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/v1/events"))
        .bearer_auth(&f.auditor)
        .json(&ev(
            "z",
            "approval.requested",
            "req-z",
            "2026-11-05T00:00:00Z",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{base}/v1/entries/0"))
        .bearer_auth(&f.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "auditors read entries");

    // The manifest endpoint signs only manifests naming one of the log's own checkpoints.
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(local.join(files::MANIFEST)).unwrap()).unwrap();
    // The manifest as `ledger export` serializes it (struct field order, pretty).
    let canonical = |v: &serde_json::Value| {
        serde_json::to_vec_pretty(
            &serde_json::from_value::<ledger::bundle::Manifest>(v.clone()).unwrap(),
        )
        .unwrap()
    };
    let sign = |body: Vec<u8>| {
        c.post(format!("{base}/v1/export/manifest-signature"))
            .bearer_auth(&f.auditor)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(sign(canonical(&m)).await.unwrap().status(), 200);
    // ... only in the form `ledger export` writes (no unknown fields, no duplicate keys) ...
    assert_eq!(
        sign(serde_json::to_vec(&m).unwrap())
            .await
            .unwrap()
            .status(),
        400,
        "compact JSON is not the canonical form"
    );
    let mut extra = String::from_utf8(canonical(&m)).unwrap();
    extra.insert_str(1, "\n  \"signed_by_the_log\": true,");
    assert_eq!(sign(extra.into_bytes()).await.unwrap().status(), 400);
    // ... and only if its population is the log's own: a summary of fewer context rows is refused.
    let mut fewer = m.clone();
    fewer["rows"]["context"] = json!(1);
    assert_eq!(sign(canonical(&fewer)).await.unwrap().status(), 400);
    let mut other_summary = m.clone();
    other_summary["files"]["summary.json"] = json!("00".repeat(32));
    assert_eq!(sign(canonical(&other_summary)).await.unwrap().status(), 400);
    m["checkpoint"]["root"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(sign(canonical(&m)).await.unwrap().status(), 400);
    let note = ledger::core::note::checkpoint_body(crate::common::ORIGIN, 1, &[0; 32]);
    assert_eq!(
        sign(note.into_bytes()).await.unwrap().status(),
        400,
        "never signs note text"
    );
}
