//! The admin API: issue, list and revoke credentials on a running server. Admin tokens only; an
//! admin can neither write events nor read entries. Every change is synced to the data dir, then
//! the server's credential table is reloaded, so a revoked token fails on its next request.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

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

/// Runs a credential change under the admin lock, then reloads the table the server checks.
async fn change<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&crate::store::Store) -> Result<T, admin::AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    let _guard = state.admin_lock.lock().await;
    let store = std::sync::Arc::clone(&state.store);
    let (out, table) = tokio::task::spawn_blocking(move || {
        let out = f(&store)?;
        Ok::<_, admin::AdminError>((out, admin::load(&store)?))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    state.credentials.replace(table);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    role: String,
    name: String,
    /// A source's origin key (verifier key text); the source must then sign its events.
    #[serde(default)]
    origin_key: Option<String>,
}

/// `POST /v1/admin/credentials` `{"role": "source"|"auditor"|"admin", "name": N[, "origin_key": K]}`: 201 with the new
/// token, shown once (`Cache-Control: no-store`).
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
        Json(json!({
            "role": info.role,
            "name": info.name,
            "token_id": info.token_id,
            "created_at": info.created_at,
            "origin_keys": info.origin_keys,
            "token": token,
        })),
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
pub(super) async fn list(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    Ok(Json(json!({ "credentials": list })))
}

/// `DELETE /v1/admin/credentials/{role}/{name}`: revokes the token; effective on the next request.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    key: String,
}

/// `POST /v1/admin/credentials/source/{name}/origin-keys` `{"key": K}`: adds an origin key to a
/// source (kept with its earlier ones); from the next request on, its events must be signed.
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

/// `GET /v1/source-keys`: every source's origin keys (public keys), for verifying signed rows.
pub(super) async fn source_keys(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers, &[Role::Source, Role::Auditor])?;
    let store = std::sync::Arc::clone(&state.store);
    let keys = tokio::task::spawn_blocking(move || admin::origin_keys(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "sources": keys })))
}
