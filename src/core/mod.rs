//! The pure heart of the ledger: event validation, leaf encoding, hashing, the Merkle tree and its
//! proofs, signed checkpoints and receipts.
//!
//! Must not touch: tokio, rocksdb, axum, arrow, the file system, clocks or randomness. Time and keys
//! are passed in; storage is reached only through [`merkle::HashReader`]. A test in
//! `tests/integration/layering.rs` fails if a file here names an I/O crate.

pub mod controls;
pub mod dom;
pub mod event;
pub mod findings;
pub mod hash;
pub mod jcs;
pub mod leaf;
pub mod merkle;
pub mod note;
pub mod projection;
pub mod receipt;
