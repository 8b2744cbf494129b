//! Credential administration: issue, list and revoke tokens of sources, auditors and admins, on a
//! data dir. The one implementation behind the offline CLI (`--data-dir`, server stopped) and the
//! admin API (the server then reloads its table, so a change takes effect on the next request).
//!
//! Owns: the rules (names are unique per role while active; revocation keeps the record). Must not
//! touch: HTTP, token format (`auth`).

use serde::Serialize;

use crate::auth::{AuthError, CredentialRecord, Credentials, Role, check_source_name, new_token};
use crate::core::note::VerifierKey;
use crate::store::{Store, StoreError};

/// Why an administration step failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// An active credential of that role and name exists.
    #[error("{role} {name:?} already exists; revoke it first to issue a new token")]
    Exists {
        /// Role name.
        role: &'static str,
        /// The name.
        name: String,
    },
    /// No credential of that role and name.
    #[error("no {role} named {name:?}")]
    NotFound {
        /// Role name.
        role: &'static str,
        /// The name.
        name: String,
    },
    /// An origin key that does not parse, names another source, or is given for a non-source.
    #[error("origin key: {0}")]
    OriginKey(String),
    /// A bad name, no randomness, or a corrupt record.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The data dir failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What may be shown about a credential: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialInfo {
    /// `source`, `auditor` or `admin`.
    #[schema(value_type = String, pattern = "^(source|auditor|admin)$")]
    pub role: &'static str,
    /// The name (a source's is written into its entries).
    pub name: String,
    /// The token's public id.
    pub token_id: String,
    /// When it was issued.
    pub created_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// A source's origin keys (verifier key text), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origin_keys: Vec<String>,
    /// Earlier, revoked tokens of this name (after it was issued again), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<crate::auth::PreviousToken>,
}

impl CredentialInfo {
    fn of(role: Role, name: &str, r: CredentialRecord) -> Self {
        Self {
            role: role.name(),
            name: name.to_owned(),
            token_id: r.token_id,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
            origin_keys: r.origin_keys,
            previous: r.previous,
        }
    }
}

fn now() -> String {
    crate::core::leaf::format_micros(crate::sequencer::system_clock()()).unwrap_or_default()
}

fn record(store: &Store, role: Role, name: &str) -> Result<Option<CredentialRecord>, AdminError> {
    Ok(store
        .credential(role, name)?
        .map(|bytes| CredentialRecord::from_bytes(name, &bytes))
        .transpose()?)
}

/// Checks an origin key for source `name`: a C2SP verifier key (`name+id+key`, as `ledger keygen
/// --origin NAME` writes it) whose name is the source's, so a key names the one source it is for.
fn origin_key(role: Role, name: &str, key: &str) -> Result<String, AdminError> {
    if role != Role::Source {
        return Err(AdminError::OriginKey(
            "only sources sign their events".into(),
        ));
    }
    let key = VerifierKey::parse(key.trim()).map_err(|e| AdminError::OriginKey(e.to_string()))?;
    if key.name() != name {
        return Err(AdminError::OriginKey(format!(
            "the key is named {:?}; a source's origin key must be named after the source ({name:?}): `ledger keygen --origin {name}`",
            key.name()
        )));
    }
    Ok(key.encode())
}

/// Issues a token for a new `name` (or a revoked one: re-issuing is how a token is rotated), with
/// an optional origin key (the source must then sign its events). Returns the token, shown once,
/// and what was stored. The write is synced.
pub fn add(
    store: &Store,
    role: Role,
    name: &str,
    key: Option<&str>,
) -> Result<(String, CredentialInfo), AdminError> {
    check_source_name(name)?;
    let key = key.map(|k| origin_key(role, name, k)).transpose()?;
    let earlier = record(store, role, name)?;
    if earlier.as_ref().is_some_and(|r| r.revoked_at.is_none()) {
        return Err(AdminError::Exists {
            role: role.name(),
            name: name.to_owned(),
        });
    }
    let (token, mut rec) = new_token()?;
    rec.created_at = Some(now());
    // Issued again after a revocation: the earlier tokens stay on record, and a source keeps its
    // origin keys (its earlier signed rows must still verify, and it must still sign).
    if let Some(earlier) = earlier {
        rec.origin_keys = earlier.origin_keys;
        rec.previous = earlier.previous;
        rec.previous.push(crate::auth::PreviousToken {
            token_id: earlier.token_id,
            created_at: earlier.created_at,
            revoked_at: earlier.revoked_at,
        });
    }
    if let Some(key) = key
        && !rec.origin_keys.contains(&key)
    {
        rec.origin_keys.push(key);
    }
    store.put_credential(role, name, &rec.to_bytes())?;
    Ok((token, CredentialInfo::of(role, name, rec)))
}

/// Adds an origin key to source `name` (rotation: old keys stay, so old rows still verify; the
/// source may sign with any of them). From then on the source must sign every event.
pub fn add_origin_key(store: &Store, name: &str, key: &str) -> Result<CredentialInfo, AdminError> {
    let key = origin_key(Role::Source, name, key)?;
    let mut rec = record(store, Role::Source, name)?.ok_or_else(|| AdminError::NotFound {
        role: Role::Source.name(),
        name: name.to_owned(),
    })?;
    if !rec.origin_keys.contains(&key) {
        rec.origin_keys.push(key);
        store.put_credential(Role::Source, name, &rec.to_bytes())?;
    }
    Ok(CredentialInfo::of(Role::Source, name, rec))
}

/// Every source's origin keys, by source name (revoked sources included: their old rows still
/// need verifying). Public keys only.
pub fn origin_keys(
    store: &Store,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, AdminError> {
    let mut out = std::collections::BTreeMap::new();
    for (name, bytes) in store.credentials(Role::Source)? {
        let rec = CredentialRecord::from_bytes(&name, &bytes)?;
        if !rec.origin_keys.is_empty() {
            out.insert(name, rec.origin_keys);
        }
    }
    Ok(out)
}

/// Revokes `name`'s token (kept, marked revoked). Revoking twice keeps the first time.
pub fn revoke(store: &Store, role: Role, name: &str) -> Result<CredentialInfo, AdminError> {
    let mut rec = record(store, role, name)?.ok_or_else(|| AdminError::NotFound {
        role: role.name(),
        name: name.to_owned(),
    })?;
    if rec.revoked_at.is_none() {
        rec.revoked_at = Some(now());
        store.put_credential(role, name, &rec.to_bytes())?;
    }
    Ok(CredentialInfo::of(role, name, rec))
}

/// Every credential of `role` (or of every role), revoked ones included, by role then name.
pub fn list(store: &Store, role: Option<Role>) -> Result<Vec<CredentialInfo>, AdminError> {
    let mut out = Vec::new();
    for r in Role::ALL
        .into_iter()
        .filter(|r| role.is_none_or(|x| x == *r))
    {
        for (name, bytes) in store.credentials(r)? {
            out.push(CredentialInfo::of(
                r,
                &name,
                CredentialRecord::from_bytes(&name, &bytes)?,
            ));
        }
    }
    Ok(out)
}

/// The table of active credentials the server authenticates against.
pub fn load(store: &Store) -> Result<Credentials, AdminError> {
    let mut records = Vec::new();
    for role in Role::ALL {
        for (name, bytes) in store.credentials(role)? {
            let record = CredentialRecord::from_bytes(&name, &bytes)?;
            records.push((name, role, record));
        }
    }
    Ok(Credentials::from_records(
        records
            .iter()
            .map(|(n, role, r)| (n.as_str(), *role, r.clone())),
    )?)
}
