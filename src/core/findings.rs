//! Population counts and findings of an evidence bundle, computed from rows alone, so that export,
//! the server's manifest check and an offline verifier compute the same `summary.json` (contract
//! keys: docs/bundle-format.md).
//!
//! Owns: the audit rules. Must not touch: files, Arrow. Everything here streams: counts take one
//! row at a time, the rules take one request's events at a time in index order ([`Judge`]), and
//! latency percentiles take the sorted values one at a time ([`LatencyBuilder`]). The caller
//! (`crate::summary`) does the grouping and sorting on disk, so memory does not grow with the
//! period.
//!
//! A request is judged on its whole lifecycle: the period's rows and the *context* rows (earlier
//! events of requests that have events in the period). A finding is reported when the event that
//! triggers it (the approval for self-approval, the execution for the execution rules, the request
//! for open requests) is in the period.
//!
//! Rules, per request, walking its events in index order:
//! - **self_approval**: an `approval.approved` whose reviewer is the requester (the actor of the
//!   first `approval.requested` before it, else of the approval) or whom the requester acts on
//!   behalf of.
//! - **executed_without_approval**: a non-emergency `action.executed` with no approval before it and
//!   none after it in the bundle.
//! - **approved_after_execution**: a non-emergency `action.executed` with no approval before it but an
//!   approval after it (disjoint from the previous rule).
//! - **executed_after_denial_or_expiry**: an `action.executed` whose latest earlier decision is
//!   `approval.denied` or `approval.expired`.
//! - **emergency_late_approval**: an `action.executed` marked emergency (on itself or on the request
//!   before it) with no approval before it; `approval_delay_seconds` is how long after the execution
//!   the first approval came (`null` if none did).
//! - **open_requests**: an `approval.requested` in the period with no decision (approved, denied,
//!   expired, cancelled) after it by the end of the period.
//!
//! Decision latency: `occurred_at` of the request's first approval or denial minus that of the
//! request before it, for decisions in the period.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::projection::ProjectionRef;

/// The six finding rules, in `summary.json` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Reviewer approved their own request (or their principal's).
    SelfApproval,
    /// Executed with no approval at all.
    ExecutedWithoutApproval,
    /// Executed first, approved later.
    ApprovedAfterExecution,
    /// Executed after the latest decision denied or expired it.
    ExecutedAfterDenialOrExpiry,
    /// Emergency executions without prior approval, and how late approval came.
    EmergencyLateApproval,
    /// Requests without a decision at period end.
    OpenRequests,
}

impl Rule {
    /// Every rule, in `summary.json` order.
    pub const ALL: [Self; 6] = [
        Self::SelfApproval,
        Self::ExecutedWithoutApproval,
        Self::ApprovedAfterExecution,
        Self::ExecutedAfterDenialOrExpiry,
        Self::EmergencyLateApproval,
        Self::OpenRequests,
    ];

    /// The contract key in `summary.json` `findings`.
    #[must_use]
    pub const fn key(self) -> &'static str {
        match self {
            Self::SelfApproval => "self_approval",
            Self::ExecutedWithoutApproval => "executed_without_approval",
            Self::ApprovedAfterExecution => "approved_after_execution",
            Self::ExecutedAfterDenialOrExpiry => "executed_after_denial_or_expiry",
            Self::EmergencyLateApproval => "emergency_late_approval",
            Self::OpenRequests => "open_requests",
        }
    }

    /// A human title.
    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::SelfApproval => "Self-approval",
            Self::ExecutedWithoutApproval => "Executed without approval",
            Self::ApprovedAfterExecution => "Approved after execution",
            Self::ExecutedAfterDenialOrExpiry => "Executed after denial or expiry",
            Self::EmergencyLateApproval => "Emergency executions and late approval",
            Self::OpenRequests => "Requests open at period end",
        }
    }

    /// Position in [`Rule::ALL`].
    #[must_use]
    pub const fn ordinal(self) -> usize {
        self as usize
    }

    /// The rule at a position of [`Rule::ALL`].
    #[must_use]
    pub fn from_ordinal(n: usize) -> Option<Self> {
        Self::ALL.get(n).copied()
    }
}

/// One finding: the request and the indexes of its evidence rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The request.
    pub request_id: String,
    /// Evidence rows, ascending.
    pub indexes: Vec<u64>,
    /// Rule-specific facts (reviewer, delay, decision).
    #[serde(flatten)]
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// The six finding lists (contract keys), as read back from `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    /// Reviewer approved their own request (or their principal's).
    pub self_approval: Vec<Finding>,
    /// Executed with no approval at all.
    pub executed_without_approval: Vec<Finding>,
    /// Executed first, approved later.
    pub approved_after_execution: Vec<Finding>,
    /// Executed after the latest decision denied or expired it.
    pub executed_after_denial_or_expiry: Vec<Finding>,
    /// Emergency executions without prior approval, and how late approval came.
    pub emergency_late_approval: Vec<Finding>,
    /// Requests without a decision at period end.
    pub open_requests: Vec<Finding>,
}

impl Findings {
    /// The list of one rule.
    #[must_use]
    pub fn list(&self, rule: Rule) -> &[Finding] {
        match rule {
            Rule::SelfApproval => &self.self_approval,
            Rule::ExecutedWithoutApproval => &self.executed_without_approval,
            Rule::ApprovedAfterExecution => &self.approved_after_execution,
            Rule::ExecutedAfterDenialOrExpiry => &self.executed_after_denial_or_expiry,
            Rule::EmergencyLateApproval => &self.emergency_late_approval,
            Rule::OpenRequests => &self.open_requests,
        }
    }
}

/// Counts of the period's rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Population {
    /// Rows in the period.
    pub rows: u64,
    /// By event type.
    pub by_type: BTreeMap<String, u64>,
    /// Decisions by outcome (`approved`, `denied`, `expired`, `cancelled`).
    pub by_decision: BTreeMap<String, u64>,
    /// By `action.category`.
    pub by_action_category: BTreeMap<String, u64>,
    /// By `resource.environment`.
    pub by_environment: BTreeMap<String, u64>,
}

/// Upper edges (exclusive, seconds) of the decision-latency histogram's bins; the last bin is open.
pub const LATENCY_BIN_EDGES: [f64; 7] = [10.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0];

/// One bin of the decision-latency histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyBin {
    /// Upper edge in seconds (exclusive); `null` for the last, open bin.
    pub below_seconds: Option<f64>,
    /// Decisions in the bin.
    pub count: u64,
}

/// Decision latency statistics, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of decisions measured.
    pub count: u64,
    /// Median (nearest rank), or null.
    pub p50: Option<f64>,
    /// 95th percentile (nearest rank), or null.
    pub p95: Option<f64>,
    /// Maximum, or null.
    pub max: Option<f64>,
    /// Distribution over [`LATENCY_BIN_EDGES`].
    pub histogram: Vec<LatencyBin>,
}

/// Computes [`Latency`] from the measured values fed in ascending order, in constant memory.
#[derive(Debug)]
pub struct LatencyBuilder {
    count: u64,
    seen: u64,
    ranks: [u64; 2],
    picked: [Option<f64>; 2],
    max: Option<f64>,
    bins: [u64; LATENCY_BIN_EDGES.len() + 1],
}

impl LatencyBuilder {
    /// A builder for `count` values.
    #[must_use]
    pub fn new(count: u64) -> Self {
        // Nearest rank: the smallest value with at least q of the values at or below it.
        let rank = |q: f64| ((q * count as f64).ceil() as u64).clamp(1, count.max(1));
        Self {
            count,
            seen: 0,
            ranks: [rank(0.50), rank(0.95)],
            picked: [None; 2],
            max: None,
            bins: [0; LATENCY_BIN_EDGES.len() + 1],
        }
    }

    /// Feeds the next value (ascending).
    pub fn push(&mut self, seconds: f64) {
        self.seen += 1;
        for (rank, picked) in self.ranks.iter().zip(&mut self.picked) {
            if self.seen == *rank {
                *picked = Some(seconds);
            }
        }
        self.max = Some(seconds);
        let bin = LATENCY_BIN_EDGES
            .iter()
            .position(|edge| seconds < *edge)
            .unwrap_or(LATENCY_BIN_EDGES.len());
        self.bins[bin] += 1;
    }

    /// The statistics. Values beyond `count` are counted in the histogram and maximum only.
    #[must_use]
    pub fn finish(self) -> Latency {
        let edges = LATENCY_BIN_EDGES.iter().map(|e| Some(*e)).chain([None]);
        Latency {
            count: self.count,
            p50: self.picked[0],
            p95: self.picked[1],
            max: self.max,
            histogram: edges
                .zip(self.bins)
                .map(|(below_seconds, count)| LatencyBin {
                    below_seconds,
                    count,
                })
                .collect(),
        }
    }
}

/// Period counts that need no grouping: population and decisions per day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Population of the period.
    pub population: Population,
    /// Decisions per UTC day of `occurred_at`: day -> outcome -> count.
    pub decisions_per_day: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The UTC day of `micros` as `YYYY-MM-DD`, written into `buf` (`"invalid"` outside years
/// 0000-9999, as [`super::leaf::format_micros`] bounds them).
fn day(micros: i64, buf: &mut [u8; 10]) -> &str {
    use std::io::Write as _;
    let date = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .map(time::OffsetDateTime::date)
        .filter(|d| (0..=9999).contains(&d.year()));
    let Some(date) = date else {
        return "invalid";
    };
    let mut out = &mut buf[..];
    write!(
        out,
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
    .expect("ten bytes hold a four-digit year's date");
    std::str::from_utf8(buf).expect("digits and dashes")
}

/// Adds one to `map[key]`, allocating the key only the first time it is seen.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

impl Counts {
    /// Counts one row of the period (context rows are not counted).
    pub fn add(&mut self, row: &ProjectionRef<'_>) {
        let p = &mut self.population;
        p.rows += 1;
        bump(&mut p.by_type, row.event_type);
        bump(&mut p.by_action_category, row.action_category);
        bump(&mut p.by_environment, row.environment);
        if let Some(outcome) = row
            .event_type
            .strip_prefix("approval.")
            .filter(|o| *o != "requested")
        {
            bump(&mut p.by_decision, outcome);
            let mut buf = [0; 10];
            let day = day(row.occurred_at, &mut buf);
            match self.decisions_per_day.get_mut(day) {
                Some(outcomes) => bump(outcomes, outcome),
                None => {
                    self.decisions_per_day
                        .insert(day.to_owned(), BTreeMap::from([(outcome.to_owned(), 1)]));
                }
            }
        }
    }
}

/// `summary.json` as read back (contract keys `population`, `findings`). Writers stream it
/// (`crate::summary`); this type is for readers that want it whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Period counts.
    pub population: Population,
    /// Decision latency.
    pub decision_latency_seconds: Latency,
    /// Decisions per UTC day of `occurred_at`: day -> outcome -> count.
    pub decisions_per_day: BTreeMap<String, BTreeMap<String, u64>>,
    /// Findings.
    pub findings: Findings,
}

/// One rule's findings as far as a report needs them: the total and the first few.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingList {
    /// How many findings the rule has.
    pub total: u64,
    /// The first ones, in `summary.json` order.
    pub first: Vec<Finding>,
}

/// Findings kept per rule in a [`Digest`].
pub const DIGEST_FINDINGS: usize = 500;

/// What the report and the OSCAL document show: everything of the summary but the finding lists
/// beyond their first [`DIGEST_FINDINGS`]. Bounded in size whatever the period.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// Period counts.
    pub counts: Counts,
    /// Decision latency.
    pub latency: Latency,
    /// Per rule, in [`Rule::ALL`] order.
    pub findings: [FindingList; 6],
}

impl Digest {
    /// The findings of one rule.
    #[must_use]
    pub fn findings(&self, rule: Rule) -> &FindingList {
        &self.findings[rule.ordinal()]
    }

    /// Findings over all rules.
    #[must_use]
    pub fn finding_total(&self) -> u64 {
        self.findings.iter().map(|f| f.total).sum()
    }
}

/// The kind of an event, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `approval.requested`.
    Requested,
    /// `approval.approved`.
    Approved,
    /// `approval.denied`.
    Denied,
    /// `approval.expired`.
    Expired,
    /// `approval.cancelled`.
    Cancelled,
    /// `action.executed`.
    Executed,
    /// Anything else (`action.failed`).
    Other,
}

impl Kind {
    fn of(event_type: &str) -> Self {
        match event_type {
            "approval.requested" => Self::Requested,
            "approval.approved" => Self::Approved,
            "approval.denied" => Self::Denied,
            "approval.expired" => Self::Expired,
            "approval.cancelled" => Self::Cancelled,
            "action.executed" => Self::Executed,
            _ => Self::Other,
        }
    }

    /// The event type.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Requested => "approval.requested",
            Self::Approved => "approval.approved",
            Self::Denied => "approval.denied",
            Self::Expired => "approval.expired",
            Self::Cancelled => "approval.cancelled",
            Self::Executed => "action.executed",
            Self::Other => "other",
        }
    }

    /// Stable byte code (for spilling).
    #[must_use]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`Kind::code`].
    #[must_use]
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Requested,
            1 => Self::Approved,
            2 => Self::Denied,
            3 => Self::Expired,
            4 => Self::Cancelled,
            5 => Self::Executed,
            6 => Self::Other,
            _ => return None,
        })
    }

    const fn is_decision(self) -> bool {
        matches!(
            self,
            Self::Approved | Self::Denied | Self::Expired | Self::Cancelled
        )
    }
}

/// What the rules need of one row. Ordered by (request, index): the order [`Judge`] wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    /// `event.request_id`.
    pub request_id: String,
    /// Entry index.
    pub index: u64,
    /// Event kind.
    pub kind: Kind,
    /// `occurred_at`, microseconds.
    pub occurred_at: i64,
    /// False for context rows.
    pub in_period: bool,
    /// `actor.id`.
    pub actor: String,
    /// `actor.on_behalf_of`.
    pub on_behalf_of: Option<String>,
    /// `reviewer.id`.
    pub reviewer: Option<String>,
    /// `emergency: true`.
    pub emergency: bool,
}

impl Ev {
    /// The rules' view of a row.
    #[must_use]
    pub fn of(row: &ProjectionRef<'_>, in_period: bool) -> Self {
        Self {
            request_id: row.request_id.to_owned(),
            index: row.index,
            kind: Kind::of(row.event_type),
            occurred_at: row.occurred_at,
            in_period,
            actor: row.actor_id.to_owned(),
            on_behalf_of: row.on_behalf_of.map(str::to_owned),
            reviewer: row.reviewer_id.map(str::to_owned),
            emergency: row.emergency == Some(true),
        }
    }
}

impl PartialOrd for Ev {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ev {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.request_id
            .cmp(&other.request_id)
            .then(self.index.cmp(&other.index))
    }
}

/// Where a [`Judge`] sends its results.
pub trait Verdicts {
    /// A finding of `rule`.
    fn finding(&mut self, rule: Rule, finding: Finding);
    /// A decision latency, in microseconds.
    fn latency(&mut self, micros: i64);
}

#[derive(Debug)]
struct Requester {
    index: u64,
    occurred_at: i64,
    actor: String,
    on_behalf_of: Option<String>,
    emergency: bool,
}

#[derive(Debug)]
struct PendingExecution {
    index: u64,
    occurred_at: i64,
    emergency: bool,
}

/// Applies the rules to one request's events, fed in index order. Its memory is the request's
/// unresolved executions and requests, which each become a finding.
#[derive(Debug)]
pub struct Judge {
    request_id: String,
    requested: Option<Requester>,
    approved_before: bool,
    decided: bool,
    last_decision: Option<(Kind, u64)>,
    pending_executions: Vec<PendingExecution>,
    open: Vec<u64>,
    /// Whether any event of the request is in the period (context rows need one).
    pub has_period_event: bool,
}

fn finding(
    request_id: &str,
    mut indexes: Vec<u64>,
    facts: Vec<(&str, serde_json::Value)>,
) -> Finding {
    indexes.sort_unstable();
    indexes.dedup();
    Finding {
        request_id: request_id.to_owned(),
        indexes,
        facts: facts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

impl Judge {
    /// A judge for one request.
    #[must_use]
    pub fn new(request_id: &str) -> Self {
        Self {
            request_id: request_id.to_owned(),
            requested: None,
            approved_before: false,
            decided: false,
            last_decision: None,
            pending_executions: Vec::new(),
            open: Vec::new(),
            has_period_event: false,
        }
    }

    /// The request being judged.
    #[must_use]
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Feeds the request's next event (ascending index).
    pub fn add(&mut self, e: &Ev, out: &mut impl Verdicts) {
        self.has_period_event |= e.in_period;
        match e.kind {
            Kind::Requested => {
                if self.requested.is_none() {
                    self.requested = Some(Requester {
                        index: e.index,
                        occurred_at: e.occurred_at,
                        actor: e.actor.clone(),
                        on_behalf_of: e.on_behalf_of.clone(),
                        emergency: e.emergency,
                    });
                }
                if e.in_period {
                    self.open.push(e.index);
                }
            }
            Kind::Approved => {
                if e.in_period {
                    self.check_self_approval(e, out);
                }
                // Executions waiting for an approval get this one.
                for x in std::mem::take(&mut self.pending_executions) {
                    let idx = vec![x.index, e.index];
                    if x.emergency {
                        let delay = seconds(e.occurred_at.saturating_sub(x.occurred_at));
                        out.finding(
                            Rule::EmergencyLateApproval,
                            finding(
                                &self.request_id,
                                idx,
                                vec![("approval_delay_seconds", delay.into())],
                            ),
                        );
                    } else {
                        out.finding(
                            Rule::ApprovedAfterExecution,
                            finding(&self.request_id, idx, vec![]),
                        );
                    }
                }
                self.approved_before = true;
            }
            Kind::Executed if e.in_period => {
                let request_emergency = self.requested.as_ref().is_some_and(|r| r.emergency);
                match self.last_decision {
                    Some((kind @ (Kind::Denied | Kind::Expired), index)) => out.finding(
                        Rule::ExecutedAfterDenialOrExpiry,
                        finding(
                            &self.request_id,
                            vec![index, e.index],
                            vec![("decision", kind.name().into())],
                        ),
                    ),
                    _ if !self.approved_before => self.pending_executions.push(PendingExecution {
                        index: e.index,
                        occurred_at: e.occurred_at,
                        emergency: e.emergency || request_emergency,
                    }),
                    _ => {}
                }
            }
            _ => {}
        }
        if e.kind.is_decision() {
            if !self.decided && matches!(e.kind, Kind::Approved | Kind::Denied) {
                self.decided = true;
                if let Some(r) = &self.requested
                    && e.in_period
                {
                    out.latency(e.occurred_at.saturating_sub(r.occurred_at));
                }
            }
            self.last_decision = Some((e.kind, e.index));
            self.open.clear();
        }
    }

    fn check_self_approval(&self, e: &Ev, out: &mut impl Verdicts) {
        let Some(reviewer) = &e.reviewer else {
            return;
        };
        let (requester, on_behalf_of, request_index) = match &self.requested {
            Some(r) => (&r.actor, r.on_behalf_of.as_ref(), Some(r.index)),
            None => (&e.actor, e.on_behalf_of.as_ref(), None),
        };
        if reviewer == requester || on_behalf_of == Some(reviewer) {
            let mut idx = vec![e.index];
            idx.extend(request_index);
            out.finding(
                Rule::SelfApproval,
                finding(
                    &self.request_id,
                    idx,
                    vec![
                        ("reviewer_id", reviewer.clone().into()),
                        ("requester_id", requester.clone().into()),
                    ],
                ),
            );
        }
    }

    /// Ends the request: what is still unresolved becomes a finding.
    pub fn finish(self, out: &mut impl Verdicts) {
        for x in self.pending_executions {
            if x.emergency {
                out.finding(
                    Rule::EmergencyLateApproval,
                    finding(
                        &self.request_id,
                        vec![x.index],
                        vec![("approval_delay_seconds", serde_json::Value::Null)],
                    ),
                );
            } else {
                out.finding(
                    Rule::ExecutedWithoutApproval,
                    finding(&self.request_id, vec![x.index], vec![]),
                );
            }
        }
        for index in self.open {
            out.finding(
                Rule::OpenRequests,
                finding(&self.request_id, vec![index], vec![]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::projection::Projection;

    fn row(
        index: u64,
        kind: &str,
        request: &str,
        actor: &str,
        reviewer: Option<&str>,
        at_s: i64,
    ) -> Projection {
        Projection {
            index,
            event_id: format!("e{index}"),
            event_type: kind.into(),
            request_id: request.into(),
            source: "s".into(),
            occurred_at: at_s * 1_000_000,
            ingested_at: at_s * 1_000_000,
            actor_id: actor.into(),
            actor_kind: "agent".into(),
            on_behalf_of: Some("alice".into()),
            reviewer_id: reviewer.map(Into::into),
            action_name: "a".into(),
            action_category: "data_export".into(),
            resource_id: "r".into(),
            environment: "prod".into(),
            channel: None,
            reason: None,
            emergency: None,
        }
    }

    #[test]
    fn counts_group_by_type_category_environment_and_decision_day() {
        let mut counts = Counts::default();
        // 2026-11-21T23:59:59Z, 2026-11-22T00:00:00Z, and a day in year 0005.
        let (nov21, nov22, early) = (1_795_305_599, 1_795_305_600, -62_009_366_400);
        let mut staging = row(4, "approval.approved", "q3", "b", Some("r"), nov22);
        staging.environment = "staging".into();
        for r in [
            row(0, "approval.requested", "q1", "b", None, nov21),
            row(1, "approval.approved", "q1", "b", Some("r"), nov21),
            row(2, "approval.denied", "q2", "b", Some("r"), nov21),
            row(3, "approval.approved", "q2", "b", Some("r"), nov22),
            staging,
            row(5, "approval.expired", "q4", "b", None, early),
            row(
                6,
                "approval.cancelled",
                "q5",
                "b",
                None,
                i64::MAX / 1_000_000,
            ),
        ] {
            counts.add(&r.view());
        }
        let p = &counts.population;
        assert_eq!(p.rows, 7);
        let map = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            p.by_type,
            map(&[
                ("approval.approved", 3),
                ("approval.cancelled", 1),
                ("approval.denied", 1),
                ("approval.expired", 1),
                ("approval.requested", 1)
            ])
        );
        assert_eq!(
            p.by_decision,
            map(&[
                ("approved", 3),
                ("cancelled", 1),
                ("denied", 1),
                ("expired", 1)
            ])
        );
        assert_eq!(p.by_action_category, map(&[("data_export", 7)]));
        assert_eq!(p.by_environment, map(&[("prod", 6), ("staging", 1)]));
        let days = BTreeMap::from([
            ("0005-01-01".to_owned(), map(&[("expired", 1)])),
            (
                "2026-11-21".to_owned(),
                map(&[("approved", 1), ("denied", 1)]),
            ),
            ("2026-11-22".to_owned(), map(&[("approved", 2)])),
            ("invalid".to_owned(), map(&[("cancelled", 1)])),
        ]);
        assert_eq!(counts.decisions_per_day, days);
    }

    #[derive(Default)]
    struct Collected {
        findings: BTreeMap<Rule, Vec<Finding>>,
        latencies: Vec<i64>,
    }

    impl Verdicts for Collected {
        fn finding(&mut self, rule: Rule, finding: Finding) {
            self.findings.entry(rule).or_default().push(finding);
        }
        fn latency(&mut self, micros: i64) {
            self.latencies.push(micros);
        }
    }

    /// What `crate::summary` does on disk, in memory: sort by (request, index), judge per request.
    fn judge_all(rows: &[(Projection, bool)]) -> (Counts, Collected) {
        let mut counts = Counts::default();
        let mut evs: Vec<Ev> = rows
            .iter()
            .rev()
            .map(|(r, in_period)| {
                if *in_period {
                    counts.add(&r.view());
                }
                Ev::of(&r.view(), *in_period)
            })
            .collect();
        evs.sort();
        let mut out = Collected::default();
        let mut judge: Option<Judge> = None;
        for e in &evs {
            if judge
                .as_ref()
                .is_none_or(|j| j.request_id() != e.request_id)
            {
                if let Some(j) = judge.take() {
                    j.finish(&mut out);
                }
                judge = Some(Judge::new(&e.request_id));
            }
            judge.as_mut().unwrap().add(e, &mut out);
        }
        if let Some(j) = judge {
            j.finish(&mut out);
        }
        out.latencies.sort_unstable();
        (counts, out)
    }

    #[test]
    fn each_rule_fires_on_its_case_only() {
        let mut emergency = row(11, "action.executed", "r5", "agent", None, 100);
        emergency.emergency = Some(true);
        let rows = vec![
            // r1: clean lifecycle (context request, approved and executed in period).
            (row(0, "approval.requested", "r1", "agent", None, 0), false),
            (
                row(1, "approval.approved", "r1", "agent", Some("bob"), 60),
                true,
            ),
            (row(2, "action.executed", "r1", "agent", None, 70), true),
            // r2: self-approval by the principal the agent acts for.
            (row(3, "approval.requested", "r2", "agent", None, 0), true),
            (
                row(4, "approval.approved", "r2", "agent", Some("alice"), 30),
                true,
            ),
            // r3: executed without approval; r4: approved after execution.
            (row(5, "action.executed", "r3", "agent", None, 10), true),
            (row(6, "approval.requested", "r4", "agent", None, 0), true),
            (row(7, "action.executed", "r4", "agent", None, 5), true),
            (
                row(8, "approval.approved", "r4", "agent", Some("bob"), 50),
                true,
            ),
            // r6: executed after denial.
            (
                row(9, "approval.denied", "r6", "agent", Some("bob"), 1),
                true,
            ),
            (row(10, "action.executed", "r6", "agent", None, 2), true),
            // r5: emergency execution approved 40 s late.
            (emergency, true),
            (
                row(12, "approval.approved", "r5", "agent", Some("bob"), 140),
                true,
            ),
            // r7: still open.
            (row(13, "approval.requested", "r7", "agent", None, 0), true),
        ];
        let (counts, out) = judge_all(&rows);
        let ids = |rule: Rule| {
            out.findings
                .get(&rule)
                .map(|l| l.iter().map(|f| f.request_id.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert_eq!(ids(Rule::SelfApproval), ["r2"]);
        assert_eq!(out.findings[&Rule::SelfApproval][0].indexes, [3, 4]);
        assert_eq!(ids(Rule::ExecutedWithoutApproval), ["r3"]);
        assert_eq!(ids(Rule::ApprovedAfterExecution), ["r4"]);
        assert_eq!(ids(Rule::ExecutedAfterDenialOrExpiry), ["r6"]);
        assert_eq!(ids(Rule::EmergencyLateApproval), ["r5"]);
        assert_eq!(
            out.findings[&Rule::EmergencyLateApproval][0].facts["approval_delay_seconds"],
            40.0
        );
        assert_eq!(ids(Rule::OpenRequests), ["r7"]);
        assert_eq!(counts.population.rows, 13, "context rows are not counted");
        assert_eq!(counts.population.by_decision["approved"], 4);
        // Latencies: r1 60 s, r2 30 s, r4 50 s (r6 has no request).
        assert_eq!(out.latencies, [30_000_000, 50_000_000, 60_000_000]);
        let mut lat = LatencyBuilder::new(3);
        for v in &out.latencies {
            lat.push(seconds(*v));
        }
        let lat = lat.finish();
        assert_eq!(
            (lat.p50, lat.p95, lat.max),
            (Some(50.0), Some(60.0), Some(60.0))
        );
        let bins: Vec<u64> = lat.histogram.iter().map(|b| b.count).collect();
        assert_eq!(
            bins,
            [0, 2, 1, 0, 0, 0, 0, 0],
            "30 and 50 s below 60 s; 60 s below 300 s"
        );
    }

    #[test]
    fn an_execution_pending_approval_resolves_at_the_next_approval_only() {
        let rows = vec![
            (row(0, "approval.requested", "r", "agent", None, 0), true),
            (row(1, "action.executed", "r", "agent", None, 1), true),
            (row(2, "action.executed", "r", "agent", None, 2), true),
            (row(3, "approval.cancelled", "r", "agent", None, 3), true),
            (
                row(4, "approval.approved", "r", "agent", Some("bob"), 4),
                true,
            ),
            (row(5, "action.executed", "r", "agent", None, 5), true),
        ];
        let (_, out) = judge_all(&rows);
        let after: Vec<Vec<u64>> = out.findings[&Rule::ApprovedAfterExecution]
            .iter()
            .map(|f| f.indexes.clone())
            .collect();
        assert_eq!(after, [vec![1, 4], vec![2, 4]]);
        assert!(!out.findings.contains_key(&Rule::ExecutedWithoutApproval));
        assert!(
            !out.findings.contains_key(&Rule::OpenRequests),
            "cancelled is a decision"
        );
    }
}
