//! The OpenAPI 3.1 document of the HTTP API, generated from the code: each handler's
//! `#[utoipa::path]` annotation, the `ToSchema` types the handlers serialize, and the event schema
//! the server validates with (`schemas/approval-event.v1.schema.json`, compiled in). Served at
//! `GET /v1/openapi.json` (public), built once per process.
//!
//! Owns: assembling the document, and the parts every operation shares: the bearer scheme, and the
//! error responses that come from the router's layers and the token check rather than from a
//! handler (401/403 on every operation that takes a token, 408 on all). Must not touch: request
//! handling.

use std::borrow::Cow;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::error::{ErrorBody, ErrorDetail};
use crate::core::event::SCHEMA_V1;

/// Name of the bearer security scheme in the document.
pub(super) const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledger",
        description = "A tamper-evident audit ledger of approval events. The contract, with every \
            byte a verifier depends on, is docs/formats.md; this document is generated from the \
            server's code. Errors are always `application/json` `ErrorBody`.",
    ),
    paths(
        super::post_events,
        super::get_checkpoint,
        super::get_verifier_key,
        super::get_keys,
        super::get_entry,
        super::get_inclusion,
        super::get_consistency,
        super::get_request,
        super::export::locate,
        super::export::rows,
        super::export::context,
        super::export::sign_manifest,
        super::admin::list,
        super::admin::add,
        super::admin::revoke,
        super::admin::add_origin_key,
        super::admin::source_keys,
        super::healthz,
        super::readyz,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorDetail, SignedEventSchema)),
    modifiers(&Shared),
    tags(
        (name = "events", description = "Appending events (source token)"),
        (name = "log", description = "Checkpoints, the verifier key and proofs (public: hashes only)"),
        (name = "entries", description = "Entries and request lifecycles (source or auditor token)"),
        (name = "export", description = "The export API behind `ledger export --server` (auditor token)"),
        (name = "admin", description = "Credentials (admin token)"),
        (name = "health", description = "Liveness, readiness and this document (public)"),
    )
)]
struct ApiDoc;

/// What every operation shares: the security scheme (the shared error responses are added to the
/// JSON in [`build`]).
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ldg_<16 hex>_<43 base64url>")
                    .description(Some(
                        "A source, auditor or admin token (`ledger sources|auditors|admins add`). \
                         No token or an unknown one is 401; a valid token of a role the operation \
                         does not take is 403.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Error responses every operation may get from outside its handler (401/403 only where a token
/// is taken): name, status, description.
const SHARED_RESPONSES: &[(&str, &str, &str)] = &[
    (
        "Unauthorized",
        "401",
        "No bearer token, or not one this server knows (never says which).",
    ),
    (
        "Forbidden",
        "403",
        "A valid token whose role may not call this operation.",
    ),
    (
        "Timeout",
        "408",
        "The request took longer than the server's time limit (default 30 s). A write may still \
         commit: retrying is safe, idempotency returns the original receipt.",
    ),
];

fn error_response(description: &str, www_authenticate: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    if www_authenticate {
        response["headers"] = json!({
            "WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}},
        });
    }
    response
}

/// The event schema as components: the schema file's `$defs` become `Event<Name>` schemas and its
/// references are rewritten to them (the file's own `$id` and `$schema` are dropped: in the
/// document it is one schema among others, and OpenAPI 3.1 schemas are JSON Schema 2020-12).
fn event_schemas() -> Vec<(String, Value)> {
    let mut schema: Value = serde_json::from_str(SCHEMA_V1).expect("shipped schema is JSON");
    let object = schema
        .as_object_mut()
        .expect("the event schema is an object");
    object.remove("$schema");
    object.remove("$id");
    let defs = object.remove("$defs").unwrap_or_default();
    let component = |def: &str| {
        let mut chars = def.chars();
        let first = chars.next().map(|c| c.to_ascii_uppercase());
        format!(
            "Event{}{}",
            first.into_iter().collect::<String>(),
            chars.as_str()
        )
    };
    fn rewrite(value: &mut Value, component: &dyn Fn(&str) -> String) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "$ref"
                        && let Some(def) = v.as_str().and_then(|r| r.strip_prefix("#/$defs/"))
                    {
                        *v = Value::String(format!("#/components/schemas/{}", component(def)));
                    } else {
                        rewrite(v, component);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, component)),
            _ => {}
        }
    }
    rewrite(&mut schema, &component);
    let mut out = vec![(ApprovalEventRef::NAME.to_owned(), schema)];
    if let Value::Object(defs) = defs {
        for (name, mut def) in defs {
            rewrite(&mut def, &component);
            out.push((component(&name), def));
        }
    }
    out
}

/// The document as JSON: utoipa's output, the event schema spliced in, the shared responses added
/// to every operation.
fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    for (name, schema) in event_schemas() {
        schemas.insert(name, schema);
    }
    let responses = doc["components"]
        .as_object_mut()
        .expect("the document has components")
        .entry("responses")
        .or_insert_with(|| json!({}));
    for (name, status, description) in SHARED_RESPONSES {
        responses[*name] = error_response(description, *status == "401");
    }
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for item in paths.values_mut() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let secured = operation.get("security").is_some();
            let responses = operation["responses"]
                .as_object_mut()
                .expect("every operation has responses");
            for (name, status, _) in SHARED_RESPONSES {
                if secured || !matches!(*status, "401" | "403") {
                    responses.entry(*status).or_insert_with(
                        || json!({"$ref": format!("#/components/responses/{name}")}),
                    );
                }
            }
        }
    }
    doc
}

static DOCUMENT: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&build()).expect("the document serializes"));

/// `GET /v1/openapi.json`: this API's OpenAPI 3.1 document (public).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Value)),
)]
pub(super) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_slice(),
    )
        .into_response()
}

/// A reference to the event schema spliced in from the schema file.
pub(super) struct ApprovalEventRef;

impl ApprovalEventRef {
    const NAME: &'static str = "ApprovalEvent";
}

impl PartialSchema for ApprovalEventRef {
    fn schema() -> RefOr<Schema> {
        Ref::from_schema_name(Self::NAME).into()
    }
}

impl ToSchema for ApprovalEventRef {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed(Self::NAME)
    }
}

/// The body of `POST /v1/events` as JSON: one item, or a non-empty array of them; an item is an
/// event, or (from a source with origin keys, which must sign) a signed event.
pub(super) struct EventsBody;

impl PartialSchema for EventsBody {
    fn schema() -> RefOr<Schema> {
        let item = || {
            OneOfBuilder::new()
                .item(ApprovalEventRef::schema())
                .item(Ref::from_schema_name(SignedEventSchema::name()))
        };
        OneOfBuilder::new()
            .item(item())
            .item(
                ArrayBuilder::new()
                    .items(item())
                    .min_items(Some(1))
                    .description(Some(
                        "At most 10,000 events (the server's `--max-request-events`)",
                    )),
            )
            .into()
    }
}

impl ToSchema for EventsBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventsBody")
    }
}

/// The body of `POST /v1/events` as NDJSON: one event per line, blank lines ignored. (OpenAPI 3.1
/// cannot give the lines a schema; each must be an `ApprovalEvent`.)
pub(super) struct NdjsonBody;

impl PartialSchema for NdjsonBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "One `ApprovalEvent` JSON object per line; blank lines are ignored, at least \
                 one line must hold an event",
            ))
            .pattern(Some("\\S"))
            .into()
    }
}

impl ToSchema for NdjsonBody {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NdjsonBody")
    }
}

/// An origin signature: Ed25519, by one of the source's keys, over the event's RFC 8785 bytes.
#[derive(ToSchema)]
#[schema(as = OriginSignature)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // schema only: `core::event` parses these
pub(super) struct OriginSignatureSchema {
    /// The key's ID: hex of the 4-byte key ID of its verifier key.
    #[schema(pattern = "^[0-9a-f]{8}$")]
    key_id: String,
    /// Base64 of the 64-byte signature.
    #[schema(content_encoding = "base64")]
    signature: String,
}

/// A signed event (docs/formats.md section 2): what a source with origin keys sends instead of a
/// bare event.
#[derive(ToSchema)]
#[schema(as = SignedEvent)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // schema only: `core::event` parses these
pub(super) struct SignedEventSchema {
    /// The event.
    #[schema(schema_with = ApprovalEventRef::schema)]
    event: (),
    /// Its origin signature.
    origin_signature: OriginSignatureSchema,
}

/// A list of hex BLAKE3 hashes (32 bytes each).
pub(super) fn hex_hashes() -> ArrayBuilder {
    ArrayBuilder::new().items(hex_hash())
}

/// One hex BLAKE3 hash (32 bytes).
pub(super) fn hex_hash() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9a-f]{64}$"))
}

// The schema of `core::receipt::Receipt` (core stays free of HTTP concerns). Never built: the
// tests validate real receipts against it, and `deny_unknown_fields` makes a new field fail them.
/// A receipt (docs/formats.md section 5): checkable offline with the log's verifier key.
#[derive(ToSchema)]
#[schema(as = Receipt)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct ReceiptSchema {
    /// The entry's position.
    index: u64,
    /// The event's `event_id`.
    event_id: String,
    /// Hex BLAKE3 leaf hash of the entry.
    #[schema(schema_with = hex_hash)]
    leaf_hash: String,
    /// Size of the tree the proof and checkpoint are for.
    tree_size: u64,
    /// Hex hashes of the RFC 9162 inclusion proof, leaf side first.
    #[schema(schema_with = hex_hashes)]
    inclusion_proof: Vec<String>,
    /// The signed checkpoint (C2SP signed note) of size `tree_size`.
    checkpoint: String,
    /// True when the event had been appended before and this is its original receipt.
    duplicate: bool,
}

// The schema of `core::receipt::BatchReceipt`, never built (as `ReceiptSchema`).
/// The answer to `POST /v1/events?receipts=batch` (docs/formats.md section 5): every event of the
/// request proven against one checkpoint by one multi-leaf proof.
#[derive(ToSchema)]
#[schema(as = BatchReceipt)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct BatchReceiptSchema {
    /// Size of the tree the proof and checkpoint are for.
    tree_size: u64,
    /// The signed checkpoint (C2SP signed note) of size `tree_size`.
    checkpoint: String,
    /// One per event, in input order.
    entries: Vec<BatchEntrySchema>,
    /// Hex hashes of the multi-leaf proof of the entries' distinct indexes.
    #[schema(schema_with = hex_hashes)]
    multi_proof: Vec<String>,
}

/// One event of a batch receipt.
#[derive(ToSchema)]
#[schema(as = BatchEntry)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct BatchEntrySchema {
    /// The entry's position.
    index: u64,
    /// The event's `event_id`.
    event_id: String,
    /// Hex BLAKE3 leaf hash of the entry.
    #[schema(schema_with = hex_hash)]
    leaf_hash: String,
    /// True when the event had been appended before (an earlier commit or earlier in the request).
    duplicate: bool,
}

// Never built: the server returns stored bytes; the tests validate them against this.
/// A leaf (docs/formats.md section 2): the entry's bytes exactly as hashed, RFC 8785 canonical JSON.
#[derive(ToSchema)]
#[schema(as = Leaf)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct LeafSchema {
    /// The posted event.
    #[schema(schema_with = ApprovalEventRef::schema)]
    event: (),
    /// Position in the log, from 0.
    index: u64,
    /// When the ledger sequenced the entry: RFC 3339 UTC, 6 fractional digits, `Z`.
    #[schema(pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$")]
    ingested_at: String,
    /// Hex leaf hash of the previous entry (64 zeros for index 0).
    #[schema(schema_with = hex_hash)]
    prev_leaf_hash: String,
    /// The source's signature over the event, for a source that signs; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    origin_signature: Option<OriginSignatureSchema>,
    /// The authenticated source that posted it.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    source: String,
    /// Leaf format version.
    #[schema(minimum = 1, maximum = 1)]
    v: u64,
}

// Never built: the handler embeds the stored leaf bytes.
/// `GET /v1/requests/{request_id}` answer: the entries of one request, in index order.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct RequestEntries {
    /// The request.
    request_id: String,
    /// Its entries (at most 1,000), as leaves.
    #[schema(value_type = Vec<LeafSchema>, min_items = 1)]
    entries: Vec<()>,
}
