//! Signed notes, checkpoints and note keys (`core::note`), on arbitrary text. Never a panic; and:
//!
//! - keys: a parsed verifier or signer key encodes to text that parses to the same key;
//! - notes: a parsed note re-serializes to exactly the input (the grammar loses nothing), a note
//!   that verifies under a key gives back its text, and a checkpoint that opens is the body
//!   `checkpoint_body` writes for its origin, size and root, plus extension lines;
//! - signing: the input as note text, signed, parses back to the same text and verifies under the
//!   signer's key only; cosigned, under both; with its text changed, under neither; and
//!   a signed checkpoint body opens to the origin, size and root it was made of.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ledger::core::note::{
    MAX_NOTE_BYTES, NoteError, SignerKey, UnverifiedNote, VerifierKey, checkpoint_body,
    open_checkpoint, parse_note,
};
use libfuzzer_sys::fuzz_target;

/// The public test key of tests/vectors/signed-note, so the vector checkpoints verify.
static LOG_KEY: LazyLock<SignerKey> = LazyLock::new(|| {
    SignerKey::parse(
        "PRIVATE+KEY+example.com/log/testdata+33d7b496+AeymY/SZAX0jZcJ8enZ5FY1Dz+wTML2yWSkK+9DSF3eg",
    )
    .expect("the vectors' signing key parses")
});
/// A second key, as a witness cosigning.
static WITNESS_KEY: LazyLock<SignerKey> =
    LazyLock::new(|| SignerKey::from_seed("fuzz.test/witness", &[9; 32]).expect("valid name"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    keys(text);
    let log = LOG_KEY.verifier();
    match parse_note(text) {
        Ok(note) => {
            assert_eq!(serialize(&note), text, "parse_note lost or changed bytes");
            for key in [log, WITNESS_KEY.verifier()] {
                if let Ok(verified) = note.verify(key) {
                    assert_eq!(verified.as_str(), note.text);
                }
            }
            if let Ok(checkpoint) = open_checkpoint(text, log) {
                assert!(note.verify(log).is_ok());
                assert_eq!(checkpoint.note, text);
                assert_eq!(checkpoint.origin, log.name());
                let body = checkpoint_body(&checkpoint.origin, checkpoint.size, &checkpoint.root);
                assert!(
                    note.text.starts_with(&body),
                    "checkpoint body is not canonical"
                );
            }
        }
        Err(e) => {
            assert_eq!(open_checkpoint(text, log).map(|_| ()), Err(e));
        }
    }
    sign(text);
});

/// Key text: whatever parses re-encodes to an equal key.
fn keys(text: &str) {
    if let Ok(key) = VerifierKey::parse(text) {
        assert_eq!(VerifierKey::parse(&key.encode()).as_ref(), Ok(&key));
    }
    if let Ok(key) = SignerKey::parse(text) {
        let again = SignerKey::parse(&key.encode()).expect("an encoded key parses");
        assert_eq!(again.verifier(), key.verifier());
        assert_eq!(again.encode(), key.encode());
    }
}

/// A note as text: the signed text, a blank line, one line per signature.
fn serialize(note: &UnverifiedNote) -> String {
    let mut out = format!("{}\n", note.text);
    for sig in &note.signatures {
        let mut blob = sig.id.to_vec();
        blob.extend_from_slice(&sig.signature);
        out.push_str(&format!("\u{2014} {} {}\n", sig.name, B64.encode(blob)));
    }
    out
}

/// Signs `text` as note text when it can be one (ends in a newline, no other control characters).
fn sign(text: &str) {
    if !text.ends_with('\n')
        || text.len() > MAX_NOTE_BYTES / 2
        || text.chars().any(|c| c.is_ascii_control() && c != '\n')
    {
        return;
    }
    let (log, witness) = (LOG_KEY.verifier(), WITNESS_KEY.verifier());
    let signed = LOG_KEY.sign_note(text);
    let note = parse_note(&signed).expect("a signed note parses");
    assert_eq!(note.text, text);
    assert!(note.verify(log).is_ok());
    assert_eq!(
        note.verify(witness),
        Err(NoteError::NoSignatureByKey(witness.name().to_owned()))
    );
    let cosigned = WITNESS_KEY.cosign(&signed).expect("a signed note cosigns");
    let both = parse_note(&cosigned).expect("a cosigned note parses");
    assert_eq!(both.text, text);
    assert!(both.verify(log).is_ok() && both.verify(witness).is_ok());

    // One more character in front of the text: no signature holds.
    let tampered = parse_note(&format!("x{cosigned}")).expect("same grammar");
    assert_eq!(tampered.text, format!("x{text}"));
    assert!(tampered.verify(log).is_err() && tampered.verify(witness).is_err());

    match open_checkpoint(&signed, log) {
        Ok(checkpoint) => {
            let body = checkpoint_body(log.name(), checkpoint.size, &checkpoint.root);
            assert!(text.starts_with(&body));
            let again = open_checkpoint(&cosigned, log).expect("a cosignature keeps it valid");
            assert_eq!(
                (again.origin, again.size, again.root),
                (checkpoint.origin, checkpoint.size, checkpoint.root)
            );
        }
        Err(_) => {
            // A body exactly as `checkpoint_body` writes it must open once signed.
            if let Some((size, root)) = parse_body(text, log.name()) {
                assert_ne!(text, checkpoint_body(log.name(), size, &root));
            }
        }
    }
}

/// Origin, size and root of a bare checkpoint body `<origin>\n<size>\n<base64 root>\n`.
fn parse_body(text: &str, origin: &str) -> Option<(u64, [u8; 32])> {
    let rest = text.strip_prefix(origin)?.strip_prefix('\n')?;
    let (size, rest) = rest.split_once('\n')?;
    let (root, _) = rest.split_once('\n')?;
    let size = size.parse().ok()?;
    let root = B64.decode(root).ok()?.try_into().ok()?;
    Some((size, root))
}
