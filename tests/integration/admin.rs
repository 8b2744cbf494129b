//! Roles and the admin API: who may do what, and revocation taking effect on the next request.

use ledger::store::CredentialKind;
use serde_json::{Value, json};

use crate::common::{TestServer, add_credential, add_source, event};

struct Fixture {
    server: TestServer,
    admin: String,
    auditor: String,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let source = add_source(&dir, "ci-runner");
    let admin = add_credential(&dir, CredentialKind::Admin, "root");
    let auditor = add_credential(&dir, CredentialKind::Auditor, "alice");
    let server = TestServer::start_on(
        dir,
        source,
        Some(std::sync::Arc::new(tmp)),
        ledger::http::Limits::default(),
        ledger::sequencer::SequencerConfig::default(),
    )
    .await;
    Fixture {
        server,
        admin,
        auditor,
    }
}

async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = s.client.request(method, format!("{}{path}", s.base));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_event(s: &TestServer, token: &str, n: u64) -> u16 {
    call(
        s,
        reqwest::Method::POST,
        "/v1/events",
        Some(token),
        Some(event(n)),
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_only_its_own_work() {
    let f = fixture().await;
    let s = &f.server;
    let get = reqwest::Method::GET;
    // Admins manage credentials; they cannot write events or read entries.
    assert_eq!(post_event(s, &f.admin, 1).await, 403);
    assert_eq!(
        call(s, get.clone(), "/v1/entries/0", Some(&f.admin), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(
            s,
            get.clone(),
            "/v1/export/locate?micros=0&tree_size=0",
            Some(&f.admin),
            None
        )
        .await
        .0,
        403
    );
    // Sources and auditors cannot manage credentials; no token is 401.
    for token in [Some(s.token.as_str()), Some(f.auditor.as_str())] {
        assert_eq!(
            call(s, get.clone(), "/v1/admin/credentials", token, None)
                .await
                .0,
            403
        );
    }
    assert_eq!(
        call(s, get.clone(), "/v1/admin/credentials", None, None)
            .await
            .0,
        401
    );
    // Auditors read but cannot write.
    assert_eq!(post_event(s, &f.auditor, 2).await, 403);
    assert_eq!(post_event(s, &s.token, 3).await, 200);
    assert_eq!(
        call(s, get, "/v1/entries/0", Some(&f.auditor), None)
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_issues_lists_and_revokes_with_effect_on_the_next_request() {
    let f = fixture().await;
    let s = &f.server;
    let admin = Some(f.admin.as_str());
    let creds = "/v1/admin/credentials";
    let post = reqwest::Method::POST;

    let (status, issued) = call(
        s,
        post.clone(),
        creds,
        admin,
        Some(json!({"role": "source", "name": "edge-2"})),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(
        post_event(s, &token, 10).await,
        200,
        "a new token works at once"
    );

    // Bad requests are clear 4xx and change nothing.
    for (body, want) in [
        (json!({"role": "source", "name": "edge-2"}), 409),
        (json!({"role": "root", "name": "x"}), 400),
        (json!({"role": "source", "name": "Bad Name"}), 400),
        (json!({"role": "source", "name": "x", "extra": 1}), 400),
        (json!({"role": "source"}), 400),
    ] {
        let (status, err) = call(s, post.clone(), creds, admin, Some(body.clone())).await;
        assert_eq!(status, want, "{body} -> {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{err}"
        );
    }

    // Listing shows ids and dates, never tokens or their hashes.
    let (status, list) = call(
        s,
        reqwest::Method::GET,
        &format!("{creds}?role=source"),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(
        !text.contains(&token[21..]) && !text.contains("secret_hash"),
        "{text}"
    );
    let names: Vec<&str> = list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci-runner", "edge-2"]);

    // Revocation: the very next request with that token is refused.
    let del = reqwest::Method::DELETE;
    let (status, revoked) = call(
        s,
        del.clone(),
        &format!("{creds}/source/edge-2"),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(post_event(s, &token, 11).await, 401);
    assert_eq!(
        call(
            s,
            del.clone(),
            &format!("{creds}/source/nobody"),
            admin,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(s, del, &format!("{creds}/robot/edge-2"), admin, None)
            .await
            .0,
        400
    );

    // Re-issuing a revoked name is how a token is rotated: the new one works, the old stays dead.
    let (status, again) = call(
        s,
        post,
        creds,
        admin,
        Some(json!({"role": "source", "name": "edge-2"})),
    )
    .await;
    assert_eq!(status, 201);
    let rotated = again["token"].as_str().unwrap().to_owned();
    assert_eq!(post_event(s, &rotated, 12).await, 200);
    // The revoked token stays on record under the name.
    let (_, list) = call(
        s,
        reqwest::Method::GET,
        &format!("{creds}?role=source"),
        admin,
        None,
    )
    .await;
    let edge = &list["credentials"][1];
    assert_eq!(
        edge["previous"][0]["token_id"], issued["token_id"],
        "{list}"
    );
    assert!(edge["previous"][0]["revoked_at"].is_string());

    // All of it is durable: after a restart the revoked token is still refused.
    let source = s.token.clone();
    let (dir, tmp) = f.server.stop().await;
    let s = TestServer::start_on(dir, source, tmp, Default::default(), Default::default()).await;
    assert_eq!(post_event(&s, &token, 13).await, 401);
    assert_eq!(post_event(&s, &rotated, 14).await, 200);
}
