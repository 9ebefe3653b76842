//! File-system confinement through the real router on a temp home: a FIFO at
//! a credential path is a prompt 4xx naming it (and the directory stays
//! writable: no lock is kept), over-long paths and names are 4xx with cut
//! messages, a dangling link inside home is followed and its target created,
//! a link leading outside is refused naming the link.

mod common;

use std::os::unix::fs::{symlink, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

const SECRET: &str = "sk-live-TOPSECRET-value-123";

async fn post(state: &agent::AppState, token: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    // a regression that blocks fails here instead of hanging the suite
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        agent::router(state.clone()).oneshot(req),
    )
    .await
    .expect("the agent did not answer")
    .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!text.contains(SECRET), "value echoed: {text}");
    (status, serde_json::from_str(&text).unwrap())
}

async fn open(home: &std::path::Path) -> (agent::AppState, String) {
    let state = agent::AppState::open(common::config(home)).await.unwrap();
    let token = std::fs::read_to_string(home.join(".rh/agent/token"))
        .unwrap()
        .trim()
        .to_owned();
    (state, token)
}

/// A regression that blocks on the FIFO must fail, not hang: after `wait`
/// a writer opens and closes it (harmless when nothing reads), so a blocked
/// reader gets end-of-file and the runtime can shut down after the failure.
/// It opens a hard link of its own, as the failing test removes the home.
fn unblock_after(fifo: &std::path::Path, wait: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("fifo");
    std::fs::hard_link(fifo, &link).unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(wait);
        for _ in 0..100 {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&link);
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(dir);
    });
}

fn custom(name: &str, path: &str) -> Value {
    json!({"secret": {"name": name, "provider": "custom", "values": {"key": SECRET}}, "path": path})
}

fn assert_code(resp: &(StatusCode, Value), status: StatusCode, code: &str) -> String {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"], code, "{}", resp.1);
    resp.1["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_fifo_at_a_credential_path_is_a_4xx_and_the_directory_stays_writable() {
    let home = tempfile::tempdir().unwrap();
    let (state, token) = open(home.path()).await;
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    let fifo = home.path().join(".aws/credentials");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    unblock_after(&fifo, Duration::from_secs(25));
    let aws = json!({"secret": {"name": "aws", "provider": "aws",
        "values": {"access_key": "AKIAX", "secret_key": SECRET}}});
    for uri in ["/v1/secrets/_write_to_file", "/v1/sync"] {
        let body = if uri == "/v1/sync" {
            json!({"items": [aws.clone()]})
        } else {
            aws.clone()
        };
        let resp = post(&state, &token, uri, body).await;
        if uri == "/v1/sync" {
            // per-item failures are reported in the item
            assert!(
                resp.1.to_string().contains("~/.aws/credentials"),
                "{}",
                resp.1
            );
            assert!(
                resp.1.to_string().contains("not a regular file"),
                "{}",
                resp.1
            );
            continue;
        }
        let msg = assert_code(&resp, StatusCode::UNPROCESSABLE_ENTITY, "not_regular_file");
        assert!(msg.contains("~/.aws/credentials"), "{msg}");
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // the lock on ~/.aws was released: the next write to that directory works
    let resp = post(
        &state,
        &token,
        "/v1/secrets/_write_to_file",
        custom("next", "~/.aws/next.json"),
    )
    .await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    let written = std::fs::read_to_string(home.path().join(".aws/next.json")).unwrap();
    assert!(written.contains(SECRET));
    state.shutdown().await;
}

#[tokio::test]
async fn over_long_paths_and_names_are_4xx_with_cut_messages() {
    let home = tempfile::tempdir().unwrap();
    let (state, token) = open(home.path()).await;
    let uri = "/v1/secrets/_write_to_file";
    let long_component = format!("~/{}.json", "c".repeat(300));
    let long_path = format!("~/{}x.json", "dir/".repeat(1100));
    for path in [long_component, long_path] {
        let resp = post(&state, &token, uri, custom("s", &path)).await;
        let msg = assert_code(&resp, StatusCode::BAD_REQUEST, "path_too_long");
        assert!(msg.len() < 400, "message not cut: {} bytes", msg.len());
    }
    let long_name = "n".repeat(5000);
    let resp = post(&state, &token, uri, custom(&long_name, "~/x.json")).await;
    let msg = assert_code(&resp, StatusCode::BAD_REQUEST, "name_too_long");
    assert!(msg.len() < 200, "message not cut: {} bytes", msg.len());
    let vars = json!({"vars": {"V".repeat(5000): SECRET}});
    let resp = post(&state, &token, "/v1/envs/base_env/_set_env_vars", vars).await;
    let msg = assert_code(&resp, StatusCode::BAD_REQUEST, "name_too_long");
    assert!(msg.len() < 200, "message not cut: {} bytes", msg.len());
    let env = "e".repeat(5000);
    let vars = json!({"vars": {"V": SECRET}});
    let resp = post(
        &state,
        &token,
        &format!("/v1/envs/{env}/_set_env_vars"),
        vars,
    )
    .await;
    let msg = assert_code(&resp, StatusCode::BAD_REQUEST, "name_too_long");
    assert!(msg.len() < 200, "message not cut: {} bytes", msg.len());
    state.shutdown().await;
}

#[tokio::test]
async fn a_dangling_link_inside_home_is_followed_and_one_leading_out_refused() {
    let home = tempfile::tempdir().unwrap();
    let (state, token) = open(home.path()).await;
    let h = home.path();
    std::fs::create_dir(h.join(".config")).unwrap();
    symlink("../dotfiles/app.json", h.join(".config/app.json")).unwrap();
    let uri = "/v1/secrets/_write_to_file";
    let resp = post(&state, &token, uri, custom("app", "~/.config/app.json")).await;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.1);
    let target = h.join("dotfiles/app.json");
    assert!(std::fs::read_to_string(&target).unwrap().contains(SECRET));
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::symlink_metadata(h.join(".config/app.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path().join("gone.json"), h.join(".config/out.json")).unwrap();
    let resp = post(&state, &token, uri, custom("out", "~/.config/out.json")).await;
    let msg = assert_code(&resp, StatusCode::BAD_REQUEST, "path_symlink_escape");
    assert!(msg.contains("~/.config/out.json"), "{msg}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    state.shutdown().await;
}
