//! The auditor API behind `ledger export --server`: locate a period, stream proved rows, and sign a
//! bundle manifest. Every route here needs an auditor token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest as _, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState, Role, authorize};
use crate::bundle::{FORMAT_NAME, FORMAT_VERSION, Manifest, files};
use crate::core::hash::to_hex;
use crate::core::leaf::parse_micros;
use crate::core::note::open_checkpoint;
use crate::export::{
    ExportError, MAX_PAGE_BYTES, MAX_PAGE_ROWS, first_at_or_after, proved_rows, summary_hash,
};

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        Self::Internal(e.to_string())
    }
}

fn checked_size(state: &AppState, tree_size: u64) -> Result<u64, ApiError> {
    let latest = state.sequencer.latest().size;
    if tree_size > latest {
        return Err(ApiError::bad_request(
            format!("tree_size {tree_size} is beyond the latest checkpoint ({latest})"),
            "tree_size",
        ));
    }
    Ok(tree_size)
}

/// `GET /v1/export/locate` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Located {
    /// The first index below `tree_size` ingested at or after the time (`tree_size` if none).
    index: u64,
    /// The tree size searched.
    tree_size: u64,
}

#[derive(Deserialize)]
pub(super) struct LocateQuery {
    micros: i64,
    tree_size: u64,
}

/// `GET /v1/export/locate?micros=T&tree_size=N`: the first index below N ingested at or after T
/// (microseconds since the epoch), by binary search.
///
/// Needs an auditor token.
#[utoipa::path(
    get,
    path = "/v1/export/locate",
    tag = "export",
    security(("bearer" = [])),
    params(
        ("micros" = i64, Query, description = "A time, microseconds since the Unix epoch"),
        ("tree_size" = u64, Query, description = "A checkpointed tree size, at most the latest"),
    ),
    responses(
        (status = 200, description = "The index", body = Located),
        (status = 400, description = "A missing or bad parameter, or `tree_size` beyond the latest checkpoint", body = ErrorBody),
    ),
)]
pub(super) async fn locate(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LocateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Located>, ApiError> {
    authorize(&state, &headers, &[Role::Auditor])?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let size = checked_size(&state, q.tree_size)?;
    let store = state.sequencer.store().clone();
    let index = tokio::task::spawn_blocking(move || first_at_or_after(&store, size, q.micros))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(Located {
        index,
        tree_size: size,
    }))
}

#[derive(Deserialize)]
pub(super) struct RowsQuery {
    start: u64,
    end: u64,
    tree_size: u64,
}

/// `GET /v1/export/rows?start=S&end=E&tree_size=N`: NDJSON, one line per entry in `[S, E)`:
/// `{"index", "leaf" (the leaf text), "inclusion_proof" ([hex] at N)}`; at most 10,000 rows and
/// about 16 MiB of leaves per page (a page may end before E: ask again from where it ended).
///
/// Needs an auditor token.
#[utoipa::path(
    get,
    path = "/v1/export/rows",
    tag = "export",
    security(("bearer" = [])),
    params(
        ("start" = u64, Query, description = "First index"),
        ("end" = u64, Query, description = "End index (exclusive), at most `tree_size` and 10,000 past `start`"),
        ("tree_size" = u64, Query, description = "The checkpointed tree size the proofs are for"),
    ),
    responses(
        (status = 200, description = "NDJSON: one `{\"index\", \"leaf\" (the leaf text), \"inclusion_proof\": [hex]}` per line", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "A missing or bad parameter, or not `start <= end <= tree_size <= latest` with at most 10,000 rows", body = ErrorBody),
    ),
)]
pub(super) async fn rows(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RowsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &[Role::Auditor])?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let size = checked_size(&state, q.tree_size)?;
    if q.start > q.end || q.end > size || q.end - q.start > MAX_PAGE_ROWS {
        return Err(ApiError::bad_request(
            format!("need start <= end <= tree_size and at most {MAX_PAGE_ROWS} rows"),
            "end",
        ));
    }
    let store = state.sequencer.store().clone();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        proved_rows(&store, q.start, q.end, size, MAX_PAGE_BYTES, &mut |row| {
            let index = row.index;
            let leaf = std::str::from_utf8(row.leaf).map_err(|_| ExportError::BadEntry {
                index,
                message: "leaf is not UTF-8".into(),
            })?;
            let line = json!({
                "index": index,
                "leaf": leaf,
                "inclusion_proof": row.proof.iter().map(to_hex).collect::<Vec<_>>(),
            });
            serde_json::to_writer(&mut body, &line)
                .map_err(|e| ExportError::Remote(e.to_string()))?;
            body.push(b'\n');
            Ok(())
        })?;
        Ok::<_, ExportError>(body)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[derive(Deserialize)]
pub(super) struct ContextQuery {
    request_id: String,
    before: u64,
    #[serde(default)]
    from: u64,
}

/// `GET /v1/export/context` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ContextPage {
    /// Indexes of the request's entries in `[from, before)`, ascending.
    indexes: Vec<u64>,
    /// Where the next page starts; `null` after the last page.
    #[schema(required = true)]
    next: Option<u64>,
}

/// Most indexes per `/v1/export/context` page.
pub const MAX_CONTEXT_PAGE: usize = 10_000;

/// `GET /v1/export/context?request_id=R&before=S[&from=F]`: `{"indexes": [...], "next": N|null}`,
/// the entries of request R in `[F, S)`, ascending, at most 10,000 per page (the context rows of a
/// bundle starting at S). `next` is where the following page starts, `null` after the last.
///
/// Needs an auditor token.
#[utoipa::path(
    get,
    path = "/v1/export/context",
    tag = "export",
    security(("bearer" = [])),
    params(
        ("request_id" = String, Query, description = "The request"),
        ("before" = u64, Query, description = "End index (exclusive); capped at the latest size"),
        ("from" = Option<u64>, Query, description = "Start index; 0 by default"),
    ),
    responses(
        (status = 200, description = "One page of indexes", body = ContextPage),
        (status = 400, description = "A missing or bad parameter", body = ErrorBody),
    ),
)]
pub(super) async fn context(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ContextQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ContextPage>, ApiError> {
    authorize(&state, &headers, &[Role::Auditor])?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text(), ""))?;
    let before = q.before.min(state.sequencer.latest().size);
    let store = state.sequencer.store().clone();
    let indexes = tokio::task::spawn_blocking(move || {
        store.request_indexes(&q.request_id, q.from, before, MAX_CONTEXT_PAGE)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let next = (indexes.len() == MAX_CONTEXT_PAGE)
        .then(|| indexes.last().map(|i| i + 1))
        .flatten();
    Ok(Json(ContextPage { indexes, next }))
}

/// `POST /v1/export/manifest-signature` answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestSignature {
    /// Base64 Ed25519 signature by the log key over the manifest bytes (`manifest.sig`).
    #[schema(content_encoding = "base64")]
    signature: String,
}

/// `POST /v1/export/manifest-signature`: signs a bundle's `manifest.json` bytes with the log key,
/// only if they parse as a bundle manifest naming one of this log's checkpoints, and its period,
/// row counts and `summary.json` hash are what the log itself computes. A manifest is JSON and can
/// never read as a note, so this is no signing oracle for checkpoints.
///
/// Needs an auditor token.
#[utoipa::path(
    post,
    path = "/v1/export/manifest-signature",
    tag = "export",
    security(("bearer" = [])),
    request_body(
        description = "A bundle's `manifest.json`, byte for byte as `ledger export` writes it (docs/bundle-format.md)",
        content((Manifest = "application/json")),
    ),
    responses(
        (status = 200, description = "The log key's signature over the body", body = ManifestSignature),
        (status = 400, description = "Not a manifest in canonical form, or one the log's own data does not bear out", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 503, description = "Another manifest check is running; retry (`Retry-After`)", body = ErrorBody),
    ),
)]
pub(super) async fn sign_manifest(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Json<ManifestSignature>, ApiError> {
    // The token first: an unauthenticated client never gets a body buffered.
    let auditor = authorize(&state, request.headers(), &[Role::Auditor])?;
    let body = Bytes::from_request(request, &state).await.map_err(
        |rejection: axum::extract::rejection::BytesRejection| match rejection.status() {
            axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("manifest over the body limit".into())
            }
            _ => ApiError::bad_request(rejection.body_text(), ""),
        },
    )?;
    let manifest: Manifest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a bundle manifest: {e}"), ""))?;
    // Sign only bytes that say exactly what was checked: no unknown fields, no duplicate keys, no
    // second spelling of a value (the bytes must be the manifest's own serialization).
    if serde_json::to_vec_pretty(&manifest).ok().as_deref() != Some(&body[..]) {
        return Err(ApiError::bad_request(
            "the manifest is not in its canonical form (as `ledger export` writes it)",
            "",
        ));
    }
    if manifest.format != FORMAT_NAME || manifest.format_version != FORMAT_VERSION {
        return Err(ApiError::bad_request(
            "unsupported bundle format",
            "/format",
        ));
    }
    let signer = state.signer.clone();
    let verifier = signer.verifier();
    if manifest.key.name != verifier.name() || manifest.key.id != hex::encode(verifier.id()) {
        return Err(ApiError::bad_request(
            "the manifest names another key",
            "/key",
        ));
    }
    let store = state.sequencer.store().clone();
    let stored = store
        .checkpoint_at(manifest.checkpoint.size)?
        .ok_or_else(|| {
            ApiError::bad_request(
                "the manifest's checkpoint size was never signed here",
                "/checkpoint/size",
            )
        })?;
    let checkpoint =
        open_checkpoint(&stored, verifier).map_err(|_| {
            ApiError::bad_request(
                "the manifest's checkpoint is not signed by the log's current key (it predates a key rotation): export again",
                "/checkpoint",
            )
        })?;
    if B64.encode(checkpoint.root) != manifest.checkpoint.root
        || checkpoint.origin != manifest.checkpoint.origin
    {
        return Err(ApiError::bad_request(
            "the manifest's checkpoint is not this log's checkpoint of that size",
            "/checkpoint",
        ));
    }
    // The signature vouches for the population: recompute the period's range, row counts and
    // summary (over every context row) from the log itself, and sign only if they match. Files
    // derived from the summary (report, OSCAL, controls) are recomputed by `ledger verify`.
    let m = manifest.clone();
    let size = checkpoint.size;
    // One recomputation at a time: it reads the whole period, and runs to its end even if this
    // request times out, so unbounded concurrent checks would let one auditor exhaust the server.
    let permit = std::sync::Arc::clone(&state.manifest_checks)
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable("another manifest check is running; retry".into()))?;
    let problem = tokio::task::spawn_blocking(move || -> Result<Option<String>, ExportError> {
        let _permit = permit;
        let (Some(from), Some(to)) = (parse_micros(&m.period.from), parse_micros(&m.period.to))
        else {
            return Ok(Some("period is not RFC 3339".into()));
        };
        let (start, end) = (
            first_at_or_after(&store, size, from)?,
            first_at_or_after(&store, size, to)?,
        );
        if from >= to {
            return Ok(Some("the period is empty: from must be before to".into()));
        }
        if (start, end) != (m.index_range.start, m.index_range.end) {
            return Ok(Some(format!(
                "the period is entries {start}..{end} at size {size}"
            )));
        }
        let (want, context) = summary_hash(&store, start, end, None)?;
        let boundaries = u64::from(start > 0) + u64::from(end < size);
        if (m.rows.events, m.rows.context, m.rows.boundaries) != (end - start, context, boundaries)
        {
            return Ok(Some(format!(
                "row counts differ: want {} events, {context} context, {boundaries} boundary",
                end - start
            )));
        }
        if m.files.get(files::SUMMARY) != Some(&want) {
            return Ok(Some(
                "summary.json is not the log's own summary of the period".into(),
            ));
        }
        Ok(None)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    if let Some(problem) = problem {
        return Err(ApiError::bad_request(
            format!("refusing to sign: {problem}"),
            "/files",
        ));
    }
    tracing::info!(
        size = checkpoint.size,
        auditor = %auditor,
        "signed a bundle manifest"
    );
    Ok(Json(ManifestSignature {
        signature: B64.encode(signer.sign_bytes(&body)),
    }))
}
