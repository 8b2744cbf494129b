//! `ledger bench`: a load generator for a running `ledger serve`, and the storage floor to judge it by.
//!
//! Owns: generating unique schema-valid events, driving them over HTTP (one event per POST on C
//! connections, or B per POST as a JSON array or NDJSON), latency to a durable receipt, checking a
//! sample of receipts' proofs, and the floor: the same leaf bytes written straight to a fresh RocksDB
//! as synced batches of the same size. Must not touch: the server's data dir.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::core::event::prepare_bytes;
use crate::core::hash::from_hex;
use crate::core::hash::{Blake3, TreeHasher};
use crate::core::leaf::{LeafHeader, encode_leaf, format_micros};
use crate::core::note::VerifierKey;
use crate::core::receipt::{BatchReceipt, Receipt, verify_batch_receipt, verify_receipt};
use crate::store::{Commit, Store};

/// How requests carry events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// One event per POST.
    Single,
    /// `batch` events per POST as a JSON array.
    Array,
    /// `batch` events per POST as NDJSON.
    NdJson,
}

/// Which answer form the run asks `POST /v1/events` for (its `receipts` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ReceiptForm {
    /// One full receipt per event (the default form).
    Each,
    /// One batch receipt per request (`?receipts=batch`).
    Batch,
}

/// A load run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Server base URL.
    pub url: String,
    /// What to trust for an `https://` URL.
    pub tls: crate::tls::ClientTls,
    /// A source token.
    pub token: String,
    /// Request shape.
    pub mode: Mode,
    /// Concurrent connections.
    pub connections: usize,
    /// Events per request (1 in single mode).
    pub batch: usize,
    /// The answer form asked for.
    pub receipts: ReceiptForm,
    /// Stop after this many events.
    pub events: u64,
    /// Stop after this long.
    pub duration: Duration,
    /// Receipts whose proofs (and leaves) are checked after the run.
    pub sample: usize,
    /// Where to measure the floor (a fresh directory is created inside); `None` skips it.
    pub floor_dir: Option<PathBuf>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Request shape.
    pub mode: Mode,
    /// Connections.
    pub connections: usize,
    /// Events per request.
    pub batch: usize,
    /// The answer form asked for.
    pub receipts: ReceiptForm,
    /// Events acknowledged with a receipt.
    pub events: u64,
    /// Requests acknowledged.
    pub requests: u64,
    /// Requests answered 503 (overload; retried).
    pub pushbacks: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Request latency to a durable receipt.
    pub latency: Latency,
    /// Receipts checked against the checkpoint and the stored leaf (a batch receipt counts once).
    pub receipts_verified: usize,
    /// Floor: synced batches of the same leaves straight into RocksDB, events/s.
    pub floor_events_per_sec: Option<f64>,
    /// `events_per_sec / floor_events_per_sec`.
    pub ratio: Option<f64>,
}

/// Bench failures (exit code 2; a receipt that does not verify is exit code 1 in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The server could not be reached or answered unexpectedly.
    #[error("{0}")]
    Http(String),
    /// A sampled receipt did not verify.
    #[error("receipt for index {index} does not verify: {message}")]
    BadReceipt {
        /// Its index.
        index: u64,
        /// Why.
        message: String,
    },
    /// The floor measurement failed.
    #[error("floor: {0}")]
    Floor(String),
}

fn http(e: impl std::fmt::Display) -> BenchError {
    BenchError::Http(e.to_string())
}

/// A schema-valid event, unique by `run` and `n`, about 500 bytes of canonical JSON.
#[must_use]
pub fn event_json(run: &str, n: u64) -> String {
    let mut out = String::with_capacity(640);
    push_event_json(&mut out, run, n);
    out
}

/// Appends [`event_json`]'s event to `out`. The load generator writes a body of them per request
/// on the same cores as the server it measures, so it writes each piece in place: no formatting
/// machinery and no string per event (a `format!` per event and a joined copy were three quarters
/// of the generator's user CPU per event; `docs/performance.md`, "Session 16").
pub fn push_event_json(out: &mut String, run: &str, n: u64) {
    let kinds = ["approval.requested", "approval.approved", "action.executed"];
    let kind = kinds[(n % 3) as usize];
    let mut number = itoa::Buffer::new();
    out.push_str(r#"{"event_id":""#);
    out.push_str(run);
    out.push('-');
    out.push_str(number.format(n));
    out.push_str(r#"","type":""#);
    out.push_str(kind);
    out.push_str(r#"","request_id":""#);
    out.push_str(run);
    out.push_str("-req-");
    out.push_str(number.format(n / 3));
    out.push_str(r#"","occurred_at":"2026-11-21T10:00:00.123Z","actor":{"id":"agent-"#);
    out.push_str(number.format(n % 97));
    out.push_str(r#"","kind":"agent","on_behalf_of":"user-"#);
    out.push_str(number.format(n % 97));
    out.push_str(concat!(
        r#""},"action":{"name":"export table customers","category":"data_export","risk":"high"},"#,
        r#""resource":{"id":"warehouse://prod/customers","environment":"prod","type":"table"}"#
    ));
    if kind == "approval.approved" {
        out.push_str(
            r#","reviewer":{"id":"reviewer-3","idp":"okta","groups":["security"]},"channel":"slack""#,
        );
    }
    out.push_str(concat!(
        r#","context":{"model":"model-x","#,
        r#""prompt":"export the customers table for the quarterly revenue review"}}"#
    ));
}

impl Mode {
    /// The `content-type` of its requests.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Single | Self::Array => "application/json",
            Self::NdJson => "application/x-ndjson",
        }
    }
}

/// The body of one request of events `numbers`, as `mode` sends it.
fn request_body(mode: Mode, run: &str, numbers: std::ops::Range<u64>) -> String {
    let mut body = String::with_capacity(640 * (numbers.end - numbers.start) as usize + 2);
    let (open, separator, close) = match mode {
        // One event (a single-mode request holds one), as an object.
        Mode::Single => ("", "", ""),
        Mode::Array => ("[", ",", "]"),
        Mode::NdJson => ("", "\n", ""),
    };
    body.push_str(open);
    for n in numbers.clone() {
        if n > numbers.start {
            body.push_str(separator);
        }
        push_event_json(&mut body, run, n);
    }
    body.push_str(close);
    body
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[k - 1]) / 1000.0
}

/// Runs the load, checks the sample, measures the floor.
pub async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let client = config
        .tls
        .client()
        .pool_max_idle_per_host(config.connections)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(http)?;
    let key_text = client
        .get(format!("{}/v1/verifier-key", config.url))
        .send()
        .await
        .map_err(http)?
        .text()
        .await
        .map_err(http)?;
    let key = VerifierKey::parse(key_text.trim()).map_err(http)?;
    let mut tag = [0u8; 6];
    getrandom::fill(&mut tag).map_err(http)?;
    let run = format!("bench-{}", hex::encode(tag));
    let batch = if config.mode == Mode::Single {
        1
    } else {
        config.batch.max(1)
    } as u64;

    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pushbacks = Arc::new(AtomicU64::new(0));
    let sample: Arc<Mutex<Vec<Sampled>>> = Arc::default();
    let path = match config.receipts {
        ReceiptForm::Each => format!("{}/v1/events", config.url),
        ReceiptForm::Batch => format!("{}/v1/events?receipts=batch", config.url),
    };
    // The URL parsed and the headers built once, not per request (parsing the URL, with its
    // IDNA mapping, was 3-4 % of the generator's samples in single mode).
    let path = reqwest::Url::parse(&path).map_err(http)?;
    let mut headers = reqwest::header::HeaderMap::new();
    let mut bearer =
        reqwest::header::HeaderValue::try_from(format!("Bearer {}", config.token)).map_err(http)?;
    bearer.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static(config.mode.content_type()),
    );
    let poster = config
        .tls
        .client()
        .pool_max_idle_per_host(config.connections)
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .map_err(http)?;
    let sample_every = (config.events / config.sample.max(1) as u64).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.connections.max(1) {
        let (poster, next, stop, pushbacks, sample, run, config, path) = (
            poster.clone(),
            next.clone(),
            stop.clone(),
            pushbacks.clone(),
            sample.clone(),
            run.clone(),
            config.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut done = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) || started.elapsed() >= config.duration {
                    break;
                }
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= config.events {
                    break;
                }
                let last = (first + batch).min(config.events);
                let body = request_body(config.mode, &run, first..last);
                // Shared, not copied, by each attempt (a 503 is retried with the same body).
                let body = bytes::Bytes::from(body);
                loop {
                    let t = Instant::now();
                    let response = poster
                        .post(path.clone())
                        .body(body.clone())
                        .send()
                        .await
                        .map_err(http)?;
                    let status = response.status();
                    let bytes = response.bytes().await.map_err(http)?;
                    if status == 503 {
                        pushbacks.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    if status != 200 {
                        stop.store(true, Ordering::Relaxed);
                        let hint = if status == 429 {
                            " (the server's per-source rate limit: for a load run, start it with \
                             `--source-rate 0`)"
                        } else {
                            ""
                        };
                        return Err(BenchError::Http(format!(
                            "HTTP {status}: {}{hint}",
                            String::from_utf8_lossy(&bytes)
                        )));
                    }
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    done += last - first;
                    if (first..last).any(|n| n % sample_every == 0) {
                        let sampled = Sampled::parse(config.receipts, &bytes, &run, first..last)?;
                        sample.lock().await.push(sampled);
                    }
                    break;
                }
            }
            Ok::<_, BenchError>((latencies, done))
        }));
    }
    let mut latencies = Vec::new();
    let mut events = 0u64;
    for t in tasks {
        let (l, d) = t.await.map_err(http)??;
        latencies.extend(l);
        events += d;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();

    // Every sampled receipt: checkpoint signature, inclusion proof (or multi-proof of the whole
    // request), and the stored leaf's hash (of the first event, for a batch receipt).
    let receipts = std::mem::take(&mut *sample.lock().await);
    for r in &receipts {
        let index = r.first_index();
        let leaf = client
            .get(format!("{}/v1/entries/{index}", config.url))
            .bearer_auth(&config.token)
            .send()
            .await
            .map_err(http)?
            .bytes()
            .await
            .map_err(http)?;
        r.verify(&key, &leaf)
            .map_err(|message| BenchError::BadReceipt { index, message })?;
    }

    let events_per_sec = events as f64 / seconds;
    let floor = match &config.floor_dir {
        Some(dir) => {
            let dir = dir.clone();
            let (run, n) = (run.clone(), events.max(batch));
            let limit = config.duration;
            Some(
                tokio::task::spawn_blocking(move || floor(&dir, &run, n, batch, limit))
                    .await
                    .map_err(|e| BenchError::Floor(e.to_string()))??,
            )
        }
        None => None,
    };
    Ok(BenchReport {
        mode: config.mode,
        connections: config.connections,
        batch: batch as usize,
        receipts: config.receipts,
        events,
        requests: latencies.len() as u64,
        pushbacks: pushbacks.load(Ordering::Relaxed),
        seconds,
        events_per_sec,
        latency: Latency {
            p50_ms: percentile(&latencies, 0.50),
            p90_ms: percentile(&latencies, 0.90),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
        },
        receipts_verified: receipts.len(),
        floor_events_per_sec: floor,
        ratio: floor.map(|f| events_per_sec / f),
    })
}

/// A sampled answer, kept for checking after the run.
enum Sampled {
    /// The first receipt of a default-form answer.
    Each(Receipt),
    /// A whole batch receipt.
    Batch(BatchReceipt),
}

impl Sampled {
    /// Parses an answer to the request of events `numbers`; a batch receipt must list exactly
    /// those events, in order, each new.
    fn parse(
        form: ReceiptForm,
        body: &[u8],
        run: &str,
        numbers: std::ops::Range<u64>,
    ) -> Result<Self, BenchError> {
        match form {
            ReceiptForm::Each => {
                #[derive(serde::Deserialize)]
                struct Body {
                    receipts: Vec<Receipt>,
                }
                let parsed: Body = serde_json::from_slice(body).map_err(http)?;
                let first = parsed.receipts.into_iter().next();
                first
                    .map(Self::Each)
                    .ok_or_else(|| http("an answer without receipts"))
            }
            ReceiptForm::Batch => {
                let parsed: BatchReceipt = serde_json::from_slice(body).map_err(http)?;
                let listed = parsed.entries.iter().map(|e| e.event_id.as_str());
                let posted = numbers.map(|n| format!("{run}-{n}"));
                if !listed.eq(posted.collect::<Vec<_>>().iter().map(String::as_str)) {
                    return Err(http("a batch receipt does not list the posted events"));
                }
                if parsed.entries.iter().any(|e| e.duplicate) {
                    // Only if an earlier attempt of this request was committed although it was
                    // answered 503 (a failed commit that reached the WAL): worth knowing.
                    return Err(http(
                        "a batch receipt lists events of this run as already appended",
                    ));
                }
                Ok(Self::Batch(parsed))
            }
        }
    }

    /// The index of the (first) event it proves.
    fn first_index(&self) -> u64 {
        match self {
            Self::Each(r) => r.index,
            Self::Batch(b) => b.entries.first().map_or(0, |e| e.index),
        }
    }

    /// Checks it with the log's key and the stored leaf of [`Sampled::first_index`].
    fn verify(&self, key: &VerifierKey, leaf: &[u8]) -> Result<(), String> {
        match self {
            Self::Each(r) => verify_receipt(r, key, Some(leaf))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Self::Batch(b) => {
                verify_batch_receipt(b, key, None).map_err(|e| e.to_string())?;
                let first = b.entries.first().ok_or("an empty batch receipt")?;
                if from_hex(&first.leaf_hash) != Some(Blake3::leaf(leaf)) {
                    return Err("the stored leaf does not hash to the receipt's leaf_hash".into());
                }
                Ok(())
            }
        }
    }
}

/// Writes `n` leaves of the same shape as the run's into a fresh RocksDB under `dir`, `batch` per
/// synced `WriteBatch` (entries only: no tree, no signature), and returns entries/s. Leaves are
/// built before the clock starts; the run stops early after `limit`.
pub fn floor(
    dir: &std::path::Path,
    run: &str,
    n: u64,
    batch: u64,
    limit: Duration,
) -> Result<f64, BenchError> {
    let fail = |e: &dyn std::fmt::Display| BenchError::Floor(e.to_string());
    let scratch = tempfile::Builder::new()
        .prefix("ledger-floor-")
        .tempdir_in(dir)
        .map_err(|e| fail(&e))?;
    let store = Store::open(scratch.path()).map_err(|e| fail(&e))?;
    let at = format_micros(1_795_251_960_000_000).unwrap_or_default();
    let mut prev = [0u8; 32];
    let mut leaves = Vec::with_capacity(n as usize);
    for i in 0..n {
        let event =
            prepare_bytes(event_json(run, i).as_bytes()).map_err(|e| fail(&format!("{e:?}")))?;
        let leaf = encode_leaf(
            &LeafHeader {
                index: i,
                ingested_at: &at,
                source: "bench",
                prev_leaf_hash: &prev,
                origin_signature: None,
            },
            &event.jcs,
        );
        prev = Blake3::leaf(&leaf);
        leaves.push((i, leaf));
    }
    let started = Instant::now();
    let mut written = 0u64;
    let mut leaves = leaves.into_iter();
    loop {
        let entries: Vec<_> = leaves.by_ref().take(batch as usize).collect();
        if entries.is_empty() || started.elapsed() >= limit {
            break;
        }
        written += entries.len() as u64;
        store
            .commit(&Commit {
                entries,
                ..Commit::default()
            })
            .map_err(|e| fail(&e))?;
    }
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mode's body is what the server splits into the run's events, in order.
    #[test]
    fn request_bodies_hold_the_events_in_order() {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let events = |numbers: std::ops::Range<u64>| -> Vec<serde_json::Value> {
            numbers.map(|n| parse(&event_json("r", n))).collect()
        };
        let body = request_body(Mode::Array, "r", 3..7);
        assert_eq!(Mode::Array.content_type(), "application/json");
        assert_eq!(parse(&body), serde_json::Value::Array(events(3..7)));
        let body = request_body(Mode::NdJson, "r", 3..7);
        assert_eq!(Mode::NdJson.content_type(), "application/x-ndjson");
        assert_eq!(body.lines().map(parse).collect::<Vec<_>>(), events(3..7));
        let body = request_body(Mode::Single, "r", 9..10);
        assert_eq!(Mode::Single.content_type(), "application/json");
        assert_eq!(vec![parse(&body)], events(9..10));
    }

    #[test]
    fn generated_events_are_valid_and_unique() {
        for n in 0..6 {
            let e = prepare_bytes(event_json("r", n).as_bytes()).unwrap();
            assert_eq!(e.event_id, format!("r-{n}"));
        }
    }
}
