//! Golden vectors in `tests/vectors/` (copied from the shared set, see its README): every file is
//! walked; `wantErr` cases must be rejected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ledger::core::hash::{Blake3, Hash, Sha256, TreeHasher};
use ledger::core::merkle::{
    Frontier, NodeId, consistency_proof, inclusion_proof, verify_consistency,
    verify_consistency_bytes, verify_inclusion, verify_inclusion_bytes,
};
use ledger::core::note::{NoteError, SignerKey, VerifierKey, checkpoint_body, open_checkpoint};
use serde_json::Value;

fn dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(rel)
}

fn json_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Decodes a base64 hash of the BLAKE3 vectors (always 32 bytes there).
fn hash(v: &Value) -> Option<Hash> {
    B64.decode(v.as_str()?).ok()?.try_into().ok()
}

fn hashes(v: &Value) -> Option<Vec<Hash>> {
    v.as_array().unwrap().iter().map(hash).collect()
}

/// Raw bytes of a base64 field of the RFC 6962 vectors (lengths are the verifier's to check).
fn raw(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

/// A raw proof list; the Go-generated vectors write an empty proof as `null`.
fn raw_list(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .map(|a| a.iter().map(raw).collect())
        .unwrap_or_default()
}

#[test]
fn rfc6962_sha256_inclusion_vectors() {
    let files = json_files(&dir("rfc6962-sha256/inclusion"));
    assert!(files.len() > 50, "vectors missing: {}", files.len());
    for path in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let proof = raw_list(&v["proof"]);
        let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
        let result = verify_inclusion_bytes::<Sha256>(
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
            &raw(&v["leafHash"]),
            &proof,
            &raw(&v["root"]),
        )
        .is_ok();
        assert_eq!(result, !want_err, "{}", path.display());
    }
}

#[test]
fn rfc6962_sha256_consistency_vectors() {
    let files = json_files(&dir("rfc6962-sha256/consistency"));
    assert!(files.len() > 50, "vectors missing: {}", files.len());
    for path in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let proof = raw_list(&v["proof"]);
        let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
        let result = verify_consistency_bytes::<Sha256>(
            v["size1"].as_u64().unwrap(),
            v["size2"].as_u64().unwrap(),
            &raw(&v["root1"]),
            &raw(&v["root2"]),
            &proof,
        )
        .is_ok();
        assert_eq!(result, !want_err, "{}", path.display());
    }
}

#[test]
fn blake3_tree8_roots_and_proofs_match_generated_ones() {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir("blake3/tree8.json")).unwrap()).unwrap();
    let leaves: Vec<Vec<u8>> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect();
    let mut frontier = Frontier::<Blake3>::empty();
    let mut store: HashMap<NodeId, Hash> = HashMap::new();
    let mut out = Vec::new();
    assert_eq!(Some(Blake3::empty()), hash(&v["roots"]["0"]));
    assert_eq!(Some(frontier.root()), hash(&v["roots"]["0"]));
    for (i, leaf) in leaves.iter().enumerate() {
        let leaf_hash = Blake3::leaf(leaf);
        assert_eq!(Some(leaf_hash), hash(&v["leaf_hashes"][i]), "leaf {i}");
        out.clear();
        frontier.append(leaf_hash, &mut out);
        store.extend(out.iter().copied());
        assert_eq!(
            Some(frontier.root()),
            hash(&v["roots"][(i + 1).to_string()]),
            "root {}",
            i + 1
        );
    }
    let inclusion = v["inclusion"].as_array().unwrap();
    assert!(!inclusion.is_empty());
    for case in inclusion {
        let (index, size) = (
            case["leafIdx"].as_u64().unwrap(),
            case["treeSize"].as_u64().unwrap(),
        );
        let want = hashes(&case["proof"]).unwrap();
        assert_eq!(
            inclusion_proof::<Blake3>(index, size, &store).unwrap(),
            want,
            "{index}/{size}"
        );
        let (leaf, root) = (
            hash(&case["leafHash"]).unwrap(),
            hash(&case["root"]).unwrap(),
        );
        verify_inclusion::<Blake3>(index, size, &leaf, &want, &root).unwrap();
    }
    let consistency = v["consistency"].as_array().unwrap();
    assert!(!consistency.is_empty());
    for case in consistency {
        let (m, n) = (
            case["size1"].as_u64().unwrap(),
            case["size2"].as_u64().unwrap(),
        );
        let want = hashes(&case["proof"]).unwrap();
        assert_eq!(
            consistency_proof::<Blake3>(m, n, &store).unwrap(),
            want,
            "{m}/{n}"
        );
        let (r1, r2) = (hash(&case["root1"]).unwrap(), hash(&case["root2"]).unwrap());
        verify_consistency::<Blake3>(m, n, &r1, &r2, &want).unwrap();
    }
}

const VERIFIER: &str =
    "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx";
const SIGNER: &str =
    "PRIVATE+KEY+example.com/log/testdata+33d7b496+AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg";

fn signed_notes() -> Vec<(PathBuf, String)> {
    let mut out: Vec<_> = std::fs::read_dir(dir("signed-note"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("checkpoint.")
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 3);
    out
}

#[test]
fn signed_note_vectors_verify_and_our_signatures_are_identical() {
    let verifier = VerifierKey::parse(VERIFIER).unwrap();
    let signer = SignerKey::parse(SIGNER).unwrap();
    assert_eq!(signer.verifier(), &verifier);
    assert_eq!(verifier.encode(), VERIFIER);
    assert_eq!(signer.encode(), SIGNER);
    for (path, note) in signed_notes() {
        let cp =
            open_checkpoint(&note, &verifier).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let suffix: u64 = path.extension().unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(cp.size, suffix);
        assert_eq!(cp.origin, "example.com/log/testdata");
        // Ed25519 is deterministic: signing the same body must reproduce the file byte for byte.
        assert_eq!(
            signer.sign_note(&checkpoint_body(&cp.origin, cp.size, &cp.root)),
            note
        );
    }
    let cp15 = open_checkpoint(&signed_notes()[2].1, &verifier).unwrap();
    assert_eq!(
        B64.encode(cp15.root),
        "rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs="
    );
}

#[test]
fn signed_note_vectors_reject_any_changed_byte() {
    let verifier = VerifierKey::parse(VERIFIER).unwrap();
    for (path, note) in signed_notes() {
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut changed = bytes.to_vec();
                changed[i] ^= bit;
                let Ok(text) = String::from_utf8(changed) else {
                    continue;
                };
                assert!(
                    open_checkpoint(&text, &verifier).is_err(),
                    "{}: flipping {bit:#x} at byte {i} was accepted",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn signed_note_vectors_reject_other_keys() {
    let (_, note) = &signed_notes()[2];
    let other_name = SignerKey::from_seed("example.com/log/other", &[5; 32]).unwrap();
    assert!(matches!(
        open_checkpoint(note, other_name.verifier()),
        Err(NoteError::NoSignatureByKey(_))
    ));
    // Same name, different key: the ID differs, so no signature is by this key.
    let same_name = SignerKey::from_seed("example.com/log/testdata", &[5; 32]).unwrap();
    assert!(matches!(
        open_checkpoint(note, same_name.verifier()),
        Err(NoteError::NoSignatureByKey(_))
    ));
    // A verifier key whose ID was edited does not parse.
    assert!(matches!(
        VerifierKey::parse(&VERIFIER.replace("33d7b496", "33d7b497")),
        Err(NoteError::KeyIdMismatch)
    ));
}
