//! `ledger fsck`: the full `O(n)` audit of a data dir, the counterpart of the `O(log n)` start-up
//! check (docs/architecture.md, "Start-up check and fsck").
//!
//! Owns: the checks and their report. Must not touch: writes of any kind. The data dir is opened as
//! a RocksDB secondary ([`Store::open_secondary`]): no lock, nothing written into it, safe beside a
//! running server (which keeps writing; fsck sees the state as of its start) or on a copy.
//!
//! One streaming pass in index order, with memory bounded by the tree height:
//!
//! - each entry is a canonical leaf whose `index` field is its key, whose `prev_leaf_hash` is the
//!   leaf hash of the entry before (32 zero bytes for entry 0), and whose `ingested_at` does not
//!   decrease;
//! - its bytes hash to the stored level-0 node, and each stored interior node is the hash of its two
//!   stored children (read with one forward scan of the tiles, so the reads are sequential);
//!   no node is missing and none is stored outside the tree;
//! - its idempotency record points back at it, with the size of its commit, and the request index
//!   lists it;
//! - every stored checkpoint verifies under the log's key, is stored under its own size, and its root
//!   equals the root recomputed from the stored tree at that size; every commit (a run of entries that
//!   their idempotency records place in one commit) has its checkpoint, the empty tree included, and
//!   the newest checkpoint covers exactly the stored entries.
//!
//! Problems are reported in scan order, so the first one is the earliest damage; the list is capped
//! at [`MAX_PROBLEMS`], the count is not. A missing entry ends the pass there: the tree and the
//! commits beyond a hole cannot be rebuilt in order.

use std::io::IsTerminal as _;
use std::iter::Peekable;
use std::path::Path;

use serde::Serialize;

use crate::core::hash::{Blake3, Hash, TreeHasher, to_hex};
use crate::core::leaf::{GENESIS_PREV, Leaf};
use crate::core::merkle::{Frontier, NodeId};
use crate::core::note::{NoteError, VerifierKey, open_checkpoint};
use crate::store::{META_LOG_KEY, Reads, Store, StoreError, dedup_key};

/// Most problems listed in a report (all are counted).
pub const MAX_PROBLEMS: usize = 100;

/// Why fsck could not run at all (exit code 2). Damage it finds is a [`Problem`] (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// The data dir could not be opened or read (I/O, not a data dir).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scratch directory of the secondary instance could not be made.
    #[error("creating a scratch dir: {0}")]
    Scratch(std::io::Error),
}

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "at", rename_all = "snake_case")]
pub enum Location {
    /// The `meta` column family (format, log key).
    Meta,
    /// Entry `index` (its leaf bytes, chain link, leaf hash or index records).
    Entry {
        /// The entry index.
        index: u64,
    },
    /// Tree node `(level, index)` covering entries `[index << level, (index + 1) << level)`.
    Node {
        /// Height above the leaves.
        level: u8,
        /// Position in its level.
        index: u64,
    },
    /// The checkpoint of tree size `size`.
    Checkpoint {
        /// The tree size it is stored under (or should be).
        size: u64,
    },
    /// A whole column family (`dedup`, `requests`, or any whose keys do not decode).
    ColumnFamily {
        /// Its name.
        name: &'static str,
    },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Meta => write!(f, "meta"),
            Self::Entry { index } => write!(f, "entry {index}"),
            Self::Node { level, index } => write!(f, "node level {level} index {index}"),
            Self::Checkpoint { size } => write!(f, "checkpoint at size {size}"),
            Self::ColumnFamily { name } => write!(f, "column family {name}"),
        }
    }
}

/// One piece of damage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where.
    #[serde(flatten)]
    pub location: Location,
    /// What is wrong, in words.
    pub message: String,
}

/// What was checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Entries read (contiguous from 0).
    pub entries: u64,
    /// Tree nodes compared with their recomputed hash.
    pub nodes: u64,
    /// Checkpoints whose signature and root were checked.
    pub checkpoints: u64,
    /// Idempotency records and request-index keys checked against their entries.
    pub index_records: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True only if no problem was found.
    pub ok: bool,
    /// The log's verifier key the checkpoints were checked with.
    pub log_key: Option<String>,
    /// Size of the tree the stored entries form (the newest checkpoint's, when all is well).
    pub tree_size: u64,
    /// What was checked.
    pub checked: Counts,
    /// How many problems were found.
    pub problems_total: u64,
    /// The first [`MAX_PROBLEMS`] problems, in scan order (the first is the earliest damage).
    pub problems: Vec<Problem>,
}

impl Report {
    /// The first problem, if any.
    #[must_use]
    pub fn first(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

/// Checks the data dir at `path`, opened as a RocksDB secondary (never written to). With
/// `key`, the log key recorded in the data dir must be that key (trust the key you were given, not
/// the one stored beside the data); without, the recorded key is used.
pub fn fsck_dir(
    path: &Path,
    key: Option<&VerifierKey>,
    progress: bool,
) -> Result<Report, FsckError> {
    let scratch = tempfile::tempdir().map_err(FsckError::Scratch)?;
    let store = Store::open_secondary(path, scratch.path())?;
    fsck(&store, key, progress)
}

/// Checks an open store; see the module documentation for the checks.
pub fn fsck(store: &Store, key: Option<&VerifierKey>, progress: bool) -> Result<Report, FsckError> {
    let mut scan = Scan {
        store,
        problems: Vec::new(),
        problems_total: 0,
        counts: Counts::default(),
        nodes: (Box::new(store.nodes()) as Box<dyn Iterator<Item = _>>).peekable(),
        io_error: None,
        key_recorded: false,
        history: None,
    };
    // Checkpoints from before a key rotation verify under the key of their epoch, but only if
    // the history's chain of transition statements holds: it is data in the same, untrusted dir.
    match crate::keys::history(store) {
        Ok(h) => match h.check_chain() {
            Ok(()) => scan.history = Some(h),
            Err(e) => scan.problem(Location::Meta, format!("the key history: {e}")),
        },
        Err(crate::keys::KeyError::Refused(e)) if e.contains("no log key") => {}
        Err(e) => scan.problem(Location::Meta, format!("the key history: {e}")),
    }
    let verifier = scan.meta(key)?;
    let size = scan.walk(verifier.as_ref(), progress)?;
    Ok(Report {
        ok: scan.problems_total == 0,
        log_key: verifier.map(|v| v.encode()),
        tree_size: size,
        checked: scan.counts,
        problems_total: scan.problems_total,
        problems: scan.problems,
    })
}

type NodeIter<'a> = Peekable<Box<dyn Iterator<Item = Result<(NodeId, Hash), StoreError>> + 'a>>;
type CheckpointIter<'a> =
    Peekable<Box<dyn Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + 'a>>;

struct Scan<'a> {
    store: &'a Store,
    problems: Vec<Problem>,
    problems_total: u64,
    counts: Counts,
    /// The stored nodes, read forward: they are stored in the order the walk completes them, so
    /// the whole tree is read sequentially, once.
    nodes: NodeIter<'a>,
    /// A read error met inside [`Frontier::append_settled`]'s callback, raised after it returns.
    io_error: Option<StoreError>,
    /// Whether `meta` records a log key (every served data dir does).
    key_recorded: bool,
    /// The log key's history: checkpoints from before a rotation verify under the old key.
    history: Option<crate::keys::KeyHistory>,
}

/// Where the commit containing the current entry ends, from the idempotency records.
#[derive(Debug, Clone, Copy)]
enum Commit {
    /// Unknown (no valid record yet for the commit in progress).
    Unknown,
    /// The commit in progress ends at this tree size.
    EndsAt(u64),
}

impl<'a> Scan<'a> {
    fn problem(&mut self, location: Location, message: impl Into<String>) {
        self.problems_total += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem {
                location,
                message: message.into(),
            });
        }
    }

    /// A store error: damage (reported at `location`) or I/O (fsck fails).
    fn damage(&mut self, location: Location, e: StoreError) -> Result<(), FsckError> {
        if e.is_corruption() {
            self.problem(location, e.to_string());
            Ok(())
        } else {
            Err(e.into())
        }
    }

    /// Format and log key. Returns the key to check checkpoints with.
    fn meta(&mut self, pinned: Option<&VerifierKey>) -> Result<Option<VerifierKey>, FsckError> {
        if let Err(e) = self.store.check_format() {
            self.damage(Location::Meta, e)?;
        }
        let recorded = self.store.meta(META_LOG_KEY)?;
        self.key_recorded = recorded.is_some();
        let stored = match recorded {
            None => None,
            Some(bytes) => match std::str::from_utf8(&bytes)
                .map_err(|_| NoteError::MalformedVerifierKey("not UTF-8"))
                .and_then(VerifierKey::parse)
            {
                Ok(key) => Some(key),
                Err(e) => {
                    self.problem(Location::Meta, format!("the recorded log key: {e}"));
                    None
                }
            },
        };
        match (pinned, stored) {
            (Some(pinned), Some(stored)) if pinned != &stored => {
                self.problem(
                    Location::Meta,
                    format!(
                        "the data dir records the log key {}, not the given key {}",
                        stored.encode(),
                        pinned.encode()
                    ),
                );
                Ok(Some(pinned.clone()))
            }
            (Some(pinned), _) => Ok(Some(pinned.clone())),
            (None, stored) => Ok(stored),
        }
    }

    /// The stored hash of `id`, reading the nodes forward; nodes must be asked for in the order
    /// they complete. Stored nodes skipped on the way are reported as strays.
    fn stored_node(&mut self, id: NodeId) -> Result<Option<Hash>, StoreError> {
        // Completion order: by last leaf covered, then level (the store's key order).
        let order = |n: &NodeId| (((u128::from(n.index) + 1) << n.level) - 1, n.level);
        let wanted = order(&id);
        loop {
            // A key that names no node is reported and skipped: it hides no node behind it.
            if let Some(Err(StoreError::Corrupt(_))) = self.nodes.peek() {
                if let Some(Err(e)) = self.nodes.next() {
                    self.problem(Location::ColumnFamily { name: "tiles" }, e.to_string());
                }
                continue;
            }
            let before = |item: &Result<(NodeId, Hash), StoreError>| matches!(item, Ok((stored, _)) if order(stored) < wanted);
            if let Some(Ok((stray, _))) = self.nodes.next_if(before) {
                let at = Location::Node {
                    level: stray.level,
                    index: stray.index,
                };
                self.problem(at, "stored but not a node of the tree");
                continue;
            }
            let found = |item: &Result<(NodeId, Hash), StoreError>| {
                item.is_err() || matches!(item, Ok((stored, _)) if *stored == id)
            };
            return match self.nodes.next_if(found) {
                Some(item) => item.map(|(_, hash)| Some(hash)),
                None => Ok(None),
            };
        }
    }

    /// The hash to build on for node `id`, whose hash recomputed from the kept children (or, at
    /// level 0, from the entry's bytes) is `computed`: the stored one, after comparing them.
    fn settle(&mut self, id: NodeId, computed: Hash) -> Hash {
        let stored = match self.stored_node(id) {
            Ok(stored) => stored,
            Err(e) => {
                if e.is_corruption() {
                    self.problem(Location::ColumnFamily { name: "tiles" }, e.to_string());
                } else {
                    self.io_error.get_or_insert(e);
                }
                return computed;
            }
        };
        let first = id.index << id.level;
        let last = ((id.index + 1) << id.level) - 1;
        match stored {
            None if id.level == 0 => {
                self.problem(
                    Location::Entry { index: id.index },
                    format!("its leaf hash (node level 0 index {}) is missing", id.index),
                );
                computed
            }
            None => {
                self.problem(
                    Location::Node {
                        level: id.level,
                        index: id.index,
                    },
                    format!("missing (it covers entries {first}..={last})"),
                );
                computed
            }
            Some(stored) => {
                self.counts.nodes += 1;
                if stored != computed {
                    if id.level == 0 {
                        self.problem(
                            Location::Entry { index: id.index },
                            format!(
                                "its bytes hash to {} but its stored leaf hash (node level 0 index {}) is {}: the entry or its leaf hash was changed",
                                to_hex(&computed),
                                id.index,
                                to_hex(&stored)
                            ),
                        );
                    } else {
                        self.problem(
                            Location::Node {
                                level: id.level,
                                index: id.index,
                            },
                            format!(
                                "stored hash {} is not the hash of its stored children, {} (it covers entries {first}..={last})",
                                to_hex(&stored),
                                to_hex(&computed)
                            ),
                        );
                    }
                }
                stored
            }
        }
    }

    /// Checks every checkpoint stored under `size` (at most one), the tree being `frontier`.
    /// `commit_end` says whether a commit ends here, so a checkpoint must exist.
    fn checkpoint_at(
        &mut self,
        checkpoints: &mut CheckpointIter<'a>,
        size: u64,
        commit_end: Option<bool>,
        frontier: &Frontier<Blake3>,
        verifier: Option<&VerifierKey>,
    ) -> Result<(), FsckError> {
        let mut found = false;
        let due = |item: &Result<(u64, Vec<u8>), StoreError>| {
            item.is_err() || matches!(item, Ok((s, _)) if *s <= size)
        };
        while let Some(item) = checkpoints.next_if(due) {
            match item {
                Ok((s, note)) if s == size => {
                    found = true;
                    self.check_note(size, &note, frontier, verifier);
                }
                // Unreachable with sorted keys (every size is visited in order); consumed so
                // that it cannot hold up the walk.
                Ok((s, _)) => {
                    self.problem(Location::Checkpoint { size: s }, "stored out of key order");
                }
                // A key that does not decode (skipped), or a read failure (the iterator ends).
                Err(e) => self.damage(
                    Location::ColumnFamily {
                        name: "checkpoints",
                    },
                    e,
                )?,
            }
        }
        match (commit_end, found) {
            (Some(true), false) if size == 0 => self.problem(
                Location::Checkpoint { size },
                "missing: every log starts with a signed checkpoint of the empty tree",
            ),
            (Some(true), false) => self.problem(
                Location::Checkpoint { size },
                format!(
                    "missing: the idempotency records say a commit ended at tree size {size}, and each commit stores its checkpoint"
                ),
            ),
            (Some(false), true) => self.problem(
                Location::Checkpoint { size },
                "stored at a size where, by the idempotency records, no commit ended",
            ),
            _ => {}
        }
        Ok(())
    }

    fn check_note(
        &mut self,
        size: u64,
        note: &[u8],
        frontier: &Frontier<Blake3>,
        verifier: Option<&VerifierKey>,
    ) {
        let at = Location::Checkpoint { size };
        let Ok(note) = std::str::from_utf8(note) else {
            self.problem(at, "the stored note is not UTF-8");
            return;
        };
        let Some(verifier) = verifier else {
            // Reported once under meta; without a key no signature can be checked.
            return;
        };
        self.counts.checkpoints += 1;
        // After a key rotation, a checkpoint verifies under the key of its size's epoch.
        let opened = match open_checkpoint(note, verifier) {
            Err(e) => self
                .history
                .as_ref()
                .map(|h| h.keys_for_size(size))
                .unwrap_or_default()
                .iter()
                .find_map(|k| open_checkpoint(note, k).ok())
                .ok_or(e),
            ok => ok,
        };
        match opened {
            Err(e) => self.problem(at, format!("does not verify: {e}")),
            Ok(cp) if cp.size != size => self.problem(
                at,
                format!(
                    "stored under size {size} but signed for size {}: checkpoints were moved or swapped",
                    cp.size
                ),
            ),
            Ok(cp) if cp.root != frontier.root() => self.problem(
                at,
                format!(
                    "its root {} differs from the root recomputed from the stored tree at size {size}, {}",
                    to_hex(&cp.root),
                    to_hex(&frontier.root())
                ),
            ),
            Ok(_) => {}
        }
    }

    /// Checks entry `index`'s own fields and chain link; returns the parsed leaf if it parses.
    fn check_fields<'b>(
        &mut self,
        index: u64,
        bytes: &'b [u8],
        prev_hash: &Hash,
        prev_micros: &mut i64,
    ) -> Option<Leaf<'b>> {
        let at = Location::Entry { index };
        let leaf = match Leaf::parse(bytes) {
            Ok(leaf) => leaf,
            Err(e) => {
                self.problem(at, format!("not a contract leaf: {e}"));
                return None;
            }
        };
        if leaf.index != index {
            self.problem(
                at.clone(),
                format!(
                    "its index field says {}: entries were moved, swapped or edited",
                    leaf.index
                ),
            );
        }
        if leaf.prev_leaf_hash != *prev_hash {
            let before = index.checked_sub(1).map_or_else(
                || "32 zero bytes (entry 0)".to_owned(),
                |i| format!("the leaf hash of entry {i}, {}", to_hex(prev_hash)),
            );
            self.problem(
                at.clone(),
                format!(
                    "its prev_leaf_hash {} is not {before}: the hash chain is broken",
                    to_hex(&leaf.prev_leaf_hash)
                ),
            );
        }
        let micros = leaf.ingested_micros;
        if micros < *prev_micros {
            self.problem(
                at.clone(),
                format!(
                    "its ingested_at {} is earlier than the entry before's",
                    leaf.ingested_at
                ),
            );
        }
        *prev_micros = micros;
        Some(leaf)
    }

    /// Checks entry `index`'s idempotency record and request-index key; returns the size of its
    /// commit according to the record, if the record is usable.
    fn check_records(&mut self, index: u64, leaf: &Leaf<'_>) -> Result<Option<u64>, FsckError> {
        let at = Location::Entry { index };
        let (Some(event_id), Some(request_id)) =
            (leaf.fields.str("/event_id"), leaf.fields.str("/request_id"))
        else {
            self.problem(at, "its event has no event_id or request_id");
            return Ok(None);
        };
        self.counts.index_records += 2;
        match self.store.request_has(&request_id, index) {
            Ok(true) => {}
            Ok(false) => self.problem(
                at.clone(),
                format!("the request index does not list it under request_id {request_id:?}"),
            ),
            Err(e) => self.damage(at.clone(), e)?,
        }
        let record = match self.store.dedup_get(&dedup_key(&leaf.source, &event_id)) {
            Ok(record) => record,
            Err(e) => {
                self.damage(at, e)?;
                return Ok(None);
            }
        };
        let Some(record) = record else {
            self.problem(
                at,
                format!(
                    "no idempotency record for source {:?}, event_id {event_id:?}",
                    leaf.source
                ),
            );
            return Ok(None);
        };
        if record.index != index {
            self.problem(
                at.clone(),
                format!(
                    "the idempotency record of its event_id {event_id:?} points at entry {}",
                    record.index
                ),
            );
        }
        if record.tree_size <= index {
            self.problem(
                at,
                format!(
                    "its idempotency record says it was committed at tree size {}, which does not include it",
                    record.tree_size
                ),
            );
            return Ok(None);
        }
        Ok(Some(record.tree_size))
    }

    /// The pass over entries, nodes and checkpoints. Returns the tree size of the stored entries.
    fn walk(&mut self, verifier: Option<&VerifierKey>, progress: bool) -> Result<u64, FsckError> {
        let store = self.store;
        let last = store.last_entry_index()?;
        let bar = progress_bar(progress, last.map_or(0, |i| i + 1));
        let mut checkpoints: CheckpointIter<'a> = {
            let iter: Box<dyn Iterator<Item = _> + 'a> = Box::new(store.checkpoints());
            iter.peekable()
        };
        // Nothing stored at all: a data dir that was never served (`sources add` only). Otherwise
        // the log starts with a checkpoint of size 0 like every commit ends with one.
        let empty_dir = last.is_none() && checkpoints.peek().is_none();
        if !self.key_recorded && !empty_dir {
            let consequence = match verifier {
                None => ", so no checkpoint signature can be checked (pass --key-file)",
                Some(_) => "",
            };
            self.problem(
                Location::Meta,
                format!(
                    "no log key is recorded, but the log has entries or checkpoints{consequence}"
                ),
            );
        }
        let mut frontier = Frontier::<Blake3>::empty();
        let mut prev_hash = GENESIS_PREV;
        let mut prev_micros = i64::MIN;
        let mut commit = Commit::EndsAt(0);
        let mut commit_start = 0u64;
        let genesis = (!empty_dir).then_some(true);
        self.checkpoint_at(&mut checkpoints, 0, genesis, &frontier, verifier)?;

        let mut size = 0u64;
        let mut complete = true;
        for item in store.entries_from(0, Reads::Scan) {
            let (index, bytes) = match item {
                Ok(item) => item,
                Err(e) => {
                    // A key that does not decode (skipped), or a read failure (the iterator ends).
                    self.damage(Location::ColumnFamily { name: "entries" }, e)?;
                    continue;
                }
            };
            if index != size {
                let from = match size {
                    0 => "the stored entries start at".to_owned(),
                    _ => format!("the stored entries jump from {} to", size - 1),
                };
                self.problem(
                    Location::Entry { index: size },
                    format!("missing: {from} {index}"),
                );
                // The tree and commits beyond a hole cannot be checked in order.
                complete = false;
                break;
            }
            self.counts.entries += 1;
            // Per entry, in this order (so the first problem reported is the most telling): its
            // fields and chain link, its leaf hash and the nodes it completes, its index records.
            let leaf = self.check_fields(index, &bytes, &prev_hash, &mut prev_micros);
            let leaf_hash = Blake3::leaf(&bytes);
            frontier.append_settled(leaf_hash, |id, computed| self.settle(id, computed));
            if let Some(e) = self.io_error.take() {
                return Err(e.into());
            }
            let committed_at = match &leaf {
                Some(leaf) => self.check_records(index, leaf)?,
                None => None,
            };
            // Which commit the entry is in, by the records: it continues the commit in progress,
            // or, at a commit boundary, starts the next one.
            match (commit, committed_at) {
                (Commit::EndsAt(end), Some(at)) if index < end && at != end => self.problem(
                    Location::Entry { index },
                    format!(
                        "its idempotency record says it was committed at tree size {at}, but entry {commit_start}'s, in the same commit, says {end}"
                    ),
                ),
                (Commit::EndsAt(end), _) if index < end => {}
                (_, Some(at)) => {
                    commit = Commit::EndsAt(at);
                    commit_start = index;
                }
                (_, None) => commit = Commit::Unknown,
            }
            prev_hash = leaf_hash;
            size = index + 1;
            let ends = match commit {
                Commit::EndsAt(end) => Some(end == size),
                Commit::Unknown => None,
            };
            self.checkpoint_at(&mut checkpoints, size, ends, &frontier, verifier)?;
            if size.is_multiple_of(4096) {
                bar.set_position(size);
            }
        }
        bar.finish_and_clear();
        if complete {
            self.finish(size, commit, checkpoints)?;
        }
        Ok(size)
    }

    /// After a complete pass: what lies beyond the stored entries, and stray records.
    fn finish(
        &mut self,
        size: u64,
        commit: Commit,
        checkpoints: CheckpointIter<'a>,
    ) -> Result<(), FsckError> {
        let mut beyond = Vec::new();
        for item in checkpoints {
            match item {
                Ok((s, _)) => beyond.push(s),
                Err(e) => {
                    self.damage(
                        Location::ColumnFamily {
                            name: "checkpoints",
                        },
                        e,
                    )?;
                    break;
                }
            }
            if beyond.len() > MAX_PROBLEMS {
                break;
            }
        }
        let claimed = match commit {
            Commit::EndsAt(end) if end > size => Some(end),
            _ => None,
        }
        .into_iter()
        .chain(beyond.iter().copied())
        .max();
        if let Some(claimed) = claimed {
            self.problem(
                Location::Entry { index: size },
                format!(
                    "missing: checkpoints or idempotency records reach tree size {claimed}, but the stored entries make a tree of size {size}"
                ),
            );
        }
        for s in beyond {
            self.problem(
                Location::Checkpoint { size: s },
                format!("beyond the stored entries (tree size {size})"),
            );
        }
        // Stray nodes: anything left after the walk.
        let mut strays = 0usize;
        while let Some(item) = self.nodes.next() {
            match item {
                Ok((id, _)) => self.problem(
                    Location::Node {
                        level: id.level,
                        index: id.index,
                    },
                    format!("stored but not a node of the tree of size {size}"),
                ),
                Err(e) => self.damage(Location::ColumnFamily { name: "tiles" }, e)?,
            }
            strays += 1;
            if strays > MAX_PROBLEMS {
                break;
            }
        }
        let (dedup, requests) = self.store.index_record_counts()?;
        if dedup != size {
            self.problem(
                Location::ColumnFamily { name: "dedup" },
                format!("{dedup} idempotency records for {size} entries"),
            );
        }
        if requests != size {
            self.problem(
                Location::ColumnFamily { name: "requests" },
                format!("{requests} request-index keys for {size} entries"),
            );
        }
        Ok(())
    }
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} entries {pos}/{len} [{bar:40}] {per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Prints the report: one line per listed problem, then a summary line.
pub fn print_lines(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for p in &report.problems {
        writeln!(out, "FAIL {}: {}", p.location, p.message)?;
    }
    let more = report.problems_total - report.problems.len() as u64;
    if more > 0 {
        writeln!(out, "... and {more} more problems")?;
    }
    let c = &report.checked;
    let checked = format!(
        "{} entries, {} nodes, {} checkpoints, {} index records checked",
        c.entries, c.nodes, c.checkpoints, c.index_records
    );
    match report.first() {
        None => writeln!(
            out,
            "ok: tree size {}; {checked}; log key {}",
            report.tree_size,
            report
                .log_key
                .as_deref()
                .unwrap_or("(none: nothing stored yet)")
        ),
        Some(first) => writeln!(
            out,
            "FAILED: {} problems, the first at {}; {checked}",
            report.problems_total, first.location
        ),
    }
}
