//! OSCAL 1.1 assessment results for FedRAMP bundles (`oscal/assessment-results.json`).
//!
//! Owns: the OSCAL document shape. Observations point at the bundle's own files; findings come from
//! `summary.json`. Control IDs are written in OSCAL's form (`AC-6(9)` becomes `ac-6.9`).

use serde_json::{Value, json};

use crate::bundle::{Period, files};
use crate::core::controls::Framework;
use crate::core::findings::{Digest, Rule};
use crate::core::note::Checkpoint;

/// OSCAL version written.
pub const OSCAL_VERSION: &str = "1.1.2";

/// `AC-6(9)` -> `ac-6.9`, `AU-2` -> `au-2` (NIST SP 800-53 Rev. 5 OSCAL catalog IDs).
#[must_use]
pub fn oscal_control_id(id: &str) -> String {
    id.to_ascii_lowercase().replace('(', ".").replace(')', "")
}

/// Version-4-format UUIDs drawn from BLAKE3 of the bundle's identity: unique per bundle and
/// reproducible, so `ledger verify` can rebuild this document byte for byte and a fabricated one is
/// caught.
struct Uuids {
    seed: blake3::Hasher,
    next: u64,
}

impl Uuids {
    fn new(parts: &[&str]) -> Self {
        let mut seed = blake3::Hasher::new();
        seed.update(b"ledger oscal uuid v1");
        for p in parts {
            seed.update(&(p.len() as u64).to_le_bytes());
            seed.update(p.as_bytes());
        }
        Self { seed, next: 0 }
    }

    fn uuid(&mut self) -> String {
        let mut h = self.seed.clone();
        h.update(&self.next.to_le_bytes());
        self.next += 1;
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&h.finalize().as_bytes()[..16]);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// The controls each finding kind bears on.
const FINDING_CONTROLS: [(Rule, &str, &[&str]); 6] = [
    (Rule::SelfApproval, "Self-approval", &["ac-5", "ac-3"]),
    (
        Rule::ExecutedWithoutApproval,
        "Executed without approval",
        &["ac-3", "cm-3"],
    ),
    (
        Rule::ApprovedAfterExecution,
        "Approved after execution",
        &["ac-3", "cm-3"],
    ),
    (
        Rule::ExecutedAfterDenialOrExpiry,
        "Executed after denial or expiry",
        &["ac-3"],
    ),
    (
        Rule::EmergencyLateApproval,
        "Emergency execution without prior approval",
        &["ac-3", "ac-6.9"],
    ),
    (
        Rule::OpenRequests,
        "Requests open at period end",
        &["au-12"],
    ),
];

/// Builds the assessment-results document.
#[must_use]
pub fn assessment_results(
    period: &Period,
    framework: &Framework,
    digest: &Digest,
    checkpoint: &Checkpoint,
    generated_at: &str,
) -> Value {
    let root = crate::core::hash::to_hex(&checkpoint.root);
    let size = checkpoint.size.to_string();
    let mut ids = Uuids::new(&[
        &root,
        &size,
        &period.from,
        &period.to,
        &framework.title,
        generated_at,
    ]);
    let mut uuid = || ids.uuid();
    let population_obs = uuid();
    let integrity_obs = uuid();
    let mut observations = vec![
        json!({
            "uuid": population_obs,
            "title": "Population of approval events",
            "description": format!(
                "{} approval-ledger rows ingested in the period, each with its exact leaf bytes, projections and control mapping.",
                digest.counts.population.rows
            ),
            "methods": ["EXAMINE", "TEST"],
            "types": ["control-objective"],
            "collected": generated_at,
            "relevant-evidence": [
                {"href": files::EVENTS, "description": "One row per ledger entry in the period (Parquet)."},
                {"href": files::CONTEXT, "description": "Earlier entries of requests active in the period."},
                {"href": files::SUMMARY, "description": "Population counts, findings and decision latency, recomputable from the rows."}
            ]
        }),
        json!({
            "uuid": integrity_obs,
            "title": "Integrity and completeness of the audit record",
            "description": format!(
                "Every row carries a BLAKE3 Merkle inclusion proof against the Ed25519-signed checkpoint of log {} at tree size {}; boundary rows prove no entry of the period is missing. Check with `ledger verify`.",
                checkpoint.origin, checkpoint.size
            ),
            "methods": ["TEST"],
            "types": ["control-objective"],
            "collected": generated_at,
            "relevant-evidence": [
                {"href": files::CHECKPOINT, "description": "Signed checkpoint (C2SP signed note)."},
                {"href": files::BOUNDARIES, "description": "Entries just before and after the period."},
                {"href": files::MANIFEST, "description": "File hashes, signed in manifest.sig."}
            ]
        }),
    ];
    let mut findings = Vec::new();
    for (rule, title, controls) in FINDING_CONTROLS {
        let key = rule.key();
        let items = digest.findings(rule);
        if items.total == 0 {
            continue;
        }
        let obs = uuid();
        let requests: Vec<&str> = items
            .first
            .iter()
            .take(50)
            .map(|f| f.request_id.as_str())
            .collect();
        observations.push(json!({
            "uuid": obs,
            "title": title,
            "description": format!(
                "{} request(s), see summary.json findings.{key} for the evidence row indexes. First: {}.",
                items.total,
                requests.join(", ")
            ),
            "methods": ["TEST"],
            "types": ["finding"],
            "collected": generated_at,
            "relevant-evidence": [{"href": files::SUMMARY, "description": format!("findings.{key}")}]
        }));
        for control in controls {
            findings.push(json!({
                "uuid": uuid(),
                "title": format!("{title}: {} request(s)", items.total),
                "description": format!("The approval ledger shows {} request(s) with: {title}.", items.total),
                "target": {
                    "type": "objective-id",
                    "target-id": format!("{control}_obj"),
                    "status": {"state": "not-satisfied"}
                },
                "related-observations": [{"observation-uuid": obs}]
            }));
        }
    }
    let control_ids: Vec<Value> = framework
        .controls
        .iter()
        .map(|c| json!({"control-id": oscal_control_id(&c.id)}))
        .collect();
    json!({
        "assessment-results": {
            "uuid": uuid(),
            "metadata": {
                "title": format!("Approval ledger evidence, {} to {}", period.from, period.to),
                "last-modified": generated_at,
                "version": env!("CARGO_PKG_VERSION"),
                "oscal-version": OSCAL_VERSION
            },
            "import-ap": {"href": files::CONTROLS},
            "results": [{
                "uuid": uuid(),
                "title": "Approval workflow evidence",
                "description": format!("Automated assessment of approval events ingested from {} to {} against {}.", period.from, period.to, framework.title),
                "start": period.from,
                "end": period.to,
                "reviewed-controls": {"control-selections": [{"include-controls": control_ids}]},
                "observations": observations,
                "findings": findings
            }]
        }
    })
}
