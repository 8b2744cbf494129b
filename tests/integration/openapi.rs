//! The OpenAPI document (`GET /v1/openapi.json`) against the router and against real answers:
//! every route is documented with the right methods and security, and what the server sends
//! (status, content type, body) is what the document says.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::common::{TestServer, event};
use crate::layering::rust_files;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `(method, path)` of every `.route(...)` call in `src/`: the router's own list of routes, read
/// from the code that builds it (axum cannot list a router's routes).
fn router_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let code: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut rest = code.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("{}: unbalanced .route(", file.display()));
            let args = &rest[..end];
            let path = args
                .trim_start()
                .strip_prefix('"')
                .and_then(|a| a.split('"').next())
                .unwrap_or_else(|| {
                    panic!("{}: route path is not a literal: {args}", file.display())
                });
            let mut methods = 0;
            for method in METHODS {
                // `get(h)`, `.post(h)`, `axum::routing::delete(h)`: the method as a whole word.
                for (i, _) in args.match_indices(&format!("{method}(")) {
                    let before = args[..i].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        out.insert((method.to_owned(), path.to_owned()));
                        methods += 1;
                    }
                }
            }
            assert!(
                methods > 0,
                "{}: no method found in .route({args})",
                file.display()
            );
        }
    }
    out
}

/// The served document, with helpers to check an answer against it.
struct Doc(Value);

impl Doc {
    async fn fetch(server: &TestServer) -> Self {
        let r = server
            .client
            .get(format!("{}/v1/openapi.json", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        Self(r.json().await.unwrap())
    }

    /// `(method, path)` of every operation.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(METHODS.contains(&method.as_str()), "{method} {path}");
                out.insert((method.clone(), path.clone()));
            }
        }
        out
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.0["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        op
    }

    /// A validator for the schema at `pointer` (a JSON pointer into the document, whose `$ref`s
    /// resolve against the document: it is the root resource).
    fn validator(&self, pointer: &str) -> jsonschema::Validator {
        let mut root = self.0.clone();
        // A URI fragment: percent-encode what a URI may not hold (`{index}` in paths).
        let fragment = pointer
            .replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D");
        root["$ref"] = json!(format!("#{fragment}"));
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
    }

    /// Checks one answer: its status is documented for the operation, its content type is one
    /// the response declares, and its body is valid against that content's schema.
    fn check(&self, method: &str, path: &str, status: u16, content_type: &str, body: &[u8]) {
        let what = format!(
            "{method} {path} -> {status} {content_type} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        let escape = |s: &str| s.replace('~', "~0").replace('/', "~1");
        let op = self.operation(method, path);
        let mut pointer = format!("/paths/{}/{method}/responses/{status}", escape(path));
        let mut response = op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("status not documented: {what}"));
        if let Some(target) = response.get("$ref").and_then(Value::as_str) {
            pointer = target.strip_prefix('#').unwrap().to_owned();
            response = self.0.pointer(&pointer).expect("$ref resolves");
        }
        let media = content_type.split(';').next().unwrap().trim();
        assert!(
            response["content"].get(media).is_some(),
            "content type not documented: {what}"
        );
        let instance = match media {
            "application/json" => {
                serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {what}"))
            }
            _ => Value::String(String::from_utf8(body.to_vec()).unwrap()),
        };
        let validator = self.validator(&format!("{pointer}/content/{}/schema", escape(media)));
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_in_the_router_is_in_the_openapi_document() {
    let server = TestServer::start().await;
    let doc = Doc::fetch(&server).await;
    let routed = router_routes();
    assert!(
        routed.contains(&("post".into(), "/v1/events".into()))
            && routed.contains(&(
                "delete".into(),
                "/v1/admin/credentials/{role}/{name}".into()
            )),
        "the scan reads the router: {routed:?}"
    );
    assert_eq!(
        routed,
        doc.operations(),
        "the router's routes (left) and the document's operations (right) differ"
    );
    // The server routes each documented operation, and asks for a token exactly where the
    // document says so. Calls without a token change nothing: every write needs one.
    for (method, path) in doc.operations() {
        let url = path
            .replace("{index}", "0")
            .replace("{request_id}", "req-0")
            .replace("{role}", "source")
            .replace("{name}", "nobody");
        assert!(
            !url.contains('{'),
            "{path}: a path parameter without a sample"
        );
        let r = server
            .client
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{url}", server.base),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["error"] != "no such route",
            "{method} {path} is documented but not routed: {status} {body}"
        );
        let secured = doc.operation(&method, &path).get("security").is_some();
        assert_eq!(status == 401, secured, "{method} {path}: {status} {body}");
    }
    // Every reference in the document resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc.0, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.0.pointer(pointer).is_some(), "dangling $ref {r}");
    }
    // The bearer scheme every secured operation names exists.
    assert_eq!(
        doc.0["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc.0["openapi"], "3.1.0");
}

/// A server with all three roles, whose answers are checked against its document.
struct Checked {
    server: TestServer,
    doc: Doc,
    auditor: String,
    admin: String,
}

impl Checked {
    /// Sends a request to `path` (`template` is its documented path), checks the answer against
    /// the document, and returns its status and body.
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Vec<u8>) {
        let s = &self.server;
        let mut r = s.client.request(
            method.to_uppercase().parse().unwrap(),
            format!("{}{path}", s.base),
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some((content_type, bytes)) = body {
            r = r.header("content-type", content_type).body(bytes);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = r.bytes().await.unwrap().to_vec();
        self.doc
            .check(method, template, status, &content_type, &bytes);
        (status, bytes)
    }

    async fn post_events(&self, token: Option<&str>, content_type: &str, body: Vec<u8>) -> u16 {
        let body = Some((content_type, body));
        self.call("post", "/v1/events", "/v1/events", token, body)
            .await
            .0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_openapi_document() {
    let limits = ledger::http::Limits {
        max_body_bytes: 64 * 1024,
        ..ledger::http::Limits::default()
    };
    let (server, auditor, admin) = TestServer::start_with_roles(limits).await;
    let doc = Doc::fetch(&server).await;
    let c = Checked {
        server,
        doc,
        auditor,
        admin,
    };
    let source = c.server.token.clone();
    let src = Some(source.as_str());
    let aud = Some(c.auditor.as_str());
    let adm = Some(c.admin.as_str());
    let json = "application/json";
    let body = |v: Value| v.to_string().into_bytes();

    // Receipts: one event, an array, NDJSON, a duplicate; then the errors of the write path.
    assert_eq!(c.post_events(src, json, body(event(0))).await, 200);
    assert_eq!(
        c.post_events(src, json, body(json!([event(1), event(2)])))
            .await,
        200
    );
    let ndjson = format!("{}\n{}\n", event(3), event(4)).into_bytes();
    assert_eq!(
        c.post_events(src, "application/x-ndjson", ndjson).await,
        200
    );
    assert_eq!(c.post_events(src, json, body(event(0))).await, 200);
    // The batch form (of duplicates only, so the sizes below hold), and a bad form.
    for (query, status) in [("?receipts=batch", 200), ("?receipts=all", 400)] {
        let answer = c
            .call(
                "post",
                "/v1/events",
                &format!("/v1/events{query}"),
                src,
                Some((json, body(json!([event(1), event(0), event(1)])))),
            )
            .await;
        assert_eq!(answer.0, status, "{query}");
    }
    let mut changed = event(0);
    changed["reason"] = json!("edited");
    assert_eq!(c.post_events(src, json, body(changed)).await, 409);
    assert_eq!(c.post_events(src, json, b"{".to_vec()).await, 400);
    let bad_ndjson = format!("{}\n{{\"event_id\":1}}\n", event(9)).into_bytes();
    assert_eq!(
        c.post_events(src, "application/x-ndjson", bad_ndjson).await,
        400
    );
    assert_eq!(c.post_events(None, json, body(event(5))).await, 401);
    assert_eq!(c.post_events(aud, json, body(event(5))).await, 403);
    assert_eq!(c.post_events(src, "text/plain", body(event(5))).await, 415);
    assert_eq!(c.post_events(src, json, vec![b' '; 65 * 1024]).await, 413);

    // The log, public.
    for path in [
        "/v1/checkpoint",
        "/v1/verifier-key",
        "/v1/keys",
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
    ] {
        assert_eq!(c.call("get", path, path, None, None).await.0, 200, "{path}");
    }
    let inclusion = "/v1/proofs/inclusion";
    let consistency = "/v1/proofs/consistency";
    for (template, path, want) in [
        (inclusion, "/v1/proofs/inclusion?index=3", 200),
        (inclusion, "/v1/proofs/inclusion?index=0&tree_size=1", 200),
        (inclusion, "/v1/proofs/inclusion?index=5", 400),
        (inclusion, "/v1/proofs/inclusion?index=x", 400),
        (consistency, "/v1/proofs/consistency?from=2&to=5", 200),
        (consistency, "/v1/proofs/consistency?from=5", 200),
        (consistency, "/v1/proofs/consistency?from=0", 400),
    ] {
        assert_eq!(
            c.call("get", template, path, None, None).await.0,
            want,
            "{path}"
        );
    }

    // Entries and requests.
    let entry = "/v1/entries/{index}";
    let request = "/v1/requests/{request_id}";
    for (template, path, token, want) in [
        (entry, "/v1/entries/0", src, 200),
        (entry, "/v1/entries/4", aud, 200),
        (entry, "/v1/entries/5", src, 404),
        (entry, "/v1/entries/x", src, 400),
        (entry, "/v1/entries/%FF", src, 400),
        (entry, "/v1/entries/0", adm, 403),
        (entry, "/v1/entries/0", None, 401),
        (request, "/v1/requests/req-0", src, 200),
        (request, "/v1/requests/req-1", aud, 200),
        (request, "/v1/requests/nope", src, 404),
        (request, "/v1/requests/%00", src, 400),
    ] {
        assert_eq!(
            c.call("get", template, path, token, None).await.0,
            want,
            "{path}"
        );
    }

    // The export API.
    let (locate, rows, context) = ("/v1/export/locate", "/v1/export/rows", "/v1/export/context");
    for (template, path, token, want) in [
        (locate, "/v1/export/locate?micros=0&tree_size=5", aud, 200),
        (locate, "/v1/export/locate?micros=0&tree_size=6", aud, 400),
        (locate, "/v1/export/locate?micros=0&tree_size=5", src, 403),
        (rows, "/v1/export/rows?start=0&end=5&tree_size=5", aud, 200),
        (rows, "/v1/export/rows?start=3&end=2&tree_size=5", aud, 400),
        (
            context,
            "/v1/export/context?request_id=req-0&before=5",
            aud,
            200,
        ),
        (context, "/v1/export/context?before=5", aud, 400),
    ] {
        assert_eq!(
            c.call("get", template, path, token, None).await.0,
            want,
            "{path}"
        );
    }
    let sign = "/v1/export/manifest-signature";
    let not_a_manifest = Some((json, body(json!({"format": "x"}))));
    assert_eq!(c.call("post", sign, sign, aud, not_a_manifest).await.0, 400);
    let (status, _) = c.call("post", sign, sign, src, Some((json, vec![]))).await;
    assert_eq!(status, 403);

    // Credentials.
    let creds = "/v1/admin/credentials";
    let one = "/v1/admin/credentials/{role}/{name}";
    let add = |role: &str, name: &str| Some((json, body(json!({"role": role, "name": name}))));
    let (status, issued) = c
        .call("post", creds, creds, adm, add("source", "ci-2"))
        .await;
    assert_eq!(status, 201);
    let issued: Value = serde_json::from_slice(&issued).unwrap();
    let ci2 = issued["token"].as_str().unwrap().to_owned();
    // Origin keys: added to ci-2 (ci-runner keeps posting unsigned events), listed to sources
    // and auditors; ci-2's signed event is kept in its leaf.
    let keys = "/v1/admin/credentials/source/{name}/origin-keys";
    let signer = |name: &str| ledger::core::note::SignerKey::from_seed(name, &[7u8; 32]).unwrap();
    let origin_key = |name: &str| signer(name).verifier().encode();
    let origin = origin_key("ci-2");
    let key = |k: &str| Some((json, body(json!({"key": k}))));
    let path = "/v1/admin/credentials/source/ci-2/origin-keys";
    assert_eq!(c.call("post", keys, path, adm, key(&origin)).await.0, 200);
    assert_eq!(
        c.call("post", keys, path, adm, key("not a key")).await.0,
        400
    );
    let path = "/v1/admin/credentials/source/nobody/origin-keys";
    let nobody = key(&origin_key("nobody"));
    assert_eq!(c.call("post", keys, path, adm, nobody).await.0, 404);
    let source_keys = "/v1/source-keys";
    let (status, listed) = c.call("get", source_keys, source_keys, aud, None).await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_slice(&listed).unwrap();
    assert_eq!(listed["sources"]["ci-2"], json!([origin]));
    let (status, _) = c.call("get", source_keys, source_keys, adm, None).await;
    assert_eq!(status, 403);
    let signed = {
        use base64::Engine as _;
        let key = signer("ci-2");
        let e = event(10);
        json!({"event": e, "origin_signature": {
            "key_id": hex::encode(key.verifier().id()),
            "signature": base64::engine::general_purpose::STANDARD
                .encode(key.sign_bytes(&serde_jcs::to_vec(&e).unwrap())),
        }})
    };
    assert_eq!(
        c.post_events(Some(&ci2), json, body(json!([signed]))).await,
        200
    );
    let (status, leaf) = c.call("get", entry, "/v1/entries/5", src, None).await;
    assert_eq!(status, 200);
    let leaf: Value = serde_json::from_slice(&leaf).unwrap();
    assert!(leaf["origin_signature"].is_object(), "{leaf}");
    assert_eq!(
        c.call("post", creds, creds, adm, add("source", "ci-2"))
            .await
            .0,
        409
    );
    assert_eq!(
        c.call("post", creds, creds, adm, add("root", "x")).await.0,
        400
    );
    assert_eq!(
        c.call("post", creds, creds, adm, add("source", "Bad Name"))
            .await
            .0,
        400
    );
    let big = Some((json, vec![b' '; 5000]));
    assert_eq!(c.call("post", creds, creds, adm, big).await.0, 413);
    assert_eq!(c.call("get", creds, creds, adm, None).await.0, 200);
    let path = "/v1/admin/credentials?role=auditor";
    assert_eq!(c.call("get", creds, path, adm, None).await.0, 200);
    let path = "/v1/admin/credentials?role=root";
    assert_eq!(c.call("get", creds, path, adm, None).await.0, 400);
    assert_eq!(c.call("get", creds, creds, src, None).await.0, 403);
    let path = "/v1/admin/credentials/source/ci-2";
    assert_eq!(c.call("delete", one, path, adm, None).await.0, 200);
    let path = "/v1/admin/credentials/source/nobody";
    assert_eq!(c.call("delete", one, path, adm, None).await.0, 404);
    let path = "/v1/admin/credentials/root/ci-2";
    assert_eq!(c.call("delete", one, path, adm, None).await.0, 400);
}

/// The check is not vacuous: answers that break the contract fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_rejects_answers_that_break_the_contract() {
    let server = TestServer::start().await;
    let doc = Doc::fetch(&server).await;
    let (status, good) = server.post_json(&event(0)).await;
    assert_eq!(status, 200);
    let receipts = doc.validator("/components/schemas/Receipts");
    assert!(receipts.is_valid(&good));
    let mut extra = good.clone();
    extra["receipts"][0]["note"] = json!("x");
    let mut not_hex = good.clone();
    not_hex["receipts"][0]["leaf_hash"] = json!("AB".repeat(32));
    let mut missing = good.clone();
    missing["receipts"][0]
        .as_object_mut()
        .unwrap()
        .remove("checkpoint");
    let mut negative = good.clone();
    negative["receipts"][0]["index"] = json!(-1);
    for bad in [extra, not_hex, missing, negative] {
        assert!(!receipts.is_valid(&bad), "{bad}");
    }
    // The batch form: its schema, and the answer's schema takes either form but not a mix.
    let (status, batch) = server
        .post_to(
            "/v1/events?receipts=batch",
            "application/json",
            json!([event(1), event(0)]).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let batches = doc.validator("/components/schemas/BatchReceipt");
    let answers = doc.validator("/components/schemas/EventsAnswer");
    assert!(batches.is_valid(&batch) && answers.is_valid(&batch) && answers.is_valid(&good));
    let mut mixed = batch.clone();
    mixed["receipts"] = good["receipts"].clone();
    let mut bad_entry = batch.clone();
    bad_entry["entries"][0]["leaf_hash"] = json!("x");
    let mut no_proof = batch.clone();
    no_proof.as_object_mut().unwrap().remove("multi_proof");
    for bad in [mixed, bad_entry, no_proof] {
        assert!(!answers.is_valid(&bad), "{bad}");
    }
    let (_, leaf) = server.get_json("/v1/entries/0").await;
    let leaves = doc.validator("/components/schemas/Leaf");
    assert!(leaves.is_valid(&leaf));
    let mut bad_event = leaf.clone();
    bad_event["event"]["actor"]["kind"] = json!("robot");
    assert!(!leaves.is_valid(&bad_event));
    let errors = doc.validator("/components/schemas/ErrorBody");
    assert!(errors.is_valid(&json!({"error": "x", "details": [{"path": "", "message": "m"}]})));
    assert!(!errors.is_valid(&json!({"error": "x"})));
    assert!(!errors.is_valid(&json!({"error": "x", "details": [{"message": "m"}]})));
    // An undocumented status is caught too.
    let caught = std::panic::catch_unwind(|| {
        doc.check("get", "/v1/checkpoint", 404, "application/json", b"{}");
    });
    assert!(caught.is_err());
}
