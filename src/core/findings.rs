//! Population counts and findings of an evidence bundle, computed from rows alone, so that export
//! and an offline verifier compute the same `summary.json` (contract keys: docs/bundle-format.md).
//!
//! Owns: the audit rules. Must not touch: files, Arrow.
//!
//! Rows may be fed in any order (each request's events are sorted by index before judging): the
//! period's rows and the *context* rows (earlier events of requests that have events in the period).
//! A request is judged on its whole lifecycle; a finding is
//! reported when the event that triggers it (the approval for self-approval, the execution for the
//! execution rules, the request for open requests) is in the period.
//!
//! Rules, per request, walking its events in index order:
//! - **self_approval**: an `approval.approved` whose reviewer is the requester (the actor of the
//!   `approval.requested`, else of the approval) or whom the requester acts on behalf of.
//! - **executed_without_approval**: a non-emergency `action.executed` with no approval before it and
//!   none after it in the bundle.
//! - **approved_after_execution**: a non-emergency `action.executed` with no approval before it but an
//!   approval after it (disjoint from the previous rule).
//! - **executed_after_denial_or_expiry**: an `action.executed` whose latest earlier decision is
//!   `approval.denied` or `approval.expired`.
//! - **emergency_late_approval**: an `action.executed` marked emergency (on itself or its request)
//!   with no approval before it; `approval_delay_seconds` is how long after the execution the first
//!   approval came (`null` if none did).
//! - **open_requests**: an `approval.requested` in the period with no decision (approved, denied,
//!   expired, cancelled) by the end of the period.
//!
//! Decision latency: `occurred_at` of the first approval or denial minus that of the request, for
//! decisions in the period. Memory is proportional to the number of requests, not rows.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::projection::Projection;

const APPROVED: &str = "approval.approved";
const DENIED: &str = "approval.denied";
const EXPIRED: &str = "approval.expired";
const CANCELLED: &str = "approval.cancelled";
const REQUESTED: &str = "approval.requested";
const EXECUTED: &str = "action.executed";

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

/// The six finding lists (contract keys).
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

/// Decision latency statistics, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of decisions measured.
    pub count: u64,
    /// Median (nearest rank), or null.
    pub p50: Option<f64>,
    /// 95th percentile (nearest rank), or null.
    pub p95: Option<f64>,
    /// Maximum, or null.
    pub max: Option<f64>,
    /// Every measured latency, ascending (for the report's distribution chart).
    pub values: Vec<f64>,
}

/// `summary.json` (contract keys `population`, `findings`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Period counts.
    pub population: Population,
    /// Findings.
    pub findings: Findings,
    /// Decision latency.
    pub decision_latency_seconds: Latency,
    /// Decisions per UTC day of `occurred_at`: day -> outcome -> count.
    pub decisions_per_day: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone)]
struct Ev {
    index: u64,
    kind: String,
    occurred_at: i64,
    in_period: bool,
    actor: String,
    on_behalf_of: Option<String>,
    reviewer: Option<String>,
    emergency: bool,
}

/// Accumulates rows and produces the [`Summary`].
#[derive(Debug, Default)]
pub struct Auditor {
    requests: HashMap<String, Vec<Ev>>,
    population: Population,
    decisions_per_day: BTreeMap<String, BTreeMap<String, u64>>,
}

fn day(micros: i64) -> String {
    super::leaf::format_micros(micros).map_or_else(|| "invalid".into(), |t| t[..10].to_owned())
}

impl Auditor {
    /// Feeds one row; `in_period` is false for context rows.
    pub fn add(&mut self, row: &Projection, in_period: bool) {
        if in_period {
            let p = &mut self.population;
            p.rows += 1;
            *p.by_type.entry(row.event_type.clone()).or_default() += 1;
            *p.by_action_category
                .entry(row.action_category.clone())
                .or_default() += 1;
            *p.by_environment.entry(row.environment.clone()).or_default() += 1;
            if let Some(outcome) = row
                .event_type
                .strip_prefix("approval.")
                .filter(|o| *o != "requested")
            {
                *p.by_decision.entry(outcome.to_owned()).or_default() += 1;
                *self
                    .decisions_per_day
                    .entry(day(row.occurred_at))
                    .or_default()
                    .entry(outcome.to_owned())
                    .or_default() += 1;
            }
        }
        self.requests
            .entry(row.request_id.clone())
            .or_default()
            .push(Ev {
                index: row.index,
                kind: row.event_type.clone(),
                occurred_at: row.occurred_at,
                in_period,
                actor: row.actor_id.clone(),
                on_behalf_of: row.on_behalf_of.clone(),
                reviewer: row.reviewer_id.clone(),
                emergency: row.emergency == Some(true),
            });
    }

    /// Applies the rules and returns the summary (findings sorted by first evidence index).
    #[must_use]
    pub fn finish(mut self) -> Summary {
        let mut findings = Findings::default();
        let mut latencies = Vec::new();
        for (request_id, events) in &mut self.requests {
            events.sort_by_key(|e| e.index);
            judge(request_id, events, &mut findings, &mut latencies);
        }
        for list in [
            &mut findings.self_approval,
            &mut findings.executed_without_approval,
            &mut findings.approved_after_execution,
            &mut findings.executed_after_denial_or_expiry,
            &mut findings.emergency_late_approval,
            &mut findings.open_requests,
        ] {
            list.sort_by(|a, b| {
                a.indexes
                    .cmp(&b.indexes)
                    .then_with(|| a.request_id.cmp(&b.request_id))
            });
        }
        latencies.sort_by(f64::total_cmp);
        let rank = |q: f64| -> Option<f64> {
            if latencies.is_empty() {
                return None;
            }
            // Nearest rank: the smallest value with at least q of the values at or below it.
            let n = latencies.len();
            let k = ((q * n as f64).ceil() as usize).clamp(1, n);
            Some(latencies[k - 1])
        };
        let latency = Latency {
            count: latencies.len() as u64,
            p50: rank(0.50),
            p95: rank(0.95),
            max: latencies.last().copied(),
            values: latencies.clone(),
        };
        Summary {
            population: self.population,
            findings,
            decision_latency_seconds: latency,
            decisions_per_day: self.decisions_per_day,
        }
    }
}

fn finding(
    request_id: &str,
    mut indexes: Vec<u64>,
    facts: &[(&str, serde_json::Value)],
) -> Finding {
    indexes.sort_unstable();
    indexes.dedup();
    Finding {
        request_id: request_id.to_owned(),
        indexes,
        facts: facts
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

fn seconds(micros: i64) -> f64 {
    micros as f64 / 1e6
}

fn judge(request_id: &str, events: &[Ev], out: &mut Findings, latencies: &mut Vec<f64>) {
    let requested = events.iter().find(|e| e.kind == REQUESTED);
    let request_emergency = requested.is_some_and(|r| r.emergency);
    let first_decision = events
        .iter()
        .find(|e| e.kind == APPROVED || e.kind == DENIED);
    if let (Some(r), Some(d)) = (requested, first_decision)
        && d.in_period
    {
        latencies.push(seconds(d.occurred_at - r.occurred_at));
    }
    for (pos, e) in events.iter().enumerate() {
        let before = &events[..pos];
        let after = &events[pos + 1..];
        match e.kind.as_str() {
            APPROVED if e.in_period => {
                let requester = requested.unwrap_or(e);
                if let Some(reviewer) = &e.reviewer
                    && (*reviewer == requester.actor
                        || requester.on_behalf_of.as_ref() == Some(reviewer))
                {
                    let mut idx = vec![e.index];
                    idx.extend(requested.map(|r| r.index));
                    out.self_approval.push(finding(
                        request_id,
                        idx,
                        &[
                            ("reviewer_id", reviewer.clone().into()),
                            ("requester_id", requester.actor.clone().into()),
                        ],
                    ));
                }
            }
            EXECUTED if e.in_period => {
                let approved_before = before.iter().any(|b| b.kind == APPROVED);
                let approval_after = after.iter().find(|a| a.kind == APPROVED);
                let last_decision = before
                    .iter()
                    .rev()
                    .find(|b| [APPROVED, DENIED, EXPIRED, CANCELLED].contains(&b.kind.as_str()));
                if let Some(d) = last_decision.filter(|d| d.kind == DENIED || d.kind == EXPIRED) {
                    out.executed_after_denial_or_expiry.push(finding(
                        request_id,
                        vec![d.index, e.index],
                        &[("decision", d.kind.clone().into())],
                    ));
                } else if !approved_before && (e.emergency || request_emergency) {
                    let delay = approval_after.map(|a| seconds(a.occurred_at - e.occurred_at));
                    let mut idx = vec![e.index];
                    idx.extend(approval_after.map(|a| a.index));
                    out.emergency_late_approval.push(finding(
                        request_id,
                        idx,
                        &[("approval_delay_seconds", delay.into())],
                    ));
                } else if !approved_before {
                    match approval_after {
                        Some(a) => out.approved_after_execution.push(finding(
                            request_id,
                            vec![e.index, a.index],
                            &[],
                        )),
                        None => out.executed_without_approval.push(finding(
                            request_id,
                            vec![e.index],
                            &[],
                        )),
                    }
                }
            }
            REQUESTED if e.in_period => {
                let decided = after
                    .iter()
                    .any(|a| [APPROVED, DENIED, EXPIRED, CANCELLED].contains(&a.kind.as_str()));
                if !decided {
                    out.open_requests
                        .push(finding(request_id, vec![e.index], &[]));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn summarize(rows: &[(Projection, bool)]) -> Summary {
        let mut a = Auditor::default();
        // Out of order on purpose: the auditor sorts each request's events.
        for (r, p) in rows.iter().rev() {
            a.add(r, *p);
        }
        a.finish()
    }

    #[test]
    fn each_rule_fires_on_its_case_only() {
        let mut emergency = row(11, EXECUTED, "r5", "agent", None, 100);
        emergency.emergency = Some(true);
        let rows = vec![
            // r1: clean lifecycle (context request, approved and executed in period).
            (row(0, REQUESTED, "r1", "agent", None, 0), false),
            (row(1, APPROVED, "r1", "agent", Some("bob"), 60), true),
            (row(2, EXECUTED, "r1", "agent", None, 70), true),
            // r2: self-approval by the principal the agent acts for.
            (row(3, REQUESTED, "r2", "agent", None, 0), true),
            (row(4, APPROVED, "r2", "agent", Some("alice"), 30), true),
            // r3: executed without approval; r4: approved after execution.
            (row(5, EXECUTED, "r3", "agent", None, 10), true),
            (row(6, REQUESTED, "r4", "agent", None, 0), true),
            (row(7, EXECUTED, "r4", "agent", None, 5), true),
            (row(8, APPROVED, "r4", "agent", Some("bob"), 50), true),
            // r6: executed after denial.
            (row(9, DENIED, "r6", "agent", Some("bob"), 1), true),
            (row(10, EXECUTED, "r6", "agent", None, 2), true),
            // r5: emergency execution approved 40 s late.
            (emergency, true),
            (row(12, APPROVED, "r5", "agent", Some("bob"), 140), true),
            // r7: still open.
            (row(13, REQUESTED, "r7", "agent", None, 0), true),
        ];
        let s = summarize(&rows);
        let ids = |list: &[Finding]| {
            list.iter()
                .map(|f| f.request_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&s.findings.self_approval), ["r2"]);
        assert_eq!(s.findings.self_approval[0].indexes, [3, 4]);
        assert_eq!(ids(&s.findings.executed_without_approval), ["r3"]);
        assert_eq!(ids(&s.findings.approved_after_execution), ["r4"]);
        assert_eq!(ids(&s.findings.executed_after_denial_or_expiry), ["r6"]);
        assert_eq!(ids(&s.findings.emergency_late_approval), ["r5"]);
        assert_eq!(
            s.findings.emergency_late_approval[0].facts["approval_delay_seconds"],
            40.0
        );
        assert_eq!(ids(&s.findings.open_requests), ["r7"]);
        assert_eq!(s.population.rows, 13, "context rows are not counted");
        assert_eq!(s.population.by_decision["approved"], 4);
        // Latencies: r1 60 s, r2 30 s, r4 50 s (r6 has no request).
        assert_eq!(s.decision_latency_seconds.values, [30.0, 50.0, 60.0]);
        assert_eq!(s.decision_latency_seconds.p50, Some(50.0));
        assert_eq!(s.decision_latency_seconds.max, Some(60.0));
    }
}
