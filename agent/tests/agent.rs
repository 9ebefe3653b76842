//! Integration tests against a real agent on 127.0.0.1:0 (in-process server,
//! env hosts are the real agent binary; the kill -9 test runs the binary
//! itself): file bytes and modes, env vars seen by real child processes,
//! persistence across restarts, env-host crash recovery, exact revoke,
//! concurrent writers, kill -9 during writes, and no value in the audit log
//! or stderr.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{generic_write, mode, AgentProcess, TestAgent};

const VALUE: &str = "sk-live-INTEGRATION-secret-0001";

#[tokio::test]
async fn write_to_file_bytes_and_modes() {
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    let (status, body) = c
        .post(
            "/v1/secrets/_write_to_file",
            &generic_write("cfg", "~/.config/app/creds.json", json!({"token": VALUE})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "written");
    assert_eq!(
        body["results"][0]["files"][0]["path"],
        "~/.config/app/creds.json"
    );
    let path = home.path().join(".config/app/creds.json");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{{\n  \"token\": \"{VALUE}\"\n}}\n")
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&home.path().join(".config/app")), 0o700);
    // same again: unchanged, file untouched
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let (_, body) = c
        .post(
            "/v1/secrets/_write_to_file",
            &generic_write("cfg", "~/.config/app/creds.json", json!({"token": VALUE})),
        )
        .await;
    assert_eq!(body["results"][0]["status"], "unchanged");
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    agent.stop().await;
}

#[tokio::test]
async fn aws_credentials_merge_and_exact_revoke() {
    let original = "[work]\naws_access_key_id = AKIAWORK\naws_secret_access_key = worksecret\nregion = eu-west-1\n";
    let home = common::home_with(".aws/credentials", original);
    let aws = home.path().join(".aws");
    let agent = TestAgent::start(common::config(home.path())).await;
    let c = agent.client();
    let secret = json!({"name": "aws", "provider": "aws",
        "values": {"access_key": "AKIANEW", "secret_key": VALUE}});
    let (status, body) = c
        .post("/v1/secrets/_write_to_file", &json!({"secret": secret}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["files"][0]["path"], "~/.aws/credentials");
    let text = std::fs::read_to_string(aws.join("credentials")).unwrap();
    assert!(
        text.starts_with(original),
        "other profile kept byte for byte:\n{text}"
    );
    assert!(
        text.contains("[default]") && text.contains("AKIANEW") && text.contains(VALUE),
        "{text}"
    );
    assert_eq!(mode(&aws.join("credentials")), 0o600);
    // env vars of the same secret in base_env
    let (status, body) = c
        .post(
            "/v1/sync",
            &json!({"items": [{"secret": secret, "env": "base_env"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, out) = c
        .run("base_env", &["printenv", "AWS_SECRET_ACCESS_KEY"])
        .await;
    assert_eq!(out["stdout"], format!("{VALUE}\n"));
    // revoke removes exactly what it installed
    let (status, body) = c.delete("/v1/secrets/aws").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "removed");
    let text = std::fs::read_to_string(aws.join("credentials")).unwrap();
    assert!(!text.contains(VALUE) && !text.contains("AKIANEW"), "{text}");
    assert!(
        text.contains("[work]") && text.contains("AKIAWORK") && text.contains("region = eu-west-1"),
        "{text}"
    );
    let (_, out) = c
        .run("base_env", &["printenv", "AWS_SECRET_ACCESS_KEY"])
        .await;
    assert_eq!(out["exit_code"], 1, "{out}");
    let (_, status) = c.get("/v1/status").await;
    assert_eq!(status["secrets"], json!([]));
    agent.stop().await;
}

#[tokio::test]
async fn revoke_generic_keeps_other_content() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("shared.json");
    std::fs::write(&file, "{\"mine\": \"keep-me\", \"also\": [1, 2]}\n").unwrap();
    let agent = TestAgent::start(common::config(home.path())).await;
    let c = agent.client();
    let (status, _) = c
        .post(
            "/v1/secrets/_write_to_file",
            &generic_write("s", "~/shared.json", json!({"api": VALUE, "x": "y"})),
        )
        .await;
    assert_eq!(status, 200);
    // dry-run revoke changes nothing
    let before = std::fs::read(&file).unwrap();
    let (status, body) = c.delete("/v1/secrets/s?dry_run=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "would_write");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let (status, _) = c.delete("/v1/secrets/s").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v, json!({"mine": "keep-me", "also": [1, 2]}));
    let (status, _) = c.delete("/v1/secrets/s").await;
    assert_eq!(status, 404);
    agent.stop().await;
}

#[tokio::test]
async fn env_vars_are_seen_by_commands_even_when_set_later() {
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    // base_env exists from the start
    let (status, out) = c.run("base_env", &["sh", "-c", "echo $HOME"]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["stdout"].as_str().unwrap().trim(),
        home.path().to_str().unwrap()
    );
    // a new env is created by _set_env_vars
    let (status, body) = c.set_vars("train", json!({"RH_ONE": VALUE})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "written");
    assert!(!body.to_string().contains(VALUE));
    let (_, out) = c.run("train", &["printenv", "RH_ONE"]).await;
    assert_eq!(out["stdout"], format!("{VALUE}\n"));
    assert_eq!(out["exit_code"], 0);
    // set after the env process started
    let (_, body) = c.set_vars("train", json!({"RH_TWO": "second"})).await;
    assert_eq!(body["results"][0]["status"], "written");
    let (_, out) = c
        .run(
            "train",
            &["sh", "-c", "printf '%s/%s' \"$RH_ONE\" \"$RH_TWO\""],
        )
        .await;
    assert_eq!(out["stdout"], format!("{VALUE}/second"));
    // other envs do not see them
    let (_, out) = c.run("base_env", &["printenv", "RH_ONE"]).await;
    assert_eq!(out["exit_code"], 1);
    // unchanged when set again
    let (_, body) = c.set_vars("train", json!({"RH_TWO": "second"})).await;
    assert_eq!(body["results"][0]["status"], "unchanged");
    // exit codes, stderr, signals, timeouts
    let (_, out) = c.run("train", &["sh", "-c", "echo oops >&2; exit 7"]).await;
    assert_eq!(
        (out["exit_code"].as_i64(), out["stderr"].as_str()),
        (Some(7), Some("oops\n"))
    );
    let (_, out) = c.run("train", &["sh", "-c", "kill -KILL $$"]).await;
    assert_eq!(out["exit_code"], 137);
    let (_, out) = c
        .post(
            "/v1/envs/train/run",
            &json!({"argv": ["sleep", "30"], "timeout_secs": 1}),
        )
        .await;
    assert_eq!(out["timed_out"], true);
    assert_eq!(out["exit_code"], 137);
    let (_, out) = c.run("train", &["/definitely/not/here"]).await;
    assert_eq!(out["exit_code"], 127);
    agent.stop().await;
}

/// Env names may start with '-' (the name rules allow it): the env host must
/// get the name as a value, not parse it as a flag and exit.
#[tokio::test]
async fn env_names_that_look_like_flags_work() {
    let (_home, agent) = common::temp_agent().await;
    let c = agent.client();
    for env in ["-h", "--version", "--name"] {
        let (status, body) = c.set_vars(env, json!({"RH_FLAGGY": VALUE})).await;
        assert_eq!(status, 200, "{env}: {body}");
        let (status, out) = c.run(env, &["printenv", "RH_FLAGGY"]).await;
        assert_eq!(status, 200, "{env}: {out}");
        assert_eq!(out["stdout"], format!("{VALUE}\n"), "{env}");
        let first = env_pid(&c, env).await.expect("env has a pid");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(env_pid(&c, env).await, Some(first), "{env}: host restarted");
    }
    agent.stop().await;
}

#[tokio::test]
async fn concurrent_runs_in_one_env() {
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    c.set_vars("base_env", json!({"RH_N": "n"})).await;
    let dir = home.path().join("barrier");
    std::fs::create_dir(&dir).unwrap();
    // Each run marks itself started, then waits until all 8 have: only
    // possible if they run at the same time (else the first gives up, exit 1).
    let runs = (0..8).map(|i| {
        let c = c.clone();
        let dir = dir.clone();
        async move {
            let script = format!(
                "touch {d}/{i}; n=0; while [ $(ls {d} | wc -l) -lt 8 ]; do \
                 n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05; done; echo ${{RH_N}}{i}",
                d = dir.display()
            );
            c.run("base_env", &["sh", "-c", &script]).await
        }
    });
    let outs = futures_join_all(runs).await;
    for (i, (status, out)) in outs.into_iter().enumerate() {
        assert_eq!(status, 200);
        assert_eq!(out["exit_code"], 0, "{out}");
        assert_eq!(out["stdout"], format!("n{i}\n"));
    }
    agent.stop().await;
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn envs_come_back_after_a_restart() {
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    c.set_vars("persist", json!({"RH_KEEP": VALUE})).await;
    c.set_vars("base_env", json!({"RH_BASE": "b"})).await;
    let envs_file = home.path().join(".rh/agent/envs.json");
    assert_eq!(mode(&envs_file), 0o600);
    agent.stop().await;
    // the env processes are gone with the agent
    let agent = TestAgent::start(common::config(home.path())).await;
    let c = agent.client();
    let (status, out) = c.run("persist", &["printenv", "RH_KEEP"]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], format!("{VALUE}\n"));
    let (_, out) = c.run("base_env", &["printenv", "RH_BASE"]).await;
    assert_eq!(out["stdout"], "b\n");
    let (_, status) = c.get("/v1/status").await;
    let names: Vec<&str> = test_support::names(&status["envs"]);
    assert_eq!(names, vec!["base_env", "persist"]);
    agent.stop().await;
}

async fn env_pid(c: &common::Client, env: &str) -> Option<i32> {
    let (_, status) = c.get("/v1/status").await;
    status["envs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == env)
        .and_then(|e| e["pid"].as_i64())
        .map(|p| p as i32)
}

#[tokio::test]
async fn a_killed_env_host_is_restarted_with_its_vars() {
    let (_home, agent) = common::temp_agent().await;
    let c = agent.client();
    c.set_vars("crashy", json!({"RH_SURVIVES": VALUE})).await;
    let pid = env_pid(&c, "crashy").await.expect("crashy has a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_pid = loop {
        match env_pid(&c, "crashy").await {
            Some(p) if p != pid => break p,
            _ => {}
        }
        assert!(Instant::now() < deadline, "env host was not restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(new_pid, pid);
    let (status, out) = c.run("crashy", &["printenv", "RH_SURVIVES"]).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], format!("{VALUE}\n"));
    agent.stop().await;
    // stopping the agent stops its env hosts
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(new_pid), None).is_err();
    assert!(gone, "env host {new_pid} outlived the agent");
}

#[tokio::test]
async fn concurrent_writers_to_one_file_lose_nothing() {
    let (home, agent) = common::temp_agent().await;
    let c = agent.client();
    let writes = (0..24).map(|i| {
        let c = c.clone();
        async move {
            let body = if i % 2 == 0 {
                generic_write(
                    &format!("s{i}"),
                    "~/many.json",
                    json!({format!("key{i}"): format!("v{i}")}),
                )
            } else {
                json!({"items": [{"secret": {"name": format!("s{i}"), "provider": "custom",
                    "values": {format!("key{i}"): format!("v{i}")}}, "path": "~/many.json"}]})
            };
            let route = if i % 2 == 0 {
                "/v1/secrets/_write_to_file"
            } else {
                "/v1/sync"
            };
            c.post(route, &body).await
        }
    });
    for (status, body) in futures_join_all(writes).await {
        assert_eq!(status, 200, "{body}");
    }
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("many.json")).unwrap())
            .unwrap();
    let map = v.as_object().unwrap();
    assert_eq!(map.len(), 24, "{v}");
    for i in 0..24 {
        assert_eq!(map[&format!("key{i}")], format!("v{i}"));
    }
    let (_, status) = c.get("/v1/status").await;
    assert_eq!(status["secrets"].as_array().unwrap().len(), 24);
    agent.stop().await;
}

#[test]
fn kill_9_during_writes_leaves_old_or_new_files_and_no_value_in_logs() {
    let home = tempfile::tempdir().unwrap();
    let state_dir = home.path().join(".rh/agent");
    let stderr_path = home.path().join("agent-stderr.log");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let values: Vec<String> = (0..6)
        .map(|i| format!("{VALUE}-{i}-{}", "p".repeat(4000)))
        .collect();
    let file = home.path().join("k9/big.json");
    for round in 0..6 {
        let mut agent = AgentProcess::spawn(home.path(), &state_dir, &stderr_path);
        let c = agent.client();
        let writer = {
            let c = c.clone();
            let values = values.clone();
            rt.spawn(async move {
                'send: for n in 0.. {
                    let v = &values[n % values.len()];
                    let body = json!({
                        "secret": {"name": "big", "provider": "custom",
                                   "values": {"k": v, "pad": "x".repeat(20_000)}},
                        "path": "~/k9/big.json", "overwrite": true});
                    let sync = json!({"items": [{"secret": {"name": "big2", "provider": "openai",
                        "values": {"api_key": v}}, "env": "base_env"}], "overwrite": true});
                    for (path, body) in [("/v1/secrets/_write_to_file", &body), ("/v1/sync", &sync)]
                    {
                        let send = c
                            .http
                            .post(format!("{}{path}", c.url))
                            .bearer_auth(&c.token)
                            .json(body)
                            .send();
                        if send.await.is_err() {
                            break 'send;
                        }
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        agent.kill9();
        let _ = rt.block_on(writer);
        if file.exists() {
            let text = std::fs::read_to_string(&file).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("torn file after kill -9 ({e})"));
            assert!(
                values.iter().any(|x| v["k"] == *x),
                "file holds neither old nor new value"
            );
            assert_eq!(mode(&file), 0o600);
        }
        for state in ["installed.json", "envs.json"] {
            let p = state_dir.join(state);
            if p.exists() {
                let text = std::fs::read_to_string(&p).unwrap();
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("torn {state} ({e})"));
            }
        }
    }
    assert!(file.exists(), "no write ever completed");
    // After all that, a fresh agent starts on the same state and serves.
    let agent = AgentProcess::spawn(home.path(), &state_dir, &stderr_path);
    let c = agent.client();
    let (status, out) = rt.block_on(c.run("base_env", &["printenv", "OPENAI_API_KEY"]));
    assert_eq!(status, 200);
    assert!(
        values.iter().any(|v| out["stdout"] == format!("{v}\n")),
        "{out}"
    );
    drop(agent);
    // No value anywhere in the audit log or the agent's stderr (debug level).
    let audit = std::fs::read_to_string(state_dir.join("audit.log")).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(audit.contains("/v1/secrets/_write_to_file"));
    assert!(stderr.contains("agent listening"), "{stderr}");
    for text in [&audit, &stderr] {
        assert!(!text.contains(VALUE), "a value leaked into a log");
        assert!(!text.contains("pppppppp"));
    }
}

#[tokio::test]
async fn non_loopback_without_tls_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let mut serve = std::process::Command::new(common::AGENT_BIN);
    serve
        .args(["serve", "--listen", "0.0.0.0:0", "--home"])
        .arg(home.path());
    let out = test_support::run(serve, Duration::from_secs(60), "agent serve", None).finished();
    out.assert_code(1);
    let stderr = &out.stderr;
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("TLS"),
        "{stderr}"
    );
    // serve() refuses such a listener too
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let state = agent::AppState::open(common::config(home.path()))
        .await
        .unwrap();
    let err = agent::serve(listener, state.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    state.shutdown().await;
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let home = tempfile::tempdir().unwrap();
    let Some((cert, key)) = common::make_cert(home.path()) else {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    };
    let mut config = common::config(home.path());
    config.tls = Some(agent::config::TlsConfig {
        cert: cert.clone(),
        key,
    });
    let agent = TestAgent::start(config).await;
    let https = agent.url.replace("http://", "https://");
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    // GET `path` over https, with `token` when given.
    let get = |path: &str, token: Option<&str>| {
        let req = client.get(format!("{https}{path}"));
        let req = match token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        async move { req.send().await.unwrap() }
    };
    let health: Value = get("/healthz", None).await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let resp = get("/v1/status", None).await;
    assert_eq!(resp.status().as_u16(), 401);
    let resp = get("/v1/status", Some(agent.token.as_str())).await;
    assert_eq!(resp.status().as_u16(), 200);
    // plain HTTP is not answered on a TLS listener
    assert!(reqwest::get(format!("{}/healthz", agent.url))
        .await
        .is_err());
    agent.stop().await;
}
