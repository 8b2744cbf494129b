//! The control mapping: which SOC 2 / NIST SP 800-53 controls a row evidences. The mapping is data,
//! `schemas/controls.v1.json`, compiled in; this module only applies it.
//!
//! Owns: selector matching. Must not touch: files.

use serde::{Deserialize, Serialize};

use super::projection::ProjectionRef;

/// The shipped mapping.
pub const CONTROLS_V1: &str = include_str!("../../schemas/controls.v1.json");

/// One control and what selects the rows that evidence it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// Control ID, e.g. `CC6.1` or `AC-6(9)`.
    pub id: String,
    /// Its title.
    pub title: String,
    /// What in the rows is the evidence.
    pub evidence: String,
    /// Event types selected (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// Action categories selected (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

impl Control {
    /// True when the row matches every selector the control has.
    #[must_use]
    pub fn applies_to(&self, row: &ProjectionRef<'_>) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == row.event_type))
            && self
                .categories
                .as_ref()
                .is_none_or(|c| c.iter().any(|c| c == row.action_category))
    }
}

/// A framework's controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Framework {
    /// The framework's name and edition.
    pub title: String,
    /// Its controls, in report order.
    pub controls: Vec<Control>,
}

impl Framework {
    /// The shipped mapping for `name` (`soc2` or `fedramp`), or `None`.
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct File {
            frameworks: std::collections::BTreeMap<String, Framework>,
        }
        let file: File = serde_json::from_str(CONTROLS_V1).expect("shipped control mapping parses");
        file.frameworks.get(name).cloned()
    }

    /// The IDs of the controls a row evidences, in mapping order.
    #[must_use]
    pub fn controls_for(&self, row: &ProjectionRef<'_>) -> Vec<String> {
        self.controls_of(row).map(str::to_owned).collect()
    }

    /// [`Framework::controls_for`], borrowed from the mapping.
    pub fn controls_of<'a>(
        &'a self,
        row: &'a ProjectionRef<'_>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.controls
            .iter()
            .filter(|c| c.applies_to(row))
            .map(|c| c.id.as_str())
    }

    /// Whether `listed` is exactly [`Framework::controls_for`] of `row` (no list built).
    #[must_use]
    pub fn controls_match<'a>(
        &self,
        row: &ProjectionRef<'_>,
        listed: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        self.controls_of(row).eq(listed)
    }
}
