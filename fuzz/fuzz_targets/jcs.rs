//! The one-pass canonical-JSON check (`core::jcs::check`) and leaf parse (`Leaf::parse`) that
//! export and verify run on every stored leaf, against the slow path they replaced. Never a panic,
//! and for any input:
//!
//! - `check` accepts exactly the bytes that `serde_json` parses and `jcs::to_vec` writes back
//!   byte for byte (`jcs::to_vec` is held equal to `serde_jcs` by the unit tests);
//! - an accepted value's outline reads what member lookups on the parsed tree read (names with
//!   `/` or `~` aside: a pointer would escape them);
//! - `Leaf::parse` accepts exactly the bytes that parse into the leaf's fields, pass the field
//!   checks, and re-encode (`encode_leaf`) to themselves, and reads the same fields.

#![no_main]

use ledger::core::hash::{from_hex, to_hex};
use ledger::core::jcs;
use ledger::core::leaf::{
    Leaf, LeafHeader, OriginSignature, encode_leaf, format_micros, parse_micros,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let tree = serde_json::from_slice::<Value>(data).ok();
    let canonical = tree.as_ref().is_some_and(|v| jcs::to_vec(v) == data);
    let checked = jcs::check(data);
    assert_eq!(
        checked.is_ok(),
        canonical,
        "check disagrees with re-encoding"
    );
    if let (Ok(outline), Some(Value::Object(top))) = (&checked, &tree) {
        for (k, v) in top {
            if k.contains(['/', '~']) {
                continue;
            }
            let pointer = format!("/{k}");
            assert_eq!(outline.str(&pointer).as_deref(), v.as_str(), "{pointer}");
            assert_eq!(outline.bool(&pointer), v.as_bool(), "{pointer}");
            let Value::Object(inner) = v else { continue };
            for (k2, v2) in inner {
                if k2.contains(['/', '~']) {
                    continue;
                }
                let pointer = format!("/{k}/{k2}");
                assert_eq!(outline.str(&pointer).as_deref(), v2.as_str(), "{pointer}");
                assert_eq!(outline.bool(&pointer), v2.as_bool(), "{pointer}");
            }
        }
    }

    let ours = Leaf::parse(data).ok().map(|leaf| {
        let event: Value = serde_json::from_slice(leaf.event).expect("a checked event parses");
        (
            leaf.index,
            leaf.ingested_at.to_owned(),
            leaf.source.into_owned(),
            leaf.prev_leaf_hash,
            leaf.origin_signature,
            event,
        )
    });
    assert_eq!(
        ours,
        reference(data),
        "Leaf::parse disagrees with the reference"
    );
});

/// The leaf parse `Leaf::parse` replaced: into a tree, field checks, and the re-encoding must be
/// the bytes.
#[allow(clippy::type_complexity)]
fn reference(
    bytes: &[u8],
) -> Option<(
    u64,
    String,
    String,
    [u8; 32],
    Option<OriginSignature>,
    Value,
)> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Old {
        v: u64,
        index: u64,
        ingested_at: String,
        source: String,
        prev_leaf_hash: String,
        event: Value,
        #[serde(default)]
        origin_signature: Option<OriginSignature>,
    }
    let old: Old = serde_json::from_slice(bytes).ok()?;
    let prev = from_hex(&old.prev_leaf_hash)?;
    let micros = parse_micros(&old.ingested_at)?;
    let fields_ok = old.v == 1
        && to_hex(&prev) == old.prev_leaf_hash
        && format_micros(micros).as_deref() == Some(old.ingested_at.as_str())
        && old
            .origin_signature
            .as_ref()
            .is_none_or(OriginSignature::is_well_formed);
    let header = LeafHeader {
        index: old.index,
        ingested_at: &old.ingested_at,
        source: &old.source,
        prev_leaf_hash: &prev,
        origin_signature: old.origin_signature.as_ref(),
    };
    let leaf = encode_leaf(&header, &jcs::to_vec(&old.event));
    (fields_ok && leaf == bytes).then_some((
        old.index,
        old.ingested_at,
        old.source,
        prev,
        old.origin_signature,
        old.event,
    ))
}
