//! RocksDB persistence: the only module that names `rocksdb`.
//!
//! Owns: column families, key encoding, and the one synced `WriteBatch` per commit. Must not touch:
//! signing, ordering, HTTP. Every commit is atomic across column families (one WAL record) and is
//! fsync'd before [`Store::commit`] returns.
//!
//! Key layout (all integers big-endian, so RocksDB's byte order is numeric order):
//!
//! | column family | key                                   | value                                  |
//! |---------------|---------------------------------------|----------------------------------------|
//! | `entries`     | index u64                             | leaf bytes                             |
//! | `tiles`       | tile number u64                       | hashes of 64 consecutive tree nodes    |
//! | `tail`        | `tail`                                | tile number u64, then its 0-63 hashes  |
//! | `checkpoints` | tree size u64                         | signed checkpoint note                 |
//! | `dedup`       | source, 0x00, event_id                | index u64, tree size u64               |
//! | `requests`    | request_id, 0x00, index u64           | (empty)                                |
//! | `sources`     | source name                           | credential record (see `auth`)         |
//! | `auditors`    | auditor name                          | credential record (see `auth`)         |
//! | `admins`      | admin name                            | credential record (see `auth`)         |
//! | `meta`        | name                                  | value                                  |
//!
//! A tile holds the 32-byte hashes of the complete subtrees (tree nodes) at places `64 t` to
//! `64 t + 63` of the order nodes complete in ([`NodeId::stored_index`]). A tile is written to
//! `tiles` once, when its 64th node completes; the nodes of the one partly filled tile after
//! them are the single `tail` record, which every commit rewrites. So `tiles` only ever grows
//! at its end, and its flushed files never overlap: RocksDB moves them down without rewriting
//! them (a partly filled tile rewritten under its key made every flushed file overlap the one
//! before, and compaction rewrote the whole family).
//!
//! That is storage format 4. Formats 2 and 3 kept one node per key in `tree` (the last leaf the
//! node covers, then its level); format 2 also had a BLAKE3 digest of the event after the tree
//! size in `dedup` (read still: nothing reads the digest). Format 1 keyed nodes `[level][index]`
//! in `nodes`. [`Store::open`] rewrites the nodes of formats 1-3 as tiles in place
//! (`docs/architecture.md`, "RocksDB key layout").

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode,
    Options, WriteBatch, WriteOptions,
};

use crate::core::hash::Hash;
use crate::core::merkle::{HashReader, NodeId, TreeError};

const CF_ENTRIES: &str = "entries";
/// Tree nodes, 64 to a key, in the order they complete ([`TILE_NODES`]).
const CF_TILES: &str = "tiles";
/// The last, partly filled tile ([`TAIL_KEY`]).
const CF_TAIL: &str = "tail";
/// The one key of `tail`.
const TAIL_KEY: &[u8] = b"tail";
/// Tree nodes of storage formats 2 and 3, one per key (the last leaf it covers, then its level); only read, to upgrade.
const CF_TREE_V3: &str = "tree";
/// Tree nodes of storage format 1, keyed level first; only read, to upgrade a format-1 dir.
const CF_NODES_V1: &str = "nodes";
/// Nodes per tile: the hashes of 64 nodes, consecutive in completion order, are one value (2 KiB).
/// A commit of 1,000 events completes about 2,000 nodes: 32 keys instead of 2,000, which saved
/// the committer and the flush about 0.5 µs of CPU per event (`docs/performance.md`, "Session 17").
pub const TILE_NODES: u64 = 64;
const HASH_BYTES: usize = 32;
const TILE_BYTES: usize = TILE_NODES as usize * HASH_BYTES;
const CF_CHECKPOINTS: &str = "checkpoints";
const CF_DEDUP: &str = "dedup";
const CF_REQUESTS: &str = "requests";
const CF_SOURCES: &str = "sources";
const CF_AUDITORS: &str = "auditors";
const CF_ADMINS: &str = "admins";
const CF_META: &str = "meta";
/// Bytes a long forward scan reads ahead at a time ([`Reads::Scan`]).
const SCAN_READAHEAD: usize = 1 << 20;
const ALL_CFS: [&str; 10] = [
    CF_ENTRIES,
    CF_TILES,
    CF_TAIL,
    CF_CHECKPOINTS,
    CF_DEDUP,
    CF_REQUESTS,
    CF_SOURCES,
    CF_AUDITORS,
    CF_ADMINS,
    CF_META,
];

/// Which kind of credential a record is; each kind has its own column family (its own namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// An enforcement point that writes events.
    Source,
    /// An auditor that reads entries and exports.
    Auditor,
    /// An administrator that manages credentials (and cannot write events).
    Admin,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::Source, Self::Auditor, Self::Admin];

    fn cf(self) -> &'static str {
        match self {
            Self::Source => CF_SOURCES,
            Self::Auditor => CF_AUDITORS,
            Self::Admin => CF_ADMINS,
        }
    }

    /// The kind's name (`source`, `auditor`, `admin`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }

    /// The kind named `name`.
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// `meta` key holding the verifier key of the log this data dir belongs to.
pub const META_LOG_KEY: &[u8] = b"log_verifier_key";
/// `meta` key holding the log's key history (JSON, see `keys`), once a key was rotated.
pub const META_KEY_HISTORY: &[u8] = b"key_history";
/// `meta` key holding the storage format version.
const META_FORMAT: &[u8] = b"format";
/// The storage format this build writes: 4 keeps the tree's nodes in tiles.
const FORMAT_VERSION: &[u8] = b"4";
/// Format 3 kept one node per key in `tree`: a writable open rewrites them as tiles.
const FORMAT_V3: &[u8] = b"3";
/// Format 2 was format 3 with the event's digest in `dedup` records (still read as they are).
const FORMAT_V2: &[u8] = b"2";
/// Format 1 keyed nodes level first (`nodes`): a writable open rewrites them as tiles.
const FORMAT_V1: &[u8] = b"1";

/// Storage errors. All surface as HTTP 503 on the write path (the batch is not acknowledged) or 500
/// on reads, and as exit code 2 in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually `ledger serve`) holds the data dir's lock.
    #[error("data dir {0} is in use by another process (is `ledger serve` running?)")]
    InUse(String),
    /// RocksDB reported an error (I/O, disk full, corruption detected by checksums).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value does not have its layout's shape.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The data dir is in an older storage format, which only a writable open upgrades.
    #[error(
        "data dir {path} is in storage format {format}; start `ledger serve` on it once with this version (it upgrades the dir in place), then retry"
    )]
    NeedsUpgrade {
        /// The data dir.
        path: String,
        /// The format it records.
        format: String,
    },
}

impl StoreError {
    /// True when the stored data itself is damaged (a value of the wrong shape, or a RocksDB
    /// checksum or format failure), as opposed to an I/O or usage error.
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        match self {
            Self::Corrupt(_) => true,
            Self::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            Self::InUse(_) | Self::NeedsUpgrade { .. } => false,
        }
    }
}

/// What the idempotency index remembers of an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupRecord {
    /// Index the event was appended at.
    pub index: u64,
    /// Tree size of the commit that appended it (its original receipt's checkpoint).
    pub tree_size: u64,
}

impl DedupRecord {
    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..].copy_from_slice(&self.tree_size.to_be_bytes());
        out
    }

    /// Reads a record of format 3 (16 bytes) or 2 (48: the same and a digest, which nothing
    /// needs: a repeated `event_id` is compared with its stored event itself).
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != 16 && bytes.len() != 48 {
            return Err(StoreError::Corrupt(format!(
                "dedup record is {} bytes, not 16 (or 48, format 2)",
                bytes.len()
            )));
        }
        Ok(Self {
            index: decode_u64(&bytes[..8], "dedup record's index")?,
            tree_size: decode_u64(&bytes[8..16], "dedup record's tree size")?,
        })
    }
}

/// The idempotency key of an event: its source and `event_id`.
#[must_use]
pub fn dedup_key(source: &str, event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + 1 + event_id.len());
    key.extend_from_slice(source.as_bytes());
    key.push(0);
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// A tile's key: its number, big-endian (byte order is numeric order). Tiles hold nodes in the
/// order they complete, so every commit writes keys at or above the last stored one: the
/// memtable inserts them at its end, and flushed files never overlap, so compaction has nothing
/// to merge (format 1's `[level][index]` node key made every flushed file span every level).
fn tile_key(tile: u64) -> [u8; 8] {
    tile.to_be_bytes()
}

/// The hashes of a stored tile; an error unless it holds 1 to [`TILE_NODES`] of them.
fn tile_hashes(tile: u64, value: &[u8]) -> Result<&[[u8; HASH_BYTES]], StoreError> {
    let (hashes, rest) = value.as_chunks::<HASH_BYTES>();
    if rest.is_empty() && !hashes.is_empty() && value.len() <= TILE_BYTES {
        Ok(hashes)
    } else {
        Err(StoreError::Corrupt(format!(
            "tile {tile} is {} bytes, not 1 to {TILE_NODES} hashes of {HASH_BYTES}",
            value.len()
        )))
    }
}

/// The tile a `tiles` key names.
fn decode_tile_key(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| {
            StoreError::Corrupt(format!(
                "tiles key {} is not a tile's key",
                hex::encode(bytes)
            ))
        })
}

/// The place in completion order of a node a tree of fewer than 2^64 leaves has.
fn stored_place(id: NodeId) -> Result<u64, StoreError> {
    id.stored_index().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "node level {} index {} lies beyond any tree",
            id.level, id.index
        ))
    })
}

/// The `tail` record: the number of the tile the next node goes into, and the hashes of that
/// tile's nodes stored so far (fewer than [`TILE_NODES`]).
fn decode_tail(value: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let bad = || {
        StoreError::Corrupt(format!(
            "the tail record is {} bytes, not a tile number and 0 to {} hashes",
            value.len(),
            TILE_NODES - 1
        ))
    };
    let (number, hashes) = value.split_first_chunk::<8>().ok_or_else(bad)?;
    if hashes.len() % HASH_BYTES != 0 || hashes.len() >= TILE_BYTES {
        return Err(bad());
    }
    Ok((u64::from_be_bytes(*number), hashes))
}

/// Nodes in completion order, written as tiles: each tile to `tiles` when it fills, and what
/// follows the last full one as the `tail` record.
#[derive(Debug, Default)]
struct TileWriter {
    /// The place of the next node.
    next: u64,
    /// The hashes of the tile the next node goes into, up to it.
    tile: Vec<u8>,
}

impl TileWriter {
    /// A writer continuing from the stored nodes, which must end right before place `first`
    /// (the `tail` record names the tile `first` goes into and holds the nodes before it there).
    fn continuing(store: &Store, first: u64) -> Result<Self, StoreError> {
        let (number, filled) = (first / TILE_NODES, first % TILE_NODES);
        let stored = store.db.get_pinned_cf(store.cf(CF_TAIL), TAIL_KEY)?;
        let (tail, hashes) = match &stored {
            Some(value) => decode_tail(value)?,
            None => (0, &[][..]),
        };
        let count = (hashes.len() / HASH_BYTES) as u64;
        if (tail, count) != (number, filled) {
            return Err(StoreError::Corrupt(format!(
                "the next node to store comes at place {first} in completion order, but the stored nodes end at place {}",
                tail * TILE_NODES + count
            )));
        }
        let mut tile = Vec::with_capacity(TILE_BYTES);
        tile.extend_from_slice(hashes);
        Ok(Self { next: first, tile })
    }

    /// Adds `hash` as node `id`, which must be the next in completion order; puts the tile in
    /// `batch` when it fills.
    fn push(
        &mut self,
        batch: &mut WriteBatch,
        tiles: &ColumnFamily,
        id: NodeId,
        hash: &Hash,
    ) -> Result<(), StoreError> {
        let place = stored_place(id)?;
        if place != self.next {
            return Err(StoreError::Corrupt(format!(
                "node level {} index {} comes at place {place} in completion order, not {}",
                id.level, id.index, self.next
            )));
        }
        self.tile.extend_from_slice(hash);
        self.next += 1;
        if self.tile.len() == TILE_BYTES {
            batch.put_cf(tiles, tile_key(place / TILE_NODES), &self.tile);
            self.tile.clear();
        }
        Ok(())
    }

    /// Puts the `tail` record: the tile the next node goes into, and its nodes so far.
    fn finish(&self, batch: &mut WriteBatch, tail: &ColumnFamily) {
        let mut value = Vec::with_capacity(8 + self.tile.len());
        value.extend_from_slice(&tile_key(self.next / TILE_NODES));
        value.extend_from_slice(&self.tile);
        batch.put_cf(tail, TAIL_KEY, value);
    }
}

/// A stored tile as `(number, hashes)`.
type Tile = Result<(u64, Box<[u8]>), StoreError>;

/// A `tiles` record as a [`Tile`].
fn decode_tile(item: Record) -> Tile {
    let (key, value) = item?;
    let number = decode_tile_key(&key)?;
    tile_hashes(number, &value)?;
    Ok((number, value))
}

/// The nodes at `places` (in completion order) of the tiles an iterator yields in ascending
/// order, as `(node, hash)`; a malformed tile is one error item.
struct TileNodes<I> {
    tiles: I,
    places: std::ops::Range<u64>,
    /// The number after the last tile read: tiles must come in ascending order.
    after: u64,
    /// The current tile's hashes, the place of its first one, and the next node to yield.
    value: Box<[u8]>,
    first: u64,
    next: Option<(u64, NodeId)>,
}

impl<I: Iterator<Item = Tile>> TileNodes<I> {
    fn new(tiles: I, places: std::ops::Range<u64>) -> Self {
        Self {
            tiles,
            places,
            after: 0,
            value: Box::default(),
            first: 0,
            next: None,
        }
    }
}

impl<I: Iterator<Item = Tile>> Iterator for TileNodes<I> {
    type Item = Result<(NodeId, Hash), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((place, id)) = self.next {
                if place >= self.places.end {
                    return None;
                }
                // Below TILE_BYTES: `place` is in the tile starting at `first`.
                let at = (place - self.first) as usize * HASH_BYTES;
                if let Some(hash) = self.value.get(at..at + HASH_BYTES) {
                    self.next = id.next_completed().map(|next| (place + 1, next));
                    let mut node = [0u8; HASH_BYTES];
                    node.copy_from_slice(hash);
                    return Some(Ok((id, node)));
                }
                self.next = None;
            }
            let (number, value) = match self.tiles.next()? {
                Ok(tile) => tile,
                Err(e) => return Some(Err(e)),
            };
            if number < self.after {
                // Only the tail can come out of order.
                return Some(Err(StoreError::Corrupt(format!(
                    "tile {number} is stored twice: whole, and as the tail record"
                ))));
            }
            let Some(first) = number.checked_mul(TILE_NODES) else {
                return Some(Err(StoreError::Corrupt(format!(
                    "tile {number} lies beyond any tree"
                ))));
            };
            let start = first.max(self.places.start);
            self.after = number + 1;
            self.value = value;
            self.first = first;
            self.next = Some((start, NodeId::from_stored_index(start)));
        }
    }
}

/// A format-3 `tree` key: the last leaf the node covers, then its level.
fn decode_node_key(bytes: &[u8]) -> Result<NodeId, StoreError> {
    let bad = || {
        StoreError::Corrupt(format!(
            "tree key {} is not a node's key",
            hex::encode(bytes)
        ))
    };
    let [last @ .., level] = bytes else {
        return Err(bad());
    };
    let last = decode_u64(last, "tree key").map_err(|_| bad())?;
    // `last + 1` is a multiple of 2^level for a node's key (2^64 when `last` is u64::MAX).
    let end = u128::from(last) + 1;
    if *level >= 64 || end % (1u128 << level) != 0 {
        return Err(bad());
    }
    let index = u64::try_from((end >> level) - 1).map_err(|_| bad())?;
    Ok(NodeId {
        level: *level,
        index,
    })
}

/// A key and value as RocksDB's iterators yield them.
type Record = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>;

/// A `tree` record as `(node, hash)`.
fn decode_node(item: Record) -> Result<(NodeId, Hash), StoreError> {
    let (k, v) = item?;
    let id = decode_node_key(&k)?;
    let hash = <[u8; 32]>::try_from(&*v).map_err(|_| {
        StoreError::Corrupt(format!(
            "node level {} index {} is not 32 bytes",
            id.level, id.index
        ))
    })?;
    Ok((id, hash))
}

/// Format 1's node key: level, then index.
fn v1_node_key(id: NodeId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = id.level;
    key[1..].copy_from_slice(&id.index.to_be_bytes());
    key
}

/// Where an earlier format kept the tree's nodes.
#[derive(Debug, Clone, Copy)]
enum Legacy {
    /// Format 1: `nodes`, keyed level first.
    Nodes,
    /// Formats 2 and 3: `tree`, one node per key in completion order.
    Tree,
}

/// Everything one commit writes, applied as one synced `WriteBatch`.
#[derive(Debug, Default)]
pub struct Commit {
    /// `(index, leaf bytes)` of new entries.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Newly complete tree nodes.
    pub nodes: Vec<(NodeId, Hash)>,
    /// `(dedup key, record)` of new events.
    pub dedup: Vec<(Vec<u8>, DedupRecord)>,
    /// `(request_id, index)` of new entries.
    pub requests: Vec<(String, u64)>,
    /// `(tree size, signed note)` of the commit's checkpoint.
    pub checkpoint: Option<(u64, String)>,
    /// `meta` values set in the same batch (key rotation).
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Commit {
    /// About the bytes of its `WriteBatch` (keys, values, and per record a tag, a column family
    /// id and two length varints): reserved up front, so a large batch is not copied each time
    /// its buffer grows.
    fn encoded_size_hint(&self) -> usize {
        const PER_RECORD: usize = 8;
        let entries: usize = self.entries.iter().map(|(_, leaf)| 8 + leaf.len()).sum();
        let dedup: usize = self.dedup.iter().map(|(key, _)| key.len() + 16).sum();
        let requests: usize = self.requests.iter().map(|(id, _)| id.len() + 9).sum();
        let checkpoint = self
            .checkpoint
            .as_ref()
            .map_or(0, |(_, note)| 8 + note.len());
        let meta: usize = self.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        // The nodes' tiles: whole ones, and up to two partly filled at the ends.
        let tiles = self.nodes.len() / TILE_NODES as usize + 2;
        let records = self.entries.len()
            + tiles
            + self.dedup.len()
            + self.requests.len()
            + self.meta.len()
            + 1;
        12 + entries
            + (self.nodes.len() + TILE_NODES as usize) * HASH_BYTES
            + tiles * 8
            + dedup
            + requests
            + checkpoint
            + meta
            + records * PER_RECORD
    }
}

/// An open data dir.
pub struct Store {
    db: DB,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the data dir at `path` for writing. Holds RocksDB's lock file, so
    /// a second writer fails with [`StoreError::InUse`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A crash mid-write leaves an incomplete, unacknowledged record at the WAL's tail: tolerate
        // exactly that. Corruption anywhere else fails the open instead of silently recovering a
        // shorter log (which would drop acknowledged batches).
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // The small column families (checkpoints, meta) rarely fill a memtable, and an unflushed
        // family keeps every WAL file alive: a 1 M-entry dir had kept 1 GB of them. Bounding the
        // WALs makes RocksDB flush those families, which bounds recovery time and the memory a
        // secondary (export) spends replaying the WAL at open.
        opts.set_max_total_wal_size(128 << 20);
        // Memory that does not grow with the log: all memtables share one budget, and index and
        // filter blocks live in the block cache instead of beside every open table file (where
        // they grew by about 5 bytes per entry: 40 MB more resident memory per 10 M entries).
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let families = column_families(&opts, path)?;
        let has = |name: &str| families.iter().any(|n| n == name);
        let (nodes_v1, tree_v3) = (has(CF_NODES_V1), has(CF_TREE_V3));
        let cfs = ALL_CFS
            .iter()
            .chain(nodes_v1.then_some(&CF_NODES_V1))
            .chain(tree_v3.then_some(&CF_TREE_V3))
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache, true)));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| classify(path, e))?;
        let mut store = Self { db };
        let format = store.meta(META_FORMAT)?;
        let upgrade = match format.as_deref() {
            // Every earlier format recorded itself before its first commit.
            None if nodes_v1 || tree_v3 => {
                return Err(StoreError::Corrupt(
                    "a node column family of an earlier format, but no storage format recorded"
                        .into(),
                ));
            }
            None => {
                store.put_meta(META_FORMAT, FORMAT_VERSION)?;
                None
            }
            Some(v) if v == FORMAT_V1 && nodes_v1 => Some(Legacy::Nodes),
            Some(v) if (v == FORMAT_V2 || v == FORMAT_V3) && tree_v3 => Some(Legacy::Tree),
            Some(_) => {
                store.check_format()?;
                None
            }
        };
        if let Some(legacy) = upgrade {
            let from = String::from_utf8_lossy(format.as_deref().unwrap_or_default()).into_owned();
            if let Err(e) = store.upgrade_to_tiles(path, legacy, &from) {
                // Still the earlier format: without the new column family the earlier release
                // opens the dir as it was.
                let _ = store.db.drop_cf(CF_TILES);
                let _ = store.db.drop_cf(CF_TAIL);
                return Err(e);
            }
        }
        // Upgraded (now or by an open that stopped before this step): the old nodes go.
        if nodes_v1 {
            store.db.drop_cf(CF_NODES_V1)?;
        }
        if tree_v3 {
            store.db.drop_cf(CF_TREE_V3)?;
        }
        Ok(store)
    }

    /// Rewrites the tree nodes of an earlier format as tiles, then records format 4, in one
    /// synced step at the end: a crash before it leaves the earlier format with its nodes intact,
    /// and the next open starts over (the tiles written so far are simply written again).
    fn upgrade_to_tiles(&self, path: &Path, legacy: Legacy, from: &str) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        tracing::info!(path = %path.display(), "upgrading storage format {from} to 4: rewriting tree nodes as tiles");
        let stopped = |e: StoreError| {
            StoreError::Corrupt(format!(
                "{e}; the upgrade stopped and the dir is still format {from}: check it with `ledger fsck` of the earlier release"
            ))
        };
        let tiles = self.cf(CF_TILES);
        let mut writer = TileWriter::default();
        let mut batch = WriteBatch::default();
        let mut put = |id: NodeId, hash: &[u8], batch: &mut WriteBatch| {
            let hash: Hash = hash.try_into().map_err(|_| {
                StoreError::Corrupt(format!(
                    "node level {} index {} is not 32 bytes",
                    id.level, id.index
                ))
            })?;
            writer.push(batch, tiles, id, &hash)
        };
        match legacy {
            Legacy::Tree => {
                let old = self.cf(CF_TREE_V3);
                for item in self.db.iterator_cf(old, IteratorMode::Start) {
                    let (id, hash) = decode_node(item).map_err(stopped)?;
                    put(id, &hash, &mut batch).map_err(stopped)?;
                    if batch.len() >= 1024 {
                        self.db.write(std::mem::take(&mut batch))?;
                    }
                }
            }
            Legacy::Nodes => {
                // Keyed level first: read in completion order, node by node, until one is
                // missing; then every stored key must have been read.
                let old = self.cf(CF_NODES_V1);
                let mut id = NodeId::covering(0, 0);
                while let Some(hash) = self.db.get_pinned_cf(old, v1_node_key(id))? {
                    put(id, &hash, &mut batch).map_err(stopped)?;
                    if batch.len() >= 1024 {
                        self.db.write(std::mem::take(&mut batch))?;
                    }
                    let Some(next) = id.next_completed() else {
                        break;
                    };
                    id = next;
                }
                let stored = self.db.iterator_cf(old, IteratorMode::Start).count() as u64;
                if stored != writer.next {
                    return Err(stopped(StoreError::Corrupt(format!(
                        "format 1 stores {stored} node keys, but only its first {} nodes in completion order",
                        writer.next
                    ))));
                }
            }
        }
        writer.finish(&mut batch, self.cf(CF_TAIL));
        batch.put_cf(self.cf(CF_META), META_FORMAT, FORMAT_VERSION);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        tracing::info!(
            nodes = writer.next,
            seconds = started.elapsed().as_secs_f64(),
            "storage format {from} upgraded to 4"
        );
        Ok(())
    }

    /// Checks the recorded storage format version is the one this build reads.
    pub fn check_format(&self) -> Result<(), StoreError> {
        match self.meta(META_FORMAT)? {
            Some(v) if v == FORMAT_VERSION => Ok(()),
            Some(v) => Err(StoreError::Corrupt(format!(
                "unknown storage format {:?}",
                String::from_utf8_lossy(&v)
            ))),
            None => Err(StoreError::Corrupt("no storage format recorded".into())),
        }
    }

    /// Opens the data dir at `primary` as a RocksDB *secondary* instance, read-only and safe while
    /// `ledger serve` writes to it: it takes no lock, writes only to `scratch` (its own log files),
    /// and sees the primary's state as of the moment it opened.
    pub fn open_secondary(primary: &Path, scratch: &Path) -> Result<Self, StoreError> {
        if !primary.join("CURRENT").is_file() {
            return Err(StoreError::Corrupt(format!(
                "{} is not a ledger data dir",
                primary.display()
            )));
        }
        let mut opts = Options::default();
        // Secondaries must keep every file open: the primary may delete files they still read.
        opts.set_max_open_files(-1);
        // Index and filter blocks stay with their table readers here (not in the small cache):
        // export creates an iterator per request id, and each would re-read and decompress the
        // index blocks the cache had evicted (a 12.5 M-entry export spent 90 % of its time so).
        let cache = Cache::new_lru_cache(SECONDARY_CACHE_BYTES);
        let families = column_families(&opts, primary)?;
        let has = |name: &str| families.iter().any(|n| n == name);
        if !has(CF_META) {
            return Err(StoreError::Corrupt(format!(
                "{} is not a ledger data dir",
                primary.display()
            )));
        }
        // A dir of an earlier format lacks some of this format's families (a secondary may open
        // a subset): enough to read its format and say what to do.
        let cfs = ALL_CFS
            .iter()
            .filter(|name| has(name))
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache, false)));
        let db = DB::open_cf_descriptors_as_secondary(&opts, primary, scratch, cfs)?;
        db.try_catch_up_with_primary()?;
        let store = Self { db };
        let format = store.meta(META_FORMAT)?;
        let earlier = [FORMAT_V1, FORMAT_V2, FORMAT_V3];
        match format {
            // Not upgraded yet, or mid-upgrade (the primary has not recorded format 4 yet).
            Some(v) if earlier.contains(&v.as_slice()) => Err(StoreError::NeedsUpgrade {
                path: primary.display().to_string(),
                format: String::from_utf8_lossy(&v).into_owned(),
            }),
            _ if ALL_CFS.iter().all(|name| has(name)) => Ok(store),
            _ => Err(StoreError::Corrupt(format!(
                "{} lacks column families of a ledger data dir",
                primary.display()
            ))),
        }
    }

    /// Writes every memtable to table files and waits for it, so the WAL holds nothing the
    /// tables lack. Called on a clean shutdown: otherwise the next open, and every export or
    /// fsck meanwhile (a secondary cannot flush), replays up to the WAL bound of 128 MiB (about
    /// 1 s for a read-only tool, each time).
    pub fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&ColumnFamily> = ALL_CFS.iter().map(|name| self.cf(name)).collect();
        let mut opts = rocksdb::FlushOptions::default();
        opts.set_wait(true);
        Ok(self.db.flush_cfs_opt(&cfs, &opts)?)
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Applies `commit` atomically and fsyncs the WAL before returning (group commit durability).
    pub fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.commit_all(&[commit])
    }

    /// Applies `commits`, in order, as one atomic `WriteBatch` and fsyncs the WAL once before
    /// returning: the sequencer's committer writes every batch that waited for the previous fsync
    /// together.
    pub fn commit_all(&self, commits: &[&Commit]) -> Result<(), StoreError> {
        let size = commits.iter().map(|c| c.encoded_size_hint()).sum();
        let mut batch = WriteBatch::with_capacity_bytes(size);
        // The commits' nodes follow each other in completion order: their tiles are written once.
        let first = commits.iter().find_map(|c| c.nodes.first());
        let mut tiles = match first {
            Some((id, _)) => Some(TileWriter::continuing(self, stored_place(*id)?)?),
            None => None,
        };
        for commit in commits {
            self.add_to_batch(&mut batch, commit, tiles.as_mut())?;
        }
        if let Some(tiles) = tiles {
            tiles.finish(&mut batch, self.cf(CF_TAIL));
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    fn add_to_batch(
        &self,
        batch: &mut WriteBatch,
        commit: &Commit,
        mut tiles: Option<&mut TileWriter>,
    ) -> Result<(), StoreError> {
        let (entries, tree, dedup, requests) = (
            self.cf(CF_ENTRIES),
            self.cf(CF_TILES),
            self.cf(CF_DEDUP),
            self.cf(CF_REQUESTS),
        );
        for (index, leaf) in &commit.entries {
            batch.put_cf(entries, index.to_be_bytes(), leaf);
        }
        for (id, hash) in &commit.nodes {
            // `Some` whenever any commit has nodes.
            if let Some(tiles) = tiles.as_deref_mut() {
                tiles.push(batch, tree, *id, hash)?;
            }
        }
        for (key, record) in &commit.dedup {
            batch.put_cf(dedup, key, record.encode());
        }
        for (request_id, index) in &commit.requests {
            let mut key = Vec::with_capacity(request_id.len() + 9);
            key.extend_from_slice(request_id.as_bytes());
            key.push(0);
            key.extend_from_slice(&index.to_be_bytes());
            batch.put_cf(requests, key, []);
        }
        if let Some((size, note)) = &commit.checkpoint {
            batch.put_cf(self.cf(CF_CHECKPOINTS), size.to_be_bytes(), note.as_bytes());
        }
        for (key, value) in &commit.meta {
            batch.put_cf(self.cf(CF_META), key, value);
        }
        Ok(())
    }

    /// The newest stored checkpoint `(tree size, note)`, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let mut iter = self
            .db
            .iterator_cf(self.cf(CF_CHECKPOINTS), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item?;
                Ok(Some((
                    decode_u64(&key, "checkpoint key")?,
                    decode_text(value.to_vec())?,
                )))
            }
        }
    }

    /// The checkpoint stored for tree size `size`.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, StoreError> {
        self.db
            .get_cf(self.cf(CF_CHECKPOINTS), size.to_be_bytes())?
            .map(decode_text)
            .transpose()
    }

    /// The leaf bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_ENTRIES), index.to_be_bytes())?)
    }

    /// Entries from `start` on, in index order, as `(index, leaf bytes)`; `reads` says how
    /// many the caller will take.
    pub fn entries_from(
        &self,
        start: u64,
        reads: Reads,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + '_ {
        let key = start.to_be_bytes();
        self.db
            .iterator_cf_opt(
                self.cf(CF_ENTRIES),
                reads.options(SCAN_READAHEAD),
                IteratorMode::From(&key, Direction::Forward),
            )
            .map(|item| {
                let (k, v) = item?;
                Ok((decode_u64(&k, "entry key")?, v.to_vec()))
            })
    }

    /// Entries from `start` on, in index order, each lent to `f` as `(index, leaf bytes)` straight
    /// from the iterator (no copy, no allocation per entry), until `f` returns `Ok(false)` or the
    /// entries end; `reads` says how many the caller will take.
    ///
    /// # Errors
    /// `f`'s error, or a read error.
    pub fn scan_entries<E: From<StoreError>>(
        &self,
        start: u64,
        reads: Reads,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        let mut iter = self
            .db
            .raw_iterator_cf_opt(self.cf(CF_ENTRIES), reads.options(SCAN_READAHEAD));
        iter.seek(start.to_be_bytes());
        while let (Some(key), Some(leaf)) = (iter.key(), iter.value()) {
            if !f(decode_u64(key, "entry key")?, leaf)? {
                return Ok(());
            }
            iter.next();
        }
        iter.status().map_err(StoreError::from)?;
        Ok(())
    }

    /// The highest entry index stored, if any.
    pub fn last_entry_index(&self) -> Result<Option<u64>, StoreError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_ENTRIES), IteratorMode::End);
        iter.next()
            .map(|item| decode_u64(&item?.0, "entry key"))
            .transpose()
    }

    /// Idempotency records for `keys`, in order (one batched lookup).
    pub fn dedup_get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<DedupRecord>>, StoreError> {
        let cf = self.cf(CF_DEDUP);
        self.db
            .batched_multi_get_cf(cf, keys.iter(), false)
            .into_iter()
            .map(|r| r?.map(|v| DedupRecord::decode(&v)).transpose())
            .collect()
    }

    /// Indexes in `[from, below)` of the entries of `request_id`, ascending, at most `limit`.
    pub fn request_indexes(
        &self,
        request_id: &str,
        from: u64,
        below: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let mut prefix = request_id.as_bytes().to_vec();
        prefix.push(0);
        let mut seek = prefix.clone();
        seek.extend_from_slice(&from.to_be_bytes());
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_REQUESTS),
            IteratorMode::From(&seek, Direction::Forward),
        );
        for item in iter {
            let (key, _) = item?;
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let index = decode_u64(rest, "request key")?;
            if index >= below || out.len() == limit {
                break;
            }
            out.push(index);
        }
        Ok(out)
    }

    /// A cursor for many request-index lookups in a row (an export's context rows): one RocksDB
    /// iterator, sought once per request, where [`Store::request_indexes`] creates one per call
    /// (creating it costs more than the seek).
    pub fn request_cursor(&self) -> RequestCursor<'_> {
        RequestCursor {
            iter: self.db.raw_iterator_cf(self.cf(CF_REQUESTS)),
            prefix: Vec::new(),
        }
    }

    /// Stores a credential record (offline administration; synced).
    pub fn put_credential(
        &self,
        kind: CredentialKind,
        name: &str,
        record: &[u8],
    ) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .put_cf_opt(self.cf(kind.cf()), name.as_bytes(), record, &opts)?;
        Ok(())
    }

    /// One credential record.
    pub fn credential(
        &self,
        kind: CredentialKind,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(kind.cf()), name.as_bytes())?)
    }

    /// All `(name, record)` credential records of a kind.
    pub fn credentials(&self, kind: CredentialKind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db
            .iterator_cf(self.cf(kind.cf()), IteratorMode::Start)
            .map(|item| {
                let (k, v) = item?;
                Ok((decode_text(k.to_vec())?, v.to_vec()))
            })
            .collect()
    }

    /// Every stored tree node in the order nodes complete (the order [`Frontier`] appends
    /// them), as `(node, hash)`. A tile whose key or value is malformed is an error item, and
    /// its nodes are missing from the sequence.
    ///
    /// [`Frontier`]: crate::core::merkle::Frontier
    pub fn nodes(&self) -> impl Iterator<Item = Result<(NodeId, Hash), StoreError>> + '_ {
        let tiles = self.db.iterator_cf_opt(
            self.cf(CF_TILES),
            Reads::Scan.options(SCAN_READAHEAD),
            IteratorMode::Start,
        );
        TileNodes::new(tiles.map(decode_tile).chain(self.tail()), 0..u64::MAX)
    }

    /// The stored nodes completed by the leaves in `leaves` (those whose last leaf is in the
    /// range), in completion order: one sequential scan.
    ///
    /// Like [`Store::nodes`], for a store no one writes to meanwhile (a secondary, as export and
    /// fsck open): the tail is read apart from the tiles.
    pub fn nodes_completed_in(
        &self,
        leaves: std::ops::Range<u64>,
        reads: Reads,
    ) -> impl Iterator<Item = Result<(NodeId, Hash), StoreError>> + '_ {
        // Leaf n's place starts the nodes it completes (none past u64: no such tree).
        let place = |leaf: u64| NodeId::covering(0, leaf).stored_index().unwrap_or(u64::MAX);
        let places = place(leaves.start)..place(leaves.end);
        // A block's nodes are about 400 KB: read ahead less than a whole-family scan does.
        let mut opts = reads.options(SCAN_READAHEAD / 4);
        let end_tile = places.end.div_ceil(TILE_NODES);
        opts.set_iterate_upper_bound(tile_key(end_tile).to_vec());
        let start = tile_key(places.start / TILE_NODES);
        let tiles = self.db.iterator_cf_opt(
            self.cf(CF_TILES),
            opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        TileNodes::new(tiles.map(decode_tile).chain(self.tail()), places)
    }

    /// The tail record as a tile, unless it holds no node yet.
    fn tail(&self) -> Option<Tile> {
        let value = match self.db.get_pinned_cf(self.cf(CF_TAIL), TAIL_KEY) {
            Ok(value) => value?,
            Err(e) => return Some(Err(e.into())),
        };
        match decode_tail(&value) {
            Ok((_, [])) => None,
            Ok((number, hashes)) => Some(Ok((number, hashes.into()))),
            Err(e) => Some(Err(e)),
        }
    }

    /// Every stored checkpoint in tree-size order, as `(size, note bytes)` (not decoded, so a
    /// damaged note is reported by its size rather than failing the scan).
    pub fn checkpoints(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + '_ {
        self.db
            .iterator_cf(self.cf(CF_CHECKPOINTS), IteratorMode::Start)
            .map(|item| {
                let (k, v) = item?;
                Ok((decode_u64(&k, "checkpoint key")?, v.to_vec()))
            })
    }

    /// The idempotency record of one key.
    pub fn dedup_get(&self, key: &[u8]) -> Result<Option<DedupRecord>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(CF_DEDUP), key)?
            .map(|v| DedupRecord::decode(&v))
            .transpose()
    }

    /// Whether the request index lists entry `index` under `request_id`.
    pub fn request_has(&self, request_id: &str, index: u64) -> Result<bool, StoreError> {
        let mut key = Vec::with_capacity(request_id.len() + 9);
        key.extend_from_slice(request_id.as_bytes());
        key.push(0);
        key.extend_from_slice(&index.to_be_bytes());
        Ok(self.db.get_pinned_cf(self.cf(CF_REQUESTS), key)?.is_some())
    }

    /// Number of idempotency records and of request-index keys (full scans of their keys).
    pub fn index_record_counts(&self) -> Result<(u64, u64), StoreError> {
        let count = |cf: &str| -> Result<u64, StoreError> {
            let mut iter = self.db.raw_iterator_cf(self.cf(cf));
            iter.seek_to_first();
            let mut n = 0u64;
            while iter.valid() {
                n += 1;
                iter.next();
            }
            iter.status()?;
            Ok(n)
        };
        Ok((count(CF_DEDUP)?, count(CF_REQUESTS)?))
    }

    /// Writes a consistent copy of this open data dir into `out`, which must not exist, with
    /// RocksDB's Checkpoint API: memtables are flushed, table files are hard-linked when `out` is
    /// on the same file system (copied otherwise), the MANIFEST and the live WAL are copied up to
    /// what had been written, and everything is fsync'd. Every commit is one `WriteBatch`, so the
    /// copy holds exactly the commits that finished before some instant during the call: a
    /// prefix of the log, with its checkpoint. The copy opens as a data dir of its own.
    ///
    /// Only the process that holds the data dir open can do this (a secondary instance cannot:
    /// it would hard-link the primary's live WAL, which keeps growing, and race its compactions).
    pub fn backup_to(&self, out: &Path) -> Result<(), StoreError> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(out)?;
        Ok(())
    }

    /// Test support: overwrites one raw key of a column family, bypassing every invariant (as a
    /// tampering operator with disk access would). Not for use outside tests.
    #[doc(hidden)]
    pub fn raw_put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let handle = self.raw_cf(cf)?;
        self.db.put_cf(handle, key, value)?;
        Ok(())
    }

    /// Test support: deletes one raw key of a column family (see [`Store::raw_put`]).
    #[doc(hidden)]
    pub fn raw_delete(&self, cf: &str, key: &[u8]) -> Result<(), StoreError> {
        let handle = self.raw_cf(cf)?;
        self.db.delete_cf(handle, key)?;
        Ok(())
    }

    /// Test support: reads one raw key of a column family (see [`Store::raw_put`]).
    #[doc(hidden)]
    pub fn raw_get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let handle = self.raw_cf(cf)?;
        Ok(self.db.get_cf(handle, key)?)
    }

    fn raw_cf(&self, cf: &str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(cf)
            .ok_or_else(|| StoreError::Corrupt(format!("no column family {cf:?}")))
    }

    /// A `meta` value.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key)?)
    }

    /// Sets a `meta` value (synced).
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.put_cf_opt(self.cf(CF_META), key, value, &opts)?;
        Ok(())
    }
}

impl HashReader for Store {
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
        let read_err = |source: Box<dyn std::error::Error + Send + Sync>| TreeError::Read {
            level: id.level,
            index: id.index,
            source,
        };
        let not_stored = || read_err("node not stored".into());
        let place = id.stored_index().ok_or_else(not_stored)?;
        let (number, at) = (
            place / TILE_NODES,
            (place % TILE_NODES) as usize * HASH_BYTES,
        );
        let whole = || -> Result<Option<Hash>, TreeError> {
            let Some(value) = self
                .db
                .get_pinned_cf(self.cf(CF_TILES), tile_key(number))
                .map_err(|e| read_err(Box::new(e)))?
            else {
                return Ok(None);
            };
            tile_hashes(number, &value).map_err(|e| read_err(Box::new(e)))?;
            let hash = value.get(at..at + HASH_BYTES).ok_or_else(not_stored)?;
            Ok(Some(hash.try_into().map_err(|_| not_stored())?))
        };
        if let Some(hash) = whole()? {
            return Ok(hash);
        }
        // In the tail, or (a commit completed the tile since) whole after all.
        let tail = self
            .db
            .get_pinned_cf(self.cf(CF_TAIL), TAIL_KEY)
            .map_err(|e| read_err(Box::new(e)))?;
        if let Some(value) = tail {
            let (tail, hashes) = decode_tail(&value).map_err(|e| read_err(Box::new(e)))?;
            if let Some(hash) = hashes.get(at..at + HASH_BYTES).filter(|_| tail == number) {
                return hash.try_into().map_err(|_| not_stored());
            }
        }
        whole()?.ok_or_else(not_stored)
    }
}

/// All memtables together (RocksDB's write buffer manager flushes the largest beyond it).
const MEMTABLE_BUDGET: usize = 256 << 20;

/// The block cache shared by all column families, index and filter blocks included.
const BLOCK_CACHE_BYTES: usize = 128 << 20;

/// Target size of the base level of `dedup` and `requests` ([`cf_options`]).
const RANDOM_KEY_LEVEL_BASE: u64 = 32 << 20;

/// Level-0 files of `dedup` and `requests` that start a compaction ([`cf_options`]).
const RANDOM_KEY_L0_FILES: i32 = 8;

/// A secondary's (export's) block cache: it reads each block about once, in order.
const SECONDARY_CACHE_BYTES: usize = 32 << 20;

/// The column families of the RocksDB at `path` (none if there is no database there yet).
fn column_families(opts: &Options, path: &Path) -> Result<Vec<String>, StoreError> {
    if !path.join("CURRENT").is_file() {
        return Ok(Vec::new());
    }
    DB::list_cf(opts, path).map_err(|e| classify(path, e))
}

/// See [`Store::request_cursor`].
pub struct RequestCursor<'a> {
    iter: rocksdb::DBRawIteratorWithThreadMode<'a, DB>,
    prefix: Vec<u8>,
}

impl RequestCursor<'_> {
    /// Calls `f` with each index below `below` of `request_id`'s entries, ascending (the view is
    /// the store as it was when the cursor was made).
    pub fn for_each<E: From<StoreError>>(
        &mut self,
        request_id: &str,
        below: u64,
        mut f: impl FnMut(u64) -> Result<(), E>,
    ) -> Result<(), E> {
        self.prefix.clear();
        self.prefix.extend_from_slice(request_id.as_bytes());
        self.prefix.push(0);
        self.iter.seek(&self.prefix);
        while self.iter.valid() {
            let Some(rest) = self
                .iter
                .key()
                .and_then(|key| key.strip_prefix(self.prefix.as_slice()))
            else {
                break;
            };
            let index = decode_u64(rest, "request key")?;
            if index >= below {
                break;
            }
            f(index)?;
            self.iter.next();
        }
        self.iter.status().map_err(StoreError::from)?;
        Ok(())
    }
}

/// How many rows a range read will take, which decides how RocksDB reads for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// A long forward scan (export of a period, fsck): RocksDB reads the table files ahead in
    /// large pieces into its own buffer, where it would otherwise make one `pread` per 4 KiB
    /// block (178,000 of them in a 1 M-row export), and the blocks, each read once, do not
    /// displace what the block cache holds.
    Scan,
    /// A few rows (a context row, a boundary): through the block cache, no readahead (a scan's
    /// readahead would read its whole first piece for each one).
    Few,
}

impl Reads {
    fn options(self, readahead: usize) -> rocksdb::ReadOptions {
        let mut opts = rocksdb::ReadOptions::default();
        if self == Self::Scan {
            opts.set_readahead_size(readahead);
            opts.fill_cache(false);
        }
        opts
    }
}

/// Column family options; `index_in_cache`: see [`table_options`].
fn cf_options(name: &str, cache: &Cache, index_in_cache: bool) -> Options {
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table_options(name, cache, index_in_cache));
    if name == CF_ENTRIES {
        // Leaves are JSON: LZ4 is cheap and roughly halves them on disk.
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    }
    if name == CF_DEDUP {
        // Every appended event looks up its idempotency key, and nearly every lookup misses (a new
        // event id): a bloom filter over the memtable's keys answers a miss without searching the
        // skiplist, as the table filters do for files.
        opts.set_memtable_prefix_bloom_ratio(0.05);
        opts.set_memtable_whole_key_filtering(true);
    }
    if name == CF_DEDUP || name == CF_REQUESTS {
        // Random keys (event ids, request ids), never overwritten, in small files: the 128 MiB WAL
        // bound flushes these families every ~150,000 events (files of 1.5-2 MB), long before
        // their memtables fill. Leveled compaction merges level 0 into the whole base level
        // (random keys overlap all of it): with RocksDB's defaults, 4 files (6-8 MB) into a base
        // of up to 256 MiB. A base level near what level 0 gathers (8 files, 12-16 MB, into 32
        // MiB) keeps each merge's rewrite near its input (`docs/performance.md`, "Session 14",
        // has the load runs). Lookups check up to 8 level-0 files, each through its bloom filter.
        opts.set_max_bytes_for_level_base(RANDOM_KEY_LEVEL_BASE);
        opts.set_level_zero_file_num_compaction_trigger(RANDOM_KEY_L0_FILES);
    }
    // `dedup` and `requests` stay with leveled compaction. Universal compaction cost them less in
    // 60 s load runs (`requests` 5-6 s of compaction CPU against 12-13 s, sessions 10 and 11) but
    // more over 10 minutes, as their sorted runs grew with the ledger and were merged whole: 292 s
    // for 70.9 M events with both universal, 277 s for 78.9 M with `requests` alone, 155 s for
    // 80.9 M with neither (`docs/performance.md`, "Session 11"). A ledger runs for years.
    opts
}

/// Table options; `index_in_cache`: index and filter blocks live in `cache` (a long-running
/// server: memory bounded) rather than beside each open table (a short export: no re-reads).
fn table_options(name: &str, cache: &Cache, index_in_cache: bool) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if index_in_cache {
        table.set_cache_index_and_filter_blocks(true);
        // Not pinned for level-0 files (RocksDB's option, set here until session 10): a file is
        // pinned by the level it was opened at, and `entries` and `tiles` files are flushed to
        // level 0 and then only moved down, so every one of them stayed pinned and the server's
        // memory grew with the ledger, about 5 bytes per entry (`docs/performance.md`, "Session
        // 10").
        // Evictable like the rest, at high priority, and 4 KiB at a time (partitions, below).
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
    }
    if matches!(name, CF_DEDUP | CF_TILES | CF_ENTRIES) {
        // Point lookups. The index (and `dedup`'s filter, below) in partitions of about 4 KiB,
        // each cached on its own, under a small top-level index kept with the table. A whole-file
        // filter is one block of up to a few MB (10 bits per key, a million keys and more per
        // file), and the block cache's shards are 2 MB (128 MB in 64): such a block was read,
        // checksummed and evicted again on every lookup. With 16-byte `dedup` records that was a
        // third of the sequencer's time (`docs/performance.md`, "Session 10").
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
    }
    if name == CF_DEDUP {
        // Its lookups mostly miss (new event ids): a bloom filter answers a miss from memory.
        // `entries` and `tiles` have none. Their lookups always hit: an entry or node is only read
        // once it is stored, and their keys only grow, so files never overlap and a key's level
        // holds at most one file whose key range covers it, which RocksDB finds from the file's
        // bounds alone. A filter there never answered "absent"; building one for every flushed
        // file cost 1 % of the server's instructions per event, and kept 1.25 bytes per key on
        // disk and in the block cache (`docs/performance.md`, "Session 15").
        table.set_bloom_filter(10.0, false);
        table.set_partition_filters(true);
    }
    if name == CF_ENTRIES {
        // Leaves are read mostly in long runs (export, fsck) and written in flushes that compress
        // each block with LZ4, whose per-block set-up (a 16 KiB state cleared) cost more than
        // compressing a 4 KiB block. 16 KiB blocks hold about 24 leaves.
        table.set_block_size(16 * 1024);
    }
    table
}

fn classify(path: &Path, e: rocksdb::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("lock")
        && (text.contains("LOCK") || text.contains("Resource temporarily unavailable"))
    {
        StoreError::InUse(path.display().to_string())
    } else {
        StoreError::Rocks(e)
    }
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 8 bytes")))
}

fn decode_text(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("stored text is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hash::{Blake3, TreeHasher};
    use crate::core::merkle::Frontier;

    /// Nodes committed in runs of every size (within a tile, filling one, across several; one
    /// commit or two in a batch; across a reopen) read back one by one, in one scan, and by leaf
    /// range, as the tree computed them.
    #[test]
    fn tiles_hold_every_node_across_commit_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let mut frontier = Frontier::<Blake3>::empty();
        let mut all = Vec::new();
        let mut leaves = 0u64;
        for (n, run) in [1u64, 3, 64, 1, 200, 7, 130, 5].into_iter().enumerate() {
            let mut nodes = Vec::new();
            for _ in 0..run {
                frontier.append(Blake3::leaf(&leaves.to_be_bytes()), &mut nodes);
                leaves += 1;
            }
            let (a, b) = nodes.split_at(nodes.len() / 2);
            let first = Commit {
                nodes: a.to_vec(),
                ..Commit::default()
            };
            let second = Commit {
                nodes: b.to_vec(),
                ..Commit::default()
            };
            if n % 2 == 0 {
                store.commit_all(&[&first, &second]).unwrap();
            } else {
                store.commit(&first).unwrap();
                store.commit(&second).unwrap();
            }
            all.extend(nodes);
            if n == 4 {
                drop(store);
                store = Store::open(tmp.path()).unwrap();
            }
        }
        assert_eq!(
            all.len() as u64,
            2 * leaves - u64::from(leaves.count_ones())
        );
        for (id, hash) in &all {
            assert_eq!(store.read_hash(*id).unwrap(), *hash, "{id:?}");
        }
        let scanned: Vec<_> = store.nodes().collect::<Result<_, _>>().unwrap();
        assert_eq!(scanned, all);
        for range in [
            0..1,
            0..leaves,
            5..70,
            63..64,
            64..65,
            100..leaves,
            leaves..leaves,
        ] {
            let expected: Vec<_> = all
                .iter()
                .filter(|(id, _)| range.contains(&id.last_leaf().unwrap()))
                .copied()
                .collect();
            let got: Vec<_> = store
                .nodes_completed_in(range.clone(), Reads::Few)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, expected, "{range:?}");
        }
        assert!(store.read_hash(NodeId::covering(0, leaves)).is_err());

        // A run that does not continue from the stored nodes is refused, and nothing is written.
        let mut next = Vec::new();
        frontier.append(Blake3::leaf(b"skipped"), &mut next);
        frontier.append(Blake3::leaf(b"next"), &mut next);
        for skipping in [&next[1..], &all[..1]] {
            let commit = Commit {
                nodes: skipping.to_vec(),
                ..Commit::default()
            };
            let err = store.commit(&commit).unwrap_err();
            assert!(err.is_corruption(), "{err}");
        }
        let scanned: Vec<_> = store.nodes().collect::<Result<_, _>>().unwrap();
        assert_eq!(scanned, all);
    }

    /// The options RocksDB recorded for column family `cf` in `dir`'s newest OPTIONS file, one
    /// `name=value` per line.
    fn recorded_options(dir: &Path, cf: &str) -> Vec<String> {
        recorded_section(dir, "CFOptions", cf)
    }

    /// The lines of section `[KIND "cf"]` of the newest `OPTIONS` file RocksDB wrote in `dir`.
    fn recorded_section(dir: &Path, kind: &str, cf: &str) -> Vec<String> {
        let newest = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|name| Some((name.strip_prefix("OPTIONS-")?.parse::<u64>().ok()?, name)))
            .max()
            .expect("RocksDB writes an OPTIONS file")
            .1;
        let text = std::fs::read_to_string(dir.join(newest)).unwrap();
        let header = format!("[{kind} \"{cf}\"]");
        text.lines()
            .skip_while(|line| line.trim() != header)
            .skip(1)
            .take_while(|line| !line.trim_start().starts_with('['))
            .map(|line| line.trim().to_owned())
            .collect()
    }

    /// The families with random keys get a base level sized to what their level 0 gathers, and
    /// only they: `entries` and `tiles` are appended in key order and only move down.
    #[test]
    fn random_key_families_compact_into_a_small_base_level() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        let base = format!("max_bytes_for_level_base={RANDOM_KEY_LEVEL_BASE}");
        let trigger = format!("level0_file_num_compaction_trigger={RANDOM_KEY_L0_FILES}");
        for cf in [CF_DEDUP, CF_REQUESTS] {
            let options = recorded_options(tmp.path(), cf);
            assert!(options.contains(&base), "{cf}: {options:?}");
            assert!(options.contains(&trigger), "{cf}: {options:?}");
        }
        for cf in [CF_ENTRIES, CF_TILES] {
            let options = recorded_options(tmp.path(), cf);
            assert!(!options.is_empty(), "{cf} has recorded options");
            assert!(!options.contains(&base), "{cf}: {options:?}");
        }
    }

    /// Only `dedup`, whose lookups mostly miss, has a bloom filter; `entries` and `tiles` (read
    /// only for stored keys) keep the partitioned index without one.
    #[test]
    fn only_dedup_has_a_bloom_filter() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        let table = |cf| recorded_section(tmp.path(), "TableOptions/BlockBasedTable", cf);
        let has = |lines: &[String], line: &str| lines.iter().any(|l| l == line);
        let dedup = table(CF_DEDUP);
        assert!(has(&dedup, "filter_policy=bloomfilter"), "{dedup:?}");
        assert!(has(&dedup, "partition_filters=true"), "{dedup:?}");
        for cf in [CF_ENTRIES, CF_TILES] {
            let options = table(cf);
            assert!(has(&options, "filter_policy=nullptr"), "{cf}: {options:?}");
            assert!(
                has(&options, "index_type=kTwoLevelIndexSearch"),
                "{cf}: {options:?}"
            );
        }
    }
}
