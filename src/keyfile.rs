//! The log's signing key on disk: `ledger.key` (mode 0600, note private-key text) and `ledger.pub`
//! (verifier key text).
//!
//! Owns: key files and the randomness for new keys. Must not touch: signing (that is `core::note`).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::core::note::{NoteError, SignerKey};

/// File name of the private key.
pub const KEY_FILE: &str = "ledger.key";
/// File name of the verifier key.
pub const PUB_FILE: &str = "ledger.pub";

/// Key file errors (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a valid key.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: NoteError,
    },
    /// `keygen` would overwrite an existing key.
    #[error("{0} already exists; refusing to overwrite a signing key")]
    Exists(PathBuf),
    /// The operating system could not supply randomness.
    #[error("no randomness available: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Generates a key named `origin` and writes `dir/ledger.key` (0600) and `dir/ledger.pub`.
/// Never overwrites: an existing `ledger.key` is an error.
pub fn generate(dir: &Path, origin: &str) -> Result<SignerKey, KeyFileError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let key_path = dir.join(KEY_FILE);
    let key = SignerKey::from_seed(origin, &seed).map_err(|source| KeyFileError::Invalid {
        path: key_path.clone(),
        source,
    })?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyFileError::Exists(key_path.clone()),
            _ => io(&key_path)(e),
        })?;
    file.write_all(format!("{}\n", key.encode()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&key_path))?;
    let pub_path = dir.join(PUB_FILE);
    fs::write(&pub_path, format!("{}\n", key.verifier().encode())).map_err(io(&pub_path))?;
    Ok(key)
}

/// Reads a private key file. Warns when the file is readable by group or others.
pub fn load(path: &Path) -> Result<SignerKey, KeyFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "signing key file is readable by group or others; chmod 600 it");
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    SignerKey::parse(text.trim()).map_err(|source| KeyFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// The key `ledger serve` signs with: `explicit` if given, else `data_dir/ledger.key`, created on
/// first start with `origin` (or a random `ledger.local/<hex>` name). Returns whether it was created.
pub fn load_or_create(
    data_dir: &Path,
    explicit: Option<&Path>,
    origin: Option<&str>,
) -> Result<(SignerKey, bool), KeyFileError> {
    if let Some(path) = explicit {
        return Ok((load(path)?, false));
    }
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        return Ok((load(&path)?, false));
    }
    let origin = match origin {
        Some(o) => o.to_owned(),
        None => {
            let mut tag = [0u8; 4];
            getrandom::fill(&mut tag).map_err(|e| KeyFileError::Random(e.to_string()))?;
            format!("ledger.local/{}", hex::encode(tag))
        }
    };
    Ok((generate(data_dir, &origin)?, true))
}
