//! `GET /metrics` through the real router: behind the token (401 without
//! it), Prometheus text with the pull and request counters, and no value
//! even after a sync that wrote one.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

const SECRET: &str = "sk-metrics-never-shown-4411";

async fn get(
    app: &axum::Router,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (StatusCode, String, Option<String>) {
    let mut req = Request::builder().uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .method("POST")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    };
    let resp = app.clone().oneshot(req.unwrap()).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap(), ctype)
}

#[tokio::test]
async fn metrics_need_the_token_and_hold_counters_only() {
    let home = tempfile::tempdir().unwrap();
    let state = agent::AppState::open(common::config(home.path()))
        .await
        .unwrap();
    let token = std::fs::read_to_string(home.path().join(".rh/agent/token")).unwrap();
    let token = token.trim();
    let app = agent::router(state.clone());

    let (status, _, _) = get(&app, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let body = common::generic_write("tool", "~/.tool/t.json", json!({ "token": SECRET }));
    let sync = json!({ "items": [{ "secret": body["secret"], "path": "~/.tool/t.json" }] });
    let (status, text, _) = get(&app, "/v1/sync", Some(token), Some(sync.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let (status, text, ctype) = get(&app, "/metrics", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(ctype.as_deref(), Some("text/plain; version=0.0.4"));
    assert!(!text.contains(SECRET) && !text.contains("tool"), "{text}");
    assert!(text.contains("rh_agent_pull_enabled 0\n"), "{text}");
    assert!(text.contains("rh_agent_pull_applied_version 0\n"), "{text}");
    let requests: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rh_agent_http_requests_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests >= 3, "{text}");
    state.shutdown().await;
}
