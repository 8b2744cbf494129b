//! The `ledger` binary: parse, run, map failures to exit codes. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc, not glibc's malloc: ingest, export and verify build and drop a JSON tree per event,
/// and glibc's allocator was a fifth of their CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
