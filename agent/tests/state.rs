//! The agent's state under failure, against a real agent on 127.0.0.1:0:
//! damaged state files at start (moved aside, reported, the agent serves),
//! weak tokens replaced, a request that outlives its deadline (what was
//! applied is what is recorded), a state save that fails (nothing changes,
//! before or after a restart), and `run` refusing `timeout_secs: 0`.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use common::TestAgent;

fn damaged_files(dir: &Path, name: &str) -> Vec<String> {
    let prefix = format!("{name}.damaged-");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn damaged_state_files_are_moved_aside_and_the_agent_serves() {
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join(".rh/agent");
    std::fs::create_dir_all(&state).unwrap();
    // envs.json: valid JSON, an unknown field (accepted) and a bad env name.
    std::fs::write(
        state.join("envs.json"),
        r#"{"envs": {"bad name!": {"vars": {"X": "v"}}}, "future_field": 1}"#,
    )
    .unwrap();
    // installed.json: not JSON at all.
    std::fs::write(state.join("installed.json"), "{\"secrets\": {").unwrap();
    // a short token a caller could have chosen.
    std::fs::write(state.join("token"), "abc123\n").unwrap();

    let agent = TestAgent::start(common::config(home.path())).await;
    assert_eq!(agent.token.len(), 64, "the short token was replaced");
    assert_ne!(agent.token, "abc123");
    let (code, status) = agent.client().get("/v1/status").await;
    assert_eq!(code, 200, "{status}");
    let damaged = status["damaged_state"].as_array().expect("damaged_state");
    let entry = |file: &str| {
        damaged
            .iter()
            .find(|d| d["file"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("{file} not reported: {status}"))
            .clone()
    };
    let envs = entry("envs.json");
    assert!(
        envs["reason"].as_str().unwrap().contains("bad name!"),
        "{envs}"
    );
    let installed = entry("installed.json");
    assert!(
        installed["reason"].as_str().unwrap().contains("JSON"),
        "{installed}"
    );
    let token = entry("token");
    assert!(token["reason"]
        .as_str()
        .unwrap()
        .contains("32 random bytes"));
    assert!(!status.to_string().contains("abc123"));
    for name in ["envs.json", "installed.json"] {
        let moved = damaged_files(&state, name);
        assert_eq!(moved.len(), 1, "{name}: {moved:?}");
        assert!(entry(name)["moved_to"]
            .as_str()
            .unwrap()
            .ends_with(&moved[0]));
    }
    // The agent serves: a write works and is saved.
    let (code, body) = agent
        .client()
        .post(
            "/v1/secrets/_write_to_file",
            &common::generic_write("s", "~/.x/s.json", json!({"k": "v"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    agent.stop().await;
}

#[tokio::test]
async fn envs_json_with_unknown_fields_and_valid_names_loads() {
    let home = common::home_with(
        ".rh/agent/envs.json",
        r#"{"envs": {"train": {"vars": {"X": "v"}, "since": 3}}, "version": 2}"#,
    );
    let agent = TestAgent::start(common::config(home.path())).await;
    let (_, status) = agent.client().get("/v1/status").await;
    assert!(status.get("damaged_state").is_none(), "{status}");
    let (code, out) = agent.client().run("train", &["printenv", "X"]).await;
    assert_eq!(code, 200);
    assert_eq!(out["stdout"], "v\n");
    agent.stop().await;
}

#[tokio::test]
async fn a_request_past_its_deadline_applies_a_prefix_and_records_exactly_it() {
    let home = tempfile::tempdir().unwrap();
    let mut config = common::config(home.path());
    config.request_timeout = Duration::from_secs(2);
    config.test_item_delay = Some(Duration::from_millis(100));
    let agent = TestAgent::start(config).await;
    // 40 items in one directory: applied in order, ~15 fit before the deadline.
    let items: Vec<Value> = (0..40)
        .map(|i| {
            json!({"secret": {"name": format!("s{i}"), "provider": "custom",
                "values": {"k": format!("v{i}")}}, "path": format!("~/.d/s{i}.json")})
        })
        .collect();
    let (code, body) = agent
        .client()
        .post("/v1/sync", &json!({"items": items}))
        .await;
    assert_eq!(code, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let applied: Vec<bool> = results
        .iter()
        .map(|r| match r["status"].as_str().unwrap() {
            "written" => true,
            "failed" => {
                assert!(r["message"].as_str().unwrap().contains("deadline"), "{r}");
                false
            }
            other => panic!("unexpected status {other}"),
        })
        .collect();
    let n = applied.iter().filter(|a| **a).count();
    assert!(n > 0 && n < 40, "{n} applied: the test needs some of each");
    assert!(
        applied.iter().skip(n).all(|a| !a),
        "a prefix is applied, in order"
    );
    // What the answer says == the files on disk == installed state.
    let (_, status) = agent.client().get("/v1/status").await;
    let installed: Vec<&str> = test_support::names(&status["secrets"]);
    for (i, applied) in applied.iter().enumerate() {
        let on_disk = home.path().join(format!(".d/s{i}.json")).exists();
        assert_eq!(on_disk, *applied, "s{i}: file vs answer");
        assert_eq!(
            installed.contains(&format!("s{i}").as_str()),
            *applied,
            "s{i}: installed vs answer"
        );
    }
    // ... and the audit log names the request with its per-item results.
    let audit = std::fs::read_to_string(agent.state_dir.join("audit.log")).unwrap();
    let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert!(last["result"].as_str().unwrap().contains("s0=written"));
    assert!(last["result"].as_str().unwrap().contains("s39=failed"));
    agent.stop().await;
}

#[tokio::test]
async fn a_failed_state_save_changes_nothing_now_or_after_a_restart() {
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    let (code, _) = c.set_vars("base_env", json!({"KEPT": "1"})).await;
    assert_eq!(code, 200);
    let envs_json = agent.state_dir.join("envs.json");
    let saved = std::fs::read(&envs_json).unwrap();
    // Root can write anywhere, so make the save fail for real: a directory
    // where envs.json is renamed to.
    std::fs::remove_file(&envs_json).unwrap();
    std::fs::create_dir(&envs_json).unwrap();
    std::fs::write(envs_json.join("keep"), "x").unwrap();

    let (code, body) = c.set_vars("base_env", json!({"LOST": "2"})).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["error"], "state_not_saved");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing changed"),
        "{body}"
    );
    let (_, out) = c.run("base_env", &["printenv", "LOST"]).await;
    assert_eq!(out["exit_code"], 1, "the var is not live: {out}");
    // The same through /v1/sync: the item fails, the var is not set.
    let (code, body) = c
        .post(
            "/v1/sync",
            &json!({"items": [{"secret": {"name": "openai", "provider": "openai",
                "values": {"api_key": "sk-x"}}, "env": "base_env"}]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "failed", "{body}");
    let (_, out) = c.run("base_env", &["printenv", "OPENAI_API_KEY"]).await;
    assert_eq!(out["exit_code"], 1, "{out}");
    let (_, status) = c.get("/v1/status").await;
    assert_eq!(status["secrets"], json!([]), "nothing recorded: {status}");

    // Restart on the state as it was: nothing of the failed requests.
    agent.stop().await;
    std::fs::remove_dir_all(&envs_json).unwrap();
    std::fs::write(&envs_json, &saved).unwrap();
    let agent = TestAgent::start(common::config(home.path())).await;
    let c = agent.client();
    let (_, out) = c.run("base_env", &["printenv", "KEPT"]).await;
    assert_eq!(out["stdout"], "1\n");
    let (_, out) = c.run("base_env", &["printenv", "LOST"]).await;
    assert_eq!(out["exit_code"], 1);
    agent.stop().await;
}

#[tokio::test]
async fn run_refuses_a_zero_timeout() {
    let (_home, agent) = common::temp_agent().await;
    let (code, body) = agent
        .client()
        .post(
            "/v1/envs/base_env/run",
            &json!({"argv": ["true"], "timeout_secs": 0}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"], "invalid_timeout");
    agent.stop().await;
}

/// A sync whose every item is `unchanged` rewrites no state file (same
/// inodes: no temp file renamed over them, so no fsync); a changed value
/// rewrites both and the new value is live.
#[tokio::test]
async fn an_unchanged_sync_rewrites_no_state_file() {
    use std::os::unix::fs::MetadataExt;
    let (_home, agent) = common::temp_agent().await;
    let c = agent.client();
    let sync = |value: &str| {
        json!({"items": [
            {"secret": {"name": "openai", "provider": "openai",
                "values": {"api_key": value}}, "env": "base_env"},
            common::generic_write("cfg", "~/cfg/c.json", json!({"k": value})),
        ]})
    };
    let inodes = || {
        ["envs.json", "installed.json"]
            .map(|f| std::fs::metadata(agent.state_dir.join(f)).unwrap().ino())
    };
    let (code, body) = c.post("/v1/sync", &sync("sk-one")).await;
    assert_eq!(code, 200, "{body}");
    let first = inodes();
    let (code, body) = c.post("/v1/sync", &sync("sk-one")).await;
    assert_eq!(code, 200, "{body}");
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["status"], "unchanged", "{body}");
    }
    assert_eq!(inodes(), first, "an unchanged sync rewrote a state file");
    let (code, body) = c.post("/v1/sync", &sync("sk-two")).await;
    assert_eq!(code, 200, "{body}");
    let second = inodes();
    assert_ne!(second[0], first[0], "envs.json not saved: {body}");
    assert_ne!(second[1], first[1], "installed.json not saved: {body}");
    let (_, out) = c.run("base_env", &["printenv", "OPENAI_API_KEY"]).await;
    assert_eq!(out["stdout"], "sk-two\n");
    agent.stop().await;
}

/// An unchanged sync is answered from the files' signatures once they are
/// recorded (a second after their last change); a file edited in place
/// since (same size, mtime put back) is found (a conflict, put back with
/// `overwrite`), one made readable by others is made 0600 again.
#[tokio::test]
async fn files_edited_after_a_verified_sync_are_put_back() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    let req =
        json!({"items": [common::generic_write("cfg", "~/cfg/c.json", json!({"k": "v-one"}))]});
    let file = home.path().join("cfg/c.json");
    let status = |body: &Value| body["results"][0]["status"].as_str().unwrap().to_owned();
    let (code, body) = c.post("/v1/sync", &req).await;
    assert_eq!((code, status(&body)), (200, "written".into()), "{body}");
    let good = std::fs::read(&file).unwrap();
    // Let the file settle, then sync twice: recorded, then answered from it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..2 {
        let (code, body) = c.post("/v1/sync", &req).await;
        assert_eq!((code, status(&body)), (200, "unchanged".into()), "{body}");
    }
    // Same length, mtime put back: only the status-change time differs.
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let tampered = String::from_utf8(good.clone())
        .unwrap()
        .replace("v-one", "v-bad");
    assert_eq!(tampered.len(), good.len());
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all(tampered.as_bytes()).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let (code, body) = c.post("/v1/sync", &req).await;
    assert_eq!(
        (code, status(&body)),
        (200, "conflict".into()),
        "an edit went unseen: {body}"
    );
    let mut forced = req.clone();
    forced["overwrite"] = json!(true);
    let (code, body) = c.post("/v1/sync", &forced).await;
    assert_eq!((code, status(&body)), (200, "written".into()), "{body}");
    assert_eq!(std::fs::read(&file).unwrap(), good, "{body}");
    // Made readable by others after a recorded sync: back to 0600.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..2 {
        let (code, body) = c.post("/v1/sync", &req).await;
        assert_eq!((code, status(&body)), (200, "unchanged".into()), "{body}");
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, body) = c.post("/v1/sync", &req).await;
    assert_eq!((code, status(&body)), (200, "unchanged".into()), "{body}");
    assert_eq!(test_support::mode(&file), 0o600);
    agent.stop().await;
}
