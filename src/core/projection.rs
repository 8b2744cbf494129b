//! Projections of a leaf for analysis: the flat columns of an evidence bundle row, derived only from
//! the leaf bytes, so a verifier can recompute and compare every one.
//!
//! Owns: which value of the leaf each column holds. Must not touch: Arrow, files.

use std::borrow::Cow;

use super::jcs::{Noted, Pick, Picks};
use super::leaf::{Leaf, LeafError, parse_micros};

/// The analysis columns of one row (contract: docs/bundle-format.md). `S` is the text type:
/// `String` for a row made from a leaf (export), `&str` for a view that borrows its text from
/// somewhere else, such as a row's Arrow columns (verify) or an owned row ([`Projection::view`]).
/// Everything that only reads a row takes the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection<S = String> {
    /// Entry index.
    pub index: u64,
    /// `event.event_id`.
    pub event_id: S,
    /// `event.type`.
    pub event_type: S,
    /// `event.request_id`.
    pub request_id: S,
    /// `source`.
    pub source: S,
    /// `event.occurred_at` as microseconds since the epoch (UTC).
    pub occurred_at: i64,
    /// `ingested_at` as microseconds since the epoch (UTC).
    pub ingested_at: i64,
    /// `event.actor.id`.
    pub actor_id: S,
    /// `event.actor.kind`.
    pub actor_kind: S,
    /// `event.actor.on_behalf_of`.
    pub on_behalf_of: Option<S>,
    /// `event.reviewer.id`.
    pub reviewer_id: Option<S>,
    /// `event.action.name`.
    pub action_name: S,
    /// `event.action.category`.
    pub action_category: S,
    /// `event.resource.id`.
    pub resource_id: S,
    /// `event.resource.environment`.
    pub environment: S,
    /// `event.channel`.
    pub channel: Option<S>,
    /// `event.reason`.
    pub reason: Option<S>,
    /// `event.emergency`.
    pub emergency: Option<bool>,
}

/// The event fields a row projects, as the leaf's outline holds them (unchecked: a field may be
/// absent or of another type).
struct EventFields<'a> {
    action_category: Option<Noted<'a>>,
    action_name: Option<Noted<'a>>,
    actor_id: Option<Noted<'a>>,
    actor_kind: Option<Noted<'a>>,
    on_behalf_of: Option<Noted<'a>>,
    channel: Option<Noted<'a>>,
    emergency: Option<Noted<'a>>,
    event_id: Option<Noted<'a>>,
    occurred_at: Option<Noted<'a>>,
    reason: Option<Noted<'a>>,
    request_id: Option<Noted<'a>>,
    environment: Option<Noted<'a>>,
    resource_id: Option<Noted<'a>>,
    reviewer_id: Option<Noted<'a>>,
    event_type: Option<Noted<'a>>,
}

/// The event fields a row projects, in canonical order (names sorted, as the check passes them),
/// each with its slot: the order [`EventFields::of`] names them in.
const PICKS: [Pick<'static>; 11] = [
    Pick {
        name: "action",
        slot: None,
        inner: &[("category", 0), ("name", 1)],
    },
    Pick {
        name: "actor",
        slot: None,
        inner: &[("id", 2), ("kind", 3), ("on_behalf_of", 4)],
    },
    Pick {
        name: "channel",
        slot: Some(5),
        inner: &[],
    },
    Pick {
        name: "emergency",
        slot: Some(6),
        inner: &[],
    },
    Pick {
        name: "event_id",
        slot: Some(7),
        inner: &[],
    },
    Pick {
        name: "occurred_at",
        slot: Some(8),
        inner: &[],
    },
    Pick {
        name: "reason",
        slot: Some(9),
        inner: &[],
    },
    Pick {
        name: "request_id",
        slot: Some(10),
        inner: &[],
    },
    Pick {
        name: "resource",
        slot: None,
        inner: &[("environment", 11), ("id", 12)],
    },
    Pick {
        name: "reviewer",
        slot: None,
        inner: &[("id", 13)],
    },
    Pick {
        name: "type",
        slot: Some(14),
        inner: &[],
    },
];

/// What a row's leaf parse notes of the event: its fields in `PICKS`.
pub type RowFields<'a> = Picks<'static, 'a, 15>;

/// A leaf parsed for its row ([`parse_row_leaf`]).
pub type RowLeaf<'a> = Leaf<'a, RowFields<'a>>;

/// Parses a leaf as [`Leaf::parse`] does (the same checks, the same errors), noting only the
/// event fields a row projects, found during the canonical check itself: no outline of every
/// member to build and search afterwards.
pub fn parse_row_leaf(bytes: &[u8]) -> Result<RowLeaf<'_>, LeafError> {
    Leaf::parse_with(bytes, Picks::new(&PICKS))
}

impl<'a> EventFields<'a> {
    /// All of them, named in the order of their slots in [`PICKS`].
    fn of(leaf: &RowLeaf<'a>) -> Self {
        let [
            action_category,
            action_name,
            actor_id,
            actor_kind,
            on_behalf_of,
            channel,
            emergency,
            event_id,
            occurred_at,
            reason,
            request_id,
            environment,
            resource_id,
            reviewer_id,
            event_type,
        ] = *leaf.fields.found();
        Self {
            action_category,
            action_name,
            actor_id,
            actor_kind,
            on_behalf_of,
            channel,
            emergency,
            event_id,
            occurred_at,
            reason,
            request_id,
            environment,
            resource_id,
            reviewer_id,
            event_type,
        }
    }
}

/// A row's columns, borrowed.
pub type ProjectionRef<'a> = Projection<&'a str>;

impl<S> Projection<S> {
    /// The same row with every text column passed through `f`.
    fn map<'s, T>(&'s self, f: impl Fn(&'s S) -> T) -> Projection<T> {
        Projection {
            index: self.index,
            event_id: f(&self.event_id),
            event_type: f(&self.event_type),
            request_id: f(&self.request_id),
            source: f(&self.source),
            occurred_at: self.occurred_at,
            ingested_at: self.ingested_at,
            actor_id: f(&self.actor_id),
            actor_kind: f(&self.actor_kind),
            on_behalf_of: self.on_behalf_of.as_ref().map(&f),
            reviewer_id: self.reviewer_id.as_ref().map(&f),
            action_name: f(&self.action_name),
            action_category: f(&self.action_category),
            resource_id: f(&self.resource_id),
            environment: f(&self.environment),
            channel: self.channel.as_ref().map(&f),
            reason: self.reason.as_ref().map(&f),
            emergency: self.emergency,
        }
    }
}

impl<S: AsRef<str>> Projection<S> {
    /// This row's columns, borrowed.
    #[must_use]
    pub fn view(&self) -> ProjectionRef<'_> {
        self.map(AsRef::as_ref)
    }
}

impl ProjectionRef<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_owned(&self) -> Projection {
        self.map(|text| (*text).to_owned())
    }
}

/// A leaf whose event lacks a field every valid v1 event has.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry {index}: event field {field} missing or malformed")]
pub struct ProjectionError {
    /// Entry index.
    pub index: u64,
    /// JSON Pointer of the field.
    pub field: &'static str,
}

impl Projection {
    /// Whether `leaf` projects to exactly `row`: the answer of `Projection::of(leaf)? == *row`,
    /// with every column compared where the leaf holds it and no string built (`verify` asks
    /// this of every row). A required field missing or malformed gives `of`'s error.
    pub fn matches(leaf: &RowLeaf<'_>, row: &ProjectionRef<'_>) -> Result<bool, ProjectionError> {
        let e = EventFields::of(leaf);
        let text = |found: Option<Noted<'_>>, want: &str| found?.str().map(|v| v == want);
        let opt = |found: Option<Noted<'_>>, want: Option<&str>| {
            found.and_then(Noted::str).as_deref() == want
        };
        let required = [
            text(e.event_id, row.event_id),
            text(e.event_type, row.event_type),
            text(e.request_id, row.request_id),
            text(e.actor_id, row.actor_id),
            text(e.actor_kind, row.actor_kind),
            text(e.action_name, row.action_name),
            text(e.action_category, row.action_category),
            text(e.resource_id, row.resource_id),
            text(e.environment, row.environment),
        ];
        let occurred_at = e
            .occurred_at
            .and_then(Noted::str)
            .and_then(|t| parse_micros(&t));
        if occurred_at.is_none() || required.contains(&None) {
            // Cold: the error `of` gives (the first bad field in its order).
            return Self::of(leaf).map(|p| p.view() == *row);
        }
        Ok(required.iter().all(|same| *same == Some(true))
            && row.index == leaf.index
            && occurred_at == Some(row.occurred_at)
            && row.ingested_at == leaf.ingested_micros
            && row.source == leaf.source
            && opt(e.on_behalf_of, row.on_behalf_of)
            && opt(e.reviewer_id, row.reviewer_id)
            && opt(e.channel, row.channel)
            && opt(e.reason, row.reason)
            && e.emergency.and_then(Noted::bool) == row.emergency)
    }

    /// Projects a parsed leaf (its event's fields were noted by the parse: no JSON tree).
    pub fn of(leaf: &RowLeaf<'_>) -> Result<Self, ProjectionError> {
        Projection::of_with(leaf, Cow::into_owned)
    }
}

impl<'a> Projection<Cow<'a, str>> {
    /// [`Projection::of`], its text borrowed from the leaf wherever the leaf holds it unescaped.
    pub fn borrowed(leaf: &RowLeaf<'a>) -> Result<Self, ProjectionError> {
        Projection::of_with(leaf, |text| text)
    }
}

impl<S> Projection<S> {
    /// Projects a parsed leaf, each text made by `text` from the leaf's (unescaped) value.
    fn of_with<'a>(
        leaf: &RowLeaf<'a>,
        text: impl Fn(Cow<'a, str>) -> S,
    ) -> Result<Self, ProjectionError> {
        let e = EventFields::of(leaf);
        let index = leaf.index;
        let opt = |found: Option<Noted<'a>>| found.and_then(Noted::str).map(&text);
        let req = |found: Option<Noted<'a>>, field: &'static str| {
            opt(found).ok_or(ProjectionError { index, field })
        };
        let occurred_at = e
            .occurred_at
            .and_then(Noted::str)
            .and_then(|t| parse_micros(&t))
            .ok_or(ProjectionError {
                index,
                field: "/occurred_at",
            })?;
        Ok(Self {
            index,
            event_id: req(e.event_id, "/event_id")?,
            event_type: req(e.event_type, "/type")?,
            request_id: req(e.request_id, "/request_id")?,
            source: text(leaf.source.clone()),
            occurred_at,
            ingested_at: leaf.ingested_micros,
            actor_id: req(e.actor_id, "/actor/id")?,
            actor_kind: req(e.actor_kind, "/actor/kind")?,
            on_behalf_of: opt(e.on_behalf_of),
            reviewer_id: opt(e.reviewer_id),
            action_name: req(e.action_name, "/action/name")?,
            action_category: req(e.action_category, "/action/category")?,
            resource_id: req(e.resource_id, "/resource/id")?,
            environment: req(e.environment, "/resource/environment")?,
            channel: opt(e.channel),
            reason: opt(e.reason),
            emergency: e.emergency.and_then(Noted::bool),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::leaf::{LeafHeader, encode_leaf, format_micros};
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    fn leaf_bytes(event: &Value, index: u64, source: &str) -> Vec<u8> {
        let at = format_micros(1_800_000_000_000_000).unwrap();
        encode_leaf(
            &LeafHeader {
                index,
                ingested_at: &at,
                source,
                prev_leaf_hash: &[0; 32],
                origin_signature: None,
            },
            &crate::core::jcs::to_vec(event),
        )
    }

    /// Events over small domains, so that two of them often share fields, with each field now
    /// and then missing or of the wrong type.
    fn arb_event() -> impl Strategy<Value = Value> {
        let text = || {
            prop_oneof![
                6 => prop_oneof![Just("a"), Just("b"), Just("\"q\\u{e9}")].prop_map(|s| json!(s)),
                1 => Just(json!(7)),
            ]
        };
        let field =
            |name: &'static str| prop::option::weighted(0.9, text()).prop_map(move |v| (name, v));
        let time = prop_oneof![
            Just("2026-11-21T10:00:00Z"),
            Just("2026-11-21T10:00:00.5Z"),
            Just("yesterday"),
        ]
        .prop_map(|t| ("occurred_at", Some(json!(t))));
        let flag = prop::option::of(any::<bool>()).prop_map(|b| ("emergency", b.map(Value::Bool)));
        prop::collection::vec(
            prop_oneof![
                field("event_id"),
                field("type"),
                field("request_id"),
                field("actor/id"),
                field("actor/kind"),
                field("actor/on_behalf_of"),
                field("reviewer/id"),
                field("action/name"),
                field("action/category"),
                field("resource/id"),
                field("resource/environment"),
                field("channel"),
                field("reason"),
                // Members no row reads, beside and between those it does.
                field("actor/ie"),
                field("actor/a"),
                field("chan"),
                field("context/id"),
                field("reviewer/kind"),
                field("zone"),
                time,
                flag,
            ],
            0..8,
        )
        .prop_map(|edits| {
            let mut event = json!({
                "event_id": "a", "type": "a", "request_id": "a",
                "occurred_at": "2026-11-21T10:00:00Z",
                "actor": {"id": "a", "kind": "a"},
                "action": {"name": "a", "category": "a"},
                "resource": {"id": "a", "environment": "a"},
            });
            for (path, value) in edits {
                let (parent, name) = match path.split_once('/') {
                    Some((p, n)) => (Some(p), n),
                    None => (None, path),
                };
                let map = match parent {
                    Some(p) => event
                        .as_object_mut()
                        .unwrap()
                        .entry(p)
                        .or_insert_with(|| Value::Object(Map::new())),
                    None => &mut event,
                };
                let Value::Object(map) = map else { continue };
                match value {
                    Some(v) => map.insert(name.to_owned(), v),
                    None => map.remove(name),
                };
            }
            event
        })
    }

    /// [`Projection::of`] the slow way: each field by its JSON Pointer into the outline of every
    /// member that [`Leaf::parse`] keeps, the errors in the same order.
    fn by_pointers(bytes: &[u8]) -> Result<Projection, ProjectionError> {
        let leaf = Leaf::parse(bytes).unwrap();
        let (f, index) = (&leaf.fields, leaf.index);
        let opt = |pointer: &str| f.str(pointer).map(Cow::into_owned);
        let req = |field: &'static str| opt(field).ok_or(ProjectionError { index, field });
        let occurred_at =
            f.str("/occurred_at")
                .and_then(|t| parse_micros(&t))
                .ok_or(ProjectionError {
                    index,
                    field: "/occurred_at",
                })?;
        Ok(Projection {
            index,
            event_id: req("/event_id")?,
            event_type: req("/type")?,
            request_id: req("/request_id")?,
            source: leaf.source.clone().into_owned(),
            occurred_at,
            ingested_at: leaf.ingested_micros,
            actor_id: req("/actor/id")?,
            actor_kind: req("/actor/kind")?,
            on_behalf_of: opt("/actor/on_behalf_of"),
            reviewer_id: opt("/reviewer/id"),
            action_name: req("/action/name")?,
            action_category: req("/action/category")?,
            resource_id: req("/resource/id")?,
            environment: req("/resource/environment")?,
            channel: opt("/channel"),
            reason: opt("/reason"),
            emergency: f.bool("/emergency"),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The fields a row leaf's parse picks are the ones its JSON Pointers name.
        #[test]
        fn picked_fields_are_the_pointed_ones(event in arb_event(), index in 0u64..2) {
            let bytes = leaf_bytes(&event, index, "s");
            prop_assert_eq!(Projection::of(&parse_row_leaf(&bytes).unwrap()), by_pointers(&bytes));
        }

        /// `matches` answers what building the projection and comparing answers, errors included.
        #[test]
        fn matches_is_of_then_compare(
            a in arb_event(),
            b in arb_event(),
            (ia, ib) in (0u64..2, 0u64..2),
            (sa, sb) in (prop_oneof![Just("s"), Just("t")], prop_oneof![Just("s"), Just("t")]),
        ) {
            let (la, lb) = (leaf_bytes(&a, ia, sa), leaf_bytes(&b, ib, sb));
            let (la, lb) = (parse_row_leaf(&la).unwrap(), parse_row_leaf(&lb).unwrap());
            if let Ok(own) = Projection::of(&la) {
                prop_assert_eq!(Projection::matches(&la, &own.view()), Ok(true));
            }
            if let Ok(row) = Projection::of(&lb) {
                prop_assert_eq!(
                    Projection::matches(&la, &row.view()),
                    Projection::of(&la).map(|p| p == row)
                );
            }
        }
    }
}
