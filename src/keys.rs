//! The log key's history and its rotation (`ledger keys rotate`).
//!
//! Owns: the key history record in the data dir and the rotation step. Must not touch: HTTP.
//!
//! A rotation, done with the server stopped, is one synced write that: re-signs the current head
//! checkpoint with the old *and* the new key (so a verifier holding either key accepts it, and the
//! two keys are linked at one tree size); stores a *transition statement*, a signed note by both
//! keys naming the old key, the new key and that size; and makes the new key the log's key. For a
//! grace period after it the server cosigns every checkpoint with the old key too, so clients that
//! only know the old key keep verifying while they learn the new one from `GET /v1/keys`. Receipts,
//! checkpoints and bundles made before the rotation keep verifying with the old key: nothing
//! already signed changes. The history is public (`GET /v1/keys`), and each step in it is signed by
//! the key it replaces, so a client that trusts the first key can follow the chain.

use serde::{Deserialize, Serialize};

use crate::core::note::{NoteError, SignerKey, VerifierKey, open_checkpoint, parse_note};
use crate::store::{Commit, META_KEY_HISTORY, META_LOG_KEY, Store, StoreError};

/// Why a key step failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The data dir failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored note or key did not verify or parse.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The request makes no sense for this log.
    #[error("{0}")]
    Refused(String),
}

/// One key's time as the log's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyEpoch {
    /// The verifier key (`name+id+key`).
    pub key: String,
    /// The first tree size this key signed (0 for the first key).
    pub from_size: u64,
    /// The tree size at which it was replaced (it signed that checkpoint too), or null if current.
    pub retired_at_size: Option<u64>,
    /// Until when (RFC 3339) the server still cosigns checkpoints with it after retirement.
    pub cosign_until: Option<String>,
    /// The signed note introducing this key, by the key it replaced and by this one (null for
    /// the first key).
    pub transition: Option<String>,
}

/// The log's keys, oldest first; the last is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyHistory {
    /// The keys.
    pub keys: Vec<KeyEpoch>,
}

impl KeyHistory {
    /// Checks the chain: every key after the first is introduced by a transition statement that
    /// the key before it and the key itself signed, naming both and the size where it takes over,
    /// which is where the one before was retired. A history that fails this is not the log's.
    ///
    /// # Errors
    /// The first broken link.
    pub fn check_chain(&self) -> Result<(), String> {
        for pair in self.keys.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let parse = |k: &str| VerifierKey::parse(k).map_err(|e| format!("key {k}: {e}"));
            let (old, new) = (parse(&before.key)?, parse(&after.key)?);
            let statement = after
                .transition
                .as_deref()
                .ok_or_else(|| format!("key {} has no transition statement", after.key))?;
            let note = parse_note(statement).map_err(|e| e.to_string())?;
            for key in [&old, &new] {
                note.verify(key)
                    .map_err(|e| format!("transition to {}: {e}", after.key))?;
            }
            if note.text != transition_text(old.name(), after.from_size, &old, &new)
                || before.retired_at_size != Some(after.from_size)
            {
                return Err(format!(
                    "transition to {} does not match the history's sizes and keys",
                    after.key
                ));
            }
        }
        Ok(())
    }

    /// The keys that may have signed the checkpoint of `size`: the key of that size's epoch, and at
    /// a rotation size both keys.
    #[must_use]
    pub fn keys_for_size(&self, size: u64) -> Vec<VerifierKey> {
        self.keys
            .iter()
            .filter(|e| e.from_size <= size && e.retired_at_size.is_none_or(|r| size <= r))
            .filter_map(|e| VerifierKey::parse(&e.key).ok())
            .collect()
    }
}

/// The transition statement's text: what a rotation asserts, as a signed note body.
#[must_use]
pub fn transition_text(origin: &str, size: u64, old: &VerifierKey, new: &VerifierKey) -> String {
    format!(
        "ledger key rotation\n{origin}\n{size}\nold {}\nnew {}\n",
        old.encode(),
        new.encode()
    )
}

/// The history stored in the data dir; for a log never rotated, its one key from size 0.
pub fn history(store: &Store) -> Result<KeyHistory, KeyError> {
    if let Some(bytes) = store.meta(META_KEY_HISTORY)? {
        return serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Refused(format!("corrupt key history: {e}")));
    }
    let key = store
        .meta(META_LOG_KEY)?
        .ok_or_else(|| KeyError::Refused("the data dir has no log key yet".into()))?;
    Ok(KeyHistory {
        keys: vec![KeyEpoch {
            key: String::from_utf8_lossy(&key).into_owned(),
            from_size: 0,
            retired_at_size: None,
            cosign_until: None,
            transition: None,
        }],
    })
}

/// Replaces the log key `old` by `new` (same log name, another key) at the current head, with the
/// old key cosigning until `cosign_until` (RFC 3339). One synced write; the server must be stopped.
pub fn rotate(
    store: &Store,
    old: &SignerKey,
    new: &SignerKey,
    cosign_until: &str,
) -> Result<KeyHistory, KeyError> {
    let (old_v, new_v) = (old.verifier(), new.verifier());
    let mut history = history(store)?;
    let current = history
        .keys
        .last()
        .map(|e| e.key.clone())
        .unwrap_or_default();
    if current != old_v.encode() {
        return Err(KeyError::Refused(format!(
            "the log's current key is {current}, not {}",
            old_v.encode()
        )));
    }
    if new_v.name() != old_v.name() {
        return Err(KeyError::Refused(format!(
            "the new key is named {:?}; it must keep the log's name {:?} (`ledger keygen --origin {}`)",
            new_v.name(),
            old_v.name(),
            old_v.name()
        )));
    }
    if new_v.id() == old_v.id() || history.keys.iter().any(|e| e.key == new_v.encode()) {
        return Err(KeyError::Refused(
            "the new key was already used by this log".into(),
        ));
    }
    let (size, head) = store
        .latest_checkpoint()?
        .ok_or_else(|| KeyError::Refused("the log has no checkpoint yet".into()))?;
    open_checkpoint(&head, old_v)?;
    if parse_note(&head)?
        .signatures
        .iter()
        .any(|s| s.name == new_v.name() && s.id == new_v.id())
    {
        return Err(KeyError::Refused(
            "the head is already signed by the new key".into(),
        ));
    }
    let head = new.cosign(&head)?;
    let statement =
        new.cosign(&old.sign_note(&transition_text(old_v.name(), size, old_v, new_v)))?;
    if let Some(last) = history.keys.last_mut() {
        last.retired_at_size = Some(size);
        last.cosign_until = Some(cosign_until.to_owned());
    }
    history.keys.push(KeyEpoch {
        key: new_v.encode(),
        from_size: size,
        retired_at_size: None,
        cosign_until: None,
        transition: Some(statement),
    });
    let json = serde_json::to_vec(&history).expect("history serializes");
    store.commit(&Commit {
        checkpoint: Some((size, head)),
        meta: vec![
            (META_KEY_HISTORY.to_vec(), json),
            (META_LOG_KEY.to_vec(), new_v.encode().into_bytes()),
        ],
        ..Commit::default()
    })?;
    Ok(history)
}

/// Of `candidates` (retired keys the operator supplies), those the history lists as retired with a
/// cosigning period, each with the time (µs) that period ends.
pub fn cosigners(history: &KeyHistory, candidates: Vec<SignerKey>) -> Vec<(SignerKey, i64)> {
    candidates
        .into_iter()
        .filter_map(|k| {
            let epoch = history
                .keys
                .iter()
                .find(|e| e.key == k.verifier().encode() && e.retired_at_size.is_some())?;
            let until = crate::core::leaf::parse_micros(epoch.cosign_until.as_deref()?)?;
            Some((k, until))
        })
        .collect()
}
