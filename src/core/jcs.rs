//! RFC 8785 (JSON Canonicalization Scheme) bytes of a parsed JSON value, in one pass.
//!
//! Owns: the canonical form of events (the leaf's `event` member) and the check that stored leaves
//! are canonical. Must not touch: anything but `serde_json::Value`.
//!
//! Why not `serde_jcs` (it stays, as the reference a property test and the fuzzer compare against):
//! it serializes every object by collecting its members into a fresh map keyed by UTF-16 and every
//! number through a boxed writer, about 12 µs for a 550-byte event, half of the ingest hot path's
//! CPU. Here the members come out of `serde_json`'s map already in code-point order, which *is* JCS
//! order (UTF-16 code units) unless a key holds a character at or above U+E000: only then are an
//! object's keys re-sorted. Numbers follow RFC 8785 3.2.2.3 (ECMAScript `Number::toString` of the
//! IEEE double): integers of magnitude up to 2^53 are exact in a double and print as their digits;
//! every other number goes through `ryu-js`, the formatter `serde_jcs` uses.

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
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0C => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1F => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn equals_serde_jcs(value in arb_json()) {
            prop_assert_eq!(to_vec(&value), serde_jcs::to_vec(&value).unwrap());
        }
    }
}
