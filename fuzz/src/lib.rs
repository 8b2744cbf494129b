//! What the fuzz targets share: a scratch directory, and the one tolerated kind of panic.

use std::panic::{AssertUnwindSafe, Location};
use std::path::Path;
use std::sync::{LazyLock, Mutex, Once};

/// Scratch space, in memory where the machine has a tmpfs (bundle files are written per input).
pub static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("a temp dir in /dev/shm")
    } else {
        tempfile::tempdir().expect("a temp dir")
    }
});

/// Crates whose panics on malformed Parquet are tolerated: the parquet crate (and the Arrow crates
/// it builds arrays with) panics on some corrupt files instead of returning an error, in code the
/// ledger cannot reach into or validate for beforehand (page encodings, dictionary indexes).
/// `ledger verify` then exits with status 101 rather than reporting a failed check: it fails
/// closed, never passes. docs/security.md ("Hostile input") lists them.
const TOLERATED: &[&str] = &["/parquet-", "/arrow-"];

/// Locations of the tolerated panics seen so far, each printed once.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs `f` (which reads Parquet); a panic raised inside the parquet or Arrow crates ends `f` and is
/// reported once per location on stderr, any other panic aborts the process as libFuzzer expects
/// (a crash: the fuzzer saves the input). `None` if `f` panicked.
///
/// This is the only `catch_unwind` in the project, and it is in the fuzz harness, not the library:
/// it lets fuzzing go on past known dependency bugs while every panic in the ledger's own code, or
/// in the harness's assertions, still stops the run.
pub fn tolerating_parquet_panics<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // libFuzzer's hook (set before the first input) prints the panic and aborts; keep it for
        // every panic but the tolerated ones.
        let fatal = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location().filter(|at| tolerated(at)) {
                let at = format!("{}:{}", at.file(), at.line());
                let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
                if !seen.contains(&at) {
                    eprintln!("fuzz: tolerated panic in a dependency at {at}: {info}");
                    seen.push(at);
                }
                return;
            }
            fatal(info);
        }));
    });
    std::panic::catch_unwind(AssertUnwindSafe(f)).ok()
}

fn tolerated(at: &Location<'_>) -> bool {
    // Only the crates as built from the registry (`$CARGO_HOME/registry/src/...`), never the
    // ledger's own sources.
    let file = at.file();
    file.contains("/registry/src/") && TOLERATED.iter().any(|c| file.contains(c))
}
