//! Credentials: bearer tokens for sources (enforcement points), auditors and admins.
//!
//! Owns: token format, token hashing, constant-time checking, the in-memory credential table.
//! Must not touch: HTTP (it gets a header value), storage layout (it gets and gives record bytes).
//!
//! A token is `ldg_<token id: 16 hex>_<secret: 43 base64url chars>` (64 random bits of id, 256 of
//! secret). Only `BLAKE3(secret)` is stored, with the id as a lookup key that is not secret. A
//! presented token is found by id, and its secret's hash compared in constant time, so timing tells
//! an attacker nothing about the secret. A fast hash suffices: the secret has 256 bits of entropy,
//! so there is no dictionary to slow down.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::core::note::VerifierKey;

/// Errors of credential handling (exit code 2 in the CLI; 401 never says which check failed).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A source name outside `[a-z0-9][a-z0-9._-]{0,63}`.
    #[error("invalid source name {0:?}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit")]
    InvalidName(String),
    /// The operating system could not supply randomness.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A stored record that does not parse.
    #[error("corrupt credential record for {0}")]
    CorruptRecord(String),
}

/// The stored form of a credential: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRecord {
    /// Public lookup id (16 hex digits).
    pub token_id: String,
    /// Hex BLAKE3 of the secret part.
    pub secret_hash: String,
    /// When it was issued (RFC 3339), if known (records of version 0.1 have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When it was revoked; a revoked record authenticates nothing and is kept for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// A source's origin keys (C2SP verifier key text, `name+id+key`), oldest first: with any, the
    /// source must sign each event with one of them. Kept after rotation so old rows still verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin_keys: Vec<String>,
    /// Earlier tokens of this name, revoked, oldest first (kept when a name is issued again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousToken>,
}

/// A revoked token of a credential that was issued again: kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PreviousToken {
    /// Its public id.
    pub token_id: String,
    /// When it was issued.
    pub created_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

impl CredentialRecord {
    /// The record as stored.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("record serializes")
    }

    /// Parses a stored record of source `name`.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, AuthError> {
        serde_json::from_slice(bytes).map_err(|_| AuthError::CorruptRecord(name.to_owned()))
    }
}

/// Checks a source or auditor name: a source's goes into every leaf, so keep it short and plain.
pub fn check_source_name(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidName(name.to_owned()))
    }
}

/// Makes a new token and its stored record. The token is returned once and never stored.
pub fn new_token() -> Result<(String, CredentialRecord), AuthError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| AuthError::Random(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
    let secret = B64URL.encode(secret);
    let record = CredentialRecord {
        token_id: hex::encode(id),
        secret_hash: hex::encode(blake3::hash(secret.as_bytes()).as_bytes()),
        created_at: None,
        revoked_at: None,
        origin_keys: Vec::new(),
        previous: Vec::new(),
    };
    Ok((format!("ldg_{}_{secret}", record.token_id), record))
}

pub use crate::store::CredentialKind as Role;

/// Who a valid token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    /// The source or auditor name.
    pub name: &'a str,
    /// What it may do.
    pub role: Role,
}

/// The credential table a server checks tokens against.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    by_id: HashMap<String, (String, Role, [u8; 32])>,
    origin_keys: HashMap<String, Vec<VerifierKey>>,
}

impl Credentials {
    /// Builds the table from `(name, role, record)` triples.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = (&'a str, Role, CredentialRecord)>,
    ) -> Result<Self, AuthError> {
        let mut by_id = HashMap::new();
        let mut origin_keys = HashMap::new();
        for (name, role, record) in records {
            if record.revoked_at.is_some() {
                continue;
            }
            if role == Role::Source && !record.origin_keys.is_empty() {
                let keys = record
                    .origin_keys
                    .iter()
                    .map(|k| VerifierKey::parse(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| AuthError::CorruptRecord(name.to_owned()))?;
                origin_keys.insert(name.to_owned(), keys);
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&record.secret_hash, &mut hash)
                .map_err(|_| AuthError::CorruptRecord(name.to_owned()))?;
            by_id.insert(record.token_id, (name.to_owned(), role, hash));
        }
        Ok(Self { by_id, origin_keys })
    }

    /// The origin keys of source `name` (empty if it does not sign).
    #[must_use]
    pub fn origin_keys(&self, name: &str) -> &[VerifierKey] {
        self.origin_keys.get(name).map_or(&[], Vec::as_slice)
    }

    /// Number of active credentials.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no source is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whom a bearer token belongs to, or `None`. Constant time in the secret.
    #[must_use]
    pub fn authenticate(&self, token: &str) -> Option<Principal<'_>> {
        let rest = token.strip_prefix("ldg_")?;
        let (id, secret) = rest.split_once('_')?;
        if secret.len() > 64 {
            return None;
        }
        let (name, role, want) = self.by_id.get(id)?;
        let got = blake3::hash(secret.as_bytes());
        bool::from(got.as_bytes().ct_eq(want)).then_some(Principal { name, role: *role })
    }
}

/// The table the server authenticates against, replaced whole when an admin changes a credential,
/// so a revocation takes effect on the next request.
#[derive(Debug, Default)]
pub struct SharedCredentials(RwLock<Arc<Credentials>>);

impl SharedCredentials {
    /// A shared table holding `credentials`.
    #[must_use]
    pub fn new(credentials: Credentials) -> Self {
        Self(RwLock::new(Arc::new(credentials)))
    }

    /// The current table.
    #[must_use]
    pub fn current(&self) -> Arc<Credentials> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the table.
    pub fn replace(&self, credentials: Credentials) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(credentials);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks_and_rejections() {
        let (token, record) = new_token().unwrap();
        assert!(token.starts_with("ldg_") && token.len() == 4 + 16 + 1 + 43);
        assert!(!record.secret_hash.contains(&token[21..]));
        let creds = Credentials::from_records([("ci", Role::Source, record.clone())]).unwrap();
        assert_eq!(
            creds.authenticate(&token),
            Some(Principal {
                name: "ci",
                role: Role::Source
            })
        );
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(creds.authenticate(&forged), None);
        assert_eq!(creds.authenticate(""), None);
        assert_eq!(creds.authenticate(&token[..20]), None);
        let again = CredentialRecord::from_bytes("ci", &record.to_bytes()).unwrap();
        assert_eq!(again, record);
        let revoked = CredentialRecord {
            revoked_at: Some("2026-11-21T00:00:00Z".into()),
            ..record
        };
        let creds = Credentials::from_records([("ci", Role::Source, revoked)]).unwrap();
        assert_eq!(
            creds.authenticate(&token),
            None,
            "a revoked token authenticates nothing"
        );
    }

    #[test]
    fn source_names_are_plain() {
        assert!(check_source_name("ci-runner.eu_1").is_ok());
        for bad in [
            "",
            "Upper",
            "-lead",
            "with space",
            "quote\"",
            &"a".repeat(65),
        ] {
            assert!(check_source_name(bad).is_err(), "{bad}");
        }
    }
}
