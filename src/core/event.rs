//! Approval events: strict JSON parsing, validation against the v1 schema, canonical (JCS) bytes.
//!
//! Owns: what a valid event is. The rules live in `schemas/approval-event.v1.schema.json` (compiled
//! in, the single source of truth); this module adds only input-hygiene bounds JSON Schema cannot
//! express: no duplicate keys, numbers within +/-2^53 (so JCS cannot change them), no NUL characters,
//! nesting depth, and the size of `context`. Must not touch: indexes, time, storage.

use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::dom::{Doc, Dom, DomNode, Scratch};
use super::leaf::OriginSignature;
use super::note::VerifierKey;

/// The v1 event schema, exactly as shipped in `schemas/`.
pub const SCHEMA_V1: &str = include_str!("../../schemas/approval-event.v1.schema.json");
/// Deepest nesting of arrays and objects accepted in an event (the top-level object is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Largest `context`, in bytes of its canonical JSON.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// Largest integer magnitude that survives JCS (IEEE-754 doubles): 2^53.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;
/// The same bound for integer literals.
const MAX_EXACT_INT: u64 = 1 << 53;
/// Most per-field messages reported for one event.
const MAX_DETAILS_PER_EVENT: usize = 16;

/// One problem with one event, naming the field by JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON Pointer to the offending value ("" for the whole event).
    pub path: String,
    /// What is wrong, in a short sentence.
    pub message: String,
}

impl FieldError {
    fn root(message: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            message: message.into(),
        }
    }
}

/// An event that passed every check, with the bytes that go into its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEvent {
    /// The event's `event_id` (idempotency key within its source).
    pub event_id: String,
    /// The event's `request_id`.
    pub request_id: String,
    /// RFC 8785 canonical JSON of the event object: "same body" for idempotency means the same
    /// canonical JSON.
    pub jcs: Vec<u8>,
    /// The source's signature over `jcs`, verified, if it signs.
    pub origin_signature: Option<OriginSignature>,
}

/// The compiled v1 validator (schema compiled once per process).
static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA_V1).expect("shipped schema is JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("shipped schema compiles")
});

/// The same validator over [`Doc`] nodes: the fast path of [`prepare_fast`].
static DOM_VALIDATOR: LazyLock<jsonschema::Validator<Dom>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA_V1).expect("shipped schema is JSON");
    jsonschema::options_for::<Dom>()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("shipped schema compiles")
});

/// JSON that passed [`parse_strict`]: no duplicate keys, exact numbers, no NUL, bounded depth.
/// Only this type can be validated, so no event skips the hygiene checks.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictJson(Value);

impl StrictJson {
    /// The parsed value.
    #[must_use]
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The events of a request body: the items of a top-level array, or the value itself.
    #[must_use]
    pub fn into_items(self) -> Vec<StrictJson> {
        match self.0 {
            Value::Array(items) => items.into_iter().map(StrictJson).collect(),
            other => vec![StrictJson(other)],
        }
    }
}

/// Parses one event's JSON text strictly (see [`parse_strict`]) and validates it.
pub fn prepare_bytes(bytes: &[u8]) -> Result<PreparedEvent, Vec<FieldError>> {
    let json = parse_strict(bytes).map_err(|e| vec![e])?;
    prepare(&json)
}

/// Validates an event against the v1 schema and the `context` size cap, then canonicalizes it.
pub fn prepare(json: &StrictJson) -> Result<PreparedEvent, Vec<FieldError>> {
    let value = &json.0;
    // `is_valid` stops at the first failure and builds no error values; the errors are collected
    // only for an invalid event.
    let mut errors: Vec<FieldError> = if VALIDATOR.is_valid(value) {
        Vec::new()
    } else {
        VALIDATOR
            .iter_errors(value)
            .take(MAX_DETAILS_PER_EVENT)
            .map(|e| FieldError {
                path: e.instance_path().as_str().to_owned(),
                message: e.masked().to_string(),
            })
            .collect()
    };
    if let Some(context) = value.get("context") {
        let size = super::jcs::to_vec(context).len();
        if size > MAX_CONTEXT_BYTES {
            errors.push(FieldError {
                path: "/context".into(),
                message: format!(
                    "context is {size} bytes of canonical JSON; the limit is {MAX_CONTEXT_BYTES}"
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    let jcs = super::jcs::to_vec(value);
    Ok(PreparedEvent {
        event_id: text("event_id"),
        request_id: text("request_id"),
        jcs,
        origin_signature: None,
    })
}

/// The events of `bytes` when every one is a valid plain event (no signed envelope), read in one
/// borrowed parse ([`super::dom`]); `None` otherwise, and then the caller prepares them the usual
/// way ([`parse_strict`] and [`prepare_item`]), which decides and words every error. When this
/// answers `Some`, the events are exactly those the usual way prepares.
///
/// With `list`, a top-level array holds the events (a JSON body); without, `bytes` are one item
/// (an NDJSON line). More than `max_events` events also answer `None`.
#[must_use]
pub fn prepare_fast(bytes: &[u8], list: bool, max_events: usize) -> Option<Vec<PreparedEvent>> {
    let doc = Doc::parse(bytes)?;
    let root = doc.root();
    let items = list
        .then(|| jsonschema::json::Node::as_array(&root))
        .flatten()
        .map(|a| jsonschema::json::Array::len(&a));
    let is_list = items.is_some();
    let mut events = Vec::with_capacity(items.unwrap_or(1).min(max_events));
    let mut scratch = Scratch::default();
    let mut prepare = |item| -> Option<()> {
        if events.len() == max_events {
            return None;
        }
        events.push(prepare_node(item, &mut scratch)?);
        Some(())
    };
    if is_list {
        for item in root.children() {
            prepare(item)?;
        }
    } else {
        prepare(root)?;
    }
    (!events.is_empty()).then_some(events)
}

fn prepare_node<'a>(node: DomNode<'a>, scratch: &mut Scratch<'a>) -> Option<PreparedEvent> {
    // The two ids, in one pass over the members (names are unique: the parser refuses repeats).
    let (mut event_id, mut request_id) = (None, None);
    for member in node.children() {
        match member.key() {
            // A signed envelope is the usual path's to open.
            "event" => return None,
            "event_id" => event_id = member.str(),
            "request_id" => request_id = member.str(),
            _ => {}
        }
    }
    if !DOM_VALIDATOR.is_valid(node) {
        return None;
    }
    let mut jcs = Vec::with_capacity(768);
    let context = node.write_jcs_with(&mut jcs, Some("context"), scratch);
    if context.is_some_and(|size| size > MAX_CONTEXT_BYTES) {
        return None;
    }
    Some(PreparedEvent {
        event_id: event_id?.to_owned(),
        request_id: request_id?.to_owned(),
        jcs,
        origin_signature: None,
    })
}

/// Prepares one item of a request from a source whose registered origin keys are `origin_keys`.
///
/// An item is an event, or a signed envelope `{"event": {...}, "origin_signature": {"key_id":
/// "<8 hex>", "signature": "<base64>"}}` whose signature is Ed25519 over the event's canonical
/// (RFC 8785) bytes by one of the source's keys. A source with keys must sign every event; a source
/// without may not send signatures (nothing could check them).
pub fn prepare_item(
    json: &StrictJson,
    origin_keys: &[VerifierKey],
) -> Result<PreparedEvent, Vec<FieldError>> {
    let value = &json.0;
    let envelope = value.as_object().filter(|o| o.contains_key("event"));
    let Some(envelope) = envelope else {
        if !origin_keys.is_empty() {
            return Err(vec![FieldError::root(
                "this source has an origin key: send {\"event\": ..., \"origin_signature\": {\"key_id\", \"signature\"}}",
            )]);
        }
        return prepare(json);
    };
    let at = |path: &str, message: String| FieldError {
        path: path.to_owned(),
        message,
    };
    if let Some(extra) = envelope
        .keys()
        .find(|k| *k != "event" && *k != "origin_signature")
    {
        return Err(vec![at(
            &format!("/{extra}"),
            "a signed envelope has only event and origin_signature".into(),
        )]);
    }
    let signature: OriginSignature = envelope
        .get("origin_signature")
        .ok_or_else(|| vec![at("/origin_signature", "missing".into())])
        .and_then(|v| {
            serde_json::from_value(v.clone())
                .map_err(|e| vec![at("/origin_signature", e.to_string())])
        })?;
    let (Some(id), Some(sig)) = (signature.key_id_bytes(), signature.signature_bytes()) else {
        return Err(vec![at(
            "/origin_signature",
            "key_id must be 8 lowercase hex digits and signature base64 of 64 bytes".into(),
        )]);
    };
    if origin_keys.is_empty() {
        return Err(vec![at(
            "/origin_signature",
            "this source has no origin key registered (`ledger sources add-key`)".into(),
        )]);
    }
    let mut prepared = prepare(&StrictJson(envelope["event"].clone())).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| FieldError {
                path: format!("/event{}", e.path),
                message: e.message,
            })
            .collect::<Vec<_>>()
    })?;
    let Some(key) = origin_keys.iter().find(|k| k.id() == id) else {
        return Err(vec![at(
            "/origin_signature/key_id",
            format!(
                "{} is not one of this source's origin keys",
                signature.key_id
            ),
        )]);
    };
    if !key.verify_bytes(&prepared.jcs, &sig) {
        return Err(vec![at(
            "/origin_signature/signature",
            "does not verify over the event's canonical (RFC 8785) bytes".into(),
        )]);
    }
    prepared.origin_signature = Some(signature);
    Ok(prepared)
}

/// Parses JSON text into a `Value`, rejecting what plain `serde_json` would let through:
/// duplicate object keys (last-wins parsing lets two readers see two events), numbers beyond
/// +/-2^53, NUL characters, and nesting deeper than [`MAX_DEPTH`]. Invalid UTF-8 is rejected too.
pub fn parse_strict(bytes: &[u8]) -> Result<StrictJson, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 1 }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| FieldError::root(format!("invalid JSON: {e}")))?;
    Ok(StrictJson(value))
}

/// A `Value` deserializer with the checks of [`parse_strict`]; `depth` is that of the value it reads.
struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Strict {
    fn number<E: de::Error>(f: f64, n: serde_json::Number) -> Result<Value, E> {
        if !f.is_finite() || f.abs() > MAX_EXACT {
            return Err(E::custom(
                "number beyond +/-2^53 cannot be represented exactly",
            ));
        }
        Ok(Value::Number(n))
    }

    fn string<E: de::Error>(s: String) -> Result<Value, E> {
        if s.contains('\0') {
            return Err(E::custom("NUL character in string"));
        }
        Ok(Value::String(s))
    }

    fn nest<E: de::Error>(&self) -> Result<(), E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        // Compare as integers: `v as f64` would round 2^53 + 1 down to 2^53.
        if v.unsigned_abs() > MAX_EXACT_INT {
            return Err(E::custom(
                "number beyond +/-2^53 cannot be represented exactly",
            ));
        }
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_EXACT_INT {
            return Err(E::custom(
                "number beyond +/-2^53 cannot be represented exactly",
            ));
        }
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        let n = serde_json::Number::from_f64(v).ok_or_else(|| E::custom("number is not finite"))?;
        Self::number(v, n)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Self::string(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Self::string(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.nest()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            depth: self.depth + 1,
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.nest()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key.contains('\0') {
                return Err(de::Error::custom("NUL character in object key"));
            }
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate object key {key:?}"
                )));
            }
            let value = map.next_value_seed(Strict {
                depth: self.depth + 1,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "event_id": "evt-1",
            "type": "approval.approved",
            "request_id": "req-1",
            "occurred_at": "2026-11-21T10:00:00Z",
            "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
            "action": {"name": "export customers", "category": "data_export", "risk": "high"},
            "resource": {"id": "s3://bucket/customers", "environment": "prod"},
            "reviewer": {"id": "bob", "idp": "okta"},
            "channel": "slack"
        })
    }

    fn check(value: &Value) -> Result<PreparedEvent, Vec<FieldError>> {
        prepare_bytes(value.to_string().as_bytes())
    }

    fn paths(value: &Value) -> Vec<String> {
        check(value)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn valid_event_is_canonicalized() {
        let e = check(&sample()).unwrap();
        assert_eq!(e.event_id, "evt-1");
        assert!(e.jcs.starts_with(br#"{"action":{"category":"data_export""#));
    }

    #[test]
    fn schema_rules_name_the_field() {
        let mut v = sample();
        v["actor"]["kind"] = json!("robot");
        assert_eq!(paths(&v), ["/actor/kind"]);

        let mut v = sample();
        v.as_object_mut().unwrap().remove("reviewer");
        assert!(!paths(&v).is_empty(), "approved without reviewer must fail");

        let mut v = sample();
        v["surprise"] = json!(1);
        assert_eq!(paths(&v), [""]);

        let mut v = sample();
        v["occurred_at"] = json!("2026-13-45T99:00:00Z");
        assert_eq!(paths(&v), ["/occurred_at"]);

        let mut v = sample();
        v["type"] = json!("approval.maybe");
        assert_eq!(paths(&v), ["/type"]);
    }

    #[test]
    fn strict_parser_rejects_ambiguous_json() {
        assert!(
            parse_strict(br#"{"a":1,"a":2}"#)
                .unwrap_err()
                .message
                .contains("duplicate")
        );
        assert!(
            parse_strict(b"9007199254740993")
                .unwrap_err()
                .message
                .contains("2^53")
        );
        assert!(parse_strict(b"9007199254740992").is_ok());
        assert!(
            parse_strict(b"-9007199254740993")
                .unwrap_err()
                .message
                .contains("2^53")
        );
        assert!(parse_strict(b"1e300").unwrap_err().message.contains("2^53"));
        assert!(parse_strict(b"0.5").is_ok());
        assert!(
            parse_strict(br#""a\u0000b""#)
                .unwrap_err()
                .message
                .contains("NUL")
        );
        assert!(parse_strict(b"\"\xff\"").is_err());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(
            parse_strict(deep.as_bytes())
                .unwrap_err()
                .message
                .contains("nested")
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_strict(ok.as_bytes()).is_ok());
        assert!(parse_strict(b"{} x").is_err());
    }

    #[test]
    fn context_is_size_capped() {
        let mut v = sample();
        v["context"] = json!({"prompt": "x".repeat(MAX_CONTEXT_BYTES)});
        assert_eq!(paths(&v), ["/context"]);
        v["context"] = json!({"prompt": "x".repeat(100), "n": 1.5});
        assert!(check(&v).is_ok());
    }
}
