//! The network edge: TLS on both ends, per-source rate and in-flight limits, the connection cap,
//! and the header and idle timeouts that keep slow clients from pinning the server.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ledger::core::receipt::{Receipt, verify_receipt};
use ledger::http::Limits;
use ledger::http::limit::{MonotonicClock, SourceLimits};
use ledger::net::NetConfig;
use ledger::sequencer::SequencerConfig;
use ledger::tls::{ClientTls, TlsError};
use serde_json::{Value, json};

use crate::common::{Net, TestServer, add_source, event, gated_clock, verifier};

/// PEM files of a test CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct TestPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A key that is not the certificate's.
    other_key: PathBuf,
}

fn test_pki(dir: &Path) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ledger test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        other_key: dir.join("other-key.pem"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    pki
}

fn receipts(body: &Value) -> Vec<Receipt> {
    serde_json::from_value(body["receipts"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_its_ca_and_refuses_plain_http_and_untrusting_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki(tmp.path());
    let net = Net {
        net: NetConfig {
            tls: Some(ledger::tls::server_config(&pki.cert, &pki.key).unwrap()),
            ..NetConfig::default()
        },
        client: Some(
            ClientTls::from_ca_file(Some(&pki.ca))
                .unwrap()
                .client()
                .build()
                .unwrap(),
        ),
        ..Net::default()
    };
    let server = TestServer::start_net(Limits::default(), SequencerConfig::default(), net).await;
    assert!(server.base.starts_with("https://127.0.0.1:"));

    let (status, body) = server.post_json(&event(1)).await;
    assert_eq!(status, 200, "{body}");
    let receipt = &receipts(&body)[0];
    let (_, leaf) = server.get_text("/v1/entries/0").await;
    verify_receipt(receipt, &verifier(), Some(leaf.as_bytes())).unwrap();

    // Plain HTTP on the TLS port: the handshake fails and the connection is closed unanswered.
    let plain_url = server.base.replacen("https://", "http://", 1);
    let plain = ClientTls::default().client().build().unwrap();
    let refused = plain.get(format!("{plain_url}/readyz")).send().await;
    assert!(refused.is_err(), "plain HTTP was answered: {refused:?}");
    // A client that trusts only the system's roots does not accept the test CA's certificate.
    let untrusting = plain.get(format!("{}/readyz", server.base)).send().await;
    assert!(untrusting.is_err(), "an unknown CA was trusted");
    // The name is checked too: a certificate for localhost is not one for 127.0.0.2.
    let wrong_name = server
        .client
        .get(format!(
            "{}/readyz",
            server.base.replacen("127.0.0.1", "127.0.0.2", 1)
        ))
        .send()
        .await;
    assert!(
        wrong_name.is_err(),
        "the certificate's names were not checked"
    );

    // Still serving; and shutting down closes the data dir before `serve` returns.
    assert_eq!(server.post_json(&event(2)).await.0, 200);
    let (dir, _tmp) = server.stop().await;
    ledger::store::Store::open(&dir).unwrap();
}

#[test]
fn tls_files_are_checked_before_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki(tmp.path());
    let err = ledger::tls::server_config(&pki.cert, &pki.other_key).unwrap_err();
    assert!(matches!(err, TlsError::Config { .. }), "{err}");
    let err = ledger::tls::server_config(&pki.key, &pki.key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = ledger::tls::server_config(&pki.cert, &pki.cert).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    let err = ledger::tls::server_config(&tmp.path().join("absent.pem"), &pki.key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(matches!(
        ClientTls::from_ca_file(Some(&pki.key)).unwrap_err(),
        TlsError::Pem { .. }
    ));
}

/// A clock the test moves by hand, in microseconds.
fn manual_clock() -> (MonotonicClock, Arc<AtomicU64>) {
    let micros = Arc::new(AtomicU64::new(0));
    let read = Arc::clone(&micros);
    (
        Arc::new(move || Duration::from_micros(read.load(Ordering::SeqCst))),
        micros,
    )
}

async fn post_as(server: &TestServer, token: &str, body: String) -> reqwest::Response {
    server
        .client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn status_retry_body(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_event_rate_gets_429_with_retry_after_until_the_bucket_refills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let token = add_source(&dir, "ci-runner");
    let other = add_source(&dir, "other");
    let (clock, micros) = manual_clock();
    let net = Net {
        source_limits: SourceLimits {
            rate: 10,
            burst: 5,
            concurrency: 0,
            clock,
        },
        ..Net::default()
    };
    let server = TestServer::start_full(
        dir,
        token.clone(),
        Some(Arc::new(tmp)),
        Limits::default(),
        SequencerConfig::default(),
        net,
    )
    .await;

    // The burst: 5 events, one request each.
    for n in 0..5 {
        let (status, _, body) =
            status_retry_body(post_as(&server, &token, event(n).to_string()).await).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry, body) =
        status_retry_body(post_as(&server, &token, event(5).to_string()).await).await;
    assert_eq!(status, 429);
    // One token takes 0.1 s at 10 events/s: Retry-After rounds up to the whole second.
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        body["error"].as_str().unwrap().contains("10 events/s"),
        "{body}"
    );
    assert_eq!(body["details"], json!([]));
    // Refused before the body is read: an invalid body gets 429, not 400.
    let (status, _, _) = status_retry_body(post_as(&server, &token, "not json".into()).await).await;
    assert_eq!(status, 429);
    // Other sources have buckets of their own.
    let (status, _, _) =
        status_retry_body(post_as(&server, &other, event(100).to_string()).await).await;
    assert_eq!(status, 200);

    // 99,999 us later the bucket holds 0.99999 tokens: still refused; at 100,000 us, one token.
    micros.store(99_999, Ordering::SeqCst);
    let (status, retry, _) =
        status_retry_body(post_as(&server, &token, event(5).to_string()).await).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")));
    micros.store(100_000, Ordering::SeqCst);
    let (status, _, _) =
        status_retry_body(post_as(&server, &token, event(5).to_string()).await).await;
    assert_eq!(status, 200);

    // Events are counted, not requests, and a batch larger than the burst is admitted: it
    // borrows against the refill. After a full refill (5 tokens), 1,000 events leave -995; the
    // next token is 996 tokens away, 99.6 s at 10/s.
    micros.store(100_000_000, Ordering::SeqCst);
    let batch: Vec<Value> = (1000..2000).map(event).collect();
    let (status, _, body) =
        status_retry_body(post_as(&server, &token, json!(batch).to_string()).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(receipts(&body).len(), 1000);
    let (status, retry, _) =
        status_retry_body(post_as(&server, &token, event(6).to_string()).await).await;
    assert_eq!((status, retry.as_deref()), (429, Some("100")));
    micros.store(100_000_000 + 99_599_999, Ordering::SeqCst);
    let (status, retry, _) =
        status_retry_body(post_as(&server, &token, event(6).to_string()).await).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")));
    micros.store(100_000_000 + 99_600_000, Ordering::SeqCst);
    let (status, _, _) =
        status_retry_body(post_as(&server, &token, event(6).to_string()).await).await;
    assert_eq!(status, 200);
    // Nothing refused was appended: 5 + 1 (other) + 1 + 1,000 + 1.
    assert_eq!(server.tree_size().await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_in_flight_cap_gets_503_with_retry_after() {
    let (clock, entered, release) = gated_clock();
    let sequencer = SequencerConfig {
        clock,
        ..SequencerConfig::default()
    };
    let net = Net {
        source_limits: SourceLimits {
            concurrency: 1,
            ..SourceLimits::default()
        },
        ..Net::default()
    };
    let server = Arc::new(TestServer::start_net(Limits::default(), sequencer, net).await);
    // The first request is held in the writer, so it stays in flight.
    let first = {
        let s = Arc::clone(&server);
        tokio::spawn(async move { s.post_json(&event(1)).await })
    };
    crate::common::writer_entered(entered).await;
    let (status, retry, body) =
        status_retry_body(post_as(&server, &server.token, event(2).to_string()).await).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("in flight"),
        "{body}"
    );
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().0, 200);
    // The slot is free again.
    assert_eq!(server.post_json(&event(2)).await.0, 200);
}

/// Waits (on a blocking thread, bounded) until the server closes `stream`: EOF or a reset.
async fn closed_by_server(mut stream: std::net::TcpStream) {
    tokio::task::spawn_blocking(move || {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                // Whatever the server answers before closing (nothing, for a header timeout).
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("the server did not close the connection: {e}"),
            }
        }
    })
    .await
    .unwrap();
}

fn addr(server: &TestServer) -> String {
    server.base.split("://").nth(1).unwrap().to_owned()
}

/// Short timeouts close idle pooled connections under the client's feet, so the test clients
/// keep none: each request has a connection of its own.
fn unpooled(tls: &ClientTls) -> reqwest::Client {
    tls.client().pool_max_idle_per_host(0).build().unwrap()
}

fn net_with(header: Duration, idle: Duration, max_connections: usize) -> Net {
    Net {
        net: NetConfig {
            header_read_timeout: header,
            idle_timeout: idle,
            max_connections,
            ..NetConfig::default()
        },
        client: Some(unpooled(&ClientTls::default())),
        ..Net::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalling_mid_request_line_are_disconnected_at_the_header_timeout_and_others_are_served()
 {
    let long = Duration::from_secs(600);
    let server = TestServer::start_net(
        Limits::default(),
        SequencerConfig::default(),
        net_with(Duration::from_secs(1), long, 512),
    )
    .await;
    let stalled: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr(&server)).unwrap();
            s.write_all(b"POST /v1/ev").unwrap();
            s
        })
        .collect();
    // While they stall, the server answers others.
    assert_eq!(server.post_json(&event(1)).await.0, 200);
    for s in stalled {
        closed_by_server(s).await;
    }
    assert_eq!(server.post_json(&event(2)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_idle_timeout() {
    // The header timeout is far away: only the idle timeout can close it.
    let server = TestServer::start_net(
        Limits::default(),
        SequencerConfig::default(),
        net_with(Duration::from_secs(600), Duration::from_secs(1), 512),
    )
    .await;
    let silent = std::net::TcpStream::connect(addr(&server)).unwrap();
    closed_by_server(silent).await;
    assert_eq!(server.post_json(&event(1)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_says_hello_is_disconnected_at_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki(tmp.path());
    let mut net = net_with(Duration::from_secs(1), Duration::from_secs(600), 512);
    net.net.tls = Some(ledger::tls::server_config(&pki.cert, &pki.key).unwrap());
    net.client = Some(unpooled(&ClientTls::from_ca_file(Some(&pki.ca)).unwrap()));
    let server = TestServer::start_net(Limits::default(), SequencerConfig::default(), net).await;
    let mut mute = std::net::TcpStream::connect(addr(&server)).unwrap();
    mute.write_all(&[0x16, 0x03, 0x01]).unwrap(); // the start of a TLS record, then nothing
    closed_by_server(mute).await;
    assert_eq!(server.post_json(&event(1)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let server = TestServer::start_net(
        Limits::default(),
        SequencerConfig::default(),
        net_with(Duration::from_secs(1), Duration::from_secs(600), 1),
    )
    .await;
    // `holder` takes the only slot and stalls; the request behind it waits in the backlog and
    // can only be served once the header timeout has closed `holder`.
    let mut holder = std::net::TcpStream::connect(addr(&server)).unwrap();
    holder.write_all(b"GET /heal").unwrap();
    let (status, _) = server.post_json(&event(1)).await;
    assert_eq!(status, 200);
    holder.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match holder.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("served while the only slot was taken: holder read {other:?}"),
    }
}

fn ledger(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env("LEDGER_LOG", "warn")
        .env_remove("LEDGER_CA_CERT")
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last stdout line of a successful command (a token, for `add`).
fn last_line(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap().to_owned()
}

#[test]
fn the_command_line_serves_tls_and_its_clients_trust_a_given_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_pki(tmp.path());
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.cert.to_str().unwrap(),
        pki.key.to_str().unwrap(),
    );
    let keys = tmp.path().join("keys");
    let k = keys.to_str().unwrap();
    last_line(&ledger(&[
        "keygen",
        "--origin",
        "t.example/log",
        "--out",
        k,
    ]));
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let admin = last_line(&ledger(&["admins", "add", "root", "--data-dir", d]));

    // Both TLS files or neither, checked before anything is done.
    let half = ledger(&["serve", "--data-dir", d, "--tls-cert", cert]);
    assert_eq!(half.status.code(), Some(2));
    let err = stderr(&half);
    assert!(
        err.contains("--tls-cert without --tls-key") && err.contains("hint:"),
        "{err}"
    );
    let mismatched = ledger(&[
        "serve",
        "--data-dir",
        d,
        "--tls-cert",
        cert,
        "--tls-key",
        pki.other_key.to_str().unwrap(),
    ]);
    assert_eq!(mismatched.status.code(), Some(2), "{}", stderr(&mismatched));

    let key_file = keys.join("ledger.key");
    let server = crate::common::Process::spawn_with(
        &dir,
        &key_file,
        &["--tls-cert", cert, "--tls-key", key],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let base = server.base.as_str();

    // The credential commands' --server form, trusting the test CA.
    let source = last_line(&ledger(&[
        "sources",
        "add",
        "edge",
        "--server",
        base,
        "--token",
        &admin,
        "--ca-cert",
        ca,
    ]));
    let auditor = last_line(&ledger(&[
        "auditors",
        "add",
        "firm",
        "--server",
        base,
        "--token",
        &admin,
        "--ca-cert",
        ca,
    ]));
    // Without the CA, the system's roots do not vouch for the server.
    let untrusted = ledger(&["sources", "list", "--server", base, "--token", &admin]);
    assert_eq!(untrusted.status.code(), Some(2));
    assert!(
        stderr(&untrusted).contains("reaching"),
        "{}",
        stderr(&untrusted)
    );
    let not_pem = ledger(&[
        "sources",
        "list",
        "--server",
        base,
        "--token",
        &admin,
        "--ca-cert",
        key,
    ]);
    assert_eq!(not_pem.status.code(), Some(2));
    assert!(
        stderr(&not_pem).contains("--ca-cert"),
        "{}",
        stderr(&not_pem)
    );

    // The load generator over TLS.
    let bench = ledger(&[
        "bench",
        "--server",
        base,
        "--token",
        &source,
        "--ca-cert",
        ca,
        "--events",
        "20",
        "--connections",
        "2",
        "--sample",
        "5",
        "--no-floor",
    ]);
    assert!(bench.status.success(), "{}", stderr(&bench));
    assert!(
        String::from_utf8_lossy(&bench.stdout).contains("receipts verified 5"),
        "{}",
        String::from_utf8_lossy(&bench.stdout)
    );

    // An export over TLS verifies offline.
    let bundle = tmp.path().join("bundle");
    let b = bundle.to_str().unwrap();
    let period = [
        "--framework",
        "soc2",
        "--from",
        "2000-01-01",
        "--to",
        "2100-01-01",
    ];
    let mut export = vec!["export"];
    export.extend(period);
    export.extend([
        "--out",
        b,
        "--server",
        base,
        "--token",
        &auditor,
        "--ca-cert",
        ca,
    ]);
    let out = ledger(&export);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("20 rows"));
    let pubkey = keys.join("ledger.pub");
    let verified = ledger(&["verify", b, "--key-file", pubkey.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stderr(&verified));
    // --ca-cert belongs to --server.
    let mut local = vec!["export"];
    local.extend(period);
    let other = tmp.path().join("other");
    local.extend([
        "--out",
        other.to_str().unwrap(),
        "--data-dir",
        d,
        "--ca-cert",
        ca,
    ]);
    let out = ledger(&local);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--ca-cert is only for --server"),
        "{}",
        stderr(&out)
    );
}
