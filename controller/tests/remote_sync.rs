//! `controller sync|run|status|revoke|env` over real SSH to real agents: an
//! sshd on loopback per node, an agent per node home, the real controller
//! binary. Asserts file bytes and modes on the node, the environment of a
//! real process in an env, exit codes, host key handling, and that no
//! fixture value ever shows up in the controller's output. Bootstrapping is
//! in `remote_bootstrap.rs`, the SSH connections themselves in
//! `remote_ssh.rs`.

mod common;

use std::fs;

use common::{mode, Fixtures, World};

fn env() -> Vec<(&'static str, &'static str)> {
    Fixtures::env()
}

fn status_of(json: &serde_json::Value, node: usize, secret: &str) -> String {
    test_support::entry(&json["nodes"][node]["results"], "name", secret)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn sync_writes_files_and_vars_then_unchanged_dry_run_status_revoke() {
    let w = World::new(1);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0], &[]);
    let node = &w.nodes[0].home;
    let values = Fixtures::all();

    // First sync: every detected secret written; files 0600 with the exact bytes.
    let r = w
        .controller_with(&["sync", "--cluster", "c", "--json"], &env())
        .ok();
    r.no_values(&values);
    let json = r.json();
    for s in ["aws", "huggingface", "openai"] {
        assert_eq!(status_of(&json, 0, s), "written", "{s}: {json:#}");
    }
    let token = node.join(".cache/huggingface/token");
    assert_eq!(fs::read_to_string(&token).unwrap(), Fixtures::HF_TOKEN);
    assert_eq!(mode(&token), 0o600);
    let creds = node.join(".aws/credentials");
    let text = fs::read_to_string(&creds).unwrap();
    assert!(text.contains(Fixtures::AWS_KEY) && text.contains(Fixtures::AWS_SECRET));
    assert_eq!(mode(&creds), 0o600);
    assert_eq!(mode(&node.join(".aws")), 0o700);

    // Vars are seen by a real process in the env.
    let r = w
        .controller(&["run", "--cluster", "c", "--", "printenv", "OPENAI_API_KEY"])
        .ok();
    assert_eq!(r.stdout, format!("{}\n", Fixtures::OPENAI_KEY));
    // aws came from a file: it is installed as that file, not copied into the
    // env's variables (printenv exits 1 for an unset var).
    let r = w.controller(&test_support::argv(
        "run --cluster c -- printenv AWS_ACCESS_KEY_ID",
    ));
    r.no_values(&values);
    let r = r.code(1);
    assert_eq!(r.stdout, "");
    // The command's exit status comes back.
    w.controller(&["run", "--cluster", "c", "--", "sh", "-c", "exit 7"])
        .code(7);

    // Second sync: unchanged everywhere, the table says so.
    let r = w.controller_with(&["sync", "--cluster", "c"], &env()).ok();
    r.no_values(&values);
    let rows: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert!(rows.len() >= 3, "{}", r.show());
    assert!(rows.iter().all(|l| l.contains("unchanged")), "{}", r.show());

    // Trace-level diagnostics carry no value either.
    let r = w
        .controller_with(&["-vv", "sync", "--cluster", "c"], &env())
        .ok();
    r.no_values(&values);
    r.stderr_has("/v1/sync");

    // A changed local token: --dry-run reports, changes nothing.
    fs::write(
        w.home.join(".cache/huggingface/token"),
        "hf_changedfixture0000002",
    )
    .unwrap();
    let before = fs::read(&token).unwrap();
    let r = w
        .controller_with(
            &test_support::argv("sync --cluster c --secret huggingface --dry-run --json"),
            &env(),
        )
        .ok();
    r.no_values(&["hf_changedfixture0000002"]);
    assert_eq!(status_of(&r.json(), 0, "huggingface"), "conflict");
    let r = w
        .controller_with(
            &test_support::argv(
                "sync --cluster c --secret huggingface --dry-run --overwrite --json",
            ),
            &env(),
        )
        .ok();
    assert_eq!(status_of(&r.json(), 0, "huggingface"), "would_write");
    assert_eq!(fs::read(&token).unwrap(), before);
    // Without --dry-run and without --overwrite: a conflict, nothing written, exit 1.
    let r = w
        .controller_with(
            &["sync", "--cluster", "c", "--secret", "huggingface"],
            &env(),
        )
        .code(1);
    assert!(r.stdout.contains("conflict"), "{}", r.show());
    r.stderr_has("--overwrite");
    assert_eq!(fs::read(&token).unwrap(), before);

    // Status: names, paths, var names, fingerprints; no values.
    let r = w.controller(&["status", "--cluster", "c", "--json"]).ok();
    r.no_values(&values);
    let json = r.json();
    let secrets = json["nodes"][0]["status"]["secrets"].as_array().unwrap();
    let names: Vec<&str> = secrets
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for s in ["aws", "huggingface", "openai"] {
        assert!(names.contains(&s), "{names:?}");
    }
    let r = w.controller(&["status", "--cluster", "c"]).ok();
    r.no_values(&values);
    assert!(r.stdout.contains("OPENAI_API_KEY") && r.stdout.contains("~/.aws/credentials"));

    // Revoke removes the file on the node.
    let r = w
        .controller(&["revoke", "huggingface", "--cluster", "c"])
        .ok();
    assert!(r.stdout.contains("removed"), "{}", r.show());
    assert!(!token.exists());
    let r = w.controller(&["status", "--cluster", "c", "--json"]).ok();
    assert!(!r.stdout.contains("\"huggingface\""), "{}", r.show());
    // Revoking its vars from base_env only.
    w.controller(&["revoke", "openai", "--cluster", "c", "--env", "base_env"])
        .ok();
    let r = w.controller(&["run", "--cluster", "c", "--", "printenv", "OPENAI_API_KEY"]);
    assert_ne!(r.code, 0, "{}", r.show());
    assert!(r.stdout.is_empty());
}

#[test]
fn send_and_env_sync_create_env_processes_with_vars_and_files() {
    let w = World::new(1);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0], &[]);
    let var = format!("MODE={}", Fixtures::VAR_VALUE);
    let r = w
        .controller_with(
            &[
                "env",
                "create",
                "train",
                "--secret",
                "openai",
                "--secret",
                "huggingface",
                "--var",
                &var,
            ],
            &env(),
        )
        .ok();
    r.no_values(&Fixtures::all());
    assert_eq!(mode(&w.home.join(".rh/envs/train.json")), 0o600);
    let r = w.controller(&["env", "show", "train", "--json"]).ok();
    r.no_values(&Fixtures::all());
    assert_eq!(r.json()["vars"], serde_json::json!(["MODE"]));
    let r = w
        .controller_with(&["env", "sync", "train", "--cluster", "c"], &env())
        .ok();
    r.no_values(&Fixtures::all());
    let node = &w.nodes[0].home;
    assert_eq!(
        fs::read_to_string(node.join(".cache/huggingface/token")).unwrap(),
        Fixtures::HF_TOKEN
    );
    let r = w
        .controller(&test_support::argv(
            "run --cluster c --env train -- printenv MODE OPENAI_API_KEY",
        ))
        .ok();
    assert_eq!(
        r.stdout,
        format!("{}\n{}\n", Fixtures::VAR_VALUE, Fixtures::OPENAI_KEY)
    );
    // base_env was not touched by the env sync.
    let r = w.controller(&["run", "--cluster", "c", "--", "printenv", "MODE"]);
    assert_ne!(r.code, 0, "{}", r.show());

    // send: one secret's vars into a named env.
    w.controller_with(
        &["send", "openai", "--cluster", "c", "--env", "other"],
        &env(),
    )
    .ok()
    .no_values(&Fixtures::all());
    let r = w
        .controller(&test_support::argv(
            "run --cluster c --env other -- printenv OPENAI_API_KEY",
        ))
        .ok();
    assert_eq!(r.stdout.trim(), Fixtures::OPENAI_KEY);
    // send a path secret to another path.
    w.controller_with(
        &test_support::argv("send huggingface --cluster c --path ~/alt/hf-token"),
        &env(),
    )
    .ok();
    assert_eq!(
        fs::read_to_string(node.join("alt/hf-token")).unwrap(),
        Fixtures::HF_TOKEN
    );
    assert_eq!(mode(&node.join("alt/hf-token")), 0o600);
}

#[test]
fn unreachable_node_is_reported_and_exit_is_3_with_a_healthy_one() {
    let w = World::new(2);
    Fixtures::write(&w.home);
    let dead = format!("127.0.0.1:{}", common::free_port());
    w.add_cluster("c", &[0, 1], &[&dead]);
    let r = w
        .controller_with(&["sync", "--cluster", "c", "--timeout", "5"], &env())
        .code(3);
    r.no_values(&Fixtures::all());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&dead) && l.contains("failed: cannot reach")),
        "{}",
        r.show()
    );
    r.stderr_has(&dead);
    for n in &w.nodes {
        assert_eq!(
            fs::read_to_string(n.home.join(".cache/huggingface/token")).unwrap(),
            Fixtures::HF_TOKEN
        );
    }
    // `run` across nodes: headers per node, exit 3 because one node is down.
    let r = w
        .controller(&["run", "--cluster", "c", "--", "printenv", "HF_TOKEN"])
        .code(3);
    assert!(r.stdout.contains(&format!("==> {} <==", w.nodes[0].host())));
    assert!(r.stdout.contains(&format!("==> {} <==", w.nodes[1].host())));
    // Only the dead node: exit 1.
    w.controller(&["run", "--cluster", "c", "--node", &dead, "--", "true"])
        .code(1);
    // Status over both healthy nodes: installed alike, nothing flagged; then
    // one node loses a secret and it is flagged as missing there.
    let r = w.controller(&["status", "--cluster", "c"]).code(3);
    assert!(!r.stderr.contains("differently"), "{}", r.show());
    let one = "c1";
    w.add_cluster_with(one, &[0], &[]);
    w.controller(&["revoke", "openai", "--cluster", one]).ok();
    let r = w
        .controller(&["status", "--cluster", "c", "--json"])
        .code(3);
    let drift = &r.json()["drift"];
    assert_eq!(drift[0]["secret"], "openai", "{}", r.show());
    assert_eq!(
        drift[0]["missing_on"],
        serde_json::json!([w.nodes[0].host()])
    );
}

#[test]
fn host_keys_unknown_refused_accepted_on_request_changed_always_refused() {
    let mut w = World::bare();
    Fixtures::write(&w.home);
    w.add_node(true, false);
    w.add_cluster("c", &[0], &[]);
    let token = w.nodes[0].home.join(".cache/huggingface/token");

    let r = w
        .controller_with(&["sync", "--cluster", "c"], &env())
        .code(1);
    r.stderr_has("not in known_hosts");
    r.stderr_has("--accept-new-host-keys");
    assert!(!token.exists());
    assert!(fs::read_to_string(&w.known_hosts).unwrap().is_empty());

    w.controller_with(
        &["sync", "--cluster", "c", "--accept-new-host-keys"],
        &env(),
    )
    .ok();
    assert!(token.exists());
    let kh = fs::read_to_string(&w.known_hosts).unwrap();
    assert!(
        kh.contains(&format!("[127.0.0.1]:{}", w.nodes[0].sshd.port)),
        "{kh}"
    );
    // Now known: no flag needed.
    w.controller_with(&["sync", "--cluster", "c"], &env()).ok();

    // The host's key changes: refused, with or without the flag.
    let other = w.root.path().join("other_host_key");
    common::keygen(&other);
    let public = fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    fs::write(
        &w.known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            w.nodes[0].sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    fs::remove_file(&token).unwrap();
    for extra in [None, Some("--accept-new-host-keys")] {
        let mut args = vec!["sync", "--cluster", "c"];
        args.extend(extra);
        let r = w.controller_with(&args, &env()).code(1);
        r.stderr_has("HOST KEY MISMATCH");
        assert!(!token.exists());
    }
}

#[test]
fn actionable_errors_unknown_cluster_agent_missing_or_down() {
    let mut w = World::new(0);
    Fixtures::write(&w.home);
    // Unknown cluster: usage error listing the known ones.
    let r = w
        .controller_with(&["sync", "--cluster", "nope"], &env())
        .code(2);
    r.stderr_has("unknown cluster \"nope\"");
    r.stderr_has("local");
    // A node without an agent (no token) and one with a token but nothing listening.
    w.add_node(false, true);
    w.add_node(false, true);
    let state = w.nodes[1].home.join(".rh/agent");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("token"), "deadbeef").unwrap();
    let port = common::free_port().to_string();
    w.add_cluster_with("c", &[0, 1], &["--agent-port", &port]);
    let r = w
        .controller_with(&["sync", "--cluster", "c"], &env())
        .code(1);
    r.no_values(&Fixtures::all());
    r.no_values(&["deadbeef"]);
    r.stderr_has("agent is not installed");
    // Said from what was seen: the node refused the agent port (ssh
    // logged the channel it could not open), not guessed from a closed
    // connection.
    r.stderr_has(&format!(
        "agent is not running on port {port} (connection refused on the node)"
    ));
    r.stderr_has("controller cluster bootstrap c");
    // Bad key: auth failure names user and host.
    let bad = w.root.path().join("bad_key");
    common::keygen(&bad);
    w.controller(&[
        "cluster",
        "add",
        "b",
        "--host",
        &w.nodes[0].host(),
        "--user",
        "root",
        "--identity-file",
        &bad.display().to_string(),
    ])
    .ok();
    // The same config but without the good key.
    let config = w.root.path().join("ssh_config_bad");
    let text = fs::read_to_string(&w.ssh_config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("IdentityFile"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&config, text).unwrap();
    let r = w
        .controller_with(
            &["status", "--cluster", "b"],
            &[("RH_SSH_CONFIG", config.to_str().unwrap())],
        )
        .code(1);
    r.stderr_has("authentication failed for root@");
}

#[test]
fn cluster_add_list_show_remove() {
    let w = World::bare();
    w.controller(&test_support::argv(
        "cluster add gpu --host 10.0.0.1 --host ubuntu@10.0.0.2:2222 --user me --agent-port 32301",
    ))
    .ok();
    let file = w.home.join(".rh/clusters/gpu.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&w.home.join(".rh/clusters")), 0o700);
    let r = w.controller(&["cluster", "list", "--json"]).ok();
    let json = r.json();
    let names: Vec<&str> = test_support::names(&json);
    assert_eq!(names, vec!["local", "gpu"]);
    let r = w.controller(&["cluster", "show", "gpu", "--json"]).ok();
    assert_eq!(r.json()["agent_port"], 32301);
    w.controller(&["cluster", "remove", "local"]).code(2);
    w.controller(&["cluster", "add", "x", "--host", "-oProxyCommand=evil"])
        .code(2);
    w.controller(&["cluster", "remove", "gpu"]).ok();
    assert!(!file.exists());
    w.controller(&["cluster", "show", "gpu"]).code(2);
}
