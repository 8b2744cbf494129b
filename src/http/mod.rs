//! The HTTP API (contract, docs/formats.md): parses requests, checks credentials, shapes responses.
//!
//! Owns: routes, content negotiation, body limits, JSON shapes. Must not touch: ordering or storage
//! writes; every write goes through [`Sequencer::append`].
//!
//! Public (no token): checkpoint, verifier key, proofs (hashes only, for monitors and witnesses),
//! health, and the OpenAPI document (`openapi`, generated from the handlers' annotations). A source token is needed to write; a source or auditor token to read entries and request
//! lifecycles (they hold the events' content); an auditor token for the export API; an admin token
//! for the credential API (admins cannot write events or read entries).

mod admin;
pub mod error;
mod export;
pub mod limit;
mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest as _, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

pub use self::error::ApiError;
use self::error::ErrorBody;
use self::limit::SourceLimiter;
use self::openapi::{
    BatchReceiptSchema, EventsBody, NdjsonBody, ReceiptSchema, RequestEntries, hex_hash, hex_hashes,
};
pub use crate::auth::Role;
use crate::auth::SharedCredentials;
use crate::core::event::{PreparedEvent, parse_strict, prepare_fast, prepare_item};
use crate::core::hash::{Blake3, to_hex};
use crate::core::merkle::{HashReader, NodeId, consistency_proof, inclusion_proof};
use crate::core::note::SignerKey;
use crate::sequencer::Sequencer;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most events in one request (413 beyond).
    pub max_request_events: usize,
    /// Longest a request may take end to end (408 beyond).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_request_events: 10_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Most entries returned for one request lifecycle.
const MAX_REQUEST_ENTRIES: usize = 1000;

/// Shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The writer.
    pub sequencer: Sequencer,
    /// Who may write and read; replaced whole when an admin changes a credential.
    pub credentials: Arc<SharedCredentials>,
    /// Serializes credential changes (check-then-write).
    pub admin_lock: Arc<std::sync::Mutex<()>>,
    /// One manifest recomputation at a time (`POST /v1/export/manifest-signature`).
    pub manifest_checks: Arc<tokio::sync::Semaphore>,
    /// The data dir (credential records; the log itself is written only by the sequencer).
    pub store: Arc<crate::store::Store>,
    /// The log key, for signing export manifests (checkpoints are signed by the sequencer).
    pub signer: Arc<SignerKey>,
    /// Limits.
    pub limits: Limits,
    /// Per-source rate and in-flight limits for `POST /v1/events`.
    pub limiter: Arc<SourceLimiter>,
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/checkpoint", get(get_checkpoint))
        .route("/v1/verifier-key", get(get_verifier_key))
        .route("/v1/keys", get(get_keys))
        .route("/v1/entries/{index}", get(get_entry))
        .route("/v1/proofs/inclusion", get(get_inclusion))
        .route("/v1/proofs/consistency", get(get_consistency))
        .route("/v1/requests/{request_id}", get(get_request))
        .route("/v1/export/locate", get(export::locate))
        .route("/v1/export/rows", get(export::rows))
        .route("/v1/export/context", get(export::context))
        .route("/v1/export/manifest-signature", post(export::sign_manifest))
        .route("/v1/admin/credentials", get(admin::list).post(admin::add))
        .route(
            "/v1/admin/credentials/{role}/{name}",
            axum::routing::delete(admin::revoke),
        )
        .route(
            "/v1/admin/credentials/source/{name}/origin-keys",
            post(admin::add_origin_key),
        )
        .route("/v1/source-keys", get(admin::source_keys))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // A request over the time limit gets the JSON error shape like every other error.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async { ApiError::Timeout },
                ))
                .layer(tower::timeout::TimeoutLayer::new(limits.request_timeout)),
        )
        .with_state(state)
}

/// The name behind the request's bearer token, if its role is one of `roles`. A valid token of
/// another role gets 403; no token or an unknown one 401.
fn authorize(state: &AppState, headers: &HeaderMap, roles: &[Role]) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let credentials = state.credentials.current();
    let principal = credentials
        .authenticate(token.trim())
        .ok_or(ApiError::Unauthorized)?;
    if !roles.contains(&principal.role) {
        return Err(ApiError::Forbidden);
    }
    Ok(principal.name.to_owned())
}

/// How the body of `POST /v1/events` is framed.
enum Framing {
    Json,
    NdJson,
}

fn framing(headers: &HeaderMap) -> Result<Framing, ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("<not text>"))
        .unwrap_or("");
    let media = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Framing::Json),
        "application/x-ndjson" | "application/jsonl" => Ok(Framing::NdJson),
        _ => Err(ApiError::UnsupportedMediaType(
            raw.chars().take(100).collect(),
        )),
    }
}

/// Splits and validates a body into events; any invalid item fails the whole request.
fn parse_events(
    framing: &Framing,
    body: &[u8],
    max_events: usize,
    origin_keys: &[crate::core::note::VerifierKey],
) -> Result<Vec<PreparedEvent>, ApiError> {
    // The fast path (one borrowed parse, core::dom) takes plain valid events; anything else, and
    // every error, goes the usual way below, which alone words errors.
    if origin_keys.is_empty()
        && let Some(events) = prepare_body_fast(framing, body, max_events)
    {
        return Ok(events);
    }
    let items = match framing {
        Framing::Json => parse_strict(body)
            .map_err(|e| ApiError::bad_request(e.message, ""))?
            .into_items(),
        Framing::NdJson => {
            let mut items = Vec::new();
            for (line_no, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if items.len() == max_events {
                    return Err(too_many(max_events));
                }
                let json = parse_strict(line).map_err(|e| ApiError::BadRequest {
                    message: format!("line {}: {}", line_no + 1, e.message),
                    details: vec![json!({"item": items.len(), "line": line_no + 1, "path": "", "message": e.message})],
                })?;
                items.push(json);
            }
            items
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("no events in request", ""));
    }
    if items.len() > max_events {
        return Err(too_many(max_events));
    }
    let mut prepared = Vec::with_capacity(items.len());
    let mut details = Vec::new();
    let mut invalid = 0usize;
    for (item, json) in items.iter().enumerate() {
        if !json.value().is_object() {
            invalid += 1;
            details
                .push(json!({"item": item, "path": "", "message": "event must be a JSON object"}));
            continue;
        }
        match prepare_item(json, origin_keys) {
            Ok(event) => prepared.push(event),
            Err(errors) => {
                invalid += 1;
                if details.len() < 100 {
                    details.extend(
                        errors
                            .into_iter()
                            .map(|e| json!({"item": item, "path": e.path, "message": e.message})),
                    );
                }
            }
        }
    }
    if invalid > 0 {
        return Err(ApiError::BadRequest {
            message: format!(
                "{invalid} of {} events are invalid; nothing was appended",
                items.len()
            ),
            details,
        });
    }
    Ok(prepared)
}

/// [`prepare_fast`] over a whole body: `None` unless every event takes the fast path.
fn prepare_body_fast(
    framing: &Framing,
    body: &[u8],
    max_events: usize,
) -> Option<Vec<PreparedEvent>> {
    match framing {
        Framing::Json => prepare_fast(body, true, max_events),
        Framing::NdJson => {
            let mut events = Vec::new();
            for line in body.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if events.len() == max_events {
                    return None;
                }
                events.extend(prepare_fast(line, false, 1)?);
            }
            (!events.is_empty()).then_some(events)
        }
    }
}

fn too_many(max: usize) -> ApiError {
    ApiError::TooLarge(format!("more than {max} events in one request"))
}

/// `POST /v1/events` query: which answer form the client wants.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    receipts: Option<String>,
}

/// The answer forms of `POST /v1/events`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReceiptForm {
    /// One full receipt per event (the default, docs/formats.md section 5).
    Each,
    /// One [`crate::core::receipt::BatchReceipt`] for the request.
    Batch,
}

fn receipt_form(
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ReceiptForm, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    match q.receipts.as_deref() {
        None | Some("each") => Ok(ReceiptForm::Each),
        Some("batch") => Ok(ReceiptForm::Batch),
        Some(other) => Err(ApiError::bad_request(
            format!(
                "receipts must be \"each\" or \"batch\", not {:?}",
                other.chars().take(40).collect::<String>()
            ),
            "receipts",
        )),
    }
}

/// `POST /v1/events` answer: one receipt per event, in input order (its schema; the handler
/// writes it with `core::receipt::receipts_json`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Receipts {
    /// One per event, in input order.
    #[schema(value_type = Vec<ReceiptSchema>)]
    receipts: Vec<crate::core::receipt::Receipt>,
}

// Never built: the schema of the two answer forms (each is `deny_unknown_fields`, so a body
// matches exactly one).
/// The answer of `POST /v1/events`: receipts, or with `receipts=batch` a batch receipt.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EventsAnswer {
    /// One receipt per event (the default).
    Each(Receipts),
    /// One batch receipt (`receipts=batch`).
    Batch(BatchReceiptSchema),
}

/// `POST /v1/events`: append one event (JSON object), many (JSON array) or NDJSON lines.
///
/// Needs a source token. A request is all or nothing; re-posting an event (same source, same
/// `event_id`, same canonical body) returns its original receipt with `duplicate: true`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    security(("bearer" = [])),
    params(
        ("receipts" = Option<String>, Query, description = "`each` (default): one receipt per \
            event. `batch`: one compact batch receipt for the request, every event proven against \
            one checkpoint by one multi-leaf proof (docs/formats.md section 5)",
            example = "batch", pattern = "^(each|batch)$"),
    ),
    request_body(
        description = "One event (a JSON object), an array of events, or NDJSON: one event per \
            line, blank lines ignored. At most 8 MiB and 10,000 events (server limits).",
        content(
            (EventsBody = "application/json"),
            (NdjsonBody = "application/x-ndjson"),
            (NdjsonBody = "application/jsonl"),
        ),
    ),
    responses(
        (status = 200, description = "Appended (or already there): one receipt per event, or with \
            `receipts=batch` one batch receipt", body = EventsAnswer),
        (status = 400, description = "Invalid JSON, an invalid event (`details` name each), a \
            bad `receipts` value or an unknown query parameter; nothing appended", body = ErrorBody),
        (status = 409, description = "An `event_id` reused with a different body; nothing appended", body = ErrorBody),
        (status = 413, description = "Body over the size limit, or too many events", body = ErrorBody),
        (status = 415, description = "Not `application/json` or `application/x-ndjson`", body = ErrorBody),
        (status = 429, description = "The source is over its event rate; nothing was read or appended", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until the source may post again"))),
        (status = 503, description = "Overloaded (the queue, or the source's requests in flight), shutting down, or the commit failed; safe to retry", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn post_events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // Credentials, content type and the source's limits first: an unauthenticated or limited
    // client never gets a body buffered.
    let source = authorize(&state, request.headers(), &[Role::Source])?;
    let form = receipt_form(query)?;
    let framing = framing(request.headers())?;
    // Held until the response is built: the source's in-flight slot.
    let admission = state.limiter.admit(&source)?;
    let body =
        Bytes::from_request(request, &state)
            .await
            .map_err(|rejection: BytesRejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
                    "request body over {} bytes",
                    state.limits.max_body_bytes
                )),
                _ => ApiError::bad_request(rejection.body_text(), ""),
            })?;
    let origin_keys = state.credentials.current().origin_keys(&source).to_vec();
    let events = parse_events(
        &framing,
        &body,
        state.limits.max_request_events,
        &origin_keys,
    )?;
    admission.spend(events.len());
    if form == ReceiptForm::Batch {
        let batch = state.sequencer.append_batch(&source, events).await?;
        // The `BatchReceipt` shape, written straight from the binary hashes.
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            crate::core::receipt::batch_receipt_json(&batch),
        )
            .into_response());
    }
    let receipts = state.sequencer.append(&source, events).await?;
    // Written straight from the receipts (the `Receipts` shape, byte for byte what serde_json
    // writes for it): no `Value` tree, and no escaping pass over strings that need none.
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        crate::core::receipt::receipts_json(&receipts),
    )
        .into_response())
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `GET /v1/keys`: the log key's history (public): every key, the tree sizes it signed, and the
/// transition statements signed by the key each replaced (`keys`).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "log",
    responses((status = 200, description = "The log key's history, oldest first", body = crate::keys::KeyHistory)),
)]
async fn get_keys(
    State(state): State<AppState>,
) -> Result<Json<crate::keys::KeyHistory>, ApiError> {
    let store = Arc::clone(&state.store);
    let history = tokio::task::spawn_blocking(move || crate::keys::history(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(history))
}

/// `GET /v1/checkpoint`: the latest signed checkpoint (text/plain).
#[utoipa::path(
    get,
    path = "/v1/checkpoint",
    tag = "log",
    responses((status = 200, description = "The latest checkpoint, a C2SP signed note (docs/formats.md section 4)", body = String, content_type = "text/plain")),
)]
async fn get_checkpoint(State(state): State<AppState>) -> Response {
    text(state.sequencer.latest().note.clone())
}

/// `GET /v1/verifier-key`: the log's verifier key (text/plain).
#[utoipa::path(
    get,
    path = "/v1/verifier-key",
    tag = "log",
    responses((status = 200, description = "`<name>+<hex key ID>+<base64 key>` and a newline", body = String, content_type = "text/plain")),
)]
async fn get_verifier_key(State(state): State<AppState>) -> Response {
    text(format!("{}\n", state.sequencer.verifier_key()))
}

fn parse_index(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("{what} must be a non-negative integer"), what))
}

/// `GET /v1/entries/{index}`: the leaf bytes exactly as hashed (application/json).
///
/// Needs a source or auditor token.
#[utoipa::path(
    get,
    path = "/v1/entries/{index}",
    tag = "entries",
    security(("bearer" = [])),
    params(("index" = u64, Path, description = "Position in the log, from 0")),
    responses(
        (status = 200, description = "The leaf, byte for byte as hashed", body = openapi::LeafSchema),
        (status = 400, description = "`index` is not a non-negative integer", body = ErrorBody),
        (status = 404, description = "No entry there yet", body = ErrorBody),
    ),
)]
async fn get_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &[Role::Source, Role::Auditor])?;
    let Path(index) = path.map_err(|e| ApiError::bad_request(e.body_text(), "index"))?;
    let index = parse_index(&index, "index")?;
    let size = state.sequencer.latest().size;
    let leaf = (index < size)
        .then(|| state.sequencer.store().entry(index))
        .transpose()?
        .flatten()
        .ok_or_else(|| ApiError::NotFound(format!("no entry {index}; tree size is {size}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], leaf).into_response())
}

/// `GET /v1/proofs/inclusion` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InclusionProof {
    /// The leaf's index.
    index: u64,
    /// The tree size the proof is for.
    tree_size: u64,
    /// Hex leaf hash at `index`.
    #[schema(schema_with = hex_hash)]
    leaf_hash: String,
    /// RFC 9162 inclusion proof, hex, leaf side first.
    #[schema(schema_with = hex_hashes)]
    hashes: Vec<String>,
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: String,
    tree_size: Option<String>,
}

/// `GET /v1/proofs/inclusion?index=I&tree_size=N`: RFC 9162 inclusion proof (N defaults to latest).
#[utoipa::path(
    get,
    path = "/v1/proofs/inclusion",
    tag = "log",
    params(
        ("index" = u64, Query, description = "The leaf's index, below `tree_size`"),
        ("tree_size" = Option<u64>, Query, description = "A checkpointed tree size; the latest by default"),
    ),
    responses(
        (status = 200, description = "The proof", body = InclusionProof),
        (status = 400, description = "A bad number, `index >= tree_size`, or `tree_size` beyond the latest checkpoint", body = ErrorBody),
    ),
)]
async fn get_inclusion(
    State(state): State<AppState>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let latest = state.sequencer.latest().size;
    let index = parse_index(&q.index, "index")?;
    let size = q
        .tree_size
        .as_deref()
        .map_or(Ok(latest), |s| parse_index(s, "tree_size"))?;
    if size > latest {
        return Err(ApiError::bad_request(
            format!("tree_size {size} is beyond the latest checkpoint ({latest})"),
            "tree_size",
        ));
    }
    let store = state.sequencer.store().clone();
    let (leaf_hash, proof) = tokio::task::spawn_blocking(move || {
        let proof = inclusion_proof::<Blake3>(index, size, &*store)?;
        let leaf_hash = store.read_hash(NodeId::covering(0, index))?;
        Ok::<_, ApiError>((leaf_hash, proof))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(InclusionProof {
        index,
        tree_size: size,
        leaf_hash: to_hex(&leaf_hash),
        hashes: proof.iter().map(to_hex).collect(),
    }))
}

/// `GET /v1/proofs/consistency` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConsistencyProof {
    /// The older tree size.
    from: u64,
    /// The newer tree size.
    to: u64,
    /// RFC 9162 consistency proof, hex (empty when `from == to`).
    #[schema(schema_with = hex_hashes)]
    hashes: Vec<String>,
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: String,
    to: Option<String>,
}

/// `GET /v1/proofs/consistency?from=M&to=N`: RFC 9162 consistency proof (N defaults to latest).
#[utoipa::path(
    get,
    path = "/v1/proofs/consistency",
    tag = "log",
    params(
        ("from" = u64, Query, minimum = 1, description = "The older size, at least 1"),
        ("to" = Option<u64>, Query, description = "The newer size, at least `from`; the latest by default"),
    ),
    responses(
        (status = 200, description = "The proof", body = ConsistencyProof),
        (status = 400, description = "A bad number, `from` 0 or above `to`, or `to` beyond the latest checkpoint", body = ErrorBody),
    ),
)]
async fn get_consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let latest = state.sequencer.latest().size;
    let from = parse_index(&q.from, "from")?;
    let to =
        q.to.as_deref()
            .map_or(Ok(latest), |s| parse_index(s, "to"))?;
    if to > latest {
        return Err(ApiError::bad_request(
            format!("to {to} is beyond the latest checkpoint ({latest})"),
            "to",
        ));
    }
    let store = state.sequencer.store().clone();
    let proof = tokio::task::spawn_blocking(move || consistency_proof::<Blake3>(from, to, &*store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(ConsistencyProof {
        from,
        to,
        hashes: proof.iter().map(to_hex).collect(),
    }))
}

/// `GET /v1/requests/{request_id}`: the entries of one request's lifecycle, in index order.
///
/// Needs a source or auditor token.
#[utoipa::path(
    get,
    path = "/v1/requests/{request_id}",
    tag = "entries",
    security(("bearer" = [])),
    params(("request_id" = String, Path, description = "The events' `request_id` (1-256 characters)")),
    responses(
        (status = 200, description = "The request's entries (at most 1,000), as leaves", body = RequestEntries),
        (status = 400, description = "`request_id` is empty, too long, or holds U+0000", body = ErrorBody),
        (status = 404, description = "No entries for that `request_id`", body = ErrorBody),
    ),
)]
async fn get_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &[Role::Source, Role::Auditor])?;
    let Path(request_id) = path.map_err(|e| ApiError::bad_request(e.body_text(), "request_id"))?;
    if request_id.is_empty() || request_id.chars().count() > 256 || request_id.contains('\0') {
        return Err(ApiError::bad_request(
            "request_id must be 1-256 characters",
            "request_id",
        ));
    }
    let store = state.sequencer.store();
    let size = state.sequencer.latest().size;
    let mut body = Vec::from(b"{\"request_id\":".as_slice());
    body.extend_from_slice(
        &serde_json::to_vec(&request_id).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    body.extend_from_slice(b",\"entries\":[");
    let mut count = 0;
    for index in store.request_indexes(&request_id, 0, size, MAX_REQUEST_ENTRIES)? {
        let leaf = store.entry(index)?.ok_or_else(|| {
            ApiError::Internal(format!("request index points at missing entry {index}"))
        })?;
        if count > 0 {
            body.push(b',');
        }
        // Leaves are JSON objects: embed their exact bytes.
        body.extend_from_slice(&leaf);
        count += 1;
    }
    body.extend_from_slice(b"]}");
    if count == 0 {
        return Err(ApiError::NotFound(format!(
            "no entries for request_id {request_id:?}"
        )));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /healthz` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Health {
    /// `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process runs", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Ready {
    /// `ready`.
    #[schema(pattern = "^ready$")]
    status: &'static str,
    /// The latest checkpoint's size.
    tree_size: u64,
}

/// `GET /readyz`: the sequencer is accepting writes.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Writes are accepted", body = Ready),
        (status = 503, description = "The writer is not accepting writes (stopped after a failed commit, or shutting down)", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let size = state.sequencer.latest().size;
    if state.sequencer.is_accepting() {
        Json(Ready {
            status: "ready",
            tree_size: size,
        })
        .into_response()
    } else {
        ApiError::Unavailable("sequencer is not accepting writes".into()).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
