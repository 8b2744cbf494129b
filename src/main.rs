//! The `ledger` binary: parse, run, map failures to exit codes. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc, not glibc's malloc: ingest, export and verify build and drop a JSON tree per event,
/// and glibc's allocator was a fifth of their CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`include/mimalloc.h`; libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For a one-shot command: mimalloc keeps the pages it frees instead of returning them to the OS
/// a second later. Export frees and reallocates the same amounts chunk after chunk; with purging it
/// faulted them back in at once (115,000 page faults and 1-2 s of system time per million rows,
/// 9 % of its wall time; `docs/performance.md`, session 8). Its peak memory is bounded by
/// design, so keeping freed pages only holds the peak. `serve` keeps the default: its memory
/// must fall back after a burst.
fn keep_freed_memory() {
    // SAFETY: sets a documented option's default to a documented value (-1: never purge);
    // called before any other thread exists. A default, so `MIMALLOC_PURGE_DELAY` still wins.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // reqwest's TLS backend uses the process default crypto provider.
    ledger::tls::install_default_provider();
    let cli = ledger::cli::Cli::parse();
    if !cli.runs_until_stopped() {
        keep_freed_memory();
    }
    match ledger::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            if let Some(hint) = failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option index names purge_delay: the bundled mimalloc (v3) defaults it to 1,000 ms
    /// (`src/options.c`; the header's comment still says 10).
    #[test]
    fn the_purge_option_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1_000);
    }
}
