//! Router tests: `tower::ServiceExt::oneshot` against `agent::router` on a
//! temp home. Every bad input gets a 4xx JSON error in the
//! `{"error","message"}` shape, writes nothing, and echoes no value.

mod common;

use std::path::Path;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &str = "sk-live-TOPSECRET-value-123";

struct Fixture {
    home: tempfile::TempDir,
    state: agent::AppState,
    token: String,
}

async fn fixture_with(f: impl FnOnce(&mut agent::Config)) -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let mut config = common::config(home.path());
    f(&mut config);
    let token_file = config.state_dir.join("token");
    let state = agent::AppState::open(config).await.unwrap();
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_owned();
    Fixture { home, state, token }
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

impl Fixture {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b)
            }
            None => Body::empty(),
        };
        let resp = agent::router(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn post(&self, uri: &str, body: &str) -> (StatusCode, String) {
        self.send(
            Method::POST,
            uri,
            Some(&self.token.clone()),
            Some(body.to_owned()),
        )
        .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        self.send(Method::GET, uri, Some(&self.token.clone()), None)
            .await
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// Every file under home except the agent's state dir.
    fn user_files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let p = entry.unwrap().path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if rel == ".rh" {
                    continue;
                }
                out.push(rel);
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = vec![];
        walk(self.home(), self.home(), &mut out);
        out.sort();
        out
    }
}

/// Assert an error response: status, code, JSON shape, no value inside.
fn assert_error(resp: &(StatusCode, String), status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    let v: Value = serde_json::from_str(&resp.1).unwrap_or_else(|_| panic!("not JSON: {}", resp.1));
    assert_eq!(v["error"], code, "{}", resp.1);
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        resp.1
    );
    assert_eq!(v.as_object().unwrap().len(), 2, "{}", resp.1);
    assert!(!resp.1.contains(SECRET), "value echoed: {}", resp.1);
}

fn write_body(path: &str) -> String {
    json!({"secret": {"name": "s1", "provider": "custom", "values": {"key": SECRET}}, "path": path})
        .to_string()
}

/// A sync of a good item and one with a bad `path`: the bad one stops both.
fn sync_with_bad_item(path: &str) -> String {
    json!({"items": [
        {"secret": {"name": "good", "provider": "custom", "values": {"k": SECRET}}, "path": "~/good.json"},
        {"secret": {"name": "bad", "provider": "custom", "values": {"k": SECRET}}, "path": path},
    ]})
    .to_string()
}

#[tokio::test]
async fn healthz_needs_no_token_and_everything_else_does() {
    let f = fixture().await;
    let (status, body) = f.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let routes: [(Method, &str); 6] = [
        (Method::GET, "/v1/status"),
        (Method::POST, "/v1/sync"),
        (Method::POST, "/v1/secrets/_write_to_file"),
        (Method::POST, "/v1/envs/base_env/_set_env_vars"),
        (Method::POST, "/v1/envs/base_env/run"),
        (Method::DELETE, "/v1/secrets/s1"),
    ];
    for (method, uri) in routes {
        for token in [None, Some("wrong"), Some(""), Some(&f.token[..10])] {
            let resp = f
                .send(method.clone(), uri, token, Some(write_body("~/x.json")))
                .await;
            assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    // A token without the Bearer scheme is refused too.
    let req = Request::builder()
        .uri("/v1/status")
        .header(header::AUTHORIZATION, f.token.clone())
        .body(Body::empty())
        .unwrap();
    let resp = agent::router(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(f.user_files().is_empty());
    // The right token works.
    assert_eq!(f.get("/v1/status").await.0, StatusCode::OK);
    f.state.shutdown().await;
}

#[tokio::test]
async fn token_file_is_private_and_stable() {
    let f = fixture().await;
    let dir = f.home().join(".rh/agent");
    assert_eq!(common::mode(&dir), 0o700);
    for file in ["token", "fingerprint.key", "audit.log"] {
        assert_eq!(common::mode(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(f.token.len(), 64);
    f.state.shutdown().await;
    // A second start keeps the token.
    let again = agent::AppState::open(common::config(f.home()))
        .await
        .unwrap();
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    assert_eq!(token.trim(), f.token);
    again.shutdown().await;
}

#[tokio::test]
async fn malformed_json_wrong_types_unknown_fields() {
    let f = fixture().await;
    let uri = "/v1/secrets/_write_to_file";
    assert_error(
        &f.post(uri, "{not json").await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        &f.post(uri, "").await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    // wrong type: values is a string holding the secret; it must not be echoed
    let wrong = json!({"secret": {"name": "s1", "values": SECRET}}).to_string();
    assert_error(
        &f.post(uri, &wrong).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let wrong = json!({"secret": {"name": "s1", "values": {}}, "overwrite": SECRET}).to_string();
    assert_error(
        &f.post(uri, &wrong).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let unknown =
        json!({"secret": {"name": "s1", "values": {}}, "path": "~/x", "bogus": 1}).to_string();
    let resp = f.post(uri, &unknown).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert!(resp.1.contains("bogus"), "{}", resp.1);
    // missing content type
    let resp = f
        .send(Method::POST, uri, Some(&f.token.clone()), None)
        .await;
    assert_error(
        &resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // the other JSON routes answer the same way
    for uri in [
        "/v1/sync",
        "/v1/envs/base_env/_set_env_vars",
        "/v1/envs/base_env/run",
    ] {
        assert_error(
            &f.post(uri, "{").await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        );
        assert_error(
            &f.post(uri, "[1,").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
        assert_error(
            &f.post(uri, r#"{"nope": true}"#).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
    }
    let bad_vars = json!({"vars": {"X": SECRET}, "dry_run": "yes"}).to_string();
    assert_error(
        &f.post("/v1/envs/base_env/_set_env_vars", &bad_vars).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &f.send(
            Method::DELETE,
            "/v1/secrets/s1?dry_run=perhaps",
            Some(&f.token.clone()),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert!(f.user_files().is_empty(), "{:?}", f.user_files());
    // and the agent still serves
    assert_eq!(
        f.send(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    f.state.shutdown().await;
}

#[tokio::test]
async fn oversize_body_is_413_in_the_error_shape() {
    let f = fixture_with(|c| c.body_limit = 4096).await;
    let big = json!({"secret": {"name": "s1", "provider": "custom", "values": {"k": "x".repeat(8192)}}, "path": "~/big.json"}).to_string();
    assert_error(
        &f.post("/v1/secrets/_write_to_file", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert!(!f.home().join("big.json").exists());
    // under the limit works
    let (status, _) = f
        .post("/v1/secrets/_write_to_file", &write_body("~/small.json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    f.state.shutdown().await;
}

#[tokio::test]
async fn default_body_limit_is_one_mib() {
    let f = fixture().await;
    let big = json!({"items": [], "pad": "x".repeat(1024 * 1024 + 10)}).to_string();
    assert_error(
        &f.post("/v1/sync", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    f.state.shutdown().await;
}

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
        assert_error(
            &f.post("/v1/sync", &sync_with_bad_item(path)).await,
            StatusCode::FORBIDDEN,
            "path_reserved",
        );
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
async fn ini_values_with_outer_whitespace_are_400_naming_the_key() {
    let f = fixture().await;
    let padded = format!("{SECRET} ");
    let body = json!({"secret": {"name": "aws", "provider": "aws",
        "values": {"access_key": "AKIAPLAIN", "secret_key": padded}}})
    .to_string();
    let resp = f.post("/v1/secrets/_write_to_file", &body).await;
    assert_error(&resp, StatusCode::BAD_REQUEST, "invalid_value");
    assert!(resp.1.contains("secret_key"), "{}", resp.1);
    assert!(f.user_files().is_empty(), "{:?}", f.user_files());
    f.state.shutdown().await;
}

#[tokio::test]
async fn bad_names_providers_and_values() {
    let f = fixture().await;
    // unknown provider where a builtin is required (no path to fall back on)
    let body =
        json!({"secret": {"name": "x", "provider": "nosuchprovider", "values": {"k": SECRET}}})
            .to_string();
    assert_error(
        &f.post("/v1/secrets/_write_to_file", &body).await,
        StatusCode::BAD_REQUEST,
        "unknown_provider",
    );
    // builtin provider missing a required key
    let body =
        json!({"secret": {"name": "aws", "provider": "aws", "values": {"access_key": SECRET}}})
            .to_string();
    assert_error(
        &f.post("/v1/secrets/_write_to_file", &body).await,
        StatusCode::BAD_REQUEST,
        "invalid_value",
    );
    // bad secret name
    let body = json!({"secret": {"name": "../evil", "provider": "custom", "values": {"k": SECRET}}, "path": "~/e.json"}).to_string();
    assert_error(
        &f.post("/v1/secrets/_write_to_file", &body).await,
        StatusCode::BAD_REQUEST,
        "invalid_name",
    );
    // bad env name and var names
    let vars = json!({"vars": {"OK": SECRET}}).to_string();
    assert_error(
        &f.post("/v1/envs/bad..env/_set_env_vars", &vars).await,
        StatusCode::BAD_REQUEST,
        "invalid_name",
    );
    for bad in ["1ABC", "A-B", "A=B", ""] {
        let vars = json!({"vars": {bad: SECRET}}).to_string();
        assert_error(
            &f.post("/v1/envs/base_env/_set_env_vars", &vars).await,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        );
    }
    let vars = json!({"vars": {"NUL": "a\u{0}b"}}).to_string();
    assert_error(
        &f.post("/v1/envs/base_env/_set_env_vars", &vars).await,
        StatusCode::BAD_REQUEST,
        "invalid_value",
    );
    // a sync item with env but no variables mapped
    let body =
        json!({"items": [{"secret": {"name": "x", "values": {"k": SECRET}}, "env": "base_env"}]})
            .to_string();
    assert_error(
        &f.post("/v1/sync", &body).await,
        StatusCode::BAD_REQUEST,
        "no_env_vars",
    );
    // env-only builtin written to a file without a path
    let body =
        json!({"secret": {"name": "openai", "provider": "openai", "values": {"api_key": SECRET}}})
            .to_string();
    assert_error(
        &f.post("/v1/secrets/_write_to_file", &body).await,
        StatusCode::BAD_REQUEST,
        "no_path",
    );
    assert!(f.user_files().is_empty(), "{:?}", f.user_files());
    let (_, status) = f.get("/v1/status").await;
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["envs"][0]["name"], "base_env");
    assert_eq!(v["envs"][0]["vars"], json!([]));
    assert_eq!(v["envs"].as_array().unwrap().len(), 1);
    f.state.shutdown().await;
}

#[tokio::test]
async fn unknown_env_route_and_method() {
    let f = fixture().await;
    assert_error(
        &f.post("/v1/envs/nope/run", r#"{"argv": ["true"]}"#).await,
        StatusCode::NOT_FOUND,
        "unknown_env",
    );
    assert_error(
        &f.post("/v1/envs/base_env/run", r#"{"argv": []}"#).await,
        StatusCode::BAD_REQUEST,
        "empty_command",
    );
    assert_error(
        &f.get("/v1/nothing").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &f.get("/v1/sync").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_error(
        &f.send(
            Method::DELETE,
            "/v1/secrets/never-installed",
            Some(&f.token.clone()),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "unknown_secret",
    );
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
    let names: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
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
    let names: Vec<&str> = status["envs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
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

#[tokio::test]
async fn status_key_fingerprints_under_the_callers_key_and_bad_keys_are_400() {
    use ::common::fingerprint::{value_fingerprint, values_fingerprint, FingerprintKey};
    use ::common::secret_value::values_from;
    use ::common::SecretValue;

    let f = fixture().await;
    let body = json!({"items": [
        {"secret": {"name": "f", "provider": "custom", "values": {"k": SECRET, "n": {"b": 1, "a": "x"}}}, "path": "~/f.json"},
        {"secret": {"name": "openai", "provider": "openai", "values": {"api_key": SECRET}}, "env": "base_env"},
    ]})
    .to_string();
    assert_eq!(f.post("/v1/sync", &body).await.0, StatusCode::OK);
    let key_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let key = FingerprintKey::from_hex(key_hex).unwrap();
    let fps = |text: &str| -> (String, String, Value) {
        let v: Value = serde_json::from_str(text).unwrap();
        assert!(!text.contains(SECRET), "{text}");
        (
            v["secrets"][0]["files"][0]["fingerprint"]
                .as_str()
                .unwrap()
                .to_owned(),
            v["secrets"][1]["vars"][0]["fingerprint"]
                .as_str()
                .unwrap()
                .to_owned(),
            v["fingerprints_keyed_by"].clone(),
        )
    };
    let (status, text) = f.get(&format!("/v1/status?key={key_hex}")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!text.contains(key_hex), "{text}");
    let (file_fp, var_fp, keyed_by) = fps(&text);
    assert_eq!(keyed_by, "request");
    // The same fingerprints the controller computes from its own copy.
    let mut values = values_from([("k", SECRET)]);
    values.insert("n".into(), SecretValue::new(json!({"a": "x", "b": 1})));
    assert_eq!(file_fp, values_fingerprint(key.as_bytes(), &values));
    assert_eq!(
        var_fp,
        value_fingerprint(key.as_bytes(), &SecretValue::from(SECRET))
    );
    // Deterministic; another key (uppercase hex is the same key) or none differs.
    let again = f
        .get(&format!("/v1/status?key={}", key_hex.to_uppercase()))
        .await;
    assert_eq!(fps(&again.1).0, file_fp);
    let other = f.get(&format!("/v1/status?key={}", "ab".repeat(16))).await;
    let (other_file, other_var, _) = fps(&other.1);
    assert_ne!(other_file, file_fp);
    assert_ne!(other_var, var_fp);
    let (plain_file, plain_var, keyed_by) = fps(&f.get("/v1/status").await.1);
    assert_eq!(keyed_by, "node");
    assert_ne!(plain_file, file_fp);
    assert_ne!(plain_var, var_fp);
    // Without a key: the node's own key, same canonical encoding as before.
    let node_key = std::fs::read_to_string(f.home().join(".rh/agent/fingerprint.key")).unwrap();
    let node_key = node_key.trim().as_bytes();
    assert_eq!(plain_file, values_fingerprint(node_key, &values));
    assert_eq!(
        plain_var,
        value_fingerprint(node_key, &SecretValue::from(SECRET))
    );
    // Still behind the token.
    let (status, _) = f
        .send(
            Method::GET,
            &format!("/v1/status?key={key_hex}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for bad in [
        String::new(),
        "ab".repeat(15),
        "ab".repeat(65),
        format!("{key_hex}0"),
        "zz".repeat(16),
        format!("{}%20", "ab".repeat(16)),
        format!("{key_hex}&key={key_hex}"),
    ] {
        let resp = f.get(&format!("/v1/status?key={bad}")).await;
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_fingerprint_key");
        assert!(bad.is_empty() || !resp.1.contains(&bad), "{}", resp.1);
    }
    f.state.shutdown().await;
}

#[tokio::test]
async fn healthz_proves_the_token_only_when_challenged() {
    let f = fixture().await;
    // No challenge: exactly today's body, no proof field.
    let (status, body) = f.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["status", "version"], "{body}");

    // A challenge, without any token: the proof is the shared function of
    // the state's token and the nonce bytes.
    let nonce_hex = ::common::fingerprint::random_hex(32);
    let nonce = hex::decode(&nonce_hex).unwrap();
    let (status, body) = f
        .send(
            Method::GET,
            &format!("/healthz?challenge={nonce_hex}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let proof = v["proof"].as_str().unwrap();
    assert_eq!(
        proof,
        ::common::proof::agent_proof(f.token.as_bytes(), &nonce)
    );
    assert!(::common::proof::verify_agent_proof(
        f.token.as_bytes(),
        &nonce,
        proof
    ));
    assert!(!::common::proof::verify_agent_proof(
        b"another-token",
        &nonce,
        proof
    ));
    assert!(!body.contains(&f.token), "token echoed: {body}");
    // Upper-case hex is the same nonce; another nonce gives another proof.
    let (_, upper) = f
        .send(
            Method::GET,
            &format!("/healthz?challenge={}", nonce_hex.to_uppercase()),
            None,
            None,
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&upper).unwrap()["proof"],
        proof
    );
    let other = ::common::fingerprint::random_hex(16);
    let (_, body2) = f
        .send(
            Method::GET,
            &format!("/healthz?challenge={other}"),
            None,
            None,
        )
        .await;
    assert_ne!(
        serde_json::from_str::<Value>(&body2).unwrap()["proof"],
        proof
    );

    for bad in [
        String::new(),
        "ab".repeat(15),
        "ab".repeat(65),
        format!("{nonce_hex}0"),
        "zz".repeat(16),
        format!("{}%20", "ab".repeat(16)),
        format!("{nonce_hex}&challenge={nonce_hex}"),
    ] {
        let resp = f
            .send(
                Method::GET,
                &format!("/healthz?challenge={bad}"),
                None,
                None,
            )
            .await;
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_challenge");
        assert!(bad.is_empty() || !resp.1.contains(&bad), "{}", resp.1);
        assert!(!resp.1.contains(&f.token), "{}", resp.1);
    }
    // Still alive after bad input.
    assert_eq!(
        f.send(Method::GET, "/healthz", None, None).await.0,
        StatusCode::OK
    );
    f.state.shutdown().await;
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
