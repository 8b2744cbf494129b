//! C2SP signed notes, tlog checkpoints and Ed25519 note keys (c2sp.org/signed-note, /tlog-checkpoint).
//!
//! Owns: key encodings, key IDs, note signing, note parsing and verification, checkpoint bodies.
//! Must not touch: key generation randomness (seeds are passed in), files, clocks.
//!
//! Parsed and verified are different types: [`parse_note`] gives an [`UnverifiedNote`] (text and
//! claimed signatures); only [`UnverifiedNote::verify`] or [`open_checkpoint`] give verified values.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::Digest as _;

use super::hash::Hash;

/// Signature algorithm byte for Ed25519 in note keys and key IDs (c2sp.org/signed-note).
const ALG_ED25519: u8 = 0x01;
/// The em dash that starts a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// More signatures than this on one note is treated as an attack, as in Go's `golang.org/x/mod/sumdb/note`.
const MAX_SIGNATURES: usize = 100;
/// Upper bound on a note we will parse; a checkpoint is a few hundred bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// Errors of key and note handling. They surface as exit code 1 in `ledger verify` (a note that does
/// not verify) or 2 (a key file that does not parse), and as start-up failures in `ledger serve`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// A key name that is empty or has whitespace, `+` or control characters.
    #[error("invalid key name {0:?}: must be non-empty, without spaces or '+'")]
    InvalidName(String),
    /// A verifier key string that is not `<name>+<hex id>+<base64(0x01 || key)>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// A private key string that is not `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`.
    #[error("malformed private key: {0}")]
    MalformedPrivateKey(&'static str),
    /// The key ID in an encoded key is not the one its name and key give.
    #[error("key ID does not match the key")]
    KeyIdMismatch,
    /// Note text that breaks the signed-note grammar.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// A signature by the verifier's key (same name and ID) that does not verify.
    #[error("invalid signature by {0}")]
    InvalidSignature(String),
    /// No signature on the note is by the verifier's key.
    #[error("note has no signature by {0}")]
    NoSignatureByKey(String),
    /// Verified note text that is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// A checkpoint whose origin line is not the verifier key's name.
    #[error("checkpoint origin {origin:?} is not the key name {key_name:?}")]
    OriginMismatch {
        /// Origin line of the checkpoint.
        origin: String,
        /// Name of the key that verified it.
        key_name: String,
    },
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(NoteError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Key ID = first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key), c2sp.org/signed-note.
#[must_use]
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The public half: `<name>+<hex key ID>+<base64(0x01 || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses the verifier-key text form, checking that the ID matches the name and key.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let text = text.trim_end_matches(['\n', '\r']);
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::MalformedVerifierKey("want name+keyid+key"));
        };
        check_name(name)?;
        let id = parse_id(id_hex).ok_or(NoteError::MalformedVerifierKey(
            "key ID is not 8 hex digits",
        ))?;
        let raw = B64
            .decode(key_b64)
            .map_err(|_| NoteError::MalformedVerifierKey("key is not standard base64"))?;
        let [ALG_ED25519, key @ ..] = raw.as_slice() else {
            return Err(NoteError::MalformedVerifierKey(
                "not an Ed25519 key (want 0x01 prefix)",
            ));
        };
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::MalformedVerifierKey("Ed25519 key is not 32 bytes"))?;
        if key_id(name, &key) != id {
            return Err(NoteError::KeyIdMismatch);
        }
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| NoteError::MalformedVerifierKey("not a valid Ed25519 point"))?;
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key name (for our logs, the checkpoint origin).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID.
    #[must_use]
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The text form.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(raw))
    }

    /// Verifies an Ed25519 signature over `message` (strict: no malleable encodings).
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

fn parse_id(hex_text: &str) -> Option<[u8; 4]> {
    if hex_text.len() != 8 {
        return None;
    }
    let mut id = [0u8; 4];
    hex::decode_to_slice(hex_text, &mut id).ok()?;
    Some(id)
}

/// The private half: `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || 32-byte seed)>`.
#[derive(Clone)]
pub struct SignerKey {
    verifier: VerifierKey,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        f.debug_struct("SignerKey")
            .field("verifier", &self.verifier.encode())
            .finish()
    }
}

impl SignerKey {
    /// A key named `name` from a 32-byte Ed25519 seed (the caller supplies the randomness).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key();
        Ok(Self {
            verifier: VerifierKey {
                name: name.to_owned(),
                id: key_id(name, public.as_bytes()),
                key: public,
            },
            key,
        })
    }

    /// Parses the private-key text form, checking the key ID.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let text = text.trim_end_matches(['\n', '\r']);
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedPrivateKey(
                "missing PRIVATE+KEY+ prefix",
            ))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(seed_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::MalformedPrivateKey(
                "want PRIVATE+KEY+name+keyid+seed",
            ));
        };
        let id =
            parse_id(id_hex).ok_or(NoteError::MalformedPrivateKey("key ID is not 8 hex digits"))?;
        let raw = B64
            .decode(seed_b64)
            .map_err(|_| NoteError::MalformedPrivateKey("seed is not standard base64"))?;
        let [ALG_ED25519, seed @ ..] = raw.as_slice() else {
            return Err(NoteError::MalformedPrivateKey(
                "not an Ed25519 key (want 0x01 prefix)",
            ));
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::MalformedPrivateKey("seed is not 32 bytes"))?;
        let key = Self::from_seed(name, &seed)?;
        if key.verifier.id != id {
            return Err(NoteError::KeyIdMismatch);
        }
        Ok(key)
    }

    /// The private-key text form (for the 0600 key file only).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.verifier.name,
            hex::encode(self.verifier.id),
            B64.encode(raw)
        )
    }

    /// The matching verifier key.
    #[must_use]
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Signs `message` bytes (Ed25519 is deterministic: same key and message, same signature).
    #[must_use]
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Signs note `text` (which must end in a newline) and returns the whole signed note:
    /// `text`, a blank line, and `— <name> <base64(key ID || signature)>`.
    #[must_use]
    pub fn sign_note(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        format!("{text}\n{}", self.signature_line(text))
    }

    /// `— <name> <base64(key ID || signature over text)>` and a newline.
    fn signature_line(&self, text: &str) -> String {
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.verifier.id);
        blob.extend_from_slice(&self.sign_bytes(text.as_bytes()));
        format!("{SIG_PREFIX}{} {}\n", self.verifier.name, B64.encode(blob))
    }

    /// Adds this key's signature to a signed note (a cosignature: during a key rotation the log
    /// signs with its old and new keys; c2sp.org/signed-note allows any number of signatures).
    ///
    /// # Errors
    /// If `note` is not a signed note.
    pub fn cosign(&self, note: &str) -> Result<String, NoteError> {
        let parsed = parse_note(note)?;
        Ok(format!("{note}{}", self.signature_line(&parsed.text)))
    }
}

/// One signature line of a note, as claimed (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name on the line.
    pub name: String,
    /// Key ID (first 4 bytes of the blob).
    pub id: [u8; 4],
    /// The signature bytes after the key ID.
    pub signature: Vec<u8>,
}

/// A note split into text and claimed signatures. Nothing about it is trusted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

/// Splits a signed note into text and signature lines (grammar only, no cryptography).
pub fn parse_note(note: &str) -> Result<UnverifiedNote, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::MalformedNote("note too large"));
    }
    if note.chars().any(|c| c.is_ascii_control() && c != '\n') {
        return Err(NoteError::MalformedNote("control character in note"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::MalformedNote("no blank line before signatures"))?;
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    if !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote(
            "signature block does not end in a newline",
        ));
    }
    let mut signatures = Vec::new();
    for line in sigs[..sigs.len() - 1].split('\n') {
        if signatures.len() == MAX_SIGNATURES {
            return Err(NoteError::MalformedNote("too many signatures"));
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::MalformedNote(
                "signature line does not start with an em dash",
            ))?;
        let (name, blob) = rest.split_once(' ').ok_or(NoteError::MalformedNote(
            "signature line has no space before the signature",
        ))?;
        check_name(name).map_err(|_| NoteError::MalformedNote("bad key name on signature line"))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| NoteError::MalformedNote("signature is not standard base64"))?;
        if blob.len() < 5 {
            return Err(NoteError::MalformedNote("signature too short"));
        }
        signatures.push(NoteSignature {
            name: name.to_owned(),
            id: [blob[0], blob[1], blob[2], blob[3]],
            signature: blob[4..].to_vec(),
        });
    }
    Ok(UnverifiedNote {
        text: text.to_owned(),
        signatures,
    })
}

impl UnverifiedNote {
    /// Checks the note against `key`: a signature with the key's name and ID must be present and valid.
    /// Signatures by other keys are ignored (a witness may have cosigned), as in c2sp.org/signed-note.
    pub fn verify(&self, key: &VerifierKey) -> Result<VerifiedText, NoteError> {
        let mut found = false;
        for sig in self
            .signatures
            .iter()
            .filter(|s| s.name == key.name && s.id == key.id)
        {
            let ok = <&[u8; 64]>::try_from(sig.signature.as_slice())
                .is_ok_and(|bytes| key.verify_bytes(self.text.as_bytes(), bytes));
            if !ok {
                return Err(NoteError::InvalidSignature(key.name.clone()));
            }
            found = true;
        }
        if !found {
            return Err(NoteError::NoSignatureByKey(key.name.clone()));
        }
        Ok(VerifiedText(self.text.clone()))
    }
}

/// Note text whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedText(String);

impl VerifiedText {
    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of a tlog checkpoint: `<origin>\n<size>\n<base64 root>\n`.
#[must_use]
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// A checkpoint whose signature by the log's key has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Origin line (the log's name, equal to the key name).
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash of the tree of that size.
    pub root: Hash,
    /// The signed note, exactly as received.
    pub note: String,
}

/// Verifies a signed checkpoint with `key` and parses its body (c2sp.org/tlog-checkpoint).
/// Extension lines after the root are allowed and ignored; the origin must be the key name.
pub fn open_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
    let verified = parse_note(note)?.verify(key)?;
    let mut lines = verified.as_str().split_terminator('\n');
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or(NoteError::MalformedCheckpoint("empty origin line"))?;
    let size_text = lines
        .next()
        .ok_or(NoteError::MalformedCheckpoint("missing tree size"))?;
    if size_text.is_empty()
        || !size_text.bytes().all(|b| b.is_ascii_digit())
        || (size_text.len() > 1 && size_text.starts_with('0'))
    {
        return Err(NoteError::MalformedCheckpoint(
            "tree size is not a decimal number",
        ));
    }
    let size = size_text
        .parse::<u64>()
        .map_err(|_| NoteError::MalformedCheckpoint("tree size out of range"))?;
    let root_text = lines
        .next()
        .ok_or(NoteError::MalformedCheckpoint("missing root hash"))?;
    let root: Hash = B64
        .decode(root_text)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or(NoteError::MalformedCheckpoint(
            "root is not 32 bytes of standard base64",
        ))?;
    if lines.any(str::is_empty) {
        return Err(NoteError::MalformedCheckpoint("empty extension line"));
    }
    if origin != key.name {
        return Err(NoteError::OriginMismatch {
            origin: origin.to_owned(),
            key_name: key.name.clone(),
        });
    }
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        note: note.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_open_round_trips_and_rejects_tampering() {
        let key = SignerKey::from_seed("ledger.test/log", &[7u8; 32]).unwrap();
        let note = key.sign_note(&checkpoint_body("ledger.test/log", 5, &[9u8; 32]));
        let cp = open_checkpoint(&note, key.verifier()).unwrap();
        assert_eq!((cp.size, cp.root), (5, [9u8; 32]));

        let tampered = note.replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            open_checkpoint(&tampered, key.verifier()),
            Err(NoteError::InvalidSignature(_))
        ));
        let other = SignerKey::from_seed("ledger.test/log", &[8u8; 32]).unwrap();
        assert!(matches!(
            open_checkpoint(&note, other.verifier()),
            Err(NoteError::NoSignatureByKey(_))
        ));
    }

    #[test]
    fn key_text_forms_round_trip() {
        let key = SignerKey::from_seed("a.example/x", &[1u8; 32]).unwrap();
        let again = SignerKey::parse(&key.encode()).unwrap();
        assert_eq!(again.verifier(), key.verifier());
        assert_eq!(
            VerifierKey::parse(&key.verifier().encode()).unwrap(),
            *key.verifier()
        );
        assert!(matches!(
            SignerKey::from_seed("bad name", &[1u8; 32]),
            Err(NoteError::InvalidName(_))
        ));
        let wrong_id = key.verifier().encode().replacen('+', "+0", 1);
        assert!(VerifierKey::parse(&wrong_id).is_err());
    }

    #[test]
    fn origin_must_be_the_key_name() {
        let key = SignerKey::from_seed("log.a", &[3u8; 32]).unwrap();
        let note = key.sign_note(&checkpoint_body("log.b", 1, &[0u8; 32]));
        assert!(matches!(
            open_checkpoint(&note, key.verifier()),
            Err(NoteError::OriginMismatch { .. })
        ));
    }
}
