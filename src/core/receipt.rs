//! Receipts (contract): what `POST /v1/events` answers per event, and how anyone checks one.
//!
//! Owns: the receipt shape and its offline verification. Must not touch: storage, HTTP.

use serde::{Deserialize, Serialize};

use super::hash::{Blake3, Hash, TreeHasher, from_hex, to_hex};
use super::merkle::{TreeError, verify_inclusion};
use super::note::{Checkpoint, NoteError, VerifierKey, open_checkpoint};

/// Proof that one event is entry `index` of the log whose signed `checkpoint` has `tree_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry's position.
    pub index: u64,
    /// The event's `event_id`.
    pub event_id: String,
    /// Hex BLAKE3 leaf hash of the entry.
    pub leaf_hash: String,
    /// Size of the tree the proof and checkpoint are for.
    pub tree_size: u64,
    /// Hex hashes of the RFC 9162 inclusion proof, leaf side first.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (C2SP signed note).
    pub checkpoint: String,
    /// True when the event had been appended before and this is its original receipt.
    pub duplicate: bool,
}

impl Receipt {
    /// Builds a receipt from binary parts.
    #[must_use]
    pub fn new(
        index: u64,
        event_id: String,
        leaf_hash: &Hash,
        proof: &[Hash],
        checkpoint: &Checkpoint,
    ) -> Self {
        Self {
            index,
            event_id,
            leaf_hash: to_hex(leaf_hash),
            tree_size: checkpoint.size,
            inclusion_proof: proof.iter().map(to_hex).collect(),
            checkpoint: checkpoint.note.clone(),
            duplicate: false,
        }
    }
}

/// Why a receipt does not check out (exit code 1 in tools; the receipt is not evidence).
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The checkpoint does not verify with the given key.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] NoteError),
    /// `tree_size` is not the checkpoint's size.
    #[error("receipt tree_size {receipt} differs from checkpoint size {checkpoint}")]
    SizeMismatch {
        /// Size in the receipt.
        receipt: u64,
        /// Size in the checkpoint.
        checkpoint: u64,
    },
    /// A hash that is not 64 hex digits.
    #[error("malformed hash in {0}")]
    MalformedHash(&'static str),
    /// The leaf bytes given do not hash to `leaf_hash`.
    #[error("leaf bytes do not hash to leaf_hash")]
    LeafMismatch,
    /// The inclusion proof fails.
    #[error(transparent)]
    Proof(#[from] TreeError),
}

/// Checks a receipt offline: checkpoint signature by `key`, sizes, and the inclusion proof; with
/// `leaf`, also that those bytes are the entry. Returns the verified checkpoint.
pub fn verify_receipt(
    receipt: &Receipt,
    key: &VerifierKey,
    leaf: Option<&[u8]>,
) -> Result<Checkpoint, ReceiptError> {
    let checkpoint = open_checkpoint(&receipt.checkpoint, key)?;
    if checkpoint.size != receipt.tree_size {
        return Err(ReceiptError::SizeMismatch {
            receipt: receipt.tree_size,
            checkpoint: checkpoint.size,
        });
    }
    let leaf_hash = from_hex(&receipt.leaf_hash).ok_or(ReceiptError::MalformedHash("leaf_hash"))?;
    if leaf.is_some_and(|bytes| Blake3::leaf(bytes) != leaf_hash) {
        return Err(ReceiptError::LeafMismatch);
    }
    let proof = receipt
        .inclusion_proof
        .iter()
        .map(|h| from_hex(h).ok_or(ReceiptError::MalformedHash("inclusion_proof")))
        .collect::<Result<Vec<_>, _>>()?;
    verify_inclusion::<Blake3>(
        receipt.index,
        receipt.tree_size,
        &leaf_hash,
        &proof,
        &checkpoint.root,
    )?;
    Ok(checkpoint)
}
