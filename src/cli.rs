//! The `ledger` command line: parses arguments once into validated settings, then runs a command.
//!
//! Exit codes (fixed): 0 success, 1 verification failed, 2 usage, input or I/O error.
//! `anyhow` is used here and in `main.rs` only; library layers return their own error enums.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::{Role, check_source_name};
use crate::http::Limits;
use crate::http::limit::{SourceLimits, system_monotonic_clock};
use crate::keyfile;
use crate::net::NetConfig;
use crate::sequencer::{SequencerConfig, system_clock};
use crate::server::{ServeConfig, serve};
use crate::store::Store;
use crate::tls::ClientTls;

/// A tamper-evident ledger of approval events for AI agents and automated pipelines.
#[derive(Debug, Parser)]
#[command(name = "ledger", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether the command runs until stopped (`serve`), rather than doing one job and exiting.
    #[must_use]
    pub fn runs_until_stopped(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ingestion service (HTTP API on --listen, data in --data-dir).
    Serve(ServeArgs),
    /// Generate a log signing key: DIR/ledger.key (mode 0600) and DIR/ledger.pub.
    Keygen {
        /// Log name, used as the key name and checkpoint origin (e.g. example.com/approvals).
        #[arg(long, value_name = "NAME")]
        origin: String,
        /// Directory to write the key files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The log's signing key: rotate it, list its history.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage sources: the enforcement points allowed to post events.
    #[command(subcommand)]
    Sources(CredentialCommand),
    /// Manage auditors: who may read entries and export bundles over HTTP (`export --server`).
    #[command(subcommand)]
    Auditors(CredentialCommand),
    /// Manage admins: who may manage credentials over the admin API (and cannot write events).
    #[command(subcommand)]
    Admins(CredentialCommand),
    /// Write an evidence bundle for a period (safe while `ledger serve` runs on the data dir).
    Export(ExportArgs),
    /// Check an evidence bundle offline. Exit 0 only if every check passes, 1 if one fails.
    Verify(VerifyArgs),
    /// Audit a data dir: every entry, chain link, tree node, index record and checkpoint. Never
    /// writes to it (safe beside a running server, or on a backup). Exit 0 if clean, 1 if damaged.
    Fsck(FsckArgs),
    /// Copy a data dir consistently into a new directory, also while `ledger serve` writes to it
    /// (the server makes the copy when it holds the data dir).
    Backup(BackupArgs),
    /// Drive a running server with unique events and report events/s, latency and the floor ratio.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    /// One event per POST, --connections at once.
    Single,
    /// --batch events per POST as a JSON array.
    Array,
    /// --batch events per POST as NDJSON.
    Ndjson,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReceiptsArg {
    /// A full receipt per event (the default answer).
    Each,
    /// One batch receipt per request: one checkpoint and one multi-leaf proof.
    Batch,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Server base URL (http:// or https://).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    server: String,
    /// For an https:// server: trust only the CA certificates in FILE (PEM), e.g. a self-signed
    /// server certificate, instead of the system's roots.
    #[arg(long, env = "LEDGER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// A source token (from `ledger sources add`).
    #[arg(
        long,
        env = "LEDGER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// Request shape.
    #[arg(long, value_enum, default_value = "single")]
    mode: ModeArg,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events per request in array and ndjson modes.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Answer form to ask for: a receipt per event, or one batch receipt per request
    /// (`POST /v1/events?receipts=batch`).
    #[arg(long, value_enum, default_value = "each")]
    receipts: ReceiptsArg,
    /// Stop after this many events.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Receipts to verify after the run (proof against the checkpoint, leaf against its hash).
    #[arg(long, default_value_t = 100)]
    sample: usize,
    /// Directory for the floor measurement (a fresh RocksDB inside, removed after).
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".",
        conflicts_with = "no_floor"
    )]
    floor_dir: PathBuf,
    /// Skip the floor measurement.
    #[arg(long)]
    no_floor: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FrameworkArg {
    /// SOC 2 Trust Services Criteria.
    Soc2,
    /// NIST SP 800-53 Rev. 5 (FedRAMP), with OSCAL assessment results.
    Fedramp,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Control framework the bundle evidences.
    #[arg(long, value_enum)]
    framework: FrameworkArg,
    /// Period start, inclusive, by ingested_at: RFC 3339 (2026-11-01T00:00:00Z) or a UTC date (2026-11-01).
    #[arg(long, value_name = "T1")]
    from: String,
    /// Period end, exclusive, same forms as --from.
    #[arg(long, value_name = "T2")]
    to: String,
    /// Bundle directory to create (must not exist; it appears only when complete).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The ledger's data directory (opened read-only; the server may keep running).
    #[arg(
        long,
        env = "LEDGER_DATA_DIR",
        default_value = "ledger-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// The log's signing key, which signs the manifest (default: DATA_DIR/ledger.key).
    #[arg(long, env = "LEDGER_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Export over HTTP(S) from a running server instead of a data dir (needs --token).
    #[arg(long, value_name = "URL", requires = "token", conflicts_with = "key")]
    server: Option<String>,
    /// For an https:// --server: trust only the CA certificates in FILE (PEM), e.g. a self-signed
    /// server certificate, instead of the system's roots.
    #[arg(long, env = "LEDGER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// An auditor token (from `ledger auditors add`), for --server.
    #[arg(
        long,
        env = "LEDGER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// An earlier checkpoint (file) to prove this bundle's checkpoint consistent with.
    #[arg(long, value_name = "OLD_CHECKPOINT")]
    since: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The bundle directory.
    dir: PathBuf,
    /// The log's verifier key (name+id+key), obtained from the log operator out of band.
    #[arg(long, value_name = "VERIFIER_KEY")]
    key: Option<String>,
    /// A file holding the verifier key (e.g. ledger.pub).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Also prove the bundle's checkpoint extends this earlier checkpoint (file).
    #[arg(long, value_name = "OLD_CHECKPOINT")]
    consistency: Option<PathBuf>,
    /// Check signed rows against these source keys (`{"sources": {"NAME": ["KEY", ...]}}`, as
    /// `GET /v1/source-keys` or each source's owner gives them) instead of the bundle's own.
    #[arg(long, value_name = "FILE")]
    source_keys: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Replace the log's signing key (server stopped). The head checkpoint is re-signed by both
    /// keys, a transition statement signed by both is published (`GET /v1/keys`), and the old key
    /// cosigns new checkpoints for the grace period. Everything signed before stays valid.
    Rotate {
        /// The server's data directory.
        #[arg(
            long,
            env = "LEDGER_DATA_DIR",
            default_value = "ledger-data",
            value_name = "DIR"
        )]
        data_dir: PathBuf,
        /// The current key file, if not the data dir's ledger.key (then --new-key is required, and
        /// the server must be started with `--key NEW --cosign-key OLD` during the grace period).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The new key (from `ledger keygen --origin SAME_NAME`); generated in the data dir if
        /// omitted, the old one kept in DATA_DIR/keys/ for cosigning.
        #[arg(long, value_name = "FILE")]
        new_key: Option<PathBuf>,
        /// How long the old key keeps cosigning: e.g. 7d, 12h, 30m, 0.
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        grace: String,
    },
    /// Print the key history (as `GET /v1/keys` serves it).
    List {
        /// The server's data directory.
        #[arg(
            long,
            env = "LEDGER_DATA_DIR",
            default_value = "ledger-data",
            value_name = "DIR"
        )]
        data_dir: PathBuf,
    },
}

/// Where credentials are managed: a stopped server's data dir, or a running server's admin API.
#[derive(Debug, Args)]
struct CredentialTarget {
    /// The server's data directory (offline: the server must be stopped).
    #[arg(
        long,
        env = "LEDGER_DATA_DIR",
        default_value = "ledger-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// A running server's base URL (http:// or https://): use its admin API instead of the
    /// data dir.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// For an https:// --server: trust only the CA certificates in FILE (PEM), e.g. a self-signed
    /// server certificate, instead of the system's roots.
    #[arg(long, env = "LEDGER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// An admin token, with --server (from `ledger admins add`).
    #[arg(
        long,
        env = "LEDGER_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct FsckArgs {
    /// The data dir to audit (opened read-only; the server may keep running).
    #[arg(
        long,
        env = "LEDGER_DATA_DIR",
        default_value = "ledger-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// The log's verifier key (e.g. ledger.pub): the data dir's recorded key must be this one.
    /// Without it, checkpoints are checked with the key recorded in the data dir.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The data dir to copy.
    #[arg(
        long,
        env = "LEDGER_DATA_DIR",
        default_value = "ledger-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// Directory to create with the copy (must not exist). On another file system or disk for a
    /// copy that survives the loss of this one: on the same one, table files are hard-linked.
    #[arg(long, value_name = "DIR2")]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Register one and print its bearer token once, as the last line of stdout. A revoked name
    /// may be registered again (a new token: how a token is rotated).
    Add {
        /// Name: 1-64 of a-z 0-9 . _ - (a source's name is written into every entry it posts).
        name: String,
        /// Sources only: its origin key (a verifier key file from `ledger keygen --origin NAME`);
        /// the source must then sign every event (docs/formats.md, "Origin signatures").
        #[arg(long, value_name = "FILE")]
        origin_key: Option<PathBuf>,
        #[command(flatten)]
        target: CredentialTarget,
    },
    /// Sources only: add an origin key (earlier keys stay valid for earlier rows and signing).
    AddKey {
        /// The source.
        name: String,
        /// The verifier key file (`ledger keygen --origin NAME` writes it as ledger.pub).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        #[command(flatten)]
        target: CredentialTarget,
    },
    /// List names, token ids and revocations (never tokens).
    List {
        #[command(flatten)]
        target: CredentialTarget,
    },
    /// Revoke a token: a running server refuses it from the next request on.
    Revoke {
        /// The name to revoke.
        name: String,
        #[command(flatten)]
        target: CredentialTarget,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// RocksDB data directory (created on first start).
    #[arg(
        long,
        env = "LEDGER_DATA_DIR",
        default_value = "ledger-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,
    /// A retired log key to cosign checkpoints with during its grace period after `ledger keys
    /// rotate --key` (repeatable). Retired keys in DATA_DIR/keys/ are used without this flag.
    #[arg(long, value_name = "FILE")]
    cosign_key: Vec<PathBuf>,
    /// Address to listen on. Loopback by default: serve TLS (--tls-cert, --tls-key) and put a
    /// network policy in front before exposing it.
    #[arg(
        long,
        env = "LEDGER_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// Signing key file (from `ledger keygen`). Without it, DATA_DIR/ledger.key is used, and created
    /// on first start.
    #[arg(long, env = "LEDGER_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Log name for a key created on first start (default: ledger.local/<random>). Not with --key.
    #[arg(long, env = "LEDGER_ORIGIN", value_name = "NAME")]
    origin: Option<String>,
    /// Largest request body in bytes; larger requests get 413.
    #[arg(long, env = "LEDGER_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Most events in one request; more get 413.
    #[arg(long, env = "LEDGER_MAX_REQUEST_EVENTS", default_value_t = 10_000)]
    max_request_events: usize,
    /// Most events committed in one synced write (one fsync and one signature each).
    #[arg(long, env = "LEDGER_MAX_BATCH_EVENTS", default_value_t = 8192)]
    max_batch_events: usize,
    /// Most events accepted but not yet committed; beyond it, clients get 503 + Retry-After.
    #[arg(long, env = "LEDGER_MAX_QUEUED_EVENTS", default_value_t = 65_536)]
    max_queued_events: usize,
    /// Longest a request may take, in seconds (408 beyond).
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// Serve HTTPS with this certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, env = "LEDGER_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LEDGER_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Sustained events per second one source may post (0: unlimited); beyond it, 429 +
    /// Retry-After.
    #[arg(long, env = "LEDGER_SOURCE_RATE", default_value_t = 100_000)]
    source_rate: u64,
    /// Events one source may post at once after a quiet spell (the token bucket's size). A
    /// request larger than this is still accepted: it borrows against the refill.
    #[arg(long, env = "LEDGER_SOURCE_BURST", default_value_t = 200_000)]
    source_burst: u64,
    /// Event-posting requests one source may have in flight (0: unlimited); beyond it, 503 +
    /// Retry-After.
    #[arg(long, env = "LEDGER_SOURCE_CONCURRENCY", default_value_t = 128)]
    source_concurrency: usize,
    /// Seconds a client has to send a request's headers (or finish a TLS handshake), counted from
    /// when the server starts waiting; also how long an idle keep-alive connection stays open.
    #[arg(long, env = "LEDGER_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a connection may go with no byte moving either way and no request being handled
    /// (e.g. a client that stops reading its response) before it is closed.
    #[arg(long, env = "LEDGER_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    idle_timeout_secs: u64,
    /// Most connections open at once; further ones wait in the listen backlog until one closes.
    #[arg(long, env = "LEDGER_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
}

/// A user-facing error with an optional hint line.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: anyhow::Error,
    /// What to try instead.
    pub hint: Option<String>,
    /// Exit code (1 or 2).
    pub code: u8,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        let hint = hint_for(&error);
        Self {
            error,
            hint,
            code: 2,
        }
    }
}

fn hint_for(error: &anyhow::Error) -> Option<String> {
    let text = format!("{error:#}");
    if text.contains("is in use by another process") {
        Some("stop `ledger serve` first, or point --data-dir at another directory (credentials can be managed live: `--server URL --token ADMIN_TOKEN`)".into())
    } else if text.contains("belongs to the log with key") {
        Some(
            "start with the key this data dir was created with (--key), or use a new --data-dir"
                .into(),
        )
    } else {
        None
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Keygen { origin, out } => {
            let key = keyfile::generate(&out, &origin)?;
            println_safe(&format!("wrote {}", out.join(keyfile::KEY_FILE).display()));
            println_safe(&format!("wrote {}", out.join(keyfile::PUB_FILE).display()));
            println_safe(&key.verifier().encode());
            Ok(())
        }
        Command::Keys(cmd) => run_keys(cmd),
        Command::Sources(cmd) => run_credentials(Role::Source, cmd),
        Command::Auditors(cmd) => run_credentials(Role::Auditor, cmd),
        Command::Admins(cmd) => run_credentials(Role::Admin, cmd),
        Command::Export(args) => run_export(args),
        Command::Verify(args) => run_verify(args),
        Command::Fsck(args) => run_fsck(args),
        Command::Backup(args) => run_backup(args),
        Command::Bench(args) => run_bench(args),
    }
}

fn run_bench(args: BenchArgs) -> Result<(), Failure> {
    use crate::bench::{BenchConfig, Mode, ReceiptForm, run};
    let config = BenchConfig {
        url: args.server.trim_end_matches('/').to_owned(),
        tls: client_tls(args.ca_cert.as_deref())?,
        token: args.token,
        mode: match args.mode {
            ModeArg::Single => Mode::Single,
            ModeArg::Array => Mode::Array,
            ModeArg::Ndjson => Mode::NdJson,
        },
        connections: args.connections.max(1),
        batch: args.batch.max(1),
        receipts: match args.receipts {
            ReceiptsArg::Each => ReceiptForm::Each,
            ReceiptsArg::Batch => ReceiptForm::Batch,
        },
        events: args.events,
        duration: Duration::from_secs(args.duration.max(1)),
        sample: args.sample,
        floor_dir: (!args.no_floor).then_some(args.floor_dir),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(run(config)).map_err(|e| {
        let code = if matches!(e, crate::bench::BenchError::BadReceipt { .. }) {
            1
        } else {
            2
        };
        Failure {
            error: e.into(),
            hint: None,
            code,
        }
    })?;
    if args.json {
        println_safe(&serde_json::to_string_pretty(&report).unwrap_or_default());
        return Ok(());
    }
    let r = &report;
    println_safe(&format!(
        "mode {:?}, {} connections, {} events/request, receipts {:?}: {} events in {} requests, {:.2} s",
        r.mode, r.connections, r.batch, r.receipts, r.events, r.requests, r.seconds
    ));
    println_safe(&format!(
        "throughput {:.0} events/s durable with receipts",
        r.events_per_sec
    ));
    println_safe(&format!(
        "latency to receipt p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; 503 pushbacks {}",
        r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms, r.latency.max_ms, r.pushbacks
    ));
    println_safe(&format!("receipts verified {}", r.receipts_verified));
    if let (Some(floor), Some(ratio)) = (r.floor_events_per_sec, r.ratio) {
        println_safe(&format!(
            "floor {floor:.0} events/s (synced RocksDB batches of {}); ratio = ledger / floor = {ratio:.2}",
            r.batch
        ));
    }
    Ok(())
}

/// Parses a grace period: `0`, or a number followed by s, m, h or d.
fn parse_duration(text: &str) -> Result<i64, Failure> {
    let bad = || Failure {
        error: anyhow!("invalid duration {text:?}"),
        hint: Some("use e.g. 7d, 12h, 30m, 45s or 0".into()),
        code: 2,
    };
    if text == "0" {
        return Ok(0);
    }
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds * 1_000_000)
        .filter(|v| *v >= 0)
        .ok_or_else(bad)
}

fn run_keys(cmd: KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::List { data_dir } => {
            let store = open_existing(&data_dir)?;
            let history = crate::keys::history(&store)?;
            println_safe(&serde_json::to_string_pretty(&history).expect("serializes"));
            Ok(())
        }
        KeysCommand::Rotate {
            data_dir,
            key,
            new_key,
            grace,
        } => {
            let grace = parse_duration(&grace)?;
            if key.is_some() && new_key.is_none() {
                return Err(Failure {
                    error: anyhow!("--key needs --new-key"),
                    hint: Some("make one with `ledger keygen --origin NAME --out DIR`".into()),
                    code: 2,
                });
            }
            let store = open_existing(&data_dir)?;
            let in_dir = key.is_none();
            let old_path = key.unwrap_or_else(|| data_dir.join(keyfile::KEY_FILE));
            let old = keyfile::load(&old_path)?;
            let retired_dir = data_dir.join(RETIRED_KEYS_DIR);
            // A generated key is written (and fsync'd) in a dir kept until it is installed: after
            // the rotation commits, the store names it, and it must not be lost on any error.
            let staged: Option<PathBuf> = match &new_key {
                Some(_) => None,
                None => {
                    std::fs::create_dir_all(&retired_dir)
                        .with_context(|| format!("creating {}", retired_dir.display()))?;
                    let tmp = tempfile::Builder::new()
                        .prefix(".new-key-")
                        .tempdir_in(&retired_dir)
                        .context("creating a temp dir for the new key")?;
                    keyfile::generate(tmp.path(), old.verifier().name())?;
                    let kept = tmp.keep();
                    fsync_dir(&kept)?;
                    fsync_dir(&retired_dir)?;
                    Some(kept)
                }
            };
            let new_path = new_key
                .clone()
                .or_else(|| staged.as_ref().map(|d| d.join(keyfile::KEY_FILE)))
                .unwrap_or_default();
            let new = keyfile::load(&new_path)?;
            let now = crate::sequencer::system_clock()();
            let until = crate::core::leaf::format_micros(now.saturating_add(grace))
                .ok_or_else(|| anyhow!("grace period too long"))?;
            let rotated = crate::keys::rotate(&store, &old, &new, &until);
            drop(store);
            let history = match rotated {
                Ok(h) => h,
                Err(e) => {
                    if let Some(dir) = &staged {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    return Err(e.into());
                }
            };
            if in_dir && let Some(staged) = staged {
                // The data dir now names the new key: put the files where `serve` looks.
                let retired = retired_dir.join(format!("{}.key", hex::encode(old.verifier().id())));
                let install = || -> anyhow::Result<()> {
                    std::fs::rename(&old_path, &retired)
                        .with_context(|| format!("moving the old key to {}", retired.display()))?;
                    std::fs::rename(staged.join(keyfile::KEY_FILE), &old_path).with_context(
                        || format!("installing the new key at {}", old_path.display()),
                    )?;
                    std::fs::rename(
                        staged.join(keyfile::PUB_FILE),
                        data_dir.join(keyfile::PUB_FILE),
                    )
                    .context("installing the new verifier key")?;
                    fsync_dir(&retired_dir)?;
                    fsync_dir(&data_dir)?;
                    std::fs::remove_dir(&staged).ok();
                    Ok(())
                };
                install().map_err(|e| Failure {
                    hint: Some(format!(
                        "the log now uses the new key; install it by hand: {} -> {}, and keep the old key {} in {}",
                        staged.join(keyfile::KEY_FILE).display(),
                        old_path.display(),
                        old_path.display(),
                        retired.display()
                    )),
                    error: e,
                    code: 2,
                })?;
                println_safe(&format!(
                    "the old key is kept in {} and cosigns checkpoints until {until}",
                    retired.display()
                ));
            } else {
                println_safe(&format!(
                    "start the server with --key {} --cosign-key {} until {until}",
                    new_path.display(),
                    old_path.display()
                ));
            }
            let size = history.keys.last().map_or(0, |e| e.from_size);
            println_safe(&format!(
                "rotated at tree size {size}; the new verifier key follows:"
            ));
            println_safe(&new.verifier().encode());
            Ok(())
        }
    }
}

fn fsync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Where `keys rotate` keeps retired keys of a data dir (for cosigning during the grace period).
const RETIRED_KEYS_DIR: &str = "keys";

/// The retired keys kept in the data dir, for cosigning (the history decides which still do).
fn retired_keys(data_dir: &Path) -> anyhow::Result<Vec<crate::core::note::SignerKey>> {
    let dir = data_dir.join(RETIRED_KEYS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "key") {
            keys.push(keyfile::load(&path)?);
        }
    }
    Ok(keys)
}

fn run_credentials(role: Role, cmd: CredentialCommand) -> Result<(), Failure> {
    let what = role.name();
    let target = match &cmd {
        CredentialCommand::Add { target, .. }
        | CredentialCommand::AddKey { target, .. }
        | CredentialCommand::List { target }
        | CredentialCommand::Revoke { target, .. } => target,
    };
    if matches!(cmd, CredentialCommand::AddKey { .. }) && role != Role::Source {
        return Err(Failure {
            error: anyhow!("only sources have origin keys"),
            hint: Some("ledger sources add-key NAME --key-file FILE".into()),
            code: 2,
        });
    }
    let read_key = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    if let Some(url) = &target.server {
        let token = target.token.clone().ok_or_else(|| Failure {
            error: anyhow!("--server needs an admin token"),
            hint: Some("pass --token or set LEDGER_ADMIN_TOKEN (from `ledger admins add`)".into()),
            code: 2,
        })?;
        let api = AdminClient::new(url, token, &client_tls(target.ca_cert.as_deref())?)?;
        return match cmd {
            CredentialCommand::Add {
                name, origin_key, ..
            } => {
                let mut body = serde_json::json!({"role": what, "name": name});
                if let Some(path) = &origin_key {
                    body["origin_key"] = read_key(path)?.trim().into();
                }
                let v = api.send(
                    api.client
                        .post(api.url("/v1/admin/credentials"))
                        .json(&body),
                )?;
                print_issued(what, &name, v["token_id"].as_str().unwrap_or("?"));
                println_safe(
                    v["token"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no token in the answer"))?,
                );
                Ok(())
            }
            CredentialCommand::List { .. } => {
                let v = api.send(
                    api.client
                        .get(api.url(&format!("/v1/admin/credentials?role={what}"))),
                )?;
                for c in v["credentials"].as_array().into_iter().flatten() {
                    let line = credential_line(
                        c["name"].as_str().unwrap_or("?"),
                        c["token_id"].as_str().unwrap_or("?"),
                        c["revoked_at"].as_str(),
                    );
                    if !println_safe(&line) {
                        break;
                    }
                }
                Ok(())
            }
            CredentialCommand::AddKey { name, key_file, .. } => {
                check_source_name(&name)?;
                let path = format!("/v1/admin/credentials/{what}/{name}/origin-keys");
                let body = serde_json::json!({"key": read_key(&key_file)?.trim()});
                let v = api.send(api.client.post(api.url(&path)).json(&body))?;
                let n = v["origin_keys"].as_array().map_or(0, Vec::len);
                println_safe(&format!(
                    "source {name:?} now has {n} origin key(s); it must sign every event"
                ));
                Ok(())
            }
            CredentialCommand::Revoke { name, .. } => {
                check_source_name(&name)?;
                let path = format!("/v1/admin/credentials/{what}/{name}");
                let v = api.send(api.client.delete(api.url(&path)))?;
                println_safe(&format!(
                    "revoked {what} {name:?} (token id {}) at {}",
                    v["token_id"].as_str().unwrap_or("?"),
                    v["revoked_at"].as_str().unwrap_or("?")
                ));
                Ok(())
            }
        };
    }
    match cmd {
        CredentialCommand::Add {
            name,
            origin_key,
            target,
        } => {
            check_source_name(&name)?;
            let key = origin_key.as_deref().map(read_key).transpose()?;
            let data_dir = target.data_dir;
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let store = Store::open(&data_dir)
                .with_context(|| format!("opening {}", data_dir.display()))?;
            let (token, info) =
                crate::admin::add(&store, role, &name, key.as_deref()).map_err(|e| Failure {
                    hint: matches!(e, crate::admin::AdminError::Exists { .. }).then(|| {
                        format!("pick another name, or `ledger {what}s revoke {name}` first")
                    }),
                    error: e.into(),
                    code: 2,
                })?;
            print_issued(what, &name, &info.token_id);
            println_safe(&token);
            Ok(())
        }
        CredentialCommand::AddKey {
            name,
            key_file,
            target,
        } => {
            let store = open_existing(&target.data_dir)?;
            let c = crate::admin::add_origin_key(&store, &name, &read_key(&key_file)?)?;
            println_safe(&format!(
                "source {name:?} now has {} origin key(s); it must sign every event",
                c.origin_keys.len()
            ));
            Ok(())
        }
        CredentialCommand::List { target } => {
            let store = open_existing(&target.data_dir)?;
            for c in crate::admin::list(&store, Some(role))? {
                if !println_safe(&credential_line(
                    &c.name,
                    &c.token_id,
                    c.revoked_at.as_deref(),
                )) {
                    break;
                }
            }
            Ok(())
        }
        CredentialCommand::Revoke { name, target } => {
            let store = open_existing(&target.data_dir)?;
            let c = crate::admin::revoke(&store, role, &name)?;
            println_safe(&format!(
                "revoked {what} {name:?} (token id {}) at {}",
                c.token_id,
                c.revoked_at.as_deref().unwrap_or("?")
            ));
            Ok(())
        }
    }
}

fn print_issued(what: &str, name: &str, token_id: &str) {
    println_safe(&format!(
        "registered {what} {name:?} (token id {token_id}); its bearer token follows and is shown only once:"
    ));
}

fn credential_line(name: &str, token_id: &str, revoked_at: Option<&str>) -> String {
    match revoked_at {
        Some(t) => format!("{name}\ttoken id {token_id}\trevoked {t}"),
        None => format!("{name}\ttoken id {token_id}"),
    }
}

/// A running server's admin API.
struct AdminClient {
    client: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl AdminClient {
    fn new(url: &str, token: String, tls: &ClientTls) -> anyhow::Result<Self> {
        Ok(Self {
            client: tls
                .blocking_client()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> anyhow::Result<serde_json::Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("reaching {}", self.base))?;
        let status = response.status();
        let body: serde_json::Value = response.json().unwrap_or_default();
        if !status.is_success() {
            bail!(
                "server answered {status}: {}",
                body["error"].as_str().unwrap_or("no error message")
            );
        }
        Ok(body)
    }
}

/// What an HTTPS client trusts: the system's roots, or only the CAs of `--ca-cert`.
fn client_tls(ca_cert: Option<&Path>) -> Result<ClientTls, Failure> {
    ClientTls::from_ca_file(ca_cert).map_err(|e| Failure {
        error: anyhow!("--ca-cert: {e}"),
        hint: Some(
            "pass the PEM certificate of the CA that signed the server's certificate (for a self-signed server, its certificate)".into(),
        ),
        code: 2,
    })
}

/// Parses `--from`/`--to`: RFC 3339, or a date meaning midnight UTC.
fn parse_time(flag: &str, text: &str) -> Result<i64, Failure> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    crate::core::leaf::parse_micros(&full).ok_or_else(|| Failure {
        error: anyhow!("{flag} {text:?} is not a time"),
        hint: Some(format!(
            "use RFC 3339 ({flag} 2026-11-01T00:00:00Z) or a UTC date ({flag} 2026-11-01)"
        )),
        code: 2,
    })
}

fn run_export(args: ExportArgs) -> Result<(), Failure> {
    let from = parse_time("--from", &args.from)?;
    let to = parse_time("--to", &args.to)?;
    if from >= to {
        return Err(Failure {
            error: anyhow!("--from {} is not before --to {}", args.from, args.to),
            hint: Some("the period is [--from, --to): the end is exclusive".into()),
            code: 2,
        });
    }
    if args.out.exists() {
        return Err(Failure {
            error: anyhow!("{} already exists", args.out.display()),
            hint: Some("choose a new --out directory; bundles are never overwritten".into()),
            code: 2,
        });
    }
    if args.server.is_none() && args.ca_cert.is_some() {
        return Err(Failure {
            error: anyhow!("--ca-cert is only for --server"),
            hint: Some(
                "with --data-dir the export reads the data dir directly; drop --ca-cert (or unset LEDGER_CA_CERT)".into(),
            ),
            code: 2,
        });
    }
    let source = match (&args.server, &args.token) {
        (Some(url), Some(token)) => crate::export::Source::Server {
            url: url.clone(),
            token: token.clone(),
            tls: client_tls(args.ca_cert.as_deref())?,
        },
        (None, Some(_)) => {
            return Err(Failure {
                error: anyhow!("--token is only for --server"),
                hint: Some(
                    "with --data-dir the export reads the data dir directly; drop --token".into(),
                ),
                code: 2,
            });
        }
        _ => {
            if !args.data_dir.join("CURRENT").is_file() {
                return Err(Failure {
                    error: anyhow!("{} is not a ledger data dir", args.data_dir.display()),
                    hint: Some(
                        "point --data-dir at the directory `ledger serve` uses, or use --server URL --token T".into(),
                    ),
                    code: 2,
                });
            }
            let key_path = args
                .key
                .clone()
                .unwrap_or_else(|| args.data_dir.join(keyfile::KEY_FILE));
            crate::export::Source::DataDir {
                path: args.data_dir.clone(),
                key: Box::new(keyfile::load(&key_path)?),
            }
        }
    };
    let since = args
        .since
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let framework = match args.framework {
        FrameworkArg::Soc2 => "soc2",
        FrameworkArg::Fedramp => "fedramp",
    };
    let config = crate::export::ExportConfig {
        framework: framework.into(),
        from,
        to,
        out: args.out.clone(),
        source,
        since,
        now: (system_clock())(),
        progress: true,
    };
    let report = crate::export::export(&config)?;
    let m = &report.manifest;
    println_safe(&format!(
        "wrote {}: {} rows (entries {}..{}), {} context, {} boundary; checkpoint size {}",
        args.out.display(),
        m.rows.events,
        m.index_range.start,
        m.index_range.end,
        m.rows.context,
        m.rows.boundaries,
        m.checkpoint.size
    ));
    Ok(())
}

fn run_verify(args: VerifyArgs) -> Result<(), Failure> {
    let key_text = match (&args.key, &args.key_file) {
        (Some(_), Some(_)) => {
            return Err(Failure {
                error: anyhow!("--key and --key-file conflict"),
                hint: Some(
                    "give the verifier key once: --key NAME+ID+KEY or --key-file ledger.pub".into(),
                ),
                code: 2,
            });
        }
        (Some(k), None) => k.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => {
            return Err(Failure {
                error: anyhow!("no verifier key given"),
                hint: Some(
                    "pass --key-file ledger.pub (from the log operator); a key inside the bundle is never trusted".into(),
                ),
                code: 2,
            });
        }
    };
    let key = crate::core::note::VerifierKey::parse(key_text.trim()).map_err(|e| Failure {
        error: anyhow!("verifier key: {e}"),
        hint: Some("did you pass the private key? use the verifier key (ledger.pub)".into()),
        code: 2,
    })?;
    let old = args
        .consistency
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let pinned: Option<crate::bundle::SourceKeys> = args
        .source_keys
        .as_ref()
        .map(|p| -> anyhow::Result<_> {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{}: expected {{\"sources\": {{\"NAME\": [\"VERIFIER KEY\", ...]}}}}",
                    p.display()
                )
            })
        })
        .transpose()?;
    let result = crate::verify::verify_with(&args.dir, &key, old.as_deref(), pinned.as_ref())?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &result)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        crate::verify::print_lines(&result, &mut out)
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    if result.ok {
        Ok(())
    } else {
        Err(Failure {
            error: anyhow!("bundle failed verification"),
            hint: None,
            code: 1,
        })
    }
}

fn run_fsck(args: FsckArgs) -> Result<(), Failure> {
    if !args.data_dir.join("CURRENT").is_file() {
        return Err(Failure {
            error: anyhow!("{} is not a ledger data dir", args.data_dir.display()),
            hint: Some("point --data-dir at the directory `ledger serve` uses, or a backup".into()),
            code: 2,
        });
    }
    let key = match &args.key_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                crate::core::note::VerifierKey::parse(text.trim()).map_err(|e| Failure {
                    error: anyhow!("{}: {e}", path.display()),
                    hint: Some(
                        "did you pass the private key? use the verifier key (ledger.pub)".into(),
                    ),
                    code: 2,
                })?,
            )
        }
    };
    let report = crate::fsck::fsck_dir(&args.data_dir, key.as_ref(), !args.json)
        .with_context(|| format!("checking {}", args.data_dir.display()))?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        crate::fsck::print_lines(&report, &mut out)
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    match report.first() {
        None => Ok(()),
        Some(first) => Err(Failure {
            error: anyhow!(
                "{} failed fsck: {} problems, the first at {}",
                args.data_dir.display(),
                report.problems_total,
                first.location
            ),
            hint: Some(
                "restore from the newest backup that passes fsck; keep this copy for investigation"
                    .into(),
            ),
            code: 1,
        }),
    }
}

fn run_backup(args: BackupArgs) -> Result<(), Failure> {
    use crate::backup::{BackupError, Method, backup};
    let done = backup(&args.data_dir, &args.out).map_err(|e| {
        let hint = match &e {
            BackupError::OutExists(_) => Some("choose a new --out directory".to_owned()),
            BackupError::OutInside(_) => {
                Some("put --out outside --data-dir, ideally on another disk".to_owned())
            }
            BackupError::NotDataDir(_) => {
                Some("point --data-dir at the directory `ledger serve` uses".to_owned())
            }
            BackupError::NoSocket(..) => Some(
                "is that server an older version, or its data dir path too long for a Unix socket? stop it and run the backup offline".to_owned(),
            ),
            _ => None,
        };
        Failure {
            error: e.into(),
            hint,
            code: 2,
        }
    })?;
    let by = match done.method {
        Method::Server => "made by the running server",
        Method::Offline => "made offline",
    };
    let size = done.tree_size.map_or_else(
        || "no checkpoint yet".to_owned(),
        |s| format!("tree size {s}"),
    );
    println_safe(&format!(
        "wrote {}: a consistent copy at {size} ({by}); audit it with `ledger fsck --data-dir {}`",
        args.out.display(),
        args.out.display()
    ));
    let key = args.data_dir.join(keyfile::KEY_FILE);
    if key.exists() {
        println_safe(&format!(
            "note: the signing key {} is not in the copy; keep it backed up separately, and serve a restored copy with --key",
            key.display()
        ));
    }
    Ok(())
}

/// Opens a data dir for reading: it must exist (a typo should not create one).
fn open_existing(data_dir: &Path) -> anyhow::Result<Store> {
    if !data_dir.is_dir() {
        bail!(
            "data dir {} does not exist (start `ledger serve --data-dir {}` once to create it)",
            data_dir.display(),
            data_dir.display()
        );
    }
    Store::open(data_dir).with_context(|| format!("opening {}", data_dir.display()))
}

/// Prints a line; returns false on a broken pipe (not an error: the reader went away).
fn println_safe(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(2);
        }
    }
}

fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    if args.key.is_some() && args.origin.is_some() {
        return Err(Failure {
            error: anyhow!("--origin and --key conflict: a key file already carries its log name"),
            hint: Some("drop --origin, or drop --key to create a new key in the data dir".into()),
            code: 2,
        });
    }
    for (name, value) in [
        ("--max-body-bytes", args.max_body_bytes),
        ("--max-request-events", args.max_request_events),
        ("--max-batch-events", args.max_batch_events),
        ("--max-queued-events", args.max_queued_events),
    ] {
        if value == 0 {
            return Err(anyhow!("{name} must be at least 1").into());
        }
    }
    for (name, value) in [
        ("--header-timeout-secs", args.header_timeout_secs),
        ("--idle-timeout-secs", args.idle_timeout_secs),
    ] {
        if value == 0 {
            return Err(anyhow!("{name} must be at least 1").into());
        }
    }
    if args.max_connections == 0 || args.max_connections > crate::net::MAX_CONNECTIONS_LIMIT {
        return Err(anyhow!(
            "--max-connections must be between 1 and {}",
            crate::net::MAX_CONNECTIONS_LIMIT
        )
        .into());
    }
    if args.source_rate > 0 && args.source_burst == 0 {
        return Err(Failure {
            error: anyhow!(
                "--source-burst 0 with --source-rate {}: no request could ever be admitted",
                args.source_rate
            ),
            hint: Some(
                "set --source-burst to at least 1, or --source-rate 0 for no rate limit".into(),
            ),
            code: 2,
        });
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        (None, None) => None,
        (cert, _) => {
            let (given, missing) = if cert.is_some() {
                ("--tls-cert", "--tls-key")
            } else {
                ("--tls-key", "--tls-cert")
            };
            return Err(Failure {
                error: anyhow!(
                    "{given} without {missing}: TLS needs both the certificate and its key"
                ),
                hint: Some(format!(
                    "pass {missing} FILE too (or set LEDGER_TLS_CERT and LEDGER_TLS_KEY), or neither for plain HTTP"
                )),
                code: 2,
            });
        }
    };
    if args.max_request_events > args.max_queued_events {
        return Err(Failure {
            error: anyhow!(
                "--max-request-events ({}) exceeds --max-queued-events ({}): such requests could never be queued",
                args.max_request_events,
                args.max_queued_events
            ),
            hint: Some("raise --max-queued-events or lower --max-request-events".into()),
            code: 2,
        });
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let (key, created) =
        keyfile::load_or_create(&args.data_dir, args.key.as_deref(), args.origin.as_deref())?;
    if created {
        tracing::info!(
            key_file = %args.data_dir.join(keyfile::KEY_FILE).display(),
            verifier_key = %key.verifier().encode(),
            "created a new log signing key; give auditors the verifier key"
        );
    }
    let mut cosigners = retired_keys(&args.data_dir)?;
    for path in &args.cosign_key {
        cosigners.push(keyfile::load(path)?);
    }
    let config = ServeConfig {
        data_dir: args.data_dir,
        key,
        sequencer: SequencerConfig {
            max_batch_events: args.max_batch_events,
            max_queued_events: args.max_queued_events,
            clock: system_clock(),
            cosigners,
            pipeline_min_events: crate::sequencer::PIPELINE_MIN_EVENTS,
            before_commit: None,
        },
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_request_events: args.max_request_events,
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
        },
        source_limits: SourceLimits {
            rate: args.source_rate,
            burst: args.source_burst,
            concurrency: args.source_concurrency,
            clock: system_monotonic_clock(),
        },
        net: NetConfig {
            tls,
            header_read_timeout: Duration::from_secs(args.header_timeout_secs),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            max_connections: args.max_connections,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        serve(config, listener, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
