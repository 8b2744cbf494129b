//! Credential administration: issue, list and revoke tokens of sources, auditors and admins, on a
//! data dir. The one implementation behind the offline CLI (`--data-dir`, server stopped) and the
//! admin API (the server then reloads its table, so a change takes effect on the next request).
//!
//! Owns: the rules (names are unique per role while active; revocation keeps the record). Must not
//! touch: HTTP, token format (`auth`).

use serde::Serialize;

use crate::auth::{AuthError, CredentialRecord, Credentials, Role, check_source_name, new_token};
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
}

impl CredentialInfo {
    fn of(role: Role, name: &str, r: CredentialRecord) -> Self {
        Self {
            role: role.name(),
            name: name.to_owned(),
            token_id: r.token_id,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

fn now() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    crate::core::leaf::format_micros(micros).unwrap_or_default()
}

fn record(store: &Store, role: Role, name: &str) -> Result<Option<CredentialRecord>, AdminError> {
    Ok(store
        .credential(role, name)?
        .map(|bytes| CredentialRecord::from_bytes(name, &bytes))
        .transpose()?)
}

/// Issues a token for a new `name` (or a revoked one: re-issuing is how a token is rotated).
/// Returns the token, shown once, and what was stored. The write is synced.
pub fn add(store: &Store, role: Role, name: &str) -> Result<(String, CredentialInfo), AdminError> {
    check_source_name(name)?;
    if record(store, role, name)?.is_some_and(|r| r.revoked_at.is_none()) {
        return Err(AdminError::Exists {
            role: role.name(),
            name: name.to_owned(),
        });
    }
    let (token, mut rec) = new_token()?;
    rec.created_at = Some(now());
    store.put_credential(role, name, &rec.to_bytes())?;
    Ok((token, CredentialInfo::of(role, name, rec)))
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
