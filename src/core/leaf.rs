//! The leaf (contract, docs/formats.md): the RFC 8785 canonical JSON of
//! `{"event":{..},"index":I,"ingested_at":"..Z","prev_leaf_hash":"<hex>","source":"..","v":1}`.
//!
//! Owns: leaf bytes and their parsing, `ingested_at` text. Must not touch: clocks (time is passed in).
//!
//! The sequencer builds leaves on its hot path without re-parsing the event: JCS orders members by
//! their UTF-16 code units, which for these six ASCII keys is the order above, and the event is
//! already canonical, so the leaf is a concatenation. A property test holds it equal to full JCS.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::hash::{Hash, push_hex, to_hex};
use super::jcs::{self, CheckError, MAX_NESTING, Notes, Outline, unescape, write_string};

/// Leaf format version.
pub const LEAF_VERSION: u64 = 1;

/// The chain link of index 0: 64 zeros.
pub const GENESIS_PREV: Hash = [0u8; 32];

/// Formats microseconds since the Unix epoch as RFC 3339 UTC with exactly six fractional digits and
/// `Z`, e.g. `2026-11-21T15:06:00.123456Z`. Returns `None` outside years 0000-9999.
#[must_use]
pub fn format_micros(micros: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()?;
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    ))
}

/// Parses an RFC 3339 timestamp (any offset) into microseconds since the epoch, truncating below.
///
/// Accepts everything the schema's `date-time` accepts: lowercase `t`/`z`, and a leap second
/// (`:60`) on any day, which is read as the last microsecond of that minute (Unix time has no leap
/// seconds). An event the schema admits must always be readable here, or an export of its period
/// would fail forever.
pub fn parse_micros(text: &str) -> Option<i64> {
    parse_utc_micros(text.as_bytes()).or_else(|| parse_rfc3339_micros(text))
}

/// [`parse_micros`] for every RFC 3339 form.
fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let upper = text.to_ascii_uppercase();
    if let Ok(t) = time::OffsetDateTime::parse(&upper, rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok();
    }
    // YYYY-MM-DDTHH:MM:60[.frac](Z|+HH:MM): retry as :59 and clamp to the end of that second.
    if upper.get(16..19) != Some(":60") {
        return None;
    }
    let frac_end = upper[19..]
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .map_or(upper.len(), |i| 19 + i);
    let retry = format!("{}:59{}", &upper[..16], &upper[frac_end..]);
    let t = time::OffsetDateTime::parse(&retry, rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000) + 999_999).ok()
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`, as every leaf's `ingested_at` and most events'
/// `occurred_at` are, read without the general parser (it allocates, and export and verify read
/// two timestamps per row). `None` sends anything else, leap seconds included, to the general path.
fn parse_utc_micros(b: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b.last() != Some(&b'Z') {
        return None;
    }
    let micros = match b.len() {
        20 => 0,
        n @ 22..=27 if b[19] == b'.' => digits(20..n - 1)? * 10u32.pow((27 - n) as u32),
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(digits(0..4)?).ok()?,
        month,
        u8::try_from(digits(8..10)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms_micro(
        u8::try_from(digits(11..13)?).ok()?,
        u8::try_from(digits(14..16)?).ok()?,
        u8::try_from(digits(17..19)?).ok()?,
        micros,
    )
    .ok()?;
    let nanos = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp_nanos();
    i64::try_from(nanos / 1000).ok()
}

/// A source's detached Ed25519 signature over the event's canonical (RFC 8785) bytes, kept in the
/// leaf as `origin_signature` (absent when the source does not sign).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSignature {
    /// The signing key's ID: 8 lowercase hex digits, the C2SP key ID of the source's
    /// verifier key (`name+id+key`, as `ledger keygen` writes it).
    pub key_id: String,
    /// The 64-byte Ed25519 signature, standard base64 with padding.
    pub signature: String,
}

impl OriginSignature {
    /// The key ID as bytes, if it is 8 lowercase hex digits.
    #[must_use]
    pub fn key_id_bytes(&self) -> Option<[u8; 4]> {
        let mut id = [0u8; 4];
        let lower = self
            .key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (lower && hex::decode_to_slice(&self.key_id, &mut id).is_ok()).then_some(id)
    }

    /// The signature bytes, if it is canonical base64 of 64 bytes.
    #[must_use]
    pub fn signature_bytes(&self) -> Option<[u8; 64]> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .ok()?;
        let sig: [u8; 64] = bytes.try_into().ok()?;
        (base64::engine::general_purpose::STANDARD.encode(sig) == self.signature).then_some(sig)
    }

    /// Whether both fields are in their contract form.
    #[must_use]
    pub fn is_well_formed(&self) -> bool {
        self.key_id_bytes().is_some() && self.signature_bytes().is_some()
    }
}

/// Everything of a leaf except the event, which arrives as canonical bytes.
#[derive(Debug, Clone, Copy)]
pub struct LeafHeader<'a> {
    /// Position in the log.
    pub index: u64,
    /// `ingested_at`, as formatted by [`format_micros`].
    pub ingested_at: &'a str,
    /// Authenticated source name.
    pub source: &'a str,
    /// Leaf hash of entry `index - 1` ([`GENESIS_PREV`] for 0).
    pub prev_leaf_hash: &'a Hash,
    /// The source's signature over the event, if it signs.
    pub origin_signature: Option<&'a OriginSignature>,
}

/// The leaf bytes for `header` and an event already in RFC 8785 form (`event_jcs`).
#[must_use]
pub fn encode_leaf(header: &LeafHeader<'_>, event_jcs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event_jcs.len() + 200);
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(event_jcs);
    out.extend_from_slice(b",\"index\":");
    out.extend_from_slice(itoa::Buffer::new().format(header.index).as_bytes());
    out.extend_from_slice(b",\"ingested_at\":");
    write_string(header.ingested_at, &mut out);
    if let Some(sig) = header.origin_signature {
        // JCS order: "ingested_at" < "origin_signature" < "prev_leaf_hash"; key_id < signature.
        out.extend_from_slice(b",\"origin_signature\":{\"key_id\":");
        write_string(&sig.key_id, &mut out);
        out.extend_from_slice(b",\"signature\":");
        write_string(&sig.signature, &mut out);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"prev_leaf_hash\":\"");
    push_hex(header.prev_leaf_hash, &mut out);
    out.extend_from_slice(b"\",\"source\":");
    write_string(header.source, &mut out);
    out.extend_from_slice(b",\"v\":1}");
    out
}

/// Whether `leaf`, written by [`encode_leaf`], holds the event whose canonical bytes are `jcs` (one
/// JSON object, as [`encode_leaf`] takes). Compares the bytes in place, without parsing: a JSON
/// object cannot be a prefix of another, so if `jcs` starts right after `{"event":` and the next
/// member's comma follows it, it is the leaf's event.
#[must_use]
pub fn leaf_holds_event(leaf: &[u8], jcs: &[u8]) -> bool {
    const START: &[u8] = b"{\"event\":";
    leaf.strip_prefix(START)
        .and_then(|rest| rest.strip_prefix(jcs))
        .is_some_and(|rest| rest.first() == Some(&b','))
}

/// A leaf read back from its bytes, borrowing them. [`Leaf::parse`] proves the bytes are the
/// contract's canonical encoding, so every field here is in its contract form. `F` is what the
/// parse noted of the event's fields: an [`Outline`] of them all, or only those in a fixed table
/// ([`Leaf::parse_with`], [`jcs::Picks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf<'a, F = Outline<'a>> {
    /// Position in the log.
    pub index: u64,
    /// Ingestion time, RFC 3339 UTC microseconds (as [`format_micros`] writes it).
    pub ingested_at: &'a str,
    /// `ingested_at` in microseconds since the epoch.
    pub ingested_micros: i64,
    /// Authenticated source name.
    pub source: Cow<'a, str>,
    /// Leaf hash of the previous entry ([`GENESIS_PREV`] for entry 0).
    pub prev_leaf_hash: Hash,
    /// The source's signature over the event's canonical bytes, if it signs.
    pub origin_signature: Option<OriginSignature>,
    /// The event's canonical (RFC 8785) bytes: the slice of the leaf between `{"event":` and the
    /// header fields, which is what a source signs.
    pub event: &'a [u8],
    /// The event's string and boolean fields, top level and one level down, as the parse noted
    /// them.
    pub fields: F,
}

/// Why bytes are not a contract leaf.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeafError {
    /// Not the JSON object shape of a leaf.
    #[error("leaf is not valid leaf JSON: {0}")]
    Json(String),
    /// Valid JSON, but not byte-identical to its canonical encoding.
    #[error("leaf bytes are not in canonical (RFC 8785) form")]
    NotCanonical,
    /// A field outside its contract form.
    #[error("leaf field {0} is malformed")]
    Field(&'static str),
}

impl From<CheckError> for LeafError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Syntax(_) => Self::Json(e.to_string()),
            CheckError::NotCanonical(_) => Self::NotCanonical,
        }
    }
}

/// Nesting allowed inside `event`: `serde_json`'s limit less the leaf object around it, so a
/// leaf parses here exactly when it parses as JSON.
const EVENT_NESTING: usize = MAX_NESTING - 1;

/// Reads a leaf's fixed members in their one canonical order.
struct Members<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Members<'a> {
    /// Consumes `lit` if the text continues with it.
    fn take(&mut self, lit: &str) -> bool {
        let found = self.text[self.pos..].starts_with(lit);
        if found {
            self.pos += lit.len();
        }
        found
    }

    /// Consumes the member name `lit` (with its punctuation) or says which member was expected.
    fn expect(&mut self, lit: &str) -> Result<(), LeafError> {
        if self.take(lit) {
            Ok(())
        } else if self.text.as_bytes()[self.pos..]
            .iter()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .take(lit.len())
            .eq(lit.as_bytes())
        {
            // The member is there, spaced out: JSON, but not canonical.
            Err(LeafError::NotCanonical)
        } else {
            Err(LeafError::Json(format!(
                "expected {lit} at byte {} (members in canonical order, no others)",
                self.pos
            )))
        }
    }

    /// A canonical string's raw body.
    fn string(&mut self) -> Result<&'a str, LeafError> {
        let (end, raw) = jcs::check_string_at(self.text, self.pos)?;
        self.pos = end;
        Ok(raw)
    }

    /// `index`: a canonical unsigned integer that fits in 64 bits.
    fn index(&mut self) -> Result<u64, LeafError> {
        let digits = self.text.as_bytes()[self.pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.text[self.pos..self.pos + digits];
        self.pos += digits;
        // Canonical: digits only (taken above), and no leading zero unless the number is 0.
        match text.parse::<u64>() {
            Ok(n) if !(text.len() > 1 && text.starts_with('0')) => Ok(n),
            _ => Err(LeafError::Field("index")),
        }
    }
}

impl<'a> Leaf<'a> {
    /// Parses leaf bytes, requiring the exact canonical encoding of the contract. One pass, no
    /// JSON tree: the header members have one fixed order and spelling, and the event is checked
    /// canonical by [`jcs::check_at`], which outlines its fields on the way.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, LeafError> {
        Self::parse_with(bytes, Outline::default())
    }
}

impl<'a, F: Notes<'a>> Leaf<'a, F> {
    /// [`Leaf::parse`], the event's fields noted by `fields` instead of an outline.
    pub fn parse_with(bytes: &'a [u8], mut fields: F) -> Result<Self, LeafError> {
        let text = std::str::from_utf8(bytes).map_err(|e| LeafError::Json(e.to_string()))?;
        let mut m = Members { text, pos: 0 };
        m.expect("{\"event\":")?;
        let end = jcs::check_at_with(text, m.pos, EVENT_NESTING, &mut fields)?;
        let event = &bytes[m.pos..end];
        m.pos = end;
        m.expect(",\"index\":")?;
        let index = m.index()?;
        m.expect(",\"ingested_at\":")?;
        let ingested_at = m.string()?;
        // `format_micros` writes 27 bytes, `.` and six digits; the fast parser takes exactly those
        // with every field in range, so what it reads formats back to the same text.
        let ingested_micros = Some(ingested_at.as_bytes())
            .filter(|b| b.len() == 27 && b[19] == b'.')
            .and_then(parse_utc_micros)
            .ok_or(LeafError::Field("ingested_at"))?;
        let origin_signature = if m.take(",\"origin_signature\":{\"key_id\":") {
            let key_id = unescape(m.string()?).into_owned();
            m.expect(",\"signature\":")?;
            let signature = unescape(m.string()?).into_owned();
            m.expect("}")?;
            let sig = OriginSignature { key_id, signature };
            if !sig.is_well_formed() {
                return Err(LeafError::Field("origin_signature"));
            }
            Some(sig)
        } else {
            None
        };
        m.expect(",\"prev_leaf_hash\":")?;
        let prev = m.string()?;
        let prev_leaf_hash =
            super::hash::from_lower_hex(prev).ok_or(LeafError::Field("prev_leaf_hash"))?;
        m.expect(",\"source\":")?;
        let source = unescape(m.string()?);
        m.expect(",\"v\":")?;
        if !m.take("1}") {
            return Err(LeafError::Field("v"));
        }
        if m.pos != bytes.len() {
            return Err(LeafError::Json(format!("trailing bytes at {}", m.pos)));
        }
        Ok(Self {
            index,
            ingested_at,
            ingested_micros,
            source,
            prev_leaf_hash,
            origin_signature,
            event,
            fields,
        })
    }
}

/// A leaf's fields as [`parse_by_reencoding`] reads them, the event as a tree: what property
/// tests and the `jcs` fuzz target compare with [`Leaf::to_reference`].
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceLeaf {
    pub index: u64,
    pub ingested_at: String,
    pub source: String,
    pub prev_leaf_hash: Hash,
    pub origin_signature: Option<OriginSignature>,
    pub event: serde_json::Value,
}

impl<F> Leaf<'_, F> {
    /// This leaf in the oracle's shape (its event parsed into a tree).
    #[doc(hidden)]
    #[must_use]
    pub fn to_reference(&self) -> ReferenceLeaf {
        ReferenceLeaf {
            index: self.index,
            ingested_at: self.ingested_at.to_owned(),
            source: self.source.clone().into_owned(),
            prev_leaf_hash: self.prev_leaf_hash,
            origin_signature: self.origin_signature.clone(),
            event: serde_json::from_slice(self.event).expect("a checked event parses"),
        }
    }
}

/// The leaf parse [`Leaf::parse`] replaced, kept as its oracle: `serde_json` into a tree, the
/// field checks, and the tree written back ([`jcs::to_vec`], itself held equal to `serde_jcs`)
/// must give the same bytes. Slow (a tree per leaf): for tests and fuzzing only.
#[doc(hidden)]
#[must_use]
pub fn parse_by_reencoding(bytes: &[u8]) -> Option<ReferenceLeaf> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fields {
        v: u64,
        index: u64,
        ingested_at: String,
        source: String,
        prev_leaf_hash: String,
        event: serde_json::Value,
        #[serde(default)]
        origin_signature: Option<OriginSignature>,
    }
    let f: Fields = serde_json::from_slice(bytes).ok()?;
    let prev = super::hash::from_hex(&f.prev_leaf_hash)?;
    let micros = parse_micros(&f.ingested_at)?;
    let fields_ok = f.v == LEAF_VERSION
        && to_hex(&prev) == f.prev_leaf_hash
        && format_micros(micros).as_deref() == Some(f.ingested_at.as_str())
        && f.origin_signature
            .as_ref()
            .is_none_or(OriginSignature::is_well_formed);
    let header = LeafHeader {
        index: f.index,
        ingested_at: &f.ingested_at,
        source: &f.source,
        prev_leaf_hash: &prev,
        origin_signature: f.origin_signature.as_ref(),
    };
    (fields_ok && encode_leaf(&header, &jcs::to_vec(&f.event)) == bytes).then_some(ReferenceLeaf {
        index: f.index,
        ingested_at: f.ingested_at,
        source: f.source,
        prev_leaf_hash: prev,
        origin_signature: f.origin_signature,
        event: f.event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[test]
    fn a_leaf_holds_its_event_and_no_other() {
        let header = LeafHeader {
            index: 7,
            ingested_at: "2026-11-21T09:06:00.123456Z",
            source: "gw",
            prev_leaf_hash: &GENESIS_PREV,
            origin_signature: None,
        };
        let event = br#"{"a":1,"b":{"c":"d"}}"#;
        let leaf = encode_leaf(&header, event);
        assert!(leaf_holds_event(&leaf, event));
        assert_eq!(Leaf::parse(&leaf).unwrap().event, event);
        for other in [
            &br#"{"a":1,"b":{"c":"e"}}"#[..],
            br#"{"a":1,"b":{"c":"d"}"#,
            br#"{"a":1}"#,
            b"",
            br#"{"a":1,"b":{"c":"d"},"e":2}"#,
        ] {
            assert!(
                !leaf_holds_event(&leaf, other),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn timestamps_have_six_digits_and_z() {
        assert_eq!(format_micros(0).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(1_795_251_960_123_456).unwrap(),
            "2026-11-21T09:06:00.123456Z"
        );
        assert_eq!(
            parse_micros("2026-11-21T10:06:00.123456+01:00"),
            Some(1_795_251_960_123_456)
        );
    }

    #[test]
    fn known_leaf_bytes() {
        let event = serde_jcs::to_vec(&json!({"b": 1, "a": "x"})).unwrap();
        let leaf = encode_leaf(
            &LeafHeader {
                index: 7,
                ingested_at: "2026-11-21T09:06:00.123456Z",
                source: "ci-runner",
                prev_leaf_hash: &[0xab; 32],
                origin_signature: None,
            },
            &event,
        );
        let want = format!(
            r#"{{"event":{{"a":"x","b":1}},"index":7,"ingested_at":"2026-11-21T09:06:00.123456Z","prev_leaf_hash":"{}","source":"ci-runner","v":1}}"#,
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(leaf.clone()).unwrap(), want);
        let parsed = Leaf::parse(&leaf).unwrap();
        assert_eq!(parsed.index, 7);
        assert_eq!(parsed.event, event.as_slice());
        assert_eq!(parsed.fields.str("/a").as_deref(), Some("x"));
        assert_eq!(parsed.fields.str("/b"), None);
        assert_eq!(parsed.ingested_micros, 1_795_251_960_123_456);
        assert_eq!(parsed.prev_leaf_hash, [0xab; 32]);
        assert_eq!(parsed.source, "ci-runner");
        assert_eq!(parsed.origin_signature, None);
        assert!(Leaf::parse(&leaf[1..]).is_err());

        // A signing source's leaf: one more member, in JCS order; the rest unchanged.
        let sig = OriginSignature {
            key_id: "0a1b2c3d".into(),
            signature: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                [7u8; 64],
            ),
        };
        let signed = encode_leaf(
            &LeafHeader {
                index: 7,
                ingested_at: "2026-11-21T09:06:00.123456Z",
                source: "ci-runner",
                prev_leaf_hash: &[0xab; 32],
                origin_signature: Some(&sig),
            },
            &event,
        );
        let want = want.replace(
            r#","prev_leaf_hash""#,
            &format!(
                r#","origin_signature":{{"key_id":"0a1b2c3d","signature":"{}"}},"prev_leaf_hash""#,
                sig.signature
            ),
        );
        assert_eq!(String::from_utf8(signed.clone()).unwrap(), want);
        let parsed = Leaf::parse(&signed).unwrap();
        assert_eq!(parsed.origin_signature.as_ref(), Some(&sig));
        assert_eq!(parsed.event, event.as_slice());
        for bad in ["0A1B2C3D", "0a1b2c", "0a1b2c3g"] {
            let mut s = sig.clone();
            s.key_id = bad.into();
            assert!(!s.is_well_formed(), "{bad}");
        }
        let text = String::from_utf8(signed)
            .unwrap()
            .replace(&sig.signature, "AAAA");
        assert_eq!(
            Leaf::parse(text.as_bytes()),
            Err(LeafError::Field("origin_signature"))
        );
    }

    #[test]
    fn odd_timestamps_take_the_general_path() {
        for text in [
            "2026-11-21T10:00:60Z",
            "2026-11-21T10:00:60.5Z",
            "2026-11-21t10:00:00z",
            "2026-11-21T10:00:00.1234567Z",
            "2026-11-21T10:00:00+01:00",
            "2026-11-21T10:00:00.Z",
            "2026-02-30T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-11-21T24:00:00Z",
            "+026-11-21T10:00:00Z",
            "2026-11-21T10:00:00",
        ] {
            assert_eq!(parse_utc_micros(text.as_bytes()), None, "{text}");
        }
        assert_eq!(
            parse_micros("2026-11-21T10:00:60Z"),
            parse_micros("2026-11-21T10:00:59.999999Z")
        );
        assert_eq!(
            parse_micros("2026-11-21T10:00:00.1234567Z"),
            Some(1_795_255_200_123_456)
        );
        assert_eq!(parse_micros("2026-02-30T10:00:00Z"), None);
    }

    #[test]
    fn non_canonical_leaf_is_rejected() {
        let zeros = "0".repeat(64);
        let spaced = format!(
            r#"{{"event":{{}}, "index":0,"ingested_at":"1970-01-01T00:00:00.000000Z","prev_leaf_hash":"{zeros}","source":"s","v":1}}"#
        );
        assert_eq!(Leaf::parse(spaced.as_bytes()), Err(LeafError::NotCanonical));
    }

    /// The index is a JSON integer without leading zeros (which JSON does not allow) that fits
    /// in 64 bits.
    #[test]
    fn index_is_canonical() {
        let zeros = "0".repeat(64);
        let leaf = |index: &str| {
            format!(
                r#"{{"event":{{}},"index":{index},"ingested_at":"1970-01-01T00:00:00.000000Z","prev_leaf_hash":"{zeros}","source":"s","v":1}}"#
            )
        };
        for good in ["0", "7", "10", "18446744073709551615"] {
            let text = leaf(good);
            assert_eq!(
                Leaf::parse(text.as_bytes()).unwrap().index.to_string(),
                good
            );
            assert!(parse_by_reencoding(text.as_bytes()).is_some(), "{good}");
        }
        for bad in ["00", "07", "010", "18446744073709551616", "", "-1", "1.0"] {
            let text = leaf(bad);
            assert!(Leaf::parse(text.as_bytes()).is_err(), "{bad}");
            assert_eq!(parse_by_reencoding(text.as_bytes()), None, "{bad}");
        }
    }

    fn ours(bytes: &[u8]) -> Option<ReferenceLeaf> {
        Leaf::parse(bytes).ok().map(|leaf| leaf.to_reference())
    }

    /// Leaf bytes for generated fields (`signed`: a key ID and 64 signature bytes).
    fn sample_leaf(
        event: &Value,
        index: u64,
        ingested_at: &str,
        source: &str,
        prev: &Hash,
        signed: Option<([u8; 4], Vec<u8>)>,
    ) -> (Vec<u8>, Option<OriginSignature>) {
        let sig = signed.map(|(id, sig)| OriginSignature {
            key_id: hex::encode(id),
            signature: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig),
        });
        let leaf = encode_leaf(
            &LeafHeader {
                index,
                ingested_at,
                source,
                prev_leaf_hash: prev,
                origin_signature: sig.as_ref(),
            },
            &serde_jcs::to_vec(event).unwrap(),
        );
        (leaf, sig)
    }

    #[test]
    fn event_nesting_stops_where_serde_json_stops() {
        let zeros = "0".repeat(64);
        for depth in [EVENT_NESTING - 1, EVENT_NESTING, EVENT_NESTING + 1] {
            let event = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let leaf = format!(
                r#"{{"event":{event},"index":0,"ingested_at":"1970-01-01T00:00:00.000000Z","prev_leaf_hash":"{zeros}","source":"s","v":1}}"#
            );
            assert_eq!(
                Leaf::parse(leaf.as_bytes()).is_ok(),
                parse_by_reencoding(leaf.as_bytes()).is_some(),
                "{depth}"
            );
            assert_eq!(Leaf::parse(leaf.as_bytes()).is_ok(), depth <= EVENT_NESTING);
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| json!(n)),
            (-1e15f64..1e15).prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::String),
            "[\\u{0}-\\u{1f}\"\\\\a\\u{e9}\\u{1F600}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z\\u{e9}\\u{1F600}_]{0,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn concatenated_leaf_equals_full_jcs(
            event in arb_json(),
            index in any::<u64>(),
            micros in 0i64..253_402_300_799_000_000,
            source in "[a-z0-9._\\-\"\\\\\\u{e9}]{1,12}",
            prev in any::<[u8; 32]>(),
            signed in proptest::option::of((any::<[u8; 4]>(), prop::collection::vec(any::<u8>(), 64))),
        ) {
            let ingested_at = format_micros(micros).unwrap();
            let (ours, sig) = sample_leaf(&event, index, &ingested_at, &source, &prev, signed);
            let mut full = json!({
                "v": 1, "index": index, "ingested_at": ingested_at, "source": source,
                "prev_leaf_hash": to_hex(&prev), "event": event,
            });
            if let Some(sig) = &sig {
                full["origin_signature"] = json!({"key_id": sig.key_id, "signature": sig.signature});
            }
            let full = serde_jcs::to_vec(&full).unwrap();
            // JCS numbers are IEEE doubles; indexes beyond 2^53 would not round-trip there.
            if index <= 1 << 53 {
                prop_assert_eq!(&ours, &full);
                prop_assert!(Leaf::parse(&ours).is_ok());
            }
            prop_assert_eq!(format_micros(parse_micros(&ingested_at).unwrap()).unwrap(), ingested_at);
        }

        /// `Leaf::parse` accepts exactly what the reference accepts, and reads the same fields,
        /// on contract leaves and on leaves with small edits.
        #[test]
        fn parse_agrees_with_the_reference(
            event in arb_json(),
            index in prop_oneof![0u64..1_000, any::<u64>()],
            micros in 0i64..253_402_300_799_000_000,
            source in "[a-z0-9._\\-\"\\\\\\u{e9}\\u{1}]{1,12}",
            prev in any::<[u8; 32]>(),
            signed in proptest::option::of((any::<[u8; 4]>(), prop::collection::vec(any::<u8>(), 64))),
            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..3),
        ) {
            let ingested_at = format_micros(micros).unwrap();
            let (leaf, _) = sample_leaf(&event, index, &ingested_at, &source, &prev, signed);
            prop_assert!(Leaf::parse(&leaf).is_ok());
            prop_assert_eq!(ours(&leaf), parse_by_reencoding(&leaf));
            let mut edited = leaf.clone();
            for &(op, at, with) in &edits {
                const BYTES: &[u8] = b" \"\\,:{}[]01-e.ua/\x1f\xc3\xa9";
                let at = at % edited.len();
                let with = BYTES[usize::from(with) % BYTES.len()];
                match op % 3 {
                    0 => edited.insert(at, with),
                    1 => { edited.remove(at); }
                    _ => edited[at] = with,
                }
            }
            prop_assert_eq!(ours(&edited), parse_by_reencoding(&edited), "{:?}", String::from_utf8_lossy(&edited));
        }

        #[test]
        fn fast_timestamps_agree_with_rfc3339(
            micros in 0i64..253_402_300_799_000_000,
            digits in 0usize..=6,
        ) {
            // `YYYY-MM-DDTHH:MM:SS` + a fraction of `digits` digits (none: no dot) + `Z`.
            let full = format_micros(micros).unwrap();
            let text = match digits {
                0 => format!("{}Z", &full[..19]),
                d => format!("{}Z", &full[..20 + d]),
            };
            prop_assert!(parse_utc_micros(text.as_bytes()).is_some(), "{}", text);
            prop_assert_eq!(parse_micros(&text), parse_rfc3339_micros(&text));
        }
    }
}
