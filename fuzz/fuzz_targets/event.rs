//! The event parser and validator, as `POST /v1/events` runs them: strict JSON, a top-level array
//! split into items, each item through `prepare_item` with and without origin keys. Never a panic;
//! and for every accepted event:
//!
//! - its canonical bytes are a fixed point (parsed and prepared again, the same bytes);
//! - the leaf built from them parses back (`parse_row_leaf`: `Leaf::parse` noting the row's
//!   fields), gives the same bytes for the event, and projects to bundle columns (an accepted
//!   event that cannot be exported would fail every export of its period);
//! - a source with an origin key must sign: the same event unsigned is refused, signed by the key
//!   it is accepted with the same bytes, and signed by another key or with a flipped bit refused;
//! - an envelope is never accepted from a source without keys;
//! - the ingest fast path (`prepare_fast`, one borrowed parse) answers only what the usual path
//!   answers: when it takes a body (as a JSON body, or as one NDJSON line), the strict parser and
//!   `prepare_item` accept every item of it and prepare the very same events.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ledger::core::event::{
    MAX_DEPTH, PreparedEvent, StrictJson, parse_strict, prepare, prepare_fast, prepare_item,
};
use ledger::core::hash::{Blake3, TreeHasher};
use ledger::core::leaf::{LeafHeader, OriginSignature, encode_leaf, format_micros};
use ledger::core::note::{SignerKey, VerifierKey};
use ledger::core::projection::{Projection, parse_row_leaf};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// Items per input checked (the HTTP path takes up to `--max-request-events`).
const MAX_ITEMS: usize = 8;

/// The origin key of the seeds' signing source (fuzz/seeds/origin.key), so their envelopes verify.
static SOURCE_KEY: LazyLock<SignerKey> = LazyLock::new(|| {
    SignerKey::parse(include_str!("../seeds/origin.key")).expect("fuzz/seeds/origin.key parses")
});
static OTHER_KEY: LazyLock<SignerKey> =
    LazyLock::new(|| SignerKey::from_seed("fuzz-other", &[6; 32]).expect("valid name"));

fuzz_target!(|data: &[u8]| {
    check_fast_path(data);
    let Ok(json) = parse_strict(data) else {
        return;
    };
    let keys: &[VerifierKey] = &[SOURCE_KEY.verifier().clone()];
    for item in json.into_items().into_iter().take(MAX_ITEMS) {
        let unsigned = prepare_item(&item, &[]);
        let keyed = prepare_item(&item, keys);
        let envelope = item
            .value()
            .as_object()
            .is_some_and(|o| o.contains_key("event"));
        if envelope {
            assert!(unsigned.is_err(), "an envelope accepted without keys");
        } else {
            assert!(
                keyed.is_err(),
                "an unsigned event accepted from a signing source"
            );
        }
        if let Ok(event) = &unsigned {
            assert_eq!(prepare(&item).as_ref(), Ok(event));
            check_accepted(event, item.value());
            check_signing(event, item.value());
        }
        if let Ok(event) = &keyed {
            let sig = event
                .origin_signature
                .as_ref()
                .expect("a keyed source's event is signed");
            let id = sig.key_id_bytes().expect("well-formed key id");
            let bytes = sig.signature_bytes().expect("well-formed signature");
            assert_eq!(id, SOURCE_KEY.verifier().id());
            assert!(SOURCE_KEY.verifier().verify_bytes(&event.jcs, &bytes));
            check_accepted(event, &item.value()["event"]);
        }
    }
});

/// When the fast path takes `data`, the usual path accepts it and prepares the same events.
fn check_fast_path(data: &[u8]) {
    for list in [true, false] {
        let Some(fast) = prepare_fast(data, list, MAX_ITEMS) else {
            continue;
        };
        let json = parse_strict(data).expect("the fast path took what the strict parser refuses");
        let items = if list { json.into_items() } else { vec![json] };
        assert_eq!(fast.len(), items.len());
        for (event, item) in fast.iter().zip(&items) {
            assert_eq!(
                prepare_item(item, &[]).as_ref(),
                Ok(event),
                "the fast path prepared an event differently"
            );
        }
    }
}

/// The invariants of an accepted event (see the module comment).
fn check_accepted(event: &PreparedEvent, value: &Value) {
    assert_eq!(value["event_id"].as_str(), Some(event.event_id.as_str()));
    assert_eq!(
        value["request_id"].as_str(),
        Some(event.request_id.as_str())
    );
    let again = parse_strict(&event.jcs).expect("canonical bytes parse strictly");
    let again = prepare(&again).expect("canonical bytes validate");
    assert_eq!(again.jcs, event.jcs, "canonical form is not a fixed point");

    let ingested_at = format_micros(1_800_000_000_123_456).expect("in range");
    let prev = Blake3::leaf(b"previous");
    let leaf_bytes = encode_leaf(
        &LeafHeader {
            index: 7,
            ingested_at: &ingested_at,
            source: "edge-1",
            prev_leaf_hash: &prev,
            origin_signature: event.origin_signature.as_ref(),
        },
        &event.jcs,
    );
    let leaf = parse_row_leaf(&leaf_bytes).expect("a leaf of an accepted event parses");
    assert_eq!(leaf.event, event.jcs.as_slice());
    assert_eq!(leaf.prev_leaf_hash, prev);
    assert_eq!(leaf.origin_signature, event.origin_signature);
    let row = Projection::of(&leaf).expect("an accepted event projects to bundle columns");
    assert_eq!(row.event_id, event.event_id);
    assert_eq!(row.request_id, event.request_id);
    assert_eq!(row.index, 7);
}

/// An accepted unsigned event, sent by a source with an origin key.
fn check_signing(event: &PreparedEvent, value: &Value) {
    let keys = [SOURCE_KEY.verifier().clone()];
    let signature = SOURCE_KEY.sign_bytes(&event.jcs);
    let Some(good) = envelope(value, &SOURCE_KEY, &signature) else {
        return;
    };
    let signed = prepare_item(&good, &keys)
        .expect("an accepted event, signed by the source's key, is accepted");
    assert_eq!(signed.jcs, event.jcs);
    let sig = signed.origin_signature.as_ref().expect("kept");
    assert_eq!(sig.signature_bytes(), Some(signature));
    check_accepted(&signed, value);

    // Signed by a key the source does not have.
    let by_other = OTHER_KEY.sign_bytes(&event.jcs);
    let refused = |key: &SignerKey, signature: &[u8; 64]| {
        let item = envelope(value, key, signature).expect("wrapped once already");
        prepare_item(&item, &keys).is_err()
    };
    assert!(refused(&OTHER_KEY, &by_other));
    // The source's key ID, another key's signature.
    assert!(refused(&SOURCE_KEY, &by_other));
    // One bit of the signature flipped (chosen by the event's hash).
    let mut flipped = signature;
    let bit = usize::from(Blake3::leaf(&event.jcs)[0]) % 512;
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(refused(&SOURCE_KEY, &flipped));
}

/// `{"event": value, "origin_signature": {...}}` as the strict parser gives it to `prepare_item`.
fn envelope(value: &Value, key: &SignerKey, signature: &[u8; 64]) -> Option<StrictJson> {
    let id: String = key
        .verifier()
        .id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sig = OriginSignature {
        key_id: id,
        signature: B64.encode(signature),
    };
    let text =
        serde_json::to_vec(&json!({"event": value, "origin_signature": sig})).expect("serializes");
    match parse_strict(&text) {
        Ok(json) => Some(json),
        // The depth bound is the request body's (docs/formats.md): an event at the limit cannot be
        // wrapped in an envelope. Nothing else may fail.
        Err(e) => {
            assert_eq!(depth(value), MAX_DEPTH, "envelope refused: {}", e.message);
            None
        }
    }
}

/// Nesting depth as `parse_strict` counts it: levels of arrays and objects (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
