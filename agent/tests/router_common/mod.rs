//! Helpers for the router tests (`router*.rs`): an `agent::AppState` on a
//! temp home driven through `tower::ServiceExt::oneshot` against
//! `agent::router`, the error shape every bad input must get, and request
//! bodies carrying the one test value [`SECRET`] (never echoed).

#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const SECRET: &str = "sk-live-TOPSECRET-value-123";

pub struct Fixture {
    pub home: tempfile::TempDir,
    pub state: agent::AppState,
    pub token: String,
}

pub async fn fixture_with(f: impl FnOnce(&mut agent::Config)) -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let mut config = crate::common::config(home.path());
    f(&mut config);
    let token_file = config.state_dir.join("token");
    let state = agent::AppState::open(config).await.unwrap();
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_owned();
    Fixture { home, state, token }
}

pub async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

impl Fixture {
    pub async fn send(
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

    pub async fn post(&self, uri: &str, body: &str) -> (StatusCode, String) {
        self.send(
            Method::POST,
            uri,
            Some(&self.token.clone()),
            Some(body.to_owned()),
        )
        .await
    }

    /// POST `body` to `uri` and assert it is refused with `status` and the
    /// error `code` ([`assert_error`]).
    pub async fn post_refused(&self, uri: &str, body: &str, status: StatusCode, code: &str) {
        assert_error(&self.post(uri, body).await, status, code);
    }

    /// [`Fixture::post_refused`] for each `(uri, body, status, code)`.
    pub async fn all_refused(&self, cases: &[(&str, &str, StatusCode, &str)]) {
        for &(uri, body, status, code) in cases {
            self.post_refused(uri, body, status, code).await;
        }
    }

    pub async fn delete(&self, uri: &str) -> (StatusCode, String) {
        self.send(Method::DELETE, uri, Some(&self.token.clone()), None)
            .await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, String) {
        self.send(Method::GET, uri, Some(&self.token.clone()), None)
            .await
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Every file under home except the agent's state dir.
    pub fn user_files(&self) -> Vec<String> {
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
pub fn assert_error(resp: &(StatusCode, String), status: StatusCode, code: &str) {
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

pub fn write_body(path: &str) -> String {
    json!({"secret": {"name": "s1", "provider": "custom", "values": {"key": SECRET}}, "path": path})
        .to_string()
}

/// A sync of a good item and one with a bad `path`: the bad one stops both.
pub fn sync_with_bad_item(path: &str) -> String {
    json!({"items": [
        {"secret": {"name": "good", "provider": "custom", "values": {"k": SECRET}}, "path": "~/good.json"},
        {"secret": {"name": "bad", "provider": "custom", "values": {"k": SECRET}}, "path": path},
    ]})
    .to_string()
}
