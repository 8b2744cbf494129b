//! The command line as a user meets it: argv in, exit status and output out.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

use ledger::core::note::{SignerKey, VerifierKey};

fn ledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger"))
        .args(args)
        .env("LEDGER_LOG", "warn")
        .output()
        .unwrap()
}

/// A data dir path (not created) and a key dir made by `ledger keygen`.
fn data_dir_and_key(tmp: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let keys = tmp.join("keys");
    let out = ledger(&[
        "keygen",
        "--origin",
        "t.example/log",
        "--out",
        keys.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    (tmp.join("data"), keys)
}

/// Registers a source or auditor with the CLI and returns its token (the last stdout line).
fn add_credential(kind: &str, name: &str, dir: &std::path::Path) -> String {
    let out = ledger(&[kind, "add", name, "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keygen_writes_a_private_key_0600_and_its_verifier_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    let out = ledger(&[
        "keygen",
        "--origin",
        "example.org/approvals",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key_path = dir.join("ledger.key");
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let private = std::fs::read_to_string(&key_path).unwrap();
    assert!(private.starts_with("PRIVATE+KEY+example.org/approvals+"));
    let key = SignerKey::parse(private.trim()).unwrap();
    let public = VerifierKey::parse(
        std::fs::read_to_string(dir.join("ledger.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(key.verifier(), &public);
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
        public.encode()
    );

    let again = ledger(&[
        "keygen",
        "--origin",
        "example.org/approvals",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        private,
        "key untouched"
    );
}

#[test]
fn sources_add_prints_the_token_last_and_stores_only_its_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = ledger(&[
        "sources",
        "add",
        "ci-runner",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    assert!(token.starts_with("ldg_"), "{stdout}");
    // ldg_<16 hex>_<secret>; the secret's base64url alphabet may itself contain '_'.
    let secret = &token[21..];
    assert_eq!(secret.len(), 43);
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "token secret found in {}",
            entry.display()
        );
    }
    let list = ledger(&["sources", "list", "--data-dir", dir.to_str().unwrap()]);
    assert!(
        String::from_utf8(list.stdout)
            .unwrap()
            .starts_with("ci-runner\t")
    );

    let dup = ledger(&[
        "sources",
        "add",
        "ci-runner",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(stderr(&dup).contains("already exists"));
    let bad = ledger(&[
        "sources",
        "add",
        "Bad Name",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid source name"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn conflicting_serve_flags_are_rejected_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("never-created");
    let out = ledger(&[
        "serve",
        "--data-dir",
        dir.to_str().unwrap(),
        "--key",
        "k",
        "--origin",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("conflict") && err.contains("hint:"), "{err}");
    assert!(!dir.exists(), "nothing done");
    let usage = ledger(&["serve", "--listen", "not-an-address"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn sources_add_while_serving_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, keys) = data_dir_and_key(tmp.path());
    let _server = crate::common::Process::spawn(&dir, &keys.join("ledger.key"));
    let out = ledger(&[
        "sources",
        "add",
        "late",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("in use") && err.contains("hint: stop `ledger serve`"),
        "{err}"
    );
}

#[test]
fn credentials_are_managed_on_a_running_server_and_tokens_are_never_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, keys) = data_dir_and_key(tmp.path());
    let admin = add_credential("admins", "root", &dir);
    let server = crate::common::Process::spawn(&dir, &keys.join("ledger.key"));
    let live = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &server.base, "--token", &admin]);
        ledger(&all)
    };
    let out = live(&["sources", "add", "edge"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("ldg_"), "{stdout}");
    let client = reqwest::blocking::Client::new();
    let post = |t: &str| {
        client
            .post(format!("{}/v1/events", server.base))
            .bearer_auth(t)
            .json(&crate::common::event(1))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post(&token), 200);
    let list = live(&["sources", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("edge\ttoken id"));
    let revoke = live(&["sources", "revoke", "edge"]);
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    assert_eq!(post(&token), 401, "revoked on the next request");
    // A wrong admin token is refused with the server's reason, and exit code 2.
    let out = ledger(&[
        "sources",
        "list",
        "--server",
        &server.base,
        "--token",
        &token,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    // Secrets never reach the log (token ids do, for the audit trail).
    let log = server.log();
    for secret in [&token[21..], &admin[21..]] {
        assert!(!log.contains(secret), "a token secret was logged");
    }
    assert!(
        log.contains(&token[4..20]),
        "issuing and revoking are logged by token id"
    );
}

#[test]
fn keys_rotate_from_the_command_line_then_fsck_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, keys) = data_dir_and_key(tmp.path());
    {
        let server = crate::common::Process::spawn(&dir, &keys.join("ledger.key"));
        let status = reqwest::blocking::Client::new()
            .get(format!("{}/readyz", server.base))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let new = tmp.path().join("new");
    let out = ledger(&[
        "keygen",
        "--origin",
        "t.example/log",
        "--out",
        new.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (d, old_key, new_key) = (
        dir.to_str().unwrap(),
        keys.join("ledger.key"),
        new.join("ledger.key"),
    );
    let no_new = ledger(&[
        "keys",
        "rotate",
        "--data-dir",
        d,
        "--key",
        old_key.to_str().unwrap(),
    ]);
    assert_eq!(no_new.status.code(), Some(2), "--key needs --new-key");
    let bad_grace = ledger(&[
        "keys",
        "rotate",
        "--data-dir",
        d,
        "--key",
        old_key.to_str().unwrap(),
        "--new-key",
        new_key.to_str().unwrap(),
        "--grace",
        "soon",
    ]);
    assert_eq!(bad_grace.status.code(), Some(2));
    let out = ledger(&[
        "keys",
        "rotate",
        "--data-dir",
        d,
        "--key",
        old_key.to_str().unwrap(),
        "--new-key",
        new_key.to_str().unwrap(),
        "--grace",
        "1h",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let new_pub = std::fs::read_to_string(new.join("ledger.pub")).unwrap();
    assert_eq!(stdout.lines().last().unwrap(), new_pub.trim(), "{stdout}");
    assert!(stdout.contains("--cosign-key"), "{stdout}");
    let list = ledger(&["keys", "list", "--data-dir", d]);
    let history: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(history["keys"].as_array().map(Vec::len), Some(2));
    let fsck = ledger(&["fsck", "--data-dir", d]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn sigterm_stops_gracefully_and_keeps_every_answered_event() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, keys) = data_dir_and_key(tmp.path());
    let token = add_credential("sources", "gw", &dir);
    let mut server = crate::common::Process::spawn(&dir, &keys.join("ledger.key"));
    let client = reqwest::blocking::Client::new();
    let r = client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&token)
        .json(&crate::common::event(1))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let server = crate::common::Process::spawn(&dir, &keys.join("ledger.key"));
    let ready: serde_json::Value = client
        .get(format!("{}/readyz", server.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["tree_size"], 1);
}

#[test]
fn export_and_verify_from_the_command_line_with_fixed_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, keys) = data_dir_and_key(tmp.path());
    let d = dir.to_str().unwrap();
    let token = add_credential("sources", "gw", &dir);
    let auditor = add_credential("auditors", "big-four", &dir);
    assert!(auditor.starts_with("ldg_"));
    let server = crate::common::Process::spawn(&dir, &keys.join("ledger.key"));
    let client = reqwest::blocking::Client::new();
    let events: Vec<_> = (0..20).map(crate::common::event).collect();
    let r = client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&token)
        .json(&events)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // Export beside the running server, signed with its key.
    let bundle = tmp.path().join("bundle");
    let key = keys.join("ledger.key");
    let b = bundle.to_str().unwrap();
    let k = key.to_str().unwrap();
    let export_all = || {
        ledger(&[
            "export",
            "--framework",
            "soc2",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--out",
            b,
            "--data-dir",
            d,
            "--key",
            k,
        ])
    };
    let out = export_all();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("20 rows"));
    let again = export_all();
    assert_eq!(again.status.code(), Some(2), "never overwrites");
    let bad_time = ledger(&[
        "export",
        "--framework",
        "soc2",
        "--from",
        "yesterday",
        "--to",
        "2100-01-01",
        "--out",
        "x",
    ]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(stderr(&bad_time).contains("hint:"));

    let pubkey = keys.join("ledger.pub");
    // The same over HTTP, as an auditor without disk access.
    let remote = tmp.path().join("remote");
    let out = ledger(&[
        "export",
        "--framework",
        "fedramp",
        "--from",
        "2000-01-01",
        "--to",
        "2100-01-01",
        "--out",
        remote.to_str().unwrap(),
        "--server",
        &server.base,
        "--token",
        &auditor,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ok = ledger(&[
        "verify",
        remote.to_str().unwrap(),
        "--key-file",
        pubkey.to_str().unwrap(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let denied = ledger(&[
        "export",
        "--framework",
        "soc2",
        "--from",
        "2000-01-01",
        "--to",
        "2100-01-01",
        "--out",
        tmp.path().join("nope").to_str().unwrap(),
        "--server",
        &server.base,
        "--token",
        &token,
    ]);
    assert_eq!(denied.status.code(), Some(2));
    assert!(stderr(&denied).contains("403"), "{}", stderr(&denied));
    assert!(!tmp.path().join("nope").exists(), "no half-written bundle");

    let ok = ledger(&["verify", b, "--key-file", pubkey.to_str().unwrap()]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let lines = String::from_utf8(ok.stdout).unwrap();
    assert!(
        lines.lines().filter(|l| l.starts_with("PASS ")).count() >= 13,
        "{lines}"
    );
    let json = ledger(&[
        "verify",
        b,
        "--key-file",
        pubkey.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);

    // A changed summary: exit 1 and the failing checks named.
    let summary = bundle.join("summary.json");
    let text =
        std::fs::read_to_string(&summary)
            .unwrap()
            .replacen("\"rows\": 20", "\"rows\": 19", 1);
    std::fs::write(&summary, text).unwrap();
    let bad = ledger(&["verify", b, "--key-file", pubkey.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8(bad.stdout).unwrap();
    assert!(
        out.contains("FAIL summary recomputed") && out.contains("FAIL file hashes"),
        "{out}"
    );

    let no_key = ledger(&["verify", b]);
    assert_eq!(no_key.status.code(), Some(2));
    assert!(
        stderr(&no_key).contains("never trusted"),
        "{}",
        stderr(&no_key)
    );
    let private = ledger(&["verify", b, "--key-file", key.to_str().unwrap()]);
    assert_eq!(private.status.code(), Some(2));
    assert!(
        stderr(&private).contains("did you pass the private key"),
        "{}",
        stderr(&private)
    );
}
