//! `report.html`: a self-contained, offline-readable report of a bundle (no scripts, no external
//! resources; charts are inline SVG).
//!
//! Owns: presentation only. Every number comes from `summary.json` and `manifest.json`.

use std::fmt::Write as _;

use crate::bundle::Manifest;
use crate::core::controls::Framework;
use crate::core::findings::{Digest, FindingList, LATENCY_BIN_EDGES, Rule};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn counts_table(title: &str, rows: &std::collections::BTreeMap<String, u64>) -> String {
    let mut out = format!(
        "<h3>{}</h3><table><tr><th>value</th><th>rows</th></tr>",
        esc(title)
    );
    for (k, v) in rows {
        let _ = write!(out, "<tr><td>{}</td><td class=n>{v}</td></tr>", esc(k));
    }
    out.push_str("</table>");
    out
}

fn findings_table(rule: Rule, list: &FindingList) -> String {
    let mut out = format!("<h3>{} ({})</h3>", esc(rule.title()), list.total);
    if list.total == 0 {
        out.push_str("<p class=ok>None.</p>");
        return out;
    }
    out.push_str(
        "<table><tr><th>request_id</th><th>evidence rows (index)</th><th>details</th></tr>",
    );
    for f in &list.first {
        let idx: Vec<String> = f.indexes.iter().map(u64::to_string).collect();
        let facts: Vec<String> = f.facts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.request_id),
            esc(&idx.join(", ")),
            esc(&facts.join("; "))
        );
    }
    out.push_str("</table>");
    let shown = list.first.len() as u64;
    if list.total > shown {
        let _ = write!(
            out,
            "<p>{} more in summary.json (findings.{}).</p>",
            list.total - shown,
            rule.key()
        );
    }
    out
}

/// A bar chart of decisions per day (approved, denied, other), inline SVG.
fn decisions_chart(digest: &Digest) -> String {
    let days = &digest.counts.decisions_per_day;
    if days.is_empty() {
        return "<p>No decisions in the period.</p>".into();
    }
    let max = days
        .values()
        .map(|d| d.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let (w, h, bar) = (40 + days.len() * 22, 180, 18);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{}' role='img' aria-label='decisions per day'>",
        h + 60
    );
    for (i, (day, by)) in days.iter().enumerate() {
        let x = 30 + i * 22;
        let mut y = h;
        for (outcome, color) in [
            ("approved", "#2e7d32"),
            ("denied", "#c62828"),
            ("expired", "#ef6c00"),
            ("cancelled", "#757575"),
        ] {
            let n = by.get(outcome).copied().unwrap_or(0);
            let bh = (n as f64 / max as f64 * (h - 10) as f64).round() as usize;
            if bh > 0 {
                y -= bh;
                let _ = write!(
                    svg,
                    "<rect x='{x}' y='{y}' width='{bar}' height='{bh}' fill='{color}'><title>{} {outcome}: {n}</title></rect>",
                    esc(day)
                );
            }
        }
        let _ = write!(
            svg,
            "<text x='{}' y='{}' font-size='9' transform='rotate(60 {} {})'>{}</text>",
            x + 4,
            h + 8,
            x + 4,
            h + 8,
            esc(&day[5..])
        );
    }
    let _ = write!(svg, "<text x='2' y='12' font-size='10'>{max}</text></svg>");
    svg.push_str(
        "<p class=legend><span style='color:#2e7d32'>&#9632; approved</span> <span style='color:#c62828'>&#9632; denied</span> \
         <span style='color:#ef6c00'>&#9632; expired</span> <span style='color:#757575'>&#9632; cancelled</span></p>",
    );
    svg
}

/// A histogram of decision latency on a log scale of seconds, inline SVG.
fn latency_chart(digest: &Digest) -> String {
    let lat = &digest.latency;
    if lat.count == 0 {
        return "<p>No decisions with a matching request in the period.</p>".into();
    }
    let label = |edge: Option<f64>| match edge {
        Some(e) if e < 60.0 => format!("<{e} s"),
        Some(e) if e < 3600.0 => format!("<{} min", e / 60.0),
        Some(e) if e < 86_400.0 => format!("<{} h", e / 3600.0),
        Some(e) => format!("<{} d", e / 86_400.0),
        None => format!(
            ">={} d",
            LATENCY_BIN_EDGES[LATENCY_BIN_EDGES.len() - 1] / 86_400.0
        ),
    };
    let edges: Vec<(String, u64)> = lat
        .histogram
        .iter()
        .map(|b| (label(b.below_seconds), b.count))
        .collect();
    let max = edges.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let mut svg = String::from(
        "<svg xmlns='http://www.w3.org/2000/svg' width='520' height='200' role='img' aria-label='decision latency'>",
    );
    for (i, (label, n)) in edges.iter().enumerate() {
        let n = *n;
        let bh = (n as f64 / max as f64 * 150.0).round() as usize;
        let x = 10 + i * 62;
        let _ = write!(
            svg,
            "<rect x='{x}' y='{}' width='56' height='{bh}' fill='#1565c0'><title>{label}: {n}</title></rect>\
             <text x='{x}' y='190' font-size='10'>{}</text><text x='{x}' y='{}' font-size='10'>{n}</text>",
            165 - bh,
            esc(label),
            160 - bh
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Renders the report.
#[must_use]
pub fn render(manifest: &Manifest, digest: &Digest, framework: &Framework) -> String {
    let lat = &digest.latency;
    let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.1} s"));
    let mut findings = String::new();
    for rule in Rule::ALL {
        findings.push_str(&findings_table(rule, digest.findings(rule)));
    }
    let mut controls =
        String::from("<table><tr><th>control</th><th>title</th><th>evidence in the rows</th></tr>");
    for c in &framework.controls {
        let _ = write!(
            controls,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.id),
            esc(&c.title),
            esc(&c.evidence)
        );
    }
    controls.push_str("</table>");
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Approval evidence {from} to {to}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}\
td.n{{text-align:right}}.ok{{color:#2e7d32}}code{{background:#f4f4f4;padding:1px 4px}}</style></head><body>\
<h1>Approval evidence: {title}</h1>\
<p>Period <b>{from}</b> to <b>{to}</b> (by <code>ingested_at</code>, end exclusive): entries {start} to {end_incl}, \
{rows} rows. Checkpoint of <code>{origin}</code> at tree size {size}, root <code>{root}</code>. Generated {generated} by ledger {version}.</p>\
<p>Check this bundle offline with <code>ledger verify DIR --key-file ledger.pub</code>: it verifies every row's leaf hash, \
inclusion proof and chain, the period's completeness, and recomputes every figure below.</p>\
<h2>Population</h2>{by_type}{by_decision}{by_category}{by_env}\
<h2>Decisions per day</h2>{decisions}\
<h2>Decision latency</h2><p>{count} decisions: p50 {p50}, p95 {p95}, max {max}.</p>{latency}\
<h2>Findings</h2>{findings}\
<h2>Controls evidenced ({fw})</h2>{controls}</body></html>\n",
        title = esc(&framework.title),
        from = esc(&manifest.period.from),
        to = esc(&manifest.period.to),
        start = manifest.index_range.start,
        end_incl = manifest.index_range.end.saturating_sub(1),
        rows = digest.counts.population.rows,
        origin = esc(&manifest.checkpoint.origin),
        size = manifest.checkpoint.size,
        root = esc(&manifest.checkpoint.root),
        generated = esc(&manifest.generated_at),
        version = esc(&manifest.tool.version),
        by_type = counts_table("By type", &digest.counts.population.by_type),
        by_decision = counts_table("By decision", &digest.counts.population.by_decision),
        by_category = counts_table(
            "By action category",
            &digest.counts.population.by_action_category
        ),
        by_env = counts_table("By environment", &digest.counts.population.by_environment),
        decisions = decisions_chart(digest),
        count = lat.count,
        p50 = fmt(lat.p50),
        p95 = fmt(lat.p95),
        max = fmt(lat.max),
        latency = latency_chart(digest),
        findings = findings,
        fw = esc(&manifest.framework),
        controls = controls,
    )
}
