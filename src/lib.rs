//! `ledger`: a tamper-evident, append-only record of approval events for privileged actions run by
//! AI agents and automated pipelines. Events are validated, sequenced, hash-chained, appended to a
//! BLAKE3 Merkle tree (RFC 9162 shape) in RocksDB and covered by Ed25519-signed checkpoints; each
//! poster gets a receipt with an inclusion proof.
//!
//! # Layout
//!
//! Dependencies point one way: `core` <- `store` <- `sequencer` <- `http` <- `server` (and `net`) <-
//! `cli`.
//!
//! - [`core`]: pure logic: events, leaves, hashes, the tree and its proofs, checkpoints, receipts.
//!   No I/O, no clock, no randomness.
//! - [`store`]: RocksDB, the only module that names it. One synced `WriteBatch` per commit.
//! - [`sequencer`]: the one writer: ordering, chaining, group commit, checkpoint signing.
//! - [`http`]: the axum API; writes only through the sequencer; per-source rate and in-flight
//!   limits in [`http::limit`].
//! - [`auth`]: tokens (stored hashed, checked in constant time); [`admin`]: issuing and revoking them.
//! - [`keyfile`]: the signing key on disk; [`keys`]: the key history and rotation.
//! - [`server`]: wiring and graceful shutdown; [`net`]: the serving loop (connection cap, TLS,
//!   header and idle timeouts); [`tls`]: certificates and keys for both ends; [`cli`]: the
//!   command line.
//! - [`export`]: evidence bundles from a data dir (RocksDB secondary, safe beside a running server),
//!   with [`bundle`] (Parquet rows, manifest), [`report`] (HTML) and [`oscal`] (FedRAMP).
//! - [`summary`]: `summary.json` in bounded memory, over [`spill`] (an external merge sort).
//! - [`par`]: the order-keeping parallel map behind export's and verify's per-row work.
//! - [`verify`]: offline bundle verification; needs no RocksDB, trusts only the user's key.
//! - [`mod@bench`]: the load generator and storage floor behind `ledger bench`.
//! - [`fsck`]: the full `O(n)` audit of a data dir (every leaf, chain link, node, checkpoint).
//! - [`backup`]: consistent copies of a data dir, made by the running server (control socket) or
//!   offline.
//!
//! docs/architecture.md walks the life of one event through these; docs/formats.md specifies every
//! byte an outside verifier depends on.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod backup;
#[cfg(feature = "server")]
pub mod bench;
pub mod bundle;
#[cfg(feature = "server")]
pub mod cli;
pub mod core;
#[cfg(feature = "server")]
pub mod export;
#[cfg(feature = "server")]
pub mod fsck;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod keyfile;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod net;
pub mod oscal;
pub mod par;
pub mod report;
#[cfg(feature = "server")]
pub mod sequencer;
#[cfg(feature = "server")]
pub mod server;
pub mod spill;
#[cfg(feature = "server")]
pub mod store;
pub mod summary;
#[cfg(feature = "server")]
pub mod tls;
pub mod verify;
