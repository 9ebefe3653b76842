//! Fleet mode against a real OpenBao dev server (AppRole enabled by the
//! test) and real agent processes pulling on loopback: enroll, three agents
//! with bundles, publish, converge (file bytes and modes, a var inside an env
//! process), change one value, revoke, the store down and back (through a
//! TCP relay the test can cut), a reused bundle refused, a node token that
//! cannot read another cluster or the user's own secrets, `cluster
//! remove` stopping updates while leaving files, `sync --wait` and published
//! sessions. Every controller run is checked for leaked values and tokens.
//! Bootstrapping is in `fleet_bootstrap.rs`, what a node or the controller
//! refuses to trust in `fleet_trust.rs`.

mod fleet_common;
#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fleet;
use common::secret_value::values_from;
use controller::vault::local;
use serde_json::{json, Value};

use fleet_common::*;
use vault_common::{mode, raw, root, root_doc, root_put};

#[test]
fn pull_cluster_converges_changes_revokes_and_survives_an_outage() {
    let Some((server, mut home)) = setup() else {
        return;
    };
    let relay = Relay::to(&server);
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    // The bundles name a dead store node first, then the relay: failover.
    home.set_env(
        "VAULT_ADDR",
        &format!("{},{}", vault_common::dead_url(), relay.url()),
    );
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("bundles"), 3);
    home.set_env("VAULT_ADDR", &server.url);

    local::save(home.path(), &file_secret(V1)).unwrap();
    local::save(home.path(), &env_secret()).unwrap();
    let agents: Vec<PullAgent> = bundles.iter().map(|b| start_agent(b)).collect();

    // Publish and wait: every node applies, files 0600, the var in base_env.
    let run = home.ok(&["sync", "--cluster", "gpu", "--wait", "30", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["version"], 1, "{doc:#}");
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 3, "{doc:#}");
    assert!(doc["not_converged"].is_null(), "{doc:#}");
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V1));
        assert_eq!(mode(&a.file(TOKEN_FILE)), 0o600);
        assert_eq!(mode(&a.file(".config/mytool")), 0o700);
        assert_eq!(a.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
        // Secret zero is kept private; the spent bundle is left as it was.
        assert_eq!(mode(&a.state().join("pull/secret_id")), 0o600);
        assert_eq!(mode(&a.state().join("pull/token.json")), 0o600);
        assert_eq!(mode(&a.state().join("pull")), 0o700);
        assert_eq!(a.metric("rh_agent_pull_applied_version"), 1.0);
        let (status, body) = a.call("GET", "/metrics", None, false);
        assert_eq!(status, 401, "{body}");
        let (_, metrics) = a.call("GET", "/metrics", None, true);
        for v in [V1, V_ENV] {
            assert!(!metrics.contains(v));
        }
    }
    // Publishing the same content again changes nothing.
    let run = home.ok(&["sync", "--cluster", "gpu", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["version"], 1, "{doc:#}");

    // Change one value: converged with the new value, the old one gone.
    local::save(home.path(), &file_secret(V2)).unwrap();
    home.ok(&test_support::argv(
        "sync --cluster gpu --secret mytool --wait 30",
    ));
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V2));
        let text = std::fs::read_to_string(a.file(TOKEN_FILE)).unwrap();
        assert!(!text.contains(V1));
        assert_eq!(a.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
        // Both publishes carried their (small) items in the manifest.
        assert_eq!(a.metric("rh_agent_pull_inline_items_total"), 3.0);
        assert_eq!(a.metric("rh_agent_pull_secret_reads_total"), 0.0);
    }
    assert_eq!(secret_reads(&relay), Vec::<String>::new());

    // Revoke: unpublished, and every node removes the var (the file stays).
    home.ok(&["revoke", "myapi", "--cluster", "gpu"]);
    let s = wait_converged(&home, "gpu", 3);
    assert_eq!(s["secrets"], json!(["mytool"]), "{s:#}");
    for a in &agents {
        assert_eq!(a.env_var("MYAPI_KEY"), None);
        assert_eq!(a.token_value().as_deref(), Some(V2));
    }
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(
        table.contains("converged") && table.contains("mytool"),
        "{table}"
    );

    // Store down: nodes keep what they have and count errors; a publish made
    // meanwhile reaches them once the store is back.
    relay.cut();
    let errors_before = agents[0].metric("rh_agent_pull_poll_errors_total");
    // An item over the manifest's inline budget: read from secrets/ instead.
    let padding = "p".repeat(fleet::INLINE_BUDGET_BYTES);
    let mut big = file_secret(V3);
    big.values = values_from([("token", V3), ("padding", padding.as_str())]);
    local::save(home.path(), &big).unwrap();
    home.ok(&["sync", "--cluster", "gpu", "--secret", "mytool"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agents[0].metric("rh_agent_pull_poll_errors_total") < errors_before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "no poll errors while the store is down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V2));
    }
    relay.open();
    let s = wait_converged(&home, "gpu", 3);
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V3));
    }
    for n in s["nodes"].as_array().unwrap() {
        assert!(n["last_error"].is_null(), "{s:#}");
    }
    assert_eq!(secret_reads(&relay).len(), 3, "one read of mytool per node");

    // A manifest whose inline item fails the node's checks (another name,
    // another path): the node reads the item from secrets/ and applies that.
    let manifest = "secret/data/rh/alice/clusters/gpu/manifest";
    let item = "secret/data/rh/alice/clusters/gpu/secrets/mytool";
    let written = root_put(&server, item, root_doc(&server, item));
    let mut doc = root_doc(&server, manifest);
    doc["version"] = json!(doc["version"].as_u64().unwrap() + 1);
    doc["secrets"][0]["kv_version"] = written["data"]["version"].clone();
    doc["secrets"][0]["inline"] = json!({
        "secret": { "name": "evil", "path": "~/.ssh/authorized_keys",
                    "values": { "token": "inline-hostile-4f2a" } }
    });
    root_put(&server, manifest, doc);
    wait_converged(&home, "gpu", 3);
    assert_eq!(secret_reads(&relay).len(), 6, "{:#?}", secret_reads(&relay));
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V3));
        assert!(!a.file(".ssh/authorized_keys").exists());
        assert_eq!(a.metric("rh_agent_pull_secret_reads_total"), 2.0);
    }
}

/// The reads of published items (`secrets/<name>`) the relay saw.
fn secret_reads(relay: &Relay) -> Vec<String> {
    relay
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/clusters/gpu/secrets/"))
        .cloned()
        .collect()
}

#[test]
fn node_tokens_are_least_privilege_bundles_single_use_and_remove_stops_updates() {
    let Some((server, home)) = setup() else {
        return;
    };
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    home.ok(&["cluster", "add", "other", "--pull"]);
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("gpu"), 1);
    enroll(&home, "other", &out.path().join("other"), 1);
    // Enrolling again is idempotent (same role, fresh bundles).
    enroll(&home, "gpu", &out.path().join("gpu2"), 1);

    local::save(home.path(), &file_secret(V1)).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    home.ok(&["sync", "--cluster", "other"]);
    // One of alice's own secrets, outside every cluster.
    root_put(
        &server,
        "secret/data/rh/alice/personal",
        json!({ "v": V_PERSONAL }),
    );

    let agent = start_agent(&bundles[0]);
    // Applied before it served.
    assert_eq!(agent.token_value().as_deref(), Some(V1));

    // The node's own token: its cluster only, reports only.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.state().join("pull/token.json")).unwrap(),
    )
    .unwrap();
    let token = kept["token"].as_str().unwrap();
    let get = |path: &str| raw(&server.url, token, "GET", path, None).unwrap().0;
    assert_eq!(get("secret/data/rh/alice/clusters/gpu/manifest"), 200);
    assert_eq!(get("secret/data/rh/alice/clusters/gpu/secrets/mytool"), 200);
    assert_eq!(get("secret/data/rh/alice/clusters/other/manifest"), 403);
    assert_eq!(
        get("secret/data/rh/alice/clusters/other/secrets/mytool"),
        403
    );
    assert_eq!(get("secret/data/rh/alice/personal"), 403);
    assert_eq!(get("secret/metadata/rh/alice?list=true"), 403);
    let put = |path: &str| {
        raw(
            &server.url,
            token,
            "POST",
            path,
            Some(json!({ "data": { "x": "1" } })),
        )
        .unwrap()
        .0
    };
    assert_eq!(put("secret/data/rh/alice/clusters/gpu/nodes/probe"), 200);
    assert_eq!(put("secret/data/rh/alice/clusters/gpu/manifest"), 403);
    assert_eq!(put("secret/data/rh/alice/clusters/gpu/secrets/mytool"), 403);
    assert_eq!(put("secret/data/rh/alice/clusters/other/nodes/probe"), 403);
    // No `default` policy on the token (not even lookup-self), and it is a
    // batch token.
    let (st, _) = raw(&server.url, token, "GET", "auth/token/lookup-self", None).unwrap();
    assert_eq!(st, 403);
    let info = root(
        &server,
        "POST",
        "auth/token/lookup",
        Some(json!({ "token": token })),
        200,
    );
    let policies = info["data"]["policies"].to_string();
    assert!(policies.contains("rh-fleet-rh-alice-gpu"), "{policies}");
    assert!(!policies.contains("\"default\""), "{policies}");
    assert_eq!(info["data"]["type"], "batch", "{info}");

    // The same bundle on another node (another state dir): refused, clearly.
    let (other_home, _port, mut child) = spawn_agent(&bundles[0]);
    let status = child.wait().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(other_home.path().join("agent.log")).unwrap();
    assert!(log.contains("already unwrapped"), "{log}");
    for bad in [V1, token] {
        assert!(!log.contains(bad));
    }
    let agent_log = std::fs::read_to_string(agent.home.path().join("agent.log")).unwrap();
    for bad in [V1, token] {
        assert!(!agent_log.contains(bad), "{agent_log}");
    }

    // A reusable launch bundle: not wrapped, private, and it logs a node in.
    let launch_dir = out.path().join("launch");
    let run = home.ok(&[
        "cluster",
        "enroll",
        "gpu",
        "--out",
        launch_dir.to_str().unwrap(),
        "--reusable",
        "--uses",
        "5",
        "--ttl",
        "1h",
        "--cidr",
        "127.0.0.0/8",
    ]);
    run.stderr_has("weaker");
    let launch = launch_dir.join("launch.json");
    assert_eq!(mode(&launch), 0o600);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&launch).unwrap()).unwrap();
    assert!(
        v["secret_id"].is_string() && v["wrapped_secret_id"].is_null(),
        "{v}"
    );
    let launched = start_agent(&launch);
    assert_eq!(launched.token_value().as_deref(), Some(V1));
    drop(launched);
    // Five logins: no boot spread; a launch bundle for 1,000 logins tells
    // its nodes to spread their first logins over 10 s (100 a second) and
    // their first reports over 25 s (40 a second).
    assert!(v.get("boot_spread_secs").is_none(), "{v}");
    assert!(v.get("report_spread_secs").is_none(), "{v}");
    let big_dir = out.path().join("big");
    // A launch bundle enrolled for `uses` logins, as JSON.
    let launch_for = |uses: &str| -> Value {
        home.ok(&[
            "cluster",
            "enroll",
            "gpu",
            "--out",
            big_dir.to_str().unwrap(),
            "--reusable",
            "--uses",
            uses,
            "--ttl",
            "1h",
            "--cidr",
            "127.0.0.0/8",
        ]);
        serde_json::from_str(&std::fs::read_to_string(big_dir.join("launch.json")).unwrap())
            .unwrap()
    };
    let v = launch_for("1000");
    assert_eq!(v["boot_spread_secs"], 10, "{v}");
    assert_eq!(v["report_spread_secs"], 25, "{v}");
    assert!(v.get("heartbeat_secs").is_none(), "{v}");
    // Past 3,000 nodes the bundle also asks for a longer heartbeat (1 s per
    // 10 nodes), which its nodes keep until a manifest asks for more.
    let v = launch_for("10000");
    assert_eq!(v["heartbeat_secs"], 1_000, "{v}");
    assert_eq!(v["boot_spread_secs"], 50, "{v}");

    // cluster remove: the AppRole goes, nodes stop updating and keep files.
    home.ok(&["cluster", "remove", "gpu"]);
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    local::save(home.path(), &file_secret(V2)).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    let errors = agent.metric("rh_agent_pull_poll_errors_total");
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric("rh_agent_pull_poll_errors_total") < errors + 2.0 {
        assert!(
            Instant::now() < deadline,
            "the node kept polling successfully"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.token_value().as_deref(), Some(V1));
    assert_eq!(mode(&agent.file(TOKEN_FILE)), 0o600);
    assert_eq!(get("secret/data/rh/alice/clusters/gpu/manifest"), 403);
}

/// `sync --wait` rereads only the reports of nodes not yet at the published
/// version (requests counted by a relay in front of the store): 30 nodes already there
/// are read once each, the one behind on every round until the wait runs
/// out (exit 3 naming it). `status` reads each report once.
#[test]
fn sync_wait_rereads_only_nodes_not_yet_converged() {
    let Some((server, mut home)) = setup() else {
        return;
    };
    // The controller talks to the store through a relay that keeps the
    // request lines: the reads the store served.
    let relay = Relay::to(&server);
    home.set_env("VAULT_ADDR", &relay.url());
    home.ok(&["cluster", "add", "big", "--pull"]);
    local::save(home.path(), &file_secret(V1)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let report = |id: &str, applied: u64| {
        root_put(
            &server,
            &format!("secret/data/rh/alice/clusters/big/nodes/{id}"),
            json!({
                "node_id": id, "hostname": id, "applied_version": applied,
                "reported_at": now, "last_poll": now, "secrets": [],
                "poll_interval_secs": 10, "heartbeat_secs": 300,
            }),
        );
    };
    let ahead: Vec<String> = (0..30).map(|i| format!("node-{i:02}")).collect();
    for id in &ahead {
        report(id, 1);
    }
    report("slow-node", 0);

    let run = home.run(&["sync", "--cluster", "big", "--wait", "4", "--json"]);
    assert_eq!(run.code, 3, "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["version"], 1, "{doc:#}");
    assert_eq!(doc["not_converged"], json!(["slow-node"]), "{doc:#}");
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 31, "{doc:#}");

    // Report reads the store served, per node id.
    let reads = || {
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for line in relay.requests.lock().unwrap().iter() {
            let path = line.strip_prefix("GET /v1/secret/data/rh/alice/clusters/big/nodes/");
            if let Some(id) = path.and_then(|p| p.split(' ').next()) {
                *n.entry(id.to_owned()).or_default() += 1;
            }
        }
        n
    };
    let after_wait = reads();
    for id in &ahead {
        assert_eq!(after_wait.get(id), Some(&1), "{id}: {after_wait:?}");
    }
    let slow = after_wait["slow-node"];
    assert!((3..=8).contains(&slow), "slow-node read {slow} times");

    let s = status(&home, "big");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 31, "{s:#}");
    let after_status = reads();
    for id in ahead.iter().chain([&"slow-node".to_owned()]) {
        assert_eq!(after_status[id], after_wait[id] + 1, "{id}");
    }
}

#[test]
fn a_pull_cluster_serves_published_sessions_refreshed_by_keep_fresh() {
    let Some((_server, mut home)) = setup() else {
        return;
    };
    let Some((moto, sts)) = test_support::python::moto() else {
        return;
    };
    let long_secret = "fleet-long-lived-secret-key-xyz";
    std::fs::create_dir_all(home.file(".aws")).unwrap();
    std::fs::write(
        home.file(".aws/credentials"),
        format!("[default]\naws_access_key_id = AKIAFLEETLONGLIVED\naws_secret_access_key = {long_secret}\n"),
    )
    .unwrap();
    home.set_env("AWS_ENDPOINT_URL_STS", &sts);
    home.set_env("AWS_EC2_METADATA_DISABLED", "true");
    home.forbidden.push(long_secret.into());
    home.ok(&["cluster", "add", "pc", "--pull"]);
    let bundles = enroll(&home, "pc", &home.file("bundles"), 1);
    // 20 s sessions (moto takes less than STS's 900 s): refreshed at 10 s.
    home.ok(&test_support::argv("secret create fleet-s3 --provider aws --session --role-arn arn:aws:iam::123456789012:role/fleet --duration 20s"));
    let log = home.file("keep-fresh.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_controller"));
    cmd.args([
        "sync",
        "--cluster",
        "pc",
        "--secret",
        "fleet-s3",
        "--keep-fresh",
    ])
    .env_clear()
    .env("HOME", home.path())
    .env("USER", &home.user)
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &home.env {
        cmd.env(k, v);
    }
    let mut keeper = cmd.spawn().unwrap();
    let agent = start_agent(&bundles[0]);
    // The node serves the published session to its env's token.
    let ecs = |agent: &PullAgent| -> Option<String> {
        let token =
            std::fs::read_to_string(agent.state().join("credentials/tokens/base_env")).ok()?;
        test_support::block_on(async {
            let resp = reqwest::Client::new()
                .get(format!(
                    "http://127.0.0.1:{}/v1/credentials/aws/fleet-s3",
                    agent.port
                ))
                .header("authorization", token)
                .send()
                .await
                .ok()?;
            let doc: Value = resp.json().await.ok()?;
            doc["AccessKeyId"].as_str().map(str::to_owned)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(key) = ecs(&agent) {
            break key;
        }
        assert!(
            Instant::now() < deadline,
            "the node never served the session"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // keep-fresh publishes a new session before half its life is gone.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match ecs(&agent) {
            Some(key) if key != first => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no refreshed session reached the node:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = keeper.kill();
    let _ = keeper.wait();
    drop(moto);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refreshed session secret fleet-s3 on cluster pc (published version"),
        "{text}"
    );
    assert!(!text.contains(long_secret));
    // What the node holds: the minted session, never the long-lived key.
    let holds = |needle: &str| {
        let out = Command::new("grep")
            .args(["-r", "-l", needle])
            .arg(agent.home.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(holds(long_secret), "");
    assert_eq!(holds("AKIAFLEETLONGLIVED"), "");
}

/// `send` and `env sync` on a pull cluster publish beside what is published
/// (same commands, another transport); what only a push can do
/// (`--secret-json`, `--overwrite`) is refused before anything is written.
#[test]
fn send_and_env_sync_to_a_pull_cluster_publish_beside_the_others() {
    let Some((_server, home, _out, agent)) = one_pulling_node() else {
        return;
    };

    local::save(home.path(), &env_secret()).unwrap();
    for refused in [
        "send myapi --cluster gpu --overwrite",
        "send --secret-json - --cluster gpu",
    ] {
        home.run(&test_support::argv(refused))
            .code(2)
            .stderr_has("pull cluster");
    }
    let run = home.ok(&["send", "myapi", "--cluster", "gpu", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["changed"], json!(["myapi"]), "{doc:#}");
    let s = wait_converged(&home, "gpu", 1);
    assert_eq!(s["secrets"], json!(["myapi", "mytool"]), "{s:#}");
    assert_eq!(agent.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
    assert_eq!(agent.token_value().as_deref(), Some(V1));

    // env sync: the env's secret published into env `work`.
    home.ok(&["env", "create", "work", "--secret", "myapi"]);
    home.run(&["env", "sync", "work", "--cluster", "gpu", "--overwrite"])
        .code(2)
        .stderr_has("pull cluster");
    home.ok(&["env", "sync", "work", "--cluster", "gpu"]);
    let s = wait_converged(&home, "gpu", 1);
    assert_eq!(s["secrets"], json!(["myapi", "mytool"]), "{s:#}");
    assert_eq!(
        agent.env_var_in("work", "MYAPI_KEY").as_deref(),
        Some(V_ENV)
    );
    assert_eq!(agent.token_value().as_deref(), Some(V1));
}
