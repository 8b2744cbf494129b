//! The one-pass canonical-JSON check (`core::jcs::check`) and leaf parse (`Leaf::parse`) that
//! export and verify run on every stored leaf, against the slow path they replaced. Never a panic,
//! and for any input:
//!
//! - `check` accepts exactly the bytes that `serde_json` parses and `jcs::to_vec` writes back
//!   byte for byte (`jcs::to_vec` is held equal to `serde_jcs` by the unit tests);
//! - an accepted value's outline reads what member lookups on the parsed tree read (names with
//!   `/` or `~` aside: a pointer would escape them), and `Picks` notes during the check what the
//!   outline holds at its paths;
//! - `Leaf::parse` accepts exactly the bytes that parse into the leaf's fields, pass the field
//!   checks, and re-encode (`encode_leaf`) to themselves, and reads the same fields; the row's
//!   parse (`parse_row_leaf`) gives the same answer.

#![no_main]

use ledger::core::jcs::{self, MAX_NESTING, Noted, Outline, Pick, Picks};
use ledger::core::leaf::{Leaf, parse_by_reencoding};
use ledger::core::projection::parse_row_leaf;
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
    if let Ok(outline) = &checked {
        check_picks(data, outline);
    }
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
    let leaf = Leaf::parse(data);
    assert_eq!(
        leaf.as_ref().ok().map(|leaf| leaf.to_reference()),
        parse_by_reencoding(data),
        "Leaf::parse disagrees with the reference"
    );
    let row = parse_row_leaf(data);
    assert_eq!(
        row.as_ref()
            .map(|r| r.to_reference())
            .map_err(|e| e.to_string()),
        leaf.as_ref()
            .map(|l| l.to_reference())
            .map_err(|e| e.to_string()),
        "the row's leaf parse disagrees with Leaf::parse"
    );
});

/// A pick table in canonical order: short names and a row's, some of them under each other.
const PICKS: [Pick<'static>; 6] = [
    Pick {
        name: "a",
        slot: Some(0),
        inner: &[("b", 1), ("id", 2)],
    },
    Pick {
        name: "actor",
        slot: None,
        inner: &[("id", 3), ("kind", 4)],
    },
    Pick {
        name: "b",
        slot: Some(5),
        inner: &[],
    },
    Pick {
        name: "event_id",
        slot: Some(6),
        inner: &[],
    },
    Pick {
        name: "resource",
        slot: None,
        inner: &[("id", 7)],
    },
    Pick {
        name: "type",
        slot: Some(8),
        inner: &[],
    },
];

/// The pointer of each slot of `PICKS`.
const POINTERS: [&str; 9] = [
    "/a",
    "/a/b",
    "/a/id",
    "/actor/id",
    "/actor/kind",
    "/b",
    "/event_id",
    "/resource/id",
    "/type",
];

/// What `Picks` notes for `PICKS` during the check is what the outline holds there.
fn check_picks(data: &[u8], outline: &Outline<'_>) {
    let text = std::str::from_utf8(data).expect("checked bytes are UTF-8");
    let mut picks = Picks::<9>::new(&PICKS);
    let end = jcs::check_at_with(text, 0, MAX_NESTING, &mut picks)
        .expect("the check with picks accepts what the check accepts");
    assert_eq!(end, data.len());
    for (pointer, found) in POINTERS.into_iter().zip(picks.found()) {
        assert_eq!(
            found.and_then(Noted::str),
            outline.str(pointer),
            "{pointer}"
        );
        assert_eq!(
            found.and_then(Noted::bool),
            outline.bool(pointer),
            "{pointer}"
        );
    }
}

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
