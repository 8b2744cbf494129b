//! Origin signatures (NIST AU-10): a source with a registered key signs each event; the ledger
//! checks the signature, keeps it in the leaf, and `ledger verify` checks it offline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ledger::bundle::SourceKeys;
use ledger::core::leaf::Leaf;
use ledger::core::note::SignerKey;
use ledger::export::{ExportConfig, Source, export};
use ledger::store::CredentialKind;
use ledger::verify::{verify, verify_with};
use serde_json::{Value, json};

use crate::common::{TestServer, add_credential, event, test_key, verifier};

fn source_key(seed: u8) -> SignerKey {
    SignerKey::from_seed("edge-1", &[seed; 32]).unwrap()
}

/// `{"event": e, "origin_signature": ...}` signed by `key` over the event's JCS bytes.
fn signed(e: &Value, key: &SignerKey) -> Value {
    let jcs = serde_jcs::to_vec(e).unwrap();
    json!({
        "event": e,
        "origin_signature": {
            "key_id": hex::encode(key.verifier().id()),
            "signature": B64.encode(key.sign_bytes(&jcs)),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_are_checked_kept_in_the_leaf_and_verified_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let k1 = source_key(1);
    let store = ledger::store::Store::open(&dir).unwrap();
    let (edge, _) = ledger::admin::add(
        &store,
        CredentialKind::Source,
        "edge-1",
        Some(&k1.verifier().encode()),
    )
    .unwrap();
    // A key must be named after its source.
    let wrong_name = SignerKey::from_seed("other", &[1; 32]).unwrap();
    assert!(
        ledger::admin::add_origin_key(&store, "edge-1", &wrong_name.verifier().encode()).is_err()
    );
    drop(store);
    let plain = add_credential(&dir, CredentialKind::Source, "ci-runner");
    let admin = add_credential(&dir, CredentialKind::Admin, "root");
    let s = TestServer::start_on(
        dir.clone(),
        edge.clone(),
        None,
        Default::default(),
        Default::default(),
    )
    .await;
    let post = |token: &str, body: Value| {
        let (c, b, t) = (s.client.clone(), s.base.clone(), token.to_owned());
        async move {
            let r = c
                .post(format!("{b}/v1/events"))
                .bearer_auth(t)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // Refused, and nothing appended: unsigned, forged, unknown key, signature of another event,
    // and a signature from a source that has no key.
    let mut forged = signed(&event(1), &k1);
    forged["origin_signature"]["signature"] = json!(B64.encode([0u8; 64]));
    let mut unknown = signed(&event(1), &source_key(2));
    unknown["event"] = event(1);
    let mut swapped = signed(&event(2), &k1);
    swapped["event"] = event(1);
    for (token, body, path) in [
        (&edge, event(1), ""),
        (&edge, forged, "/origin_signature/signature"),
        (&edge, unknown, "/origin_signature/key_id"),
        (&edge, swapped, "/origin_signature/signature"),
        (&plain, signed(&event(1), &k1), "/origin_signature"),
    ] {
        let (status, err) = post(token, body).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["details"][0]["path"], path, "{err}");
    }
    assert_eq!(s.tree_size().await, 0);

    // Accepted, and the signature is in the leaf, over exactly the event's bytes in it.
    let (status, r) = post(
        &edge,
        json!([signed(&event(1), &k1), signed(&event(2), &k1)]),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let (_, leaf_text) = s.get_text("/v1/entries/1").await;
    let leaf = Leaf::parse(leaf_text.as_bytes()).unwrap();
    let sig = leaf
        .origin_signature
        .clone()
        .expect("signature kept in the leaf");
    assert_eq!(sig.key_id, hex::encode(k1.verifier().id()));
    let event_bytes = leaf.event;
    assert!(
        k1.verifier()
            .verify_bytes(event_bytes, &sig.signature_bytes().unwrap())
    );
    // Reposting is idempotent; an unsigned source is unaffected.
    let (status, again) = post(&edge, signed(&event(1), &k1)).await;
    assert_eq!(
        (status, again["receipts"][0]["duplicate"].clone()),
        (200, json!(true))
    );
    assert_eq!(post(&plain, event(3)).await.0, 200);

    // Rotation: a second key added over the admin API; both verify afterwards.
    let k2 = source_key(3);
    let r = s
        .client
        .post(format!(
            "{}/v1/admin/credentials/source/edge-1/origin-keys",
            s.base
        ))
        .bearer_auth(&admin)
        .json(&json!({"key": k2.verifier().encode()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(post(&edge, signed(&event(4), &k2)).await.0, 200);
    assert_eq!(post(&edge, signed(&event(5), &k1)).await.0, 200);
    let (_, keys) = s.get_json("/v1/source-keys").await;
    assert_eq!(keys["sources"]["edge-1"].as_array().map(Vec::len), Some(2));
    let (dir, _) = s.stop().await;
    {
        // Re-issuing a revoked source keeps its keys: it must still sign, and old rows verify.
        let store = ledger::store::Store::open(&dir).unwrap();
        ledger::admin::revoke(&store, CredentialKind::Source, "edge-1").unwrap();
        let (_, info) = ledger::admin::add(&store, CredentialKind::Source, "edge-1", None).unwrap();
        assert_eq!(info.origin_keys.len(), 2);
        assert_eq!(info.previous.len(), 1);
        // ci-runner posted unsigned before it got a key: verify lists that row.
        let ci_key = SignerKey::from_seed("ci-runner", &[5; 32]).unwrap();
        ledger::admin::add_origin_key(&store, "ci-runner", &ci_key.verifier().encode()).unwrap();
    }

    // Offline: the bundle carries the keys and verify checks every signed row.
    let out = tmp.path().join("bundle");
    export(&ExportConfig {
        framework: "soc2".into(),
        from: 0,
        to: 4_102_444_800_000_000, // 2100-01-01
        out: out.clone(),
        source: Source::DataDir {
            path: dir,
            key: Box::new(test_key()),
        },
        since: None,
        now: 0,
        progress: false,
    })
    .unwrap();
    let v = verify(&out, &verifier(), None).unwrap();
    assert!(v.ok, "{:#?}", v.checks);
    let origin = v
        .checks
        .iter()
        .find(|c| c.name == "origin signatures")
        .unwrap();
    assert!(
        origin.detail.starts_with("4 rows signed"),
        "{}",
        origin.detail
    );
    // ci-runner's row predates its key: listed for the auditor, not failed.
    assert!(
        origin.detail.contains("1 unsigned rows"),
        "{}",
        origin.detail
    );

    // Pinned keys from the source's owner: the right ones pass, a stranger's fail by name.
    let pinned = |key: &SignerKey| SourceKeys {
        sources: [("edge-1".to_owned(), vec![key.verifier().encode()])].into(),
    };
    let both = SourceKeys {
        sources: [(
            "edge-1".to_owned(),
            vec![k1.verifier().encode(), k2.verifier().encode()],
        )]
        .into(),
    };
    assert!(
        verify_with(&out, &verifier(), None, Some(&both))
            .unwrap()
            .ok
    );
    let v = verify_with(&out, &verifier(), None, Some(&pinned(&k1))).unwrap();
    let failed: Vec<_> = v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, ["origin signatures"], "k2's row has no pinned key");
    // A bundle whose key file was swapped fails on the signatures and the file hashes.
    let stranger = source_key(9);
    std::fs::write(
        out.join("source-keys.json"),
        serde_json::to_vec(&pinned(&stranger)).unwrap(),
    )
    .unwrap();
    let v = verify(&out, &verifier(), None).unwrap();
    let failed: Vec<_> = v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, ["file hashes", "origin signatures"]);
}
