//! Projections of a leaf for analysis: the flat columns of an evidence bundle row, derived only from
//! the leaf bytes, so a verifier can recompute and compare every one.
//!
//! Owns: which value of the leaf each column holds. Must not touch: Arrow, files.

use std::borrow::Cow;

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
    /// Projects a parsed leaf (its event's fields were outlined by the parse: no JSON tree).
    pub fn of(leaf: &Leaf<'_>) -> Result<Self, ProjectionError> {
        let e = &leaf.fields;
        let index = leaf.index;
        let opt = |field: &str| e.str(field).map(Cow::into_owned);
        let req = |field: &'static str| opt(field).ok_or(ProjectionError { index, field });
        let occurred_at =
            e.str("/occurred_at")
                .and_then(|t| parse_micros(&t))
                .ok_or(ProjectionError {
                    index,
                    field: "/occurred_at",
                })?;
        Ok(Self {
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
            emergency: e.bool("/emergency"),
        })
    }
}
