//! `ledger backup`: a consistent copy of a data dir, also while `ledger serve` writes to it.
//!
//! Owns: the control socket `DATA_DIR/ledger.sock` (both ends) and the choice between asking the
//! running server and copying offline. Must not touch: RocksDB (the copy itself is
//! [`Store::backup_to`], RocksDB's Checkpoint API), HTTP.
//!
//! Why a socket: a RocksDB checkpoint is consistent only when the process that has the database
//! open makes it (it flushes memtables, stops file deletions, and copies the live WAL up to what has
//! been written). `ledger serve` holds the data dir's lock, so the CLI cannot open it, and a
//! secondary instance cannot make a correct checkpoint (it would hard-link the primary's live WAL,
//! which keeps growing, and race its compactions). So the server makes it, asked over a Unix socket
//! inside the data dir that only processes of the server's own user (or root) may use: they can
//! read the data dir anyway. An HTTP endpoint would let a network credential make the server write
//! to its own disk.
//!
//! Protocol: one JSON line each way. Request `{"backup":"/absolute/path"}`; answer `{"ok":true}`
//! or `{"error":"..."}`.

use std::future::Future;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::store::{Store, StoreError};

/// File name of the control socket inside the data dir.
pub const SOCKET_FILE: &str = "ledger.sock";

/// Longest request line the server reads.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Why a backup failed (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// `--out` already exists.
    #[error("{0} already exists; a backup never overwrites")]
    OutExists(PathBuf),
    /// `--out` is inside the data dir.
    #[error("{0} is inside the data dir")]
    OutInside(PathBuf),
    /// `--data-dir` does not hold a data dir.
    #[error("{0} is not a ledger data dir")]
    NotDataDir(PathBuf),
    /// Another process holds the data dir and does not answer on its control socket.
    #[error("{0} is in use by another process, which does not answer backup requests on {1}")]
    NoSocket(PathBuf, PathBuf),
    /// The server answered with an error.
    #[error("the server could not make the backup: {0}")]
    Server(String),
    /// Opening the data dir, making the checkpoint, or reading the copy failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Socket or file I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Who made the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The running server, asked over its control socket.
    Server,
    /// This process, with the data dir not in use.
    Offline,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct Backup {
    /// Who made it.
    pub method: Method,
    /// Tree size of the newest checkpoint in the copy (`None`: the data dir was never served).
    pub tree_size: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Request {
    backup: PathBuf,
}

#[derive(Serialize, Deserialize, Default)]
struct Answer {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Copies the data dir at `data_dir` into `out` (which must not exist): through the running
/// server if one holds the data dir, else directly. Either way the copy is a RocksDB checkpoint:
/// a prefix of the log's commits, openable as a data dir of its own.
pub fn backup(data_dir: &Path, out: &Path) -> Result<Backup, BackupError> {
    if !data_dir.join("CURRENT").is_file() {
        return Err(BackupError::NotDataDir(data_dir.to_owned()));
    }
    if out.exists() {
        return Err(BackupError::OutExists(out.to_owned()));
    }
    let out = std::path::absolute(out).map_err(io(out))?;
    let data = data_dir.canonicalize().map_err(io(data_dir))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        if parent
            .canonicalize()
            .map_err(io(parent))?
            .starts_with(&data)
        {
            return Err(BackupError::OutInside(out));
        }
    }
    let socket = data_dir.join(SOCKET_FILE);
    let method = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(stream) => {
            ask_server(stream, &socket, &out)?;
            Method::Server
        }
        // No socket, one left behind by a server that is gone, or a path too long for a socket
        // (so no server could have bound it either): copy offline, unless the data dir is in use.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::InvalidInput
            ) =>
        {
            let store = match Store::open(data_dir) {
                Err(StoreError::InUse(_)) => {
                    return Err(BackupError::NoSocket(data_dir.to_owned(), socket));
                }
                other => other?,
            };
            store.backup_to(&out)?;
            Method::Offline
        }
        Err(e) => return Err(io(&socket)(e)),
    };
    let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
    let copy = Store::open_secondary(&out, scratch.path())?;
    let tree_size = copy.latest_checkpoint()?.map(|(size, _)| size);
    Ok(Backup { method, tree_size })
}

fn ask_server(
    mut stream: std::os::unix::net::UnixStream,
    socket: &Path,
    out: &Path,
) -> Result<(), BackupError> {
    let mut line = serde_json::to_string(&Request {
        backup: out.to_owned(),
    })
    .map_err(|e| io(out)(std::io::Error::other(e)))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io(socket))?;
    let mut answer = String::new();
    // No read timeout: copying a large log to another file system takes as long as it takes.
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io(socket))?;
    let answer: Answer = serde_json::from_str(&answer)
        .map_err(|_| BackupError::Server(format!("unreadable answer {:?}", answer.trim_end())))?;
    match (answer.ok, answer.error) {
        (true, None) => Ok(()),
        (_, error) => Err(BackupError::Server(
            error.unwrap_or_else(|| "no reason given".into()),
        )),
    }
}

/// The server end: `DATA_DIR/ledger.sock`, removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    /// The uid of this process (owner of the socket file); peers must have it, or be root.
    owner: u32,
}

impl ControlSocket {
    /// Binds `data_dir/ledger.sock`, mode 0600. Call only while holding the data dir open: a
    /// socket file left behind by a killed server is replaced.
    pub fn bind(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(SOCKET_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        // The socket file belongs to whoever created it: this process's effective uid.
        let owner = std::fs::metadata(&path)?.uid();
        Ok(Self {
            listener,
            path,
            owner,
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers backup requests, one at a time, until `stop` resolves; a backup in progress
    /// finishes first (the store stays open until it has).
    pub async fn run(self, store: Arc<Store>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let stream = tokio::select! {
                () = &mut stop => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        continue;
                    }
                },
            };
            self.answer(stream, &store).await;
        }
    }

    async fn answer(&self, mut stream: tokio::net::UnixStream, store: &Arc<Store>) {
        let answer = match self.request(&mut stream).await {
            Err(error) => Answer {
                ok: false,
                error: Some(error),
            },
            Ok(out) => {
                let (store, target) = (Arc::clone(store), out.clone());
                tracing::info!(out = %out.display(), "backup requested");
                match tokio::task::spawn_blocking(move || store.backup_to(&target)).await {
                    Ok(Ok(())) => {
                        tracing::info!(out = %out.display(), "backup written");
                        Answer {
                            ok: true,
                            error: None,
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::error!(out = %out.display(), error = %e, "backup failed");
                        Answer {
                            ok: false,
                            error: Some(e.to_string()),
                        }
                    }
                    Err(e) => Answer {
                        ok: false,
                        error: Some(e.to_string()),
                    },
                }
            }
        };
        let mut line = serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into());
        line.push('\n');
        let _ = stream.write_all(line.as_bytes()).await;
    }

    /// Reads and checks one request: the peer's uid, then one JSON line naming an absolute path.
    async fn request(&self, stream: &mut tokio::net::UnixStream) -> Result<PathBuf, String> {
        let uid = stream.peer_cred().map_err(|e| e.to_string())?.uid();
        if uid != self.owner && uid != 0 {
            tracing::warn!(uid, "control socket: refused a peer of another user");
            return Err(format!(
                "uid {uid} may not make backups; run as the server's user"
            ));
        }
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stream).take(MAX_REQUEST_BYTES);
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .map_err(|_| "no request within 10 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let request: Request =
            serde_json::from_str(&line).map_err(|e| format!("malformed request: {e}"))?;
        if !request.backup.is_absolute() {
            return Err("the backup path must be absolute".into());
        }
        Ok(request.backup)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
