//! The remote store against a real OpenBao dev server: push/list/pull round
//! trips with file modes, check-and-set conflicts, pull conflicts, wrong
//! token, server down, failover to the next URL, TLS with and without the
//! CA, login --upload/--download writing provider files, and logout.
//! Every controller run is checked for leaked values and tokens.

mod vault_common;

use std::collections::BTreeMap;

use common::secret_value::values_from;
use common::Secret;
use controller::vault::local;
use serde_json::{json, Value};
use vault_common::{dead_url, mode, raw, remote_values, DevServer, Home, ROOT_TOKEN};

const V_AWS: &str = "sv-aws-secret-7d1f0a";
const V_API: &str = "sv-api-secret-93be2c";
const V_OTHER: &str = "sv-raw-write-55aa01";
const V_LOCAL2: &str = "sv-local-two-c0ffee";

/// A saved generic secret with a JSON file at `path`.
fn file_secret(name: &str, path: &str, value: &str) -> Secret {
    let mut s = Secret::base(name, values_from([("token", value)]));
    s.provider = Some("mytool".into());
    s.path = Some(path.into());
    s
}

/// A saved env-only secret (provider without a file, one env var).
fn env_secret(name: &str, value: &str) -> Secret {
    let mut s = Secret::base(name, values_from([("api_key", value)]));
    s.provider = Some("myapi".into());
    s.env_vars = Some(BTreeMap::from([(
        "api_key".to_string(),
        "MYAPI_KEY".to_string(),
    )]));
    s
}

/// A home logged in to `server` through VAULT_ADDR/VAULT_TOKEN.
fn home_for(server: &DevServer, user: &str) -> Home {
    let mut home = Home::new(user);
    home.set_env("VAULT_ADDR", &server.url);
    home.set_env("VAULT_TOKEN", ROOT_TOKEN);
    for v in [V_AWS, V_API, V_OTHER, V_LOCAL2] {
        home.forbidden.push(v.into());
    }
    home
}

fn saved(home: &Home, name: &str) -> Option<Secret> {
    local::load(home.path(), name).unwrap()
}

fn secret_file(home: &Home, name: &str) -> std::path::PathBuf {
    home.file(&format!(".rh/secrets/{name}.json"))
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
    assert_eq!(
        remote_values(&server.url, "alice", "tool"),
        Some(json!({"token": V_AWS}))
    );
    // Metadata holds provider, path and env var names, never values.
    let (status, meta) = raw(
        &server.url,
        ROOT_TOKEN,
        "GET",
        "secret/metadata/rh/alice/api",
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let custom = &meta["data"]["custom_metadata"];
    assert_eq!(custom["provider"], "myapi");
    assert!(custom["env_vars"].as_str().unwrap().contains("MYAPI_KEY"));
    assert!(!meta.to_string().contains(V_API));
    // Pushing again changes nothing.
    let run = a.ok(&["vault", "push", "tool", "api"]);
    assert_eq!(run.stdout.matches("unchanged").count(), 2, "{run:?}");

    let run = a.ok(&["vault", "list", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = doc["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
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
    let a = home_for(&server, "alice");
    local::save(a.path(), &env_secret("api", V_API)).unwrap();
    a.ok(&["vault", "push", "api"]);

    // Someone else writes version 2 behind our back.
    let (status, _) = raw(
        &server.url,
        ROOT_TOKEN,
        "POST",
        "secret/data/rh/alice/api",
        Some(json!({"data": {"api_key": V_OTHER}})),
    )
    .unwrap();
    assert_eq!(status, 200);
    local::save(a.path(), &env_secret("api", V_LOCAL2)).unwrap();

    let run = a.run(&["vault", "push", "api"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("changed remotely since version 1"),
        "{run:?}"
    );
    assert_eq!(
        remote_values(&server.url, "alice", "api"),
        Some(json!({"api_key": V_OTHER}))
    );
    // A push from a machine that never pulled it is refused too.
    let b = home_for(&server, "alice");
    local::save(b.path(), &env_secret("api", V_LOCAL2)).unwrap();
    let run = b.run(&["vault", "push", "api"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("never pulled here"), "{run:?}");

    // --overwrite replaces it.
    let run = a.ok(&["vault", "push", "api", "--overwrite"]);
    assert!(run.stdout.contains("pushed"), "{run:?}");
    assert_eq!(
        remote_values(&server.url, "alice", "api"),
        Some(json!({"api_key": V_LOCAL2}))
    );
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
    assert_eq!(
        remote_values(&server.url, "alice", "api"),
        Some(json!({"api_key": V_API}))
    );
    assert!(!format!("{client:?} {config:?}").contains(ROOT_TOKEN));
}

#[test]
fn pull_reports_a_differing_local_copy_and_a_failed_pull_writes_nothing() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let a = home_for(&server, "alice");
    local::save(a.path(), &env_secret("api", V_API)).unwrap();
    local::save(a.path(), &file_secret("tool", "~/t.json", V_AWS)).unwrap();
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
    assert!(
        run.stderr.contains("missing is not in the remote store"),
        "{run:?}"
    );
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
    let mut a = home_for(&server, "alice");
    local::save(a.path(), &env_secret("api", V_API)).unwrap();

    a.set_env("VAULT_TOKEN", "wrong-token-abc123");
    a.forbidden.push("wrong-token-abc123".into());
    for args in [
        &["vault", "list"][..],
        &["vault", "push", "api"],
        &["vault", "pull", "api"],
    ] {
        let run = a.run(args);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stderr
                .contains(&format!("token rejected by {}", server.url)),
            "{run:?}"
        );
    }
    // login with a wrong token saves nothing.
    let run = a.run(&["login", "--url", &server.url]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("token rejected"), "{run:?}");
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
    assert!(
        run.stderr
            .contains("no KV v2 secrets engine is mounted at nosuchmount/"),
        "{run:?}"
    );
    std::fs::remove_file(a.file(".rh/config")).unwrap();

    // Server down: a quick, clear error naming the URL.
    let url = server.url.clone();
    server.stop();
    let started = std::time::Instant::now();
    let run = a.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no server of the remote store"),
        "{run:?}"
    );
    assert!(run.stderr.contains(&url), "{run:?}");
    assert!(run.stderr.contains("cannot connect"), "{run:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Nothing configured at all.
    let b = Home::new("bob");
    let run = b.run(&["vault", "list"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no remote store configured"), "{run:?}");
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
    assert_eq!(
        remote_values(&server.url, "alice", "api"),
        Some(json!({"api_key": V_API}))
    );
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
fn login_upload_then_download_writes_files_merged_and_private() {
    let Some(server) = DevServer::start() else {
        return;
    };
    // Machine A: saved secrets, login --upload with VAULT_TOKEN.
    let mut a = home_for(&server, "alice");
    a.env.retain(|(k, _)| k != "VAULT_ADDR");
    local::save(
        a.path(),
        &file_secret("tool", "~/.config/tool/creds.json", V_AWS),
    )
    .unwrap();
    local::save(a.path(), &env_secret("api", V_API)).unwrap();
    let run = a.ok(&["login", "--url", &server.url, "--upload"]);
    assert_eq!(run.stdout.matches("pushed").count(), 2, "{run:?}");
    assert_eq!(mode(&a.file(".rh/vault-token")), 0o600);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(a.file(".rh/config")).unwrap()).unwrap();
    assert_eq!(config["vault"]["urls"], json!([server.url]));
    assert_eq!(config["vault"]["mount"], "secret");
    assert_eq!(config["vault"]["prefix"], "rh/alice");
    assert!(!std::fs::read_to_string(a.file(".rh/config"))
        .unwrap()
        .contains(ROOT_TOKEN));
    // The saved token works without VAULT_TOKEN.
    a.env.retain(|(k, _)| k != "VAULT_TOKEN");
    a.ok(&["vault", "list"]);

    // Machine B: an existing file with other content; download merges
    // (the owner allows the generic secret's place: it is no provider's).
    let mut b = home_for(&server, "alice");
    b.env.retain(|(k, _)| k != "VAULT_ADDR");
    allow_paths(&b, &["~/.config/tool"]);
    allow_vars(&b, &["MYAPI_KEY"]);
    let creds = b.file(".config/tool/creds.json");
    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(&creds, r#"{"other": "keep-me"}"#).unwrap();
    let run = b.ok(&["login", "--url", &server.url, "--download", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["download"].as_array().unwrap().len(), 2, "{doc}");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    assert_eq!(file, json!({"other": "keep-me", "token": V_AWS}));
    assert_eq!(mode(&creds), 0o600);
    assert_eq!(mode(&secret_file(&b, "api")), 0o600);

    // Machine C: the file holds another value: conflict reported, file kept.
    let mut c = home_for(&server, "alice");
    c.env.retain(|(k, _)| k != "VAULT_ADDR");
    allow_paths(&c, &["~/.config/tool"]);
    let creds = c.file(".config/tool/creds.json");
    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(&creds, format!(r#"{{"token": "{V_LOCAL2}"}}"#)).unwrap();
    let before = std::fs::read(&creds).unwrap();
    let run = c.run(&["login", "--url", &server.url, "--download"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("conflict"), "{run:?}");
    assert_eq!(std::fs::read(&creds).unwrap(), before);
}

/// Set the top-level `key` of `~/.rh/config` to `items` (other keys kept).
fn set_config_list(home: &Home, key: &str, items: &[&str]) {
    std::fs::create_dir_all(home.file(".rh")).unwrap();
    let mut doc: Value = std::fs::read_to_string(home.file(".rh/config"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_else(|_| json!({}));
    doc[key] = json!(items);
    std::fs::write(home.file(".rh/config"), doc.to_string()).unwrap();
}

/// Set `allow_paths` in `~/.rh/config` (other keys kept).
fn allow_paths(home: &Home, paths: &[&str]) {
    set_config_list(home, "allow_paths", paths);
}

/// Set `allow_vars` in `~/.rh/config`: the vars secrets pulled from the
/// store may set besides their provider's own (`env_secret`'s `MYAPI_KEY`
/// is no provider's).
fn allow_vars(home: &Home, vars: &[&str]) {
    set_config_list(home, "allow_vars", vars);
}

/// Put a secret into the store the way anyone with write access to the
/// prefix could: values, then `custom_metadata` of their choosing.
fn plant(server: &DevServer, name: &str, values: Value, meta: Value) {
    let (status, body) = raw(
        &server.url,
        ROOT_TOKEN,
        "POST",
        &format!("secret/data/rh/alice/{name}"),
        Some(json!({ "data": values })),
    )
    .unwrap();
    assert_eq!(status, 200, "planting {name}: {body}");
    let (status, _) = raw(
        &server.url,
        ROOT_TOKEN,
        "POST",
        &format!("secret/metadata/rh/alice/{name}"),
        Some(json!({ "custom_metadata": meta })),
    )
    .unwrap();
    assert!(status == 204 || status == 200, "{status}");
}

#[test]
fn store_metadata_cannot_place_files_outside_the_providers_locations() {
    let Some(server) = DevServer::start() else {
        return;
    };
    const ATTACKER_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIattacker evil@x";
    plant(
        &server,
        "evil-ssh",
        json!({"private_key": ATTACKER_KEY, "public_key": ATTACKER_KEY}),
        json!({"provider": "ssh", "path": "~/.ssh/authorized_keys"}),
    );
    plant(
        &server,
        "evil-rc",
        json!({"token": V_OTHER}),
        json!({"provider": "mytool", "path": "~/.bashrc"}),
    );
    plant(
        &server,
        "evil-generic",
        json!({"token": V_OTHER}),
        json!({"provider": "mytool", "path": "~/notes/creds.json"}),
    );
    plant(
        &server,
        "evil-var",
        json!({"api_key": V_OTHER}),
        json!({"provider": "myapi", "env_vars": "{\"api_key\": \"LD_PRELOAD=x\"}"}),
    );
    plant(
        &server,
        "evil-aws",
        json!({"access_key": "AKIAX", "secret_key": V_OTHER}),
        json!({"provider": "aws", "path": "~/.rh/agent/token"}),
    );
    plant(
        &server,
        "good-aws",
        json!({"access_key": "AKIAGOOD", "secret_key": V_AWS}),
        json!({"provider": "aws"}),
    );
    let refused = [
        "evil-ssh",
        "evil-rc",
        "evil-generic",
        "evil-var",
        "evil-aws",
    ];
    // login --download: the refused ones are reported, not saved, no file
    // written; the good one proceeds; the exit code says something failed.
    let mut home = home_for(&server, "alice");
    home.forbidden.push(ATTACKER_KEY.into());
    let run = home.run(&["login", "--url", &server.url, "--download", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    for o in doc["download"].as_array().unwrap() {
        let name = o["name"].as_str().unwrap();
        if refused.contains(&name) {
            assert_eq!(o["status"], "failed", "{o}");
            assert!(o["detail"].as_str().unwrap().contains("refused"), "{o}");
        } else {
            assert_eq!(o["status"], "pulled", "{o}");
        }
    }
    for name in refused {
        assert!(saved(&home, name).is_none(), "{name} saved");
    }
    assert!(saved(&home, "good-aws").is_some());
    assert!(home.file(".aws/credentials").exists());
    for rel in [".ssh", ".bashrc", "notes", ".rh/agent"] {
        assert!(!home.file(rel).exists(), "{rel} written");
    }
    // vault pull: the same refusal, naming the path; nothing saved.
    let run = home.run(&["vault", "pull", "evil-ssh", "evil-var"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("~/.ssh/authorized_keys"), "{run:?}");
    assert!(run.stdout.contains("LD_PRELOAD=x"), "{run:?}");
    assert!(saved(&home, "evil-ssh").is_none() && saved(&home, "evil-var").is_none());
    // The owner's allow-list opens a place for generic secrets, never a denied file.
    allow_paths(&home, &["~/notes", "~/.ssh"]);
    home.ok(&["vault", "pull", "evil-generic"]);
    let run = home.run(&["vault", "pull", "evil-ssh", "evil-rc"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(saved(&home, "evil-ssh").is_none() && saved(&home, "evil-rc").is_none());
    // A link at a provider's location that leads to a denied file is not followed.
    let linked = home_for(&server, "alice");
    std::fs::write(linked.file(".bashrc"), "# mine\n").unwrap();
    std::fs::create_dir_all(linked.file(".aws")).unwrap();
    std::os::unix::fs::symlink(linked.file(".bashrc"), linked.file(".aws/credentials")).unwrap();
    let run = linked.run(&["login", "--url", &server.url, "--download"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("~/.bashrc"), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(linked.file(".bashrc")).unwrap(),
        "# mine\n"
    );
}

/// Issue 19 items 1 and 2 on the controller: a store writer's secrets are
/// data only. Fields that name a program (a kube user's `exec`, AWS
/// `credential_process`, gcloud's `credential_source.executable`, docker's
/// `credsStore`) and vars that are neither the provider's nor the owner's
/// `allow_vars` are refused by `login --download` and `vault pull`, naming
/// the field or var; nothing of them is saved or written, and a data-only
/// kubeconfig is taken without its `current-context`.
#[test]
fn store_secrets_carry_data_only_and_set_only_allowed_vars() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let refused = [
        (
            "evil-kube",
            vault_common::kubeconfig(
                "evil",
                json!({"exec": {"command": "/bin/sh", "args": ["-c", "touch ~/pwned"]}}),
            ),
            json!({"provider": "kubernetes"}),
            "users[0].user.exec",
        ),
        (
            "evil-aws",
            json!({"access_key": "AKIAX", "secret_key": V_OTHER,
                   "credential_process": "/bin/sh -c 'touch ~/pwned'"}),
            json!({"provider": "aws"}),
            "credential_process",
        ),
        (
            "evil-gcp",
            json!({"type": "external_account", "audience": "a",
                   "credential_source": {"executable": {"command": "/bin/sh -c id"}}}),
            json!({"provider": "gcp"}),
            "credential_source.executable",
        ),
        (
            "evil-docker",
            json!({"username": "u", "password": V_OTHER, "server": "r.io", "credsStore": "pwn"}),
            json!({"provider": "docker"}),
            "credsStore",
        ),
        (
            "evil-askpass",
            json!({"k": "/tmp/askpass"}),
            json!({"provider": "myapi", "env_vars": "{\"k\": \"SSH_ASKPASS\"}"}),
            "SSH_ASKPASS",
        ),
    ];
    for (name, values, meta, _) in &refused {
        plant(&server, name, values.clone(), meta.clone());
    }
    plant(
        &server,
        "good-kube",
        vault_common::kubeconfig("good", json!({"token": V_AWS})),
        json!({"provider": "kubernetes"}),
    );
    let home = home_for(&server, "alice");
    // The owner's own kubeconfig, with no current-context: a merge from the
    // store must not pick one.
    let mine = "apiVersion: v1\nkind: Config\nclusters:\n- name: mine\n  cluster:\n    server: https://mine:6443\n";
    std::fs::create_dir_all(home.file(".kube")).unwrap();
    std::fs::write(home.file(".kube/config"), mine).unwrap();
    let run = home.run(&["login", "--url", &server.url, "--download", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let outcomes = doc["download"].as_array().unwrap();
    for (name, _, _, field) in &refused {
        let o = outcomes.iter().find(|o| o["name"] == *name).unwrap();
        assert_eq!(o["status"], "failed", "{o}");
        let detail = o["detail"].as_str().unwrap();
        assert!(detail.contains("refused") && detail.contains(field), "{o}");
        assert!(saved(&home, name).is_none(), "{name} saved");
    }
    assert!(!run.stdout.contains("/bin/sh") && !run.stderr.contains("/bin/sh"));
    let good = saved(&home, "good-kube").expect("good-kube saved");
    assert!(!good.values.contains_key("current-context"));
    let text = std::fs::read_to_string(home.file(".kube/config")).unwrap();
    assert!(!text.contains("current-context"), "{text}");
    assert!(
        text.contains("https://good.example:6443") && text.contains("mine"),
        "{text}"
    );
    assert!(!text.contains("exec") && !text.contains("evil"), "{text}");
    for rel in [".aws", ".config/gcloud", "pwned"] {
        assert!(!home.file(rel).exists(), "{rel} written");
    }
    // vault pull: the same refusals; the owner's allow_vars lets the var in.
    let run = home.run(&["vault", "pull", "evil-kube", "evil-askpass"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("users[0].user.exec"), "{run:?}");
    assert!(run.stdout.contains("allow_vars"), "{run:?}");
    allow_vars(&home, &["SSH_ASKPASS"]);
    home.ok(&["vault", "pull", "evil-askpass"]);
    assert!(saved(&home, "evil-askpass").is_some());
}

#[test]
fn logout_yes_deletes_and_non_terminal_without_yes_deletes_nothing() {
    let Some(server) = DevServer::start() else {
        return;
    };
    let mut a = home_for(&server, "alice");
    a.env.retain(|(k, _)| k != "VAULT_ADDR");
    local::save(
        a.path(),
        &file_secret("tool", "~/.config/tool/creds.json", V_AWS),
    )
    .unwrap();
    local::save(a.path(), &env_secret("api", V_API)).unwrap();
    a.ok(&["login", "--url", &server.url, "--upload"]);
    let creds = a.file(".config/tool/creds.json");
    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(
        &creds,
        format!(r#"{{"token": "{V_AWS}", "other": "keep-me"}}"#),
    )
    .unwrap();
    a.set_env("MYAPI_KEY", V_API);

    // stdin is /dev/null and no --yes: nothing deleted.
    let run = a.ok(&["logout"]);
    assert!(run.stderr.contains("nothing deleted"), "{run:?}");
    assert!(creds.exists());
    assert!(saved(&a, "tool").is_some() && saved(&a, "api").is_some());
    assert!(a.file(".rh/config").exists() && a.file(".rh/vault-token").exists());

    let run = a.ok(&["logout", "--yes"]);
    assert!(
        run.stderr
            .contains("Delete credentials in [~/.config/tool/creds.json] for tool?"),
        "{run:?}"
    );
    assert!(run.stdout.contains("MYAPI_KEY"), "{run:?}");
    // Only the secret's key left the shared file.
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    assert_eq!(file, json!({"other": "keep-me"}));
    assert!(saved(&a, "tool").is_none() && saved(&a, "api").is_none());
    assert!(!a.file(".rh/config").exists());
    assert!(!a.file(".rh/vault-token").exists());
    assert!(!a.file(".rh/vault-state.json").exists());
    // The remote copies are untouched.
    assert_eq!(
        remote_values(&server.url, "alice", "tool"),
        Some(json!({"token": V_AWS}))
    );
}

#[test]
fn tls_with_the_ca_works_and_without_it_fails_naming_url_and_ca() {
    let Some(bao) = vault_common::bao_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = vault_common::free_port();
    let mut child = std::process::Command::new(bao)
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
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut child);
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
    assert!(
        run.stderr
            .contains(&format!("TLS handshake with {url} failed")),
        "{run:?}"
    );
    assert!(run.stderr.contains("no CA file"), "{run:?}");
    // A CA file that is not a certificate is named.
    let bogus = a.file("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    a.set_env("VAULT_CACERT", &bogus.display().to_string());
    let run = a.run(&["vault", "list"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot use CA certificate {}", bogus.display())),
        "{run:?}"
    );
}

#[test]
fn detected_provider_secrets_upload_download_and_logout() {
    let Some(server) = DevServer::start() else {
        return;
    };
    const AWS_ID: &str = "AKIAVAULTTEST0000001";
    const AWS_KEY: &str = "sv-aws-secret-key-e2b7";
    const OPENAI: &str = "sk-sv-openai-3c4d5e";
    // Machine A: nothing saved; aws in its file, openai in the environment.
    let mut a = home_for(&server, "alice");
    a.env.retain(|(k, _)| k != "VAULT_ADDR");
    a.forbidden
        .extend([AWS_KEY.to_string(), OPENAI.to_string()]);
    std::fs::create_dir_all(a.file(".aws")).unwrap();
    std::fs::write(
        a.file(".aws/credentials"),
        format!("[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_KEY}\n"),
    )
    .unwrap();
    a.set_env("OPENAI_API_KEY", OPENAI);
    let run = a.ok(&["login", "--url", &server.url, "--upload", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let pushed: Vec<&str> = doc["upload"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "pushed")
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(
        pushed.contains(&"aws") && pushed.contains(&"openai"),
        "{doc}"
    );

    // Machine B: another profile in ~/.aws/credentials is kept by the download.
    let mut b = home_for(&server, "alice");
    b.env.retain(|(k, _)| k != "VAULT_ADDR");
    b.forbidden
        .extend([AWS_KEY.to_string(), OPENAI.to_string()]);
    std::fs::create_dir_all(b.file(".aws")).unwrap();
    std::fs::write(
        b.file(".aws/credentials"),
        "[work]\naws_access_key_id = AKIAOTHER\n",
    )
    .unwrap();
    b.ok(&["login", "--url", &server.url, "--download"]);
    let text = std::fs::read_to_string(b.file(".aws/credentials")).unwrap();
    assert!(
        text.contains("[work]\naws_access_key_id = AKIAOTHER"),
        "{text}"
    );
    assert!(
        text.contains(AWS_KEY) && text.contains(AWS_ID),
        "aws values missing"
    );
    assert_eq!(mode(&b.file(".aws/credentials")), 0o600);
    assert_eq!(
        saved(&b, "openai").unwrap().values["api_key"].expose_str(),
        Some(OPENAI)
    );

    // Logout on A: the aws file goes, openai is named as a shell variable to unset.
    let run = a.ok(&["logout", "--yes"]);
    assert!(
        run.stderr
            .contains("Delete credentials in [~/.aws/credentials] for aws? [y/N]"),
        "{run:?}"
    );
    assert!(run.stdout.contains("OPENAI_API_KEY"), "{run:?}");
    assert!(!a.file(".aws/credentials").exists());
    assert!(!a.file(".rh/config").exists());
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
    assert_eq!(
        remote_values(&server.url, "alice", "ref"),
        Some(json!({"api_key": V_API}))
    );
    a.ok(&["login", "--upload"]);
    assert_eq!(
        remote_values(&server.url, "alice", "ref2"),
        Some(json!({"api_key": V_LOCAL2}))
    );
}
