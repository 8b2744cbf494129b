//! The evidence bundle's files (contract: docs/bundle-format.md): the Parquet row schema, writing
//! and reading rows, and the manifest.
//!
//! Owns: Arrow/Parquet encoding of rows, manifest shape and signature. Must not touch: RocksDB (the
//! verifier reads bundles on machines without it), findings logic (that is `core::findings`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::core::controls::{Classes, Framework};
use crate::core::hash::Hash;
use crate::core::projection::{Projection, ProjectionRef};

/// Bundle format version in `manifest.json`.
pub const FORMAT_VERSION: u64 = 1;
/// `manifest.json`'s `format` value.
pub const FORMAT_NAME: &str = "ledger-evidence-bundle";
/// Rows per Parquet row group: large enough for fast scans, small enough to bound writer memory.
const ROW_GROUP_ROWS: usize = 65_536;
/// Rows buffered before they become an Arrow batch.
const BATCH_ROWS: usize = 8_192;

/// File names (contract).
pub mod files {
    /// Rows of the period.
    pub const EVENTS: &str = "events.parquet";
    /// The entries just before and after the period.
    pub const BOUNDARIES: &str = "boundaries.parquet";
    /// Earlier entries of requests with events in the period.
    pub const CONTEXT: &str = "context.parquet";
    /// The signed checkpoint every proof is against.
    pub const CHECKPOINT: &str = "checkpoint";
    /// The manifest.
    pub const MANIFEST: &str = "manifest.json";
    /// The manifest's signature.
    pub const MANIFEST_SIG: &str = "manifest.sig";
    /// Control mapping applied.
    pub const CONTROLS: &str = "controls.json";
    /// Population, findings, latency.
    pub const SUMMARY: &str = "summary.json";
    /// Human-readable report.
    pub const REPORT: &str = "report.html";
    /// Consistency proof from an earlier checkpoint (with `--since`).
    pub const CONSISTENCY: &str = "consistency.json";
    /// OSCAL assessment results (FedRAMP).
    pub const OSCAL: &str = "oscal/assessment-results.json";
    /// Every source's origin keys (public), for checking signed rows.
    pub const SOURCE_KEYS: &str = "source-keys.json";
}

/// Bundle I/O errors (exit code 2 in `ledger export`; a named failed check in `ledger verify`).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Parquet or Arrow could not encode or decode.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

fn format_err(path: &Path, e: impl std::fmt::Display) -> BundleError {
    BundleError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// One bundle row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The exact leaf bytes.
    pub leaf: Vec<u8>,
    /// BLAKE3 leaf hash.
    pub leaf_hash: Hash,
    /// Inclusion proof against the bundle's checkpoint.
    pub inclusion_proof: Vec<Hash>,
    /// Projections of the leaf.
    pub projection: Projection,
    /// Control IDs this row evidences.
    pub controls: Vec<String>,
}

fn hash_field(name: &str) -> Field {
    Field::new(name, DataType::FixedSizeBinary(32), false)
}

/// The Arrow schema of `events.parquet`, `boundaries.parquet` and `context.parquet`.
#[must_use]
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("index", DataType::UInt64, false),
        Field::new("leaf", DataType::Binary, false),
        hash_field("leaf_hash"),
        Field::new_list(
            "inclusion_proof",
            Field::new_list_field(DataType::FixedSizeBinary(32), false),
            false,
        ),
        text("event_id", false),
        text("type", false),
        text("request_id", false),
        text("source", false),
        Field::new("occurred_at", ts.clone(), false),
        Field::new("ingested_at", ts, false),
        text("actor_id", false),
        text("actor_kind", false),
        text("on_behalf_of", true),
        text("reviewer_id", true),
        text("action_name", false),
        text("action_category", false),
        text("resource_id", false),
        text("environment", false),
        text("channel", true),
        text("reason", true),
        Field::new("emergency", DataType::Boolean, true),
        Field::new_list(
            "controls",
            Field::new_list_field(DataType::Utf8, false),
            false,
        ),
    ]))
}

/// Streams rows into a Parquet file, a batch at a time (bounded memory).
pub struct RowWriter {
    writer: ArrowWriter<File>,
    buffer: Vec<Row>,
    rows: u64,
    path: String,
}

impl RowWriter {
    /// Creates `path`.
    pub fn create(path: &Path) -> Result<Self, BundleError> {
        let file = File::create(path).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let props = writer_properties().map_err(|e| format_err(path, e))?;
        let writer =
            ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| format_err(path, e))?;
        Ok(Self {
            writer,
            buffer: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
            path: path.display().to_string(),
        })
    }

    /// Appends a row.
    pub fn push(&mut self, row: Row) -> Result<(), BundleError> {
        self.buffer.push(row);
        if self.buffer.len() == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BundleError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&self.buffer).map_err(|e| format_err(Path::new(&self.path), e))?;
        self.writer
            .write(&batch)
            .map_err(|e| format_err(Path::new(&self.path), e))?;
        self.rows += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Appends a batch of rows (the bundle schema, as [`BatchBuilder`] makes), after any rows
    /// pushed before it.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), BundleError> {
        self.flush()?;
        self.writer
            .write(batch)
            .map_err(|e| format_err(Path::new(&self.path), e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes the footer, fsyncs, and returns the row count.
    pub fn finish(self) -> Result<u64, BundleError> {
        let path = self.path.clone();
        let (rows, file) = self.finish_unsynced()?;
        file.sync_all()
            .map_err(|source| BundleError::Io { path, source })?;
        Ok(rows)
    }

    /// Writes the footer and returns the row count and the file, not yet fsynced: the caller
    /// syncs it before the bundle is published, while doing other work.
    pub fn finish_unsynced(mut self) -> Result<(u64, File), BundleError> {
        self.flush()?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| format_err(Path::new(&self.path), e))?;
        Ok((self.rows, file))
    }
}

/// How the bundle's Parquet is written. zstd level 1: on these rows (leaf JSON, proof hashes
/// that repeat from row to row) it compresses as well as level 3 did and costs less. No dictionary
/// for the columns whose values are (nearly) all distinct: the dictionary overflows and falls back
/// to plain pages, having cost a hash-table insert per value. No min/max statistics for the leaf
/// and hash columns: nobody filters on a leaf's bytes, and each page compared every value.
/// `docs/performance.md`, session 7, has the measurements.
fn writer_properties() -> Result<WriterProperties, parquet::errors::ParquetError> {
    let column =
        |path: &str| ColumnPath::from(path.split('.').map(String::from).collect::<Vec<_>>());
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for name in ["index", "leaf", "leaf_hash", "event_id", "request_id"] {
        builder = builder.set_column_dictionary_enabled(column(name), false);
    }
    for name in ["leaf", "leaf_hash", "inclusion_proof.list.item"] {
        builder = builder.set_column_statistics_enabled(column(name), EnabledStatistics::None);
    }
    Ok(builder.build())
}

/// A row's text columns in [`TEXT_COLUMNS`] order.
fn texts<'a>(p: &ProjectionRef<'a>) -> [Option<&'a str>; 14] {
    [
        Some(p.event_id),
        Some(p.event_type),
        Some(p.request_id),
        Some(p.source),
        Some(p.actor_id),
        Some(p.actor_kind),
        p.on_behalf_of,
        p.reviewer_id,
        Some(p.action_name),
        Some(p.action_category),
        Some(p.resource_id),
        Some(p.environment),
        p.channel,
        p.reason,
    ]
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut sizes = Sizes::default();
    for r in rows {
        sizes.add(
            &r.leaf,
            &r.inclusion_proof,
            &r.projection.view(),
            r.controls.iter().map(String::as_str),
        );
    }
    let mut batch = BatchBuilder::with_capacity(&sizes);
    for r in rows {
        batch.push(
            &r.leaf,
            &r.leaf_hash,
            &r.inclusion_proof,
            &r.projection.view(),
            r.controls.iter().map(String::as_str),
        )?;
    }
    batch.finish()
}

/// What a batch of rows holds, to size a [`BatchBuilder`] exactly: growing its builders by
/// doubling would copy each column's bytes about once more.
#[derive(Debug, Default)]
pub struct Sizes {
    rows: usize,
    leaf_bytes: usize,
    proof_items: usize,
    text_bytes: [usize; 14],
    control_items: usize,
    control_bytes: usize,
}

impl Sizes {
    /// Counts one row.
    pub fn add<'a>(
        &mut self,
        leaf: &[u8],
        proof: &[Hash],
        p: &ProjectionRef<'_>,
        controls: impl IntoIterator<Item = &'a str>,
    ) {
        self.leaf_bytes += leaf.len();
        self.proof_items += proof.len();
        self.add_fields(p, controls);
    }

    /// Counts one row whose leaf and proof columns are given whole
    /// ([`BatchBuilder::finish_with`]).
    pub fn add_fields<'a>(
        &mut self,
        p: &ProjectionRef<'_>,
        controls: impl IntoIterator<Item = &'a str>,
    ) {
        self.rows += 1;
        for (total, text) in self.text_bytes.iter_mut().zip(texts(p)) {
            *total += text.map_or(0, str::len);
        }
        for c in controls {
            self.control_items += 1;
            self.control_bytes += c.len();
        }
    }
}

/// Builds one Arrow batch of bundle rows (the bundle schema), a row at a time.
pub struct BatchBuilder {
    index: UInt64Builder,
    leaf: BinaryBuilder,
    /// The hash columns as flat bytes, 32 per hash: a proof is one slice copy, where a builder
    /// took its hashes one call at a time (16 million calls per million rows).
    leaf_hash: Vec<u8>,
    proof: Vec<u8>,
    /// Where each row's proof ends, in hashes, after a leading 0.
    proof_ends: Vec<i32>,
    texts: Vec<StringBuilder>,
    occurred: TimestampMicrosecondBuilder,
    ingested: TimestampMicrosecondBuilder,
    emergency: BooleanBuilder,
    controls: ListBuilder<StringBuilder>,
}

impl BatchBuilder {
    /// A builder with room for exactly `sizes`.
    #[must_use]
    pub fn with_capacity(sizes: &Sizes) -> Self {
        let n = sizes.rows;
        Self {
            index: UInt64Builder::with_capacity(n),
            leaf: BinaryBuilder::with_capacity(n, sizes.leaf_bytes),
            leaf_hash: Vec::with_capacity(n * 32),
            proof: Vec::with_capacity(sizes.proof_items * 32),
            proof_ends: {
                let mut ends = Vec::with_capacity(n + 1);
                ends.push(0);
                ends
            },
            texts: sizes
                .text_bytes
                .iter()
                .map(|&bytes| StringBuilder::with_capacity(n, bytes))
                .collect(),
            occurred: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            ingested: TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"),
            emergency: BooleanBuilder::with_capacity(n),
            controls: ListBuilder::with_capacity(
                StringBuilder::with_capacity(sizes.control_items, sizes.control_bytes),
                n,
            )
            .with_field(Arc::new(Field::new_list_field(DataType::Utf8, false))),
        }
    }

    /// Appends one row.
    ///
    /// # Errors
    /// Never for a 32-byte hash; Arrow's builders return a `Result`.
    pub fn push<'a>(
        &mut self,
        leaf: &[u8],
        leaf_hash: &Hash,
        proof: &[Hash],
        p: &ProjectionRef<'_>,
        controls: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), arrow_schema::ArrowError> {
        self.leaf.append_value(leaf);
        self.proof.extend_from_slice(proof.as_flattened());
        let end = i32::try_from(self.proof.len() / 32).map_err(|_| {
            arrow_schema::ArrowError::InvalidArgumentError("over 2^31 proof hashes".into())
        })?;
        self.proof_ends.push(end);
        self.push_fields(leaf_hash, p, controls);
        Ok(())
    }

    /// Appends one row's columns but its leaf and proof, which [`BatchBuilder::finish_with`]
    /// is given whole.
    pub fn push_fields<'a>(
        &mut self,
        leaf_hash: &Hash,
        p: &ProjectionRef<'_>,
        controls: impl IntoIterator<Item = &'a str>,
    ) {
        self.index.append_value(p.index);
        self.leaf_hash.extend_from_slice(leaf_hash);
        for (b, v) in self.texts.iter_mut().zip(texts(p)) {
            b.append_option(v);
        }
        self.occurred.append_value(p.occurred_at);
        self.ingested.append_value(p.ingested_at);
        self.emergency.append_option(p.emergency);
        for c in controls {
            self.controls.values().append_value(c);
        }
        self.controls.append(true);
    }

    /// The batch.
    ///
    /// # Errors
    /// If the columns do not make a batch of the bundle schema (they always do).
    pub fn finish(mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let leaf = Arc::new(self.leaf.finish());
        let proof = proof_column(
            OffsetBuffer::new(std::mem::take(&mut self.proof_ends).into()),
            std::mem::take(&mut self.proof).into(),
        )?;
        self.finish_with(leaf, Arc::new(proof))
    }

    /// The batch, with the leaf and proof columns given (rows pushed with
    /// [`BatchBuilder::push_fields`]).
    ///
    /// # Errors
    /// If the columns do not make a batch of the bundle schema: one of a wrong type or length.
    pub fn finish_with(
        mut self,
        leaf: Arc<dyn Array>,
        proof: Arc<dyn Array>,
    ) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let mut s = self
            .texts
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as Arc<dyn Array>);
        let mut next = || s.next().expect("14 string columns");
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(self.index.finish()),
            leaf,
            Arc::new(FixedSizeBinaryArray::try_new(
                32,
                self.leaf_hash.into(),
                None,
            )?),
            proof,
            next(), // event_id
            next(), // type
            next(), // request_id
            next(), // source
            Arc::new(self.occurred.finish()),
            Arc::new(self.ingested.finish()),
            next(), // actor_id
            next(), // actor_kind
            next(), // on_behalf_of
            next(), // reviewer_id
            next(), // action_name
            next(), // action_category
            next(), // resource_id
            next(), // environment
            next(), // channel
            next(), // reason
            Arc::new(self.emergency.finish()),
            Arc::new(self.controls.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

/// The `inclusion_proof` column: each row's hashes, 32 bytes each in `hashes`, ending where
/// `ends` (in hashes) says.
///
/// # Errors
/// If `hashes` is not whole hashes or `ends` runs past it.
pub fn proof_column(
    ends: OffsetBuffer<i32>,
    hashes: arrow_buffer::Buffer,
) -> Result<ListArray, arrow_schema::ArrowError> {
    ListArray::try_new(
        Arc::new(Field::new_list_field(DataType::FixedSizeBinary(32), false)),
        ends,
        Arc::new(FixedSizeBinaryArray::try_new(32, hashes, None)?),
        None,
    )
}

fn column<T: Array + Clone + 'static>(
    batch: &RecordBatch,
    name: &str,
    path: &Path,
) -> Result<T, BundleError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .cloned()
        .ok_or_else(|| format_err(path, format!("column {name} missing or of the wrong type")))
}

fn hash_at(a: &FixedSizeBinaryArray, i: usize) -> Hash {
    a.value(i).try_into().unwrap_or([0; 32])
}

/// A list column's offsets and its items, typed.
fn list<T: Array + Clone + 'static>(
    batch: &RecordBatch,
    name: &str,
    path: &Path,
) -> Result<(OffsetBuffer<i32>, T), BundleError> {
    let list = column::<ListArray>(batch, name, path)?;
    let items = list
        .values()
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| format_err(path, format!("{name} items are of the wrong type")))?;
    Ok((list.offsets().clone(), items))
}

/// The item range of row `i` of a list column.
fn items(offsets: &OffsetBuffer<i32>, i: usize) -> std::ops::Range<usize> {
    let at = |k: usize| usize::try_from(offsets[k]).unwrap_or(0);
    at(i)..at(i + 1)
}

/// One decoded batch of a row file, its columns typed once: rows are read in place
/// ([`RowBatch::row`]), with no copy of their bytes.
pub struct RowBatch {
    index: UInt64Array,
    leaf: BinaryArray,
    leaf_hash: FixedSizeBinaryArray,
    proof: (OffsetBuffer<i32>, FixedSizeBinaryArray),
    /// In [`TEXT_COLUMNS`] order.
    texts: [StringArray; 14],
    occurred: TimestampMicrosecondArray,
    ingested: TimestampMicrosecondArray,
    emergency: BooleanArray,
    controls: (OffsetBuffer<i32>, StringArray),
}

/// The text columns of [`RowBatch::texts`], in order.
const TEXT_COLUMNS: [&str; 14] = [
    "event_id",
    "type",
    "request_id",
    "source",
    "actor_id",
    "actor_kind",
    "on_behalf_of",
    "reviewer_id",
    "action_name",
    "action_category",
    "resource_id",
    "environment",
    "channel",
    "reason",
];

impl RowBatch {
    /// Types the columns of `batch`, a batch of the bundle schema; `path` names it in errors.
    ///
    /// # Errors
    /// If a column is missing or of the wrong type.
    pub fn new(batch: &RecordBatch, path: &Path) -> Result<Self, BundleError> {
        let mut texts = Vec::with_capacity(TEXT_COLUMNS.len());
        for name in TEXT_COLUMNS {
            texts.push(column::<StringArray>(batch, name, path)?);
        }
        let proof = list::<FixedSizeBinaryArray>(batch, "inclusion_proof", path)?;
        if proof.1.value_length() != 32 {
            return Err(format_err(
                path,
                "inclusion_proof items are not fixed_size_binary(32)",
            ));
        }
        let leaf_hash = column::<FixedSizeBinaryArray>(batch, "leaf_hash", path)?;
        if leaf_hash.value_length() != 32 {
            return Err(format_err(path, "leaf_hash is not fixed_size_binary(32)"));
        }
        Ok(Self {
            index: column(batch, "index", path)?,
            leaf: column(batch, "leaf", path)?,
            leaf_hash,
            proof,
            texts: texts
                .try_into()
                .unwrap_or_else(|_| unreachable!("one array per text column")),
            occurred: column(batch, "occurred_at", path)?,
            ingested: column(batch, "ingested_at", path)?,
            emergency: column(batch, "emergency", path)?,
            controls: list::<StringArray>(batch, "controls", path)?,
        })
    }

    /// Rows in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the batch has no rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`, borrowed from the batch's columns.
    ///
    /// # Panics
    /// If `i` is not below [`RowBatch::len`].
    #[must_use]
    pub fn row(&self, i: usize) -> RowRef<'_> {
        let text = |c: usize| self.texts[c].value(i);
        let opt = |c: usize| (!self.texts[c].is_null(i)).then(|| self.texts[c].value(i));
        let proof = items(&self.proof.0, i);
        let proof_bytes = &self.proof.1.value_data()[proof.start * 32..proof.end * 32];
        RowRef {
            leaf: self.leaf.value(i),
            leaf_hash: hash_at(&self.leaf_hash, i),
            inclusion_proof: proof_bytes.as_chunks::<32>().0,
            projection: Projection {
                index: self.index.value(i),
                event_id: text(0),
                event_type: text(1),
                request_id: text(2),
                source: text(3),
                occurred_at: self.occurred.value(i),
                ingested_at: self.ingested.value(i),
                actor_id: text(4),
                actor_kind: text(5),
                on_behalf_of: opt(6),
                reviewer_id: opt(7),
                action_name: text(8),
                action_category: text(9),
                resource_id: text(10),
                environment: text(11),
                channel: opt(12),
                reason: opt(13),
                emergency: (!self.emergency.is_null(i)).then(|| self.emergency.value(i)),
            },
            controls: Controls {
                values: &self.controls.1,
                range: items(&self.controls.0, i),
            },
        }
    }
}

/// One bundle row, borrowed from a [`RowBatch`].
#[derive(Debug, Clone)]
pub struct RowRef<'a> {
    /// The exact leaf bytes.
    pub leaf: &'a [u8],
    /// BLAKE3 leaf hash.
    pub leaf_hash: Hash,
    /// Inclusion proof against the bundle's checkpoint.
    pub inclusion_proof: &'a [Hash],
    /// Projections of the leaf.
    pub projection: ProjectionRef<'a>,
    /// Control IDs this row evidences.
    pub controls: Controls<'a>,
}

/// A row's control IDs, borrowed.
#[derive(Debug, Clone)]
pub struct Controls<'a> {
    values: &'a StringArray,
    range: std::ops::Range<usize>,
}

impl<'a> Controls<'a> {
    /// The IDs in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        let values = self.values;
        self.range.clone().map(move |j| values.value(j))
    }
}

impl RowRef<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_owned(&self) -> Row {
        Row {
            leaf: self.leaf.to_vec(),
            leaf_hash: self.leaf_hash,
            inclusion_proof: self.inclusion_proof.to_vec(),
            projection: self.projection.to_owned(),
            controls: self.controls.iter().map(str::to_owned).collect(),
        }
    }
}

fn check_chunks(metadata: &ParquetMetaData, file_len: u64) -> Result<(), String> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for column in group.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset());
            let end = u64::try_from(start)
                .ok()
                .zip(u64::try_from(column.compressed_size()).ok())
                .and_then(|(start, len)| start.checked_add(len));
            if end.is_none_or(|end| end > file_len) {
                return Err(format!(
                    "row group {g}: column chunk {} is not within the file",
                    column.column_path()
                ));
            }
        }
    }
    Ok(())
}

/// First bytes of a page read to find its header; more only if the header is longer.
const HEADER_WINDOW: u64 = 1024;
/// Deepest Thrift nesting a page header may have (the parquet crate's own limit).
const THRIFT_DEPTH: u8 = 64;

/// Requires every page header of every column chunk to be well-formed Thrift whose lengths and
/// element counts fit in the bytes that are left. The parquet crate parses page headers from a
/// reader that returns nothing past the end instead of failing, so a header claiming a list of 2^31
/// doubles or a 2^40-byte string makes it loop for hours or allocate without bound (found by
/// fuzz/fuzz_targets/rows.rs); this walk is linear in the header bytes and allocates nothing
/// beyond a small window per page.
fn check_page_headers<R: ChunkReader>(
    source: &R,
    metadata: &ParquetMetaData,
) -> Result<(), String> {
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for column in group.columns() {
            // Within the file and not negative: `check_chunks` ran first.
            let (start, len) = column.byte_range();
            let end = start + len;
            let mut at = start;
            while at < end {
                let bad = |why: &str| {
                    format!(
                        "row group {g}: column chunk {}: page header at byte {at}: {why}",
                        column.column_path()
                    )
                };
                let mut window = (end - at).min(HEADER_WINDOW);
                let (header_len, page_len) = loop {
                    let usize_window = usize::try_from(window).map_err(|_| bad("too long"))?;
                    let bytes = source
                        .get_bytes(at, usize_window)
                        .map_err(|e| bad(&e.to_string()))?;
                    match page_header(&bytes) {
                        Ok(lengths) => break lengths,
                        Err(ThriftError::Eof) if window < end - at => {
                            window = (end - at).min(window.saturating_mul(8));
                        }
                        Err(ThriftError::Eof) => {
                            return Err(bad("truncated, or a size larger than the bytes left"));
                        }
                        Err(ThriftError::Malformed(why)) => return Err(bad(why)),
                    }
                };
                at = at
                    .checked_add(header_len)
                    .and_then(|a| a.checked_add(page_len))
                    .filter(|a| *a <= end)
                    .ok_or_else(|| bad("its page runs past the column chunk"))?;
            }
        }
    }
    Ok(())
}

/// Why bytes are not a Thrift page header.
#[derive(Debug, PartialEq, Eq)]
enum ThriftError {
    /// The bytes end inside it.
    Eof,
    /// Not Thrift's compact protocol, or a size that cannot fit.
    Malformed(&'static str),
}

/// A bounded walk over Thrift compact-protocol bytes (thrift-compact-protocol.md).
struct Thrift<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Thrift<'_> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.at) as u64
    }

    fn byte(&mut self) -> Result<u8, ThriftError> {
        let b = *self.buf.get(self.at).ok_or(ThriftError::Eof)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, ThriftError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ThriftError::Malformed("varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: u64) -> Result<(), ThriftError> {
        if n > self.remaining() {
            return Err(ThriftError::Eof);
        }
        self.at += n as usize;
        Ok(())
    }

    /// An element count: each element takes at least a byte, so more than the bytes left cannot
    /// fit (here, or at all if this is the whole column chunk).
    fn count(&self, n: u64) -> Result<u64, ThriftError> {
        if n > self.remaining() {
            return Err(ThriftError::Eof);
        }
        Ok(n)
    }

    /// Skips a value of compact type `ty`; `element` for list, set and map elements (where a
    /// boolean takes a byte, unlike a boolean field). Each value takes at least one byte.
    fn value(&mut self, ty: u8, element: bool, depth: u8) -> Result<(), ThriftError> {
        let depth = depth
            .checked_sub(1)
            .ok_or(ThriftError::Malformed("nested too deeply"))?;
        match ty {
            1 | 2 if !element => Ok(()),
            1..=3 => self.byte().map(|_| ()),
            4..=6 => self.varint().map(|_| ()),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(n)
            }
            9 | 10 => {
                let header = self.byte()?;
                let n = match header >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                for _ in 0..self.count(n)? {
                    self.value(header & 0x0f, true, depth)?;
                }
                Ok(())
            }
            11 => {
                let n = self.varint()?;
                if n > 0 {
                    let types = self.byte()?;
                    for _ in 0..self.count(n)? {
                        self.value(types >> 4, true, depth)?;
                        self.value(types & 0x0f, true, depth)?;
                    }
                }
                Ok(())
            }
            12 => self.structure(depth, None).map(|_| ()),
            13 => self.skip(16),
            _ => Err(ThriftError::Malformed("unknown Thrift type")),
        }
    }

    /// Walks a struct to its stop byte; returns the raw varint of field `want` if it is an i32.
    fn structure(&mut self, depth: u8, want: Option<i16>) -> Result<Option<u64>, ThriftError> {
        let mut id = 0i16;
        let mut found = None;
        loop {
            let header = self.byte()?;
            if header == 0 {
                return Ok(found);
            }
            id = match header >> 4 {
                0 => i16::try_from(zigzag(self.varint()?))
                    .map_err(|_| ThriftError::Malformed("field id out of range"))?,
                delta => id
                    .checked_add(i16::from(delta))
                    .ok_or(ThriftError::Malformed("field id out of range"))?,
            };
            let ty = header & 0x0f;
            if want == Some(id) && ty == 5 {
                found = Some(self.varint()?);
            } else {
                self.value(ty, false, depth)?;
            }
        }
    }
}

fn zigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// The length of the page header at the start of `bytes`, and its `compressed_page_size` (field 3,
/// an i32): where the next page header starts.
fn page_header(bytes: &[u8]) -> Result<(u64, u64), ThriftError> {
    let mut t = Thrift { buf: bytes, at: 0 };
    let size = t
        .structure(THRIFT_DEPTH, Some(3))?
        .ok_or(ThriftError::Malformed("no compressed_page_size"))?;
    let size = i32::try_from(zigzag(size))
        .ok()
        .and_then(|s| u64::try_from(s).ok())
        .ok_or(ThriftError::Malformed("compressed_page_size out of range"))?;
    Ok((t.at as u64, size))
}

/// Reads every row of a bundle Parquet file in order, a batch at a time, calling `f` per row.
/// The file's schema must be the bundle schema exactly.
pub fn read_rows(
    path: &Path,
    mut f: impl FnMut(Row) -> Result<(), BundleError>,
) -> Result<u64, BundleError> {
    read_batches(path, |batch| {
        (0..batch.len()).try_for_each(|i| f(batch.row(i).to_owned()))
    })
}

/// As [`read_rows`], from any Parquet source: an open file, or the file's bytes in memory
/// (`bytes::Bytes`). `path` names it in errors.
pub fn read_rows_from<R: ChunkReader + 'static>(
    source: R,
    path: &Path,
    mut f: impl FnMut(Row) -> Result<(), BundleError>,
) -> Result<u64, BundleError> {
    read_batches_from(source, path, |batch| {
        (0..batch.len()).try_for_each(|i| f(batch.row(i).to_owned()))
    })
}

/// As [`read_rows`], a decoded batch at a time: its rows are read in place ([`RowBatch::row`]).
/// Returns the row count.
pub fn read_batches(
    path: &Path,
    f: impl FnMut(RowBatch) -> Result<(), BundleError>,
) -> Result<u64, BundleError> {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
        return Err(format_err(path, "missing or not a regular file"));
    }
    let file = File::open(path).map_err(|source| BundleError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_batches_from(file, path, f)
}

/// As [`read_batches`], from any Parquet source (see [`read_rows_from`]).
pub fn read_batches_from<R: ChunkReader + 'static>(
    source: R,
    path: &Path,
    mut f: impl FnMut(RowBatch) -> Result<(), BundleError>,
) -> Result<u64, BundleError> {
    let metadata = ArrowReaderMetadata::load(&source, ArrowReaderOptions::default())
        .map_err(|e| format_err(path, e))?;
    check_chunks(metadata.metadata(), source.len()).map_err(|e| format_err(path, e))?;
    check_page_headers(&source, metadata.metadata()).map_err(|e| format_err(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(source, metadata);
    if builder.schema().fields() != schema().fields() {
        return Err(format_err(
            path,
            "schema differs from the bundle row schema",
        ));
    }
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| format_err(path, e))?;
    let mut count = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| format_err(path, e))?;
        let rows = RowBatch::new(&batch, path)?;
        count += rows.len() as u64;
        f(rows)?;
    }
    Ok(count)
}

/// The period and index range a bundle covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Period {
    /// Start, inclusive (RFC 3339 UTC).
    pub from: String,
    /// End, exclusive (RFC 3339 UTC).
    pub to: String,
}

/// `[start, end)` of entry indexes in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct IndexRange {
    /// First index in the period.
    pub start: u64,
    /// One past the last index in the period.
    pub end: u64,
}

/// Row counts per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RowCounts {
    /// `events.parquet`.
    pub events: u64,
    /// `boundaries.parquet`.
    pub boundaries: u64,
    /// `context.parquet`.
    pub context: u64,
}

/// The checkpoint as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ManifestCheckpoint {
    /// Origin.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Base64 root.
    pub root: String,
}

/// The signing key as the manifest records it (for matching; trust comes from the user's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ManifestKey {
    /// Key name.
    pub name: String,
    /// Hex key ID.
    pub id: String,
}

/// The producing tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Tool {
    /// `ledger`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// `manifest.json` (contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u64,
    /// `soc2` or `fedramp`.
    pub framework: String,
    /// The period by `ingested_at`.
    pub period: Period,
    /// The index range of the period.
    pub index_range: IndexRange,
    /// Rows per file.
    pub rows: RowCounts,
    /// The checkpoint all proofs are against.
    pub checkpoint: ManifestCheckpoint,
    /// The key that signed checkpoint and manifest.
    pub key: ManifestKey,
    /// Producer.
    pub tool: Tool,
    /// When the bundle was made (RFC 3339 UTC).
    pub generated_at: String,
    /// BLAKE3 (hex) of every other file, by relative path.
    pub files: BTreeMap<String, String>,
}

/// BLAKE3 (hex) of a file, streamed.
pub fn file_hash(path: &Path) -> Result<String, BundleError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(File::open(path).map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })?)
        .map_err(|source| BundleError::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// `consistency.json`: proof that the bundle's checkpoint extends an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyFile {
    /// The earlier signed checkpoint, as given to `--since`.
    pub from_checkpoint: String,
    /// Hex hashes of the RFC 9162 consistency proof to the bundle's checkpoint.
    pub proof: Vec<String>,
}

/// `source-keys.json`, and `GET /v1/source-keys`: each signing source's origin keys (C2SP verifier
/// key text), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceKeys {
    /// Source name -> its keys.
    pub sources: BTreeMap<String, Vec<String>>,
}

/// The exact bytes export writes for a JSON file (pretty, trailing newline).
#[must_use]
pub fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("value serializes");
    bytes.push(b'\n');
    bytes
}

/// Each control's row count in the period, counted as the period's rows go by (export while it
/// writes them, verify while it checks them), for `controls.json`. A row whose controls are its
/// class's ([`Classes`]: the controls a row evidences follow from its event type and action
/// category) is counted once, for its class, and the classes' counts are spread over their
/// controls at the end; only a row listing other controls (a tampered bundle) is counted control
/// by control.
#[derive(Debug, Clone)]
pub struct ControlCounts {
    classes: Classes,
    /// Rows counted by class.
    rows: Vec<u64>,
    /// Rows counted control by control, by position in the mapping.
    listed: Vec<u64>,
}

impl ControlCounts {
    /// Zero rows for every control of `framework`.
    #[must_use]
    pub fn new(framework: &Framework) -> Self {
        let classes = Classes::new(framework);
        let rows = vec![0; classes.class_count()];
        let listed = vec![0; classes.control_ids().len()];
        Self {
            classes,
            rows,
            listed,
        }
    }

    /// Counts one row made from the mapping: one for each control it applies to the row.
    pub fn add(&mut self, row: &ProjectionRef<'_>) {
        self.rows[self.classes.class_of(row)] += 1;
    }

    /// Counts one row that lists `controls` (verify counts what the rows say: a row whose list
    /// is not the mapping's counts for what it lists; IDs outside the framework are not counted).
    pub fn add_listed<'a, I>(&mut self, row: &ProjectionRef<'_>, controls: I)
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let controls = controls.into_iter();
        let class = self.classes.class_of(row);
        if self.classes.ids(class).eq(controls.clone()) {
            self.rows[class] += 1;
            return;
        }
        for c in controls {
            for (id, n) in self.classes.control_ids().iter().zip(&mut self.listed) {
                if id == c {
                    *n += 1;
                }
            }
        }
    }

    /// `controls.json`: the mapping applied, with each control's row count in the period.
    /// `framework` is the one these counts were made for.
    #[must_use]
    pub fn to_json(&self, framework_name: &str, framework: &Framework) -> serde_json::Value {
        let mut per_control = self.listed.clone();
        for (class, &rows) in self.rows.iter().enumerate() {
            for &i in self.classes.positions(class) {
                per_control[i] += rows;
            }
        }
        let controls: Vec<serde_json::Value> = framework
            .controls
            .iter()
            .zip(per_control)
            .map(|(c, rows)| {
                serde_json::json!({
                    "id": c.id,
                    "title": c.title,
                    "evidence": c.evidence,
                    "selects": {"types": c.types, "categories": c.categories},
                    "rows_in_period": rows,
                })
            })
            .collect();
        serde_json::json!({
            "framework": framework_name,
            "title": framework.title,
            "mapping": "schemas/controls.v1.json",
            "row_column": "controls",
            "controls": controls,
        })
    }
}

/// BLAKE3 of every file under `dir` except the manifest and its signature, by relative path.
/// `known` holds hashes already taken (by relative path); those files are not read again.
pub fn hash_files(
    dir: &Path,
    mut known: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, BundleError> {
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
            // symlink_metadata: never follow links out of an (untrusted) bundle.
            let kind = fs::symlink_metadata(&path)
                .map_err(|source| BundleError::Io {
                    path: path.display().to_string(),
                    source,
                })?
                .file_type();
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                return Err(BundleError::Format {
                    path: path.display().to_string(),
                    message: "not a regular file (links and devices are refused)".into(),
                });
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if rel == files::MANIFEST || rel == files::MANIFEST_SIG {
                continue;
            }
            let hash = match known.remove(&rel) {
                Some(hash) => hash,
                None => file_hash(&path)?,
            };
            out.insert(rel, hash);
        }
    }
    // A known hash must name a file that is there.
    match known.into_keys().next() {
        Some(rel) => Err(BundleError::Format {
            path: dir.join(&rel).display().to_string(),
            message: "hashed, then gone from the bundle".into(),
        }),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::controls::row_of as row;

    /// Counted by class, each control's count is the number of rows the mapping applies it to;
    /// a row listing other controls counts for what it lists.
    #[test]
    fn control_counts_are_the_mapping_applied_row_by_row() {
        let framework = Framework::named("fedramp").unwrap();
        let types = [
            "approval.approved",
            "action.executed",
            "action.failed",
            "other.type",
        ];
        let categories = [
            "infrastructure_change",
            "privilege_escalation",
            "secret_access",
            "data_export",
            "other",
        ];
        let mut counts = ControlCounts::new(&framework);
        let mut want = vec![0u64; framework.controls.len()];
        for (n, (t, c)) in types
            .iter()
            .flat_map(|t| categories.iter().map(move |c| (*t, *c)))
            .enumerate()
        {
            let r = row(t, c);
            for _ in 0..=n % 3 {
                if n % 2 == 0 {
                    counts.add(&r);
                } else {
                    counts.add_listed(&r, framework.controls_of(&r).collect::<Vec<_>>());
                }
                for (i, control) in framework.controls.iter().enumerate() {
                    want[i] += u64::from(control.applies_to(&r));
                }
            }
        }
        // Listed controls that are not the mapping's: counted as listed, unknown IDs not at all.
        counts.add_listed(&row("action.executed", "other"), ["CM-3", "XX-1", "AU-2"]);
        for (i, control) in framework.controls.iter().enumerate() {
            want[i] += u64::from(control.id == "CM-3" || control.id == "AU-2");
        }
        let json = counts.to_json("fedramp", &framework);
        let got: Vec<u64> = json["controls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["rows_in_period"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want);
        assert!(
            want.iter().all(|&n| n > 0),
            "every control is exercised: {want:?}"
        );
    }

    /// Found by fuzz/fuzz_targets/rows.rs: a footer whose column chunk starts at a negative offset
    /// made the parquet crate panic ("column start and length should not be negative").
    #[test]
    fn a_column_chunk_outside_the_file_is_an_error_not_a_panic() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/column-chunk-outside-file.parquet");
        let err = read_rows(&path, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("is not within the file"), "{err}");
    }

    /// Found by fuzz/fuzz_targets/rows.rs: a page header holding a list that claims far more
    /// elements than there are bytes made the parquet crate loop for minutes (hours, with a larger
    /// count) skipping elements past the end of the data.
    #[test]
    fn a_page_header_larger_than_its_bytes_is_an_error_not_a_hang() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/page-header-huge-list.parquet");
        let started = std::time::Instant::now();
        let err = read_rows(&path, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("page header at byte"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn page_headers_are_walked_within_their_bytes() {
        // type, uncompressed_page_size 10, compressed_page_size 10 (i32 fields 1-3), stop.
        let fields = [0x15, 0x00, 0x15, 0x14, 0x15, 0x14];
        let header = |extra: &[u8]| [&fields[..], extra, &[0x00]].concat();
        assert_eq!(page_header(&header(&[])), Ok((7, 10)));
        // Field 4 a list of 2^31 doubles; a string of 2^40 bytes: sizes past the bytes left.
        let huge_list = header(&[0x19, 0xf7, 0x80, 0x80, 0x80, 0x80, 0x08]);
        assert_eq!(page_header(&huge_list), Err(ThriftError::Eof));
        let huge_string = header(&[0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
        assert_eq!(page_header(&huge_string), Err(ThriftError::Eof));
        // A list of 3 booleans takes a byte each; a struct field holding a boolean takes none.
        assert_eq!(page_header(&header(&[0x19, 0x31, 1, 2, 1])), Ok((12, 10)));
        assert_eq!(page_header(&header(&[0x1c, 0x11, 0x00])), Ok((10, 10)));
        // Structs nested past the limit; a negative compressed size; no compressed size.
        let deep = header(
            &[
                [0x1c].repeat(usize::from(THRIFT_DEPTH) + 1),
                [0x00].repeat(66),
            ]
            .concat(),
        );
        assert_eq!(
            page_header(&deep),
            Err(ThriftError::Malformed("nested too deeply"))
        );
        assert!(matches!(
            page_header(&[0x15, 0x00, 0x15, 0x14, 0x15, 0x01, 0x00]),
            Err(ThriftError::Malformed(_))
        ));
        assert!(matches!(
            page_header(&[0x15, 0x00, 0x00]),
            Err(ThriftError::Malformed(_))
        ));
    }

    /// Rows pushed one at a time and written as batches, across a row-group boundary: read back
    /// equal, in order, in groups of [`ROW_GROUP_ROWS`].
    #[test]
    fn rows_span_row_groups_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::EVENTS);
        let row = |i: u64| {
            let text = |s: &str| format!("{s}-{i}");
            let opt = |s: &str| i.is_multiple_of(3).then(|| text(s));
            Row {
                leaf: text("leaf").into_bytes(),
                leaf_hash: [(i % 251) as u8; 32],
                inclusion_proof: (0..i % 5).map(|k| [k as u8; 32]).collect(),
                projection: Projection {
                    index: i,
                    event_id: text("evt"),
                    event_type: "approval.requested".into(),
                    request_id: text("req"),
                    source: "gateway".into(),
                    occurred_at: i as i64,
                    ingested_at: i as i64 + 1,
                    actor_id: text("actor"),
                    actor_kind: "agent".into(),
                    on_behalf_of: opt("user"),
                    reviewer_id: opt("bob"),
                    action_name: "grant".into(),
                    action_category: "privilege_escalation".into(),
                    resource_id: text("res"),
                    environment: "prod".into(),
                    channel: opt("slack"),
                    reason: opt("why"),
                    emergency: i.is_multiple_of(2).then_some(i.is_multiple_of(4)),
                },
                controls: (0..i % 3).map(|k| format!("CC{k}")).collect(),
            }
        };
        let n = ROW_GROUP_ROWS as u64 + 5;
        let rows: Vec<Row> = (0..n).map(row).collect();
        let mut writer = RowWriter::create(&path).unwrap();
        for r in &rows[..10] {
            writer.push(r.clone()).unwrap();
        }
        for part in rows[10..].chunks(3_000) {
            writer.write_batch(&to_batch(part).unwrap()).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), n);
        let file = File::open(&path).unwrap();
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default()).unwrap();
        let groups: Vec<i64> = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [ROW_GROUP_ROWS as i64, 5]);
        let mut read = Vec::new();
        read_rows(&path, |r| {
            read.push(r);
            Ok(())
        })
        .unwrap();
        assert!(read == rows, "rows differ after the round trip");
    }

    #[test]
    fn rows_written_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(files::EVENTS);
        let row = Row {
            leaf: b"{}".to_vec(),
            leaf_hash: [7; 32],
            inclusion_proof: vec![[1; 32], [2; 32]],
            projection: Projection {
                index: 3,
                event_id: "evt-1".into(),
                event_type: "approval.requested".into(),
                request_id: "req-1".into(),
                source: "gateway".into(),
                occurred_at: 1,
                ingested_at: 2,
                actor_id: "agent-7".into(),
                actor_kind: "agent".into(),
                on_behalf_of: None,
                reviewer_id: Some("bob".into()),
                action_name: "grant admin".into(),
                action_category: "privilege_escalation".into(),
                resource_id: "iam://prod".into(),
                environment: "prod".into(),
                channel: None,
                reason: None,
                emergency: Some(true),
            },
            controls: vec!["CC6.1".into()],
        };
        let mut writer = RowWriter::create(&path).unwrap();
        writer.push(row.clone()).unwrap();
        assert_eq!(writer.finish().unwrap(), 1);
        let mut read = Vec::new();
        read_rows(&path, |r| {
            read.push(r);
            Ok(())
        })
        .unwrap();
        read_rows_from(File::open(&path).unwrap(), &path, |r| {
            read.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(read, [row.clone(), row]);
    }

    #[test]
    fn hash_files_takes_known_hashes_as_given_and_refuses_one_for_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"a").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b"), b"b").unwrap();
        fs::write(dir.path().join(files::MANIFEST), b"{}").unwrap();
        let all = hash_files(dir.path(), BTreeMap::new()).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "sub/b"]);
        assert_eq!(all["a"], file_hash(&dir.path().join("a")).unwrap());
        // A known hash is not taken again (here it is deliberately not the file's).
        let known = [("sub/b".to_owned(), "given".to_owned())].into();
        let with = hash_files(dir.path(), known).unwrap();
        assert_eq!(
            (with["a"].as_str(), with["sub/b"].as_str()),
            (all["a"].as_str(), "given")
        );
        let known = [("gone".to_owned(), "given".to_owned())].into();
        let err = hash_files(dir.path(), known).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
