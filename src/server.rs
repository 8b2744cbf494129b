//! Wires a data dir into a running server: store, credentials, sequencer, HTTP.
//!
//! Owns: start-up order and graceful shutdown. Must not touch: request handling.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admin::AdminError;
use crate::auth::SharedCredentials;
use crate::backup::ControlSocket;
use crate::core::note::SignerKey;
use crate::http::limit::{SourceLimiter, SourceLimits};
use crate::http::{self, AppState, Limits};
use crate::net::{NetConfig, serve_connections};
use crate::sequencer::{Sequencer, SequencerConfig, SequencerError};
use crate::store::{Store, StoreError};

/// Everything `serve` needs, validated.
#[derive(Debug)]
pub struct ServeConfig {
    /// RocksDB directory.
    pub data_dir: PathBuf,
    /// The log's signing key.
    pub key: SignerKey,
    /// Sequencer limits.
    pub sequencer: SequencerConfig,
    /// HTTP limits.
    pub limits: Limits,
    /// Per-source rate and in-flight limits for `POST /v1/events`.
    pub source_limits: SourceLimits,
    /// TLS, connection cap and connection timeouts.
    pub net: NetConfig,
}

/// Why the server could not start or stopped abnormally (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening the data dir failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored state failed its start-up check, or the writer could not start.
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    /// A stored credential is corrupt.
    #[error(transparent)]
    Credentials(#[from] AdminError),
    /// The listener failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the API on `listener` (HTTPS if `config.net.tls` is set) until `shutdown` resolves,
/// then lets in-flight requests finish, commits what the sequencer holds, closes the data dir,
/// and returns.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Arc::new(Store::open(&config.data_dir)?);
    let credentials = crate::admin::load(&store)?;
    if credentials.is_empty() {
        tracing::warn!(
            "no credentials registered: stop the server and run `ledger admins add NAME --data-dir DIR` (or `sources add`)"
        );
    }
    let registered = credentials.len();
    // Our own handle: after shutdown we wait to be the last holder, then drop it here, so the
    // database is closed (its lock released) on this thread before `serve` returns.
    let handle = Arc::clone(&store);
    let signer = Arc::new(config.key.clone());
    let (sequencer, writer) = Sequencer::start(store, config.key, config.sequencer)?;
    let state = AppState {
        sequencer,
        credentials: Arc::new(SharedCredentials::new(credentials)),
        admin_lock: Arc::default(),
        manifest_checks: Arc::new(tokio::sync::Semaphore::new(1)),
        store: Arc::clone(&handle),
        signer,
        limits: config.limits,
        limiter: Arc::new(SourceLimiter::new(config.source_limits)),
    };
    // `ledger backup` asks for a checkpoint over a Unix socket in the data dir (only this process
    // can make a consistent one; see `backup`). Bound now that the data dir is ours and checked.
    let (stop_control, control_stopped) = tokio::sync::oneshot::channel::<()>();
    let control = match ControlSocket::bind(&config.data_dir) {
        Ok(socket) => {
            tracing::info!(socket = %socket.path().display(), "backup requests accepted");
            Some(tokio::spawn(socket.run(Arc::clone(&handle), async {
                let _ = control_stopped.await;
            })))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no control socket in the data dir: `ledger backup` cannot reach this server");
            None
        }
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = config.net.tls.is_some(),
        credentials = registered,
        "listening"
    );
    let app = http::router(state);
    let served = serve_connections(listener, app, &config.net, shutdown).await;
    // A backup in progress finishes before the store closes.
    let _ = stop_control.send(());
    if let Some(control) = control {
        control
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    // Every Sequencer handle lived in the router and in-flight requests, now all dropped: the
    // writer drains its queue, commits, and exits.
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // Connection tasks may still be dropping their clones of the state. (Polling a `Weak` is not
    // enough: the count reaches zero before the last holder has finished closing the database.)
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&handle) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    if Arc::strong_count(&handle) > 1 {
        tracing::warn!("data dir still referenced 10 s after shutdown");
    }
    tokio::task::spawn_blocking(move || {
        // Every commit is already durable in the WAL; this only spares the next open its replay.
        if let Err(e) = handle.flush() {
            tracing::warn!(error = %e, "memtables not flushed at shutdown: the next open replays the WAL");
        }
        drop(handle);
    })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tracing::info!("stopped");
    Ok(served?)
}
