//! `ledger verify`: checks an evidence bundle offline, with no RocksDB and no network, trusting only
//! the verifier key the user supplies (never a key inside the bundle).
//!
//! Owns: the checks and their names. Every check runs (a failure does not hide the others), each
//! reports the first failing indexes, and the result is pass only if all pass.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::bundle::{
    self, BundleError, ConsistencyFile, ControlCounts, Manifest, RowBatch, RowRef, SourceKeys,
    files,
};
use crate::core::controls::{Classes, Framework};
use crate::core::findings::Digest;
use crate::core::hash::{Blake3, Hash, TreeHasher, from_hex, to_hex};
use crate::core::leaf::{GENESIS_PREV, Leaf, parse_micros};
use crate::core::merkle::{PathVerifier, verify_consistency};
use crate::core::note::{Checkpoint, VerifierKey, open_checkpoint};
use crate::core::projection::{Projection, ProjectionRef, parse_row_leaf};
use crate::summary::SummaryBuilder;

/// Most failing indexes reported per check.
const MAX_REPORTED: usize = 10;

/// One named check's outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Stable check name.
    pub name: &'static str,
    /// Passed?
    pub ok: bool,
    /// What was checked, or why it failed.
    pub detail: String,
    /// The first failing row indexes, if the check is per row.
    pub failing_indexes: Vec<u64>,
}

/// All checks of one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// True only if every check passed.
    pub ok: bool,
    /// The checks, in a fixed order.
    pub checks: Vec<Check>,
}

/// Errors that stop verification before any check can run (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The bundle directory cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Accumulates one per-row check.
struct RowCheck {
    name: &'static str,
    checked: u64,
    bad: u64,
    first: Vec<u64>,
    note: Option<String>,
}

impl RowCheck {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            checked: 0,
            bad: 0,
            first: Vec::new(),
            note: None,
        }
    }

    fn record(&mut self, index: u64, ok: bool) {
        self.checked += 1;
        if !ok {
            self.fail(index, None);
        }
    }

    fn fail(&mut self, index: u64, why: Option<String>) {
        self.bad += 1;
        if self.first.len() < MAX_REPORTED {
            self.first.push(index);
        }
        if self.note.is_none() {
            self.note = why;
        }
    }

    fn finish(self) -> Check {
        let ok = self.bad == 0;
        let detail = if ok {
            format!("{} rows", self.checked)
        } else {
            let first = self
                .first
                .first()
                .map_or_else(String::new, |i| format!(", first at index {i}"));
            let why = self.note.map_or_else(String::new, |n| format!(": {n}"));
            format!("{} of {} rows fail{first}{why}", self.bad, self.checked)
        };
        Check {
            name: self.name,
            ok,
            detail,
            failing_indexes: self.first,
        }
    }
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
            failing_indexes: Vec::new(),
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
            failing_indexes: Vec::new(),
        },
    }
}

/// Reads a bundle file, refusing anything but a regular file (a symlink to `/dev/zero` or a FIFO in
/// an untrusted bundle must not hang or redirect the verifier).
fn read(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let path = dir.join(name);
    let meta = fs::symlink_metadata(&path).map_err(|e| format!("{name}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{name} is not a regular file"));
    }
    fs::read(&path).map_err(|e| format!("{name}: {e}"))
}

/// Verifies the bundle in `dir` with the user's `key`; with `old_checkpoint`, also that the bundle's
/// checkpoint extends it. Signed rows are checked against the bundle's `source-keys.json`.
pub fn verify(
    dir: &Path,
    key: &VerifierKey,
    old_checkpoint: Option<&str>,
) -> Result<Verification, VerifyError> {
    verify_with(dir, key, old_checkpoint, None)
}

/// As [`verify`], checking signed rows against `pinned` source keys (from the sources' owners)
/// instead of the bundle's own `source-keys.json`, which only the log operator vouches for.
pub fn verify_with(
    dir: &Path,
    key: &VerifierKey,
    old_checkpoint: Option<&str>,
    pinned: Option<&SourceKeys>,
) -> Result<Verification, VerifyError> {
    if !dir.is_dir() {
        return Err(VerifyError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a bundle directory"),
        });
    }
    // The files' hashes read every byte of the bundle (1.5 GB at 10 M rows) on one core: on a
    // thread of their own, beside the row checks, which keep the other cores busy.
    std::thread::scope(|scope| {
        let hashing =
            scope.spawn(|| bundle::hash_files(dir, BTreeMap::new()).map_err(|e| e.to_string()));
        verify_checks(dir, key, old_checkpoint, pinned, hashing)
    })
}

/// The checks of [`verify_with`], the files' hashes coming from `hashing`.
fn verify_checks(
    dir: &Path,
    key: &VerifierKey,
    old_checkpoint: Option<&str>,
    pinned: Option<&SourceKeys>,
    hashing: std::thread::ScopedJoinHandle<'_, Result<BTreeMap<String, String>, String>>,
) -> Result<Verification, VerifyError> {
    let hashed = || {
        hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    };
    let mut checks = Vec::new();

    // 1. The checkpoint, under the user's key.
    let checkpoint: Result<Checkpoint, String> = read(dir, files::CHECKPOINT).and_then(|bytes| {
        let text = String::from_utf8(bytes).map_err(|_| "checkpoint is not UTF-8".to_owned())?;
        open_checkpoint(&text, key).map_err(|e| e.to_string())
    });
    checks.push(check(
        "checkpoint signature",
        checkpoint
            .as_ref()
            .map(|c| format!("{} at tree size {}", c.origin, c.size))
            .map_err(Clone::clone),
    ));

    // 2. The manifest's signature and 3. every file's hash.
    let manifest_bytes = read(dir, files::MANIFEST);
    let signature = manifest_bytes
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|bytes| {
            let sig = read(dir, files::MANIFEST_SIG)?;
            let sig: [u8; 64] = B64
                .decode(String::from_utf8_lossy(&sig).trim())
                .ok()
                .and_then(|s| s.try_into().ok())
                .ok_or("manifest.sig is not a base64 Ed25519 signature")?;
            if key.verify_bytes(bytes, &sig) {
                Ok(format!("signed by {}", key.name()))
            } else {
                Err("manifest.sig does not verify with the given key".into())
            }
        });
    checks.push(check("manifest signature", signature));
    let manifest: Result<Manifest, String> = manifest_bytes
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("manifest.json: {e}")));
    // Set once the hashing thread is done, after the rows.
    let file_hashes_at = checks.len();
    checks.push(check("file hashes", Err("not checked".into())));
    checks.push(check(
        "manifest matches checkpoint",
        match (&manifest, &checkpoint) {
            (Ok(m), Ok(c)) => manifest_matches(m, c, key),
            _ => Err("needs a readable manifest and a valid checkpoint".into()),
        },
    ));

    let (manifest, checkpoint) = match (manifest, checkpoint) {
        (Ok(manifest), Ok(checkpoint)) => (manifest, checkpoint),
        (manifest, _) => {
            checks[file_hashes_at] = check(
                "file hashes",
                manifest.and_then(|m| file_hashes(&m, hashed()?)),
            );
            for name in ROW_CHECKS {
                checks.push(check(
                    name,
                    Err("not checked: manifest or checkpoint unusable".into()),
                ));
            }
            return Ok(Verification { ok: false, checks });
        }
    };
    checks.extend(check_rows(dir, &manifest, &checkpoint, pinned));
    checks[file_hashes_at] = check(
        "file hashes",
        hashed().and_then(|h| file_hashes(&manifest, h)),
    );
    if let Some(old) = old_checkpoint {
        checks.push(check(
            "consistency with earlier checkpoint",
            consistency(dir, old, key, &checkpoint),
        ));
    }
    Ok(Verification {
        ok: checks.iter().all(|c| c.ok),
        checks,
    })
}

const ROW_CHECKS: [&str; 11] = [
    "leaf hashes",
    "projections",
    "origin signatures",
    "inclusion proofs",
    "indexes contiguous",
    "hash chain",
    "period boundaries",
    "context rows",
    "summary recomputed",
    "controls recomputed",
    "report and OSCAL recomputed",
];

fn file_hashes(manifest: &Manifest, actual: BTreeMap<String, String>) -> Result<String, String> {
    let mut problems = Vec::new();
    for (name, want) in &manifest.files {
        match actual.get(name) {
            None => problems.push(format!("{name} missing")),
            Some(got) if got != want => problems.push(format!("{name} changed")),
            Some(_) => {}
        }
    }
    for name in actual.keys().filter(|n| !manifest.files.contains_key(*n)) {
        problems.push(format!("{name} not in the manifest"));
    }
    for required in [
        files::EVENTS,
        files::BOUNDARIES,
        files::CONTEXT,
        files::CHECKPOINT,
        files::SUMMARY,
        files::CONTROLS,
    ] {
        if !manifest.files.contains_key(required) {
            problems.push(format!("{required} not listed"));
        }
    }
    if problems.is_empty() {
        Ok(format!("{} files", manifest.files.len()))
    } else {
        Err(problems.join("; "))
    }
}

fn manifest_matches(m: &Manifest, c: &Checkpoint, key: &VerifierKey) -> Result<String, String> {
    if m.format != bundle::FORMAT_NAME || m.format_version != bundle::FORMAT_VERSION {
        return Err(format!(
            "unsupported bundle format {} v{}",
            m.format, m.format_version
        ));
    }
    if m.checkpoint.size != c.size
        || m.checkpoint.root != B64.encode(c.root)
        || m.checkpoint.origin != c.origin
    {
        return Err(format!(
            "manifest names checkpoint size {} root {}, the checkpoint file has size {} root {}",
            m.checkpoint.size,
            m.checkpoint.root,
            c.size,
            B64.encode(c.root)
        ));
    }
    if m.key.name != key.name() || m.key.id != hex::encode(key.id()) {
        return Err("manifest names another key".into());
    }
    if m.index_range.start > m.index_range.end || m.index_range.end > c.size {
        return Err("index range is not within the checkpoint".into());
    }
    Ok(format!(
        "size {}, entries {}..{}",
        c.size, m.index_range.start, m.index_range.end
    ))
}

/// Per-row state shared by the three row files.
struct RowChecks {
    /// Inclusion proofs against the checkpoint, sharing the nodes consecutive rows have in common.
    paths: PathVerifier<Blake3>,
    leaf: RowCheck,
    projection: RowCheck,
    proof: RowCheck,
    origin: RowCheck,
    /// Unsigned rows of sources that have keys: count and first indexes.
    unsigned: (u64, Vec<u64>),
}

/// What the per-row checks that need no order read: the mapping and the source keys. Shared by
/// the threads that inspect rows while earlier rows are applied in order.
struct Inspector {
    /// The bundle's control mapping, compiled (`None`: a framework the mapping does not know).
    classes: Option<Classes>,
    origin_keys: Result<std::collections::HashMap<String, Vec<VerifierKey>>, String>,
}

/// What one row's checks found, computed without the order-dependent state, so rows can be
/// inspected on several threads.
struct Inspected {
    leaf_hash_ok: bool,
    /// The leaf's `prev_leaf_hash`, if the leaf parsed.
    prev_leaf_hash: Option<Hash>,
    /// The projection and controls against the leaf (only when the leaf parsed).
    projection: Result<(), String>,
    origin: Origin,
}

/// A row's origin signature against its source's keys.
enum Origin {
    /// Unsigned; `true` if its source has keys (reported, not failed: see [`RowChecks::apply`]).
    Unsigned(bool),
    /// Signed: verified, or why not.
    Signed(Result<(), String>),
}

impl Inspector {
    /// A signed row's origin signature, against its source's keys.
    fn origin<F>(&self, leaf: &Leaf<'_, F>) -> Origin {
        let Some(sig) = &leaf.origin_signature else {
            return Origin::Unsigned(
                self.origin_keys
                    .as_ref()
                    .is_ok_and(|keys| keys.contains_key(leaf.source.as_ref())),
            );
        };
        let keys = match &self.origin_keys {
            Ok(keys) => keys,
            Err(e) => return Origin::Signed(Err(e.clone())),
        };
        let key = sig.key_id_bytes().and_then(|id| {
            keys.get(leaf.source.as_ref())?
                .iter()
                .find(|k| k.id() == id)
        });
        Origin::Signed(match (key, sig.signature_bytes()) {
            (None, _) => Err(format!(
                "no origin key {} of source {:?}",
                sig.key_id, leaf.source
            )),
            (Some(k), Some(s)) if k.verify_bytes(leaf.event, &s) => Ok(()),
            _ => Err("signature does not verify over the event's canonical bytes".into()),
        })
    }

    /// The checks of one row that need nothing but the row (and the bundle's keys).
    fn inspect(&self, row: &RowRef<'_>) -> Inspected {
        let leaf_hash_ok = Blake3::leaf(row.leaf) == row.leaf_hash;
        let leaf = parse_row_leaf(row.leaf).map_err(|e| e.to_string());
        let (projection, origin) = match &leaf {
            Err(e) => (Err(e.clone()), Origin::Unsigned(false)),
            Ok(leaf) => {
                // Compared in place: the row's columns against the leaf's fields, and (once they
                // agree) its controls against the mapping applied to those columns.
                let controls_ok = |p: &ProjectionRef<'_>| match &self.classes {
                    Some(c) => c.ids(c.class_of(p)).eq(row.controls.iter()),
                    None => row.controls.iter().next().is_none(),
                };
                let projection = match Projection::matches(leaf, &row.projection) {
                    Ok(true) if controls_ok(&row.projection) => Ok(()),
                    Ok(true) => Err("controls differ from the mapping".into()),
                    Ok(false) => Err("a column differs from the leaf".into()),
                    Err(e) => Err(e.to_string()),
                };
                (projection, self.origin(leaf))
            }
        };
        Inspected {
            leaf_hash_ok,
            prev_leaf_hash: leaf.ok().map(|leaf| leaf.prev_leaf_hash),
            projection,
            origin,
        }
    }
}

impl RowChecks {
    /// Records one row's results, in index order; returns its leaf's `prev_leaf_hash` if the
    /// leaf parsed.
    fn apply(&mut self, row: &RowRef<'_>, inspected: Inspected) -> Option<Hash> {
        let index = row.projection.index;
        self.leaf.record(index, inspected.leaf_hash_ok);
        let ok = self
            .paths
            .verify(index, &row.leaf_hash, row.inclusion_proof)
            .is_ok();
        self.proof.record(index, ok);
        match inspected.projection {
            Ok(()) => self.projection.record(index, true),
            Err(why) => {
                self.projection.checked += 1;
                self.projection.fail(index, Some(why));
            }
        }
        match inspected.origin {
            // Unsigned: fine before the source registered a key, which the bundle cannot tell;
            // reported so an auditor can compare the indexes with the key's registration.
            Origin::Unsigned(true) => {
                self.unsigned.0 += 1;
                if self.unsigned.1.len() < MAX_REPORTED {
                    self.unsigned.1.push(index);
                }
            }
            Origin::Unsigned(false) => {}
            Origin::Signed(result) => {
                self.origin.checked += 1;
                if let Err(why) = result {
                    self.origin.fail(index, Some(why));
                }
            }
        }
        inspected.prev_leaf_hash
    }
}

/// Source keys by name, parsed.
fn parse_source_keys(
    keys: &SourceKeys,
) -> Result<std::collections::HashMap<String, Vec<VerifierKey>>, String> {
    keys.sources
        .iter()
        .map(|(name, list)| {
            let parsed = list
                .iter()
                .map(|k| VerifierKey::parse(k).map_err(|e| format!("source key of {name}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.clone(), parsed))
        })
        .collect()
}

/// Streams a row file through `checks`, calling `f` with each row and, if its leaf parsed, the
/// leaf's `prev_leaf_hash`, in order. A [`par::ordered`](crate::par::ordered) pipeline: one thread
/// decodes the Parquet file a batch at a time; a worker per core takes the next whole batch and
/// runs the per-row checks that need no order (leaf hash, parse, projections, origin
/// signatures); this thread applies the rest (proof paths, chain, summary) in batch order. Rows
/// are read in place from the decoded columns ([`RowBatch::row`]), never copied out, and only a
/// few batches are out at once.
fn check_file(
    path: &Path,
    inspector: &Inspector,
    checks: &mut RowChecks,
    mut f: impl FnMut(&RowRef<'_>, Option<Hash>),
) -> Result<u64, String> {
    crate::par::ordered(
        crate::par::threads(),
        |emit| {
            // `emit` fails only if the checks below stopped, which they do only by panicking
            // (that panic is what comes out): stop reading.
            bundle::read_batches(path, |batch| {
                if emit(batch) {
                    Ok(())
                } else {
                    Err(BundleError::Format {
                        path: path.display().to_string(),
                        message: "row checks stopped".into(),
                    })
                }
            })
            .map_err(|e| e.to_string())
        },
        |batch: &RowBatch| {
            (0..batch.len())
                .map(|i| inspector.inspect(&batch.row(i)))
                .collect::<Vec<_>>()
        },
        |batch, found| {
            for (i, found) in found.into_iter().enumerate() {
                let row = batch.row(i);
                let prev_hash = checks.apply(&row, found);
                f(&row, prev_hash);
            }
            true
        },
    )
}

fn check_rows(
    dir: &Path,
    m: &Manifest,
    checkpoint: &Checkpoint,
    pinned: Option<&SourceKeys>,
) -> Vec<Check> {
    let framework = Framework::named(&m.framework);
    // Keys from the user if given; else the bundle's own (covered by the manifest signature).
    let bundled = || -> Result<SourceKeys, String> {
        if !dir.join(files::SOURCE_KEYS).exists() {
            return Ok(SourceKeys::default());
        }
        serde_json::from_slice(&read(dir, files::SOURCE_KEYS)?)
            .map_err(|e| format!("{}: {e}", files::SOURCE_KEYS))
    };
    let origin_keys = match pinned {
        Some(keys) => parse_source_keys(keys),
        None => bundled().and_then(|k| parse_source_keys(&k)),
    };
    let inspector = Inspector {
        classes: framework.as_ref().map(Classes::new),
        origin_keys,
    };
    let mut rows = RowChecks {
        paths: PathVerifier::new(checkpoint.size, checkpoint.root),
        leaf: RowCheck::new("leaf hashes"),
        projection: RowCheck::new("projections"),
        proof: RowCheck::new("inclusion proofs"),
        origin: RowCheck::new("origin signatures"),
        unsigned: (0, Vec::new()),
    };
    let (from, to) = (parse_micros(&m.period.from), parse_micros(&m.period.to));
    // Sort runs spill under TMPDIR (the bundle may be read-only).
    let mut summary = SummaryBuilder::new(None);
    let mut summary_error: Option<String> = None;
    let mut add = |p: &ProjectionRef<'_>, in_period: bool| {
        if let Ok(builder) = summary.as_mut()
            && let Err(e) = builder.add(p, in_period)
        {
            summary_error.get_or_insert(format!("sorting rows: {e}"));
        }
    };
    let mut contiguous = RowCheck::new("indexes contiguous");
    let mut chain = RowCheck::new("hash chain");
    let mut period = RowCheck::new("period boundaries");
    let mut expected = m.index_range.start;
    let mut prev: Option<(u64, Hash)> = None;
    let mut first_event: Option<(u64, Hash)> = None;
    let mut read_errors = Vec::new();
    let mut control_counts = framework.as_ref().map(ControlCounts::new);

    // Events: every row in order, exactly the manifest's index range.
    let events = check_file(
        &dir.join(files::EVENTS),
        &inspector,
        &mut rows,
        |row, prev_hash| {
            let index = row.projection.index;
            contiguous.record(index, index == expected);
            expected = expected.max(index).saturating_add(1);
            if let Some(prev_hash) = prev_hash {
                match prev {
                    Some((p_index, p_hash)) => chain.record(
                        index,
                        p_index.checked_add(1) == Some(index) && prev_hash == p_hash,
                    ),
                    None => first_event = Some((index, prev_hash)),
                }
            }
            let at = row.projection.ingested_at;
            period.record(
                index,
                from.is_some_and(|f| at >= f) && to.is_some_and(|t| at < t),
            );
            prev = Some((index, row.leaf_hash));
            add(&row.projection, true);
            if let Some(counts) = control_counts.as_mut() {
                counts.add_listed(&row.projection, row.controls.iter());
            }
        },
    );
    // Counts from a file that could not be read to its end are not the file's.
    if events.is_err() {
        control_counts = None;
    }
    match events {
        Ok(n) if n != m.rows.events => contiguous.fail(
            expected,
            Some(format!("{n} rows, manifest says {}", m.rows.events)),
        ),
        Ok(_) => {}
        Err(e) => read_errors.push(e),
    }
    if expected != m.index_range.end && contiguous.bad == 0 {
        contiguous.fail(
            expected,
            Some(format!("rows end before index {}", m.index_range.end)),
        );
    }

    // Boundaries: the entry just before and just after the period, chained to the first and last rows.
    let mut boundary_rows = Vec::new();
    match check_file(
        &dir.join(files::BOUNDARIES),
        &inspector,
        &mut rows,
        |row, prev_hash| boundary_rows.push((row.to_owned(), prev_hash)),
    ) {
        Ok(_) => {}
        Err(e) => read_errors.push(e),
    }
    let (start, end) = (m.index_range.start, m.index_range.end);
    let mut want_before = start > 0;
    let mut want_after = end < checkpoint.size;
    for (row, prev_hash) in &boundary_rows {
        let index = row.projection.index;
        let at = row.projection.ingested_at;
        if want_before && index.checked_add(1) == Some(start) {
            want_before = false;
            period.record(index, from.is_some_and(|f| at < f));
            // The first event's prev_leaf_hash must be this row's hash.
            if let Some((_, prev_hash)) = first_event {
                chain.record(start, prev_hash == row.leaf_hash);
            }
        } else if want_after && index == end {
            want_after = false;
            period.record(index, to.is_some_and(|t| at >= t));
            let linked = match (prev_hash, prev) {
                (Some(prev_hash), Some((p_index, p_hash))) => {
                    p_index.checked_add(1) == Some(index) && *prev_hash == p_hash
                }
                // An empty period at the very start: entry 0 chains to zeros.
                (Some(prev_hash), None) if index == 0 => *prev_hash == GENESIS_PREV,
                // An empty period: the after-boundary links straight to the before-boundary.
                (Some(prev_hash), None) => boundary_rows
                    .iter()
                    .find(|b| b.0.projection.index.checked_add(1) == Some(index))
                    .is_some_and(|b| b.0.leaf_hash == *prev_hash),
                _ => false,
            };
            chain.record(index, linked);
        } else {
            period.fail(index, Some("unexpected boundary row".into()));
        }
    }
    if want_before {
        period.fail(
            start.saturating_sub(1),
            Some(format!(
                "boundary entry {} missing",
                start.saturating_sub(1)
            )),
        );
    }
    if want_after {
        period.fail(end, Some(format!("boundary entry {end} missing")));
    }
    if start == 0 && first_event.is_some_and(|(_, h)| h != GENESIS_PREV) {
        chain.fail(0, Some("entry 0 does not chain to zeros".into()));
    }
    if boundary_rows.len() as u64 != m.rows.boundaries {
        period.fail(
            start,
            Some("boundary row count differs from the manifest".into()),
        );
    }

    // Context: earlier entries of the period's requests.
    let mut context = RowCheck::new("context rows");
    let mut last_context: Option<u64> = None;
    match check_file(
        &dir.join(files::CONTEXT),
        &inspector,
        &mut rows,
        |row, _| {
            let index = row.projection.index;
            let ordered = last_context.is_none_or(|l| index > l);
            context.record(index, index < start && ordered);
            last_context = Some(index);
            add(&row.projection, false);
        },
    ) {
        Ok(n) if n != m.rows.context => {
            context.fail(start, Some("row count differs from the manifest".into()))
        }
        Ok(_) => {}
        Err(e) => read_errors.push(e),
    }

    let (summary_check, digest) = match summary {
        Err(e) => (Err(format!("sorting rows: {e}")), None),
        Ok(builder) => match compare_summary(dir, builder) {
            Ok((result, built)) => {
                for index in &built.orphan_context {
                    context.fail(
                        *index,
                        Some("its request has no event in the period".into()),
                    );
                }
                let result = match summary_error {
                    Some(e) => Err(e),
                    None => result,
                };
                (result, Some(built.digest))
            }
            Err(e) => (Err(e), None),
        },
    };
    let controls_check = match (&framework, &control_counts, read(dir, files::CONTROLS)) {
        (None, ..) => Err(format!("unknown framework {:?}", m.framework)),
        (_, None, _) => Err(format!("{} could not be read to its end", files::EVENTS)),
        (.., Err(e)) => Err(e),
        (Some(f), Some(counts), Ok(bytes)) => {
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(stored) if stored == counts.to_json(&m.framework, f) => {
                    Ok(format!("{} controls", f.controls.len()))
                }
                Ok(_) => Err("controls.json differs from the mapping applied to the rows".into()),
                Err(e) => Err(format!("controls.json: {e}")),
            }
        }
    };

    let derived_check = match (&framework, &digest) {
        (None, _) => Err(format!("unknown framework {:?}", m.framework)),
        (_, None) => Err("needs the recomputed summary".into()),
        (Some(f), Some(digest)) => derived_files(dir, m, digest, f, checkpoint),
    };

    let mut origin = rows.origin.finish();
    if origin.ok {
        origin.detail = match (origin.detail.as_str(), pinned) {
            ("0 rows", _) => "no signed rows".into(),
            (d, Some(_)) => format!("{} signed, against the given source keys", d),
            (d, None) => format!(
                "{} signed, against the bundle's source-keys.json (the log operator's word; pin the sources' keys with --source-keys)",
                d
            ),
        };
    }
    if rows.unsigned.0 > 0 {
        origin.detail.push_str(&format!(
            "; {} unsigned rows of sources that now have keys (first at {:?}): unsigned is right only before the source's key was registered",
            rows.unsigned.0, rows.unsigned.1
        ));
    }
    let mut out = vec![
        rows.leaf.finish(),
        rows.projection.finish(),
        origin,
        rows.proof.finish(),
    ];
    let mut contiguous = contiguous.finish();
    if !read_errors.is_empty() {
        contiguous.ok = false;
        contiguous.detail = format!("{}; {}", read_errors.join("; "), contiguous.detail);
    }
    out.push(contiguous);
    out.push(chain.finish());
    let mut period = period.finish();
    if period.ok && end == checkpoint.size {
        period.detail.push_str(&format!(
            "; the period extends past the checkpoint (size {}), so completeness is proven up to it",
            checkpoint.size
        ));
    }
    out.push(period);
    out.push(context.finish());
    out.push(check("summary recomputed", summary_check));
    out.push(check("controls recomputed", controls_check));
    out.push(check("report and OSCAL recomputed", derived_check));
    out
}

/// `report.html` (and, for FedRAMP, the OSCAL document) are functions of the manifest, the summary
/// and the checkpoint: rebuild them and compare bytes, so no figure in them can be fabricated.
fn derived_files(
    dir: &Path,
    m: &Manifest,
    digest: &Digest,
    framework: &Framework,
    checkpoint: &Checkpoint,
) -> Result<String, String> {
    let report = crate::report::render(m, digest, framework);
    if read(dir, files::REPORT)? != report.as_bytes() {
        return Err("report.html differs from the report of the rows".into());
    }
    if m.framework == "fedramp" {
        let oscal = crate::oscal::assessment_results(
            &m.period,
            framework,
            digest,
            checkpoint,
            &m.generated_at,
        );
        if read(dir, files::OSCAL)? != bundle::json_bytes(&oscal) {
            return Err(
                "oscal/assessment-results.json differs from the assessment of the rows".into(),
            );
        }
        return Ok("report.html and OSCAL assessment results".into());
    }
    Ok("report.html".into())
}

/// Recomputes `summary.json` from the rows and compares it with the bundle's, byte for byte, as
/// it streams: neither is held in memory.
fn compare_summary(
    dir: &Path,
    builder: SummaryBuilder,
) -> Result<(Result<String, String>, crate::summary::Built), String> {
    let path = dir.join(files::SUMMARY);
    let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", files::SUMMARY))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", files::SUMMARY));
    }
    let stored = fs::File::open(&path).map_err(|e| format!("{}: {e}", files::SUMMARY))?;
    let mut cmp = CompareWriter::new(stored);
    let built = builder
        .finish(&mut cmp)
        .map_err(|e| format!("recomputing the summary: {e}"))?;
    let result = match cmp
        .finish()
        .map_err(|e| format!("{}: {e}", files::SUMMARY))?
    {
        None => Ok(format!(
            "{} rows, {} findings",
            built.digest.counts.population.rows,
            built.digest.finding_total()
        )),
        Some((line, recomputed)) => {
            let stored = nth_line(&path, line).unwrap_or_default();
            Err(format!(
                "summary.json differs from the summary of the rows at line {line}: stored `{}`, recomputed `{}`",
                stored.trim(),
                recomputed.trim()
            ))
        }
    };
    Ok((result, built))
}

/// Longest line excerpt kept in a summary difference.
const EXCERPT: usize = 200;

/// A writer that compares what it is given with a file, remembering the first line that differs.
struct CompareWriter {
    stored: std::io::BufReader<fs::File>,
    scratch: Vec<u8>,
    line: u64,
    current: Vec<u8>,
    differs_at: Option<u64>,
    recomputed: Option<String>,
}

impl CompareWriter {
    fn new(stored: fs::File) -> Self {
        Self {
            stored: std::io::BufReader::new(stored),
            scratch: Vec::new(),
            line: 1,
            current: Vec::new(),
            differs_at: None,
            recomputed: None,
        }
    }

    fn track(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if self.differs_at == Some(self.line) && self.recomputed.is_none() {
                    self.recomputed = Some(String::from_utf8_lossy(&self.current).into_owned());
                }
                self.line += 1;
                self.current.clear();
            } else if self.current.len() < EXCERPT {
                self.current.push(b);
            }
        }
    }

    /// The first differing line and the recomputed text of it, or `None` if the bytes are equal.
    fn finish(mut self) -> std::io::Result<Option<(u64, String)>> {
        use std::io::Read as _;
        if self.differs_at.is_none() {
            let mut extra = [0u8; 1];
            if self.stored.read(&mut extra)? > 0 {
                return Ok(Some((self.line, "(end of file)".into())));
            }
            return Ok(None);
        }
        let recomputed = self
            .recomputed
            .take()
            .unwrap_or_else(|| String::from_utf8_lossy(&self.current).into_owned());
        Ok(self.differs_at.map(|line| (line, recomputed)))
    }
}

impl std::io::Write for CompareWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::Read as _;
        if self.differs_at.is_some() {
            self.track(buf);
            return Ok(buf.len());
        }
        self.scratch.resize(buf.len(), 0);
        let mut filled = 0;
        while filled < buf.len() {
            match self.stored.read(&mut self.scratch[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        let same = buf
            .iter()
            .zip(&self.scratch[..filled])
            .position(|(a, b)| a != b)
            .unwrap_or(filled);
        if same < buf.len() {
            self.track(&buf[..same]);
            self.differs_at = Some(self.line);
            self.track(&buf[same..]);
        } else {
            self.track(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Line `n` (1-based) of a file, at most [`EXCERPT`] bytes of it, read without holding the file.
fn nth_line(path: &Path, n: u64) -> Option<String> {
    use std::io::Read as _;
    let mut line = 1;
    let mut out = Vec::new();
    for b in std::io::BufReader::new(fs::File::open(path).ok()?).bytes() {
        let b = b.ok()?;
        if b == b'\n' {
            if line == n {
                break;
            }
            line += 1;
        } else if line == n && out.len() < EXCERPT {
            out.push(b);
        }
    }
    (line == n).then(|| String::from_utf8_lossy(&out).into_owned())
}

fn consistency(
    dir: &Path,
    old: &str,
    key: &VerifierKey,
    new: &Checkpoint,
) -> Result<String, String> {
    let old_cp = open_checkpoint(old, key).map_err(|e| format!("earlier checkpoint: {e}"))?;
    let file: ConsistencyFile = serde_json::from_slice(&read(dir, files::CONSISTENCY)?)
        .map_err(|e| format!("consistency.json: {e}"))?;
    let carried = open_checkpoint(&file.from_checkpoint, key)
        .map_err(|e| format!("consistency.json: {e}"))?;
    if (carried.size, carried.root) != (old_cp.size, old_cp.root) {
        return Err(format!(
            "the bundle proves consistency from size {}, not from the given checkpoint (size {})",
            carried.size, old_cp.size
        ));
    }
    let proof = file
        .proof
        .iter()
        .map(|h| from_hex(h).ok_or_else(|| "malformed proof hash".to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    if old_cp.size == 0 {
        return Ok("the earlier checkpoint is the empty tree".into());
    }
    verify_consistency::<Blake3>(old_cp.size, new.size, &old_cp.root, &new.root, &proof)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "size {} (root {}) extends to size {}",
        old_cp.size,
        &to_hex(&old_cp.root)[..16],
        new.size
    ))
}

/// Prints one line per check.
pub fn print_lines(v: &Verification, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for c in &v.checks {
        writeln!(
            out,
            "{} {}: {}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        )?;
    }
    writeln!(
        out,
        "{}",
        if v.ok {
            "bundle verified"
        } else {
            "bundle FAILED verification"
        }
    )
}
