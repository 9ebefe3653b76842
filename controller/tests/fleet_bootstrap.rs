//! Fleet mode: `cluster bootstrap` of a pull cluster over real SSH installs
//! an agent that pulls from a real OpenBao dev server with a fresh bundle.
//! Every controller run is checked for leaked values and tokens.

mod fleet_common;
#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::time::Instant;

use serde_json::{json, Value};

use fleet_common::*;
use vault_common::{mode, ROOT_TOKEN};

#[test]
fn bootstrap_of_a_pull_cluster_installs_an_agent_that_pulls_with_a_fresh_bundle() {
    let Some((server, _home)) = setup() else {
        return;
    };
    // Node 0: a real sshd serving a home on this machine. The second host
    // has nothing listening: its row fails, the command exits 3.
    let mut w = nodes::World::bare();
    nodes::Fixtures::write(&w.home);
    w.add_node(false, true);
    let node_home = w.nodes[0].home.clone();
    let _stop = nodes::StopAgents(vec![node_home.clone()]);
    let agent_port = vault_common::free_port().to_string();
    let dead_host = format!("127.0.0.1:{}", vault_common::free_port());
    let key = w.client_key.display().to_string();
    let store_env = [
        ("VAULT_ADDR", server.url.as_str()),
        ("VAULT_TOKEN", ROOT_TOKEN),
        ("USER", "alice"),
        ("OPENAI_API_KEY", nodes::Fixtures::OPENAI_KEY),
    ];
    let ctl = |args: &[&str]| {
        let started = Instant::now();
        let run = w.controller_with(args, &store_env);
        eprintln!(
            "controller {} took {:.1?}",
            args.join(" "),
            started.elapsed()
        );
        run.no_values(&nodes::Fixtures::all());
        assert!(!run.stdout.contains(ROOT_TOKEN) && !run.stderr.contains(ROOT_TOKEN));
        run
    };
    ctl(&[
        "cluster",
        "add",
        "fleet",
        "--pull",
        "--host",
        &w.nodes[0].host(),
        "--host",
        &dead_host,
        "--user",
        "root",
        "--identity-file",
        &key,
        "--agent-port",
        &agent_port,
    ])
    .ok();
    // Something published before the node exists: it must be applied at boot.
    ctl(&["sync", "--cluster", "fleet", "--secret", "huggingface"]).ok();

    let agent = nodes::agent_bin();
    let boot_args = [
        "cluster",
        "bootstrap",
        "fleet",
        "--agent-bin",
        agent.to_str().unwrap(),
        "--poll-interval",
        "1",
        "--allow-var",
        "FLEET_MINE",
        "--json",
    ];
    let run = ctl(&boot_args).code(3);
    let doc = run.json();
    let rows = doc["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{doc:#}");
    assert_eq!(rows[0]["ok"], true, "{doc:#}");
    assert_eq!(rows[0]["pull_bundle"], "~/.rh/agent/bundle.json", "{doc:#}");
    assert!(rows[0]["boot"].is_string(), "{doc:#}");
    assert_eq!(rows[1]["ok"], false, "{doc:#}");
    assert!(rows[1]["pull_bundle"].is_null(), "{doc:#}");

    // On the node: the bundle (0600, wrapped secret_id, no user token), the
    // pull config naming it, and the secret published earlier applied
    // before bootstrap reported the node running (no push involved).
    let bundle = node_home.join(".rh/agent/bundle.json");
    assert_eq!(mode(&bundle), 0o600);
    assert_eq!(mode(&node_home.join(".rh/agent")), 0o700);
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(!text.contains(ROOT_TOKEN));
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["cluster"], "fleet");
    assert!(b["wrapped_secret_id"].is_string(), "{text}");
    let config = node_home.join(".rh/agent/pull.yaml");
    assert_eq!(mode(&config), 0o600);
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert!(
        config_text.contains(&format!("pull_bundle: \"{}\"", bundle.display())),
        "{config_text}"
    );
    assert!(
        config_text.contains("poll_interval_secs: 1"),
        "{config_text}"
    );
    assert!(
        config_text.contains("allow_vars: [\"FLEET_MINE\"]"),
        "{config_text}"
    );
    let hf = node_home.join(".cache/huggingface/token");
    assert_eq!(
        std::fs::read_to_string(&hf).unwrap(),
        nodes::Fixtures::HF_TOKEN
    );
    assert_eq!(mode(&hf), 0o600);
    assert!(node_home.join(".rh/agent/pull/secret_id").is_file());

    // Publishing reaches the bootstrapped node through the store alone; the
    // node applies it and reports, a var lands in a real env process.
    let run = ctl(&test_support::argv(
        "sync --cluster fleet --secret openai --wait 30 --json",
    ))
    .ok();
    let doc = run.json();
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(1), "{doc:#}");
    assert_eq!(doc["nodes"][0]["converged"], true, "{doc:#}");
    let port: u16 = agent_port.parse().unwrap();
    let via_node = |var: &str| {
        let token = std::fs::read_to_string(node_home.join(".rh/agent/token")).unwrap();
        test_support::block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/v1/envs/base_env/run"))
                .bearer_auth(token.trim())
                .json(&json!({ "argv": ["printenv", var] }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let v: Value = resp.json().await.unwrap();
            v["stdout"].as_str().unwrap_or_default().trim().to_owned()
        })
    };
    assert_eq!(via_node("OPENAI_API_KEY"), nodes::Fixtures::OPENAI_KEY);
    // A generic secret's var reaches the node only because bootstrap's
    // --allow-var put it in the node's allow_vars.
    ctl(&[
        "secret",
        "create",
        "mine",
        "--env-var",
        "k=FLEET_MINE",
        "--value",
        &format!("k={V_ENV}"),
    ])
    .ok();
    ctl(&test_support::argv(
        "sync --cluster fleet --secret mine --wait 30",
    ))
    .ok();
    assert_eq!(via_node("FLEET_MINE"), V_ENV);

    // Bootstrapping again sends a fresh bundle (a new wrapping token), which
    // the restarted agent unwraps; the node keeps converging, its previous
    // secret_id is revoked and its previous report row goes.
    let before = std::fs::read_to_string(&bundle).unwrap();
    let old_sid = std::fs::read_to_string(node_home.join(".rh/agent/pull/secret_id")).unwrap();
    assert_eq!(login_status(&server, &bundle, old_sid.trim()), 200);
    ctl(&boot_args).code(3);
    assert_ne!(login_status(&server, &bundle, old_sid.trim()), 200);
    let after = std::fs::read_to_string(&bundle).unwrap();
    let (b1, b2): (Value, Value) = (
        serde_json::from_str(&before).unwrap(),
        serde_json::from_str(&after).unwrap(),
    );
    assert_ne!(b1["wrapped_secret_id"], b2["wrapped_secret_id"]);
    let run = ctl(&["status", "--cluster", "fleet", "--json"]).ok();
    let s = run.json();
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s:#}");
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["applied_version"] == s["published_version"] && n["trust"] == "verified"),
        "{s:#}"
    );
    // A push cluster takes no --poll-interval.
    w.controller(&["cluster", "add", "pushed", "--host", &dead_host])
        .ok();
    w.controller(&["cluster", "bootstrap", "pushed", "--poll-interval", "2"])
        .code(2);
    w.controller(&["cluster", "bootstrap", "pushed", "--allow-var", "X"])
        .code(2);
}
