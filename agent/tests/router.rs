//! Router tests: `tower::ServiceExt::oneshot` against `agent::router` on a
//! temp home: auth, the health proof, the token file, and the input
//! checks. Every bad input gets a 4xx JSON error in the `{"error","message"}`
//! shape, writes nothing, and echoes no value. What a good request writes
//! is in `router_apply.rs`.

mod common;
mod router_common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use router_common::*;

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
    f.all_refused(&[
        (uri, "{not json", StatusCode::BAD_REQUEST, "malformed_json"),
        (uri, "", StatusCode::BAD_REQUEST, "malformed_json"),
    ])
    .await;
    // wrong type: values is a string holding the secret; it must not be echoed
    let wrong = json!({"secret": {"name": "s1", "values": SECRET}}).to_string();
    let wrong_flag =
        json!({"secret": {"name": "s1", "values": {}}, "overwrite": SECRET}).to_string();
    let bad_vars = json!({"vars": {"X": SECRET}, "dry_run": "yes"}).to_string();
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    f.all_refused(&[
        (uri, &wrong, invalid, "invalid_body"),
        (uri, &wrong_flag, invalid, "invalid_body"),
        (
            "/v1/envs/base_env/_set_env_vars",
            &bad_vars,
            invalid,
            "invalid_body",
        ),
    ])
    .await;
    let unknown =
        json!({"secret": {"name": "s1", "values": {}}, "path": "~/x", "bogus": 1}).to_string();
    let resp = f.post(uri, &unknown).await;
    assert_error(&resp, invalid, "invalid_body");
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
        f.all_refused(&[
            (uri, "{", StatusCode::BAD_REQUEST, "malformed_json"),
            (uri, "[1,", invalid, "invalid_body"),
            (uri, r#"{"nope": true}"#, invalid, "invalid_body"),
        ])
        .await;
    }
    assert_error(
        &f.delete("/v1/secrets/s1?dry_run=perhaps").await,
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
    f.post_refused(
        "/v1/secrets/_write_to_file",
        &big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
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
    f.post_refused(
        "/v1/sync",
        &big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
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
    const WRITE: &str = "/v1/secrets/_write_to_file";
    const SET_VARS: &str = "/v1/envs/base_env/_set_env_vars";
    let bad_var = |name: &str| json!({"vars": {name: SECRET}});
    let cases = [
        // unknown provider where a builtin is required (no path to fall back on)
        (
            WRITE,
            json!({"secret": {"name": "x", "provider": "nosuchprovider", "values": {"k": SECRET}}}),
            "unknown_provider",
        ),
        // builtin provider missing a required key
        (
            WRITE,
            json!({"secret": {"name": "aws", "provider": "aws", "values": {"access_key": SECRET}}}),
            "invalid_value",
        ),
        // bad secret name
        (
            WRITE,
            json!({"secret": {"name": "../evil", "provider": "custom", "values": {"k": SECRET}}, "path": "~/e.json"}),
            "invalid_name",
        ),
        // bad env name and var names
        (
            "/v1/envs/bad..env/_set_env_vars",
            bad_var("OK"),
            "invalid_name",
        ),
        (SET_VARS, bad_var("1ABC"), "invalid_name"),
        (SET_VARS, bad_var("A-B"), "invalid_name"),
        (SET_VARS, bad_var("A=B"), "invalid_name"),
        (SET_VARS, bad_var(""), "invalid_name"),
        (
            SET_VARS,
            json!({"vars": {"NUL": "a\u{0}b"}}),
            "invalid_value",
        ),
        // a sync item with env but no variables mapped
        (
            "/v1/sync",
            json!({"items": [{"secret": {"name": "x", "values": {"k": SECRET}}, "env": "base_env"}]}),
            "no_env_vars",
        ),
        // env-only builtin written to a file without a path
        (
            WRITE,
            json!({"secret": {"name": "openai", "provider": "openai", "values": {"api_key": SECRET}}}),
            "no_path",
        ),
    ];
    for (uri, body, code) in cases {
        f.post_refused(uri, &body.to_string(), StatusCode::BAD_REQUEST, code)
            .await;
    }
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
    let (not_found, bad) = (StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST);
    let run_true = r#"{"argv": ["true"]}"#;
    f.all_refused(&[
        ("/v1/envs/nope/run", run_true, not_found, "unknown_env"),
        (
            "/v1/envs/base_env/run",
            r#"{"argv": []}"#,
            bad,
            "empty_command",
        ),
    ])
    .await;
    assert_error(&f.get("/v1/nothing").await, not_found, "not_found");
    let wrong_method = StatusCode::METHOD_NOT_ALLOWED;
    assert_error(&f.get("/v1/sync").await, wrong_method, "method_not_allowed");
    let never = f.delete("/v1/secrets/never-installed").await;
    assert_error(&never, not_found, "unknown_secret");
    f.state.shutdown().await;
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
    /// `GET /healthz?challenge=NONCE` without a token.
    async fn challenged(f: &Fixture, nonce: &str) -> (StatusCode, String) {
        let uri = format!("/healthz?challenge={nonce}");
        f.send(Method::GET, &uri, None, None).await
    }

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
    let (status, body) = challenged(&f, &nonce_hex).await;
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
    let (_, upper) = challenged(&f, &nonce_hex.to_uppercase()).await;
    assert_eq!(
        serde_json::from_str::<Value>(&upper).unwrap()["proof"],
        proof
    );
    let other = ::common::fingerprint::random_hex(16);
    let (_, body2) = challenged(&f, &other).await;
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
        let resp = challenged(&f, &bad).await;
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
