//! `ledger verify` on an arbitrary bundle directory: the input is the bundle's files, each a
//! section `\0\0FILE <name>\n<bytes>` (names outside the bundle's file list are skipped, so nothing
//! is written outside the scratch directory). Two pseudo-files are arguments: `@since`, an earlier
//! checkpoint (`--since`), and `@source-keys`, pinned source keys (`--source-keys`).
//!
//! Verification must return, never panic (but the parquet crate's own, see
//! `ledger_fuzz::tolerating_parquet_panics`), hang or allocate without bound; every check must run
//! and report (a failure hides no other check), and the bundle passes only if each check does.
//! The key is fuzz/seeds/ledger.pub, the key of the seed bundles in fuzz/corpus/bundle.

#![no_main]

use std::sync::LazyLock;

use ledger::bundle::{Manifest, SourceKeys, files};
use ledger::core::note::VerifierKey;
use ledger::verify::verify_with;
use ledger_fuzz::{SCRATCH, tolerating_parquet_panics};
use libfuzzer_sys::fuzz_target;

/// Section header of one file.
const SEPARATOR: &[u8] = b"\0\0FILE ";

/// The names a section may have: the bundle's files, and one file no bundle has.
const NAMES: &[&str] = &[
    files::EVENTS,
    files::BOUNDARIES,
    files::CONTEXT,
    files::CHECKPOINT,
    files::MANIFEST,
    files::MANIFEST_SIG,
    files::CONTROLS,
    files::SUMMARY,
    files::REPORT,
    files::CONSISTENCY,
    files::OSCAL,
    files::SOURCE_KEYS,
    "extra.txt",
];

/// Checks `verify` always runs: 4 on the manifest and checkpoint, 11 on the rows.
const CHECKS: usize = 15;

static KEY: LazyLock<VerifierKey> = LazyLock::new(|| {
    VerifierKey::parse(include_str!("../seeds/ledger.pub")).expect("fuzz/seeds/ledger.pub parses")
});

fuzz_target!(|data: &[u8]| {
    let dir = SCRATCH.path().join("bundle");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("scratch bundle removed");
    }
    std::fs::create_dir_all(dir.join("oscal")).expect("scratch bundle created");
    let mut since = None;
    let mut pinned = None;
    for section in split(data, SEPARATOR).skip(1) {
        let (name, body) = match section.iter().position(|b| *b == b'\n') {
            Some(i) => (&section[..i], &section[i + 1..]),
            None => (section, &[][..]),
        };
        match name {
            b"@since" => since = Some(String::from_utf8_lossy(body).into_owned()),
            b"@source-keys" => pinned = serde_json::from_slice::<SourceKeys>(body).ok(),
            _ => {
                if let Some(name) = NAMES.iter().find(|n| n.as_bytes() == name) {
                    std::fs::write(dir.join(name), body).expect("scratch file written");
                }
            }
        }
    }
    let Some(verification) =
        tolerating_parquet_panics(|| verify_with(&dir, &KEY, since.as_deref(), pinned.as_ref()))
    else {
        return;
    };
    let verification = verification.expect("the bundle directory exists");
    let checks = &verification.checks;
    // With `--since`, one more, if the bundle's checkpoint verifies and its manifest parses.
    let usable = checks.first().is_some_and(|c| c.ok)
        && std::fs::read(dir.join(files::MANIFEST))
            .is_ok_and(|m| serde_json::from_slice::<Manifest>(&m).is_ok());
    let expected = CHECKS + usize::from(since.is_some() && usable);
    assert_eq!(checks.len(), expected, "every check runs");
    assert_eq!(verification.ok, checks.iter().all(|c| c.ok));
    for check in checks {
        assert!(
            check.ok || !check.detail.is_empty(),
            "{} failed silently",
            check.name
        );
    }
});

/// `data` split at every occurrence of `separator` (the part before the first one included).
fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        // Candidates by their first byte: comparing at every offset would be slow under libFuzzer,
        // which intercepts each comparison.
        let found = current
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == separator[0])
            .map(|(i, _)| i)
            .find(|&i| current[i..].starts_with(separator));
        match found {
            Some(i) => {
                rest = Some(&current[i + separator.len()..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}
