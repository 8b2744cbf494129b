//! Builds `summary.json` from a stream of rows in bounded memory: the one implementation behind
//! export, the server's manifest check and `ledger verify`, so all three produce the same bytes.
//!
//! Owns: grouping rows by request (an external sort), ordering findings and latencies (two more),
//! and the streamed JSON layout. Must not touch: the rules themselves (`core::findings`).
//!
//! Memory: the sort budgets, the population counts (their keys are schema enums, environments and
//! days), and the unresolved events of the one request being judged. Not the number of rows,
//! requests or findings.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::core::findings::{
    Counts, DIGEST_FINDINGS, Digest, Ev, Finding, FindingList, Judge, Kind, LatencyBuilder, Rule,
    Verdicts,
};
use crate::core::projection::ProjectionRef;
use crate::spill::{DEFAULT_BUDGET, Record, Sorter, put_bytes, take_bytes, take_u64};

/// Context rows reported per orphan (rows whose request has no event in the period).
const MAX_ORPHANS: usize = 10;

impl Record for Ev {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.request_id.as_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.occurred_at.to_le_bytes());
        out.push(self.kind.code());
        out.push(
            u8::from(self.in_period)
                | u8::from(self.emergency) << 1
                | u8::from(self.on_behalf_of.is_some()) << 2
                | u8::from(self.reviewer.is_some()) << 3,
        );
        put_bytes(out, self.actor.as_bytes());
        for s in [&self.on_behalf_of, &self.reviewer].into_iter().flatten() {
            put_bytes(out, s.as_bytes());
        }
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let input = &mut bytes;
        let text = |input: &mut &[u8]| -> Option<String> {
            String::from_utf8(take_bytes(input)?.to_vec()).ok()
        };
        let request_id = text(input)?;
        let index = take_u64(input)?;
        let occurred_at = take_u64(input)? as i64;
        let (&kind, rest) = input.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        *input = rest;
        let actor = text(input)?;
        let on_behalf_of = if flags & 4 != 0 {
            Some(text(input)?)
        } else {
            None
        };
        let reviewer = if flags & 8 != 0 {
            Some(text(input)?)
        } else {
            None
        };
        input.is_empty().then_some(Self {
            request_id,
            index,
            kind: Kind::from_code(kind)?,
            occurred_at,
            in_period: flags & 1 != 0,
            actor,
            on_behalf_of,
            reviewer,
            emergency: flags & 2 != 0,
        })
    }

    fn mem_size(&self) -> usize {
        self.request_id.capacity()
            + self.actor.capacity()
            + self.on_behalf_of.as_ref().map_or(0, String::capacity)
            + self.reviewer.as_ref().map_or(0, String::capacity)
    }
}

/// A finding on its way to `summary.json`: ordered by rule, then evidence indexes, then request.
struct FindingRecord {
    rule: Rule,
    finding: Finding,
}

impl FindingRecord {
    fn key(&self) -> (Rule, &[u64], &str) {
        (self.rule, &self.finding.indexes, &self.finding.request_id)
    }
}

impl PartialEq for FindingRecord {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for FindingRecord {}
impl PartialOrd for FindingRecord {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for FindingRecord {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl Record for FindingRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.rule.ordinal() as u8);
        serde_json::to_writer(out, &self.finding).expect("a finding serializes");
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&rule, json) = bytes.split_first()?;
        Some(Self {
            rule: Rule::from_ordinal(rule.into())?,
            finding: serde_json::from_slice(json).ok()?,
        })
    }

    fn mem_size(&self) -> usize {
        self.finding.request_id.capacity()
            + self.finding.indexes.capacity() * 8
            + self.finding.facts.len() * 64
    }
}

/// What a built summary tells its caller beyond the bytes it wrote.
#[derive(Debug, Clone)]
pub struct Built {
    /// What the report and OSCAL document show.
    pub digest: Digest,
    /// Context rows whose request has no event in the period (the first few).
    pub orphan_context: Vec<u64>,
    /// How many such rows.
    pub orphan_count: u64,
}

/// Accumulates a period's rows and context rows, then writes `summary.json`.
pub struct SummaryBuilder {
    counts: Counts,
    /// Rows by request, in partitions judged in parallel at the end: all of a request's rows are
    /// in the one its id hashes to. The output does not depend on the partition count.
    events: Vec<Sorter<Ev>>,
    scratch: Option<PathBuf>,
    budget: usize,
}

/// Which of `parts` partitions a request's rows go to: FNV-1a of its id (any fixed spread would
/// do; this one is cheap on short ids).
fn partition(request_id: &str, parts: usize) -> usize {
    let hash = request_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % parts as u64) as usize
}

/// What judging one partition's requests leaves for [`SummaryBuilder::finish`] to combine.
struct Judged {
    findings: Sorter<FindingRecord>,
    latencies: Sorter<i64>,
    /// The partition's first [`MAX_ORPHANS`] orphan context rows, with their request ids, in
    /// request order.
    orphan_context: Vec<(String, u64)>,
    orphan_count: u64,
}

/// Judges every request of one partition, in request order.
fn judge_partition(
    events: Sorter<Ev>,
    scratch: Option<&Path>,
    budget: usize,
) -> io::Result<Judged> {
    let mut findings = Sorter::<FindingRecord>::new(scratch, budget)?;
    let mut latencies = Sorter::<i64>::new(scratch, budget)?;
    let mut sink = Sink {
        findings: &mut findings,
        latencies: &mut latencies,
        error: None,
    };
    let mut orphan_context = Vec::new();
    let mut orphan_count = 0u64;
    let mut group_context: Vec<u64> = Vec::new();
    let mut group_context_count = 0u64;
    let mut judge: Option<Judge> = None;
    let mut end_group = |judge: Judge, context: &mut Vec<u64>, n: &mut u64, sink: &mut Sink| {
        if !judge.has_period_event {
            orphan_count += *n;
            let room = MAX_ORPHANS.saturating_sub(orphan_context.len());
            orphan_context.extend(
                context
                    .iter()
                    .take(room)
                    .map(|&index| (judge.request_id().to_owned(), index)),
            );
        }
        context.clear();
        *n = 0;
        judge.finish(sink);
    };
    for e in events.finish()? {
        let e = e?;
        if judge
            .as_ref()
            .is_none_or(|j| j.request_id() != e.request_id)
        {
            if let Some(j) = judge.take() {
                end_group(j, &mut group_context, &mut group_context_count, &mut sink);
            }
            judge = Some(Judge::new(&e.request_id));
        }
        if !e.in_period {
            group_context_count += 1;
            if group_context.len() < MAX_ORPHANS {
                group_context.push(e.index);
            }
        }
        if let Some(j) = judge.as_mut() {
            j.add(&e, &mut sink);
        }
        if let Some(err) = sink.error.take() {
            return Err(err);
        }
    }
    if let Some(j) = judge.take() {
        end_group(j, &mut group_context, &mut group_context_count, &mut sink);
    }
    if let Some(err) = sink.error.take() {
        return Err(err);
    }
    Ok(Judged {
        findings,
        latencies,
        orphan_context,
        orphan_count,
    })
}

struct Sink<'a> {
    findings: &'a mut Sorter<FindingRecord>,
    latencies: &'a mut Sorter<i64>,
    error: Option<io::Error>,
}

impl Verdicts for Sink<'_> {
    fn finding(&mut self, rule: Rule, finding: Finding) {
        if let Err(e) = self.findings.push(FindingRecord { rule, finding }) {
            self.error.get_or_insert(e);
        }
    }

    fn latency(&mut self, micros: i64) {
        if let Err(e) = self.latencies.push(micros) {
            self.error.get_or_insert(e);
        }
    }
}

fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value)
        .expect("value serializes")
        .replace('\n', "\n  ")
}

impl SummaryBuilder {
    /// A builder spilling under `scratch` (or the system temp dir).
    ///
    /// # Errors
    /// If the temp dir cannot be created.
    pub fn new(scratch: Option<&Path>) -> io::Result<Self> {
        Self::with_budget(scratch, DEFAULT_BUDGET)
    }

    /// As [`SummaryBuilder::new`], with each sort's memory budget in bytes.
    ///
    /// # Errors
    /// If the temp dir cannot be created.
    pub fn with_budget(scratch: Option<&Path>, budget: usize) -> io::Result<Self> {
        Self::with_partitions(scratch, budget, crate::par::threads())
    }

    /// As [`SummaryBuilder::with_budget`], judging `parts` partitions of the requests in
    /// parallel (each sort's budget is shared among them).
    ///
    /// # Errors
    /// If a temp dir cannot be created.
    pub fn with_partitions(
        scratch: Option<&Path>,
        budget: usize,
        parts: usize,
    ) -> io::Result<Self> {
        let parts = parts.max(1);
        Ok(Self {
            counts: Counts::default(),
            events: (0..parts)
                .map(|_| Sorter::new(scratch, budget / parts))
                .collect::<io::Result<_>>()?,
            scratch: scratch.map(Path::to_owned),
            budget,
        })
    }

    /// Feeds one row; `in_period` is false for context rows.
    ///
    /// # Errors
    /// If a sort run cannot be written.
    pub fn add(&mut self, row: &ProjectionRef<'_>, in_period: bool) -> io::Result<()> {
        if in_period {
            self.counts.add(row);
        }
        let part = partition(row.request_id, self.events.len());
        self.events[part].push(Ev::of(row, in_period))
    }

    /// Judges every request and writes `summary.json`'s exact bytes to `out`.
    ///
    /// # Errors
    /// If a sort run or `out` cannot be written.
    pub fn finish(self, out: &mut impl Write) -> io::Result<Built> {
        let scratch = self.scratch.as_deref();
        let part_budget = self.budget / self.events.len();
        // Each partition on a thread of its own.
        let judged: Vec<io::Result<Judged>> = std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .events
                .into_iter()
                .map(|events| scope.spawn(move || judge_partition(events, scratch, part_budget)))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("summary partition thread panicked"))
                .collect()
        });
        let mut findings = Sorter::<FindingRecord>::new(scratch, self.budget)?;
        let mut latencies = Sorter::<i64>::new(scratch, self.budget)?;
        let mut orphans = Vec::new();
        let mut orphan_count = 0u64;
        for part in judged {
            let part = part?;
            findings.append(part.findings)?;
            latencies.append(part.latencies)?;
            orphans.extend(part.orphan_context);
            orphan_count += part.orphan_count;
        }
        // The first orphans in request order, as one partition would have kept them (a stable
        // sort: each request's rows stay in index order).
        orphans.sort_by(|a, b| a.0.cmp(&b.0));
        let orphan_context = orphans
            .into_iter()
            .take(MAX_ORPHANS)
            .map(|(_, index)| index)
            .collect();

        let mut latency = LatencyBuilder::new(latencies.len());
        for micros in latencies.finish()? {
            latency.push(micros? as f64 / 1e6);
        }
        let latency = latency.finish();

        write!(
            out,
            "{{\n  \"population\": {},\n  \"decision_latency_seconds\": {},\n  \"decisions_per_day\": {},\n  \"findings\": {{",
            pretty(&self.counts.population),
            pretty(&latency),
            pretty(&self.counts.decisions_per_day),
        )?;
        let mut lists: [FindingList; 6] = Default::default();
        let mut sorted = findings.finish()?.peekable();
        for rule in Rule::ALL {
            let list = &mut lists[rule.ordinal()];
            if rule.ordinal() > 0 {
                out.write_all(b",")?;
            }
            write!(out, "\n    \"{}\": [", rule.key())?;
            while let Some(next) = sorted.next_if(|r| r.as_ref().map_or(true, |r| r.rule == rule)) {
                let record = next?;
                out.write_all(if list.total == 0 {
                    b"\n      "
                } else {
                    b",\n      "
                })?;
                serde_json::to_writer(&mut *out, &record.finding)?;
                list.total += 1;
                if list.first.len() < DIGEST_FINDINGS {
                    list.first.push(record.finding);
                }
            }
            out.write_all(if list.total == 0 { b"]" } else { b"\n    ]" })?;
        }
        if let Some(stray) = sorted.next() {
            stray?;
            return Err(io::Error::other("findings out of rule order"));
        }
        out.write_all(b"\n  }\n}\n")?;
        Ok(Built {
            digest: Digest {
                counts: self.counts,
                latency,
                findings: lists,
            },
            orphan_context,
            orphan_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::findings::Summary;
    use crate::core::projection::Projection;

    fn row(index: u64, kind: &str, request: &str, reviewer: Option<&str>) -> Projection {
        Projection {
            index,
            event_id: format!("e{index}"),
            event_type: kind.into(),
            request_id: request.into(),
            source: "s".into(),
            occurred_at: index as i64 * 1_000_000,
            ingested_at: index as i64 * 1_000_000,
            actor_id: "agent".into(),
            actor_kind: "agent".into(),
            on_behalf_of: index.is_multiple_of(3).then(|| "alice".into()),
            reviewer_id: reviewer.map(Into::into),
            action_name: "a".into(),
            action_category: "data_export".into(),
            resource_id: "r".into(),
            environment: "prod".into(),
            channel: None,
            reason: None,
            emergency: index.is_multiple_of(7).then_some(true),
        }
    }

    fn build(budget: usize, parts: usize) -> (Vec<u8>, Built) {
        let mut b = SummaryBuilder::with_partitions(None, budget, parts).unwrap();
        // 3,000 requests of four events each, fed out of request order.
        for i in 0..12_000u64 {
            let request = format!("req-{}", (i * 7_919) % 3_000);
            let kind = match i % 4 {
                0 => "approval.requested",
                1 => "action.executed",
                2 => "approval.approved",
                _ => "approval.denied",
            };
            let reviewer = (i % 4 >= 2).then_some(if i % 5 == 0 { "agent" } else { "bob" });
            b.add(&row(i, kind, &request, reviewer).view(), i >= 100)
                .unwrap();
        }
        let mut out = Vec::new();
        let built = b.finish(&mut out).unwrap();
        (out, built)
    }

    #[test]
    fn spilled_and_in_memory_summaries_are_the_same_bytes_and_parse_back() {
        let (in_memory, built) = build(DEFAULT_BUDGET, 1);
        for (budget, parts) in [(4 << 10, 1), (DEFAULT_BUDGET, 3), (4 << 10, 4)] {
            let (other, other_built) = build(budget, parts);
            assert!(
                in_memory == other,
                "the budget ({budget}) and partitions ({parts}) must not change the output"
            );
            assert_eq!(other_built.digest, built.digest);
        }
        let summary: Summary = serde_json::from_slice(&in_memory).unwrap();
        assert_eq!(summary.population.rows, 11_900);
        for rule in Rule::ALL {
            let list = summary.findings.list(rule);
            assert_eq!(list.len() as u64, built.digest.findings(rule).total);
            assert!(
                list.windows(2).all(|w| w[0].indexes <= w[1].indexes),
                "{} is ordered by evidence",
                rule.key()
            );
        }
        assert!(built.digest.finding_total() > 0);
        assert_eq!(summary.decision_latency_seconds, built.digest.latency);
    }

    #[test]
    fn context_rows_of_requests_without_period_events_are_reported() {
        let mut b = SummaryBuilder::new(None).unwrap();
        b.add(&row(1, "approval.requested", "a", None).view(), false)
            .unwrap();
        b.add(&row(2, "approval.requested", "b", None).view(), false)
            .unwrap();
        b.add(&row(3, "approval.approved", "b", Some("bob")).view(), true)
            .unwrap();
        let built = b.finish(&mut Vec::new()).unwrap();
        assert_eq!((built.orphan_context, built.orphan_count), (vec![1], 1));
    }

    #[test]
    fn the_first_orphans_are_the_same_whatever_the_partitions() {
        let orphans = |parts: usize| {
            let mut b = SummaryBuilder::with_partitions(None, 4 << 10, parts).unwrap();
            // 40 requests with two context rows each and nothing in the period, fed in reverse,
            // and one with a period event.
            for r in (0..40u64).rev() {
                for k in 0..2 {
                    let request = format!("orphan-{r:02}");
                    b.add(
                        &row(1_000 + r * 2 + k, "approval.requested", &request, None).view(),
                        false,
                    )
                    .unwrap();
                }
            }
            b.add(&row(5, "approval.requested", "kept", None).view(), true)
                .unwrap();
            let built = b.finish(&mut Vec::new()).unwrap();
            (built.orphan_context, built.orphan_count)
        };
        let one = orphans(1);
        assert_eq!(
            one.0,
            [
                1_000, 1_001, 1_002, 1_003, 1_004, 1_005, 1_006, 1_007, 1_008, 1_009
            ]
        );
        assert_eq!(one.1, 80);
        for parts in [2, 3, 7] {
            assert_eq!(orphans(parts), one, "{parts} partitions");
        }
    }

    #[test]
    fn every_record_round_trips() {
        let mut e = Ev::of(&row(21, "action.executed", "r-é", Some("bob")).view(), true);
        for _ in 0..2 {
            let mut bytes = Vec::new();
            e.encode(&mut bytes);
            assert_eq!(Ev::decode(&bytes), Some(e.clone()));
            assert_eq!(Ev::decode(&bytes[..bytes.len() - 1]), None);
            e.on_behalf_of = None;
            e.reviewer = None;
            e.in_period = false;
        }
    }
}
