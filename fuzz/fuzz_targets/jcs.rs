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

use ledger::core::jcs::{self, Outline};
use ledger::core::leaf::{Leaf, parse_by_reencoding};
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
            check_member(outline, &[k], v);
            if let Value::Object(inner) = v {
                for (k2, v2) in inner {
                    check_member(outline, &[k, k2], v2);
                }
            }
        }
    }
    assert_eq!(
        Leaf::parse(data).ok().map(|leaf| leaf.to_reference()),
        parse_by_reencoding(data),
        "Leaf::parse disagrees with the reference"
    );
});

/// The outline reads at `names` what the tree holds there (names a pointer would escape aside).
fn check_member(outline: &Outline<'_>, names: &[&String], value: &Value) {
    if names.iter().any(|n| n.contains(['/', '~'])) {
        return;
    }
    let pointer: String = names.iter().map(|n| format!("/{n}")).collect();
    assert_eq!(
        outline.str(&pointer).as_deref(),
        value.as_str(),
        "{pointer}"
    );
    assert_eq!(outline.bool(&pointer), value.as_bool(), "{pointer}");
}
