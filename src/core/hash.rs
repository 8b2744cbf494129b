//! Tree hash functions (RFC 9162 section 2.1 domain separation), generic so the same tree code runs
//! the published SHA-256 RFC 6962 vectors and the ledger's BLAKE3 tree.
//!
//! Owns: the `TreeHasher` trait and its two implementations. Must not touch: storage, encoding.

/// A 32-byte tree hash (leaf, node or root).
pub type Hash = [u8; 32];

/// The hash function of a Merkle tree in RFC 9162 shape.
pub trait TreeHasher {
    /// Hash of the empty tree: `HASH("")`.
    #[must_use]
    fn empty() -> Hash;
    /// Leaf hash: `HASH(0x00 || leaf)`.
    #[must_use]
    fn leaf(data: &[u8]) -> Hash;
    /// Interior node hash: `HASH(0x01 || left || right)`.
    #[must_use]
    fn node(left: &Hash, right: &Hash) -> Hash;
}

/// BLAKE3-256, the ledger's tree hash (contract, docs/formats.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct Blake3;

impl TreeHasher for Blake3 {
    fn empty() -> Hash {
        // BLAKE3(""), RFC 9162 2.1.1 MTH({})
        *blake3::hash(b"").as_bytes()
    }

    fn leaf(data: &[u8]) -> Hash {
        // BLAKE3(0x00 || leaf), RFC 9162 2.1.1
        let mut h = blake3::Hasher::new();
        h.update(&[0x00]);
        h.update(data);
        *h.finalize().as_bytes()
    }

    fn node(left: &Hash, right: &Hash) -> Hash {
        // BLAKE3(0x01 || left || right), RFC 9162 2.1.1
        let mut buf = [0u8; 65];
        buf[0] = 0x01;
        buf[1..33].copy_from_slice(left);
        buf[33..].copy_from_slice(right);
        *blake3::hash(&buf).as_bytes()
    }
}

/// SHA-256, RFC 6962's hash: here so the published RFC 6962 proof vectors run against the same code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256;

impl TreeHasher for Sha256 {
    fn empty() -> Hash {
        use sha2::Digest;
        sha2::Sha256::digest(b"").into()
    }

    fn leaf(data: &[u8]) -> Hash {
        use sha2::Digest;
        // SHA-256(0x00 || leaf), RFC 6962 2.1
        let mut h = sha2::Sha256::new();
        h.update([0x00]);
        h.update(data);
        h.finalize().into()
    }

    fn node(left: &Hash, right: &Hash) -> Hash {
        use sha2::Digest;
        // SHA-256(0x01 || left || right), RFC 6962 2.1
        let mut h = sha2::Sha256::new();
        h.update([0x01]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }
}

/// Lowercase hex of a hash, as used in leaves and receipts ([`push_hex`] into a new string).
#[must_use]
pub fn to_hex(hash: &Hash) -> String {
    let mut out = Vec::with_capacity(64);
    push_hex(hash, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Appends the 64 lowercase hex digits of `hash` to `out`: a receipt's answer writes about 20 per
/// event, so a table of digit pairs into a fixed buffer (several times faster than an iterator of
/// chars).
pub fn push_hex(hash: &Hash, out: &mut Vec<u8>) {
    /// The two digits of each byte value.
    static PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
            b += 1;
        }
        pairs
    };
    let mut digits = [0u8; 64];
    for (pair, &b) in digits.chunks_exact_mut(2).zip(hash) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
    out.extend_from_slice(&digits);
}

/// Parses 64 hex digits into a hash.
pub fn from_hex(text: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The value of each lowercase hex digit; `0xFF` for every other byte.
static LOWER_HEX: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Parses exactly 64 lowercase hex digits, the form [`to_hex`] writes, into a hash. One table
/// lookup per digit and one check at the end (a bad digit's `0xFF` sets high bits no digit has).
#[must_use]
pub fn from_lower_hex(text: &str) -> Option<Hash> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (
            LOWER_HEX[usize::from(pair[0])],
            LOWER_HEX[usize::from(pair[1])],
        );
        bad |= high | low;
        *byte = (high << 4) | low;
    }
    (bad < 16).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_matches_the_hex_crate() {
        let h: Hash = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(to_hex(&h), hex::encode(h));
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_lower_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_lower_hex(&to_hex(&h).to_uppercase()), None);
        assert_eq!(from_lower_hex(&to_hex(&h)[1..]), None);
        assert_eq!(from_lower_hex(&format!("{}g", &to_hex(&h)[1..])), None);
    }

    /// Every byte in every digit's place: accepted exactly when it is a lowercase hex digit,
    /// and then read as `hex` reads it.
    #[test]
    fn lower_hex_takes_each_digit_and_refuses_every_other_byte() {
        let base = to_hex(&std::array::from_fn(|i| (i * 37 + 5) as u8));
        for at in [0, 1, 30, 63] {
            for b in 0..=255u8 {
                let mut text = base.clone().into_bytes();
                text[at] = b;
                let Ok(text) = String::from_utf8(text) else {
                    continue;
                };
                let want = b"0123456789abcdef"
                    .contains(&b)
                    .then(|| hex::decode(&text).unwrap().try_into().unwrap());
                assert_eq!(from_lower_hex(&text), want, "byte {b:#x} at {at}");
            }
        }
    }
}
