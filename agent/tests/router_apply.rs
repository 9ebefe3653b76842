//! Router tests: `tower::ServiceExt::oneshot` against `agent::router` on a
//! temp home: what a request writes and what it refuses to. Paths outside
//! home and reserved files refused (nothing written), a write conflict
//! leaving the file, dry runs, syncs on one file in order, the env cap,
//! stale temp files removed, placed items verified then applied, and no
//! value in status or audit.

mod common;
mod router_common;

use std::path::Path;

use axum::http::StatusCode;
use serde_json::{json, Value};

use router_common::*;

#[tokio::test]
async fn paths_outside_home_are_refused_and_nothing_is_written() {
    let f = fixture().await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), f.home().join("escape")).unwrap();
    let outside_file = outside.path().join("f.json");
    let cases = [
        ("../x.json", "path_traversal"),
        ("~/../x.json", "path_traversal"),
        ("~/a/../../x.json", "path_traversal"),
        (outside_file.to_str().unwrap(), "path_outside_home"),
        ("/etc/rh-agent-test.json", "path_outside_home"),
        ("~/escape/f.json", "path_symlink_escape"),
        ("", "invalid_path"),
    ];
    for (path, code) in cases {
        let resp = f
            .post("/v1/secrets/_write_to_file", &write_body(path))
            .await;
        assert_error(&resp, StatusCode::BAD_REQUEST, code);
        // through sync too, and one bad item stops the good one
        assert_error(
            &f.post("/v1/sync", &sync_with_bad_item(path)).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!Path::new("/etc/rh-agent-test.json").exists());
    assert_eq!(f.user_files(), vec!["escape".to_string()]);
    assert!(!f.home().join(".rh/agent/installed.json").exists());
    f.state.shutdown().await;
}

#[tokio::test]
async fn placement_policy_refuses_reserved_files_with_403() {
    // a custom state dir inside home, outside ~/.rh
    let f = fixture_with(|c| c.state_dir = c.home.join("node-state")).await;
    let token_before = std::fs::read(f.home().join("node-state/token")).unwrap();
    // a link in home to a denied file does not get around the deny-list
    std::fs::write(f.home().join(".bashrc"), "# mine\n").unwrap();
    std::os::unix::fs::symlink(f.home().join(".bashrc"), f.home().join("innocent.json")).unwrap();
    let absolute_token = f.home().join("node-state/token").display().to_string();
    for path in [
        "~/.bashrc",
        "~/.zshenv",
        "~/.profile",
        "~/./.bashrc",
        "~/.ssh/authorized_keys",
        "~/.ssh/rc",
        "~/.ssh/config",
        "~/.config/systemd/user/evil.service",
        "~/.config/autostart/evil.desktop",
        "~/.rh/agent/token",
        "~/.rh/secrets/other.json",
        "~/node-state/token",
        "~/node-state/new.json",
        absolute_token.as_str(),
        "~/innocent.json",
    ] {
        let resp = f
            .post("/v1/secrets/_write_to_file", &write_body(path))
            .await;
        assert_error(&resp, StatusCode::FORBIDDEN, "path_reserved");
        f.post_refused(
            "/v1/sync",
            &sync_with_bad_item(path),
            StatusCode::FORBIDDEN,
            "path_reserved",
        )
        .await;
    }
    assert_eq!(
        std::fs::read_to_string(f.home().join(".bashrc")).unwrap(),
        "# mine\n"
    );
    assert_eq!(
        std::fs::read(f.home().join("node-state/token")).unwrap(),
        token_before
    );
    assert!(!f.home().join("node-state/new.json").exists());
    assert!(!f.home().join("good.json").exists());
    assert!(!f.home().join(".ssh").exists() && !f.home().join(".config").exists());
    f.state.shutdown().await;
}

#[tokio::test]
async fn write_to_file_conflict_is_409_and_leaves_the_file() {
    let f = fixture().await;
    std::fs::write(
        f.home().join("c.json"),
        "{\"key\": \"old\", \"other\": 1}\n",
    )
    .unwrap();
    let resp = f
        .post("/v1/secrets/_write_to_file", &write_body("~/c.json"))
        .await;
    assert_eq!(resp.0, StatusCode::CONFLICT, "{}", resp.1);
    assert!(!resp.1.contains(SECRET));
    let v: Value = serde_json::from_str(&resp.1).unwrap();
    assert_eq!(v["results"][0]["status"], "conflict");
    assert_eq!(v["results"][0]["files"][0]["conflict_keys"], json!(["key"]));
    assert_eq!(
        std::fs::read_to_string(f.home().join("c.json")).unwrap(),
        "{\"key\": \"old\", \"other\": 1}\n"
    );
    // overwrite replaces exactly that key
    let mut body: Value = serde_json::from_str(&write_body("~/c.json")).unwrap();
    body["overwrite"] = json!(true);
    let resp = f
        .post("/v1/secrets/_write_to_file", &body.to_string())
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert!(!resp.1.contains(SECRET));
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(f.home().join("c.json")).unwrap()).unwrap();
    assert_eq!(file, json!({"key": SECRET, "other": 1}));
    assert_eq!(common::mode(&f.home().join("c.json")), 0o600);
    f.state.shutdown().await;
}

#[tokio::test]
async fn dry_run_sync_changes_nothing() {
    let f = fixture().await;
    let body = json!({"dry_run": true, "items": [
        {"secret": {"name": "f", "provider": "custom", "values": {"k": SECRET}}, "path": "~/d/f.json"},
        {"secret": {"name": "openai", "provider": "openai", "values": {"api_key": SECRET}}, "env": "newenv"},
    ]})
    .to_string();
    let resp = f.post("/v1/sync", &body).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    assert!(!resp.1.contains(SECRET));
    let v: Value = serde_json::from_str(&resp.1).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["results"][0]["status"], "would_write");
    assert_eq!(v["results"][1]["status"], "would_write");
    assert_eq!(v["results"][1]["vars"], json!(["OPENAI_API_KEY"]));
    assert!(f.user_files().is_empty(), "{:?}", f.user_files());
    let state_dir = f.home().join(".rh/agent");
    assert!(!state_dir.join("installed.json").exists());
    let (_, status) = f.get("/v1/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["secrets"], json!([]));
    assert_eq!(status["envs"].as_array().unwrap().len(), 1, "{status}");

    // for real, then a dry run says unchanged
    let body = body.replace("\"dry_run\":true", "\"dry_run\":false");
    let resp = f.post("/v1/sync", &body).await;
    let v: Value = serde_json::from_str(&resp.1).unwrap();
    assert_eq!(v["results"][0]["status"], "written", "{}", resp.1);
    assert_eq!(v["results"][1]["status"], "written", "{}", resp.1);
    let before = std::fs::read(f.home().join("d/f.json")).unwrap();
    let again = body.replace("\"dry_run\":false", "\"dry_run\":true");
    let v: Value = serde_json::from_str(&f.post("/v1/sync", &again).await.1).unwrap();
    assert_eq!(v["results"][0]["status"], "unchanged");
    assert_eq!(v["results"][1]["status"], "unchanged");
    assert_eq!(std::fs::read(f.home().join("d/f.json")).unwrap(), before);
    f.state.shutdown().await;
}

#[tokio::test]
async fn status_and_audit_never_hold_values() {
    let f = fixture().await;
    let body = json!({"items": [
        {"secret": {"name": "f", "provider": "custom", "values": {"k": SECRET}}, "path": "~/f.json"},
        {"secret": {"name": "openai", "provider": "openai", "values": {"api_key": SECRET}}, "env": "base_env"},
    ]})
    .to_string();
    let resp = f.post("/v1/sync", &body).await;
    assert_eq!(resp.0, StatusCode::OK);
    let (_, status) = f.get("/v1/status").await;
    assert!(!status.contains(SECRET), "{status}");
    let v: Value = serde_json::from_str(&status).unwrap();
    let secrets = v["secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0]["name"], "f");
    assert_eq!(secrets[0]["files"][0]["path"], "~/f.json");
    assert_eq!(secrets[0]["files"][0]["keys"], json!(["k"]));
    assert_eq!(
        secrets[0]["files"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
    assert_eq!(secrets[1]["vars"][0]["var"], "OPENAI_API_KEY");
    assert_eq!(v["envs"][0]["vars"], json!(["OPENAI_API_KEY"]));
    assert_eq!(v["envs"][0]["running"], true);
    let audit = std::fs::read_to_string(f.home().join(".rh/agent/audit.log")).unwrap();
    assert!(
        audit.contains("OPENAI_API_KEY") && audit.contains("~/f.json"),
        "{audit}"
    );
    assert!(!audit.contains(SECRET), "{audit}");
    f.state.shutdown().await;
}

#[tokio::test]
async fn sync_applies_items_on_one_file_in_order_and_others_in_parallel() {
    let f = fixture().await;
    let mut items = vec![];
    for i in 0..6 {
        items.push(
            json!({"secret": {"name": format!("d{i}"), "provider": "custom",
            "values": {"k": format!("v{i}")}}, "path": format!("~/dir{i}/c.json")}),
        );
    }
    items.push(json!({"secret": {"name": "first", "provider": "custom", "values": {"k": "one"}}, "path": "~/same/x.json"}));
    items.push(json!({"secret": {"name": "second", "provider": "custom", "values": {"k": "two"}}, "path": "~/same/x.json"}));
    let body = json!({"items": items, "overwrite": true}).to_string();
    let resp = f.post("/v1/sync", &body).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    let v: Value = serde_json::from_str(&resp.1).unwrap();
    let names: Vec<&str> = test_support::names(&v["results"]);
    assert_eq!(
        names,
        ["d0", "d1", "d2", "d3", "d4", "d5", "first", "second"]
    );
    for i in 0..6 {
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(f.home().join(format!("dir{i}/c.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(file, json!({"k": format!("v{i}")}));
    }
    let same: Value =
        serde_json::from_str(&std::fs::read_to_string(f.home().join("same/x.json")).unwrap())
            .unwrap();
    assert_eq!(same, json!({"k": "two"}), "the later item wins");
    f.state.shutdown().await;
}

#[tokio::test]
async fn envs_are_capped_and_the_cap_is_a_409_that_changes_nothing() {
    let f = fixture_with(|c| c.max_envs = 3).await; // base_env + 2
    for env in ["e1", "e2"] {
        let resp = f
            .post(
                &format!("/v1/envs/{env}/_set_env_vars"),
                &json!({"vars": {"RH_A": "a"}}).to_string(),
            )
            .await;
        assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    }
    let resp = f
        .post(
            "/v1/envs/e3/_set_env_vars",
            &json!({"vars": {"RH_A": SECRET}}).to_string(),
        )
        .await;
    assert_error(&resp, StatusCode::CONFLICT, "too_many_envs");
    // a sync creating one more env is refused as a whole: its file is not written
    let body = json!({"items": [
        {"secret": {"name": "f", "provider": "custom", "values": {"k": SECRET}}, "path": "~/f.json"},
        {"secret": {"name": "v", "env_vars": {"k": "RH_K"}, "values": {"k": SECRET}}, "env": "e4"},
    ]})
    .to_string();
    let resp = f.post("/v1/sync", &body).await;
    assert_error(&resp, StatusCode::CONFLICT, "too_many_envs");
    assert!(f.user_files().is_empty(), "{:?}", f.user_files());
    // existing envs still take vars, and the refused ones were not created
    let resp = f
        .post(
            "/v1/envs/e1/_set_env_vars",
            &json!({"vars": {"RH_B": "b"}}).to_string(),
        )
        .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    let (_, status) = f.get("/v1/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    let names: Vec<&str> = test_support::names(&status["envs"]);
    assert_eq!(names, ["base_env", "e1", "e2"]);
    f.state.shutdown().await;
}

#[tokio::test]
async fn stale_temp_files_in_the_state_dir_are_removed_at_start() {
    let home = tempfile::tempdir().unwrap();
    let state_dir = home.path().join(".rh/agent");
    std::fs::create_dir_all(&state_dir).unwrap();
    // what a kill -9 between create and rename of installed.json leaves
    let stale = state_dir.join(".rh-tmp-Xy12ab");
    std::fs::write(&stale, format!("{{\"values\": {{\"k\": \"{SECRET}\"}}}}")).unwrap();
    let state = agent::AppState::open(common::config(home.path()))
        .await
        .unwrap();
    assert!(!stale.exists(), "stale temp file kept");
    assert!(state_dir.join("token").exists());
    state.shutdown().await;
}

/// An item carrying its placement is applied as placed; a placement is
/// untrusted: one that is not its provider's set of files, names a value the
/// secret lacks, or comes with `path`/`env` too is refused as a whole (400,
/// nothing written), and its paths are confined like any other.
#[tokio::test]
async fn placed_items_are_verified_then_applied() {
    let f = fixture().await;
    let ssh = json!({"name": "ssh-k", "provider": "ssh",
        "values": {"private_key": SECRET, "public_key": "ssh-ed25519 AAAA me"}});
    let openai = json!({"name": "openai", "provider": "openai", "values": {"api_key": SECRET}});
    for (item, code) in [
        (
            json!({"secret": ssh, "placement": {"files": [{"path": "~/.ssh/k"}]}}),
            "invalid_placement",
        ),
        (
            json!({"secret": openai, "placement": {"env": {"env": "base_env",
                "vars": {"OPENAI_API_KEY": "no_such_key"}}}}),
            "invalid_placement",
        ),
        (
            json!({"secret": openai, "env": "base_env", "placement": {"env": {"env": "base_env",
                "vars": {"OPENAI_API_KEY": "api_key"}}}}),
            "invalid_placement",
        ),
        (
            json!({"secret": openai, "placement": {}}),
            "invalid_placement",
        ),
        (
            json!({"secret": ssh, "placement": {"files": [{"path": "/etc/k"}, {"path": "/etc/k.pub"}]}}),
            "path_outside_home",
        ),
    ] {
        let body = json!({"items": [item]}).to_string();
        let resp = f.post("/v1/sync", &body).await;
        assert!(resp.0.is_client_error(), "{body}: {}", resp.1);
        let v: Value = serde_json::from_str(&resp.1).unwrap();
        assert_eq!(v["error"], code, "{}", resp.1);
        assert!(!resp.1.contains(SECRET));
    }
    assert!(f.user_files().is_empty(), "{:?}", f.user_files());

    let body = json!({"items": [
        {"secret": ssh, "placement": {"files": [{"path": "~/.ssh/k"}, {"path": "~/.ssh/k.pub"}]}},
        {"secret": openai, "placement": {"env": {"env": "placed", "vars": {"MY_KEY": "api_key"}}}},
    ]})
    .to_string();
    let resp = f.post("/v1/sync", &body).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    let v: Value = serde_json::from_str(&resp.1).unwrap();
    assert_eq!(v["results"][0]["status"], "written", "{v}");
    assert_eq!(v["results"][1]["status"], "written", "{v}");
    assert_eq!(v["results"][1]["vars"], json!(["MY_KEY"]));
    assert_eq!(
        std::fs::read_to_string(f.home().join(".ssh/k")).unwrap(),
        SECRET
    );
    assert_eq!(common::mode(&f.home().join(".ssh/k")), 0o600);
    let run = json!({"argv": ["printenv", "MY_KEY"]}).to_string();
    let (code, out) = f.post("/v1/envs/placed/run", &run).await;
    assert_eq!(code, StatusCode::OK, "{out}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["stdout"], format!("{SECRET}\n"));

    // A file held back by its pair's conflict is `blocked`, not `would_write`;
    // `_write_to_file` answers 409 and writes neither.
    std::fs::write(f.home().join(".ssh/j.pub"), "ssh-ed25519 OTHER me\n").unwrap();
    let body = json!({"secret": {"name": "ssh-j", "provider": "ssh",
        "values": {"private_key": SECRET, "public_key": "ssh-ed25519 AAAA me"}}})
    .to_string();
    let resp = f.post("/v1/secrets/_write_to_file", &body).await;
    assert_eq!(resp.0, StatusCode::CONFLICT, "{}", resp.1);
    let v: Value = serde_json::from_str(&resp.1).unwrap();
    assert_eq!(v["results"][0]["status"], "conflict", "{v}");
    assert_eq!(v["results"][0]["files"][0]["status"], "blocked", "{v}");
    assert_eq!(v["results"][0]["files"][1]["status"], "conflict", "{v}");
    assert!(!f.home().join(".ssh/j").exists());
    f.state.shutdown().await;
}
