//! A borrowed JSON document: the ingest hot path's one parse of a request body, validated by
//! `jsonschema` in place and written out as canonical (RFC 8785) bytes.
//!
//! Owns: the fast reading of posted events. Must not touch: what a valid event is (the schema and
//! [`super::event`] decide that), error wording (only the `Value` path words errors).
//!
//! Why: [`super::event::parse_strict`] builds a `serde_json::Value` tree, a `String` per key and
//! string and a `BTreeMap` per object, which the validator then walks and the canonical writer
//! walks again before it is dropped: about half of the CPU a server spends per posted event. Here
//! the text is parsed once into a flat array of nodes whose strings borrow the request bytes;
//! `jsonschema` validates it through its custom-representation API (`jsonschema::options_for`),
//! and the canonical bytes are written from it.
//!
//! It accepts a strict subset of what `parse_strict` accepts, with the same meaning: integers of
//! at most 16 digits and magnitude at most 2^53, the escapes JSON defines (a surrogate pair as
//! one), no NUL character, no duplicate member name, no container deeper than
//! [`super::event::MAX_DEPTH`], objects of at most [`MAX_MEMBERS`] members. Anything else (a
//! fraction or exponent, `-0`, a lone surrogate, a bigger object, any syntax error) is not an
//! error here: [`Doc::parse`] answers `None` and the caller takes the `Value` path, which decides
//! and words every error. So this path can only agree with the `Value` path, never overrule it;
//! property tests and the `event` fuzz target compare the two. A body of more than [`MAX_NODES`]
//! values also goes the `Value` way, so a hostile body cannot make this path hold more memory
//! than about 56 bytes times that (a node holds two string references).

use std::borrow::Cow;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use serde_json::{Map, Number, Value};

use super::event::MAX_DEPTH;
use super::jcs::find_stop;

/// Most members an object may have on this path; bigger objects take the `Value` path (whose
/// map makes the duplicate-name check cheap at any size).
pub const MAX_MEMBERS: usize = 64;
/// Most values one body may hold on this path (a legitimate 8 MiB body of 1 KiB events has about
/// 400,000).
pub const MAX_NODES: usize = 1 << 20;
/// Largest integer magnitude accepted (exact in an IEEE double, so JCS cannot change it).
const MAX_EXACT: u64 = 1 << 53;

/// A parsed document: its nodes in document order, each container followed by its subtree.
#[derive(Debug, Default)]
pub struct Doc<'a> {
    slots: Vec<Slot<'a>>,
}

#[derive(Debug)]
struct Slot<'a> {
    /// The member name, for a member of an object; empty otherwise.
    key: Cow<'a, str>,
    val: Val<'a>,
}

#[derive(Debug)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Str(Cow<'a, str>),
    /// `len` children; `end` is the index just past the subtree.
    Array {
        len: u32,
        end: u32,
    },
    Object {
        len: u32,
        end: u32,
    },
}

impl<'a> Doc<'a> {
    /// Parses `bytes` as one JSON value (whitespace around it allowed), or `None` when they are
    /// not within this path's subset (see the module docs).
    #[must_use]
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parser = Parser {
            text,
            bytes,
            pos: 0,
            slots: Vec::with_capacity((bytes.len() / 16).min(1 << 16)),
        };
        parser.value(Cow::Borrowed(""), 1)?;
        parser.ws();
        (parser.pos == bytes.len()).then_some(Self {
            slots: parser.slots,
        })
    }

    /// The root value.
    #[must_use]
    pub fn root(&self) -> DomNode<'_> {
        DomNode { doc: self, i: 0 }
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    slots: Vec<Slot<'a>>,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.bytes.get(self.pos) == Some(&b)).then(|| self.pos += 1)
    }

    /// One value at nesting `depth` (the root is 1), as member `key` of its parent.
    fn value(&mut self, key: Cow<'a, str>, depth: usize) -> Option<()> {
        if self.slots.len() == MAX_NODES {
            return None;
        }
        self.ws();
        let val = match *self.bytes.get(self.pos)? {
            b'{' => return self.object(key, depth),
            b'[' => return self.array(key, depth),
            b'"' => {
                self.pos += 1;
                Val::Str(self.string()?)
            }
            b't' => self.literal("true", Val::Bool(true))?,
            b'f' => self.literal("false", Val::Bool(false))?,
            b'n' => self.literal("null", Val::Null)?,
            b'-' | b'0'..=b'9' => Val::Int(self.int()?),
            _ => return None,
        };
        self.slots.push(Slot { key, val });
        Some(())
    }

    fn literal(&mut self, word: &str, val: Val<'a>) -> Option<Val<'a>> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word.as_bytes()).then(|| {
            self.pos = end;
            val
        })
    }

    fn object(&mut self, key: Cow<'a, str>, depth: usize) -> Option<()> {
        let at = self.open(key, depth)?;
        // Slot indexes of this object's members, for the duplicate-name check.
        let mut members = [0u32; MAX_MEMBERS];
        let len = self.items(b'}', |p, n| {
            if n == MAX_MEMBERS {
                return None;
            }
            p.eat(b'"')?;
            let name = p.string()?;
            if members[..n]
                .iter()
                .any(|&m| p.slots[m as usize].key == name)
            {
                return None;
            }
            p.eat(b':')?;
            members[n] = u32::try_from(p.slots.len()).ok()?;
            p.value(name, depth + 1)
        })?;
        let end = u32::try_from(self.slots.len()).ok()?;
        self.slots[at].val = Val::Object { len, end };
        Some(())
    }

    fn array(&mut self, key: Cow<'a, str>, depth: usize) -> Option<()> {
        let at = self.open(key, depth)?;
        let len = self.items(b']', |p, _| p.value(Cow::Borrowed(""), depth + 1))?;
        let end = u32::try_from(self.slots.len()).ok()?;
        self.slots[at].val = Val::Array { len, end };
        Some(())
    }

    /// A container at nesting `depth`, at its opening byte: its slot, to be filled in once its
    /// items are read.
    fn open(&mut self, key: Cow<'a, str>, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.slots.push(Slot {
            key,
            val: Val::Null,
        });
        Some(self.slots.len() - 1)
    }

    /// The comma-separated items of a container up to its `close` byte, each read by `item`
    /// (given its position); how many there were.
    fn items(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<u32> {
        self.ws();
        if self.bytes.get(self.pos) == Some(&close) {
            self.pos += 1;
            return Some(0);
        }
        let mut n = 0;
        loop {
            item(self, n)?;
            n += 1;
            self.ws();
            match *self.bytes.get(self.pos)? {
                b',' => self.pos += 1,
                b if b == close => {
                    self.pos += 1;
                    return u32::try_from(n).ok();
                }
                _ => return None,
            }
        }
    }

    /// A string body, after its opening quote; borrowed unless it has escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.pos;
        self.pos += find_stop(&self.bytes[start..])?;
        match self.bytes[self.pos] {
            b'"' => {
                let s = &self.text[start..self.pos];
                self.pos += 1;
                Some(Cow::Borrowed(s))
            }
            b'\\' => self.escaped(start).map(Cow::Owned),
            _ => None,
        }
    }

    /// The rest of a string with escapes, from its body's `start`; `pos` is at a backslash.
    fn escaped(&mut self, start: usize) -> Option<String> {
        let mut out = String::with_capacity(self.pos - start + 16);
        let mut run = start;
        loop {
            match *self.bytes.get(self.pos)? {
                b'"' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(&self.text[run..self.pos]);
                    let c = match *self.bytes.get(self.pos + 1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let c = self.unicode()?;
                            out.push(c);
                            run = self.pos;
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(c);
                    self.pos += 2;
                    run = self.pos;
                }
                0x00..=0x1F => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// A `\u` escape (four hex digits) at `pos`, a surrogate pair as one character; no NUL, no
    /// lone surrogate.
    fn unicode(&mut self) -> Option<char> {
        let unit = |p: &Self, at: usize| -> Option<u32> {
            if p.bytes.get(at..at + 2)? != b"\\u" {
                return None;
            }
            let hex = p.text.get(at + 2..at + 6)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(hex, 16).ok()
        };
        let first = unit(self, self.pos)?;
        self.pos += 6;
        let code = match first {
            0 => return None,
            0xD800..=0xDBFF => {
                let second = unit(self, self.pos)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                self.pos += 6;
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return None,
            c => c,
        };
        char::from_u32(code)
    }

    /// An integer of at most 16 digits and magnitude at most 2^53, with no fraction or exponent.
    fn int(&mut self) -> Option<i64> {
        let negative = self.bytes[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        let mut magnitude = 0u64;
        while let Some(&d @ b'0'..=b'9') = self.bytes.get(self.pos) {
            magnitude = magnitude * 10 + u64::from(d - b'0');
            self.pos += 1;
            if self.pos - start > 16 {
                return None;
            }
        }
        let digits = self.pos - start;
        let leading_zero = digits > 1 && self.bytes[start] == b'0';
        let fraction = matches!(self.bytes.get(self.pos), Some(b'.' | b'e' | b'E'));
        if digits == 0
            || leading_zero
            || fraction
            || magnitude > MAX_EXACT
            || (negative && magnitude == 0)
        {
            return None;
        }
        let magnitude = i64::try_from(magnitude).ok()?;
        Some(if negative { -magnitude } else { magnitude })
    }
}

/// A string as a JCS literal. A borrowed one is a run of the input between quotes with no
/// backslash and no control character (the parser stops at both), so it is its own literal; only
/// a decoded one can hold what JCS escapes.
#[allow(clippy::ptr_arg)] // Which variant it is is the point.
fn write_str(s: &Cow<'_, str>, out: &mut Vec<u8>) {
    match s {
        Cow::Borrowed(raw) => {
            out.reserve(raw.len() + 2);
            out.push(b'"');
            out.extend_from_slice(raw.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(text) => super::jcs::write_string(text, out),
    }
}

/// `a.cmp(b)` for member names, which mostly differ in their first byte: that byte decides
/// without a call to `memcmp` (sorting a body's objects made 30 such calls per event).
#[inline]
fn byte_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// The marker type of this representation for `jsonschema` (`Validator<Dom>`).
pub struct Dom;

/// The stack [`DomNode::write_jcs_with`] sorts each object's members on, reusable for every
/// node of one [`Doc`]. Each write leaves it as it found it (empty).
#[derive(Default)]
pub struct Scratch<'a>(Vec<(&'a Cow<'a, str>, u32)>);

/// One node of a [`Doc`].
#[derive(Clone, Copy)]
pub struct DomNode<'a> {
    doc: &'a Doc<'a>,
    i: u32,
}

/// An object node.
#[derive(Clone, Copy)]
pub struct DomObject<'a>(DomNode<'a>);

/// An array node.
#[derive(Clone, Copy)]
pub struct DomArray<'a>(DomNode<'a>);

/// An integer (the only numbers this path accepts).
#[derive(Clone, Copy, Debug)]
pub struct DomInt(i64);

/// The children of a container, in document order.
pub struct Children<'a> {
    doc: &'a Doc<'a>,
    next: u32,
    end: u32,
}

impl<'a> Iterator for Children<'a> {
    type Item = DomNode<'a>;

    fn next(&mut self) -> Option<DomNode<'a>> {
        if self.next >= self.end {
            return None;
        }
        let node = DomNode {
            doc: self.doc,
            i: self.next,
        };
        self.next = node.subtree_end();
        Some(node)
    }
}

impl<'a> DomNode<'a> {
    fn slot(&self) -> &'a Slot<'a> {
        &self.doc.slots[self.i as usize]
    }

    /// The index just past this node's subtree.
    fn subtree_end(&self) -> u32 {
        match self.slot().val {
            Val::Array { end, .. } | Val::Object { end, .. } => end,
            _ => self.i + 1,
        }
    }

    /// Its member name (empty when it is not a member of an object).
    #[must_use]
    pub fn key(&self) -> &'a str {
        &self.slot().key
    }

    /// Its children (members of an object, items of an array; none for a scalar).
    #[must_use]
    pub fn children(&self) -> Children<'a> {
        Children {
            doc: self.doc,
            next: self.i + 1,
            end: self.subtree_end(),
        }
    }

    /// The member named `name`, if this is an object that has one.
    #[must_use]
    pub fn member(&self, name: &str) -> Option<DomNode<'a>> {
        match self.slot().val {
            Val::Object { .. } => self.children().find(|c| c.key() == name),
            _ => None,
        }
    }

    /// Its text, if it is a string.
    #[must_use]
    pub fn str(&self) -> Option<&'a str> {
        match &self.slot().val {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Appends its canonical (RFC 8785) bytes to `out`. If it is an object and `measure` names a
    /// member of it, returns the length of that member's canonical value.
    pub fn write_jcs(&self, out: &mut Vec<u8>, measure: Option<&str>) -> Option<usize> {
        self.write_jcs_with(out, measure, &mut Scratch::default())
    }

    /// [`DomNode::write_jcs`] with a [`Scratch`] kept from one call to the next (a body's
    /// events are written one after another: its stack is grown once, not once per event).
    pub fn write_jcs_with(
        &self,
        out: &mut Vec<u8>,
        measure: Option<&str>,
        scratch: &mut Scratch<'a>,
    ) -> Option<usize> {
        self.write(out, measure, &mut scratch.0)
    }

    /// [`DomNode::write_jcs`] with `scratch`, a stack of (name, node) that each object being
    /// written uses the top of (and leaves as it found it).
    fn write(
        &self,
        out: &mut Vec<u8>,
        measure: Option<&str>,
        scratch: &mut Vec<(&'a Cow<'a, str>, u32)>,
    ) -> Option<usize> {
        match &self.slot().val {
            Val::Null => out.extend_from_slice(b"null"),
            Val::Bool(true) => out.extend_from_slice(b"true"),
            Val::Bool(false) => out.extend_from_slice(b"false"),
            Val::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Val::Str(s) => write_str(s, out),
            Val::Array { .. } => {
                out.push(b'[');
                for (n, item) in self.children().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    item.write(out, None, scratch);
                }
                out.push(b']');
            }
            Val::Object { .. } => return self.write_object(out, measure, scratch),
        }
        None
    }

    fn write_object(
        &self,
        out: &mut Vec<u8>,
        measure: Option<&str>,
        scratch: &mut Vec<(&'a Cow<'a, str>, u32)>,
    ) -> Option<usize> {
        let base = scratch.len();
        let mut plain = true;
        for member in self.children() {
            let key = &member.slot().key;
            // A fold, not `any`: no branch per byte, so it vectorizes.
            plain &= key.bytes().fold(true, |plain, b| plain & (b < 0xEE));
            scratch.push((key, member.i));
        }
        let members = &mut scratch[base..];
        if plain {
            // Without characters at or above U+E000 (UTF-8 lead byte 0xEE), UTF-8 byte order is
            // RFC 8785's UTF-16 order.
            if !members.is_sorted_by(|a, b| byte_order(a.0, b.0).is_lt()) {
                members.sort_unstable_by(|a, b| byte_order(a.0, b.0));
            }
        } else {
            members.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
        }
        let mut measured = None;
        out.push(b'{');
        for k in base..scratch.len() {
            let (key, i) = scratch[k];
            if k > base {
                out.push(b',');
            }
            write_str(key, out);
            out.push(b':');
            let start = out.len();
            DomNode { doc: self.doc, i }.write(out, None, scratch);
            if measure == Some(key) {
                measured = Some(out.len() - start);
            }
        }
        out.push(b'}');
        scratch.truncate(base);
        measured
    }

    fn to_json(self) -> Value {
        match &self.slot().val {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(n) => Value::Number((*n).into()),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Array { .. } => Value::Array(self.children().map(Self::to_json).collect()),
            Val::Object { .. } => Value::Object(
                self.children()
                    .map(|c| (c.key().to_owned(), c.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl Json for Dom {
    type Node<'a> = DomNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = Doc<'static>;

    // A lookup is a scan of the object's members, so a members pass never costs more.
    const KEYS_PER_LOOKUP: usize = MAX_MEMBERS;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(
        buffer: &mut Doc<'static>,
        string: &str,
        f: impl FnOnce(DomNode<'_>) -> T,
    ) -> T {
        buffer.slots.clear();
        buffer.slots.push(Slot {
            key: Cow::Borrowed(""),
            val: Val::Str(Cow::Owned(string.to_owned())),
        });
        f(buffer.root())
    }
}

impl<'a> Node<'a, Dom> for DomNode<'a> {
    type Object = DomObject<'a>;
    type Array = DomArray<'a>;
    type Number = DomInt;

    fn as_object(&self) -> Option<DomObject<'a>> {
        matches!(self.slot().val, Val::Object { .. }).then_some(DomObject(*self))
    }

    fn as_array(&self) -> Option<DomArray<'a>> {
        matches!(self.slot().val, Val::Array { .. }).then_some(DomArray(*self))
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<DomInt> {
        match self.slot().val {
            Val::Int(n) => Some(DomInt(n)),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.slot().val {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.slot().val, Val::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.slot().val {
            Val::Null => JsonType::Null,
            Val::Bool(_) => JsonType::Boolean,
            Val::Int(_) => JsonType::Number,
            Val::Str(_) => JsonType::String,
            Val::Array { .. } => JsonType::Array,
            Val::Object { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        match (&self.slot().val, expected) {
            (Val::Null, Value::Null) => true,
            (Val::Bool(a), Value::Bool(b)) => a == b,
            (Val::Str(a), Value::String(b)) => a == b,
            (Val::Null | Val::Bool(_) | Val::Str(_), _) => false,
            // Numbers compare mathematically and containers member by member: the library's own
            // comparison, on the value this node stands for.
            _ => jsonschema::json::cmp::equal(&self.to_json(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.to_json())
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref(self.doc) as usize,
            self.i,
        ))
    }
}

impl<'a> Object<'a, Dom> for DomObject<'a> {
    type Node = DomNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        match self.0.slot().val {
            Val::Object { len, .. } => len as usize,
            _ => 0,
        }
    }

    fn get(&self, key: &Box<str>) -> Option<DomNode<'a>> {
        self.0.member(key)
    }

    fn members(&self) -> Members<'a> {
        Members(self.0.children())
    }
}

/// An object's members as (name, value).
pub struct Members<'a>(Children<'a>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, DomNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|node| (node.key(), node))
    }
}

impl<'a> Array<'a, Dom> for DomArray<'a> {
    type Node = DomNode<'a>;
    type ElementsIter = Children<'a>;

    fn len(&self) -> usize {
        match self.0.slot().val {
            Val::Array { len, .. } => len as usize,
            _ => 0,
        }
    }

    fn elements(&self) -> Children<'a> {
        self.0.children()
    }
}

impl JsonNumber for DomInt {
    fn as_u64(&self) -> Option<u64> {
        u64::try_from(self.0).ok()
    }

    fn as_i64(&self) -> Option<i64> {
        Some(self.0)
    }

    #[allow(clippy::cast_precision_loss)] // |n| <= 2^53: exact
    fn as_f64(&self) -> Option<f64> {
        Some(self.0 as f64)
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.0.to_string())
    }

    fn to_number(&self) -> Cow<'_, Number> {
        Cow::Owned(Number::from(self.0))
    }

    fn is_integer(&self) -> bool {
        true
    }

    fn is_written_as_integer(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{PreparedEvent, parse_strict, prepare_bytes, prepare_fast};
    use crate::core::jcs;
    use proptest::prelude::*;
    use serde_json::json;

    /// What this path makes of `bytes`: the canonical bytes and the value, or `None`.
    fn fast(bytes: &[u8]) -> Option<(Vec<u8>, Value)> {
        let doc = Doc::parse(bytes)?;
        let mut out = Vec::new();
        doc.root().write_jcs(&mut out, None);
        Some((out, doc.root().to_json()))
    }

    /// The agreement this path promises: if it reads `bytes`, the `Value` path reads the same
    /// value from them and writes the same canonical bytes.
    fn assert_agrees(bytes: &[u8]) -> bool {
        let Some((canonical, value)) = fast(bytes) else {
            return false;
        };
        let strict = parse_strict(bytes).unwrap_or_else(|e| {
            panic!(
                "fast path read what the strict parser rejects ({}): {:?}",
                e.message,
                String::from_utf8_lossy(bytes)
            )
        });
        assert_eq!(
            &value,
            strict.value(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(canonical, jcs::to_vec(strict.value()));
        true
    }

    /// JSON text of `value` with members in an order and spacing chosen by `seed` (serde_json
    /// writes members sorted; posted events seldom are).
    fn text(value: &Value, seed: u64, out: &mut String) {
        let space = if seed.is_multiple_of(3) { " \n" } else { "" };
        match value {
            Value::Array(items) => {
                out.push('[');
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(space);
                    text(item, seed / 3 + n as u64, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                if !members.is_empty() {
                    let turn = (seed as usize) % members.len();
                    members.rotate_left(turn);
                    if !seed.is_multiple_of(2) {
                        members.reverse();
                    }
                }
                out.push('{');
                for (n, (key, item)) in members.into_iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push_str(space);
                    out.push(':');
                    text(item, seed / 5 + n as u64, out);
                }
                out.push_str(space);
                out.push('}');
            }
            scalar => out.push_str(&serde_json::to_string(scalar).unwrap()),
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-(1i64 << 53) - 2..(1i64 << 53) + 2).prop_map(|n| json!(n)),
            (-1000i64..1000).prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::String),
            "[\\u{0}-\\u{1f}\"\\\\/a\\u{7f}\\u{e9}\\u{2028}\\u{e000}\\u{fffd}\\u{1F600}]{0,8}"
                .prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    "[a-zA-Z\\u{e9}\\u{e000}\\u{ffff}\\u{fb33}\\u{1F600}\\u{10000}_\\\\\"]{0,4}",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn reads_what_it_should_and_leaves_the_rest() {
        for ok in [
            "0",
            "-7",
            "9007199254740992",
            "-9007199254740992",
            "1234567890123456",
            r#"  {"b" : [1, true, null, "x"], "a":{}}  "#,
            r#""\u00e9\ud83d\ude00\n\t\"\\\/""#,
            r#"{"\u0061b":1,"ab\u00e9":2}"#,
            "[[[]]]",
        ] {
            assert!(assert_agrees(ok.as_bytes()), "should be read: {ok}");
        }
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(assert_agrees(deep(MAX_DEPTH).as_bytes()));
        let members = |n: usize| {
            let inner: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            format!("{{{}}}", inner.join(","))
        };
        assert!(assert_agrees(members(MAX_MEMBERS).as_bytes()));
        // Left to the Value path: its errors, and what it reads but this path does not.
        for left in [
            deep(MAX_DEPTH + 1),
            members(MAX_MEMBERS + 1),
            "0.5".into(),
            "1e3".into(),
            "-0".into(),
            "01".into(),
            "12345678901234567".into(),
            "9007199254740993".into(),
            r#""\ud800""#.into(),
            r#""\udc00x""#.into(),
            r#""\u0000""#.into(),
            r#""\x""#.into(),
            "\"a\u{1}\"".into(),
            r#"{"a":1,"a":2}"#.into(),
            r#"{"a":1,"\u0061":2}"#.into(),
            "{} x".into(),
            "[1,]".into(),
            "{\"a\":1,}".into(),
            "".into(),
            "tru".into(),
        ] {
            assert!(
                Doc::parse(left.as_bytes()).is_none(),
                "should be left: {left}"
            );
        }
        assert!(Doc::parse(b"\"\xff\"").is_none());
        let values = |n: usize| format!("[{}]", vec!["0"; n].join(","));
        assert!(Doc::parse(values(MAX_NODES - 1).as_bytes()).is_some());
        assert!(
            Doc::parse(values(MAX_NODES).as_bytes()).is_none(),
            "the array is a value too"
        );
    }

    fn base_event() -> Value {
        json!({
            "event_id": "evt-1",
            "type": "approval.approved",
            "request_id": "req-1",
            "occurred_at": "2026-11-21T10:00:00.123Z",
            "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
            "action": {"name": "export customers", "category": "data_export", "risk": "high"},
            "resource": {"id": "s3://bucket/customers", "environment": "prod", "type": "bucket"},
            "reviewer": {"id": "bob", "idp": "okta", "groups": ["security", "sre"]},
            "channel": "slack",
            "labels": {"team": "data", "ticket": "OPS-1"},
            "context": {"prompt": "export \"all\" rows\n", "tokens": 1200, "nested": [{"b": 1, "a": null}]}
        })
    }

    /// The fast path's promise at the event level: when it answers, it answers exactly what the
    /// usual path does.
    fn assert_same_events(body: &[u8]) -> bool {
        let Some(events) = prepare_fast(body, true, 1000) else {
            return false;
        };
        let slow = parse_strict(body)
            .map(|json| json.into_items())
            .unwrap_or_else(|e| {
                panic!(
                    "fast path took a body the usual path rejects: {}",
                    e.message
                )
            });
        let slow: Vec<PreparedEvent> = slow
            .iter()
            .map(|item| {
                crate::core::event::prepare_item(item, &[]).unwrap_or_else(|e| {
                    panic!(
                        "fast path took an event the usual path rejects ({e:?}): {}",
                        String::from_utf8_lossy(body)
                    )
                })
            })
            .collect();
        assert_eq!(events, slow, "{}", String::from_utf8_lossy(body));
        true
    }

    #[test]
    fn valid_events_take_the_fast_path_and_match() {
        let event = base_event();
        for seed in 0..12 {
            let mut body = String::new();
            text(&event, seed, &mut body);
            assert!(
                assert_same_events(body.as_bytes()),
                "fast path not taken: {body}"
            );
            assert_eq!(
                prepare_fast(body.as_bytes(), true, 10).unwrap()[0],
                prepare_bytes(body.as_bytes()).unwrap()
            );
        }
        let list = json!([base_event(), {"event_id": "e2", "type": "action.executed",
            "request_id": "r", "occurred_at": "2026-11-21T10:00:00Z",
            "actor": {"id": "a", "kind": "pipeline"}, "action": {"name": "n", "category": "other"},
            "resource": {"id": "x", "environment": "e"}}]);
        assert!(assert_same_events(list.to_string().as_bytes()));
        assert!(
            prepare_fast(list.to_string().as_bytes(), true, 1).is_none(),
            "over the limit"
        );
        // One line of NDJSON is one item: an array there is not a list of events.
        assert!(prepare_fast(list.to_string().as_bytes(), false, 10).is_none());
    }

    #[test]
    fn invalid_and_signed_events_are_left_to_the_usual_path() {
        let cases = [
            json!({"event": base_event(), "origin_signature": {"key_id": "00000000", "signature": ""}}),
            json!([]),
            json!("event"),
            json!([base_event(), 1]),
        ];
        for body in cases {
            assert!(
                prepare_fast(body.to_string().as_bytes(), true, 10).is_none(),
                "{body}"
            );
        }
        let mut big = base_event();
        big["context"] = json!({"prompt": "x".repeat(crate::core::event::MAX_CONTEXT_BYTES)});
        assert!(prepare_fast(big.to_string().as_bytes(), true, 10).is_none());
        let mut at_limit = base_event();
        let room = crate::core::event::MAX_CONTEXT_BYTES - r#"{"prompt":""}"#.len();
        at_limit["context"] = json!({"prompt": "x".repeat(room)});
        assert!(assert_same_events(at_limit.to_string().as_bytes()));
    }

    /// Values for a field that sit on either side of the schema's rules.
    fn arb_field_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!(null)),
            Just(json!(true)),
            Just(json!(7)),
            Just(json!(1.5)),
            Just(json!([])),
            Just(json!({})),
            Just(json!(["a", "b"])),
            Just(json!({"id": "x"})),
            Just(json!({"id": "x", "kind": "human"})),
            Just(json!({"id": "x", "kind": "agent", "extra": 1})),
            Just(json!({"name": "n", "category": "secret_access", "risk": "critical"})),
            Just(json!({"id": "x", "environment": "prod"})),
            Just(json!({"id": "", "environment": "prod"})),
            prop_oneof![
                Just(0usize),
                Just(1),
                Just(255),
                Just(256),
                Just(257),
                Just(1024),
                Just(1025),
                Just(4096),
                Just(4097),
            ]
            .prop_flat_map(|n| {
                prop_oneof![
                    Just('a'),
                    Just('\u{e9}'),
                    Just('\u{1F600}'),
                    Just('"'),
                    Just('\n')
                ]
                .prop_map(move |c| Value::String(std::iter::repeat_n(c, n).collect()))
            }),
            prop_oneof![
                Just("approval.requested"),
                Just("approval.approved"),
                Just("approval.denied"),
                Just("action.executed"),
                Just("approval.maybe"),
                Just("slack"),
                Just("web"),
                Just("pager"),
                Just("data_export"),
                Just("agent"),
                Just("robot"),
                Just("2026-11-21T10:00:00Z"),
                Just("2026-11-21t10:00:00z"),
                Just("2026-02-30T10:00:00Z"),
                Just("2026-11-21T23:59:60Z"),
                Just("2026-11-21T24:00:00Z"),
                Just("2026-11-21T10:00:00.1234567890Z"),
                Just("2026-11-21T10:00:00+25:00"),
                Just("2026-11-21T10:00:00-07:00"),
                Just("2026-11-21 10:00:00Z"),
            ]
            .prop_map(|s| json!(s)),
            prop::collection::btree_map("[a-z]{0,3}|[a-z]{127,129}", "[a-z]{0,2}", 0..4)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k, json!(v))).collect())),
            (60usize..70).prop_map(|n| {
                Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
            }),
            (62usize..67)
                .prop_map(|n| Value::Array((0..n).map(|i| json!(format!("g{i}"))).collect())),
            arb_json(),
        ]
    }

    /// Where a mutation lands: a top-level member or one inside a known object.
    const FIELDS: &[&str] = &[
        "event_id",
        "type",
        "request_id",
        "occurred_at",
        "actor",
        "action",
        "resource",
        "reviewer",
        "channel",
        "policy",
        "reason",
        "emergency",
        "context",
        "labels",
        "extra",
        "actor/id",
        "actor/kind",
        "actor/display_name",
        "actor/on_behalf_of",
        "actor/extra",
        "action/name",
        "action/category",
        "action/risk",
        "resource/id",
        "resource/environment",
        "resource/type",
        "reviewer/id",
        "reviewer/groups",
        "reviewer/display_name",
        "labels/x",
        "policy/id",
    ];

    fn arb_event() -> impl Strategy<Value = Value> {
        let edit = (
            0..FIELDS.len(),
            prop::option::weighted(0.85, arb_field_value()),
        );
        prop::collection::vec(edit, 0..4).prop_map(|edits| {
            let mut event = base_event();
            for (field, value) in edits {
                let (parent, name) = match FIELDS[field].split_once('/') {
                    Some((p, n)) => (Some(p), n),
                    None => (None, FIELDS[field]),
                };
                let target = match parent {
                    Some(p) => event.get_mut(p),
                    None => Some(&mut event),
                };
                let Some(Value::Object(map)) = target else {
                    continue;
                };
                match value {
                    Some(v) => map.insert(name.to_owned(), v),
                    None => map.remove(name),
                };
            }
            event
        })
    }

    proptest! {
        /// The first-byte shortcut orders names as `str::cmp` does (shared prefixes, empty names
        /// and multi-byte characters included).
        #[test]
        fn byte_order_is_str_order(a in "[ab\u{e9}\u{e000}]{0,4}", b in "[ab\u{e9}\u{e000}]{0,4}") {
            prop_assert_eq!(byte_order(&a, &b), a.cmp(&b));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_the_strict_parser(value in arb_json(), seed in any::<u64>()) {
            let mut body = String::new();
            text(&value, seed, &mut body);
            assert_agrees(body.as_bytes());
        }

        #[test]
        fn agrees_on_edited_text(value in arb_json(), seed in any::<u64>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), op in 0u8..3) {
            let mut body = String::new();
            text(&value, seed, &mut body);
            let mut bytes = body.into_bytes();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => { bytes.remove(i); }
                    _ => bytes.insert(i, byte),
                }
            }
            assert_agrees(&bytes);
        }

        #[test]
        fn events_agree_with_the_usual_path(event in arb_event(), seed in any::<u64>()) {
            let mut body = String::new();
            text(&event, seed, &mut body);
            assert_same_events(body.as_bytes());
        }
    }
}
