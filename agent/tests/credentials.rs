//! Session secrets on a real agent (127.0.0.1:0): the ECS route with its
//! per-env tokens, expiry (503), refresh, revoke, restart, the
//! `~/.aws/config` profile line and static keys, the GCE metadata routes
//! and their peer-uid rule (another uid gets 403), the `agent credentials
//! aws` helper, and hostile requests. No credential in any log or error.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{config, Client, TestAgent, AGENT_BIN};
use serde_json::{json, Value};

const SECRET: &str = "wJalrXUtnFEMI-TOPSECRET-session-key";

fn now() -> i64 {
    common_now()
}

fn common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A `/v1/sync` body with one AWS session item.
fn aws_sync(
    name: &str,
    key_id: &str,
    expires_in: i64,
    env: Option<&str>,
    profile: Option<&str>,
) -> Value {
    json!({"items": [{
        "secret": {"name": name, "provider": "aws"},
        "session": {
            "minted": {
                "kind": "aws",
                "credential": {"access_key_id": key_id, "secret_access_key": SECRET,
                               "session_token": format!("token-of-{key_id}")},
                "expires_at": now() + expires_in,
                "minted_at": now(),
                "source": "assume_role",
                "region": "eu-west-3"
            },
            "env": env,
            "profile": profile
        }
    }]})
}

fn gcp_sync(name: &str, token: &str, env: &str) -> Value {
    json!({"items": [{
        "secret": {"name": name, "provider": "gcp"},
        "session": {
            "minted": {
                "kind": "gcp",
                "credential": {"access_token": token},
                "expires_at": now() + 3600,
                "minted_at": now(),
                "source": "refresh_token",
                "project_id": "proj-1"
            },
            "env": env
        }
    }]})
}

/// `POST /v1/sync` of session items, every one `written`: the answer.
async fn installed(c: &Client, body: &Value) -> Value {
    let (status, answer) = c.post("/v1/sync", body).await;
    assert_eq!(status, 200, "{answer}");
    for r in answer["results"].as_array().unwrap() {
        assert_eq!(r["status"], "written", "{answer}");
    }
    answer
}

/// `GET /v1/credentials/aws/NAME` with a raw `Authorization`.
async fn ecs(c: &Client, name: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = c.http.get(format!("{}/v1/credentials/aws/{name}", c.url));
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn env_token(state_dir: &Path, env: &str) -> String {
    std::fs::read_to_string(state_dir.join("credentials/tokens").join(env)).unwrap()
}

/// Every file under `dir` except the session state itself (where the
/// credential lives by design, 0600) must not hold `needle`.
fn assert_nowhere_but_sessions(dir: &Path, needle: &str) {
    for entry in walk(dir) {
        if entry.ends_with("credentials/sessions.json") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(needle),
            "{} holds the credential",
            entry.display()
        );
    }
}

/// The session `name` in `GET /v1/status`.
async fn session_status(c: &Client, name: &str) -> Value {
    let (_, status) = c.get("/v1/status").await;
    let sessions = status["sessions"].as_array().unwrap();
    let found = sessions.iter().find(|s| s["name"] == name);
    found
        .unwrap_or_else(|| panic!("no session {name}: {status}"))
        .clone()
}

/// Assert the file `rel` of the agent's state dir is mode 0600.
#[track_caller]
fn assert_private(agent: &TestAgent, rel: &str) {
    assert_eq!(common::mode(&agent.state_dir.join(rel)), 0o600, "{rel}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn an_aws_session_is_served_to_its_env_token_only_and_never_past_expiry() {
    let home = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(home.path())).await;
    let c = agent.client();
    let body = installed(&c, &aws_sync("s3", "ASIAFIRST", 3600, Some("train"), None)).await;
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
    assert!(!body.to_string().contains(SECRET));
    installed(
        &c,
        &aws_sync("other", "ASIAOTHER", 3600, Some("other_env"), None),
    )
    .await;

    let train = env_token(&agent.state_dir, "train");
    assert_private(&agent, "credentials/tokens/train");
    let (status, doc) = ecs(&c, "s3", Some(&train)).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["AccessKeyId"], "ASIAFIRST");
    assert_eq!(doc["SecretAccessKey"], SECRET);
    assert_eq!(doc["Token"], "token-of-ASIAFIRST");
    assert!(doc["Expiration"].as_str().unwrap().ends_with('Z'));

    // Missing, wrong, Bearer-prefixed, the API token, another env's token: 401.
    let other = env_token(&agent.state_dir, "other_env");
    for token in [
        None,
        Some("nope".to_owned()),
        Some(format!("Bearer {train}")),
        Some(agent.token.clone()),
        Some(format!("Bearer {}", agent.token)),
        Some(other.clone()),
    ] {
        let (status, body) = ecs(&c, "s3", token.as_deref()).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(!body.to_string().contains(SECRET));
    }
    // An unknown name tells an env token nothing more than a wrong one.
    assert_eq!(ecs(&c, "nosuch", Some(&train)).await.0, 401);
    // The env token opens no other route.
    let resp = c
        .http
        .post(format!("{}/v1/envs/train/run", c.url))
        .header("authorization", format!("Bearer {train}"))
        .json(&json!({"argv": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // The env's processes are pointed at it, isolated from ~/.aws.
    let (_, run) = c
        .run("train", &["sh", "-c", "echo $AWS_CONTAINER_CREDENTIALS_FULL_URI; cat $AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; echo; cat $AWS_CONFIG_FILE; wc -c < $AWS_SHARED_CREDENTIALS_FILE"])
        .await;
    let out = run["stdout"].as_str().unwrap();
    let port = agent.url.rsplit(':').next().unwrap();
    assert!(
        out.starts_with(&format!("http://127.0.0.1:{port}/v1/credentials/aws/s3\n")),
        "{out}"
    );
    assert!(out.contains(&format!("{train}\n")), "{out}");
    assert!(out.contains("[default]\nregion = eu-west-3\n"), "{out}");
    assert!(out.trim_end().ends_with('0'), "{out}");

    // A refresh replaces it; the same item again is unchanged (one item
    // sent twice: its expiry is computed from the clock, which may tick
    // between two calls of aws_sync); status lists it.
    let second = aws_sync("s3", "ASIASECOND", 3600, Some("train"), None);
    installed(&c, &second).await;
    assert_eq!(
        ecs(&c, "s3", Some(&train)).await.1["AccessKeyId"],
        "ASIASECOND"
    );
    let (_, again) = c.post("/v1/sync", &second).await;
    assert_eq!(again["results"][0]["status"], "unchanged", "{again}");
    let s3 = session_status(&c, "s3").await;
    assert_eq!(s3["kind"], "aws");
    assert_eq!(s3["expired"], false);
    assert_eq!(s3["envs"], json!(["train"]));
    assert!(!status.to_string().contains(SECRET));

    // A short one expires: 503 naming the secret and when.
    installed(&c, &aws_sync("brief", "ASIABRIEF", 2, Some("train"), None)).await;
    assert_eq!(ecs(&c, "brief", Some(&train)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, body) = ecs(&c, "brief", Some(&train)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "session_expired");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("brief") && message.contains("expired at 20"),
        "{message}"
    );
    assert_eq!(session_status(&c, "brief").await["expired"], true);

    // Revoke: the session, its vars and its token access go.
    let (status, body) = c.delete("/v1/secrets/s3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ecs(&c, "s3", Some(&train)).await.0, 401);
    // The env's vars now point at `brief` (set later): they stay until it goes.
    let (_, run) = c
        .run(
            "train",
            &["sh", "-c", "echo x${AWS_CONTAINER_CREDENTIALS_FULL_URI}x"],
        )
        .await;
    assert!(
        !run["stdout"].as_str().unwrap().contains("/aws/s3x"),
        "{run}"
    );
    let (status, _) = c.delete("/v1/secrets/brief").await;
    assert_eq!(status, 200);
    let (_, run) = c
        .run(
            "train",
            &["sh", "-c", "echo x${AWS_CONTAINER_CREDENTIALS_FULL_URI}x"],
        )
        .await;
    assert_eq!(run["stdout"], "xx\n");
    assert_nowhere_but_sessions(&agent.state_dir, SECRET);
    agent.stop().await;
}

#[tokio::test]
async fn bad_or_expired_credentials_are_refused_naming_no_value() {
    let home = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(home.path())).await;
    let c = agent.client();
    let (status, body) = c
        .post(
            "/v1/sync",
            &aws_sync("late", "ASIALATE", -5, Some("e"), None),
        )
        .await;
    assert_eq!(status, 200);
    let r = &body["results"][0];
    assert_eq!(r["status"], "failed", "{body}");
    assert!(r["message"].as_str().unwrap().contains("expired"), "{body}");
    let mut bad = aws_sync("bad", "ASIA BAD", 60, Some("e"), None);
    bad["items"][0]["session"]["minted"]["credential"]["secret_access_key"] =
        json!(format!("{SECRET}\n[evil]"));
    let (_, body) = c.post("/v1/sync", &bad).await;
    assert_eq!(body["results"][0]["status"], "failed", "{body}");
    assert!(!body.to_string().contains(SECRET), "{body}");
    let mut profile = aws_sync("p", "ASIAP", 60, None, Some("x]\n[evil"));
    let (_, body) = c.post("/v1/sync", &profile).await;
    assert_eq!(body["results"][0]["status"], "failed", "{body}");
    profile["items"][0]["session"]["bogus"] = json!(1);
    let (status, _) = c.post("/v1/sync", &profile).await;
    assert_eq!(status, 422);
    assert!(!home.path().join(".aws").exists());
    // A second gcp session would take over the metadata server: refused.
    installed(&c, &gcp_sync("g1", "ya29.one", "e")).await;
    let (_, body) = c.post("/v1/sync", &gcp_sync("g2", "ya29.two", "e")).await;
    assert_eq!(body["results"][0]["status"], "failed", "{body}");
    assert!(body["results"][0]["message"]
        .as_str()
        .unwrap()
        .contains("g1"));
    agent.stop().await;
}

#[tokio::test]
async fn the_profile_gets_the_helper_and_loses_the_static_keys_the_agent_installed() {
    let home = common::home_with(
        ".aws/config",
        "# mine\n[default]\nregion = us-west-2\n\n[profile dev]\nregion = eu-west-1\n",
    );
    let aws = home.path().join(".aws");
    let agent = TestAgent::start(config(home.path())).await;
    let c = agent.client();
    // Static keys pushed earlier (the old way), and someone else's in [dev].
    installed(&c, &json!({"items": [{"secret": {"name": "aws", "provider": "aws", "path": "~/.aws/credentials",
            "values": {"access_key": "AKIALONGLIVED", "secret_key": "long-lived-secret"}}}]})).await;
    let creds = aws.join("credentials");
    let mut text = std::fs::read_to_string(&creds).unwrap();
    text.push_str("\n[dev]\naws_access_key_id = AKIANOTOURS\naws_secret_access_key = x\n");
    std::fs::write(&creds, text).unwrap();

    let (_, body) = c
        .post(
            "/v1/sync",
            &aws_sync("sess", "ASIASESS", 3600, None, Some("default")),
        )
        .await;
    let r = &body["results"][0];
    assert_eq!(r["status"], "written", "{body}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("removed the static keys secret aws"),
        "{body}"
    );
    let config_text = std::fs::read_to_string(aws.join("config")).unwrap();
    let line = format!(
        "credential_process = {AGENT_BIN} credentials aws --secret sess --state-dir {}\n",
        agent.state_dir.display()
    );
    assert_eq!(
        config_text,
        format!(
            "# mine\n[default]\nregion = us-west-2\n{line}\n[profile dev]\nregion = eu-west-1\n"
        )
    );
    assert_eq!(common::mode(&aws.join("config")), 0o600);
    let creds_text = std::fs::read_to_string(&creds).unwrap();
    assert!(
        !creds_text.contains("AKIALONGLIVED") && !creds_text.contains("long-lived-secret"),
        "{creds_text}"
    );
    assert!(creds_text.contains("AKIANOTOURS"));
    // Keys the agent did not install are reported, not removed.
    let (_, body) = c
        .post(
            "/v1/sync",
            &aws_sync("devs", "ASIADEV", 3600, None, Some("dev")),
        )
        .await;
    assert!(
        body["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("shadowed"),
        "{body}"
    );
    let devs = session_status(&c, "devs").await;
    assert_eq!(devs["shadowed"], json!(["~/.aws/credentials [dev]"]));

    // The helper prints botocore's Version 1 JSON.
    let out = helper(&agent.state_dir, Some("sess")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["Version"], 1);
    assert_eq!(doc["AccessKeyId"], "ASIASESS");
    assert_eq!(doc["SessionToken"], "token-of-ASIASESS");
    // Several AWS sessions and no --secret: a message, exit 1.
    let out = helper(&agent.state_dir, None).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secret"));

    // Revoke takes the line out again, the rest byte for byte.
    let (status, _) = c.delete("/v1/secrets/sess").await;
    assert_eq!(status, 200);
    let devs_line = line.replace("--secret sess", "--secret devs");
    assert_eq!(
        std::fs::read_to_string(aws.join("config")).unwrap(),
        format!("# mine\n[default]\nregion = us-west-2\n\n[profile dev]\nregion = eu-west-1\n{devs_line}")
    );
    let out = helper(&agent.state_dir, Some("sess")).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no session secret sess"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_serving_until_expiry() {
    let home = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(home.path())).await;
    installed(
        &agent.client(),
        &aws_sync("kept", "ASIAKEPT", 3600, Some("e"), None),
    )
    .await;
    let token = env_token(&agent.state_dir, "e");
    assert_private(&agent, "credentials/sessions.json");
    agent.stop().await;
    let agent = TestAgent::start(config(home.path())).await;
    let (status, doc) = ecs(&agent.client(), "kept", Some(&token)).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["AccessKeyId"], "ASIAKEPT");
    // It came back on another port (0 picks one): the env follows it.
    let want = format!(
        "{}/v1/credentials/aws/kept",
        agent.url.replace("localhost", "127.0.0.1")
    );
    let mut seen = String::new();
    for _ in 0..100 {
        let (_, run) = agent
            .client()
            .run("e", &["printenv", "AWS_CONTAINER_CREDENTIALS_FULL_URI"])
            .await;
        seen = run["stdout"].as_str().unwrap_or_default().trim().to_owned();
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, want);
    agent.stop().await;
}

/// `agent credentials aws [--secret NAME] --state-dir DIR` (a child the
/// test's runtime does not block on: it serves the agent).
async fn helper(state_dir: &Path, secret: Option<&str>) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(AGENT_BIN);
    cmd.args(["credentials", "aws", "--state-dir"])
        .arg(state_dir);
    if let Some(s) = secret {
        cmd.args(["--secret", s]);
    }
    cmd.output().await.unwrap()
}

/// `GET` on the agent with raw headers (reqwest sets Host itself).
async fn raw_get(url: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = vec![];
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_metadata_server_answers_the_node_user_only_and_checks_headers() {
    let home = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(home.path())).await;
    let c = agent.client();
    installed(&c, &gcp_sync("gcp", "ya29.MINTED-token", "e")).await;
    let host = agent.url.trim_start_matches("http://").to_owned();
    let flavor = ("Metadata-Flavor", "Google");
    let (status, head, _) = raw_get(&agent.url, "/", &[("Host", &host), flavor]).await;
    assert_eq!(status, 200);
    assert!(head.contains("metadata-flavor: google"), "{head}");
    let token_path = "/computeMetadata/v1/instance/service-accounts/default/token";
    let (status, head, body) = raw_get(&agent.url, token_path, &[("Host", &host), flavor]).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("metadata-flavor: google"), "{head}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["access_token"], "ya29.MINTED-token");
    assert_eq!(doc["token_type"], "Bearer");
    let (status, _, body) = raw_get(
        &agent.url,
        "/computeMetadata/v1/project/project-id",
        &[("Host", &host), flavor],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "proj-1"));
    // Header tricks: no flavor, a foreign Host (DNS rebinding), a proxy's
    // forwarding header, a `..` path.
    for (path, headers) in [
        (token_path, vec![("Host", host.as_str())]),
        (token_path, vec![("Host", "evil.example"), flavor]),
        (
            token_path,
            vec![
                ("Host", host.as_str()),
                flavor,
                ("X-Forwarded-For", "10.0.0.1"),
            ],
        ),
        (
            "/computeMetadata/v1/instance/service-accounts/default/../default/token",
            vec![("Host", host.as_str()), flavor],
        ),
    ] {
        let (status, head, body) = raw_get(&agent.url, path, &headers).await;
        assert!(
            status == 403 || status == 404,
            "{path} {headers:?}: {status}"
        );
        assert!(head.contains("metadata-flavor: google"), "{head}");
        assert!(!body.contains("MINTED"), "{body}");
    }
    // A request that does not come through the accept loop has no peer: 403.
    let resp = tower::ServiceExt::oneshot(
        agent_router_for(&agent).await,
        axum::http::Request::get(token_path)
            .header("host", &host)
            .header("metadata-flavor", "Google")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    // Another local user: 403 (needs root to become one).
    match other_uid() {
        None => eprintln!("SKIPPED the other-uid check: not root, cannot act as another user"),
        Some(uid) => {
            // curl as that user (tokio's Command: this runtime serves the agent).
            let url = format!("http://{host}{token_path}");
            let code = |as_other: bool| {
                let mut cmd = tokio::process::Command::new("curl");
                cmd.args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "Metadata-Flavor: Google",
                    &url,
                ]);
                if as_other {
                    cmd.uid(uid).gid(uid);
                }
                cmd.output()
            };
            let out = code(true).await.expect("curl");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
            // The same request as the node user is answered.
            let out = code(false).await.expect("curl");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        }
    }
    agent.stop().await;
}

async fn agent_router_for(agent: &TestAgent) -> axum::Router {
    let mut c = config(Path::new(
        agent
            .state_dir
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap(),
    ));
    c.state_dir = agent.state_dir.clone();
    agent::router(agent::AppState::open(c).await.unwrap())
}

/// A uid other than ours to act as: a user made for the test when root.
fn other_uid() -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let name = "rh-cred-other";
    let _ = std::process::Command::new("useradd")
        .args(["--no-create-home", "--shell", "/usr/sbin/nologin", name])
        .output();
    let user = nix::unistd::User::from_name(name).ok().flatten()?;
    Some(user.uid.as_raw())
}

#[tokio::test]
async fn hostile_requests_are_refused_and_the_agent_keeps_serving() {
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("agent.log");
    let mut child = common::AgentProcess::spawn(home.path(), &home.path().join(".rh/agent"), &log);
    let c = child.client();
    installed(&c, &aws_sync("s", "ASIAHOSTILE", 3600, Some("e"), None)).await;
    let token = env_token(&home.path().join(".rh/agent"), "e");
    // A huge header, a `..` path, a path with NUL and a wrong method.
    let huge = "x".repeat(200_000);
    let (status, _, _) =
        raw_get(&c.url, "/v1/credentials/aws/s", &[("Authorization", &huge)]).await;
    assert!(status >= 400 || status == 0, "{status}");
    for path in [
        "/v1/credentials/aws/../s",
        "/v1/credentials/aws/%2e%2e%2fs",
        "/v1/credentials/aws/s%00",
    ] {
        let (status, _, body) = raw_get(&c.url, path, &[("Authorization", &token)]).await;
        assert!(status >= 400, "{path}: {status}");
        assert!(!body.contains(SECRET));
    }
    let resp = c
        .http
        .post(format!("{}/v1/credentials/aws/s", c.url))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    // An endless request (headers never finish) does not stop the others.
    let slow = tokio::net::TcpStream::connect(c.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (status, doc) = ecs(&c, "s", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(doc["SecretAccessKey"], SECRET);
    drop(slow);
    child.kill9();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains(SECRET) && !logged.contains(&token),
        "the agent log holds a credential"
    );
    assert_nowhere_but_sessions(&home.path().join(".rh/agent"), SECRET);
}
