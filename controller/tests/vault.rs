//! The remote store against a real OpenBao dev server: push/list/pull round
//! trips with file modes, check-and-set conflicts, pull conflicts, wrong
//! token, server down, failover to the next URL, and TLS with and without
//! the CA. `login`, `logout` and what store data may do are in
//! `vault_login.rs`. Every controller run is checked for leaked values and
//! tokens.

mod vault_common;

use std::collections::BTreeMap;

use common::secret_value::values_from;
use common::Secret;
use controller::vault::local;
use serde_json::{json, Value};

use vault_common::*;

/// Alice's machine on `server`, holding `secrets` locally.
fn alice_with(server: &DevServer, secrets: &[Secret]) -> Home {
    let home = home_for(server, "alice");
    for secret in secrets {
        local::save(home.path(), secret).unwrap();
    }
    home
}

#[test]
fn push_list_pull_round_trip_with_modes_and_metadata() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let a = home_for(&server, "alice");
    local::save(
        a.path(),
        &file_secret("tool", "~/.config/tool/creds.json", V_AWS),
    )
    .unwrap();
    local::save(a.path(), &env_secret("api", V_API)).unwrap();

    let run = a.ok(&["vault", "push", "tool", "api"]);
    assert!(run.stdout.contains("pushed"), "{run:?}");
    assert_remote(&server.url, "alice", "tool", json!({"token": V_AWS}));
    // Metadata holds provider, path and env var names, never values.
    let meta = root(&server, "GET", "secret/metadata/rh/alice/api", None, 200);
    let custom = &meta["data"]["custom_metadata"];
    assert_eq!(custom["provider"], "myapi");
    assert!(custom["env_vars"].as_str().unwrap().contains("MYAPI_KEY"));
    assert!(!meta.to_string().contains(V_API));
    // Pushing again changes nothing.
    let run = a.ok(&["vault", "push", "tool", "api"]);
    assert_eq!(run.stdout.matches("unchanged").count(), 2, "{run:?}");

    let run = a.ok(&["vault", "list", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = test_support::names(&doc["secrets"]);
    assert_eq!(names, vec!["api", "tool"]);
    assert_eq!(doc["secrets"][0]["known_version"], 1);

    // A second machine of the same user pulls them (its owner allows the
    // generic secret's place: it is no provider's).
    let b = home_for(&server, "alice");
    allow_paths(&b, &["~/.config/tool"]);
    allow_vars(&b, &["MYAPI_KEY"]);
    let run = b.ok(&["vault", "pull", "tool", "api"]);
    assert_eq!(run.stdout.matches("pulled").count(), 2, "{run:?}");
    assert!(saved(&b, "tool").unwrap() == saved(&a, "tool").unwrap());
    assert!(saved(&b, "api").unwrap() == saved(&a, "api").unwrap());
    assert_eq!(mode(&secret_file(&b, "tool")), 0o600);
    assert_eq!(mode(&b.file(".rh/vault-state.json")), 0o600);
    // Another user's prefix is separate.
    let c = home_for(&server, "carol");
    let run = c.ok(&["vault", "list", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["secrets"], json!([]));
}

#[test]
fn push_reports_a_concurrent_change_and_does_not_overwrite_it() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let a = alice_with(&server, &[env_secret("api", V_API)]);
    a.ok(&["vault", "push", "api"]);

    // Someone else writes version 2 behind our back.
    root_put(
        &server,
        "secret/data/rh/alice/api",
        json!({"api_key": V_OTHER}),
    );
    local::save(a.path(), &env_secret("api", V_LOCAL2)).unwrap();

    let run = a.run(&["vault", "push", "api"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("changed remotely since version 1"),
        "{run:?}"
    );
    assert_remote(&server.url, "alice", "api", json!({"api_key": V_OTHER}));
    // A push from a machine that never pulled it is refused too.
    let b = home_for(&server, "alice");
    local::save(b.path(), &env_secret("api", V_LOCAL2)).unwrap();
    let run = b.run(&["vault", "push", "api"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("never pulled here"), "{run:?}");

    // --overwrite replaces it.
    let run = a.ok(&["vault", "push", "api", "--overwrite"]);
    assert!(run.stdout.contains("pushed"), "{run:?}");
    assert_remote(&server.url, "alice", "api", json!({"api_key": V_LOCAL2}));
}

#[test]
fn server_side_check_and_set_rejects_a_stale_version() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let a = home_for(&server, "alice");
    let env = |k: &str| match k {
        "VAULT_ADDR" => Some(server.url.clone()),
        "VAULT_TOKEN" => Some(ROOT_TOKEN.to_owned()),
        "USER" => Some("alice".to_owned()),
        _ => None,
    };
    let config = controller::vault::VaultConfig::resolve(a.path(), &env, &[], None).unwrap();
    let client = controller::vault::VaultClient::new(&config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = env_secret("api", V_API);
    let meta = controller::vault::meta_of(&secret);
    let v1 = rt
        .block_on(client.write("api", &secret.values, &meta, 0))
        .unwrap();
    assert_eq!(v1, 1);
    // cas=0 on an existing name, and a stale cas, are both refused.
    for stale in [0, 7] {
        let err = rt
            .block_on(client.write("api", &values_from([("api_key", V_OTHER)]), &meta, stale))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("api changed remotely since version"),
            "{text}"
        );
        assert!(text.contains("now version 1"), "{text}");
        assert!(!text.contains(V_OTHER));
    }
    assert_remote(&server.url, "alice", "api", json!({"api_key": V_API}));
    assert!(!format!("{client:?} {config:?}").contains(ROOT_TOKEN));
}

#[test]
fn pull_reports_a_differing_local_copy_and_a_failed_pull_writes_nothing() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let a = alice_with(
        &server,
        &[
            env_secret("api", V_API),
            file_secret("tool", "~/t.json", V_AWS),
        ],
    );
    a.ok(&["vault", "push", "api", "tool"]);

    let b = home_for(&server, "alice");
    allow_paths(&b, &["~/t.json"]);
    allow_vars(&b, &["MYAPI_KEY"]);
    local::save(b.path(), &env_secret("api", V_LOCAL2)).unwrap();
    let before = std::fs::read(secret_file(&b, "api")).unwrap();
    let run = b.run(&["vault", "pull", "api", "tool"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("conflict"), "{run:?}");
    assert!(run.stdout.contains("local copy differs"), "{run:?}");
    assert_eq!(std::fs::read(secret_file(&b, "api")).unwrap(), before);
    // The other name was pulled.
    assert!(saved(&b, "tool").is_some());

    // A name missing remotely fails the whole pull: nothing written.
    let c = home_for(&server, "alice");
    let run = c.run(&["vault", "pull", "tool", "missing"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("missing is not in the remote store");
    assert!(!c.file(".rh/secrets").exists() || saved(&c, "tool").is_none());

    // --overwrite takes the remote copy.
    b.ok(&["vault", "pull", "api", "--overwrite"]);
    assert!(saved(&b, "api").unwrap() == saved(&a, "api").unwrap());
    assert_eq!(mode(&secret_file(&b, "api")), 0o600);
}

#[test]
fn wrong_token_unknown_mount_and_server_down_are_clear_errors() {
    let Some(mut server) = DevServer::start() else {
        return;
    };
    let mut a = alice_with(&server, &[env_secret("api", V_API)]);

    a.set_env("VAULT_TOKEN", "wrong-token-abc123");
    a.forbidden.push("wrong-token-abc123".into());
    for args in [
        &["vault", "list"][..],
        &["vault", "push", "api"],
        &["vault", "pull", "api"],
    ] {
        let run = a.run(args);
        assert_eq!(run.code, 1, "{run:?}");
        run.stderr_has(&format!("token rejected by {}", server.url));
    }
    // login with a wrong token saves nothing.
    let run = a.run(&["login", "--url", &server.url]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("token rejected");
    assert!(!a.file(".rh/config").exists());
    assert!(!a.file(".rh/vault-token").exists());

    // Unknown mount.
    a.set_env("VAULT_TOKEN", ROOT_TOKEN);
    std::fs::create_dir_all(a.file(".rh")).unwrap();
    std::fs::write(
        a.file(".rh/config"),
        r#"{"vault": {"mount": "nosuchmount"}}"#,
    )
    .unwrap();
    let run = a.run(&["vault", "push", "api"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("no KV v2 secrets engine is mounted at nosuchmount/");
    std::fs::remove_file(a.file(".rh/config")).unwrap();

    // Server down: a quick, clear error naming the URL.
    let url = server.url.clone();
    server.stop();
    let started = std::time::Instant::now();
    let run = a.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("no server of the remote store");
    run.stderr_has(&url);
    run.stderr_has("cannot connect");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Nothing configured at all.
    let b = Home::new("bob");
    let run = b.run(&["vault", "list"]);
    assert_eq!(run.code, 1);
    run.stderr_has("no remote store configured");
}

#[test]
fn the_next_url_is_used_when_the_first_is_dead() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let mut a = home_for(&server, "alice");
    a.set_env("VAULT_ADDR", &format!("{},{}", dead_url(), server.url));
    local::save(a.path(), &env_secret("api", V_API)).unwrap();
    a.ok(&["vault", "push", "api"]);
    assert_remote(&server.url, "alice", "api", json!({"api_key": V_API}));
    let b = {
        let mut b = home_for(&server, "alice");
        b.set_env("VAULT_ADDR", &format!("{},{}", dead_url(), server.url));
        allow_vars(&b, &["MYAPI_KEY"]);
        b
    };
    b.ok(&["vault", "pull", "api"]);
    assert!(saved(&b, "api").is_some());
    // login with a dead URL first: saved with both, reported per server.
    let mut c = home_for(&server, "alice");
    c.env.retain(|(k, _)| k != "VAULT_ADDR");
    allow_vars(&c, &["MYAPI_KEY"]);
    let dead = dead_url();
    let run = c.ok(&["login", "--url", &dead, "--url", &server.url]);
    assert!(run.stdout.contains("unreachable"), "{run:?}");
    assert!(run.stdout.contains("active"), "{run:?}");
    c.env.retain(|(k, _)| k != "VAULT_TOKEN");
    c.ok(&["vault", "pull", "api"]);
}

#[test]
fn tls_with_the_ca_works_and_without_it_fails_naming_url_and_ca() {
    let Some(bao) = vault_common::bao_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = vault_common::free_port();
    let child = std::process::Command::new(bao)
        .args([
            "server",
            "-dev",
            "-dev-tls",
            &format!("-dev-tls-cert-dir={}", dir.path().display()),
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            "-dev-no-store-token",
        ])
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _guard = test_support::KillOnDrop(child);
    let ca = dir.path().join("vault-ca.pem");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ca.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        ca.exists(),
        "bao -dev-tls wrote no CA in {}",
        dir.path().display()
    );

    let url = format!("https://127.0.0.1:{port}");
    let mut a = Home::new("alice");
    a.set_env("VAULT_ADDR", &url);
    a.set_env("VAULT_TOKEN", ROOT_TOKEN);
    a.set_env("VAULT_CACERT", &ca.display().to_string());
    let mut ok = false;
    for _ in 0..100 {
        if a.run(&["vault", "list"]).code == 0 {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(ok, "{:?}", a.run(&["vault", "list"]));
    // Without the CA: a TLS error naming the URL and saying no CA file is set.
    a.env.retain(|(k, _)| k != "VAULT_CACERT");
    let run = a.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has(&format!("TLS handshake with {url} failed"));
    run.stderr_has("no CA file");
    // A CA file that is not a certificate is named.
    let bogus = a.file("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    a.set_env("VAULT_CACERT", &bogus.display().to_string());
    let run = a.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has(&format!("cannot use CA certificate {}", bogus.display()));
}

#[test]
fn a_saved_reference_is_pushed_and_uploaded_with_its_values() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let mut a = home_for(&server, "alice");
    // Saved without values: they live in MYAPI_KEY / MYAPI_KEY2, as for
    // `secret create --provider` without values.
    for (name, var) in [("ref", "MYAPI_KEY"), ("ref2", "MYAPI_KEY2")] {
        let mut reference = env_secret(name, "unused");
        reference.values = Default::default();
        reference.env_vars = Some(BTreeMap::from([("api_key".to_string(), var.to_string())]));
        local::save(a.path(), &reference).unwrap();
    }
    a.set_env("MYAPI_KEY", V_API);
    a.set_env("MYAPI_KEY2", V_LOCAL2);
    let run = a.ok(&["vault", "push", "ref"]);
    assert!(run.stdout.contains("pushed"), "{run:?}");
    assert_remote(&server.url, "alice", "ref", json!({"api_key": V_API}));
    a.ok(&["login", "--upload"]);
    assert_remote(&server.url, "alice", "ref2", json!({"api_key": V_LOCAL2}));
}
