//! t10-t99: the agent refusing unauthenticated and escaping requests from
//! inside a node, revoke, the systemd node across a restart, a session
//! secret minted here and served on the node, and last the leak check of
//! every output and log of the run.

use super::*;

/// Nodes with systemd as PID 1 and passwordless sudo for `ubuntu`.
const SYSTEMD: &str = "systemd";

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t12_systemd_node_gets_a_system_unit_and_its_envs_are_back_after_a_restart() {
    let s = suite();
    assert!(!s.systemd.is_empty(), "no systemd nodes in the cluster");
    s.add_cluster(SYSTEMD, &s.systemd);
    let out = s.ctl(&["cluster", "bootstrap", SYSTEMD, "--json"]);
    out.assert_code(0);
    let report = out.json();
    for (i, n) in s.systemd.iter().enumerate() {
        let r = &report["nodes"][i];
        assert_eq!(r["boot"], "systemd-system", "{}: {}", n.host, out.show());
        assert_eq!(r["agent"], "x86_64-unknown-linux-musl", "{}", out.show());
        let c = &n.container;
        let show = |prop: &str| {
            exec(
                c,
                &[
                    "systemctl",
                    "show",
                    "-p",
                    prop,
                    "--value",
                    "rh-agent.service",
                ],
            )
            .stdout
            .trim()
            .to_string()
        };
        assert_eq!(show("UnitFileState"), "enabled", "{c}");
        assert_eq!(show("ActiveState"), "active", "{c}");
        assert_eq!(
            show("User"),
            "ubuntu",
            "{c}: the unit runs as the login user"
        );
        let ps = exec(c, &["ps", "-o", "user=", "-C", "agent"]);
        assert!(
            !ps.stdout.trim().is_empty() && ps.stdout.split_whitespace().all(|u| u == "ubuntu"),
            "{c}: the agent does not run as ubuntu: {}",
            ps.show()
        );
    }
    s.sync(SYSTEMD, &[]).assert_code(0);
    s.sync(SYSTEMD, &["--env", NAMED_ENV]).assert_code(0);
    for n in &s.systemd {
        docker(&["restart", "-t", "10", &n.container]).assert_code(0);
    }
    for n in &s.systemd {
        assert_back_after_restart(n, Duration::from_secs(60), "systemd");
    }
    // Back with its envs and vars, and files, before any sync.
    let mut p = check_both_envs(s, SYSTEMD, &s.systemd);
    for n in &s.systemd {
        p.extend(check_provider_files(s, n));
    }
    assert_no_problems("systemd node after a restart (no re-sync)", p);
}

/// One request to the agent from inside a node; returns (status, body).
fn agent_request(
    c: &str,
    method: &str,
    route: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let url = format!("http://127.0.0.1:{AGENT_PORT}{route}");
    let mut args = vec![
        "exec",
        "-i",
        c,
        "curl",
        "-sS",
        "-m",
        "10",
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ];
    let auth;
    if let Some(t) = token {
        auth = format!("Authorization: Bearer {t}");
        args.push("-H");
        args.push(&auth);
    }
    if !body.is_empty() {
        args.push("--data-binary");
        args.push("@-");
    }
    args.push(&url);
    let mut cmd = std::process::Command::new("docker");
    cmd.args(&args);
    let out = run_with_input(
        cmd,
        Duration::from_secs(60),
        "docker",
        &args,
        Some(body.as_bytes().to_vec()),
    );
    assert_eq!(out.code, 0, "curl failed: {}", out.show());
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn probe_body(path: &str) -> String {
    serde_json::json!({
        "secret": {"name": "e2e-probe", "provider": "e2e_probe", "values": {"k": "probe-value"}},
        "path": path,
    })
    .to_string()
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t10_agent_refuses_unauthenticated_and_escaping_requests_from_inside_a_node() {
    // Talks to the agent directly: needs the boot script's agent, not the controller.
    let s = suite();
    let n = &s.agents[0];
    let c = n.container.as_str();
    assert!(
        wait_agent(c, Duration::from_secs(30)),
        "{c}: no agent answers /healthz (boot script)"
    );
    let token = exec(c, &["cat", &abs(".rh/agent/token")]);
    token.assert_code(0);
    let token = token.stdout.trim().to_string();
    let write = "/v1/secrets/_write_to_file";
    exec(
        c,
        &[
            "rm",
            "-rf",
            "/tmp/e2e-escape",
            &abs("e2e-probe"),
            &abs("e2e-link"),
        ],
    );
    exec(c, &["install", "-d", "-m", "1777", "/tmp/e2e-escape"]).assert_code(0);

    let mut p = Vec::new();
    let refused = |what: &str, status: u16, body: &str, allowed: &[u16], p: &mut Vec<String>| {
        if !allowed.contains(&status) {
            p.push(format!("{what}: status {status}, want one of {allowed:?}"));
        }
        let json: Option<Value> = serde_json::from_str(body).ok();
        if !json
            .as_ref()
            .is_some_and(|j| j.get("error").is_some() && j.get("message").is_some())
        {
            p.push(format!("{what}: body is not {{error, message}}: {body}"));
        }
    };

    let (st, body) = agent_request(c, "POST", write, None, &probe_body("e2e-probe/noauth.json"));
    refused("no token", st, &body, &[401], &mut p);
    let (st, body) = agent_request(
        c,
        "POST",
        write,
        Some("not-the-token"),
        &probe_body("e2e-probe/wrong.json"),
    );
    refused("wrong token", st, &body, &[401, 403], &mut p);
    let (st, body) = agent_request(c, "POST", "/v1/sync", None, r#"{"items":[]}"#);
    refused("sync without token", st, &body, &[401], &mut p);
    let (st, body) = agent_request(c, "GET", "/v1/status", Some("not-the-token"), "");
    refused("status with a wrong token", st, &body, &[401, 403], &mut p);
    for path in ["e2e-probe/noauth.json", "e2e-probe/wrong.json"] {
        if node_exists(c, path) {
            p.push(format!("~/{path} was written without a valid token"));
        }
    }

    // The control: the same request with the token is accepted and writes.
    let (st, body) = agent_request(
        c,
        "POST",
        write,
        Some(&token),
        &probe_body("e2e-probe/ok.json"),
    );
    if st != 200 {
        p.push(format!("valid request refused: status {st}: {body}"));
    }
    match node_file(c, "e2e-probe/ok.json") {
        Some(f) if f.mode == "600" && f.owner == "ubuntu:ubuntu" => {}
        other => p.push(format!(
            "valid request did not write a 0600 ubuntu file: {other:?}"
        )),
    }

    // Escapes: relative, absolute, tilde, and through a symlink.
    exec_ubuntu(c, "ln -sfn /tmp/e2e-escape ~/e2e-link").assert_code(0);
    for (what, path) in [
        ("dot-dot", "../../tmp/e2e-escape/dotdot.json"),
        ("absolute", "/tmp/e2e-escape/absolute.json"),
        ("tilde dot-dot", "~/../../tmp/e2e-escape/tilde.json"),
        ("symlink", "e2e-link/symlink.json"),
    ] {
        let (st, body) = agent_request(c, "POST", write, Some(&token), &probe_body(path));
        refused(what, st, &body, &[400, 403, 422], &mut p);
    }
    let escaped = exec(
        c,
        &[
            "find",
            "/tmp/e2e-escape",
            "/home",
            "-name",
            "*.json",
            "-newer",
            "/tmp/e2e-escape",
            "-not",
            "-path",
            "*/e2e-probe/ok.json",
            "-not",
            "-path",
            "/home/ubuntu/.rh/*",
        ],
    );
    if !escaped.stdout.trim().is_empty() {
        p.push(format!(
            "files written by refused requests: {}",
            escaped.stdout.trim()
        ));
    }
    // Too big a body is refused, and the agent keeps running.
    let huge = probe_body(&"a/".repeat(4 << 20));
    let (st, _) = agent_request(c, "POST", write, Some(&token), &huge);
    if !(400..500).contains(&st) {
        p.push(format!("an 8 MiB body got status {st}, want 4xx"));
    }
    if !wait_agent(c, Duration::from_secs(5)) {
        p.push("the agent stopped answering after bad requests".into());
    }
    // Loopback only: the agent's port is closed from the network.
    let addr = format!("{}:{AGENT_PORT}", n.host).parse().expect("addr");
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        p.push(format!(
            "the agent port answers on {} (not loopback only)",
            n.host
        ));
    }
    exec(c, &["rm", "-rf", "/tmp/e2e-escape", &abs("e2e-link")]);
    assert_no_problems("agent request checks", p);
}

fn fixture_files() -> Vec<&'static str> {
    vec![
        ".aws/credentials",
        ".azure/clouds.config",
        ".config/gcloud/application_default_credentials.json",
        ".config/gh/hosts.yml",
        ".cache/huggingface/token",
        ".kube/config",
        ".lambda_cloud/lambda_keys",
        ".ssh/id_e2e",
        ".ssh/id_e2e.pub",
        ".ssh/sky-key",
        ".ssh/sky-key.pub",
    ]
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t11_revoke_removes_files_and_vars_and_status_shows_nothing_left() {
    let s = booted();
    let own = node_with_own_profile(s);
    s.sync(BOOT, &[]).assert_code(0);
    s.sync(BOOT, &["--env", NAMED_ENV]).assert_code(0);
    for name in SECRETS {
        s.ctl(&["revoke", name, "--cluster", BOOT]).assert_code(0);
    }
    let mut p = Vec::new();
    for n in &s.agents {
        for f in fixture_files() {
            if n.host == own.host && f == ".aws/credentials" {
                match node_file(&n.container, f) {
                    None => p.push(format!(
                        "{}: revoke deleted the node's own aws profile",
                        n.container
                    )),
                    Some(file) => {
                        let t = file.text();
                        if !OWN_PROFILE
                            .lines()
                            .all(|l| t.lines().any(|x| x.trim() == l))
                        {
                            p.push(format!(
                                "{}: own aws profile damaged by revoke:\n{t}",
                                n.container
                            ));
                        }
                        if t.contains(s.value("aws.access_key"))
                            || t.contains(s.value("aws.secret_key"))
                        {
                            p.push(format!(
                                "{}: revoked aws keys still in the file",
                                n.container
                            ));
                        }
                    }
                }
            } else if node_exists(&n.container, f) {
                p.push(format!(
                    "{}: ~/{f} is still there after revoke",
                    n.container
                ));
            }
        }
    }
    for env in ["base_env", NAMED_ENV] {
        let (out, stdouts) = s.printenv(BOOT, env);
        if out.code != 0 {
            p.push(format!("run --env {env} after revoke: exit {}", out.code));
        }
        for so in stdouts {
            for var in ENV_VARS {
                if so.lines().any(|l| l.starts_with(&format!("{var}="))) {
                    p.push(format!("env {env}: {var} still set after revoke"));
                }
            }
        }
    }
    let status = s.ctl(&["status", "--cluster", BOOT, "--json"]);
    status.assert_code(0);
    let mut strings = Vec::new();
    all_strings(&status.json(), &mut strings);
    for name in SECRETS {
        if strings.iter().any(|x| x == name) {
            p.push(format!("status still lists secret {name}"));
        }
    }
    for f in fixture_files() {
        if strings.iter().any(|x| x.ends_with(f)) {
            p.push(format!("status still lists file ~/{f}"));
        }
    }
    assert_no_problems("after revoking every secret", p);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t20_a_session_secret_is_minted_here_served_on_the_node_and_the_long_lived_key_leaves() {
    let s = booted();
    let n = &s.agents[0];
    let c = &n.container;
    // The fixture's static keys were pushed the old way first.
    s.sync(BOOT, &["--secret", "aws"]).assert_code(0);
    let long_key = s.value("aws.access_key").to_owned();
    let long_secret = s.value("aws.secret_key").to_owned();
    // moto's STS on the host's loopback: the controller mints there; nodes
    // never talk to it.
    let (moto, sts) =
        test_support::python::moto().expect("python3 with moto (pip install 'moto[server]')");
    let ctl = |args: &[&str]| {
        let mut cmd = s.controller_command(args);
        cmd.env("AWS_ENDPOINT_URL_STS", &sts)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let out = run_with_deadline(cmd, Duration::from_secs(180), "controller", args);
        s.log_to("controller.log", &out);
        out
    };
    ctl(&[
        "secret",
        "create",
        "e2e-sess",
        "--provider",
        "aws",
        "--session",
        "--force",
        "--role-arn",
        "arn:aws:iam::123456789012:role/e2e",
        "--duration",
        "15m",
    ])
    .assert_code(0);
    let out = ctl(&[
        "sync",
        "--cluster",
        BOOT,
        "--secret",
        "e2e-sess",
        "--env",
        NAMED_ENV,
        "--json",
    ]);
    drop(moto);
    out.assert_code(0);
    // A plain shell of the node user: the profile's credential_process.
    let shell = exec_ubuntu(
        c,
        "line=$(sed -n 's/^credential_process = //p' ~/.aws/config | head -n1); eval \"$line\"",
    );
    assert_eq!(
        shell.code,
        0,
        "{c}: credential_process failed: {}",
        shell.show()
    );
    let doc: Value = serde_json::from_str(shell.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}", shell.show()));
    assert_eq!(doc["Version"], 1, "{c}: {doc}");
    let minted_key = doc["AccessKeyId"].as_str().unwrap_or_default().to_owned();
    assert!(
        !minted_key.is_empty() && minted_key != long_key,
        "{c}: {doc}"
    );
    s.add_marker(
        "e2e-sess.secret",
        doc["SecretAccessKey"].as_str().unwrap_or_default(),
    );
    // An env process: the ECS protocol with its env's token (bash's /dev/tcp,
    // no client on the image), 401 without it.
    let probe = |with_token: bool| {
        let auth = if with_token {
            "printf 'Authorization: %s\\r\\n' \"$(cat \"$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE\")\" >&3;"
        } else {
            ""
        };
        let script = format!(
            "u=${{AWS_CONTAINER_CREDENTIALS_FULL_URI#http://}}; hp=${{u%%/*}}; path=/${{u#*/}}; \
             exec 3<>/dev/tcp/${{hp%:*}}/${{hp#*:}}; printf 'GET %s HTTP/1.0\\r\\n' \"$path\" >&3; {auth} \
             printf '\\r\\n' >&3; head -c 200 <&3 | head -n1"
        );
        s.ctl_exposing(&[
            "run",
            "--cluster",
            BOOT,
            "--env",
            NAMED_ENV,
            "--node",
            &n.host,
            "--",
            "bash",
            "-c",
            &script,
        ])
    };
    let ok = probe(true);
    assert!(ok.stdout.contains(" 200 "), "{c}: {}", ok.show());
    let refused = probe(false);
    assert!(refused.stdout.contains(" 401 "), "{c}: {}", refused.show());
    // The long-lived key the earlier sync pushed was removed by the session
    // (the agent installed it): found nowhere in the home or the agent's state.
    for needle in [&long_key, &long_secret] {
        let grep = exec(c, &["grep", "-r", "-l", "-F", needle.as_str(), NODE_HOME]);
        assert_ne!(
            grep.code, 0,
            "{c}: the long-lived key is still in {}",
            grep.stdout
        );
    }
    let status = s.ctl(&["status", "--cluster", BOOT, "--json"]);
    status.assert_code(0);
    let sessions = &status.json()["nodes"][0]["status"]["sessions"];
    assert!(
        sessions.as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["name"] == "e2e-sess" && x["expired"] == false)),
        "{}",
        status.show()
    );
    s.ctl(&["revoke", "e2e-sess", "--cluster", BOOT])
        .assert_code(0);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t99_no_secret_value_in_any_controller_output_agent_log_or_audit_log() {
    let s = booted();
    // Debug and trace output too.
    s.ctl(&["-vv", "sync", "--cluster", BOOT]);
    s.ctl(&["-vv", "status", "--cluster", BOOT]);
    s.ctl(&["secret", "detect"]);
    s.ctl(&["secret", "list"]);
    let dir = s.work.join("leak-logs");
    let st = std::process::Command::new(s.root.join("e2e/cluster.sh"))
        .args(["logs", &dir.to_string_lossy()])
        .env("RH_E2E_PROJECT", &s.project)
        .status()
        .expect("e2e/cluster.sh logs");
    assert!(st.success(), "collecting node logs failed");
    let mut files = vec![s.logs.join("controller.log")];
    for e in fs::read_dir(&dir).expect("logs dir").flatten() {
        files.push(e.path());
    }
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("agent")),
        "no agent logs collected"
    );
    let extra = s.extra_markers.lock().unwrap();
    let mut leaks = Vec::new();
    for f in &files {
        let text = String::from_utf8_lossy(&fs::read(f).unwrap_or_default()).into_owned();
        for m in s.markers.iter().chain(extra.iter()).filter(|m| m.secret) {
            if text.contains(&m.value) {
                leaks.push(format!("{} appears in {}", m.label, f.display()));
            }
        }
    }
    leaks.sort();
    leaks.dedup();
    eprintln!(
        "leak check: {} log files, {} markers",
        files.len(),
        s.markers.len() + extra.len()
    );
    assert_no_problems("secret values found in logs", leaks);
}
