//! Inclusion and consistency proofs (`core::merkle`). The first byte picks the operation and the
//! hash (bit 7: SHA-256, else BLAKE3):
//!
//! - `0`: `index u64, size u64, leaf_hash, root`, then the proof in 32-byte hashes (a short tail
//!   becomes a hash of the wrong length). `verify_inclusion` must agree with an independent
//!   verifier (the inner/border decomposition of transparency-dev/merkle) and with
//!   `verify_inclusion_bytes`.
//! - `1`: `from u64, to u64, from_root, to_root`, then the proof: the same for consistency.
//! - `2`: four `u16` selectors, then leaves (a length byte, then that many bytes each). Builds the
//!   tree with `Frontier`, checks every root it gives against the RFC 9162 definition and the stored
//!   nodes, makes an inclusion and a consistency proof the selectors choose, requires both to verify,
//!   and requires one flipped bit (in a proof hash, the leaf or either root) to make them fail.
//!   It also makes a multi-leaf proof (batch receipts) of a run of leaves plus one more, requires
//!   it to lead to the root, and a flipped bit, a dropped or an added hash to make it fail; and
//!   requires a `ProofCursor` (export's) to give `inclusion_proof`'s answer over a run and after a
//!   jump back, and a `PathVerifier` (verify's) to give `verify_inclusion`'s answer for each proof
//!   of that run with one of them damaged, and to hash each node of an undamaged run once.
//! - `3`: `size u64`, a count byte, that many `index u64, leaf_hash` claims, then a proof:
//!   `root_from_multi_proof` on untrusted claims must not panic, and a proof it accepts must stop
//!   being accepted with one hash more.
//!
//! Integers are little-endian.

#![no_main]

use std::collections::HashMap;

use ledger::core::hash::{Blake3, Hash, Sha256, TreeHasher};
use ledger::core::merkle::{
    Frontier, NodeId, PathVerifier, ProofCursor, consistency_proof, inclusion_proof, multi_proof,
    root_from_multi_proof, tree_hash, verify_consistency, verify_consistency_bytes,
    verify_inclusion, verify_inclusion_bytes,
};
use libfuzzer_sys::fuzz_target;

/// Most leaves in a built tree (proof sizes, not tree sizes, are what is being tested).
const MAX_LEAVES: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    if op & 0x80 == 0 {
        run::<Blake3>(op & 0x7f, rest);
    } else {
        run::<Sha256>(op & 0x7f, rest);
    }
});

fn run<H: TreeHasher>(op: u8, data: &[u8]) {
    let mut input = Input(data);
    match op % 4 {
        0 => {
            let (index, size) = (input.u64(), input.u64());
            let (leaf, root) = (input.hash(), input.hash());
            let (proof, tail) = input.proof();
            let ours = verify_inclusion::<H>(index, size, &leaf, &proof, &root).is_ok();
            assert_eq!(
                ours,
                reference_inclusion::<H>(index, size, &leaf, &proof, &root)
            );
            let mut raw: Vec<&[u8]> = proof.iter().map(|h| h.as_slice()).collect();
            assert_eq!(
                verify_inclusion_bytes::<H>(index, size, &leaf, &raw, &root).is_ok(),
                ours
            );
            if !tail.is_empty() {
                raw.push(tail);
                assert!(verify_inclusion_bytes::<H>(index, size, &leaf, &raw, &root).is_err());
            }
        }
        1 => {
            let (from, to) = (input.u64(), input.u64());
            let (old, new) = (input.hash(), input.hash());
            let (proof, tail) = input.proof();
            let ours = verify_consistency::<H>(from, to, &old, &new, &proof).is_ok();
            assert_eq!(
                ours,
                reference_consistency::<H>(from, to, &old, &new, &proof)
            );
            let mut raw: Vec<&[u8]> = proof.iter().map(|h| h.as_slice()).collect();
            assert_eq!(
                verify_consistency_bytes::<H>(from, to, &old, &new, &raw).is_ok(),
                ours
            );
            if !tail.is_empty() {
                raw.push(tail);
                assert!(verify_consistency_bytes::<H>(from, to, &old, &new, &raw).is_err());
            }
        }
        2 => tree::<H>(&mut input),
        _ => {
            let size = input.u64();
            let count = usize::from(input.byte() % 17);
            let claims: Vec<(u64, Hash)> =
                (0..count).map(|_| (input.u64(), input.hash())).collect();
            let (mut proof, _) = input.proof();
            if root_from_multi_proof::<H>(size, &claims, &proof).is_ok() {
                proof.push([0; 32]);
                assert!(root_from_multi_proof::<H>(size, &claims, &proof).is_err());
            }
        }
    }
}

/// Builds a tree and checks real proofs (see the module comment).
fn tree<H: TreeHasher>(input: &mut Input<'_>) {
    let (a, b, c, flip) = (input.u16(), input.u16(), input.u16(), input.u16());
    let mut leaves = Vec::new();
    while !input.0.is_empty() && leaves.len() < MAX_LEAVES {
        let len = usize::from(input.byte());
        leaves.push(H::leaf(input.take(len)));
    }
    let mut store: HashMap<NodeId, Hash> = HashMap::new();
    let mut frontier = Frontier::<H>::empty();
    let mut roots = vec![frontier.root()];
    let mut nodes = Vec::new();
    for leaf in &leaves {
        frontier.append(*leaf, &mut nodes);
        roots.push(frontier.root());
    }
    for (id, hash) in nodes {
        assert!(
            store.insert(id, hash).is_none(),
            "node {id:?} written twice"
        );
    }
    let n = leaves.len() as u64;
    assert_eq!(store.len() as u64, 2 * n - u64::from(n.count_ones()));
    let m = u64::from(c) % (n + 1);
    assert_eq!(roots[m as usize], mth::<H>(&leaves[..m as usize]));
    assert_eq!(
        tree_hash::<H>(m, &store).expect("stored"),
        roots[m as usize]
    );
    let loaded = Frontier::<H>::load(m, &store).expect("stored");
    assert_eq!(loaded.root(), roots[m as usize]);
    if n == 0 {
        assert!(inclusion_proof::<H>(0, 0, &store).is_err());
        return;
    }

    // Inclusion of leaf `index` in the tree of `size`.
    let index = u64::from(a) % n;
    let size = index + 1 + u64::from(b) % (n - index);
    let root = roots[size as usize];
    let leaf = leaves[index as usize];
    let proof = inclusion_proof::<H>(index, size, &store).expect("in range");
    assert!(verify_inclusion::<H>(index, size, &leaf, &proof, &root).is_ok());
    assert!(reference_inclusion::<H>(index, size, &leaf, &proof, &root));
    let (mut leaf2, mut proof2, mut root2) = (leaf, proof.clone(), root);
    let slots = proof.len() + 2;
    let bit = usize::from(flip) % (slots * 256);
    let target = match bit / 256 {
        0 => &mut leaf2,
        1 => &mut root2,
        i => &mut proof2[i - 2],
    };
    target[bit % 256 / 8] ^= 1 << (bit % 8);
    assert!(verify_inclusion::<H>(index, size, &leaf2, &proof2, &root2).is_err());
    let mut short = proof.clone();
    if short.pop().is_some() {
        assert!(verify_inclusion::<H>(index, size, &leaf, &short, &root).is_err());
    }
    let mut long = proof.clone();
    long.push(leaf);
    assert!(verify_inclusion::<H>(index, size, &leaf, &long, &root).is_err());

    // Consistency from `from` to `to`.
    let from = 1 + u64::from(a) % n;
    let to = from + u64::from(b) % (n - from + 1);
    let (old, new) = (roots[from as usize], roots[to as usize]);
    let proof = consistency_proof::<H>(from, to, &store).expect("in range");
    assert!(verify_consistency::<H>(from, to, &old, &new, &proof).is_ok());
    assert!(reference_consistency::<H>(from, to, &old, &new, &proof));
    let (mut old2, mut new2, mut proof2) = (old, new, proof.clone());
    let slots = proof.len() + 2;
    let bit = usize::from(flip) % (slots * 256);
    let target = match bit / 256 {
        0 => &mut old2,
        1 => &mut new2,
        i => &mut proof2[i - 2],
    };
    target[bit % 256 / 8] ^= 1 << (bit % 8);
    assert!(verify_consistency::<H>(from, to, &old2, &new2, &proof2).is_err());
    assert!(consistency_proof::<H>(0, to, &store).is_err());
    assert!(consistency_proof::<H>(to + 1, to, &store).is_err());

    // A multi-leaf proof of the run [index, index + b % 64) in the tree of `size`, plus leaf c.
    let size = index + 1 + u64::from(b) % (n - index);
    let root = roots[size as usize];
    let mut set: Vec<u64> = (index..size).take(usize::from(b % 64) + 1).collect();
    set.push(u64::from(c) % size);
    set.sort_unstable();
    set.dedup();
    let proof = multi_proof::<H>(&set, size, &store).expect("in range");
    let claims: Vec<(u64, Hash)> = set.iter().map(|&i| (i, leaves[i as usize])).collect();
    assert_eq!(
        root_from_multi_proof::<H>(size, &claims, &proof).ok(),
        Some(root)
    );
    if set.len() == 1 {
        let mut path = inclusion_proof::<H>(set[0], size, &store).expect("in range");
        let mut ours = proof.clone();
        path.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, path, "one leaf: the inclusion proof's hashes");
    }
    let (mut claims2, mut proof2) = (claims.clone(), proof.clone());
    let slots = proof.len() + claims.len();
    let bit = usize::from(flip) % (slots * 256);
    let target = match bit / 256 {
        i if i < claims.len() => &mut claims2[i].1,
        i => &mut proof2[i - claims.len()],
    };
    target[bit % 256 / 8] ^= 1 << (bit % 8);
    assert_ne!(
        root_from_multi_proof::<H>(size, &claims2, &proof2).ok(),
        Some(root)
    );
    let mut short = proof.clone();
    if short.pop().is_some() {
        assert!(root_from_multi_proof::<H>(size, &claims, &short).is_err());
    }
    let mut long = proof;
    long.push(root);
    assert!(root_from_multi_proof::<H>(size, &claims, &long).is_err());

    // Proofs from a cursor (export's): the run [index, size), then a jump back to leaf c and on
    // from there, each exactly `inclusion_proof`'s.
    let mut cursor = ProofCursor::<H>::new(size);
    let back = u64::from(c) % size;
    for i in (index..size).chain(back..size.min(back + 8)) {
        let want = inclusion_proof::<H>(i, size, &store).expect("in range");
        assert_eq!(
            cursor.proof(i, &store).expect("in range"),
            &want[..],
            "leaf {i}"
        );
    }
    assert!(cursor.proof(size, &store).is_err());

    // The same proofs checked in order by a `PathVerifier` (verify's), one of them damaged (a bit
    // flipped in its leaf or a sibling): every answer must be `verify_inclusion`'s. Undamaged, the
    // run [index, size) costs each node whose subtree meets it once: at most one per leaf beyond
    // the first, plus the two edges of the run at each level.
    let bad = index + u64::from(flip) % (size - index);
    let mut paths = PathVerifier::<H>::new(size, root);
    for i in (index..size).chain(back..size.min(back + 8)) {
        let mut leaf = leaves[i as usize];
        let mut proof = inclusion_proof::<H>(i, size, &store).expect("in range");
        if i == bad {
            let bit = usize::from(flip) % ((proof.len() + 1) * 256);
            let target = match bit / 256 {
                0 => &mut leaf,
                k => &mut proof[k - 1],
            };
            target[bit % 256 / 8] ^= 1 << (bit % 8);
        }
        let alone = verify_inclusion::<H>(i, size, &leaf, &proof, &root).is_ok();
        assert_eq!(alone, i != bad, "leaf {i}");
        assert_eq!(paths.verify(i, &leaf, &proof).is_ok(), alone, "leaf {i}");
    }
    let mut clean = PathVerifier::<H>::new(size, root);
    for i in index..size {
        let proof = inclusion_proof::<H>(i, size, &store).expect("in range");
        assert!(
            clean.verify(i, &leaves[i as usize], &proof).is_ok(),
            "leaf {i}"
        );
    }
    let depth = u64::from(u64::BITS - (size - 1).leading_zeros());
    assert!(
        clean.hashes() < size - index + 2 * depth,
        "{} hashes",
        clean.hashes()
    );
}

/// MTH(D[n]) straight from RFC 9162 2.1.1.
fn mth<H: TreeHasher>(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => H::empty(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            H::node(&mth::<H>(&leaves[..k]), &mth::<H>(&leaves[k..]))
        }
    }
}

/// Inclusion verification as transparency-dev/merkle's `proof.VerifyInclusion` does it: the proof
/// splits into `inner` hashes below the point where the paths to `index` and to `size - 1` diverge
/// and `border` hashes above it.
fn reference_inclusion<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones() as usize;
    let inner = inner as usize;
    if proof.len() != inner + border {
        return false;
    }
    let seed = chain_inner::<H>(*leaf, &proof[..inner], index);
    chain_border_right::<H>(seed, &proof[inner..]) == *root
}

/// Consistency verification as transparency-dev/merkle's `proof.VerifyConsistency` does it, except
/// that `from == 0` is refused (the ledger's rule: an empty tree proves nothing).
fn reference_consistency<H: TreeHasher>(
    from: u64,
    to: u64,
    old: &Hash,
    new: &Hash,
    proof: &[Hash],
) -> bool {
    if from == 0 || to < from {
        return false;
    }
    if from == to {
        return proof.is_empty() && old == new;
    }
    if proof.is_empty() {
        return false;
    }
    let index = from - 1;
    let inner = 64 - (index ^ (to - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones() as usize;
    let shift = from.trailing_zeros();
    // `shift < inner` whenever from < to.
    let inner = (inner - shift) as usize;
    let (seed, start) = if from == 1 << shift {
        (*old, 0)
    } else {
        (proof[0], 1)
    };
    if proof.len() != start + inner + border {
        return false;
    }
    let proof = &proof[start..];
    let mask = index >> shift;
    let hash1 = chain_border_right::<H>(
        chain_inner_right::<H>(seed, &proof[..inner], mask),
        &proof[inner..],
    );
    let hash2 = chain_border_right::<H>(
        chain_inner::<H>(seed, &proof[..inner], mask),
        &proof[inner..],
    );
    hash1 == *old && hash2 == *new
}

fn chain_inner<H: TreeHasher>(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            H::node(&seed, h)
        } else {
            H::node(h, &seed)
        };
    }
    seed
}

fn chain_inner_right<H: TreeHasher>(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = H::node(h, &seed);
        }
    }
    seed
}

fn chain_border_right<H: TreeHasher>(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = H::node(h, &seed);
    }
    seed
}

/// Reads the input front to back; past its end, zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        let mut b = [0; 2];
        let got = self.take(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        let got = self.take(8);
        b[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(b)
    }

    fn hash(&mut self) -> Hash {
        let mut h = [0; 32];
        let got = self.take(32);
        h[..got.len()].copy_from_slice(got);
        h
    }

    /// The rest as 32-byte hashes, and a shorter tail.
    fn proof(&mut self) -> (Vec<Hash>, &'a [u8]) {
        let rest = self.take(self.0.len());
        let chunks = rest.chunks_exact(32);
        let tail = chunks.remainder();
        let proof = chunks.map(|c| c.try_into().expect("32 bytes")).collect();
        (proof, tail)
    }
}
