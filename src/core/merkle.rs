//! The Merkle tree of RFC 9162 section 2.1: roots, inclusion and consistency proofs, built and verified.
//!
//! Owns: tree arithmetic and proof algorithms, generic over [`TreeHasher`]. Must not touch: I/O.
//! Storage reaches it through [`HashReader`], which returns the hash of a *complete* subtree (a node
//! `(level, index)` covering leaves `[index << level, (index + 1) << level)`). Those are the only hashes
//! ever stored: appending leaf `n` creates the leaf node and one parent per trailing 1-bit of `n`
//! ([`Frontier::append`]), so `2n - popcount(n)` nodes for `n` leaves, and any root or proof at any past size
//! is computed from at most `2 log2(n)` of them (the Go `sumdb/tlog` "stored hashes" layout).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::marker::PhantomData;

use super::hash::{Hash, TreeHasher};

/// A complete subtree: `level` 0 is a leaf; it covers leaves `[index << level, (index + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 = leaf).
    pub level: u8,
    /// Position among the nodes of that level, from the left.
    pub index: u64,
}

impl NodeId {
    /// The node at `level` whose leftmost leaf is `first_leaf` (which must be aligned to `2^level`).
    #[must_use]
    pub fn covering(level: u8, first_leaf: u64) -> Self {
        Self {
            level,
            index: first_leaf >> level,
        }
    }

    /// The node's place in the order nodes complete (the Go `sumdb/tlog` "stored hash index"):
    /// appending leaf `n` completes `2n - popcount(n)` nodes before it, then the leaf and one
    /// parent per trailing 1-bit of `n`, bottom up, so the node at `level` whose last leaf is
    /// `n` comes `level` places after leaf `n`. The nodes one [`Frontier::append`] run yields
    /// are consecutive in this order. `None` past `u64` (a tree of 2^63 leaves and more).
    #[must_use]
    pub fn stored_index(self) -> Option<u64> {
        let last = self.last_leaf()?;
        let before = 2 * u128::from(last) - u128::from(last.count_ones());
        u64::try_from(before + u128::from(self.level)).ok()
    }

    /// The node at place `stored` in completion order: the inverse of
    /// [`NodeId::stored_index`] (the Go `sumdb/tlog` `SplitStoredHashIndex`).
    #[must_use]
    pub fn from_stored_index(stored: u64) -> Self {
        // Leaf n comes at 2n - popcount(n), which is at most `stored` for n = stored / 2 and
        // falls short of it by at most 65 places; walk forward leaf by leaf from there.
        let mut leaf = stored / 2;
        let mut at = 2 * leaf - u64::from(leaf.count_ones());
        // Leaf `leaf` is followed by one parent per trailing 1-bit of `leaf`.
        while let Some(next) = at.checked_add(1 + u64::from(leaf.trailing_ones()))
            && next <= stored
        {
            leaf += 1;
            at = next;
        }
        // At most the leaf's trailing 1-bits, so below 64.
        let level = (stored - at) as u8;
        Self {
            level,
            index: leaf >> level,
        }
    }

    /// The node that completes right after this one: its parent if this node is a right child
    /// (the same leaf completes both), otherwise the next leaf. `None` after the tree's last
    /// possible node.
    #[must_use]
    pub fn next_completed(self) -> Option<Self> {
        if self.index & 1 == 1 && self.level < 63 {
            Some(Self {
                level: self.level + 1,
                index: self.index >> 1,
            })
        } else {
            Some(Self::covering(0, self.last_leaf()?.checked_add(1)?))
        }
    }

    /// The last leaf the node covers; `None` if that does not fit in a `u64` (no tree of fewer
    /// than 2^64 leaves has the node).
    #[must_use]
    pub fn last_leaf(self) -> Option<u64> {
        if self.level >= 64 {
            return None;
        }
        // Exact: at most 2^64 << 63.
        u64::try_from(((u128::from(self.index) + 1) << self.level) - 1).ok()
    }
}

/// Errors of tree reads and proofs. Proof verification failures surface as "verification failed"
/// (HTTP 4xx where a client sent the proof, exit code 1 in `ledger verify`); read errors as 500.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A leaf index at or past the tree size (HTTP 400).
    #[error("index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// A consistency range that is not `0 < from <= to` (HTTP 400).
    #[error("invalid consistency range {from}..{to}: need 0 < from <= to")]
    InvalidRange {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
    /// The proof does not prove the claim.
    #[error("proof verification failed: {0}")]
    Verification(&'static str),
    /// The hash store could not return a node it must hold (corruption or I/O; HTTP 500).
    #[error("reading tree node level {level} index {index}: {source}")]
    Read {
        /// Level of the node.
        level: u8,
        /// Index of the node.
        index: u64,
        /// What the store said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Reads stored complete-subtree hashes. The one seam between the pure tree code and storage.
pub trait HashReader {
    /// The hash of complete node `id`, or an error if it is not stored.
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError>;
}

/// A map keyed by [`NodeId`] with [`NodeHasher`].
pub type NodeMap<V> = HashMap<NodeId, V, BuildHasherDefault<NodeHasher>>;

/// A multiply-rotate hash of a [`NodeId`] (the `FxHash` step). Node ids come from the log's own
/// tree, never from clients, so SipHash's resistance to chosen keys buys nothing here, and it was
/// half the cost of building a receipt's proof from a batch's nodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeHasher(u64);

impl NodeHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for NodeHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A node the reader was asked for but does not hold.
#[derive(Debug, thiserror::Error)]
#[error("node not stored")]
pub struct MissingNode;

impl<S: BuildHasher> HashReader for HashMap<NodeId, Hash, S> {
    fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
        self.get(&id).copied().ok_or_else(|| TreeError::Read {
            level: id.level,
            index: id.index,
            source: Box::new(MissingNode),
        })
    }
}

/// Largest power of two strictly less than `n` (`n >= 2`): the split point `k` of RFC 9162 2.1.1.
#[must_use]
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The maximal complete subtrees that make up `[0, size)`, left to right (decreasing level).
pub fn frontier_ids(size: u64) -> impl Iterator<Item = NodeId> {
    let mut start = 0u64;
    (0..64u8).rev().filter_map(move |level| {
        if size & (1u64 << level) == 0 {
            return None;
        }
        let id = NodeId::covering(level, start);
        start += 1u64 << level;
        Some(id)
    })
}

/// The right edge of a tree of size `n`: the hashes of its maximal complete subtrees. Appending to it
/// yields exactly the nodes to store, and its root is the tree head. Memory is `O(log n)`, so the
/// sequencer keeps it in memory and rebuilds it on start with `log n` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier<H> {
    size: u64,
    hashes: Vec<Hash>,
    _hasher: PhantomData<H>,
}

impl<H: TreeHasher> Frontier<H> {
    /// The frontier of the empty tree.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            size: 0,
            hashes: Vec::new(),
            _hasher: PhantomData,
        }
    }

    /// Loads the frontier of a stored tree of `size` leaves (`popcount(size)` reads).
    pub fn load(size: u64, reader: &impl HashReader) -> Result<Self, TreeError> {
        let hashes = frontier_ids(size)
            .map(|id| reader.read_hash(id))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            size,
            hashes,
            _hasher: PhantomData,
        })
    }

    /// Number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier's nodes with their ids, left to right.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, Hash)> + '_ {
        frontier_ids(self.size).zip(self.hashes.iter().copied())
    }

    /// Appends leaf `size` with hash `leaf_hash`, pushing every newly complete node (the leaf itself,
    /// then one parent per trailing 1-bit of the index) onto `out`.
    pub fn append(&mut self, leaf_hash: Hash, out: &mut Vec<(NodeId, Hash)>) {
        self.append_settled(leaf_hash, |id, hash| {
            out.push((id, hash));
            hash
        });
    }

    /// Appends leaf `size` like [`Frontier::append`], but `settle` chooses the hash kept for each
    /// newly complete node (the leaf first, then each parent, bottom up): it gets the node and the
    /// hash computed from the kept children, and returns the hash to keep and build on. `append`
    /// keeps the computed hash; `ledger fsck` keeps the *stored* one, so that each stored node is
    /// checked against its stored children and one bad node is reported once, not with all its
    /// ancestors.
    pub fn append_settled(
        &mut self,
        leaf_hash: Hash,
        mut settle: impl FnMut(NodeId, Hash) -> Hash,
    ) {
        let index = self.size;
        let mut hash = settle(NodeId::covering(0, index), leaf_hash);
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            let left = self.hashes.pop().expect("a set bit has a frontier node");
            level += 1;
            let id = NodeId {
                level,
                index: index >> level,
            };
            // MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])), RFC 9162 2.1.1
            hash = settle(id, H::node(&left, &hash));
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The tree head MTH(D\[size\]), RFC 9162 2.1.1: the frontier folded from the right.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(last) = iter.next() else {
            return H::empty();
        };
        iter.fold(*last, |right, left| H::node(left, &right))
    }
}

/// MTH(D[lo:hi]) for a range that RFC 9162's recursion produces (`lo` aligned to the power of two at
/// or above `hi - lo`), from stored complete nodes.
fn subtree_hash<H: TreeHasher>(
    lo: u64,
    hi: u64,
    reader: &impl HashReader,
) -> Result<Hash, TreeError> {
    let n = hi - lo;
    if n == 0 {
        return Ok(H::empty());
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return reader.read_hash(NodeId::covering(n.trailing_zeros() as u8, lo));
    }
    // MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])), RFC 9162 2.1.1
    let k = split(n);
    let left = subtree_hash::<H>(lo, lo + k, reader)?;
    let right = subtree_hash::<H>(lo + k, hi, reader)?;
    Ok(H::node(&left, &right))
}

/// The root of the tree of `size` leaves, from stored nodes.
pub fn tree_hash<H: TreeHasher>(size: u64, reader: &impl HashReader) -> Result<Hash, TreeError> {
    subtree_hash::<H>(0, size, reader)
}

/// The inclusion proof PATH(index, D\[size\]) of RFC 9162 2.1.3.1, leaf-side sibling first.
pub fn inclusion_proof<H: TreeHasher>(
    index: u64,
    size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, TreeError> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::with_capacity(64 - size.leading_zeros() as usize);
    path::<H>(index, 0, size, reader, &mut proof)?;
    Ok(proof)
}

fn path<H: TreeHasher>(
    m: u64,
    lo: u64,
    hi: u64,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), TreeError> {
    let n = hi - lo;
    if n == 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        // PATH(m, D[0:k]) : MTH(D[k:n])
        path::<H>(m, lo, lo + k, reader, out)?;
        out.push(subtree_hash::<H>(lo + k, hi, reader)?);
    } else {
        // PATH(m - k, D[k:n]) : MTH(D[0:k])
        path::<H>(m - k, lo + k, hi, reader, out)?;
        out.push(subtree_hash::<H>(lo, lo + k, reader)?);
    }
    Ok(())
}

/// Inclusion proofs at one tree size for a run of leaves, each built from the last one.
///
/// `PATH(m, D[lo:hi])` of RFC 9162 2.1.3.1 descends through the subtrees containing `m` and pushes
/// one sibling per level on the way back up, so two leaves' proofs share every sibling pushed above
/// the subtree where their descents part. The cursor remembers the last proof; the next one walks
/// the split points down to where the two leaves part (integer steps, no reads), computes only the
/// path inside that subtree, and reuses the rest. For consecutive leaves that subtree has two
/// leaves half the time and four a quarter of the time, so a run of proofs costs about two node
/// reads per leaf instead of `log2(size)` (plus, on a ragged right edge, the hashes of the
/// incomplete subtrees, recomputed for each leaf by [`inclusion_proof`]). Any order of indexes is
/// answered correctly; ascending order is the one that is cheap.
#[derive(Debug)]
pub struct ProofCursor<H> {
    size: u64,
    last: Option<u64>,
    proof: Vec<Hash>,
    /// The new path below the parting subtree, before it replaces the old one.
    below: Vec<Hash>,
    _hasher: PhantomData<H>,
}

impl<H: TreeHasher> ProofCursor<H> {
    /// A cursor for proofs against the tree of `size` leaves.
    #[must_use]
    pub fn new(size: u64) -> Self {
        Self {
            size,
            last: None,
            proof: Vec::with_capacity(64),
            below: Vec::with_capacity(64),
            _hasher: PhantomData,
        }
    }

    /// `inclusion_proof(index, size, reader)`, leaf-side sibling first.
    pub fn proof(&mut self, index: u64, reader: &impl HashReader) -> Result<&[Hash], TreeError> {
        if index >= self.size {
            return Err(TreeError::IndexOutOfRange {
                index,
                size: self.size,
            });
        }
        // The subtree [lo, hi) where `index` and the last leaf part, and how many siblings the
        // last proof pushed above it (those end the new proof too).
        let (mut lo, mut hi, mut shared) = (0, self.size, 0usize);
        if let Some(last) = self.last {
            while hi - lo > 1 {
                let mid = lo + split(hi - lo);
                match (index < mid, last < mid) {
                    (true, true) => hi = mid,
                    (false, false) => lo = mid,
                    _ => break,
                }
                shared += 1;
            }
        }
        let keep = self.proof.len() - shared;
        // On an error the cursor forgets the last proof rather than keep a half-built one.
        self.last = None;
        self.below.clear();
        path::<H>(index - lo, lo, hi, reader, &mut self.below)?;
        self.proof.splice(..keep, self.below.drain(..));
        self.last = Some(index);
        Ok(&self.proof)
    }
}

/// The consistency proof PROOF(from, D\[to\]) of RFC 9162 2.1.4.1. Empty when `from == to`.
pub fn consistency_proof<H: TreeHasher>(
    from: u64,
    to: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, TreeError> {
    if from == 0 || from > to {
        return Err(TreeError::InvalidRange { from, to });
    }
    let mut proof = Vec::new();
    subproof::<H>(from, 0, to, true, reader, &mut proof)?;
    Ok(proof)
}

fn subproof<H: TreeHasher>(
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), TreeError> {
    let n = hi - lo;
    if m == n {
        // SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}
        if !whole {
            out.push(subtree_hash::<H>(lo, hi, reader)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        // SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
        subproof::<H>(m, lo, lo + k, whole, reader, out)?;
        out.push(subtree_hash::<H>(lo + k, hi, reader)?);
    } else {
        // SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
        subproof::<H>(m - k, lo + k, hi, false, reader, out)?;
        out.push(subtree_hash::<H>(lo, lo + k, reader)?);
    }
    Ok(())
}

/// Verifies an inclusion proof with the algorithm of RFC 9162 2.1.3.2.
pub fn verify_inclusion<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), TreeError> {
    if &root_from_inclusion::<H>(index, size, leaf_hash, proof)? != root {
        return Err(TreeError::Verification("computed root does not match"));
    }
    Ok(())
}

/// The root that an inclusion proof of `leaf_hash` at `index` in a tree of `size` leads to (RFC 9162
/// 2.1.3.2 without the final comparison), or why the proof's shape is wrong for that tree.
pub fn root_from_inclusion<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
) -> Result<Hash, TreeError> {
    if index >= size {
        return Err(TreeError::Verification("leaf index not below tree size"));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(TreeError::Verification(
                "proof longer than the tree is deep",
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = H::node(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = H::node(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(TreeError::Verification(
            "proof shorter than the tree is deep",
        ));
    }
    Ok(r)
}

/// Verifies a consistency proof between trees of `from` and `to` leaves, RFC 9162 2.1.4.2.
/// Equal sizes need an empty proof and equal roots; `from == 0` proves nothing and is rejected.
pub fn verify_consistency<H: TreeHasher>(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), TreeError> {
    if from == 0 || from > to {
        return Err(TreeError::Verification("need 0 < from <= to"));
    }
    if from == to {
        if !proof.is_empty() {
            return Err(TreeError::Verification("equal sizes need an empty proof"));
        }
        if from_root != to_root {
            return Err(TreeError::Verification("equal sizes but different roots"));
        }
        return Ok(());
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(TreeError::Verification(
            "empty proof between different sizes",
        ));
    };
    // If `from` is an exact power of 2, the old root is the first node of the path.
    let (start, path) = if from.is_power_of_two() {
        (from_root, proof)
    } else {
        (first, rest)
    };
    let (mut fnode, mut snode) = (from - 1, to - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in path {
        if snode == 0 {
            return Err(TreeError::Verification(
                "proof longer than the tree is deep",
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = H::node(c, &fr);
            sr = H::node(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = H::node(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(TreeError::Verification(
            "proof shorter than the tree is deep",
        ));
    }
    if &fr != from_root {
        return Err(TreeError::Verification("old root does not match"));
    }
    if &sr != to_root {
        return Err(TreeError::Verification("new root does not match"));
    }
    Ok(())
}

/// A multi-leaf inclusion proof: the hashes that, together with the leaf hashes at `indexes`,
/// determine the root of the tree of `size` leaves.
///
/// The proof follows RFC 9162's recursion
/// MTH(D\[n\]) = HASH(0x01 || MTH(D\[0:k\]) || MTH(D\[k:n\])): walking the tree left to
/// right, every maximal subtree that holds none of `indexes` contributes its hash, in that order;
/// subtrees holding a proven leaf are recursed into, and a proven leaf contributes nothing. For a
/// contiguous run of `m` leaves that is at most about `2 log2(size)` hashes whatever `m` is, where
/// `m` separate proofs carry `m log2(size)`. `indexes` must be
/// non-empty, strictly increasing and below `size`. The verifier is [`root_from_multi_proof`].
pub fn multi_proof<H: TreeHasher>(
    indexes: &[u64],
    size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, TreeError> {
    let Some(&last) = indexes.last() else {
        // Nothing to prove; `root_from_multi_proof` rejects it too.
        return Err(TreeError::Verification(
            "a multi-proof needs at least one index",
        ));
    };
    if last >= size {
        return Err(TreeError::IndexOutOfRange { index: last, size });
    }
    if indexes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(TreeError::Verification("indexes not strictly increasing"));
    }
    let mut out = Vec::new();
    multi_path::<H>(0, size, indexes, reader, &mut out)?;
    Ok(out)
}

fn multi_path<H: TreeHasher>(
    lo: u64,
    hi: u64,
    indexes: &[u64],
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), TreeError> {
    if indexes.is_empty() {
        out.push(subtree_hash::<H>(lo, hi, reader)?);
        return Ok(());
    }
    let n = hi - lo;
    if n == 1 {
        return Ok(());
    }
    let mid = lo + split(n);
    let cut = indexes.partition_point(|&i| i < mid);
    multi_path::<H>(lo, mid, &indexes[..cut], reader, out)?;
    multi_path::<H>(mid, hi, &indexes[cut..], reader, out)
}

/// The root that a [`multi_proof`] of `leaves` (`(index, leaf hash)`, strictly increasing by
/// index) in a tree of `size` leads to, or why the proof does not fit that tree: no leaves, an
/// index out of order or not below `size`, or a proof with too few or too many hashes.
pub fn root_from_multi_proof<H: TreeHasher>(
    size: u64,
    leaves: &[(u64, Hash)],
    proof: &[Hash],
) -> Result<Hash, TreeError> {
    let Some(&(last, _)) = leaves.last() else {
        return Err(TreeError::Verification(
            "a multi-proof needs at least one leaf",
        ));
    };
    if last >= size {
        return Err(TreeError::Verification("leaf index not below tree size"));
    }
    if leaves.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(TreeError::Verification(
            "leaf indexes not strictly increasing",
        ));
    }
    let mut rest = proof;
    let root = multi_root::<H>(0, size, leaves, &mut rest)?;
    if !rest.is_empty() {
        return Err(TreeError::Verification("multi-proof has hashes left over"));
    }
    Ok(root)
}

fn multi_root<H: TreeHasher>(
    lo: u64,
    hi: u64,
    leaves: &[(u64, Hash)],
    proof: &mut &[Hash],
) -> Result<Hash, TreeError> {
    if leaves.is_empty() {
        let (first, rest) = proof
            .split_first()
            .ok_or(TreeError::Verification("multi-proof too short"))?;
        *proof = rest;
        return Ok(*first);
    }
    let n = hi - lo;
    if n == 1 {
        return Ok(leaves[0].1);
    }
    let mid = lo + split(n);
    let cut = leaves.partition_point(|&(i, _)| i < mid);
    let left = multi_root::<H>(lo, mid, &leaves[..cut], proof)?;
    let right = multi_root::<H>(mid, hi, &leaves[cut..], proof)?;
    Ok(H::node(&left, &right))
}

/// Verifies many inclusion proofs against one tree head, sharing the work of proofs whose paths
/// meet: the answer for every proof is exactly [`verify_inclusion`]'s, but consecutive leaves of a
/// range cost about one node hash each (a tree of `n` leaves has `n - 1` nodes) instead of
/// `log2(size)`.
///
/// Each node a proof computes is named by its place in the tree (its height and position, which
/// for one tree size fix the subtree it covers). The last proof that verified is remembered with
/// the nodes it computed and their two inputs. A new proof is walked up until it reaches a node
/// the remembered one also computed: there its node must be equal, and its remaining siblings must
/// equal the remembered proof's remaining siblings, or it fails (as it would alone, short of a hash
/// collision, since the remembered path from that node led to the root). When the meeting node's
/// two inputs are the remembered ones byte for byte, its hash is the remembered hash and is not
/// computed again: for consecutive leaves that is the one node both paths share, so the second
/// leaf of a pair costs no hash at all.
#[derive(Debug)]
pub struct PathVerifier<H> {
    size: u64,
    root: Hash,
    /// The last verified proof: its siblings, and per sibling the step that used it.
    proof: Vec<Hash>,
    steps: Vec<Step>,
    /// The buffer the next proof's steps are written to (the last-but-one proof's), kept to save
    /// an allocation per proof.
    spare: Vec<Step>,
    /// Node hashes computed, for the benchmark and tests.
    hashes: u64,
    _hasher: PhantomData<H>,
}

/// A node a proof's path computed: where it is, its two inputs, and its hash.
#[derive(Debug, Clone, Copy)]
struct Step {
    height: u32,
    position: u64,
    left: Hash,
    right: Hash,
    node: Hash,
}

impl<H: TreeHasher> PathVerifier<H> {
    /// A verifier for proofs against the tree head (`size`, `root`).
    #[must_use]
    pub fn new(size: u64, root: Hash) -> Self {
        Self {
            size,
            root,
            proof: Vec::new(),
            steps: Vec::new(),
            spare: Vec::new(),
            hashes: 0,
            _hasher: PhantomData,
        }
    }

    /// Node hashes computed so far.
    #[must_use]
    pub fn hashes(&self) -> u64 {
        self.hashes
    }

    /// [`verify_inclusion`] of `leaf_hash` at `index` with `proof` against this verifier's head.
    pub fn verify(
        &mut self,
        index: u64,
        leaf_hash: &Hash,
        proof: &[Hash],
    ) -> Result<(), TreeError> {
        let mut fresh = std::mem::take(&mut self.spare);
        fresh.clear();
        let walked = self.walk(index, leaf_hash, proof, &mut fresh);
        match walked {
            // It met the remembered path at its step `k`, the remembered one's `at`, and its
            // siblings above are the remembered ones: this path is its own steps to there and
            // the remembered ones above. Mostly `k == at`, and only those few steps change.
            Ok(Some((k, at))) if k == at => {
                self.steps[..=k].copy_from_slice(&fresh);
                self.proof[..=k].copy_from_slice(&proof[..=k]);
            }
            // Met elsewhere, or went up to the root (`None`): this path replaces the remembered one.
            Ok(met) => {
                if let Some((_, at)) = met {
                    fresh.extend_from_slice(&self.steps[at + 1..]);
                }
                std::mem::swap(&mut self.steps, &mut fresh);
                self.proof.clear();
                self.proof.extend_from_slice(proof);
            }
            Err(_) => {}
        }
        self.spare = fresh;
        walked.map(|_| ())
    }

    /// Walks `proof` up from `leaf_hash` at `index`, writing its steps to `fresh`, until it meets
    /// the remembered path (`Some((its step, the remembered step))`, having checked the rest
    /// against the remembered proof) or reaches the root (`None`, having checked the root).
    fn walk(
        &mut self,
        index: u64,
        leaf_hash: &Hash,
        proof: &[Hash],
        fresh: &mut Vec<Step>,
    ) -> Result<Option<(usize, usize)>, TreeError> {
        if index >= self.size {
            return Err(TreeError::Verification("leaf index not below tree size"));
        }
        let (mut fnode, mut snode) = (index, self.size - 1);
        let mut height = 0u32;
        let mut r = *leaf_hash;
        // The remembered steps are in increasing height; `at` walks them alongside.
        let mut at = 0;
        for (k, p) in proof.iter().enumerate() {
            if snode == 0 {
                return Err(TreeError::Verification(
                    "proof longer than the tree is deep",
                ));
            }
            let (left, right) = if fnode & 1 == 1 || fnode == snode {
                // A right child, or the last node of its level: it has no right sibling, and
                // rises past the levels where it is a left child (the right edge of the tree).
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                    height += 1;
                }
                (*p, r)
            } else {
                (r, *p)
            };
            fnode >>= 1;
            snode >>= 1;
            height += 1;
            while self.steps.get(at).is_some_and(|s| s.height < height) {
                at += 1;
            }
            let met = self
                .steps
                .get(at)
                .filter(|s| (s.height, s.position) == (height, fnode));
            r = match met {
                Some(s) if s.left == left && s.right == right => s.node,
                _ => {
                    self.hashes += 1;
                    H::node(&left, &right)
                }
            };
            fresh.push(Step {
                height,
                position: fnode,
                left,
                right,
                node: r,
            });
            if let Some(s) = met {
                if s.node != r || proof[k + 1..] != self.proof[at + 1..] {
                    return Err(TreeError::Verification("computed root does not match"));
                }
                return Ok(Some((k, at)));
            }
        }
        if snode != 0 {
            return Err(TreeError::Verification(
                "proof shorter than the tree is deep",
            ));
        }
        if r != self.root {
            return Err(TreeError::Verification("computed root does not match"));
        }
        Ok(None)
    }
}

/// [`verify_inclusion`] over untrusted byte strings: any hash that is not 32 bytes fails.
pub fn verify_inclusion_bytes<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[&[u8]],
    root: &[u8],
) -> Result<(), TreeError> {
    let leaf_hash = as_hash(leaf_hash)?;
    let root = as_hash(root)?;
    let proof = proof
        .iter()
        .map(|p| as_hash(p))
        .collect::<Result<Vec<_>, _>>()?;
    verify_inclusion::<H>(index, size, &leaf_hash, &proof, &root)
}

/// [`verify_consistency`] over untrusted byte strings. Equal sizes compare the roots as given
/// (RFC 9162 2.1.4.2 compares them without hashing); otherwise any hash not 32 bytes fails.
pub fn verify_consistency_bytes<H: TreeHasher>(
    from: u64,
    to: u64,
    from_root: &[u8],
    to_root: &[u8],
    proof: &[&[u8]],
) -> Result<(), TreeError> {
    if from != 0 && from == to && proof.is_empty() {
        return if from_root == to_root {
            Ok(())
        } else {
            Err(TreeError::Verification("equal sizes but different roots"))
        };
    }
    let proof = proof
        .iter()
        .map(|p| as_hash(p))
        .collect::<Result<Vec<_>, _>>()?;
    verify_consistency::<H>(from, to, &as_hash(from_root)?, &as_hash(to_root)?, &proof)
}

fn as_hash(bytes: &[u8]) -> Result<Hash, TreeError> {
    bytes
        .try_into()
        .map_err(|_| TreeError::Verification("hash is not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::hash::{Blake3, Sha256};
    use proptest::prelude::*;

    /// MTH straight from the recursive definition, as an oracle independent of stored nodes.
    fn naive_root<H: TreeHasher>(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => H::empty(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                H::node(
                    &naive_root::<H>(&leaves[..k]),
                    &naive_root::<H>(&leaves[k..]),
                )
            }
        }
    }

    fn build<H: TreeHasher>(n: usize) -> (Vec<Hash>, HashMap<NodeId, Hash>, Vec<Hash>) {
        let mut frontier = Frontier::<H>::empty();
        let mut store = HashMap::new();
        let mut leaves = Vec::new();
        let mut roots = vec![frontier.root()];
        let mut out = Vec::new();
        for i in 0..n {
            let leaf = H::leaf(&(i as u64).to_be_bytes());
            leaves.push(leaf);
            out.clear();
            frontier.append(leaf, &mut out);
            store.extend(out.iter().copied());
            roots.push(frontier.root());
        }
        (leaves, store, roots)
    }

    #[test]
    fn stores_n_leaves_plus_complete_interior_nodes() {
        let (_, store, _) = build::<Blake3>(1000);
        // n leaves plus n - popcount(n) complete interior nodes.
        assert_eq!(store.len(), 2 * 1000 - 1000u64.count_ones() as usize);
    }

    #[test]
    fn stored_index_is_the_order_nodes_complete_in() {
        let mut frontier = Frontier::<Blake3>::empty();
        let mut completed = Vec::new();
        for i in 0..1_000u64 {
            frontier.append(Blake3::leaf(&i.to_be_bytes()), &mut completed);
        }
        for (at, (id, _)) in completed.iter().enumerate() {
            assert_eq!(id.stored_index(), Some(at as u64), "{id:?}");
        }
        let top = NodeId {
            level: 63,
            index: 1,
        };
        assert_eq!(top.stored_index(), None);
        assert_eq!(top.last_leaf(), Some(u64::MAX));
        assert_eq!(
            NodeId {
                level: 64,
                index: 0
            }
            .last_leaf(),
            None
        );
        let half = NodeId {
            level: 63,
            index: 0,
        };
        assert_eq!(half.last_leaf(), Some(u64::MAX >> 1));
        assert_eq!(NodeId { level: 3, index: 2 }.last_leaf(), Some(23));
        let last_leaf = NodeId::covering(0, u64::MAX >> 1);
        assert_eq!(last_leaf.stored_index(), Some(u64::MAX - 63 - 1));
    }

    /// `from_stored_index` inverts `stored_index`, and `next_completed` steps through the
    /// order, from the first node and near the top of the range alike.
    #[test]
    fn stored_places_map_back_to_their_nodes() {
        let mut frontier = Frontier::<Blake3>::empty();
        let mut completed = Vec::new();
        for i in 0..1_000u64 {
            frontier.append(Blake3::leaf(&i.to_be_bytes()), &mut completed);
        }
        let mut next = Some(NodeId::covering(0, 0));
        for (at, (id, _)) in completed.iter().enumerate() {
            assert_eq!(NodeId::from_stored_index(at as u64), *id);
            assert_eq!(next, Some(*id), "after place {}", at.saturating_sub(1));
            next = id.next_completed();
        }
        // Around the last leaf a u64 index allows a stored place for (2^63 - 1).
        let last_leaf = NodeId::covering(0, u64::MAX >> 1);
        let first = last_leaf.stored_index().unwrap() - 200;
        let mut id = NodeId::from_stored_index(first);
        for at in first..=first + 200 + 63 {
            assert_eq!(NodeId::from_stored_index(at), id, "place {at}");
            assert_eq!(id.stored_index(), Some(at), "{id:?}");
            id = id.next_completed().unwrap();
        }
        assert_eq!(
            NodeId::from_stored_index(first + 200 + 63),
            NodeId {
                level: 63,
                index: 0
            }
        );
        let top = NodeId {
            level: 63,
            index: 0,
        };
        assert_eq!(top.next_completed(), Some(NodeId::covering(0, 1 << 63)));
    }

    #[test]
    fn settled_append_builds_on_the_hashes_it_keeps() {
        let (leaves, store, _) = build::<Blake3>(8);
        // Keeping what was computed is `append`.
        let mut seen = Vec::new();
        let mut f = Frontier::<Blake3>::empty();
        for leaf in &leaves {
            f.append_settled(*leaf, |id, h| {
                assert_eq!(store[&id], h);
                seen.push(id);
                h
            });
        }
        assert_eq!(seen.len(), store.len());
        // Keeping a substitute for node (1, 0): its parent is computed from the substitute.
        let bad = [7u8; 32];
        let mut f = Frontier::<Blake3>::empty();
        let mut parent = None;
        for leaf in &leaves[..4] {
            f.append_settled(*leaf, |id, h| match (id.level, id.index) {
                (1, 0) => bad,
                (2, 0) => {
                    parent = Some(h);
                    h
                }
                _ => h,
            });
        }
        let want = Blake3::node(&bad, &store[&NodeId::covering(1, 2)]);
        assert_eq!(parent, Some(want));
    }

    #[test]
    fn frontier_root_matches_definition_and_stored_nodes() {
        let (leaves, store, roots) = build::<Sha256>(70);
        for size in 0..=70usize {
            let want = naive_root::<Sha256>(&leaves[..size]);
            assert_eq!(roots[size], want, "frontier root at {size}");
            assert_eq!(tree_hash::<Sha256>(size as u64, &store).unwrap(), want);
            let f = Frontier::<Sha256>::load(size as u64, &store).unwrap();
            assert_eq!(f.root(), want, "reloaded frontier at {size}");
        }
    }

    #[test]
    fn every_proof_of_every_small_tree_verifies() {
        let (leaves, store, roots) = build::<Blake3>(33);
        for size in 1..=33u64 {
            for index in 0..size {
                let proof = inclusion_proof::<Blake3>(index, size, &store).unwrap();
                verify_inclusion::<Blake3>(
                    index,
                    size,
                    &leaves[index as usize],
                    &proof,
                    &roots[size as usize],
                )
                .unwrap();
            }
            for from in 1..=size {
                let proof = consistency_proof::<Blake3>(from, size, &store).unwrap();
                verify_consistency::<Blake3>(
                    from,
                    size,
                    &roots[from as usize],
                    &roots[size as usize],
                    &proof,
                )
                .unwrap();
            }
        }
    }

    /// A reader that counts its reads.
    struct Counting<'a>(&'a HashMap<NodeId, Hash>, std::cell::Cell<u64>);

    impl HashReader for Counting<'_> {
        fn read_hash(&self, id: NodeId) -> Result<Hash, TreeError> {
            self.1.set(self.1.get() + 1);
            self.0.read_hash(id)
        }
    }

    #[test]
    fn proof_cursor_reads_about_two_nodes_per_leaf_over_a_run() {
        let (_, store, _) = build::<Blake3>(1000);
        for size in [1u64, 2, 3, 511, 512, 513, 999, 1000] {
            let counting = Counting(&store, std::cell::Cell::new(0));
            let mut cursor = ProofCursor::<Blake3>::new(size);
            for index in 0..size {
                let proof = cursor.proof(index, &counting).unwrap().to_vec();
                assert_eq!(
                    proof,
                    inclusion_proof::<Blake3>(index, size, &store).unwrap()
                );
            }
            // About two reads per leaf, plus the ragged edge's subtrees (at most depth^2 reads),
            // where inclusion_proof alone reads at least log2(size) per leaf: 9 or 10 here.
            let reads = counting.1.get();
            let depth = u64::from(64 - size.leading_zeros());
            assert!(reads <= 2 * size + depth * depth, "{size}: {reads}");
        }
    }

    #[test]
    fn proof_cursor_reports_errors_and_recovers() {
        let (_, mut store, _) = build::<Blake3>(8);
        let mut cursor = ProofCursor::<Blake3>::new(8);
        cursor.proof(0, &store).unwrap();
        assert!(matches!(
            cursor.proof(8, &store),
            Err(TreeError::IndexOutOfRange { index: 8, size: 8 })
        ));
        // A missing sibling fails the proof that needs it, and the next proof is whole again.
        let gone = store.remove(&NodeId { level: 0, index: 2 }).unwrap();
        assert!(matches!(
            cursor.proof(3, &store),
            Err(TreeError::Read {
                level: 0,
                index: 2,
                ..
            })
        ));
        store.insert(NodeId { level: 0, index: 2 }, gone);
        assert_eq!(
            cursor.proof(3, &store).unwrap(),
            inclusion_proof::<Blake3>(3, 8, &store).unwrap()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any order of indexes (runs, repeats, jumps back) gets exactly `inclusion_proof`'s answer.
        #[test]
        fn proof_cursor_answers_as_inclusion_proof(
            size in 1u64..600,
            steps in proptest::collection::vec((any::<u64>(), 0u64..40), 1..40),
        ) {
            let (_, store, _) = build::<Blake3>(size as usize);
            let mut cursor = ProofCursor::<Blake3>::new(size);
            for (start, run) in steps {
                let start = start % size;
                for index in start..(start + run).min(size) {
                    let want = inclusion_proof::<Blake3>(index, size, &store).unwrap();
                    prop_assert_eq!(cursor.proof(index, &store).unwrap(), &want[..]);
                }
            }
        }
    }

    #[test]
    fn path_verifier_shares_work_over_a_range() {
        let (leaves, store, roots) = build::<Blake3>(1000);
        for size in [1u64, 2, 3, 511, 512, 513, 1000] {
            let mut v = PathVerifier::<Blake3>::new(size, roots[size as usize]);
            for index in 0..size {
                let proof = inclusion_proof::<Blake3>(index, size, &store).unwrap();
                v.verify(index, &leaves[index as usize], &proof).unwrap();
            }
            // A range of `size` leaves has `size - 1` nodes, each hashed once: the first path's,
            // then per leaf the nodes below where its path meets the last one's. Not log2(size)
            // per leaf, and not twice for a node two paths share.
            assert_eq!(v.hashes(), size - 1, "{size}");
        }
    }

    /// What can be wrong with one proof in a range.
    #[derive(Debug, Clone)]
    enum Tamper {
        None,
        Leaf,
        Sibling(usize),
        Drop,
        Extra,
        Index,
    }

    fn arb_tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            4 => Just(Tamper::None),
            1 => Just(Tamper::Leaf),
            2 => (0usize..12).prop_map(Tamper::Sibling),
            1 => Just(Tamper::Drop),
            1 => Just(Tamper::Extra),
            1 => Just(Tamper::Index),
        ]
    }

    proptest! {
        #[test]
        fn path_verifier_answers_as_verify_inclusion(
            size in 1u64..300,
            claims in prop::collection::vec((0u64..300, arb_tamper()), 1..40),
            sorted in any::<bool>(),
        ) {
            let (leaves, store, roots) = build::<Blake3>(300);
            let root = roots[size as usize];
            let mut claims: Vec<_> = claims.into_iter().map(|(i, t)| (i % size, t)).collect();
            if sorted {
                claims.sort_by_key(|c| c.0);
            }
            let mut v = PathVerifier::<Blake3>::new(size, root);
            for (index, tamper) in claims {
                let mut leaf = leaves[index as usize];
                let mut proof = inclusion_proof::<Blake3>(index, size, &store).unwrap();
                let mut at = index;
                match tamper {
                    Tamper::None => {}
                    Tamper::Leaf => leaf[0] ^= 1,
                    Tamper::Sibling(k) if !proof.is_empty() => {
                        let k = k % proof.len();
                        proof[k][31] ^= 0x80;
                    }
                    Tamper::Sibling(_) => {}
                    Tamper::Drop => { proof.pop(); }
                    Tamper::Extra => proof.push([9; 32]),
                    Tamper::Index => at = (index + 1) % size,
                }
                let alone = verify_inclusion::<Blake3>(at, size, &leaf, &proof, &root).is_ok();
                let shared = v.verify(at, &leaf, &proof).is_ok();
                prop_assert_eq!(alone, shared, "index {} {:?}", index, tamper);
            }
        }
    }

    #[test]
    fn multi_proof_of_a_run_is_logarithmic() {
        let (leaves, store, roots) = build::<Blake3>(1000);
        let run: Vec<u64> = (300..700).collect();
        let proof = multi_proof::<Blake3>(&run, 1000, &store).unwrap();
        assert!(proof.len() <= 2 * 10, "{} hashes", proof.len());
        let claimed: Vec<_> = run.iter().map(|&i| (i, leaves[i as usize])).collect();
        assert_eq!(
            root_from_multi_proof::<Blake3>(1000, &claimed, &proof).unwrap(),
            roots[1000]
        );
        // Every leaf proven: nothing to send.
        let all: Vec<u64> = (0..1000).collect();
        assert!(
            multi_proof::<Blake3>(&all, 1000, &store)
                .unwrap()
                .is_empty()
        );
        // A single leaf: the multi-proof holds the RFC 9162 path's hashes, ordered left to right.
        let mut path = inclusion_proof::<Blake3>(417, 1000, &store).unwrap();
        path.reverse();
        let one = multi_proof::<Blake3>(&[417], 1000, &store).unwrap();
        let mut sorted_one = one.clone();
        sorted_one.sort_unstable();
        path.sort_unstable();
        assert_eq!(sorted_one, path);
    }

    #[test]
    fn multi_proof_rejects_bad_claims() {
        let (leaves, store, roots) = build::<Blake3>(20);
        let at = |i: u64| (i, leaves[i as usize]);
        assert!(matches!(
            multi_proof::<Blake3>(&[3, 20], 20, &store),
            Err(TreeError::IndexOutOfRange {
                index: 20,
                size: 20
            })
        ));
        assert!(multi_proof::<Blake3>(&[5, 5], 20, &store).is_err());
        assert!(multi_proof::<Blake3>(&[], 20, &store).is_err());
        let proof = multi_proof::<Blake3>(&[2, 9], 20, &store).unwrap();
        assert!(root_from_multi_proof::<Blake3>(20, &[], &proof).is_err());
        assert!(root_from_multi_proof::<Blake3>(20, &[at(9), at(2)], &proof).is_err());
        assert!(root_from_multi_proof::<Blake3>(9, &[at(2), at(9)], &proof).is_err());
        assert!(root_from_multi_proof::<Blake3>(20, &[at(2), at(9)], &proof[1..]).is_err());
        let mut long = proof.clone();
        long.push(roots[20]);
        assert!(root_from_multi_proof::<Blake3>(20, &[at(2), at(9)], &long).is_err());
        assert_eq!(
            root_from_multi_proof::<Blake3>(20, &[at(2), at(9)], &proof).unwrap(),
            roots[20]
        );
    }

    proptest! {
        #[test]
        fn multi_proofs_prove_exactly_their_leaves(
            size in 1u64..300,
            picks in prop::collection::btree_set(0u64..300, 1..40),
            run in (0u64..300, 0u64..120),
            flip in any::<u64>(),
        ) {
            let (leaves, store, roots) = build::<Blake3>(300);
            let root = roots[size as usize];
            // Scattered leaves plus a contiguous run, as a batch of new events plus duplicates.
            let mut set: std::collections::BTreeSet<u64> = picks.into_iter().map(|i| i % size).collect();
            set.extend((run.0 % size..size).take(run.1 as usize));
            let indexes: Vec<u64> = set.into_iter().collect();
            let proof = multi_proof::<Blake3>(&indexes, size, &store).unwrap();
            let claimed: Vec<_> = indexes.iter().map(|&i| (i, leaves[i as usize])).collect();
            prop_assert_eq!(root_from_multi_proof::<Blake3>(size, &claimed, &proof).unwrap(), root);
            // Each proven leaf alone agrees with its RFC 9162 proof.
            for &(i, leaf) in &claimed {
                let single = inclusion_proof::<Blake3>(i, size, &store).unwrap();
                prop_assert!(verify_inclusion::<Blake3>(i, size, &leaf, &single, &root).is_ok());
            }
            // A changed leaf hash, proof hash or index does not lead to the root.
            let mut bad = claimed.clone();
            let k = (flip % bad.len() as u64) as usize;
            bad[k].1[(flip >> 8) as usize % 32] ^= 1;
            prop_assert_ne!(root_from_multi_proof::<Blake3>(size, &bad, &proof).ok(), Some(root));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = (flip % bad.len() as u64) as usize;
                bad[k][(flip >> 16) as usize % 32] ^= 1;
                prop_assert_ne!(root_from_multi_proof::<Blake3>(size, &claimed, &bad).ok(), Some(root));
            }
            let moved: Vec<_> = claimed.iter().map(|&(i, h)| (i + 1, h)).collect();
            if moved.last().unwrap().0 < size {
                prop_assert_ne!(root_from_multi_proof::<Blake3>(size, &moved, &proof).ok(), Some(root));
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let (_, store, _) = build::<Blake3>(4);
        assert!(matches!(
            inclusion_proof::<Blake3>(4, 4, &store),
            Err(TreeError::IndexOutOfRange { index: 4, size: 4 })
        ));
        assert!(matches!(
            consistency_proof::<Blake3>(0, 4, &store),
            Err(TreeError::InvalidRange { .. })
        ));
        assert!(matches!(
            consistency_proof::<Blake3>(5, 4, &store),
            Err(TreeError::InvalidRange { .. })
        ));
        assert!(matches!(
            inclusion_proof::<Blake3>(0, 5, &store),
            Err(TreeError::Read { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_trees_prove_and_reject_mutations(
            size in 1u64..300,
            index_seed in any::<u64>(),
            from_seed in any::<u64>(),
            flip_seed in any::<u64>(),
        ) {
            let (leaves, store, roots) = build::<Blake3>(size as usize);
            let root = roots[size as usize];
            let index = index_seed % size;
            let proof = inclusion_proof::<Blake3>(index, size, &store).unwrap();
            prop_assert!(verify_inclusion::<Blake3>(index, size, &leaves[index as usize], &proof, &root).is_ok());
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = (flip_seed % bad.len() as u64) as usize;
                bad[at][(flip_seed >> 8) as usize % 32] ^= 1 << (flip_seed >> 16 & 7);
                prop_assert!(verify_inclusion::<Blake3>(index, size, &leaves[index as usize], &bad, &root).is_err());
                let short = &proof[..proof.len() - 1];
                prop_assert!(verify_inclusion::<Blake3>(index, size, &leaves[index as usize], short, &root).is_err());
            }
            let mut long = proof.clone();
            long.push(root);
            prop_assert!(verify_inclusion::<Blake3>(index, size, &leaves[index as usize], &long, &root).is_err());
            let other = (index + 1) % size;
            if other != index {
                prop_assert!(verify_inclusion::<Blake3>(other, size, &leaves[index as usize], &proof, &root).is_err());
            }

            let from = 1 + from_seed % size;
            let cproof = consistency_proof::<Blake3>(from, size, &store).unwrap();
            let old = roots[from as usize];
            prop_assert!(verify_consistency::<Blake3>(from, size, &old, &root, &cproof).is_ok());
            if !cproof.is_empty() {
                let mut bad = cproof.clone();
                let at = (flip_seed % bad.len() as u64) as usize;
                bad[at][(flip_seed >> 8) as usize % 32] ^= 1;
                prop_assert!(verify_consistency::<Blake3>(from, size, &old, &root, &bad).is_err());
            }
            if from < size {
                // A forked history: the old root of a different tree must not verify.
                let mut forked = old;
                forked[0] ^= 0x80;
                prop_assert!(verify_consistency::<Blake3>(from, size, &forked, &root, &cproof).is_err());
            }
        }
    }
}
