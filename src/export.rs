//! `ledger export`: an evidence bundle for a period, from a data dir (safe while `ledger serve` runs).
//!
//! Owns: choosing the index range, streaming rows with proofs into Parquet, the bundle's other files,
//! and the all-or-nothing publication (temp dir, fsync, rename). Must not touch: the writer's data
//! dir in any way but reading (RocksDB secondary instance).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use arrow_array::{ArrayRef, RecordBatch};

use crate::bundle::{
    self, BatchBuilder, BundleError, ConsistencyFile, IndexRange, Manifest, ManifestCheckpoint,
    ManifestKey, Period, RowBatch, RowCounts, RowRef, RowWriter, Sizes, SourceKeys, Tool, files,
};
pub use crate::bundle::{ControlCounts, hash_files, json_bytes};
use crate::core::controls::{Classes, Framework};
use crate::core::findings::Digest;
use crate::core::hash::{Blake3, Hash, TreeHasher, from_hex, to_hex};
use crate::core::leaf::{Leaf, format_micros};
use crate::core::merkle::{HashReader, NodeId, ProofCursor, TreeError, consistency_proof};
use crate::core::note::{Checkpoint, NoteError, SignerKey, VerifierKey, open_checkpoint};
use crate::core::projection::{Projection, ProjectionError, RowLeaf, parse_row_leaf};
use crate::spill::{DEFAULT_BUDGET, Sorter};
use crate::store::{META_LOG_KEY, Reads, Store, StoreError};
use crate::summary::SummaryBuilder;

/// Export errors (exit code 2; nothing is left at `--out`).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `--framework` is not one the mapping knows.
    #[error("unknown framework {0:?}: use soc2 or fedramp")]
    UnknownFramework(String),
    /// `--from` is not before `--to`.
    #[error("empty period: --from must be before --to")]
    EmptyPeriod,
    /// A period end outside years 0000-9999 (it could not be written in the manifest).
    #[error("period ends must be in years 0000-9999")]
    PeriodOutOfRange,
    /// `--out` already exists.
    #[error("{0} already exists; refusing to overwrite a bundle")]
    OutExists(PathBuf),
    /// The data dir could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored node or proof could not be produced.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A stored checkpoint or key did not verify.
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    /// A stored entry is not a valid leaf.
    #[error("stored entry {index}: {message}")]
    BadEntry {
        /// Entry index.
        index: u64,
        /// What is wrong.
        message: String,
    },
    /// The signing key does not belong to this log.
    #[error("the signing key {given} is not this log's key {stored}")]
    WrongKey {
        /// Verifier key of the given signing key.
        given: String,
        /// The log's verifier key.
        stored: String,
    },
    /// `--since` names a checkpoint this log cannot extend.
    #[error("--since checkpoint: {0}")]
    Since(String),
    /// A later stage of the events file (making rows, writing them) stopped early; its own error
    /// is the one reported.
    #[error("the events stage after this one stopped")]
    StageStopped,
    /// Writing the bundle failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The server answered with an error or something unexpected.
    #[error("server: {0}")]
    Remote(String),
    /// Other I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<ProjectionError> for ExportError {
    fn from(e: ProjectionError) -> Self {
        Self::BadEntry {
            index: e.index,
            message: e.to_string(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What to export.
#[derive(Debug)]
pub struct ExportConfig {
    /// `soc2` or `fedramp`.
    pub framework: String,
    /// Period start (inclusive), microseconds since the epoch.
    pub from: i64,
    /// Period end (exclusive), microseconds since the epoch.
    pub to: i64,
    /// Bundle directory to create.
    pub out: PathBuf,
    /// Where the log is read from.
    pub source: Source,
    /// An earlier signed checkpoint to prove consistency from.
    pub since: Option<String>,
    /// The time to record as `generated_at` (microseconds).
    pub now: i64,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Where an export reads the log. Two real backends, so a trait (`LogReader`) joins them.
#[derive(Debug)]
pub enum Source {
    /// A data dir, opened as a RocksDB secondary (safe beside a running server), with the log's
    /// signing key to sign the manifest.
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// The log's signing key (boxed: it is large next to the other variant).
        key: Box<SignerKey>,
    },
    /// A running server's auditor API (for auditors without disk access); the server signs the
    /// manifest after checking it names one of its checkpoints.
    Server {
        /// Base URL, e.g. `https://ledger.example.com`.
        url: String,
        /// An auditor token.
        token: String,
        /// What to trust for an `https://` URL.
        tls: crate::tls::ClientTls,
    },
}

/// What an export needs from a log.
trait LogReader: Sync {
    /// The newest checkpoint note, verified, and the log's verifier key.
    fn head(&self) -> Result<(String, Checkpoint, VerifierKey), ExportError>;
    /// The first index below `size` whose `ingested_at` is at or after `micros`.
    fn locate(&self, size: u64, micros: i64) -> Result<u64, ExportError>;
    /// Entries `[start, end)` with their inclusion proofs at `size`, in index order.
    fn rows(&self, start: u64, end: u64, size: u64, f: &mut RowSink<'_>)
    -> Result<(), ExportError>;
    /// Finds the indexes below `before` of a request's entries, ascending, all of them (a request
    /// padded with many entries must not push its earlier decisions out of the bundle). One
    /// lookup serves every request of the period, in sorted order.
    fn request_lookup(&self) -> Box<RequestLookup<'_>>;
    /// Consistency proof between two sizes.
    fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ExportError>;
    /// Signs the manifest's bytes with the log key.
    fn sign_manifest(&self, manifest: &[u8]) -> Result<[u8; 64], ExportError>;
    /// Every signing source's origin keys.
    fn source_keys(&self) -> Result<SourceKeys, ExportError>;
}

/// Streams `[start, end)` with inclusion proofs at `size` from a store: the one implementation
/// behind both a data-dir export and the server's `GET /v1/export/rows`. Stops early after the
/// row that brings the leaf bytes to `max_bytes`; returns the index after the last row given.
pub fn proved_rows(
    store: &Store,
    start: u64,
    end: u64,
    size: u64,
    max_bytes: usize,
    f: &mut RowSink<'_>,
) -> Result<u64, ExportError> {
    // A period's rows are a scan; a boundary or context row is one or two.
    let reads = if end - start >= BLOCK {
        Reads::Scan
    } else {
        Reads::Few
    };
    let reader = MemoReader {
        store,
        reads,
        cache: RefCell::default(),
    };
    let mut cursor = ProofCursor::<Blake3>::new(size);
    let mut next = start;
    let mut bytes = 0usize;
    store.scan_entries(start, reads, |index, leaf| {
        if next >= end || bytes >= max_bytes || index != next {
            return Ok(false);
        }
        next += 1;
        bytes += leaf.len();
        // The leaf's own node is in the block its proof is read from.
        let leaf_hash = reader.read_hash(NodeId { level: 0, index })?;
        let proof = cursor.proof(index, &reader)?;
        f(ProvedRow {
            index,
            leaf,
            leaf_hash: Some(leaf_hash),
            proof,
        })
        .map(|()| true)
    })?;
    if next < end && bytes < max_bytes {
        return Err(ExportError::BadEntry {
            index: next,
            message: "entry missing from the stored range".into(),
        });
    }
    Ok(next)
}

struct LocalLog {
    store: Store,
    key: SignerKey,
    _scratch: tempfile::TempDir,
}

impl LogReader for LocalLog {
    fn head(&self) -> Result<(String, Checkpoint, VerifierKey), ExportError> {
        let log_key = self.store.meta(META_LOG_KEY)?.ok_or_else(|| {
            StoreError::Corrupt("data dir has no log key; start `ledger serve` on it first".into())
        })?;
        let log_key = VerifierKey::parse(&String::from_utf8_lossy(&log_key))?;
        if self.key.verifier() != &log_key {
            return Err(ExportError::WrongKey {
                given: self.key.verifier().encode(),
                stored: log_key.encode(),
            });
        }
        let (_, note) = self
            .store
            .latest_checkpoint()?
            .ok_or_else(|| StoreError::Corrupt("no checkpoint stored".into()))?;
        let checkpoint = open_checkpoint(&note, &log_key)?;
        Ok((note, checkpoint, log_key))
    }

    fn locate(&self, size: u64, micros: i64) -> Result<u64, ExportError> {
        first_at_or_after(&self.store, size, micros)
    }

    fn rows(
        &self,
        start: u64,
        end: u64,
        size: u64,
        f: &mut RowSink<'_>,
    ) -> Result<(), ExportError> {
        proved_rows(&self.store, start, end, size, usize::MAX, f).map(|_| ())
    }

    fn request_lookup(&self) -> Box<RequestLookup<'_>> {
        let mut cursor = self.store.request_cursor();
        Box::new(move |request_id, before, f| cursor.for_each(request_id, before, f))
    }

    fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ExportError> {
        Ok(consistency_proof::<Blake3>(from, to, &self.store)?)
    }

    fn sign_manifest(&self, manifest: &[u8]) -> Result<[u8; 64], ExportError> {
        Ok(self.key.sign_bytes(manifest))
    }

    fn source_keys(&self) -> Result<SourceKeys, ExportError> {
        let sources =
            crate::admin::origin_keys(&self.store).map_err(|e| ExportError::BadEntry {
                index: 0,
                message: format!("source records: {e}"),
            })?;
        Ok(SourceKeys { sources })
    }
}

/// The auditor API of a running server.
struct RemoteLog {
    client: reqwest::blocking::Client,
    base: String,
    token: String,
}

#[derive(serde::Deserialize)]
struct RemoteRow {
    index: u64,
    leaf: String,
    inclusion_proof: Vec<String>,
}

impl RemoteLog {
    /// A request's indexes below `before`, page by page from `GET /v1/export/context`.
    fn request_indexes(
        &self,
        request_id: &str,
        before: u64,
        f: &mut dyn FnMut(u64) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        #[derive(serde::Deserialize)]
        struct Indexes {
            indexes: Vec<u64>,
            next: Option<u64>,
        }
        // Query-string encoding of the id: unreserved bytes as they are, everything else %XX.
        let mut id = String::with_capacity(request_id.len());
        for b in request_id.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                id.push(b as char);
            } else {
                id.push_str(&format!("%{b:02X}"));
            }
        }
        let mut from = 0;
        loop {
            let page: Indexes = self.json(&format!(
                "/v1/export/context?request_id={id}&before={before}&from={from}"
            ))?;
            for index in page.indexes {
                f(index)?;
            }
            match page.next {
                Some(next) if next > from => from = next,
                Some(_) => return Err(ExportError::Remote("context pages do not advance".into())),
                None => return Ok(()),
            }
        }
    }

    fn get(&self, path: &str) -> Result<reqwest::blocking::Response, ExportError> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| ExportError::Remote(format!("GET {path}: {e}")))?;
        remote_ok(path, response)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ExportError> {
        self.get(path)?
            .json()
            .map_err(|e| ExportError::Remote(format!("GET {path}: {e}")))
    }
}

fn remote_ok(
    path: &str,
    response: reqwest::blocking::Response,
) -> Result<reqwest::blocking::Response, ExportError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: serde_json::Value = response.json().unwrap_or_default();
    Err(ExportError::Remote(format!(
        "{path}: HTTP {status}: {}",
        body["error"].as_str().unwrap_or("no error message")
    )))
}

fn hashes(list: &[String]) -> Result<Vec<Hash>, ExportError> {
    list.iter()
        .map(|h| from_hex(h).ok_or_else(|| ExportError::Remote(format!("malformed hash {h:?}"))))
        .collect()
}

impl LogReader for RemoteLog {
    fn head(&self) -> Result<(String, Checkpoint, VerifierKey), ExportError> {
        let key_text = self
            .get("/v1/verifier-key")?
            .text()
            .map_err(|e| ExportError::Remote(e.to_string()))?;
        let key = VerifierKey::parse(key_text.trim())?;
        let note = self
            .get("/v1/checkpoint")?
            .text()
            .map_err(|e| ExportError::Remote(e.to_string()))?;
        let checkpoint = open_checkpoint(&note, &key)?;
        Ok((note, checkpoint, key))
    }

    fn locate(&self, size: u64, micros: i64) -> Result<u64, ExportError> {
        let v: serde_json::Value = self.json(&format!(
            "/v1/export/locate?micros={micros}&tree_size={size}"
        ))?;
        v["index"]
            .as_u64()
            .ok_or_else(|| ExportError::Remote("locate: no index in the answer".into()))
    }

    fn rows(
        &self,
        start: u64,
        end: u64,
        size: u64,
        f: &mut RowSink<'_>,
    ) -> Result<(), ExportError> {
        use std::io::BufRead as _;
        let mut next = start;
        while next < end {
            let page_start = next;
            let page_end = end.min(next + MAX_PAGE_ROWS);
            let path = format!("/v1/export/rows?start={next}&end={page_end}&tree_size={size}");
            let body = std::io::BufReader::new(self.get(&path)?);
            for line in body.lines() {
                let line = line.map_err(|e| ExportError::Remote(format!("{path}: {e}")))?;
                if line.is_empty() {
                    continue;
                }
                let row: RemoteRow = serde_json::from_str(&line)
                    .map_err(|e| ExportError::Remote(format!("{path}: {e}")))?;
                if row.index != next {
                    return Err(ExportError::Remote(format!(
                        "{path}: got index {}, want {next}",
                        row.index
                    )));
                }
                f(ProvedRow {
                    index: row.index,
                    leaf: row.leaf.as_bytes(),
                    leaf_hash: None,
                    proof: &hashes(&row.inclusion_proof)?,
                })?;
                next += 1;
            }
            // A page may end early (the server caps its bytes); ask again from where it ended.
            if next == page_start {
                return Err(ExportError::Remote(format!(
                    "{path}: no rows from index {next}"
                )));
            }
        }
        Ok(())
    }

    fn request_lookup(&self) -> Box<RequestLookup<'_>> {
        Box::new(|request_id, before, f| self.request_indexes(request_id, before, f))
    }

    fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ExportError> {
        #[derive(serde::Deserialize)]
        struct Proof {
            hashes: Vec<String>,
        }
        let p: Proof = self.json(&format!("/v1/proofs/consistency?from={from}&to={to}"))?;
        hashes(&p.hashes)
    }

    fn sign_manifest(&self, manifest: &[u8]) -> Result<[u8; 64], ExportError> {
        let path = "/v1/export/manifest-signature";
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(manifest.to_vec())
            .send()
            .map_err(|e| ExportError::Remote(format!("POST {path}: {e}")))?;
        let v: serde_json::Value = remote_ok(path, response)?
            .json()
            .map_err(|e| ExportError::Remote(format!("POST {path}: {e}")))?;
        v["signature"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| ExportError::Remote("the server returned no signature".into()))
    }

    fn source_keys(&self) -> Result<SourceKeys, ExportError> {
        self.json("/v1/source-keys")
    }
}

/// Rows per `GET /v1/export/rows` page.
pub const MAX_PAGE_ROWS: u64 = 10_000;
/// Leaf bytes per `GET /v1/export/rows` page: a page stops after the row that reaches this.
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The period's `summary.json` as this log computes it (its BLAKE3, hex) and the number of context
/// rows, in bounded memory: what the server checks before it signs an auditor's manifest.
/// `scratch` is where sort runs spill (the system temp dir if `None`).
pub fn summary_hash(
    store: &Store,
    start: u64,
    end: u64,
    scratch: Option<&Path>,
) -> Result<(String, u64), ExportError> {
    let project = |index: u64, leaf: &[u8]| -> Result<Projection, ExportError> {
        Ok(Projection::of(&stored_leaf(index, leaf)?)?)
    };
    let fail = |e: std::io::Error| ExportError::Io {
        path: scratch.map_or_else(std::env::temp_dir, Path::to_owned),
        source: e,
    };
    let mut builder = SummaryBuilder::new(scratch).map_err(fail)?;
    let mut requests = Sorter::<String>::new(scratch, DEFAULT_BUDGET).map_err(fail)?;
    store.scan_entries(
        start,
        Reads::Scan,
        |index, leaf| -> Result<bool, ExportError> {
            if index >= end {
                return Ok(false);
            }
            let p = project(index, leaf)?;
            builder.add(&p.view(), true).map_err(fail)?;
            if start > 0 {
                requests.push(p.request_id).map_err(fail)?;
            }
            Ok(true)
        },
    )?;
    let mut count = 0;
    let mut cursor = store.request_cursor();
    for_each_context_index(
        requests,
        start,
        scratch,
        &fail,
        &mut |request_id, before, f| cursor.for_each(request_id, before, f),
        &mut |index| {
            count += 1;
            builder
                .add(&project(index, &stored_entry(store, index)?)?.view(), false)
                .map_err(fail)
        },
    )?;
    let mut hasher = blake3::Hasher::new();
    builder.finish(&mut hasher).map_err(fail)?;
    Ok((hasher.finalize().to_hex().to_string(), count))
}

/// How the context rows are found: every index below `before` of a request, page by page.
type RequestLookup<'a> = dyn FnMut(&str, u64, &mut dyn FnMut(u64) -> Result<(), ExportError>) -> Result<(), ExportError>
    + 'a;

/// The context rows of a period starting at `start`: every earlier entry of each distinct request
/// in `requests`, found with `lookup`, given to `f` once each in index order. Two external sorts
/// (request ids in, indexes out), so memory does not grow with the period.
fn for_each_context_index(
    requests: Sorter<String>,
    start: u64,
    scratch: Option<&Path>,
    fail: &dyn Fn(std::io::Error) -> ExportError,
    lookup: &mut RequestLookup<'_>,
    f: &mut dyn FnMut(u64) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    if start == 0 {
        // A period from the first entry has no earlier entries to look up.
        return Ok(());
    }
    let mut indexes = Sorter::<u64>::new(scratch, DEFAULT_BUDGET).map_err(fail)?;
    for_each_distinct(requests.finish().map_err(fail)?, |request_id: String| {
        lookup(&request_id, start, &mut |i| indexes.push(i).map_err(fail))
    })
    .map_err(|e| e.into_export(fail))?;
    for_each_distinct(indexes.finish().map_err(fail)?, |index: u64| f(index))
        .map_err(|e| e.into_export(fail))
}

/// Either a sort's I/O error or the callback's own.
enum EachError {
    Io(std::io::Error),
    Export(ExportError),
}

impl From<ExportError> for EachError {
    fn from(e: ExportError) -> Self {
        Self::Export(e)
    }
}

impl EachError {
    fn into_export(self, io: &dyn Fn(std::io::Error) -> ExportError) -> ExportError {
        match self {
            Self::Io(e) => io(e),
            Self::Export(e) => e,
        }
    }
}

/// Calls `f` once per distinct value of a sorted stream.
fn for_each_distinct<T: PartialEq + Clone>(
    sorted: impl Iterator<Item = std::io::Result<T>>,
    mut f: impl FnMut(T) -> Result<(), ExportError>,
) -> Result<(), EachError> {
    let mut last: Option<T> = None;
    for item in sorted {
        let item = item.map_err(EachError::Io)?;
        if last.as_ref() != Some(&item) {
            last = Some(item.clone());
            f(item)?;
        }
    }
    Ok(())
}

/// What was exported.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// What the summary holds (its finding lists truncated).
    pub digest: Digest,
}

/// Reads stored nodes a block at a time. Nodes are stored in the order they complete
/// ([`Store::nodes_completed_in`]), so the nodes below level [`BLOCK_LEVELS`] of an aligned block
/// of [`BLOCK`] leaves are one sequential scan, and they hold every sibling below that level of
/// every leaf in the block: export reads each stored node about once, in memory that does not
/// grow with the log. Two blocks are kept: the one the rows are in, and the one the ragged right
/// edge of the tree needs. Nodes at or above [`BLOCK_LEVELS`] (one per `2^12` rows or fewer)
/// are point reads.
struct MemoReader<'a> {
    store: &'a Store,
    /// How its blocks are read.
    reads: Reads,
    cache: RefCell<[Block; 2]>,
}

/// Leaves per block: a power of two.
const BLOCK: u64 = 1 << BLOCK_LEVELS;
/// Levels read a block at a time.
const BLOCK_LEVELS: u8 = 12;

#[derive(Default)]
struct Block {
    /// First leaf of the block, if loaded.
    first: Option<u64>,
    /// Per level below [`BLOCK_LEVELS`]: the first node's index and the run of hashes.
    levels: [(u64, Vec<Hash>); BLOCK_LEVELS as usize],
    used: u64,
}

impl Block {
    fn get(&self, id: NodeId) -> Option<Hash> {
        let (base, hashes) = &self.levels[usize::from(id.level)];
        let at = usize::try_from(id.index.checked_sub(*base)?).ok()?;
        hashes.get(at).copied()
    }

    /// Loads the stored nodes below [`BLOCK_LEVELS`] completed in `[first, first + BLOCK)`.
    fn load(&mut self, store: &Store, first: u64, reads: Reads) -> Result<(), StoreError> {
        self.first = None;
        for (_, hashes) in &mut self.levels {
            hashes.clear();
        }
        for item in store.nodes_completed_in(first..first.saturating_add(BLOCK), reads) {
            let (id, hash) = match item {
                Ok(node) => node,
                // A key that names no node (fsck reports it) holds nothing a proof needs.
                Err(StoreError::Corrupt(_)) => continue,
                Err(e) => return Err(e),
            };
            if id.level >= BLOCK_LEVELS {
                continue;
            }
            let (base, hashes) = &mut self.levels[usize::from(id.level)];
            if hashes.is_empty() {
                *base = id.index;
            }
            // A gap (a node missing from the store) ends the level's run; the point read
            // behind a miss reports it.
            if id.index == *base + hashes.len() as u64 {
                hashes.push(hash);
            }
        }
        self.first = Some(first);
        Ok(())
    }
}

impl HashReader for MemoReader<'_> {
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
        if id.level >= BLOCK_LEVELS {
            return self.store.read_hash(id);
        }
        let first = (id.index << id.level) & !(BLOCK - 1);
        let mut blocks = self.cache.borrow_mut();
        let tick = blocks.iter().map(|b| b.used).max().unwrap_or(0) + 1;
        let block = match blocks.iter().position(|b| b.first == Some(first)) {
            Some(at) => &mut blocks[at],
            None => {
                let victim = blocks
                    .iter_mut()
                    .min_by_key(|b| b.used)
                    .expect("two blocks");
                victim
                    .load(self.store, first, self.reads)
                    .map_err(|e| TreeError::Read {
                        level: id.level,
                        index: id.index,
                        source: Box::new(e),
                    })?;
                victim
            }
        };
        block.used = tick;
        match block.get(id) {
            Some(hash) => Ok(hash),
            // Not stored: the point read reports it as it always has.
            None => self.store.read_hash(id),
        }
    }
}

/// Rows per chunk: what a worker makes into one batch.
const CHUNK_ROWS: usize = 4_096;

/// Writes a bundle for `config.from..config.to` into `config.out`, all or nothing.
pub fn export(config: &ExportConfig) -> Result<ExportReport, ExportError> {
    let framework = Framework::named(&config.framework)
        .ok_or_else(|| ExportError::UnknownFramework(config.framework.clone()))?;
    if config.from >= config.to {
        return Err(ExportError::EmptyPeriod);
    }
    if format_micros(config.from).is_none() || format_micros(config.to).is_none() {
        return Err(ExportError::PeriodOutOfRange);
    }
    if config.out.exists() {
        return Err(ExportError::OutExists(config.out.clone()));
    }
    let parent = match config.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    // The bundle is built in a temp dir beside --out and renamed into place only when complete.
    let staging = tempfile::Builder::new()
        .prefix(".ledger-export-")
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let log: Box<dyn LogReader> = match &config.source {
        Source::DataDir { path, key } => {
            let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
            Box::new(LocalLog {
                store: Store::open_secondary(path, scratch.path())?,
                key: (**key).clone(),
                _scratch: scratch,
            })
        }
        Source::Server { url, token, tls } => Box::new(RemoteLog {
            client: tls
                .blocking_client()
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .map_err(|e| ExportError::Remote(e.to_string()))?,
            base: url.trim_end_matches('/').to_owned(),
            token: token.clone(),
        }),
    };
    let (note, checkpoint, log_key) = log.head()?;
    let size = checkpoint.size;
    let range = IndexRange {
        start: log.locate(size, config.from)?,
        end: log.locate(size, config.to)?,
    };
    let dir = staging.path();
    fs::create_dir_all(dir.join("oscal")).map_err(io(dir))?;

    // Sort runs spill beside the bundle (not to a tmpfs /tmp), in dirs removed on drop.
    let fail = |source: std::io::Error| ExportError::Io {
        path: parent.clone(),
        source,
    };
    let scratch = Some(parent.as_path());
    let progress = progress_bar(config.progress, range.end - range.start);
    let mut summary = SummaryBuilder::new(scratch).map_err(fail)?;
    let mut requests = Sorter::<String>::new(scratch, DEFAULT_BUDGET).map_err(fail)?;
    let writer = RowWriter::create(&dir.join(files::EVENTS))?;
    let mut controls = ControlCounts::new(&framework);
    let classes = Classes::new(&framework);
    // The stages overlap, each on threads of its own (a `par::ordered` pipeline and a writer):
    // one thread reads entries and proofs a chunk at a time; a worker per core takes the next
    // whole chunk and makes its rows (parsed, projected, hashed, mapped) into an Arrow batch;
    // this thread reads each made batch back in order for the sorts and counts; a writer encodes
    // and compresses the batches into events.parquet, in order. At most `workers + 2` chunks are
    // out and two made batches wait for the writer, so memory stays bounded.
    let (events, events_file) = std::thread::scope(|s| -> Result<(u64, fs::File), ExportError> {
        let (send, made_batches) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        let writing = s.spawn(move || -> Result<(u64, fs::File), ExportError> {
            let mut writer = writer;
            for batch in made_batches {
                writer.write_batch(&batch)?;
            }
            Ok(writer.finish_unsynced()?)
        });
        // The first error of the making or the in-order stage; they stop the pipeline.
        let mut failed = None;
        let log = &*log;
        let read = crate::par::ordered(
            crate::par::threads(),
            |emit| {
                let mut chunk = Chunk::with_capacity(CHUNK_ROWS, &Chunk::default());
                // `emit` fails only if the stages below stopped; their error is reported below.
                let mut emit = |chunk| emit(chunk).then_some(()).ok_or(ExportError::StageStopped);
                log.rows(range.start, range.end, size, &mut |row| {
                    chunk.push(&row);
                    if chunk.len() == CHUNK_ROWS {
                        let next = Chunk::with_capacity(CHUNK_ROWS, &chunk);
                        emit(std::mem::replace(&mut chunk, next).seal())?;
                    }
                    Ok(())
                })
                .and_then(|()| {
                    if chunk.len() == 0 {
                        Ok(())
                    } else {
                        emit(chunk.seal())
                    }
                })
            },
            |chunk: &Sealed| make_batch(chunk, 0..chunk.len(), &classes, files::EVENTS),
            |_, made| {
                let applied = made.and_then(|batch| {
                    let rows = for_each_made(std::slice::from_ref(&batch), files::EVENTS, |row| {
                        summary.add(&row.projection, true).map_err(fail)?;
                        controls.add(&row.projection);
                        // Context rows are earlier entries of the period's requests: a period
                        // from entry 0 has none, so its request ids need not be sorted.
                        if range.start > 0 {
                            requests
                                .push(row.projection.request_id.to_owned())
                                .map_err(fail)?;
                        }
                        Ok(())
                    })?;
                    progress.inc(rows);
                    // The writer hung up only if it failed; its error is reported below.
                    send.send(batch).map_err(|_| ExportError::StageStopped)
                });
                applied.map_err(|e| failed = Some(e)).is_ok()
            },
        );
        // The writer ends when this sender is gone.
        drop(send);
        let written = writing.join().expect("events writer thread panicked");
        // The first real error: a send fails only because the next stage stopped on its own.
        // The making's own error first: it is about a chunk the reader had already passed.
        let stopped = |e: &ExportError| matches!(e, ExportError::StageStopped);
        match (read, failed, written) {
            (_, Some(e), _) if !stopped(&e) => Err(e),
            (Err(e), _, _) if !stopped(&e) => Err(e),
            (_, _, Err(e)) | (_, Some(e), _) | (Err(e), _, _) => Err(e),
            (Ok(()), None, Ok(rows)) => Ok(rows),
        }
    })?;
    progress.finish_and_clear();
    // `events.parquet` is complete: fsync it and hash it for the manifest on a thread of its own
    // while the other files are made (the sync and the read back, about 150 bytes per row, were
    // a serial tail of about a second per 10 M rows). If this function returns early, the thread
    // is joined before the staging dir (declared earlier, dropped later) is removed.
    let events_hash = {
        let path = dir.join(files::EVENTS);
        JoinOnDrop(Some(std::thread::spawn(move || {
            events_file.sync_all().map_err(|source| BundleError::Io {
                path: path.display().to_string(),
                source,
            })?;
            bundle::file_hash(&path)
        })))
    };

    let mut boundaries = RowWriter::create(&dir.join(files::BOUNDARIES))?;
    let mut unmade = Chunk::default();
    for (start, end) in [
        (range.start.saturating_sub(1), range.start),
        (range.end, (range.end + 1).min(size)),
    ] {
        if start < end {
            log.rows(start, end, size, &mut |row| {
                unmade.push(&row);
                Ok(())
            })?;
        }
    }
    for batch in make_batches(&unmade.seal(), &classes, files::BOUNDARIES)? {
        boundaries.write_batch(&batch)?;
    }
    let boundary_rows = boundaries.finish()?;

    // Earlier entries of the period's requests, so each request is judged on its whole lifecycle.
    let mut context = RowWriter::create(&dir.join(files::CONTEXT))?;
    let mut unmade = Chunk::default();
    let mut flush = |unmade: &mut Chunk| -> Result<(), ExportError> {
        let next = Chunk::with_capacity(CHUNK_ROWS, unmade);
        let made = make_batches(
            &std::mem::replace(unmade, next).seal(),
            &classes,
            files::CONTEXT,
        )?;
        for_each_made(&made, files::CONTEXT, |row| {
            summary.add(&row.projection, false).map_err(fail)
        })?;
        for batch in &made {
            context.write_batch(batch)?;
        }
        Ok(())
    };
    for_each_context_index(
        requests,
        range.start,
        scratch,
        &fail,
        &mut *log.request_lookup(),
        &mut |index| {
            log.rows(index, index + 1, size, &mut |row| {
                unmade.push(&row);
                if unmade.len() == CHUNK_ROWS {
                    flush(&mut unmade)?;
                }
                Ok(())
            })
        },
    )?;
    flush(&mut unmade)?;
    let context_rows = context.finish()?;

    let summary_path = dir.join(files::SUMMARY);
    let built = {
        let file = fs::File::create(&summary_path).map_err(io(&summary_path))?;
        let mut out = std::io::BufWriter::new(file);
        let built = summary.finish(&mut out).map_err(io(&summary_path))?;
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .and_then(|f| f.sync_all())
            .map_err(io(&summary_path))?;
        built
    };
    write_file(&dir.join(files::CHECKPOINT), note.as_bytes())?;
    write_json(&dir.join(files::SOURCE_KEYS), &log.source_keys()?)?;
    write_json(
        &dir.join(files::CONTROLS),
        &controls.to_json(&config.framework, &framework),
    )?;
    if let Some(old) = &config.since {
        let old_cp =
            open_checkpoint(old, &log_key).map_err(|e| ExportError::Since(e.to_string()))?;
        if old_cp.size > size {
            return Err(ExportError::Since(format!(
                "its size {} is beyond this log's {size}",
                old_cp.size
            )));
        }
        let proof = if old_cp.size == 0 {
            Vec::new()
        } else {
            log.consistency(old_cp.size, size)?
        };
        let consistency = ConsistencyFile {
            from_checkpoint: old.clone(),
            proof: proof.iter().map(to_hex).collect(),
        };
        write_json(&dir.join(files::CONSISTENCY), &consistency)?;
    }

    let period = Period {
        from: format_micros(config.from).unwrap_or_default(),
        to: format_micros(config.to).unwrap_or_default(),
    };
    let generated_at = format_micros(config.now).unwrap_or_default();
    if config.framework == "fedramp" {
        let oscal = crate::oscal::assessment_results(
            &period,
            &framework,
            &built.digest,
            &checkpoint,
            &generated_at,
        );
        write_json(&dir.join(files::OSCAL), &oscal)?;
    } else {
        fs::remove_dir(dir.join("oscal")).map_err(io(dir))?;
    }
    let mut manifest = Manifest {
        format: bundle::FORMAT_NAME.into(),
        format_version: bundle::FORMAT_VERSION,
        framework: config.framework.clone(),
        period,
        index_range: range,
        rows: RowCounts {
            events,
            boundaries: boundary_rows,
            context: context_rows,
        },
        checkpoint: ManifestCheckpoint {
            origin: checkpoint.origin.clone(),
            size,
            root: B64.encode(checkpoint.root),
        },
        key: ManifestKey {
            name: log_key.name().to_owned(),
            id: hex::encode(log_key.id()),
        },
        tool: Tool {
            name: "ledger".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        generated_at,
        files: BTreeMap::new(),
    };
    let report = crate::report::render(&manifest, &built.digest, &framework);
    write_file(&dir.join(files::REPORT), report.as_bytes())?;
    let events_hash = events_hash.join()?;
    manifest.files = hash_files(dir, [(files::EVENTS.to_owned(), events_hash)].into())?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    write_file(&dir.join(files::MANIFEST), &manifest_bytes)?;
    let signature = B64.encode(log.sign_manifest(&manifest_bytes)?);
    write_file(
        &dir.join(files::MANIFEST_SIG),
        format!("{signature}\n").as_bytes(),
    )?;

    // Publish: everything is fsync'd; one rename makes the bundle appear whole.
    let staged = staging.keep();
    fsync_dir(&staged.join("oscal")).ok();
    fsync_dir(&staged)?;
    if let Err(e) = fs::rename(&staged, &config.out) {
        let _ = fs::remove_dir_all(&staged);
        return Err(io(&config.out)(e));
    }
    fsync_dir(&parent)?;
    Ok(ExportReport {
        manifest,
        digest: built.digest,
    })
}

/// A thread that is joined when this is dropped, so that none outlives [`export`] when it
/// returns early (it then waits for the thread's work, and the staging dir goes after).
struct JoinOnDrop<T>(Option<std::thread::JoinHandle<T>>);

impl<T> JoinOnDrop<T> {
    fn join(mut self) -> T {
        let handle = self.0.take().expect("joined once");
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl<T> Drop for JoinOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // Its result is not wanted here: the export already failed.
            let _ = handle.join();
        }
    }
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} rows {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn stored_entry(store: &Store, index: u64) -> Result<Vec<u8>, ExportError> {
    store.entry(index)?.ok_or_else(|| ExportError::BadEntry {
        index,
        message: "missing".into(),
    })
}

/// The stored entry `index`, parsed: a contract leaf that says it is entry `index`.
fn stored_leaf(index: u64, bytes: &[u8]) -> Result<RowLeaf<'_>, ExportError> {
    let bad = |message: String| ExportError::BadEntry { index, message };
    let leaf = parse_row_leaf(bytes).map_err(|e| bad(e.to_string()))?;
    if leaf.index != index {
        return Err(bad(format!("leaf says index {}", leaf.index)));
    }
    Ok(leaf)
}

/// An entry read for a row, lent to a [`RowSink`].
pub struct ProvedRow<'a> {
    /// Its index in the log.
    pub index: u64,
    /// The leaf's bytes.
    pub leaf: &'a [u8],
    /// Its leaf hash, when read from the log's own tree (the same nodes its proof is read from);
    /// `None` from a remote log, whose rows are hashed here. A stored leaf that does not match
    /// its tree node makes a bundle that `ledger verify` rejects, as a wrong proof node would;
    /// `ledger fsck` finds both in the store.
    pub leaf_hash: Option<Hash>,
    /// Its inclusion proof at the bundle's tree size.
    pub proof: &'a [Hash],
}

/// What `LogReader::rows` and [`proved_rows`] call with each entry.
pub type RowSink<'a> = dyn FnMut(ProvedRow<'_>) -> Result<(), ExportError> + 'a;

/// Entries read for rows, not yet made into them: their leaves and proofs each in one buffer,
/// so a chunk of 4,096 rows costs a few allocations instead of two per row, and (once sealed)
/// its buffers become the batch's leaf and proof columns as they are, without a copy.
#[derive(Default)]
struct Chunk {
    rows: Vec<ChunkRow>,
    leaves: Vec<u8>,
    /// Proof hashes, 32 bytes each.
    proofs: Vec<u8>,
}

/// Where one row's leaf and proof end in its chunk's buffers (bytes).
struct ChunkRow {
    index: u64,
    leaf_end: usize,
    leaf_hash: Option<Hash>,
    proof_end: usize,
}

impl Chunk {
    /// An empty chunk for `rows` rows, its buffers sized from `like` (the last chunk) with an
    /// eighth to spare, so that they are rarely grown and never doubled for nothing.
    fn with_capacity(rows: usize, like: &Chunk) -> Self {
        let room = |used: usize| used + used / 8;
        Self {
            rows: Vec::with_capacity(rows),
            leaves: Vec::with_capacity(room(like.leaves.len())),
            proofs: Vec::with_capacity(room(like.proofs.len())),
        }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn push(&mut self, row: &ProvedRow<'_>) {
        self.leaves.extend_from_slice(row.leaf);
        self.proofs.extend_from_slice(row.proof.as_flattened());
        self.rows.push(ChunkRow {
            index: row.index,
            leaf_end: self.leaves.len(),
            leaf_hash: row.leaf_hash,
            proof_end: self.proofs.len(),
        });
    }

    /// The chunk, its buffers handed to Arrow (no copy).
    fn seal(self) -> Sealed {
        Sealed {
            rows: self.rows,
            leaves: self.leaves.into(),
            proofs: self.proofs.into(),
        }
    }
}

/// A complete [`Chunk`], its buffers shared with the batches made from it.
struct Sealed {
    rows: Vec<ChunkRow>,
    leaves: arrow_buffer::Buffer,
    proofs: arrow_buffer::Buffer,
}

impl Sealed {
    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Where row `i`'s leaf and proof start (bytes).
    fn starts(&self, i: usize) -> (usize, usize) {
        match i.checked_sub(1) {
            Some(before) => (self.rows[before].leaf_end, self.rows[before].proof_end),
            None => (0, 0),
        }
    }

    /// Row `i`.
    fn row(&self, i: usize) -> ProvedRow<'_> {
        let (leaf_start, proof_start) = self.starts(i);
        let row = &self.rows[i];
        ProvedRow {
            index: row.index,
            leaf: &self.leaves[leaf_start..row.leaf_end],
            leaf_hash: row.leaf_hash,
            proof: self.proofs[proof_start..row.proof_end].as_chunks::<32>().0,
        }
    }

    /// The `leaf` and `inclusion_proof` columns of rows `rows` (a non-empty range): slices of
    /// the chunk's buffers, with offsets from the range's first row.
    fn columns(
        &self,
        rows: std::ops::Range<usize>,
    ) -> Result<(ArrayRef, ArrayRef), arrow_schema::ArrowError> {
        let (leaf_start, proof_start) = self.starts(rows.start);
        let last = &self.rows[rows.end - 1];
        let offset = |end: usize, start: usize, unit: usize| {
            i32::try_from((end - start) / unit).map_err(|_| {
                arrow_schema::ArrowError::InvalidArgumentError("a chunk over 2 GiB".into())
            })
        };
        let rows = &self.rows[rows];
        let leaf_ends = std::iter::once(Ok(0))
            .chain(rows.iter().map(|r| offset(r.leaf_end, leaf_start, 1)))
            .collect::<Result<Vec<i32>, _>>()?;
        let proof_ends = std::iter::once(Ok(0))
            .chain(rows.iter().map(|r| offset(r.proof_end, proof_start, 32)))
            .collect::<Result<Vec<i32>, _>>()?;
        let leaf = arrow_array::BinaryArray::try_new(
            arrow_buffer::OffsetBuffer::new(leaf_ends.into()),
            self.leaves
                .slice_with_length(leaf_start, last.leaf_end - leaf_start),
            None,
        )?;
        let proof = bundle::proof_column(
            arrow_buffer::OffsetBuffer::new(proof_ends.into()),
            self.proofs
                .slice_with_length(proof_start, last.proof_end - proof_start),
        )?;
        Ok((Arc::new(leaf), Arc::new(proof)))
    }
}

/// Rows made from `chunk` (parsed, projected, hashed, mapped to controls) on every core: one
/// Arrow batch per part, in order, built straight from the leaves' bytes (no owned row). `file`
/// names the bundle file they are for in errors.
fn make_batches(
    chunk: &Sealed,
    classes: &Classes,
    file: &str,
) -> Result<Vec<RecordBatch>, ExportError> {
    if chunk.len() == 0 {
        return Ok(Vec::new());
    }
    crate::par::map_parts((0..chunk.len()).collect(), |part: Vec<usize>| {
        make_batch(chunk, part[0]..part[part.len() - 1] + 1, classes, file)
    })
    .into_iter()
    .collect()
}

/// One batch of `chunk`'s rows `rows` (non-empty): each leaf, its hash, its proof against the
/// bundle's checkpoint, projections and controls.
fn make_batch(
    chunk: &Sealed,
    rows: std::ops::Range<usize>,
    classes: &Classes,
    file: &str,
) -> Result<RecordBatch, ExportError> {
    let arrow = |e: arrow_schema::ArrowError| {
        ExportError::Bundle(BundleError::Format {
            path: file.into(),
            message: e.to_string(),
        })
    };
    let (leaf, proof) = chunk.columns(rows.clone()).map_err(arrow)?;
    let entries: Vec<ProvedRow<'_>> = rows.map(|i| chunk.row(i)).collect();
    // Filled in a loop, not collected through `Result` (whose size hint is 0): a projection is
    // a few hundred bytes, and growing by doubling copied them all again.
    let mut projected = Vec::with_capacity(entries.len());
    for e in &entries {
        projected.push(Projection::borrowed(&stored_leaf(e.index, e.leaf)?)?);
    }
    let class: Vec<usize> = projected
        .iter()
        .map(|p| classes.class_of(&p.view()))
        .collect();
    let mut sizes = Sizes::default();
    for (p, &class) in projected.iter().zip(&class) {
        sizes.add_fields(&p.view(), classes.ids(class));
    }
    let mut batch = BatchBuilder::with_capacity(&sizes);
    for ((e, p), &class) in entries.iter().zip(&projected).zip(&class) {
        let leaf_hash = e.leaf_hash.unwrap_or_else(|| Blake3::leaf(e.leaf));
        batch.push_fields(&leaf_hash, &p.view(), classes.ids(class));
    }
    batch.finish_with(leaf, proof).map_err(arrow)
}

/// Calls `f` with each row of `made` (for bundle file `file`), in order; returns how many.
fn for_each_made(
    made: &[RecordBatch],
    file: &str,
    mut f: impl FnMut(RowRef<'_>) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let mut n = 0u64;
    for batch in made {
        let rows = RowBatch::new(batch, Path::new(file))?;
        for i in 0..rows.len() {
            f(rows.row(i))?;
        }
        n += rows.len() as u64;
    }
    Ok(n)
}

/// The first index in `[0, size)` whose `ingested_at` is at or after `micros` (`size` if none).
/// `ingested_at` never decreases with the index, so this is a binary search: `O(log n)` reads.
pub fn first_at_or_after(store: &Store, size: u64, micros: i64) -> Result<u64, ExportError> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let leaf = stored_entry(store, mid)?;
        let at = Leaf::parse_with(&leaf, ())
            .map_err(|e| ExportError::BadEntry {
                index: mid,
                message: e.to_string(),
            })?
            .ingested_micros;
        if at < micros {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    use std::io::Write as _;
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), ExportError> {
    write_file(path, &json_bytes(value))
}

fn fsync_dir(dir: &Path) -> Result<(), ExportError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod period_tests {
    use super::*;

    #[test]
    fn a_period_end_past_year_9999_is_refused_before_anything_is_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let config = ExportConfig {
            framework: "soc2".into(),
            from: 0,
            to: i64::MAX / 2,
            out: tmp.path().join("bundle"),
            source: Source::DataDir {
                path: tmp.path().join("no-such-data-dir"),
                key: Box::new(SignerKey::from_seed("t.example/log", &[1; 32]).unwrap()),
            },
            since: None,
            now: 0,
            progress: false,
        };
        assert!(matches!(
            export(&config),
            Err(ExportError::PeriodOutOfRange)
        ));
        assert!(!config.out.exists());
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;
    use crate::core::merkle::{Frontier, inclusion_proof};
    use crate::store::Commit;

    /// Over several blocks and a ragged right edge, the block reader gives exactly the proofs
    /// that point reads of the store give.
    #[test]
    fn block_reads_prove_what_point_reads_prove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let size = 3 * BLOCK + 1_234;
        let mut frontier = Frontier::<Blake3>::empty();
        let mut commit = Commit::default();
        for i in 0..size {
            frontier.append(Blake3::leaf(&i.to_be_bytes()), &mut commit.nodes);
        }
        store.commit(&commit).unwrap();
        let reader = MemoReader {
            store: &store,
            reads: Reads::Scan,
            cache: RefCell::default(),
        };
        let mut cursor = ProofCursor::<Blake3>::new(size);
        // Every row of a run from the middle of a block to the end, and runs at block edges.
        let runs = [BLOCK / 2..size, 0..3, BLOCK - 2..BLOCK + 2];
        for index in runs.into_iter().flatten() {
            assert_eq!(
                cursor.proof(index, &reader).unwrap(),
                inclusion_proof::<Blake3>(index, size, &store).unwrap(),
                "{index}"
            );
        }
        // A node that is not stored is reported as a point read reports it.
        let mut beyond = ProofCursor::<Blake3>::new(size + 2);
        assert!(matches!(
            beyond.proof(0, &reader),
            Err(TreeError::Read { .. })
        ));
    }

    /// `proved_rows` lends each entry with the proof and leaf hash the tree gives, stops after
    /// the row that reaches its byte cap, and reports a gap in the range; a chunk gives back the
    /// rows it was given.
    #[test]
    fn proved_rows_stop_at_the_byte_cap_and_report_a_gap() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let size = BLOCK + 10;
        let leaf = |i: u64| format!("leaf {i:06}").into_bytes();
        let mut frontier = Frontier::<Blake3>::empty();
        let mut commit = Commit::default();
        for i in 0..size {
            frontier.append(Blake3::leaf(&leaf(i)), &mut commit.nodes);
            // Entry 7 is missing: a gap in the stored range.
            if i != 7 {
                commit.entries.push((i, leaf(i)));
            }
        }
        store.commit(&commit).unwrap();

        let mut chunk = Chunk::default();
        let next = proved_rows(&store, 8, size, size, usize::MAX, &mut |row| {
            chunk.push(&row);
            Ok(())
        })
        .unwrap();
        let chunk = chunk.seal();
        assert_eq!((next, chunk.len() as u64), (size, size - 8));
        for (i, index) in (8..size).enumerate() {
            let row = chunk.row(i);
            assert_eq!((row.index, row.leaf), (index, leaf(index).as_slice()));
            assert_eq!(row.leaf_hash, Some(Blake3::leaf(&leaf(index))));
            assert_eq!(
                row.proof,
                inclusion_proof::<Blake3>(index, size, &store).unwrap()
            );
        }

        // Each leaf is 11 bytes: a cap of 30 ends the page after the third row.
        let mut indexes = Vec::new();
        let next = proved_rows(&store, 100, size, size, 30, &mut |row| {
            indexes.push(row.index);
            Ok(())
        })
        .unwrap();
        assert_eq!((next, indexes), (103, vec![100, 101, 102]));

        let err = proved_rows(&store, 0, 20, size, usize::MAX, &mut |_| Ok(())).unwrap_err();
        assert!(
            matches!(err, ExportError::BadEntry { index: 7, .. }),
            "{err}"
        );
    }

    /// A sealed chunk's columns for a range that does not start at its first row hold exactly
    /// those rows' leaves and proofs.
    #[test]
    fn a_sealed_chunks_columns_for_a_range_are_those_rows() {
        use arrow_array::{Array as _, BinaryArray, FixedSizeBinaryArray, ListArray};
        let rows: Vec<(Vec<u8>, Vec<Hash>)> = (0..5u8)
            .map(|i| {
                (
                    vec![b'a' + i; usize::from(i) + 1],
                    vec![[i; 32]; usize::from(i % 3)],
                )
            })
            .collect();
        let mut chunk = Chunk::default();
        for (i, (leaf, proof)) in rows.iter().enumerate() {
            chunk.push(&ProvedRow {
                index: 10 + i as u64,
                leaf,
                leaf_hash: None,
                proof,
            });
        }
        let chunk = chunk.seal();
        for range in [0..5, 1..4, 4..5] {
            let (leaf, proof) = chunk.columns(range.clone()).unwrap();
            let leaf = leaf.as_any().downcast_ref::<BinaryArray>().unwrap();
            let proof = proof.as_any().downcast_ref::<ListArray>().unwrap();
            assert_eq!(leaf.len(), range.len());
            for (k, i) in range.enumerate() {
                assert_eq!(leaf.value(k), rows[i].0.as_slice(), "leaf {i}");
                let hashes = proof.value(k);
                let hashes = hashes
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .unwrap();
                let got: Vec<&[u8]> = (0..hashes.len()).map(|j| hashes.value(j)).collect();
                let want: Vec<&[u8]> = rows[i].1.iter().map(|h| h.as_slice()).collect();
                assert_eq!(got, want, "proof {i}");
                assert_eq!(chunk.row(i).proof, rows[i].1.as_slice());
            }
        }
    }
}
