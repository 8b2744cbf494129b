//! The admin API: issue, list and revoke credentials on a running server. Admin tokens only; an
//! admin can neither write events nor read entries. Every change is synced to the data dir, then
//! the server's credential table is reloaded, so a revoked token fails on its next request.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState, Role, authorize};
use crate::admin::{self, CredentialInfo};

/// Largest admin request body: a role and a name.
const MAX_ADMIN_BODY: usize = 4096;

fn role_named(name: &str, path: &str) -> Result<Role, ApiError> {
    Role::named(name).ok_or_else(|| {
        ApiError::bad_request(
            format!("unknown role {name:?}: use source, auditor or admin"),
            path,
        )
    })
}

/// Runs a credential change under the admin lock and reloads the table the server checks, all in
/// one blocking task: it runs to the end even if the request is dropped (time limit, client gone),
/// so a stored revocation is always in force, and the lock is held until the reload is done.
async fn change<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&crate::store::Store) -> Result<T, admin::AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    let (store, lock, credentials) = (
        std::sync::Arc::clone(&state.store),
        std::sync::Arc::clone(&state.admin_lock),
        std::sync::Arc::clone(&state.credentials),
    );
    let out = tokio::task::spawn_blocking(move || {
        let _guard = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = f(&store)?;
        credentials.replace(admin::load(&store)?);
        Ok::<_, admin::AdminError>(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(out)
}

/// A credential role, as named in requests and answers.
#[derive(ToSchema)]
#[schema(as = Role)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // schema only: requests carry the name as text and get a 400 on others
pub(super) enum RoleSchema {
    /// Posts events; reads entries.
    Source,
    /// Reads entries; exports.
    Auditor,
    /// Manages credentials.
    Admin,
}

/// `POST /v1/admin/credentials` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddRequest {
    /// The new credential's role.
    #[schema(value_type = RoleSchema)]
    role: String,
    /// Its name (a source's is written into its entries).
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    name: String,
    /// A source's origin key (verifier key text); the source must then sign its events.
    #[serde(default)]
    #[schema(nullable = false)]
    origin_key: Option<String>,
}

/// `POST /v1/admin/credentials` answer: the credential and its token, shown once.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IssuedCredential {
    /// Its role.
    #[schema(value_type = RoleSchema)]
    role: &'static str,
    /// Its name.
    name: String,
    /// The token's public id.
    token_id: String,
    /// When it was issued.
    created_at: Option<String>,
    /// A source's origin keys (verifier key text): its events must be signed by one of them.
    origin_keys: Vec<String>,
    /// The bearer token; only its hash is stored.
    token: String,
}

/// `GET /v1/admin/credentials` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialList {
    /// Every credential, revoked ones included; never tokens.
    credentials: Vec<CredentialInfo>,
}

/// `POST /v1/admin/credentials` `{"role": "source"|"auditor"|"admin", "name": N[, "origin_key": K]}`:
/// 201 with the new token, shown once (`Cache-Control: no-store`).
///
/// Needs an admin token.
#[utoipa::path(
    post,
    path = "/v1/admin/credentials",
    tag = "admin",
    security(("bearer" = [])),
    request_body(content((AddRequest = "application/json"))),
    responses(
        (status = 201, description = "Issued; the token is shown only here", body = IssuedCredential,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "Not a valid request, an unknown role or an invalid name", body = ErrorBody),
        (status = 409, description = "A credential of that role and name exists", body = ErrorBody),
        (status = 413, description = "Body over 4,096 bytes", body = ErrorBody),
    ),
)]
pub(super) async fn add(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let by = authorize(&state, request.headers(), &[Role::Admin])?;
    let body = axum::body::to_bytes(request.into_body(), MAX_ADMIN_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(format!("admin request over {MAX_ADMIN_BODY} bytes")))?;
    let req: AddRequest = parse_json(&body)?;
    let role = role_named(&req.role, "/role")?;
    let name = req.name;
    let key = req.origin_key;
    let (token, info) = change(&state, move |store| {
        admin::add(store, role, &name, key.as_deref())
    })
    .await?;
    tracing::info!(role = info.role, name = %info.name, token_id = %info.token_id, by = %by, "credential issued");
    let mut response = (
        StatusCode::CREATED,
        Json(IssuedCredential {
            role: info.role,
            name: info.name,
            token_id: info.token_id,
            created_at: info.created_at,
            origin_keys: info.origin_keys,
            token,
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid admin request: {e}"), ""))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    role: Option<String>,
}

/// `GET /v1/admin/credentials[?role=R]`: every credential (revoked ones included), never tokens.
///
/// Needs an admin token.
#[utoipa::path(
    get,
    path = "/v1/admin/credentials",
    tag = "admin",
    security(("bearer" = [])),
    params(("role" = Option<RoleSchema>, Query, description = "Only this role")),
    responses(
        (status = 200, description = "The credentials", body = CredentialList),
        (status = 400, description = "An unknown role", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CredentialList>, ApiError> {
    authorize(&state, &headers, &[Role::Admin])?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let role = q
        .role
        .as_deref()
        .map(|r| role_named(r, "/role"))
        .transpose()?;
    let store = std::sync::Arc::clone(&state.store);
    let list: Vec<CredentialInfo> = tokio::task::spawn_blocking(move || admin::list(&store, role))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(CredentialList { credentials: list }))
}

/// `DELETE /v1/admin/credentials/{role}/{name}`: revokes the token; effective on the next request.
///
/// Needs an admin token. Revoking a revoked credential answers its record again.
#[utoipa::path(
    delete,
    path = "/v1/admin/credentials/{role}/{name}",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("role" = RoleSchema, Path, description = "The credential's role"),
        ("name" = String, Path, description = "The credential's name"),
    ),
    responses(
        (status = 200, description = "Revoked: the credential's record", body = CredentialInfo),
        (status = 400, description = "An unknown role", body = ErrorBody),
        (status = 404, description = "No credential of that role and name", body = ErrorBody),
    ),
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<CredentialInfo>, ApiError> {
    let by = authorize(&state, &headers, &[Role::Admin])?;
    let Path((role, name)) = path.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let role = role_named(&role, "/role")?;
    let info = change(&state, move |store| admin::revoke(store, role, &name)).await?;
    tracing::info!(role = info.role, name = %info.name, token_id = %info.token_id, by = %by, "credential revoked");
    Ok(Json(info))
}

/// `POST /v1/admin/credentials/source/{name}/origin-keys` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRequest {
    /// The origin key, as verifier key text (`<name>+<hex key ID>+<base64 key>`).
    key: String,
}

/// `POST /v1/admin/credentials/source/{name}/origin-keys` `{"key": K}`: adds an origin key to a
/// source (kept with its earlier ones); from the next request on, its events must be signed.
///
/// Needs an admin token.
#[utoipa::path(
    post,
    path = "/v1/admin/credentials/source/{name}/origin-keys",
    tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The source's name")),
    request_body(content((KeyRequest = "application/json"))),
    responses(
        (status = 200, description = "The source's record, with its origin keys", body = CredentialInfo),
        (status = 400, description = "Not a valid request or not a verifier key", body = ErrorBody),
        (status = 404, description = "No source of that name", body = ErrorBody),
        (status = 413, description = "Body over 4,096 bytes", body = ErrorBody),
    ),
)]
pub(super) async fn add_origin_key(
    State(state): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    request: axum::extract::Request,
) -> Result<Json<CredentialInfo>, ApiError> {
    let by = authorize(&state, request.headers(), &[Role::Admin])?;
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let body = axum::body::to_bytes(request.into_body(), MAX_ADMIN_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(format!("admin request over {MAX_ADMIN_BODY} bytes")))?;
    let req: KeyRequest = parse_json(&body)?;
    let info = change(&state, move |store| {
        admin::add_origin_key(store, &name, &req.key)
    })
    .await?;
    tracing::info!(name = %info.name, keys = info.origin_keys.len(), by = %by, "origin key added");
    Ok(Json(info))
}

/// `GET /v1/source-keys` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceKeys {
    /// Origin keys (verifier key text, oldest first) by source name; sources without keys are
    /// left out, revoked ones kept.
    sources: std::collections::BTreeMap<String, Vec<String>>,
}

/// `GET /v1/source-keys`: every source's origin keys (public keys), for verifying signed rows.
///
/// Needs a source or auditor token.
#[utoipa::path(
    get,
    path = "/v1/source-keys",
    tag = "entries",
    security(("bearer" = [])),
    responses((status = 200, description = "Every source's origin keys", body = SourceKeys)),
)]
pub(super) async fn source_keys(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<SourceKeys>, ApiError> {
    authorize(&state, &headers, &[Role::Source, Role::Auditor])?;
    let store = std::sync::Arc::clone(&state.store);
    let keys = tokio::task::spawn_blocking(move || admin::origin_keys(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(SourceKeys { sources: keys }))
}
