//! RFC 8785 (JSON Canonicalization Scheme): the canonical bytes of a parsed JSON value, and the
//! check that bytes already are canonical, each in one pass.
//!
//! Owns: the canonical form of events (the leaf's `event` member) and the check that stored leaves
//! are canonical. Must not touch: anything but JSON values and bytes.
//!
//! Why not `serde_jcs` (it stays, as the reference a property test and the fuzzer compare against):
//! it serializes every object by collecting its members into a fresh map keyed by UTF-16 and every
//! number through a boxed writer, about 12 µs for a 550-byte event, half of the ingest hot path's
//! CPU. Here the members come out of `serde_json`'s map already in code-point order, which *is* JCS
//! order (UTF-16 code units) unless a key holds a character at or above U+E000: only then are an
//! object's keys re-sorted. Numbers follow RFC 8785 3.2.2.3 (ECMAScript `Number::toString` of the
//! IEEE double): integers of magnitude up to 2^53 are exact in a double and print as their digits;
//! every other number goes through `ryu-js`, the formatter `serde_jcs` uses.
//!
//! Why [`check`] rather than parse-and-re-encode: export and verify read every stored leaf, and
//! parsing one into a `serde_json::Value` tree, writing it back and dropping the tree was nearly
//! half of verify's time. Canonical bytes have one spelling per value, so checking them needs no
//! tree: no whitespace, members in UTF-16 order with no name twice, only the escapes JCS writes,
//! and numbers as `write_number` prints them (the rare number that is not a short integer is
//! parsed and printed to compare).

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

/// The canonical bytes of `value`.
#[must_use]
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write(value, &mut out);
    out
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    // UTF-8 lead bytes 0xEE..=0xF4 start the characters whose UTF-8 (code point) order can differ
    // from their UTF-16 order (U+E000..U+FFFF against supplementary characters).
    if map.keys().any(|k| k.bytes().any(|b| b >= 0xEE)) {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        write_members(members.into_iter(), out);
    } else {
        write_members(map.iter(), out);
    }
    out.push(b'}');
}

fn write_members<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    for (i, (key, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write(value, out);
    }
}

/// Largest integer magnitude every double represents exactly.
const EXACT: u64 = 1 << 53;

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64().filter(|u| *u <= EXACT) {
        out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT) {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else if let Some(f) = n.as_f64() {
        // serde_json numbers are finite; a u64/i64 beyond 2^53 rounds as ECMAScript would.
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
    }
}

/// A JCS string literal (RFC 8785 3.2.2.2): `"` and `\` escaped, controls as their short escape or
/// `\u00xx` (lowercase hex); everything else, including U+2028/U+2029 and DEL, as itself.
pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(run) = find_stop(&bytes[start..]) {
        let i = start + run;
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0C => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ],
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Why bytes are not one canonical JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Not JSON, or nested deeper than `serde_json` reads, at this byte offset.
    #[error("not valid JSON at byte {0}")]
    Syntax(usize),
    /// JSON, but not its canonical (RFC 8785) encoding, at this byte offset.
    #[error("not in canonical (RFC 8785) form at byte {0}")]
    NotCanonical(usize),
}

/// Arrays and objects `serde_json` nests at most (its recursion limit of 128, less the level it
/// keeps in hand), so [`check`] accepts exactly the values [`to_vec`] can be given by a parse.
pub const MAX_NESTING: usize = 127;

/// A member value noted by [`check`]; a string is its raw (escaped) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted<'a> {
    /// A string: its raw body (escapes as written; [`Noted::str`] decodes them), and whether
    /// it has any escapes.
    Str {
        /// The body between the quotes.
        raw: &'a str,
        /// Whether `raw` holds a backslash.
        escaped: bool,
    },
    /// `true` or `false`.
    Bool(bool),
    /// An object (its string and boolean members are noted if it is a top-level member's value).
    Object,
    /// A number, an array or `null`.
    Other,
}

impl<'a> Noted<'a> {
    /// The string, unescaped; `None` if this is not a string.
    #[must_use]
    pub fn str(self) -> Option<Cow<'a, str>> {
        match self {
            Noted::Str { raw, escaped } if escaped => Some(unescape(raw)),
            Noted::Str { raw, .. } => Some(Cow::Borrowed(raw)),
            _ => None,
        }
    }

    /// The boolean; `None` if this is not one.
    #[must_use]
    pub fn bool(self) -> Option<bool> {
        match self {
            Noted::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// A member noted in an [`Outline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member<'a> {
    /// The index of the member whose value holds it, or [`TOP`].
    parent: usize,
    /// Raw (escaped) name.
    name: &'a str,
    /// Whether `name` has escapes (then it is compared decoded).
    escaped: bool,
    value: Noted<'a>,
}

/// The parent of the outlined object's own members.
const TOP: usize = usize::MAX;

impl Member<'_> {
    fn named(&self, name: &str) -> bool {
        if self.escaped {
            unescape(self.name) == name
        } else {
            self.name == name
        }
    }
}

/// How the raw member name `raw` (with escapes if `escaped`) sorts against the ASCII `name`.
/// Bytes compare as RFC 8785's UTF-16 code units do when one side is ASCII: at the first
/// difference, a non-ASCII character is above every ASCII one in both encodings.
#[inline(always)]
fn cmp_name(raw: &str, escaped: bool, name: &str) -> Ordering {
    if escaped {
        return cmp_escaped_name(raw, name);
    }
    cmp_bytes(raw.as_bytes(), name.as_bytes())
}

/// [`cmp_name`] for a name with escapes, decoded to compare.
#[cold]
#[inline(never)]
fn cmp_escaped_name(raw: &str, name: &str) -> Ordering {
    unescape(raw).as_bytes().cmp(name.as_bytes())
}

/// The members of a checked object and the string and boolean members of the objects that are
/// its members' values, noted during the one pass of [`check`]: enough to read fields such as
/// `/actor/id` without building a JSON tree. Empty if the value is not an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outline<'a> {
    /// In the order of the bytes, so in canonical order (names sorted by UTF-16 code units
    /// within each object), each top-level member before the members of its value.
    members: Vec<Member<'a>>,
    /// While checking: the member whose value's members are being noted.
    open: usize,
}

impl<'a> Outline<'a> {
    /// The member at `pointer`, a JSON Pointer of one or two member names (`/type`, `/actor/id`;
    /// names holding `/` or `~`, which a pointer escapes, are not looked up).
    fn get(&self, pointer: &str) -> Option<Noted<'a>> {
        let path = pointer.strip_prefix('/')?;
        if path.bytes().any(|b| b == b'~') {
            return None;
        }
        let (parent, key) = match path.bytes().position(|b| b == b'/') {
            Some(at) => (Some(&path[..at]), &path[at + 1..]),
            None => (None, path),
        };
        if key.bytes().any(|b| b == b'/') {
            return None;
        }
        let parent = match parent {
            None => TOP,
            Some(name) => self
                .members
                .iter()
                .position(|m| m.parent == TOP && m.value == Noted::Object && m.named(name))?,
        };
        self.members
            .iter()
            .find(|m| m.parent == parent && m.named(key))
            .map(|m| m.value)
    }

    /// The string at `pointer`, unescaped; `None` if absent or not a string. `pointer` is a JSON
    /// Pointer of one or two member names (`/type`, `/actor/id`; names holding `/` or `~`, which
    /// a pointer escapes, are not looked up).
    #[must_use]
    pub fn str(&self, pointer: &str) -> Option<Cow<'a, str>> {
        self.get(pointer)?.str()
    }

    /// The boolean at `pointer` (as for [`Outline::str`]); `None` if absent or not a boolean.
    #[must_use]
    pub fn bool(&self, pointer: &str) -> Option<bool> {
        self.get(pointer)?.bool()
    }
}

/// What a check notes of the members it passes through: everything an [`Outline`] holds, only the
/// members at a fixed table of names ([`Picks`]), or nothing (`()`). The checker calls, for each
/// member of the checked object in order, [`open`](Notes::open), then (if `open` asked for them
/// and the value is an object) [`inner`](Notes::inner) for each string or boolean member of the
/// value, then [`close`](Notes::close) with the value.
pub trait Notes<'a> {
    /// A member of the checked object begins, named `name` (raw, escapes as written if
    /// `escaped`). Returns whether to note its value's members, should it be an object.
    fn open(&mut self, name: &'a str, escaped: bool) -> bool;
    /// A string or boolean member of the open member's value (an object).
    fn inner(&mut self, name: &'a str, escaped: bool, value: Noted<'a>);
    /// The open member's value, now checked.
    fn close(&mut self, value: Noted<'a>);
}

impl<'a> Notes<'a> for () {
    fn open(&mut self, _: &'a str, _: bool) -> bool {
        false
    }
    fn inner(&mut self, _: &'a str, _: bool, _: Noted<'a>) {}
    fn close(&mut self, _: Noted<'a>) {}
}

impl<'a> Notes<'a> for Outline<'a> {
    fn open(&mut self, name: &'a str, escaped: bool) -> bool {
        if self.members.is_empty() {
            // An approval event has about 25 members in its top two levels.
            self.members.reserve(32);
        }
        self.open = self.members.len();
        self.members.push(Member {
            parent: TOP,
            name,
            escaped,
            value: Noted::Other,
        });
        true
    }

    fn inner(&mut self, name: &'a str, escaped: bool, value: Noted<'a>) {
        self.members.push(Member {
            parent: self.open,
            name,
            escaped,
            value,
        });
    }

    fn close(&mut self, value: Noted<'a>) {
        self.members[self.open].value = value;
    }
}

/// A member of the checked object that [`Picks`] looks for, and the members of its value it looks
/// for. Each found member goes to its slot of [`Picks::found`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick<'p> {
    /// The member's name (ASCII).
    pub name: &'p str,
    /// The slot for the member itself, if it is wanted.
    pub slot: Option<usize>,
    /// Members of its value (when that is an object), by name (ASCII, sorted), each with its
    /// slot: found if a string or a boolean.
    pub inner: &'p [(&'p str, usize)],
}

/// The members at a fixed table of names, noted during the check itself: what an [`Outline`]
/// holds at each of those names, without an outline or a search afterwards. A check passes the members in
/// the order of the bytes, which is canonical order, so with the table in that order too, finding
/// them is a merge of two sorted lists: each member name is compared with the next name of the
/// table, and the members of an object the table does not name are not looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picks<'p, 'a, const N: usize> {
    table: &'p [Pick<'p>],
    found: [Option<Noted<'a>>; N],
    /// The first entry of `table` not yet passed.
    next: usize,
    /// The slot of the open member itself, if it has one.
    slot: Option<usize>,
    /// The names under the open member not yet passed.
    inner: &'p [(&'p str, usize)],
}

impl<'p, const N: usize> Picks<'p, '_, N> {
    /// Notes for `table`, which must be in canonical order: its names ASCII and strictly
    /// increasing (for ASCII, byte order is RFC 8785's UTF-16 order), each `inner` list too, and
    /// every slot below `N` and used once. Callers keep a constant table; a debug build checks it.
    #[must_use]
    pub fn new(table: &'p [Pick<'p>]) -> Self {
        debug_assert!(
            {
                let mut slots: Vec<usize> = table
                    .iter()
                    .flat_map(|p| p.slot.into_iter().chain(p.inner.iter().map(|i| i.1)))
                    .collect();
                let count = slots.len();
                slots.sort_unstable();
                slots.dedup();
                let ascending = |names: &mut dyn Iterator<Item = &str>| {
                    let names: Vec<&str> = names.collect();
                    names.iter().all(|n| n.is_ascii()) && names.windows(2).all(|w| w[0] < w[1])
                };
                slots.len() == count
                    && slots.last().is_none_or(|&last| last < N)
                    && ascending(&mut table.iter().map(|p| p.name))
                    && table
                        .iter()
                        .all(|p| ascending(&mut p.inner.iter().map(|i| i.0)))
            },
            "a pick table must be ASCII, sorted, and use each slot below N once"
        );
        Self {
            table,
            found: [None; N],
            next: 0,
            slot: None,
            inner: &[],
        }
    }
}

impl<'a, const N: usize> Picks<'_, 'a, N> {
    /// What the check found for each slot: `None` where the value holds no member there (or,
    /// below the top level, none that is a string or a boolean).
    #[must_use]
    pub fn found(&self) -> &[Option<Noted<'a>>; N] {
        &self.found
    }
}

impl<'a, const N: usize> Notes<'a> for Picks<'_, 'a, N> {
    #[inline(always)]
    fn open(&mut self, name: &'a str, escaped: bool) -> bool {
        self.slot = None;
        self.inner = &[];
        while let Some(pick) = self.table.get(self.next) {
            match cmp_name(name, escaped, pick.name) {
                Ordering::Less => return false,
                Ordering::Greater => self.next += 1,
                Ordering::Equal => {
                    self.next += 1;
                    self.slot = pick.slot;
                    self.inner = pick.inner;
                    return !pick.inner.is_empty();
                }
            }
        }
        false
    }

    #[inline(always)]
    fn inner(&mut self, name: &'a str, escaped: bool, value: Noted<'a>) {
        while let Some(&(want, slot)) = self.inner.first() {
            match cmp_name(name, escaped, want) {
                Ordering::Less => return,
                Ordering::Equal => {
                    self.found[slot] = Some(value);
                    self.inner = &self.inner[1..];
                    return;
                }
                Ordering::Greater => self.inner = &self.inner[1..],
            }
        }
    }

    #[inline(always)]
    fn close(&mut self, value: Noted<'a>) {
        if let Some(slot) = self.slot.take() {
            self.found[slot] = Some(value);
        }
    }
}

/// Checks that `bytes` are exactly the canonical encoding of the JSON value they parse to (what
/// [`to_vec`] writes for it), in one pass and without building a tree, and outlines the value
/// ([`Outline`]). The differential property tests and the `jcs` fuzz target hold this equal to
/// "`serde_json` parses it and [`to_vec`] gives the same bytes back".
pub fn check(bytes: &[u8]) -> Result<Outline<'_>, CheckError> {
    let text = std::str::from_utf8(bytes).map_err(|e| CheckError::Syntax(e.valid_up_to()))?;
    let (end, outline) = check_at(text, 0, MAX_NESTING)?;
    if end == bytes.len() {
        Ok(outline)
    } else {
        Err(Checker::new(text, end, 0, &mut ()).unexpected())
    }
}

/// Checks the one canonical value starting at byte `from` of `text`, nested at most `max_nesting`
/// deep; returns where it ends and its outline. What follows it is the caller's.
pub fn check_at(
    text: &str,
    from: usize,
    max_nesting: usize,
) -> Result<(usize, Outline<'_>), CheckError> {
    let mut outline = Outline::default();
    let end = check_at_with(text, from, max_nesting, &mut outline)?;
    Ok((end, outline))
}

/// [`check_at`], noting in `notes` what it takes of the value's members instead of an outline;
/// returns where the value ends. (Lent rather than moved: a [`Picks`] is a few hundred bytes.)
pub fn check_at_with<'a, N: Notes<'a>>(
    text: &'a str,
    from: usize,
    max_nesting: usize,
    notes: &mut N,
) -> Result<usize, CheckError> {
    let mut checker = Checker::new(text, from, max_nesting, notes);
    checker.value(Note::Top)?;
    Ok(checker.pos)
}

/// Checks the canonical string starting at byte `from` of `text` (its opening quote); returns
/// where it ends and its raw body, which [`unescape`] decodes.
pub fn check_string_at(text: &str, from: usize) -> Result<(usize, &str), CheckError> {
    let mut nothing = ();
    let mut checker = Checker::new(text, from, 0, &mut nothing);
    let text = checker.string()?;
    Ok((checker.pos, text.raw))
}

/// The text of a raw string body that [`check`] accepted: its (canonical) escapes decoded. Other
/// input is decoded as far as it makes sense, never a panic.
#[must_use]
pub fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (c, used) = match after.as_bytes().first() {
            Some(b'b') => ('\u{8}', 1),
            Some(b'f') => ('\u{c}', 1),
            Some(b'n') => ('\n', 1),
            Some(b'r') => ('\r', 1),
            Some(b't') => ('\t', 1),
            Some(b'u') => match after
                .get(1..5)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
            {
                Some(code) => (char::from_u32(code).unwrap_or('\u{fffd}'), 5),
                None => ('\\', 0),
            },
            Some(&b) if b.is_ascii() => (char::from(b), 1),
            _ => ('\\', 0),
        };
        out.push(c);
        rest = &after[used..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A checked string.
#[derive(Clone, Copy)]
struct Text<'a> {
    /// Its raw body, between the quotes.
    raw: &'a str,
    /// Whether it has escapes.
    escaped: bool,
}

/// The bytes that end a run of plain string bytes: the quote, the backslash and the controls
/// (in a JSON string body, and in what a JCS string literal writes as itself).
pub(crate) static STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        stops[c] = true;
        c += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// Whether `bytes` hold a byte of [`STOPS`]. Written as a fold of comparisons with no branch per
/// byte, which the compiler turns into vector instructions (a table lookup per byte it cannot).
#[must_use]
pub(crate) fn has_stop(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// The position of the first byte of [`STOPS`] in `bytes`. Eight bytes at a time as one `u64`
/// ([`stops_in`]): most strings here are short, and the word test finds the stop's position
/// without a second pass over the block. The last bytes (fewer than 8) go one by one.
#[must_use]
pub(crate) fn find_stop(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let word: [u8; 8] = word.try_into().expect("chunks_exact(8)");
        let hits = stops_in(u64::from_le_bytes(word));
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| STOPS[usize::from(b)])
        .map(|i| at + i)
}

/// The bytes of `word` (little-endian) in [`STOPS`], as the high bit of each byte. Exact up to
/// and including the first stop; above it a borrow may set bits of bytes that are not stops, so
/// only the lowest set bit is an answer. A byte `b` is zero exactly when `(b - 1) & !b` has its
/// high bit set with no borrow coming in, and below `0x20` exactly when `(b - 0x20) & !b` does;
/// a borrow only comes out of a byte that was a hit.
fn stops_in(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control) & HIGHS
}

/// Which object's members go to the [`Notes`].
#[derive(Clone, Copy)]
enum Note {
    Nothing,
    /// The checked value itself.
    Top,
    /// The value of the checked object's open member ([`Notes::open`]).
    Inner,
}

struct Checker<'a, 'n, N> {
    text: &'a str,
    pos: usize,
    depth_left: usize,
    notes: &'n mut N,
}

impl<'a, 'n, N: Notes<'a>> Checker<'a, 'n, N> {
    fn new(text: &'a str, pos: usize, max_nesting: usize, notes: &'n mut N) -> Self {
        Self {
            text,
            pos,
            depth_left: max_nesting,
            notes,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// The error for the byte at `pos`: JSON whitespace is valid JSON but never canonical.
    fn unexpected(&self) -> CheckError {
        match self.peek() {
            Some(b' ' | b'\t' | b'\n' | b'\r') => CheckError::NotCanonical(self.pos),
            _ => CheckError::Syntax(self.pos),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), CheckError> {
        if self.text.as_bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(CheckError::Syntax(self.pos))
        }
    }

    /// One value; what the outline notes of it.
    fn value(&mut self, note: Note) -> Result<Noted<'a>, CheckError> {
        match self.peek() {
            Some(b'{') => self.object(note).map(|()| Noted::Object),
            Some(b'[') => self.array().map(|()| Noted::Other),
            Some(b'"') => self.string().map(|t| Noted::Str {
                raw: t.raw,
                escaped: t.escaped,
            }),
            Some(b't') => self.literal(b"true").map(|()| Noted::Bool(true)),
            Some(b'f') => self.literal(b"false").map(|()| Noted::Bool(false)),
            Some(b'n') => self.literal(b"null").map(|()| Noted::Other),
            Some(b'-' | b'0'..=b'9') => self.number().map(|()| Noted::Other),
            _ => Err(self.unexpected()),
        }
    }

    /// Steps into an array or object (at its opening bracket).
    fn enter(&mut self) -> Result<(), CheckError> {
        self.depth_left = self
            .depth_left
            .checked_sub(1)
            .ok_or(CheckError::Syntax(self.pos))?;
        self.pos += 1;
        Ok(())
    }

    /// After an item: a comma (`Ok(true)`, more follow) or the closing bracket (`Ok(false)`).
    fn next_item(&mut self, close: u8) -> Result<bool, CheckError> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                self.depth_left += 1;
                Ok(false)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn array(&mut self) -> Result<(), CheckError> {
        self.enter()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth_left += 1;
            return Ok(());
        }
        loop {
            self.value(Note::Nothing)?;
            if !self.next_item(b']')? {
                return Ok(());
            }
        }
    }

    fn object(&mut self, note: Note) -> Result<(), CheckError> {
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth_left += 1;
            return Ok(());
        }
        // The previous name, and whether its bytes sort as its UTF-16 does ([`byte_ordered`]).
        let mut prev: Option<(Text<'a>, bool)> = None;
        loop {
            let at = self.pos;
            if self.peek() != Some(b'"') {
                return Err(self.unexpected());
            }
            let name = self.string()?;
            let by_bytes = byte_ordered(&name);
            // Strictly increasing: sorted, and no name twice (a parse keeps the last, so the
            // bytes of a repeated name never come back).
            if prev.is_some_and(|prev| !sorts_after((&name, by_bytes), (&prev.0, prev.1))) {
                return Err(CheckError::NotCanonical(at));
            }
            prev = Some((name, by_bytes));
            let (key, escaped) = (name.raw, name.escaped);
            if self.peek() != Some(b':') {
                return Err(self.unexpected());
            }
            self.pos += 1;
            match note {
                Note::Top => {
                    let inner = self.notes.open(key, escaped);
                    let value = self.value(if inner { Note::Inner } else { Note::Nothing })?;
                    self.notes.close(value);
                }
                Note::Inner => {
                    let value = self.value(Note::Nothing)?;
                    if matches!(value, Noted::Str { .. } | Noted::Bool(_)) {
                        self.notes.inner(key, escaped, value);
                    }
                }
                Note::Nothing => {
                    self.value(Note::Nothing)?;
                }
            }
            if !self.next_item(b'}')? {
                return Ok(());
            }
        }
    }

    /// A string at its opening quote. Canonical escapes only: `\"`, `\\`, the five short control
    /// escapes, and `\u00xx` (lowercase) for the other controls.
    #[inline(always)]
    fn string(&mut self) -> Result<Text<'a>, CheckError> {
        let b = self.text.as_bytes();
        if b.get(self.pos) != Some(&b'"') {
            return Err(self.unexpected());
        }
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i += find_stop(&b[i..]).ok_or(CheckError::Syntax(b.len()))?;
            match b[i] {
                b'"' => break,
                b'\\' => {
                    i += escape_len(b, i)?;
                    escaped = true;
                }
                _ => return Err(CheckError::Syntax(i)),
            }
        }
        self.pos = i + 1;
        Ok(Text {
            // Both ends are ASCII quotes, so on character boundaries.
            raw: &self.text[start..i],
            escaped,
        })
    }

    /// A number; canonical if it is what [`write_number`] writes for the number it parses to.
    fn number(&mut self) -> Result<(), CheckError> {
        let b = self.text.as_bytes();
        let start = self.pos;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start + usize::from(b[start] == b'-');
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(i),
            _ => return Err(CheckError::Syntax(i)),
        };
        let int_end = i;
        if b.get(i) == Some(&b'.') {
            i = match digits(i + 1) {
                end if end > i + 1 => end,
                end => return Err(CheckError::Syntax(end)),
            };
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = match digits(i) {
                end if end > i => end,
                end => return Err(CheckError::Syntax(end)),
            };
        }
        self.pos = i;
        let token = &b[start..i];
        // An integer of up to 15 digits (below 2^53) without a leading zero prints as itself;
        // `-0` does not (it is the double -0, printed `0`).
        let magnitude = &b[start + usize::from(b[start] == b'-')..int_end];
        if int_end == i && magnitude.len() <= 15 && token != b"-0" {
            return Ok(());
        }
        let number: Number =
            serde_json::from_slice(token).map_err(|_| CheckError::Syntax(start))?;
        let mut canonical = Vec::with_capacity(token.len());
        write_number(&number, &mut canonical);
        if canonical == token {
            Ok(())
        } else {
            Err(CheckError::NotCanonical(start))
        }
    }
}

/// The length of the escape at `b[i]` (a backslash), if it is a canonical one.
fn escape_len(b: &[u8], i: usize) -> Result<usize, CheckError> {
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(2),
        Some(b'/') => Err(CheckError::NotCanonical(i)),
        Some(b'u') => match b.get(i + 2..i + 6) {
            // A control character without a short form (not 08, 09, 0a, 0c, 0d), lowercase.
            Some(
                [b'0', b'0', b'0', b'0'..=b'7' | b'b' | b'e' | b'f']
                | [b'0', b'0', b'1', b'0'..=b'9' | b'a'..=b'f'],
            ) => Ok(6),
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Err(CheckError::NotCanonical(i)),
            _ => Err(CheckError::Syntax(i)),
        },
        _ => Err(CheckError::Syntax(i)),
    }
}

/// Whether a raw name's UTF-8 bytes sort as its UTF-16 code units do (RFC 8785 3.2.3) against
/// any other such name: true without escapes and without characters at or above U+E000 (UTF-8
/// lead byte 0xEE).
#[inline]
fn byte_ordered(name: &Text<'_>) -> bool {
    !name.escaped && !name.raw.bytes().any(|b| b >= 0xEE)
}

/// Whether member name `key` sorts strictly after `prev` in UTF-16 code units (RFC 8785 3.2.3),
/// both raw bodies, each with its [`byte_ordered`].
#[inline]
fn sorts_after((key, key_bytes): (&Text<'_>, bool), (prev, prev_bytes): (&Text<'_>, bool)) -> bool {
    if key_bytes && prev_bytes {
        return cmp_bytes(key.raw.as_bytes(), prev.raw.as_bytes()).is_gt();
    }
    sorts_after_in_utf16(key.raw, prev.raw)
}

/// [`sorts_after`] for names whose bytes do not sort as their UTF-16 does.
#[cold]
fn sorts_after_in_utf16(key: &str, prev: &str) -> bool {
    unescape(key)
        .encode_utf16()
        .cmp(unescape(prev).encode_utf16())
        .is_gt()
}

/// `a.cmp(b)`, byte by byte rather than through `memcmp`: member names are short and mostly
/// differ in their first bytes, where a call costs more than the comparison.
#[inline]
fn cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .map_or_else(|| a.len().cmp(&b.len()), |(x, y)| x.cmp(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// JSON values with the cases where JCS differs from plain serialization: keys that sort
    /// differently in UTF-16, controls and escapes in strings, integers past 2^53, fractions and
    /// exponents.
    fn arb_json() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            (-1e25f64..1e25).prop_map(|f| json!(f)),
            (-1e-5f64..1e-5).prop_map(|f| json!(f)),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number,
            "\\PC{0,12}".prop_map(Value::String),
            "[\\u{0}-\\u{1f}\"\\\\/a\\u{7f}\\u{e9}\\u{2028}\\u{e000}\\u{fffd}\\u{1F600}]{0,8}"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    "[a-zA-Z\\u{e9}\\u{e000}\\u{ffff}\\u{fb33}\\u{1F600}\\u{10000}_]{0,4}",
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn rfc8785_examples() {
        // RFC 8785 3.2.3's sorting example: keys ordered by UTF-16 code units.
        let v: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1F600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(String::from_utf8(to_vec(&v)).unwrap(), want);
        // RFC 8785 3.2.2.3 number examples.
        for (n, want) in [
            (json!(0), "0"),
            (json!(-0.0), "0"),
            (json!(1e21), "1e+21"),
            (json!(1e-7), "1e-7"),
            (json!(333_333_333.333_333_3), "333333333.3333333"),
            (json!(9_007_199_254_740_993u64), "9007199254740992"),
            (json!(-9_007_199_254_740_993i64), "-9007199254740992"),
            (json!(5e-324), "5e-324"),
        ] {
            assert_eq!(String::from_utf8(to_vec(&n)).unwrap(), want, "{n}");
        }
        assert_eq!(
            to_vec(&json!("\u{1}\u{1f}/\u{7f}")),
            b"\"\\u0001\\u001f/\x7f\""
        );
    }

    /// The reference for [`check`]: `serde_json` parses the bytes and `serde_jcs` writes them back.
    fn reparses_to_itself(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Value>(bytes)
            .is_ok_and(|v| serde_jcs::to_vec(&v).is_ok_and(|c| c == bytes))
    }

    /// Small edits that keep bytes close to canonical JSON: the cases a checker gets wrong.
    fn mutate(bytes: &[u8], op: u8, at: usize, with: u8) -> Vec<u8> {
        const BYTES: &[u8] = b" \"\\,:{}[]0-e.Eua/\x1f\x7f\xc3\xa9";
        let mut out = bytes.to_vec();
        if out.is_empty() {
            return out;
        }
        let at = at % out.len();
        let with = BYTES[usize::from(with) % BYTES.len()];
        match op % 4 {
            0 => out.insert(at, with),
            1 => {
                out.remove(at);
            }
            2 => out[at] = with,
            _ => out.swap(at, (at + 1) % bytes.len()),
        }
        out
    }

    #[test]
    fn check_cases() {
        for ok in [
            "0",
            "-1",
            "100",
            "1e+21",
            "1e-7",
            "0.5",
            "-0.5",
            "9007199254740992",
            "999999999999999",
            "\"\\u0000\\u001f\\b\\t\\n\\f\\r\\\"\\\\\"",
            "\"\u{7f}\u{2028}\"",
            "{\"\\r\":1,\"1\":2,\"\u{80}\":3,\"\u{1F600}\":4,\"\u{fb33}\":5}",
            "[]",
            "{}",
            "[[],{}]",
            "true",
            "null",
        ] {
            assert!(check(ok.as_bytes()).is_ok(), "{ok}");
            assert!(reparses_to_itself(ok.as_bytes()), "{ok}");
        }
        for (bad, why) in [
            ("-0", CheckError::NotCanonical(0)),
            ("1.0", CheckError::NotCanonical(0)),
            ("1E+21", CheckError::NotCanonical(0)),
            ("1e21", CheckError::NotCanonical(0)),
            ("9007199254740993", CheckError::NotCanonical(0)),
            ("01", CheckError::Syntax(1)),
            ("1.", CheckError::Syntax(2)),
            ("\"\\u0041\"", CheckError::NotCanonical(1)),
            ("\"\\u000A\"", CheckError::NotCanonical(1)),
            ("\"\\u000a\"", CheckError::NotCanonical(1)),
            ("\"\\/\"", CheckError::NotCanonical(1)),
            ("\"\\x\"", CheckError::Syntax(1)),
            ("\"\u{1}\"", CheckError::Syntax(1)),
            ("[1, 2]", CheckError::NotCanonical(3)),
            ("[1,]", CheckError::Syntax(3)),
            (" 1", CheckError::NotCanonical(0)),
            ("1 ", CheckError::NotCanonical(1)),
            ("{\"b\":1,\"a\":2}", CheckError::NotCanonical(7)),
            ("{\"a\":1,\"a\":2}", CheckError::NotCanonical(7)),
            (
                "{\"\u{fb33}\":1,\"\u{1F600}\":2}",
                CheckError::NotCanonical(9),
            ),
            ("tru", CheckError::Syntax(0)),
            ("\"abc", CheckError::Syntax(4)),
        ] {
            assert_eq!(check(bad.as_bytes()), Err(why), "{bad}");
            assert!(!reparses_to_itself(bad.as_bytes()), "{bad}");
        }
        assert!(check(b"\"\xff\"").is_err());
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        for depth in [MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                check(text.as_bytes()).is_ok(),
                reparses_to_itself(text.as_bytes()),
                "{depth}"
            );
            assert_eq!(
                check(text.as_bytes()).is_ok(),
                depth <= MAX_NESTING,
                "{depth}"
            );
        }
    }

    #[test]
    fn outline_reads_two_levels_of_objects() {
        let bytes = br#"{"a":"x\ny","b":true,"c":{"d":"e","f":false,"g":{"h":"i"}},"j":[{"k":"l"}],"k\"":"q","m":1}"#;
        let o = check(bytes).unwrap();
        assert_eq!(o.str("/a").as_deref(), Some("x\ny"));
        assert_eq!(o.bool("/b"), Some(true));
        assert_eq!(o.str("/b"), None);
        assert_eq!(o.str("/c/d").as_deref(), Some("e"));
        assert_eq!(o.bool("/c/f"), Some(false));
        assert_eq!(o.str("/c/g/h"), None);
        assert_eq!(o.str("/g/h"), None);
        assert_eq!(o.str("/j/k"), None);
        assert_eq!(o.str("/m"), None);
        assert_eq!(o.str("/k\"").as_deref(), Some("q"));
        assert_eq!(o.str("a"), None);
        assert_eq!(check(b"[\"a\"]").unwrap(), Outline::default());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn find_stop_is_the_first_stop(bytes in prop::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xFF, 0x20u8..0x7F, 0x20u8..0x7F], 0..70)) {
            let want = bytes.iter().position(|&b| STOPS[usize::from(b)]);
            prop_assert_eq!(find_stop(&bytes), want);
            prop_assert_eq!(has_stop(&bytes), want.is_some());
        }

        #[test]
        fn equals_serde_jcs(value in arb_json()) {
            prop_assert_eq!(to_vec(&value), serde_jcs::to_vec(&value).unwrap());
        }

        /// `check` accepts exactly the bytes that parse and write back to themselves.
        #[test]
        fn check_agrees_with_reparsing(
            value in arb_json(),
            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..3),
        ) {
            let canonical = to_vec(&value);
            prop_assert!(check(&canonical).is_ok());
            let edited = edits.iter().fold(canonical, |b, &(op, at, with)| mutate(&b, op, at, with));
            prop_assert_eq!(check(&edited).is_ok(), reparses_to_itself(&edited), "{:?}", String::from_utf8_lossy(&edited));
        }

        /// `Picks` notes during the check what `get` finds in the outline path by path, on
        /// objects whose names often are the picked ones, sort among them, or need escapes or
        /// UTF-16 order.
        #[test]
        fn picks_agree_with_get(
            value in prop::collection::btree_map(
                "a|ab|b|c|d|\\u{1}|\"|\u{e9}|\u{e000}|\u{1F600}",
                prop_oneof![
                    Just(json!("s")),
                    Just(json!("t\\n")),
                    any::<bool>().prop_map(Value::Bool),
                    Just(json!(1)),
                    Just(json!(["x"])),
                    prop::collection::btree_map(
                        "a|ab|b|c|\u{1}|\u{e9}",
                        prop_oneof![
                            Just(json!("u")),
                            any::<bool>().prop_map(Value::Bool),
                            Just(json!({"a": "v"})),
                        ],
                        0..5,
                    ).prop_map(|m| Value::Object(m.into_iter().collect())),
                ],
                0..7,
            ),
            picks in prop::collection::vec(any::<bool>(), 20),
        ) {
            let bytes = to_vec(&Value::Object(value.into_iter().collect()));
            let outline = check(&bytes).unwrap();
            // Every path over these names, in canonical order (a member before its value's
            // members); `picks` keeps a subset, at most 8, each with the next slot.
            let names = ["a", "ab", "b", "c", "d"];
            let mut all: Vec<(&str, Option<&str>)> = Vec::new();
            for top in names {
                all.push((top, None));
                all.extend(names.iter().map(|&name| (top, Some(name))));
            }
            let wanted: Vec<(&str, Option<&str>)> = all
                .iter()
                .zip(picks.iter().cycle())
                .filter(|&(_, &keep)| keep)
                .map(|(&path, _)| path)
                .take(8)
                .collect();
            let inners: Vec<Vec<(&str, usize)>> = names
                .iter()
                .map(|&top| {
                    wanted
                        .iter()
                        .enumerate()
                        .filter_map(|(slot, &(t, inner))| (t == top).then_some((inner?, slot)))
                        .collect()
                })
                .collect();
            let table: Vec<Pick<'_>> = names
                .iter()
                .zip(&inners)
                .filter_map(|(&name, inner)| {
                    let slot = wanted.iter().position(|&w| w == (name, None));
                    (slot.is_some() || !inner.is_empty()).then_some(Pick { name, slot, inner })
                })
                .collect();
            let text = std::str::from_utf8(&bytes).unwrap();
            let mut noted = Picks::<8>::new(&table);
            let end = check_at_with(text, 0, MAX_NESTING, &mut noted).unwrap();
            prop_assert_eq!(end, bytes.len());
            for (slot, got) in noted.found().iter().enumerate() {
                let Some(&(top, inner)) = wanted.get(slot) else {
                    prop_assert_eq!(*got, None);
                    continue;
                };
                let pointer = match inner {
                    None => format!("/{top}"),
                    Some(name) => format!("/{top}/{name}"),
                };
                prop_assert_eq!(*got, outline.get(&pointer), "{}", pointer);
            }
        }

        /// The outline gives what member lookups on the parsed tree give.
        #[test]
        fn outline_agrees_with_the_tree(value in arb_json()) {
            let bytes = to_vec(&value);
            let outline = check(&bytes).unwrap();
            let Value::Object(top) = &value else {
                prop_assert_eq!(outline, Outline::default());
                return Ok(());
            };
            for (k, v) in top {
                let pointer = format!("/{k}");
                if k.contains(['/', '~']) { continue; }
                let got = outline.str(&pointer);
                prop_assert_eq!(got.as_deref(), v.as_str());
                prop_assert_eq!(outline.bool(&pointer), v.as_bool());
                let Value::Object(inner) = v else { continue };
                for (k2, v2) in inner {
                    if k2.contains(['/', '~']) { continue; }
                    let pointer = format!("/{k}/{k2}");
                    let got = outline.str(&pointer);
                    prop_assert_eq!(got.as_deref(), v2.as_str());
                    prop_assert_eq!(outline.bool(&pointer), v2.as_bool());
                }
            }
        }
    }
}
