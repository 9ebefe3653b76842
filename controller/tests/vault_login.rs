//! `login --upload/--download` and `logout` against a real OpenBao dev
//! server: provider files written merged and private, detected provider
//! secrets round-tripped, and what store data may do on download (no file
//! outside the providers' locations, only allowed vars). Every controller
//! run is checked for leaked values and tokens.

mod vault_common;

use controller::vault::local;
use serde_json::{json, Value};

use vault_common::*;

/// Alice's machine A: `VAULT_TOKEN` without `VAULT_ADDR`, a `tool` file
/// secret and an `api` env secret saved.
fn uploader(server: &DevServer) -> Home {
    let mut a = home_for(server, "alice");
    a.env.retain(|(k, _)| k != "VAULT_ADDR");
    let tool = file_secret("tool", "~/.config/tool/creds.json", V_AWS);
    local::save(a.path(), &tool).unwrap();
    local::save(a.path(), &env_secret("api", V_API)).unwrap();
    a
}

#[test]
fn login_upload_then_download_writes_files_merged_and_private() {
    let Some(server) = DevServer::start() else {
        return;
    };
    // Machine A: saved secrets, login --upload with VAULT_TOKEN.
    let mut a = uploader(&server);
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

/// Put a secret into the store the way anyone with write access to the
/// prefix could: values, then `custom_metadata` of their choosing.
fn plant(server: &DevServer, name: &str, values: Value, meta: Value) {
    root_put(server, &format!("secret/data/rh/alice/{name}"), values);
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
    let refused = [
        (
            "evil-ssh",
            json!({"private_key": ATTACKER_KEY, "public_key": ATTACKER_KEY}),
            json!({"provider": "ssh", "path": "~/.ssh/authorized_keys"}),
        ),
        (
            "evil-rc",
            json!({"token": V_OTHER}),
            json!({"provider": "mytool", "path": "~/.bashrc"}),
        ),
        (
            "evil-generic",
            json!({"token": V_OTHER}),
            json!({"provider": "mytool", "path": "~/notes/creds.json"}),
        ),
        (
            "evil-var",
            json!({"api_key": V_OTHER}),
            json!({"provider": "myapi", "env_vars": "{\"api_key\": \"LD_PRELOAD=x\"}"}),
        ),
        (
            "evil-aws",
            json!({"access_key": "AKIAX", "secret_key": V_OTHER}),
            json!({"provider": "aws", "path": "~/.rh/agent/token"}),
        ),
    ];
    for (name, values, meta) in &refused {
        plant(&server, name, values.clone(), meta.clone());
    }
    plant(
        &server,
        "good-aws",
        json!({"access_key": "AKIAGOOD", "secret_key": V_AWS}),
        json!({"provider": "aws"}),
    );
    let refused = refused.map(|(name, _, _)| name);
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
    run.stderr_has("~/.bashrc");
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
    let mut a = uploader(&server);
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
    run.stderr_has("nothing deleted");
    assert!(creds.exists());
    assert!(saved(&a, "tool").is_some() && saved(&a, "api").is_some());
    assert!(a.file(".rh/config").exists() && a.file(".rh/vault-token").exists());

    let run = a.ok(&["logout", "--yes"]);
    run.stderr_has("Delete credentials in [~/.config/tool/creds.json] for tool?");
    assert!(run.stdout.contains("MYAPI_KEY"), "{run:?}");
    // Only the secret's key left the shared file.
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    assert_eq!(file, json!({"other": "keep-me"}));
    assert!(saved(&a, "tool").is_none() && saved(&a, "api").is_none());
    assert!(!a.file(".rh/config").exists());
    assert!(!a.file(".rh/vault-token").exists());
    assert!(!a.file(".rh/vault-state.json").exists());
    // The remote copies are untouched.
    assert_remote(&server.url, "alice", "tool", json!({"token": V_AWS}));
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
    // A machine of alice's with no VAULT_ADDR (login names the URL) and
    // `credentials` as its ~/.aws/credentials.
    let machine = |credentials: &str| {
        let mut home = home_for(&server, "alice");
        home.env.retain(|(k, _)| k != "VAULT_ADDR");
        home.forbidden
            .extend([AWS_KEY.to_string(), OPENAI.to_string()]);
        std::fs::create_dir_all(home.file(".aws")).unwrap();
        std::fs::write(home.file(".aws/credentials"), credentials).unwrap();
        home
    };
    let mut a = machine(&format!(
        "[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_KEY}\n"
    ));
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
    let b = machine("[work]\naws_access_key_id = AKIAOTHER\n");
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
    run.stderr_has("Delete credentials in [~/.aws/credentials] for aws? [y/N]");
    assert!(run.stdout.contains("OPENAI_API_KEY"), "{run:?}");
    assert!(!a.file(".aws/credentials").exists());
    assert!(!a.file(".rh/config").exists());
}
