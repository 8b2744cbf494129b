//! Receipts (contract): what `POST /v1/events` answers per event, and how anyone checks one.
//!
//! Owns: the receipt shape and its offline verification. Must not touch: storage, HTTP.

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::hash::{Blake3, Hash, TreeHasher, from_hex, push_hex, to_hex};
use super::merkle::{TreeError, root_from_multi_proof, verify_inclusion};
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

/// A receipt as the log builds it, with its hashes in binary; [`Receipt`] is its JSON shape.
#[derive(Debug, Clone)]
pub struct ProvenEvent {
    /// The entry's position.
    pub index: u64,
    /// The event's `event_id`.
    pub event_id: String,
    /// The entry's leaf hash.
    pub leaf_hash: Hash,
    /// The RFC 9162 inclusion proof against `checkpoint`, leaf side first.
    pub proof: Vec<Hash>,
    /// The checkpoint proven against (shared by the receipts of one commit).
    pub checkpoint: Arc<Checkpoint>,
    /// True when the event had been appended before and this is its original receipt.
    pub duplicate: bool,
}

impl From<&ProvenEvent> for Receipt {
    fn from(p: &ProvenEvent) -> Self {
        let mut receipt = Receipt::new(
            p.index,
            p.event_id.clone(),
            &p.leaf_hash,
            &p.proof,
            &p.checkpoint,
        );
        receipt.duplicate = p.duplicate;
        receipt
    }
}

/// The default answer of `POST /v1/events`, `{"receipts":[...]}` with one [`Receipt`] per event:
/// byte for byte what `serde_json` writes for those receipts, written straight from the binary
/// hashes (no `String` per hash). Of its strings only `event_id` and the note can hold what JSON
/// escapes; one that does goes through `serde_json`'s string writer.
#[must_use]
pub fn receipts_json(receipts: &[ProvenEvent]) -> Vec<u8> {
    let each = receipts.first().map_or(0, |r| {
        160 + r.event_id.len() + r.checkpoint.note.len() + 67 * r.proof.len()
    });
    let mut out = Vec::with_capacity(16 + each * receipts.len());
    out.extend_from_slice(b"{\"receipts\":[");
    for (n, r) in receipts.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(r.index).as_bytes());
        out.extend_from_slice(b",\"event_id\":");
        json_string(&r.event_id, &mut out);
        out.extend_from_slice(b",\"leaf_hash\":\"");
        push_hex(&r.leaf_hash, &mut out);
        out.extend_from_slice(b"\",\"tree_size\":");
        out.extend_from_slice(itoa::Buffer::new().format(r.checkpoint.size).as_bytes());
        out.extend_from_slice(b",\"inclusion_proof\":");
        json_hashes(&r.proof, &mut out);
        out.extend_from_slice(b",\"checkpoint\":");
        json_string(&r.checkpoint.note, &mut out);
        out.extend_from_slice(if r.duplicate {
            b",\"duplicate\":true}"
        } else {
            b",\"duplicate\":false}"
        });
    }
    out.extend_from_slice(b"]}");
    out
}

/// A JSON array of lowercase hex hashes, as `serde_json` writes their strings.
fn json_hashes(hashes: &[Hash], out: &mut Vec<u8>) {
    out.push(b'[');
    for (k, hash) in hashes.iter().enumerate() {
        out.extend_from_slice(if k > 0 { b",\"" } else { b"\"" });
        push_hex(hash, out);
        out.push(b'"');
    }
    out.push(b']');
}

/// A JSON string literal as `serde_json` writes it.
fn json_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly the quote, the backslash and the controls.
    if super::jcs::has_stop(s.as_bytes()) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec does not fail");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
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
    /// A batch receipt names one index with two different leaf hashes.
    #[error("index {0} appears with two different leaf hashes")]
    IndexConflict(u64),
}

/// Opens a receipt's checkpoint with `key` and requires it to be of the receipt's `tree_size`.
fn open_sized(note: &str, tree_size: u64, key: &VerifierKey) -> Result<Checkpoint, ReceiptError> {
    let checkpoint = open_checkpoint(note, key)?;
    if checkpoint.size != tree_size {
        return Err(ReceiptError::SizeMismatch {
            receipt: tree_size,
            checkpoint: checkpoint.size,
        });
    }
    Ok(checkpoint)
}

/// Checks a receipt offline: checkpoint signature by `key`, sizes, and the inclusion proof; with
/// `leaf`, also that those bytes are the entry. Returns the verified checkpoint.
pub fn verify_receipt(
    receipt: &Receipt,
    key: &VerifierKey,
    leaf: Option<&[u8]>,
) -> Result<Checkpoint, ReceiptError> {
    let checkpoint = open_sized(&receipt.checkpoint, receipt.tree_size, key)?;
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

/// The compact answer to one `POST /v1/events?receipts=batch` (opt-in; the default answer is one
/// [`Receipt`] per event). Every event of the request is proven against one signed checkpoint by
/// one multi-leaf proof ([`crate::core::merkle::multi_proof`]), so the checkpoint and the upper
/// proof nodes are sent once instead of once per event: about 150 bytes per event instead of
/// about 1,600 for a batch of 1,000. Each entry says as much as a [`Receipt`]; duplicates of
/// earlier commits are proven against this checkpoint too, not their original one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReceipt {
    /// Size of the tree the proof and checkpoint are for.
    pub tree_size: u64,
    /// The signed checkpoint (C2SP signed note).
    pub checkpoint: String,
    /// One per event, in input order.
    pub entries: Vec<BatchEntry>,
    /// Hex hashes of the multi-leaf proof of the distinct indexes of `entries`, in increasing
    /// index order (docs/formats.md, section 5).
    pub multi_proof: Vec<String>,
}

/// One event of a [`BatchReceipt`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// The entry's position.
    pub index: u64,
    /// The event's `event_id`.
    pub event_id: String,
    /// Hex BLAKE3 leaf hash of the entry.
    pub leaf_hash: String,
    /// True when the event had been appended before (an earlier commit or earlier in the request).
    pub duplicate: bool,
}

/// A [`BatchReceipt`] as the sequencer makes it, with binary hashes; [`batch_receipt_json`]
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenBatch {
    /// The checkpoint the proof is for (its size is the receipt's `tree_size`).
    pub checkpoint: Arc<Checkpoint>,
    /// One per event, in input order.
    pub entries: Vec<ProvenBatchEntry>,
    /// The multi-leaf proof of the distinct indexes of `entries`.
    pub multi_proof: Vec<Hash>,
}

/// One event of a [`ProvenBatch`]: a [`BatchEntry`] with its leaf hash binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenBatchEntry {
    /// The entry's position.
    pub index: u64,
    /// The event's `event_id`.
    pub event_id: String,
    /// BLAKE3 leaf hash of the entry.
    pub leaf_hash: Hash,
    /// True when the event had been appended before.
    pub duplicate: bool,
}

impl From<&ProvenBatch> for BatchReceipt {
    fn from(b: &ProvenBatch) -> Self {
        Self {
            tree_size: b.checkpoint.size,
            checkpoint: b.checkpoint.note.clone(),
            entries: b
                .entries
                .iter()
                .map(|e| BatchEntry {
                    index: e.index,
                    event_id: e.event_id.clone(),
                    leaf_hash: to_hex(&e.leaf_hash),
                    duplicate: e.duplicate,
                })
                .collect(),
            multi_proof: b.multi_proof.iter().map(to_hex).collect(),
        }
    }
}

/// The `?receipts=batch` answer of `POST /v1/events`: byte for byte what `serde_json` writes for
/// the [`BatchReceipt`] of `batch`, written straight from the binary hashes, as
/// [`receipts_json`] is (serializing the `BatchReceipt`, with a `String` per hash, cost about
/// 3,000 instructions per event).
#[must_use]
pub fn batch_receipt_json(batch: &ProvenBatch) -> Vec<u8> {
    let each = batch.entries.first().map_or(0, |e| 110 + e.event_id.len());
    let mut out = Vec::with_capacity(
        64 + batch.checkpoint.note.len()
            + each * batch.entries.len()
            + 67 * batch.multi_proof.len(),
    );
    out.extend_from_slice(b"{\"tree_size\":");
    out.extend_from_slice(itoa::Buffer::new().format(batch.checkpoint.size).as_bytes());
    out.extend_from_slice(b",\"checkpoint\":");
    json_string(&batch.checkpoint.note, &mut out);
    out.extend_from_slice(b",\"entries\":[");
    for (n, e) in batch.entries.iter().enumerate() {
        out.extend_from_slice(if n > 0 {
            b",{\"index\":"
        } else {
            b"{\"index\":"
        });
        out.extend_from_slice(itoa::Buffer::new().format(e.index).as_bytes());
        out.extend_from_slice(b",\"event_id\":");
        json_string(&e.event_id, &mut out);
        out.extend_from_slice(b",\"leaf_hash\":\"");
        push_hex(&e.leaf_hash, &mut out);
        out.extend_from_slice(if e.duplicate {
            b"\",\"duplicate\":true}"
        } else {
            b"\",\"duplicate\":false}"
        });
    }
    out.extend_from_slice(b"],\"multi_proof\":");
    json_hashes(&batch.multi_proof, &mut out);
    out.push(b'}');
    out
}

/// The distinct `(index, leaf hash)` pairs of a batch's entries, sorted by index: what its
/// multi-proof covers. An index named twice must name one leaf hash.
pub fn batch_leaves(
    entries: impl IntoIterator<Item = (u64, Hash)>,
) -> Result<Vec<(u64, Hash)>, ReceiptError> {
    let mut leaves: Vec<(u64, Hash)> = entries.into_iter().collect();
    leaves.sort_unstable_by_key(|&(index, _)| index);
    let mut out: Vec<(u64, Hash)> = Vec::with_capacity(leaves.len());
    for (index, hash) in leaves {
        match out.last() {
            Some(&(last, ref seen)) if last == index => {
                if *seen != hash {
                    return Err(ReceiptError::IndexConflict(index));
                }
            }
            _ => out.push((index, hash)),
        }
    }
    Ok(out)
}

/// Checks a batch receipt offline: the checkpoint's signature by `key` and size, and that the
/// multi-proof leads from every entry's leaf hash at its index to the checkpoint's root. With
/// `leaves` (one per entry, in order), also that those bytes are the entries. Returns the verified
/// checkpoint.
pub fn verify_batch_receipt(
    receipt: &BatchReceipt,
    key: &VerifierKey,
    leaves: Option<&[&[u8]]>,
) -> Result<Checkpoint, ReceiptError> {
    let checkpoint = open_sized(&receipt.checkpoint, receipt.tree_size, key)?;
    if leaves.is_some_and(|l| l.len() != receipt.entries.len()) {
        return Err(ReceiptError::LeafMismatch);
    }
    let mut claimed = Vec::with_capacity(receipt.entries.len());
    for (i, entry) in receipt.entries.iter().enumerate() {
        let hash = from_hex(&entry.leaf_hash).ok_or(ReceiptError::MalformedHash("leaf_hash"))?;
        if leaves.is_some_and(|l| Blake3::leaf(l[i]) != hash) {
            return Err(ReceiptError::LeafMismatch);
        }
        claimed.push((entry.index, hash));
    }
    let proof = receipt
        .multi_proof
        .iter()
        .map(|h| from_hex(h).ok_or(ReceiptError::MalformedHash("multi_proof")))
        .collect::<Result<Vec<_>, _>>()?;
    let root = root_from_multi_proof::<Blake3>(receipt.tree_size, &batch_leaves(claimed)?, &proof)?;
    if root != checkpoint.root {
        return Err(TreeError::Verification("computed root does not match").into());
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize)]
    struct Answer {
        receipts: Vec<Receipt>,
    }

    fn arb_proven() -> impl Strategy<Value = ProvenEvent> {
        let text = prop_oneof![
            "[0-9a-z-]{1,20}",
            "\\PC{0,16}",
            "[\\u{0}-\\u{1f}\"\\\\/a\\u{7f}\\u{e9}\\u{2028}\\u{1F600}]{0,8}",
        ];
        let hash = any::<[u8; 32]>();
        (
            any::<u64>(),
            text.clone(),
            hash,
            prop::collection::vec(hash, 0..4),
            (any::<u64>(), text),
            any::<bool>(),
        )
            .prop_map(
                |(index, event_id, leaf_hash, proof, (size, note), duplicate)| ProvenEvent {
                    index,
                    event_id,
                    leaf_hash,
                    proof,
                    checkpoint: Arc::new(Checkpoint {
                        origin: "log".into(),
                        size,
                        root: [0; 32],
                        note,
                    }),
                    duplicate,
                },
            )
    }

    proptest! {
        #[test]
        fn batch_receipt_json_is_what_serde_writes(
            proven in prop::collection::vec(arb_proven(), 0..4),
            multi_proof in prop::collection::vec(any::<[u8; 32]>(), 0..4),
            (size, note) in (any::<u64>(), "\\PC{0,16}"),
        ) {
            let batch = ProvenBatch {
                checkpoint: Arc::new(Checkpoint {
                    origin: "log".into(),
                    size,
                    root: [0; 32],
                    note,
                }),
                entries: proven
                    .into_iter()
                    .map(|p| ProvenBatchEntry {
                        index: p.index,
                        event_id: p.event_id,
                        leaf_hash: p.leaf_hash,
                        duplicate: p.duplicate,
                    })
                    .collect(),
                multi_proof,
            };
            let want = serde_json::to_vec(&BatchReceipt::from(&batch)).unwrap();
            prop_assert_eq!(batch_receipt_json(&batch), want);
        }

        #[test]
        fn receipts_json_is_what_serde_writes(proven in prop::collection::vec(arb_proven(), 0..4)) {
            let receipts = proven.iter().map(Receipt::from).collect();
            let want = serde_json::to_vec(&Answer { receipts }).unwrap();
            prop_assert_eq!(receipts_json(&proven), want);
        }
    }
}
