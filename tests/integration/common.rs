//! Shared test helpers: an in-process server on `127.0.0.1:0`, a spawned `ledger` process, events.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::core::note::{SignerKey, VerifierKey};
use ledger::http::Limits;
use ledger::http::limit::SourceLimits;
use ledger::net::NetConfig;
use ledger::sequencer::SequencerConfig;
use ledger::server::{ServeConfig, serve};
use ledger::store::{CredentialKind, Store};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ORIGIN: &str = "test.ledger/log";

pub fn test_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[42u8; 32]).unwrap()
}

pub fn verifier() -> VerifierKey {
    test_key().verifier().clone()
}

/// Registers a credential in a (stopped) data dir, as `ledger sources|auditors|admins add` does;
/// returns its token.
pub fn add_credential(data_dir: &Path, kind: CredentialKind, name: &str) -> String {
    let store = Store::open(data_dir).unwrap();
    ledger::admin::add(&store, kind, name, None).unwrap().0
}

/// Registers a source; returns its token.
pub fn add_source(data_dir: &Path, name: &str) -> String {
    add_credential(data_dir, CredentialKind::Source, name)
}

/// Registers an auditor; returns its token.
pub fn add_auditor(data_dir: &Path, name: &str) -> String {
    add_credential(data_dir, CredentialKind::Auditor, name)
}

/// A schema-valid event; `n` makes ids unique.
pub fn event(n: u64) -> Value {
    json!({
        "event_id": format!("evt-{n}"),
        "type": "approval.requested",
        "request_id": format!("req-{}", n / 3),
        "occurred_at": "2026-11-21T10:00:00.5+01:00",
        "actor": {"id": "agent-7", "kind": "agent", "on_behalf_of": "alice"},
        "action": {"name": "export customers", "category": "data_export", "risk": "high"},
        "resource": {"id": "s3://bucket/customers", "environment": "prod"},
        "context": {"prompt": "export the customer table", "model": "m-1", "n": n},
    })
}

/// Holds the writer inside its first clock read until released, so a test can fill the queue
/// or hold requests in flight.
pub fn gated_clock() -> (
    ledger::sequencer::Clock,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let first = AtomicBool::new(true);
    let clock = std::sync::Arc::new(move || {
        if first.swap(false, Ordering::SeqCst)
            && let Some((entered, release)) = gate.lock().unwrap().take()
        {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        1_795_251_960_000_000
    });
    (clock, entered_rx, release_tx)
}

/// Waits (at most 30 s) until the writer holds its first batch inside [`gated_clock`]'s clock.
pub async fn writer_entered(entered: std::sync::mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || {
        entered
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap()
    })
    .await
    .unwrap();
}

/// Settings of a test server beyond the data dir, limits and sequencer.
#[derive(Default)]
pub struct Net {
    pub source_limits: SourceLimits,
    pub net: NetConfig,
    /// The client the helpers use; `reqwest::Client::new()` if `None`.
    pub client: Option<reqwest::Client>,
}

/// An in-process server over a temp dir (or a given dir), stopped on drop or with [`TestServer::stop`].
pub struct TestServer {
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ledger::server::ServeError>>>,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Limits::default(), SequencerConfig::default()).await
    }

    /// A server over a fresh temp dir with one source, `ci-runner`, and the given settings.
    pub async fn start_with(limits: Limits, sequencer: SequencerConfig) -> Self {
        Self::start_net(limits, sequencer, Net::default()).await
    }

    /// Like [`TestServer::start_with`], with per-source limits, connection settings and the
    /// client the helpers use (one that trusts the test CA for TLS).
    pub async fn start_net(limits: Limits, sequencer: SequencerConfig, net: Net) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let token = add_source(&dir, "ci-runner");
        Self::start_full(dir, token, Some(Arc::new(tmp)), limits, sequencer, net).await
    }

    /// A server over a fresh temp dir with a source (`ci-runner`, [`TestServer::token`]), an
    /// auditor and an admin; returns it with the auditor's and the admin's tokens.
    pub async fn start_with_roles(limits: Limits) -> (Self, String, String) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let token = add_source(&dir, "ci-runner");
        let auditor = add_auditor(&dir, "alice");
        let admin = add_credential(&dir, CredentialKind::Admin, "root");
        let tmp = Some(Arc::new(tmp));
        let server = Self::start_on(dir, token, tmp, limits, SequencerConfig::default()).await;
        (server, auditor, admin)
    }

    pub async fn start_on(
        data_dir: PathBuf,
        token: String,
        tmp: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        sequencer: SequencerConfig,
    ) -> Self {
        Self::start_inner(
            data_dir,
            token,
            tmp,
            limits,
            sequencer,
            Net::default(),
            test_key(),
        )
        .await
    }

    /// As [`TestServer::start_on`], signing with `key`.
    pub async fn start_keyed(
        data_dir: PathBuf,
        token: String,
        tmp: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        sequencer: SequencerConfig,
        key: SignerKey,
    ) -> Self {
        Self::start_inner(data_dir, token, tmp, limits, sequencer, Net::default(), key).await
    }

    /// As [`TestServer::start_on`], with network settings (TLS, source limits).
    pub async fn start_full(
        data_dir: PathBuf,
        token: String,
        tmp: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        sequencer: SequencerConfig,
        net: Net,
    ) -> Self {
        Self::start_inner(data_dir, token, tmp, limits, sequencer, net, test_key()).await
    }

    async fn start_inner(
        data_dir: PathBuf,
        token: String,
        tmp: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        sequencer: SequencerConfig,
        net: Net,
        key: SignerKey,
    ) -> Self {
        ledger::tls::install_default_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if net.net.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let config = ServeConfig {
            data_dir: data_dir.clone(),
            key,
            sequencer,
            limits,
            source_limits: net.source_limits,
            net: net.net,
        };
        let task = tokio::spawn(serve(config, listener, async {
            let _ = rx.await;
        }));
        let server = Self {
            base,
            token,
            data_dir,
            client: net.client.unwrap_or_default(),
            shutdown: Some(tx),
            task: Some(task),
            _tmp: tmp,
        };
        let mut server = server;
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let result = self.task.take().unwrap().await.unwrap();
                panic!("server exited during start-up: {result:?}");
            }
            let ready = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the server and waits for it; returns the data dir and the temp dir that owns it.
    pub async fn stop(mut self) -> (PathBuf, Option<Arc<tempfile::TempDir>>) {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
        (self.data_dir.clone(), self._tmp.take())
    }

    pub async fn post(&self, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_to("/v1/events", content_type, body).await
    }

    /// POSTs to `path` (with its query) as the source.
    pub async fn post_to(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, body: &Value) -> (u16, Value) {
        self.post("application/json", body.to_string()).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn tree_size(&self) -> u64 {
        let (_, note) = self.get_text("/v1/checkpoint").await;
        ledger::core::note::open_checkpoint(&note, &verifier())
            .unwrap()
            .size
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A `ledger serve` child process, killed on drop.
pub struct Process {
    pub child: Child,
    pub base: String,
    log: Arc<std::sync::Mutex<String>>,
    addr: std::sync::mpsc::Receiver<String>,
    scheme: &'static str,
}

impl Process {
    /// Starts `ledger serve` on a free port and waits until it is ready.
    pub fn spawn(data_dir: &Path, key_file: &Path) -> Self {
        Self::spawn_with(data_dir, key_file, &[])
    }

    /// Starts `ledger serve` with extra arguments (`--tls-cert ...` makes the base `https://`).
    pub fn spawn_with(data_dir: &Path, key_file: &Path, extra: &[&str]) -> Self {
        let mut command = Self::serve_command(data_dir, key_file);
        command.args(extra);
        let mut process = Self::launch(command);
        if extra.contains(&"--tls-cert") {
            process.scheme = "https";
        }
        process.wait_ready();
        process
    }

    /// The `ledger serve` command line [`Process::spawn`] runs, for callers that wrap it (a
    /// resource limit) before [`Process::launch`].
    pub fn serve_command(data_dir: &Path, key_file: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--key")
            .arg(key_file)
            .env("LEDGER_LOG", "info");
        command
    }

    /// Starts `command` (a `ledger serve`, possibly wrapped) without waiting for it to be ready:
    /// `base` is empty until [`Process::wait_ready`].
    pub fn launch(mut command: Command) -> Self {
        // Tests build reqwest clients next; they need the process's crypto provider.
        ledger::tls::install_default_provider();
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, addr) = std::sync::mpsc::channel();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                if !sent && let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                    sent = true;
                }
            }
        });
        Self {
            child,
            base: String::new(),
            log,
            addr,
            scheme: "http",
        }
    }

    /// Waits until the server reports its address (it is listening, so its start-up check passed).
    pub fn wait_ready(&mut self) {
        let addr = self
            .addr
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "ledger serve did not report its address; its log:\n{}",
                    self.log()
                )
            });
        self.base = format!("{}://{addr}", self.scheme);
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM (a graceful stop, as an operator's restart sends), then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ledger serve did not stop after SIGTERM; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a directory tree (a data dir, a bundle).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// The newest checkpoint of a `ledger serve` process (`GET /v1/checkpoint`), verified.
pub async fn head(
    server: &Process,
    client: &reqwest::Client,
    key: &VerifierKey,
) -> ledger::core::note::Checkpoint {
    let note = client
        .get(format!("{}/v1/checkpoint", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    ledger::core::note::open_checkpoint(&note, key).unwrap()
}

/// Runs the `ledger` binary, asserting success; returns its stdout.
pub fn ledger_cmd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A ledger set up with the command line, as an operator would: `ledger keygen` into `keys/` and
/// `ledger sources add gateway` on `data/` (not yet served).
pub struct CliLedger {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub key_file: PathBuf,
    pub key: VerifierKey,
    pub token: String,
}

pub fn cli_ledger(origin: &str) -> CliLedger {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys = tmp.path().join("keys");
    ledger_cmd(&[
        "keygen",
        "--origin",
        origin,
        "--out",
        keys.to_str().unwrap(),
    ]);
    let key = VerifierKey::parse(
        std::fs::read_to_string(keys.join("ledger.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let token = ledger_cmd(&[
        "sources",
        "add",
        "gateway",
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .lines()
    .last()
    .unwrap()
    .to_owned();
    CliLedger {
        key_file: keys.join("ledger.key"),
        tmp,
        data,
        key,
        token,
    }
}

/// Fetches a public proof (`GET /v1/proofs/...`): the answer, and its `hashes` decoded.
async fn get_proof(
    client: &reqwest::Client,
    url: String,
) -> (Value, Vec<ledger::core::hash::Hash>) {
    let proof: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    let hashes = proof["hashes"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: {proof}"))
        .iter()
        .map(|h| ledger::core::hash::from_hex(h.as_str().unwrap()).unwrap())
        .collect();
    (proof, hashes)
}

/// Fetches `GET /v1/proofs/consistency?from=size&to=head.size` (public) and checks that `head`
/// extends the checkpoint `(size, root)`; panics naming both sizes otherwise.
pub async fn assert_extends(
    client: &reqwest::Client,
    base: &str,
    size: u64,
    root: &ledger::core::hash::Hash,
    head: &ledger::core::note::Checkpoint,
) {
    let url = format!("{base}/v1/proofs/consistency?from={size}&to={}", head.size);
    let (_, hashes) = get_proof(client, url).await;
    ledger::core::merkle::verify_consistency::<ledger::core::hash::Blake3>(
        size, head.size, root, &head.root, &hashes,
    )
    .unwrap_or_else(|e| panic!("head {} does not extend checkpoint {size}: {e}", head.size));
}

/// Fetches `GET /v1/proofs/inclusion?index=..&tree_size=head.size` (public) and checks that the
/// entry at `index` is in `head`; panics naming both otherwise.
pub async fn assert_included(
    client: &reqwest::Client,
    base: &str,
    index: u64,
    head: &ledger::core::note::Checkpoint,
) {
    let url = format!(
        "{base}/v1/proofs/inclusion?index={index}&tree_size={}",
        head.size
    );
    let (proof, hashes) = get_proof(client, url).await;
    let leaf_hash = ledger::core::hash::from_hex(proof["leaf_hash"].as_str().unwrap()).unwrap();
    ledger::core::merkle::verify_inclusion::<ledger::core::hash::Blake3>(
        index, head.size, &leaf_hash, &hashes, &head.root,
    )
    .unwrap_or_else(|e| panic!("entry {index} at size {}: {e}", head.size));
}
