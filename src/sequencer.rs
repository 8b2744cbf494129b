//! The sequencer: the one writer. It owns index assignment, the hash chain, the tree frontier, group
//! commit and checkpoint signing.
//!
//! Must not touch: HTTP shapes, RocksDB (it calls [`Store`]). Callers reach it only through
//! [`Sequencer::append`].
//!
//! Life of a batch: requests queue on a bounded channel; the writer thread takes the first, then
//! everything else already waiting (up to `max_batch_events`), so the batch grows with the load
//! while a commit is in flight (group commit). For the batch it looks up every idempotency key in
//! one multi-get, assigns indexes in arrival order, builds each leaf (chained to the previous leaf
//! hash), appends the leaf hashes to the in-memory frontier and signs one checkpoint. It hands the
//! sealed batch to the committer thread, which writes it with one fsync and only then answers its
//! callers, batch after batch in order; meanwhile the writer builds the next batch, so the fsync of
//! one batch overlaps the hashing of the next. Batches sealed while a write runs wait and are
//! then written together (one `WriteBatch`, one fsync); a small batch (fewer than
//! [`PIPELINE_MIN_EVENTS`]) is not sealed while a commit is in flight but waits for it and grows,
//! and the writer then writes it itself, as group commit did before the pipeline. The writer checks idempotency keys against the
//! batches still in flight as well as the store. A failed commit fails every batch after it, and
//! the sequencer stops writing. The callers' receipts' proofs are built in the callers' tasks from
//! the batch's new nodes, so proof hashing runs in parallel.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashTable;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::core::event::PreparedEvent;
use crate::core::hash::{Blake3, Hash, TreeHasher};
use crate::core::leaf::{
    GENESIS_PREV, Leaf, LeafHeader, encode_leaf, format_micros, leaf_holds_event,
};
use crate::core::merkle::{Frontier, HashReader, NodeId, TreeError, inclusion_proof, multi_proof};
use crate::core::note::{Checkpoint, NoteError, SignerKey, checkpoint_body, open_checkpoint};
use crate::core::receipt::{ProvenBatch, ProvenBatchEntry, ProvenEvent, batch_leaves};
use crate::store::{Commit, DedupRecord, META_LOG_KEY, Store, StoreError, dedup_key};

/// A clock in microseconds since the Unix epoch (injectable so tests can step it backwards).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    })
}

/// Sequencer limits.
#[derive(Clone)]
pub struct SequencerConfig {
    /// Most events committed in one `WriteBatch` (one fsync, one signature).
    pub max_batch_events: usize,
    /// Most events accepted but not yet committed; beyond it, [`SequencerError::Pushback`].
    pub max_queued_events: usize,
    /// Source of `ingested_at`.
    pub clock: Clock,
    /// Retired log keys offered for cosigning; each cosigns checkpoints until the end of its grace
    /// period in the key history (`keys`), and is ignored if the history does not list it.
    pub cosigners: Vec<SignerKey>,
    /// Fewest events the writer seals into a batch while a commit is in flight; a smaller batch
    /// waits for that commit ([`PIPELINE_MIN_EVENTS`] by default).
    pub pipeline_min_events: usize,
    /// Called before each batch that appends is written (on the committer thread, or on the
    /// writer's for a small batch), with the batch's tree size: a test holds a commit in flight
    /// with it. `None` in a server.
    pub before_commit: Option<CommitHook>,
}

/// See [`SequencerConfig::before_commit`].
pub type CommitHook = Arc<dyn Fn(u64) + Send + Sync>;

impl Default for SequencerConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 8192,
            max_queued_events: 65_536,
            clock: system_clock(),
            cosigners: Vec::new(),
            pipeline_min_events: PIPELINE_MIN_EVENTS,
            before_commit: None,
        }
    }
}

impl std::fmt::Debug for SequencerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequencerConfig")
            .field("max_batch_events", &self.max_batch_events)
            .field("max_queued_events", &self.max_queued_events)
            .finish_non_exhaustive()
    }
}

/// Sequencer errors; each variant's doc says how HTTP shows it.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// The queue is full: 503 with `Retry-After`. Nothing of the request was appended.
    #[error("ledger is at capacity; retry shortly")]
    Pushback,
    /// More events in one request than the queue can ever hold: 413.
    #[error("request has {0} events; the limit per request is {1}")]
    TooManyEvents(usize, usize),
    /// An `event_id` already appended (or earlier in this request) with a different body: 409.
    /// Nothing of the request was appended.
    #[error("event_id {event_id:?} (item {item}) was already appended with a different body")]
    Conflict {
        /// Position of the event in the request.
        item: usize,
        /// The conflicting id.
        event_id: String,
    },
    /// The commit failed (disk full, I/O error): 503. Nothing of the request was acknowledged;
    /// retrying is safe (idempotency returns the original receipt if it did land).
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The sequencer has stopped (shutdown): 503.
    #[error("ledger is shutting down")]
    ShuttingDown,
    /// Reading stored state failed: 500.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building a proof failed (a stored node is missing or unreadable): 500.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The stored state does not check out at start: the server refuses to serve.
    #[error("start-up check failed: {0}")]
    Startup(String),
}

/// What the writer did with one event.
#[derive(Debug, Clone, Copy)]
struct Placed {
    index: u64,
    leaf_hash: Hash,
    /// `Some(size)` when the event was appended by an earlier commit whose checkpoint had `size`.
    earlier_commit: Option<u64>,
    /// True when the event had been appended before (earlier commit or earlier in this batch).
    duplicate: bool,
}

/// The nodes a batch's receipts need: the frontier before the batch plus every node it created.
/// Reads that miss (duplicates of older entries) fall through to the store.
struct BatchView {
    /// The frontier before the batch: at most 64 nodes.
    frontier: Vec<(NodeId, Hash)>,
    /// The batch's commit, whose nodes are consecutive in completion order from the first one's
    /// [`NodeId::stored_index`]: a node is found by arithmetic, with no map to build per batch.
    created: Option<(u64, Arc<Commit>)>,
    store: Arc<Store>,
}

impl HashReader for BatchView {
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
        if let Some((first, commit)) = &self.created {
            let at = id.stored_index().and_then(|s| s.checked_sub(*first));
            if let Some((node, hash)) =
                at.and_then(|at| commit.nodes.get(usize::try_from(at).ok()?))
                && *node == id
            {
                return Ok(*hash);
            }
        }
        match self.frontier.iter().find(|(node, _)| *node == id) {
            Some((_, hash)) => Ok(*hash),
            None => self.store.read_hash(id),
        }
    }
}

struct Committed {
    placed: Vec<Placed>,
    checkpoint: Arc<Checkpoint>,
    view: Arc<BatchView>,
}

struct Job {
    source: Arc<str>,
    events: Vec<PreparedEvent>,
    reply: Reply,
    /// Held until the job is answered: bounds accepted-but-uncommitted events.
    _permit: OwnedSemaphorePermit,
}

/// Handle to the writer. Cheap to clone; the writer stops when every handle is dropped, after
/// committing what it has already taken.
#[derive(Clone)]
pub struct Sequencer {
    // A bounded mpsc queue plus a semaphore counted in events (not requests): a request of 5,000
    // events weighs 5,000, so memory stays bounded whatever mix of request sizes arrives.
    tx: mpsc::Sender<Job>,
    queued: Arc<Semaphore>,
    max_request_events: usize,
    store: Arc<Store>,
    latest: watch::Receiver<Arc<Checkpoint>>,
    verifier_key: Arc<str>,
    healthy: Arc<AtomicBool>,
}

/// Joins the writer thread on shutdown.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    /// Waits for the writer to commit what it holds and exit (after all handles are dropped).
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("sequencer thread panicked");
        }
    }
}

impl Sequencer {
    /// Loads and checks the stored state, then starts the writer thread.
    ///
    /// The check: the newest checkpoint verifies under `key`, the stored entries end exactly at its
    /// tree size, the root recomputed from stored nodes equals its root, and the last entry's bytes
    /// hash to the stored leaf hash. `O(log n)` reads; the full O(n) audit is `ledger fsck`. On a
    /// new data dir it records `key` as the log's key and commits a signed checkpoint of size 0.
    pub fn start(
        store: Arc<Store>,
        key: SignerKey,
        config: SequencerConfig,
    ) -> Result<(Self, WriterThread), SequencerError> {
        let state = State::load(&store, &key, config.clock.clone())?;
        let history = crate::keys::history(&store)
            .map_err(|e| SequencerError::Startup(format!("key history: {e}")))?;
        let offered = config.cosigners.len();
        let cosigners = crate::keys::cosigners(&history, config.cosigners);
        if cosigners.len() < offered {
            tracing::warn!(
                offered,
                used = cosigners.len(),
                "cosigning keys not retired keys of this log were ignored"
            );
        }
        for (k, until) in &cosigners {
            tracing::info!(key = %k.verifier().encode(), until = %format_micros(*until).unwrap_or_default(), "cosigning checkpoints with a retired key");
        }
        tracing::info!(
            tree_size = state.frontier.size(),
            verifier_key = %key.verifier().encode(),
            "log state loaded and checked"
        );
        let verifier_key: Arc<str> = key.verifier().encode().into();
        let (latest_tx, latest) = watch::channel(state.checkpoint.clone());
        let (tx, rx) = mpsc::channel(config.max_queued_events.max(1));
        let healthy = Arc::new(AtomicBool::new(true));
        let shared = Arc::new(Shared {
            done: Mutex::new(0),
            finished: Condvar::new(),
            failed: Mutex::new(None),
            healthy: healthy.clone(),
        });
        let committer = Arc::new(Committer {
            store: store.clone(),
            latest: latest_tx,
            shared: shared.clone(),
            before_commit: config.before_commit,
        });
        let writer = Writer {
            store: store.clone(),
            key,
            cosigners,
            state,
            max_batch: config.max_batch_events.max(1),
            pipeline_min_events: config.pipeline_min_events,
            built: 0,
            in_flight: VecDeque::new(),
            hasher: foldhash::fast::RandomState::default(),
            shared,
            committer: committer.clone(),
        };
        let spawn_error = |e| SequencerError::Startup(format!("cannot start writer thread: {e}"));
        // Batches wait here while another is written (and are then written together); at most
        // `MAX_GROUP` wait, then the writer blocks. Their events hold queue permits until
        // answered, so `max_queued_events` bounds them all.
        let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel(MAX_GROUP);
        let committer = std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || committer.run(sealed_rx))
            .map_err(spawn_error)?;
        let thread = std::thread::Builder::new()
            .name("sequencer".into())
            .spawn(move || {
                writer.run(rx, sealed_tx);
                if committer.join().is_err() {
                    tracing::error!("committer thread panicked");
                }
            })
            .map_err(spawn_error)?;
        Ok((
            Self {
                tx,
                queued: Arc::new(Semaphore::new(config.max_queued_events)),
                max_request_events: config.max_queued_events,
                store,
                latest,
                verifier_key,
                healthy,
            },
            WriterThread(thread),
        ))
    }

    /// The newest checkpoint (updated after each commit).
    #[must_use]
    pub fn latest(&self) -> Arc<Checkpoint> {
        self.latest.borrow().clone()
    }

    /// The log's verifier key, `<name>+<hex id>+<base64 key>`.
    #[must_use]
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// True while the writer accepts jobs (false once it has stopped or a commit has failed).
    #[must_use]
    pub fn is_accepting(&self) -> bool {
        !self.tx.is_closed() && self.healthy.load(Ordering::Relaxed)
    }

    /// The store, for reads.
    #[must_use]
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Appends `events` from `source`, all or nothing, and returns one receipt per event in order.
    ///
    /// Durability contract: this MUST resolve `Ok` only after the events are in a `WriteBatch`
    /// whose WAL write was fsync'd, together with the checkpoint each receipt carries. An error
    /// means no event of the request was newly appended by it (duplicates stay as they were).
    pub async fn append(
        &self,
        source: &str,
        events: Vec<PreparedEvent>,
    ) -> Result<Vec<ProvenEvent>, SequencerError> {
        let (event_ids, committed) = self.commit(source, events).await?;
        self.receipts(event_ids, committed)
    }

    /// [`Sequencer::append`] with the compact answer: one
    /// [`BatchReceipt`](crate::core::receipt::BatchReceipt) proving every event against this
    /// commit's checkpoint with one multi-leaf proof (same durability contract).
    pub async fn append_batch(
        &self,
        source: &str,
        events: Vec<PreparedEvent>,
    ) -> Result<ProvenBatch, SequencerError> {
        let (event_ids, committed) = self.commit(source, events).await?;
        let leaves = batch_leaves(committed.placed.iter().map(|p| (p.index, p.leaf_hash)))
            .map_err(|_| {
                // The writer placed one index with two leaf hashes: cannot happen; never answer.
                TreeError::Verification("a commit placed one index with two leaf hashes")
            })?;
        let indexes: Vec<u64> = leaves.iter().map(|&(index, _)| index).collect();
        let multi_proof =
            multi_proof::<Blake3>(&indexes, committed.checkpoint.size, &*committed.view)?;
        Ok(ProvenBatch {
            checkpoint: committed.checkpoint,
            entries: event_ids
                .into_iter()
                .zip(&committed.placed)
                .map(|(event_id, placed)| ProvenBatchEntry {
                    index: placed.index,
                    event_id,
                    leaf_hash: placed.leaf_hash,
                    duplicate: placed.duplicate,
                })
                .collect(),
            multi_proof,
        })
    }

    /// Queues `events` and waits for the commit that holds them (or for why none will).
    async fn commit(
        &self,
        source: &str,
        events: Vec<PreparedEvent>,
    ) -> Result<(Vec<String>, Committed), SequencerError> {
        let n = events.len();
        if n > self.max_request_events {
            return Err(SequencerError::TooManyEvents(n, self.max_request_events));
        }
        let permits = u32::try_from(n)
            .map_err(|_| SequencerError::TooManyEvents(n, self.max_request_events))?;
        let permit = self
            .queued
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| SequencerError::Pushback)?;
        let event_ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let (reply, response) = oneshot::channel();
        let job = Job {
            source: source.into(),
            events,
            reply,
            _permit: permit,
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SequencerError::Pushback,
            mpsc::error::TrySendError::Closed(_) => SequencerError::ShuttingDown,
        })?;
        let committed = response.await.map_err(|_| SequencerError::ShuttingDown)??;
        Ok((event_ids, committed))
    }

    /// Builds receipts: new entries against this commit's checkpoint from the batch's nodes;
    /// duplicates of earlier commits as their original receipts (that commit's checkpoint).
    fn receipts(
        &self,
        event_ids: Vec<String>,
        committed: Committed,
    ) -> Result<Vec<ProvenEvent>, SequencerError> {
        let mut out = Vec::with_capacity(event_ids.len());
        for (event_id, placed) in event_ids.into_iter().zip(committed.placed) {
            let (proof, checkpoint) = match placed.earlier_commit {
                None => (
                    inclusion_proof::<Blake3>(
                        placed.index,
                        committed.checkpoint.size,
                        &*committed.view,
                    )?,
                    committed.checkpoint.clone(),
                ),
                Some(size) => (
                    inclusion_proof::<Blake3>(placed.index, size, &*self.store)?,
                    Arc::new(self.original_checkpoint(size)?),
                ),
            };
            out.push(ProvenEvent {
                index: placed.index,
                event_id,
                leaf_hash: placed.leaf_hash,
                proof,
                checkpoint,
                duplicate: placed.duplicate,
            });
        }
        Ok(out)
    }

    fn original_checkpoint(&self, size: u64) -> Result<Checkpoint, SequencerError> {
        let note = self.store.checkpoint_at(size)?.ok_or_else(|| {
            StoreError::Corrupt(format!("no stored checkpoint for tree size {size}"))
        })?;
        let latest = self.latest();
        // Stored by us and signed by our key; re-verifying would cost a signature check per duplicate.
        Ok(Checkpoint {
            origin: latest.origin.clone(),
            size,
            root: crate::core::merkle::tree_hash::<Blake3>(size, &*self.store)?,
            note,
        })
    }
}

/// The writer's view of the log head, loaded from the store and checked at start.
struct State {
    frontier: Frontier<Blake3>,
    last_leaf_hash: Hash,
    last_micros: i64,
    checkpoint: Arc<Checkpoint>,
    clock: Clock,
}

impl State {
    fn load(store: &Store, key: &SignerKey, clock: Clock) -> Result<Self, SequencerError> {
        let verifier = key.verifier();
        match store.meta(META_LOG_KEY)? {
            Some(stored) if stored == verifier.encode().as_bytes() => {}
            Some(stored) => {
                return Err(SequencerError::Startup(format!(
                    "this data dir belongs to the log with key {}; refusing to sign it with {}",
                    String::from_utf8_lossy(&stored),
                    verifier.encode()
                )));
            }
            None => {
                if store.latest_checkpoint()?.is_some() || store.last_entry_index()?.is_some() {
                    return Err(SequencerError::Startup(
                        "data dir has entries but no log key".into(),
                    ));
                }
                store.put_meta(META_LOG_KEY, verifier.encode().as_bytes())?;
            }
        }
        let Some((size, note)) = store.latest_checkpoint()? else {
            if store.last_entry_index()?.is_some() {
                return Err(SequencerError::Startup(
                    "entries are stored but no checkpoint".into(),
                ));
            }
            let empty = Frontier::<Blake3>::empty();
            let note = key.sign_note(&checkpoint_body(verifier.name(), 0, &empty.root()));
            store.commit(&Commit {
                checkpoint: Some((0, note.clone())),
                ..Commit::default()
            })?;
            let checkpoint = open_checkpoint(&note, verifier).map_err(startup)?;
            return Ok(Self {
                frontier: empty,
                last_leaf_hash: GENESIS_PREV,
                last_micros: i64::MIN,
                checkpoint: Arc::new(checkpoint),
                clock,
            });
        };
        let checkpoint = open_checkpoint(&note, verifier).map_err(startup)?;
        if checkpoint.size != size {
            return Err(SequencerError::Startup(format!(
                "checkpoint stored under size {size} says size {}",
                checkpoint.size
            )));
        }
        let last = store.last_entry_index()?;
        if last.map_or(0, |i| i + 1) != size {
            return Err(SequencerError::Startup(format!(
                "stored entries end at {last:?} but the latest checkpoint has tree size {size}"
            )));
        }
        let frontier = Frontier::<Blake3>::load(size, store)?;
        if frontier.root() != checkpoint.root {
            return Err(SequencerError::Startup(format!(
                "root recomputed from stored nodes differs from the checkpoint's at size {size}"
            )));
        }
        let (last_leaf_hash, last_micros) = match size {
            0 => (GENESIS_PREV, i64::MIN),
            _ => {
                let bytes = store
                    .entry(size - 1)?
                    .ok_or_else(|| SequencerError::Startup("last entry missing".into()))?;
                let hash = Blake3::leaf(&bytes);
                if store.read_hash(NodeId::covering(0, size - 1))? != hash {
                    return Err(SequencerError::Startup(format!(
                        "entry {} does not hash to its stored leaf hash",
                        size - 1
                    )));
                }
                let leaf = Leaf::parse(&bytes)
                    .map_err(|e| SequencerError::Startup(format!("entry {}: {e}", size - 1)))?;
                (hash, leaf.ingested_micros)
            }
        };
        Ok(Self {
            frontier,
            last_leaf_hash,
            last_micros,
            checkpoint: Arc::new(checkpoint),
            clock,
        })
    }
}

fn startup(e: NoteError) -> SequencerError {
    SequencerError::Startup(format!("stored checkpoint: {e}"))
}

struct Writer {
    store: Arc<Store>,
    key: SignerKey,
    /// Retired keys still cosigning, with the end of their grace period (µs).
    cosigners: Vec<(SignerKey, i64)>,
    /// The head as of the last batch built (not yet committed, perhaps: see [`InFlight`]).
    state: State,
    max_batch: usize,
    pipeline_min_events: usize,
    /// Sequence number of the last batch built; batches are numbered from 1.
    built: u64,
    /// Batches handed to the committer whose commit had not finished when last looked at.
    in_flight: VecDeque<InFlight>,
    shared: Arc<Shared>,
    /// Also used on this thread, for a small batch when nothing is in flight.
    committer: Arc<Committer>,
    /// Hashes idempotency keys for every table they are looked up in. A seeded, fast hash
    /// (SipHash, std's default, was about 2,000 instructions per event here); the seed is random
    /// per process, since the keys are clients' event ids.
    hasher: foldhash::fast::RandomState,
}

/// What the writer and the committer share.
struct Shared {
    /// Sequence number of the last batch the committer finished (written and answered, or failed).
    done: Mutex<u64>,
    /// Signalled each time `done` moves.
    finished: Condvar,
    /// Set by the first failed commit; every later batch is answered with it.
    failed: Mutex<Option<String>>,
    /// Shared with the handles: false once a commit has failed.
    healthy: Arc<AtomicBool>,
}

impl Shared {
    fn done(&self) -> u64 {
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_done(&self, seq: u64) {
        *self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = seq;
        self.finished.notify_all();
    }

    /// Blocks until the committer has finished batch `seq`.
    fn wait_done(&self, seq: u64) {
        let done = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(
            self.finished
                .wait_while(done, |done| *done < seq)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Most sealed batches the committer writes in one `WriteBatch` (and most waiting for it).
const MAX_GROUP: usize = 8;

/// The default [`SequencerConfig::pipeline_min_events`]. Building 128 events (about 2 µs each: leaf, hashes, idempotency) takes about
/// as long as an fsync on the machine of `docs/performance.md` (200-250 µs), so below that the
/// overlap buys little, and a batch of its own costs a signature and a checkpoint (single-event
/// requests lost a fifth of their throughput without this wait: `docs/performance.md`,
/// "Session 11").
pub const PIPELINE_MIN_EVENTS: usize = 128;

/// A batch the writer built, on its way to the committer.
struct Sealed {
    seq: u64,
    /// What it writes; `None` if it appends nothing (every event a duplicate, or every job refused).
    commit: Option<Arc<Commit>>,
    checkpoint: Arc<Checkpoint>,
    view: Arc<BatchView>,
    /// Per job in arrival order: its answer channel and what it gets once the batch is durable.
    answers: Vec<(Reply, Result<Vec<Placed>, SequencerError>)>,
    /// Held until the batch is answered: they bound accepted-but-unanswered events.
    _permits: Vec<OwnedSemaphorePermit>,
}

/// A batch built but perhaps not yet written: its new events by idempotency key, so that the next
/// batch can find them before the store does.
struct InFlight {
    seq: u64,
    /// Its checkpoint's tree size: an event found here is answered as one of an earlier commit.
    size: u64,
    commit: Arc<Commit>,
    appended: HashTable<Appended>,
}

/// An event appended by a batch: where its leaf went. Found by its idempotency key's
/// [`Writer::hasher`] hash; the key itself is the batch's `Commit::dedup[position]`.
#[derive(Debug, Clone, Copy)]
struct Appended {
    index: u64,
    leaf_hash: Hash,
    /// Its position in the batch's `Commit::entries` and `Commit::dedup` (one of each per new
    /// event, pushed together): the entry's leaf holds the event's bytes.
    position: usize,
}

impl Appended {
    /// The one of `table` with idempotency key `key` (hashed `hash`) in `commit`.
    fn find<'t>(
        table: &'t HashTable<Self>,
        commit: &Commit,
        hash: u64,
        key: &[u8],
    ) -> Option<&'t Self> {
        table.find(hash, |a| commit.dedup[a.position].0 == key)
    }
}

/// An event's idempotency key in a batch being built: hashed once, found in every table by that
/// hash; and what the store holds under it.
struct Key {
    bytes: Vec<u8>,
    hash: u64,
    stored: Option<DedupRecord>,
}

/// The answer channel of a job.
type Reply = oneshot::Sender<Result<Committed, SequencerError>>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>, sealed: std::sync::mpsc::SyncSender<Sealed>) {
        while let Some(first) = rx.blocking_recv() {
            let mut count = first.events.len();
            let mut jobs = vec![first];
            self.take_waiting(&mut rx, &mut jobs, &mut count);
            if count < self.pipeline_min_events && self.shared.done() < self.built {
                // A small batch waits for the commit in flight and grows meanwhile (group
                // commit), as before the pipeline: sealed now, it would cost a signature and a
                // checkpoint of its own for a few events, and the disk is the bound anyway.
                self.shared.wait_done(self.built);
                self.take_waiting(&mut rx, &mut jobs, &mut count);
            }
            // What the committer finished is in the store (or failed, and then so does this).
            let done = self.shared.done();
            while self.in_flight.front().is_some_and(|b| b.seq <= done) {
                self.in_flight.pop_front();
            }
            if let Some(error) = self.shared.failed() {
                let message =
                    format!("ledger stopped writing after a failed commit ({error}); restart it");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(SequencerError::CommitFailed(message.clone())));
                }
                continue;
            }
            let Some(batch) = self.process(jobs) else {
                continue;
            };
            if count < self.pipeline_min_events {
                // Nothing is in flight (a small batch waited above): written here, as before the
                // pipeline, without the two thread hand-offs on the path of every light-load
                // request (10 events per POST over 4 connections: 33,100 events/s handed off,
                // 36,700-38,900 written here; `docs/performance.md`, "Session 11").
                self.committer.finish(vec![batch]);
            } else if sealed.send(batch).is_err() {
                break;
            }
        }
    }

    /// Adds the jobs already waiting to `jobs`, up to the batch limit.
    fn take_waiting(&self, rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, count: &mut usize) {
        while *count < self.max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    *count += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
    }

    /// Builds one batch: idempotency, indexes, leaves, frontier, checkpoint. `None` if it could
    /// not be built (its jobs are answered with the error).
    fn process(&mut self, jobs: Vec<Job>) -> Option<Sealed> {
        let keys: Vec<Vec<u8>> = jobs
            .iter()
            .flat_map(|j| j.events.iter().map(|e| dedup_key(&j.source, &e.event_id)))
            .collect();
        let stored = match self.store.dedup_get_many(&keys) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "idempotency lookup failed");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(SequencerError::CommitFailed(e.to_string())));
                }
                return None;
            }
        };

        let micros = (self.state.clock)().max(self.state.last_micros);
        let Some(ingested_at) = format_micros(micros) else {
            for job in jobs {
                let _ = job.reply.send(Err(SequencerError::CommitFailed(
                    "clock out of range".into(),
                )));
            }
            return None;
        };

        let mut frontier = self.state.frontier.clone();
        let old_frontier: Vec<(NodeId, Hash)> = frontier.nodes().collect();
        let mut prev = self.state.last_leaf_hash;
        let mut commit = Commit::default();
        commit.entries.reserve(keys.len());
        commit.nodes.reserve(2 * keys.len());
        commit.dedup.reserve(keys.len());
        commit.requests.reserve(keys.len());
        let mut appended: HashTable<Appended> = HashTable::with_capacity(keys.len());
        let mut answers = Vec::with_capacity(jobs.len());
        let mut permits = Vec::with_capacity(jobs.len());
        let mut keys = keys.into_iter().zip(stored).map(|(bytes, stored)| Key {
            hash: self.hasher.hash_one(bytes.as_slice()),
            bytes,
            stored,
        });

        for job in jobs {
            permits.push(job._permit);
            let job_keys: Vec<Key> = keys.by_ref().take(job.events.len()).collect();
            let earlier = match self.check_job(&job.events, &job_keys, &commit, &appended) {
                Ok(earlier) => earlier,
                Err(e) => {
                    answers.push((job.reply, Err(e)));
                    continue;
                }
            };
            let mut placed = Vec::with_capacity(job.events.len());
            for ((event, key), earlier) in job.events.into_iter().zip(job_keys).zip(earlier) {
                if let Some(earlier) = earlier {
                    placed.push(earlier);
                } else if let Some(entry) = Appended::find(&appended, &commit, key.hash, &key.bytes)
                {
                    placed.push(Placed {
                        index: entry.index,
                        leaf_hash: entry.leaf_hash,
                        earlier_commit: None,
                        duplicate: true,
                    });
                } else {
                    let index = frontier.size();
                    let leaf = encode_leaf(
                        &LeafHeader {
                            index,
                            ingested_at: &ingested_at,
                            source: &job.source,
                            prev_leaf_hash: &prev,
                            origin_signature: event.origin_signature.as_ref(),
                        },
                        &event.jcs,
                    );
                    let leaf_hash = Blake3::leaf(&leaf);
                    frontier.append(leaf_hash, &mut commit.nodes);
                    prev = leaf_hash;
                    commit.requests.push((event.request_id, index));
                    let position = commit.entries.len();
                    commit.entries.push((index, leaf));
                    commit.dedup.push((
                        key.bytes,
                        DedupRecord {
                            index,
                            tree_size: 0, // set below, once the batch's size is known
                        },
                    ));
                    appended.insert_unique(
                        key.hash,
                        Appended {
                            index,
                            leaf_hash,
                            position,
                        },
                        |a| self.hasher.hash_one(commit.dedup[a.position].0.as_slice()),
                    );
                    placed.push(Placed {
                        index,
                        leaf_hash,
                        earlier_commit: None,
                        duplicate: false,
                    });
                }
            }
            answers.push((job.reply, Ok(placed)));
        }

        self.built += 1;
        let seq = self.built;
        let size = frontier.size();
        if commit.entries.is_empty() {
            return Some(Sealed {
                seq,
                commit: None,
                checkpoint: self.state.checkpoint.clone(),
                view: Arc::new(self.view(Vec::new(), None)),
                answers,
                _permits: permits,
            });
        }
        for (_, record) in &mut commit.dedup {
            record.tree_size = size;
        }
        let mut note = self.key.sign_note(&checkpoint_body(
            self.key.verifier().name(),
            size,
            &frontier.root(),
        ));
        let now = (self.state.clock)();
        for (k, until) in &self.cosigners {
            if now < *until {
                note = k
                    .cosign(&note)
                    .expect("a note this writer just signed parses");
            }
        }
        commit.checkpoint = Some((size, note.clone()));
        let checkpoint = Arc::new(Checkpoint {
            origin: self.key.verifier().name().to_owned(),
            size,
            root: frontier.root(),
            note,
        });
        let first_created = commit.nodes.first().and_then(|(id, _)| id.stored_index());
        // The head moves on before the commit lands: the next batch builds on it. If this commit
        // fails, so does every batch after it, and the writer stops (`Shared::failed`).
        self.state.frontier = frontier;
        self.state.last_leaf_hash = prev;
        self.state.last_micros = micros;
        self.state.checkpoint = checkpoint.clone();
        let commit = Arc::new(commit);
        let created = first_created.map(|first| (first, commit.clone()));
        self.in_flight.push_back(InFlight {
            seq,
            size,
            commit: commit.clone(),
            appended,
        });
        Some(Sealed {
            seq,
            commit: Some(commit),
            checkpoint,
            view: Arc::new(self.view(old_frontier, created)),
            answers,
            _permits: permits,
        })
    }

    /// Checks a job's events against earlier commits (stored or in flight), earlier jobs of this
    /// batch and earlier items of the job itself: one id with two bodies (canonical JSON compared
    /// byte for byte) fails the whole job. Returns, per event, where an earlier commit placed it
    /// (its stored leaf hash read now, so placing cannot fail halfway).
    fn check_job(
        &self,
        events: &[PreparedEvent],
        keys: &[Key],
        commit: &Commit,
        appended: &HashTable<Appended>,
    ) -> Result<Vec<Option<Placed>>, SequencerError> {
        // The job's earlier items, by position.
        let mut in_job: HashTable<usize> = HashTable::with_capacity(keys.len());
        let mut earlier = Vec::with_capacity(keys.len());
        for (item, (event, key)) in events.iter().zip(keys).enumerate() {
            let mut found = None;
            let same = if let Some(record) = &key.stored {
                found = Some(Placed {
                    index: record.index,
                    leaf_hash: self.store.read_hash(NodeId::covering(0, record.index))?,
                    earlier_commit: Some(record.tree_size),
                    duplicate: true,
                });
                Some(self.stored_event_is(record.index, &event.jcs)?)
            } else if let Some((batch, entry)) = self.in_flight.iter().find_map(|b| {
                Appended::find(&b.appended, &b.commit, key.hash, &key.bytes).map(|e| (b, e))
            }) {
                found = Some(Placed {
                    index: entry.index,
                    leaf_hash: entry.leaf_hash,
                    earlier_commit: Some(batch.size),
                    duplicate: true,
                });
                Some(leaf_holds_event(
                    &batch.commit.entries[entry.position].1,
                    &event.jcs,
                ))
            } else if let Some(entry) = Appended::find(appended, commit, key.hash, &key.bytes) {
                Some(leaf_holds_event(
                    &commit.entries[entry.position].1,
                    &event.jcs,
                ))
            } else if let Some(first) = in_job.find(key.hash, |i| keys[*i].bytes == key.bytes) {
                Some(events[*first].jcs == event.jcs)
            } else {
                in_job.insert_unique(key.hash, item, |i| keys[*i].hash);
                None
            };
            if same == Some(false) {
                return Err(SequencerError::Conflict {
                    item,
                    event_id: event.event_id.clone(),
                });
            }
            earlier.push(found);
        }
        Ok(earlier)
    }

    /// Whether the stored entry at `index` holds the event `jcs` (an `event_id` seen before: the
    /// idempotency record keeps only where it went, so the body is compared with the entry).
    fn stored_event_is(&self, index: u64, jcs: &[u8]) -> Result<bool, SequencerError> {
        let bytes = self.store.entry(index)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "entry {index}, named by an idempotency record, is missing"
            ))
        })?;
        let leaf =
            Leaf::parse(&bytes).map_err(|e| StoreError::Corrupt(format!("entry {index}: {e}")))?;
        Ok(leaf.event == jcs)
    }

    fn view(
        &self,
        frontier: Vec<(NodeId, Hash)>,
        created: Option<(u64, Arc<Commit>)>,
    ) -> BatchView {
        BatchView {
            frontier,
            created,
            store: self.store.clone(),
        }
    }
}

/// If the committer panics (a bug), the writer must not wait for it forever: mark the sequencer
/// failed and every batch done, so the writer refuses what comes and can stop.
struct UnblockOnPanic<'a>(&'a Shared);

impl Drop for UnblockOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            *self
                .0
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some("the committer thread panicked".into());
            self.0.healthy.store(false, Ordering::Relaxed);
            self.0.set_done(u64::MAX);
        }
    }
}

/// Writes sealed batches in order (those that waited, together: one synced `WriteBatch`) and
/// answers their jobs.
struct Committer {
    store: Arc<Store>,
    latest: watch::Sender<Arc<Checkpoint>>,
    shared: Arc<Shared>,
    before_commit: Option<CommitHook>,
}

impl Committer {
    fn run(self: Arc<Self>, sealed: std::sync::mpsc::Receiver<Sealed>) {
        let _unblock = UnblockOnPanic(&self.shared);
        while let Ok(first) = sealed.recv() {
            // Every batch sealed while the last one was written goes in one write and one fsync:
            // the writer seals a batch as soon as it has one, so under a load of small requests
            // several wait here, and writing them one by one would spend an fsync on each.
            let mut group = vec![first];
            while group.len() < MAX_GROUP
                && let Ok(next) = sealed.try_recv()
            {
                group.push(next);
            }
            self.finish(group);
        }
        tracing::info!(tree_size = self.latest.borrow().size, "sequencer stopped");
    }

    fn finish(&self, group: Vec<Sealed>) {
        let commits: Vec<&Commit> = group.iter().filter_map(|b| b.commit.as_deref()).collect();
        let outcome = match self.shared.failed() {
            // A batch built on a failed one: its indexes may be taken by the failed batch's
            // events when the WAL is replayed.
            Some(error) => Err(format!(
                "ledger stopped writing after a failed commit ({error}); restart it"
            )),
            None if commits.is_empty() => Ok(()),
            None => {
                if let Some(hook) = &self.before_commit {
                    for batch in group.iter().filter(|b| b.commit.is_some()) {
                        hook(batch.checkpoint.size);
                    }
                }
                match self.store.commit_all(&commits) {
                    Ok(()) => {
                        if let Some(last) = group.iter().rev().find(|b| b.commit.is_some()) {
                            self.latest.send_replace(last.checkpoint.clone());
                        }
                        Ok(())
                    }
                    Err(e) => {
                        self.fail(&e);
                        Err(e.to_string())
                    }
                }
            }
        };
        drop(commits);
        if let Some(last) = group.last() {
            self.shared.set_done(last.seq);
        }
        for batch in group {
            for (reply, answer) in batch.answers {
                let answer = match (&outcome, answer) {
                    (Err(error), _) => Err(SequencerError::CommitFailed(error.clone())),
                    (Ok(()), Ok(placed)) => Ok(Committed {
                        placed,
                        checkpoint: batch.checkpoint.clone(),
                        view: batch.view.clone(),
                    }),
                    (Ok(()), Err(refused)) => Err(refused),
                };
                let _ = reply.send(answer);
            }
        }
    }

    fn fail(&self, error: &StoreError) {
        tracing::error!(error = %error, "commit failed; batch not acknowledged");
        // The write may or may not have reached the WAL: carrying on could reuse indexes that a
        // later WAL replay gives to these events. Stop writing; a restart replays the WAL and the
        // start-up check rebuilds the head from what is really on disk.
        *self
            .shared
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
        self.shared.healthy.store(false, Ordering::Relaxed);
        tracing::error!(
            "sequencer stopped accepting writes after a failed commit; restart the server"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::merkle::verify_inclusion;

    /// A batch's receipts come from its view alone: every node an inclusion proof of a new leaf
    /// needs at the batch's size is in the old frontier or among the batch's own nodes, found by
    /// its place in completion order. The store here is empty, so any read falling through to it
    /// fails the proof.
    #[test]
    fn a_batch_view_holds_every_node_its_receipts_need() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        for (before, added) in [(0u64, 1u64), (0, 9), (5, 7), (64, 64), (1023, 3), (1000, 1)] {
            let leaf = |i: u64| Blake3::leaf(&i.to_be_bytes());
            let mut frontier = Frontier::<Blake3>::empty();
            for i in 0..before {
                frontier.append(leaf(i), &mut Vec::new());
            }
            let old: Vec<(NodeId, Hash)> = frontier.nodes().collect();
            let mut commit = Commit::default();
            for i in before..before + added {
                frontier.append(leaf(i), &mut commit.nodes);
            }
            let first = commit.nodes[0].0.stored_index().unwrap();
            let view = BatchView {
                frontier: old,
                created: Some((first, Arc::new(commit))),
                store: store.clone(),
            };
            let size = before + added;
            for i in before..size {
                let proof = inclusion_proof::<Blake3>(i, size, &view)
                    .unwrap_or_else(|e| panic!("{before}+{added}, leaf {i}: {e}"));
                verify_inclusion::<Blake3>(i, size, &leaf(i), &proof, &frontier.root()).unwrap();
            }
            let all: Vec<u64> = (before..size).collect();
            multi_proof::<Blake3>(&all, size, &view).unwrap();
        }
    }
}
