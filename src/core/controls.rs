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

    /// The IDs of the controls a row evidences, in mapping order: every selector of every
    /// control applied. Rows in bulk go through [`Classes`], which this defines.
    pub fn controls_of<'a>(
        &'a self,
        row: &'a ProjectionRef<'_>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.controls
            .iter()
            .filter(|c| c.applies_to(row))
            .map(|c| c.id.as_str())
    }
}

/// A framework's mapping compiled for many rows. The controls a row evidences depend only on its
/// event type and action category, and the selectors name only a few of each: a row's *class* is
/// the selector type it has (or "none of them") and the selector category it has (or "none"), and
/// each class's controls are worked out once, here. Finding a row's class compares its two
/// fields with the names the selectors hold (mostly by length alone); applying every selector of
/// every control, as [`Framework::controls_of`] does, compared them with each name of each
/// selector, once per use. Export and verify classify every row; `controls_of` stays the oracle
/// (a property test holds the two equal).
#[derive(Debug, Clone)]
pub struct Classes {
    /// The event types some selector names, each once.
    types: Vec<String>,
    /// The action categories some selector names, each once.
    categories: Vec<String>,
    /// Per class, the positions in [`Framework::controls`] of its controls, ascending.
    positions: Vec<Vec<usize>>,
    /// The IDs of [`Framework::controls`], in mapping order.
    control_ids: Vec<String>,
}

impl Classes {
    /// Compiles `framework`'s selectors.
    #[must_use]
    pub fn new(framework: &Framework) -> Self {
        let mut types: Vec<String> = Vec::new();
        let mut categories: Vec<String> = Vec::new();
        for control in &framework.controls {
            for (names, seen) in [
                (&control.types, &mut types),
                (&control.categories, &mut categories),
            ] {
                for name in names.iter().flatten() {
                    if !seen.contains(name) {
                        seen.push(name.clone());
                    }
                }
            }
        }
        let mut positions = Vec::new();
        // The last slot of each dimension is "named by no selector".
        for t in 0..=types.len() {
            for c in 0..=categories.len() {
                let selects = |names: &Option<Vec<String>>, value: Option<&String>| {
                    names
                        .as_ref()
                        .is_none_or(|names| value.is_some_and(|v| names.contains(v)))
                };
                let class: Vec<usize> = (framework.controls.iter().enumerate())
                    .filter(|(_, control)| {
                        selects(&control.types, types.get(t))
                            && selects(&control.categories, categories.get(c))
                    })
                    .map(|(i, _)| i)
                    .collect();
                positions.push(class);
            }
        }
        Self {
            types,
            categories,
            positions,
            control_ids: framework.controls.iter().map(|c| c.id.clone()).collect(),
        }
    }

    /// The class of `row`.
    #[must_use]
    pub fn class_of(&self, row: &ProjectionRef<'_>) -> usize {
        let slot = |names: &[String], value: &str| {
            names.iter().position(|n| n == value).unwrap_or(names.len())
        };
        slot(&self.types, row.event_type) * (self.categories.len() + 1)
            + slot(&self.categories, row.action_category)
    }

    /// The IDs of the controls rows of `class` evidence, in mapping order.
    pub fn ids(&self, class: usize) -> impl Iterator<Item = &str> + '_ {
        self.positions[class]
            .iter()
            .map(|&i| self.control_ids[i].as_str())
    }

    /// How many classes there are (classes are `0..class_count()`).
    #[must_use]
    pub fn class_count(&self) -> usize {
        self.positions.len()
    }

    /// The IDs of all the framework's controls, in mapping order (positions index it).
    #[must_use]
    pub fn control_ids(&self) -> &[String] {
        &self.control_ids
    }

    /// The positions in [`Framework::controls`] of the controls rows of `class` evidence.
    #[must_use]
    pub fn positions(&self, class: usize) -> &[usize] {
        &self.positions[class]
    }
}

/// A row with this event type and action category (and fixed other fields), for tests of the
/// mapping.
#[cfg(test)]
pub(crate) fn row_of<'a>(event_type: &'a str, action_category: &'a str) -> ProjectionRef<'a> {
    ProjectionRef {
        index: 0,
        event_id: "e",
        event_type,
        request_id: "r",
        source: "s",
        occurred_at: 0,
        ingested_at: 0,
        actor_id: "a",
        actor_kind: "agent",
        on_behalf_of: None,
        reviewer_id: None,
        action_name: "n",
        action_category,
        resource_id: "x",
        environment: "prod",
        channel: None,
        reason: None,
        emergency: None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Event types and categories: every name a selector holds, near misses, and others.
    fn names() -> impl Strategy<Value = String> {
        let mut named: Vec<String> = ["soc2", "fedramp"]
            .iter()
            .flat_map(|f| Framework::named(f).unwrap().controls)
            .flat_map(|c| {
                c.types
                    .into_iter()
                    .flatten()
                    .chain(c.categories.into_iter().flatten())
            })
            .collect();
        named.extend([
            "approval.approve".into(),
            "data_accesS".into(),
            String::new(),
        ]);
        prop_oneof![
            3 => prop::sample::select(named),
            1 => "[a-z._]{0,20}",
        ]
    }

    proptest! {
        /// A row's class lists exactly the controls every selector applied one by one gives.
        #[test]
        fn classes_agree_with_the_selectors(
            framework in prop::sample::select(vec!["soc2", "fedramp"]),
            event_type in names(),
            category in names(),
        ) {
            let framework = Framework::named(framework).unwrap();
            let classes = Classes::new(&framework);
            let row = row_of(&event_type, &category);
            let class = classes.class_of(&row);
            prop_assert!(classes.ids(class).eq(framework.controls_of(&row)));
            let by_position: Vec<&str> = classes
                .positions(class)
                .iter()
                .map(|&i| framework.controls[i].id.as_str())
                .collect();
            prop_assert!(by_position.into_iter().eq(framework.controls_of(&row)));
        }
    }
}
