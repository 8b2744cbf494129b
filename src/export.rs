//! `ledger export`: an evidence bundle for a period, from a data dir (safe while `ledger serve` runs).
//!
//! Owns: choosing the index range, streaming rows with proofs into Parquet, the bundle's other files,
//! and the all-or-nothing publication (temp dir, fsync, rename). Must not touch: the writer's data
//! dir in any way but reading (RocksDB secondary instance).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::bundle::{
    self, BundleError, ConsistencyFile, IndexRange, Manifest, ManifestCheckpoint, ManifestKey,
    Period, Row, RowCounts, RowWriter, Tool, files,
};
use crate::core::controls::Framework;
use crate::core::findings::{Auditor, Summary};
use crate::core::hash::{Blake3, Hash, TreeHasher, to_hex};
use crate::core::leaf::{Leaf, format_micros};
use crate::core::merkle::{HashReader, NodeId, TreeError, consistency_proof, inclusion_proof};
use crate::core::note::{Checkpoint, NoteError, SignerKey, VerifierKey, open_checkpoint};
use crate::core::projection::{Projection, ProjectionError};
use crate::store::{META_LOG_KEY, Store, StoreError};

/// Export errors (exit code 2; nothing is left at `--out`).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `--framework` is not one the mapping knows.
    #[error("unknown framework {0:?}: use soc2 or fedramp")]
    UnknownFramework(String),
    /// `--from` is not before `--to`.
    #[error("empty period: --from must be before --to")]
    EmptyPeriod,
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
    /// Writing the bundle failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
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
    /// The ledger's data dir.
    pub data_dir: PathBuf,
    /// The log's signing key (signs the manifest).
    pub key: SignerKey,
    /// An earlier signed checkpoint to prove consistency from.
    pub since: Option<String>,
    /// The time to record as `generated_at` (microseconds).
    pub now: i64,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// What was exported.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// The summary written.
    pub summary: Summary,
}

/// Remembers nodes already read: consecutive rows' proofs share most of their nodes, so export
/// reads each stored node about once. Cleared when large, so memory stays bounded.
struct MemoReader<'a> {
    store: &'a Store,
    cache: RefCell<HashMap<NodeId, Hash>>,
}

const MEMO_LIMIT: usize = 1 << 20;

impl HashReader for MemoReader<'_> {
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
        if let Some(h) = self.cache.borrow().get(&id) {
            return Ok(*h);
        }
        let h = self.store.read_hash(id)?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MEMO_LIMIT {
            cache.clear();
        }
        cache.insert(id, h);
        Ok(h)
    }
}

/// Writes a bundle for `config.from..config.to` into `config.out`, all or nothing.
pub fn export(config: &ExportConfig) -> Result<ExportReport, ExportError> {
    let framework = Framework::named(&config.framework)
        .ok_or_else(|| ExportError::UnknownFramework(config.framework.clone()))?;
    if config.from >= config.to {
        return Err(ExportError::EmptyPeriod);
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
    let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
    let store = Store::open_secondary(&config.data_dir, scratch.path())?;

    let log_key = store.meta(META_LOG_KEY)?.ok_or_else(|| {
        StoreError::Corrupt("data dir has no log key; start `ledger serve` on it first".into())
    })?;
    let log_key = VerifierKey::parse(&String::from_utf8_lossy(&log_key))?;
    if config.key.verifier() != &log_key {
        return Err(ExportError::WrongKey {
            given: config.key.verifier().encode(),
            stored: log_key.encode(),
        });
    }
    let (_, note) = store
        .latest_checkpoint()?
        .ok_or_else(|| StoreError::Corrupt("no checkpoint stored".into()))?;
    let checkpoint = open_checkpoint(&note, &log_key)?;
    let size = checkpoint.size;
    let range = IndexRange {
        start: first_at_or_after(&store, size, config.from)?,
        end: first_at_or_after(&store, size, config.to)?,
    };
    let reader = MemoReader {
        store: &store,
        cache: RefCell::default(),
    };
    let dir = staging.path();
    fs::create_dir_all(dir.join("oscal")).map_err(io(dir))?;

    let progress = progress_bar(config.progress, range.end - range.start);
    let mut auditor = Auditor::default();
    let mut requests: HashSet<String> = HashSet::new();
    let mut writer = RowWriter::create(&dir.join(files::EVENTS))?;
    for item in store.entries_from(range.start) {
        let (index, leaf) = item?;
        if index >= range.end {
            break;
        }
        let row = make_row(index, leaf, size, &reader, &framework)?;
        auditor.add(&row.projection, true);
        if !requests.contains(&row.projection.request_id) {
            requests.insert(row.projection.request_id.clone());
        }
        writer.push(row)?;
        progress.inc(1);
    }
    let events = writer.finish()?;
    progress.finish_and_clear();
    if events != range.end - range.start {
        return Err(ExportError::BadEntry {
            index: range.start + events,
            message: "entry missing from the stored range".into(),
        });
    }

    let mut boundaries = RowWriter::create(&dir.join(files::BOUNDARIES))?;
    let mut boundary_indexes = Vec::new();
    if range.start > 0 {
        boundary_indexes.push(range.start - 1);
    }
    if range.end < size {
        boundary_indexes.push(range.end);
    }
    for &index in &boundary_indexes {
        let leaf = stored_entry(&store, index)?;
        boundaries.push(make_row(index, leaf, size, &reader, &framework)?)?;
    }
    let boundary_rows = boundaries.finish()?;

    // Earlier entries of the period's requests, so each request is judged on its whole lifecycle.
    let mut context_indexes = BTreeSet::new();
    for request_id in &requests {
        for index in store.request_indexes(request_id, 10_000)? {
            if index < range.start {
                context_indexes.insert(index);
            }
        }
    }
    drop(requests);
    let mut context = RowWriter::create(&dir.join(files::CONTEXT))?;
    for &index in &context_indexes {
        let row = make_row(
            index,
            stored_entry(&store, index)?,
            size,
            &reader,
            &framework,
        )?;
        auditor.add(&row.projection, false);
        context.push(row)?;
    }
    let context_rows = context.finish()?;

    let summary = auditor.finish();
    write_json(&dir.join(files::SUMMARY), &summary)?;
    write_file(&dir.join(files::CHECKPOINT), note.as_bytes())?;
    let controls = controls_json(&config.framework, &framework, dir)?;
    write_json(&dir.join(files::CONTROLS), &controls)?;
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
            consistency_proof::<Blake3>(old_cp.size, size, &reader)?
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
            &summary,
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
    let report = crate::report::render(&manifest, &summary, &framework);
    write_file(&dir.join(files::REPORT), report.as_bytes())?;
    manifest.files = hash_files(dir)?;
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    write_file(&dir.join(files::MANIFEST), &manifest_bytes)?;
    let signature = B64.encode(config.key.sign_bytes(&manifest_bytes));
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
    Ok(ExportReport { manifest, summary })
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

/// One row: leaf, its hash, its proof against the bundle's checkpoint, projections and controls.
fn make_row(
    index: u64,
    leaf: Vec<u8>,
    size: u64,
    reader: &impl HashReader,
    framework: &Framework,
) -> Result<Row, ExportError> {
    let parsed = Leaf::parse(&leaf).map_err(|e| ExportError::BadEntry {
        index,
        message: e.to_string(),
    })?;
    if parsed.index != index {
        return Err(ExportError::BadEntry {
            index,
            message: format!("leaf says index {}", parsed.index),
        });
    }
    let projection = Projection::of(&parsed)?;
    Ok(Row {
        leaf_hash: Blake3::leaf(&leaf),
        inclusion_proof: inclusion_proof::<Blake3>(index, size, reader)?,
        controls: framework.controls_for(&projection),
        projection,
        leaf,
    })
}

/// The first index in `[0, size)` whose `ingested_at` is at or after `micros` (`size` if none).
/// `ingested_at` never decreases with the index, so this is a binary search: `O(log n)` reads.
fn first_at_or_after(store: &Store, size: u64, micros: i64) -> Result<u64, ExportError> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let leaf = stored_entry(store, mid)?;
        let at = Leaf::parse(&leaf)
            .map_err(|e| ExportError::BadEntry {
                index: mid,
                message: e.to_string(),
            })?
            .ingested_micros();
        if at < micros {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// `controls.json`: the mapping applied, with each control's row count in the period.
pub fn controls_json(
    framework_name: &str,
    framework: &Framework,
    dir: &Path,
) -> Result<serde_json::Value, BundleError> {
    let mut counts: BTreeMap<String, u64> = framework
        .controls
        .iter()
        .map(|c| (c.id.clone(), 0))
        .collect();
    bundle::read_rows(&dir.join(files::EVENTS), |row| {
        for c in &row.controls {
            *counts.entry(c.clone()).or_default() += 1;
        }
        Ok(())
    })?;
    let controls: Vec<serde_json::Value> = framework
        .controls
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id,
                "title": c.title,
                "evidence": c.evidence,
                "selects": {"types": c.types, "categories": c.categories},
                "rows_in_period": counts.get(&c.id).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "framework": framework_name,
        "title": framework.title,
        "mapping": "schemas/controls.v1.json",
        "row_column": "controls",
        "controls": controls,
    }))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    use std::io::Write as _;
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), ExportError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("value serializes");
    bytes.push(b'\n');
    write_file(path, &bytes)
}

/// BLAKE3 of every file under `dir` except the manifest and its signature, by relative path.
pub fn hash_files(dir: &Path) -> Result<BTreeMap<String, String>, BundleError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|source| BundleError::Io {
            path: d.display().to_string(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| BundleError::Io {
                    path: d.display().to_string(),
                    source,
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if rel == files::MANIFEST || rel == files::MANIFEST_SIG {
                continue;
            }
            out.insert(rel, bundle::file_hash(&path)?);
        }
    }
    Ok(out)
}

fn fsync_dir(dir: &Path) -> Result<(), ExportError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

/// The verified checkpoint of a bundle's `checkpoint` file, for callers that hold the key.
pub fn open_bundle_checkpoint(dir: &Path, key: &VerifierKey) -> Result<Checkpoint, ExportError> {
    let path = dir.join(files::CHECKPOINT);
    let note = fs::read_to_string(&path).map_err(io(&path))?;
    Ok(open_checkpoint(&note, key)?)
}
