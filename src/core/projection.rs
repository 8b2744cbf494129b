//! Projections of a leaf for analysis: the flat columns of an evidence bundle row, derived only from
//! the leaf bytes, so a verifier can recompute and compare every one.
//!
//! Owns: which value of the leaf each column holds. Must not touch: Arrow, files.

use serde_json::Value;

use super::leaf::{Leaf, parse_micros};

/// The analysis columns of one row (contract: docs/bundle-format.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Entry index.
    pub index: u64,
    /// `event.event_id`.
    pub event_id: String,
    /// `event.type`.
    pub event_type: String,
    /// `event.request_id`.
    pub request_id: String,
    /// `source`.
    pub source: String,
    /// `event.occurred_at` as microseconds since the epoch (UTC).
    pub occurred_at: i64,
    /// `ingested_at` as microseconds since the epoch (UTC).
    pub ingested_at: i64,
    /// `event.actor.id`.
    pub actor_id: String,
    /// `event.actor.kind`.
    pub actor_kind: String,
    /// `event.actor.on_behalf_of`.
    pub on_behalf_of: Option<String>,
    /// `event.reviewer.id`.
    pub reviewer_id: Option<String>,
    /// `event.action.name`.
    pub action_name: String,
    /// `event.action.category`.
    pub action_category: String,
    /// `event.resource.id`.
    pub resource_id: String,
    /// `event.resource.environment`.
    pub environment: String,
    /// `event.channel`.
    pub channel: Option<String>,
    /// `event.reason`.
    pub reason: Option<String>,
    /// `event.emergency`.
    pub emergency: Option<bool>,
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
    /// Projects a parsed leaf.
    pub fn of(leaf: &Leaf) -> Result<Self, ProjectionError> {
        let e = &leaf.event;
        let index = leaf.index;
        // Member lookups, not `Value::pointer`: a pointer allocates to unescape each of its
        // tokens on every call, which was a tenth of export's time. No field here has `~`.
        let at = |field: &str| field.split('/').skip(1).try_fold(e, |v, key| v.get(key));
        let opt = |field: &str| at(field).and_then(Value::as_str).map(str::to_owned);
        let req = |field: &'static str| opt(field).ok_or(ProjectionError { index, field });
        let occurred_at = at("/occurred_at")
            .and_then(Value::as_str)
            .and_then(parse_micros)
            .ok_or(ProjectionError {
                index,
                field: "/occurred_at",
            })?;
        Ok(Self {
            index,
            event_id: req("/event_id")?,
            event_type: req("/type")?,
            request_id: req("/request_id")?,
            source: leaf.source.clone(),
            occurred_at,
            ingested_at: leaf.ingested_micros(),
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
            emergency: e.get("emergency").and_then(Value::as_bool),
        })
    }
}
