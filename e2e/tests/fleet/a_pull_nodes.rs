//! f01-f03: bootstrapped and compose pull nodes converging while the store
//! leader is killed, a node started with a bundle already unwrapped
//! applying nothing, and the systemd node pulling at boot and after a
//! restart.

use super::*;

#[test]
#[ignore = "needs the docker-compose cluster and the HA store: scripts/e2e.sh"]
fn f01_bootstrapped_and_compose_pull_nodes_converge_while_the_store_leader_is_killed() {
    let f = fleet();
    let (s, b) = (f.s, &f.b);
    let minute = Duration::from_secs(60);

    // Publish with --wait in the background; kill the leader as soon as the
    // manifest is in the store, while the nodes (3 s polls) converge.
    let sync_cmd = f.ctl.command(&[
        "sync",
        "--cluster",
        PULL,
        "--secret",
        &format!("ssh-{KEY_NAME}"),
        "--secret",
        "pullapi",
        "--wait",
        "90",
        "--json",
    ]);
    let sync = thread::spawn(move || {
        run_with_deadline(
            sync_cmd,
            Duration::from_secs(150),
            "controller",
            &["sync --wait"],
        )
    });
    let leader_c = leader(b);
    let start = Instant::now();
    while store_get(&b.node_urls[0], &b.root_token, MANIFEST).0 != "200"
        && store_get(&b.node_urls[1], &b.root_token, MANIFEST).0 != "200"
    {
        assert!(
            start.elapsed() < minute,
            "the publish never reached the store"
        );
        thread::sleep(Duration::from_millis(50));
    }
    docker(&["kill", &leader_c]).assert_code(0);
    eprintln!(
        "killed the store leader {leader_c} {:.1?} after the publish started",
        start.elapsed()
    );
    let out = sync.join().expect("sync thread");
    f.ctl.record(&out);
    out.assert_code(0);
    let doc = out.json();
    let rows = doc["nodes"].as_array().expect("--wait rows");
    assert_eq!(rows.len(), s.bare.len() + COMPOSE_NODES, "{}", out.show());
    assert!(
        rows.iter().all(|r| r["converged"] == true),
        "{}",
        out.show()
    );
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &leader_c]);
    assert_eq!(running.stdout.trim(), "false", "the leader is still up");

    // Every node, bootstrapped or started from its bundle: the key pair,
    // byte for byte, 0600 in a 0700 ~/.ssh.
    for c in s.bare.iter().map(|n| &n.container).chain(&f.pulled) {
        f.check_key(c, KEY_NAME, &f.private, &f.public);
    }
    // The var inside base_env's process: through `controller run` on the
    // bootstrapped nodes, through the agent's run route on the compose ones.
    let run = f.ctl.printenv();
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("run JSON");
    let mut seen = Vec::new();
    all_strings(&v, &mut seen);
    let hits = seen.iter().filter(|t| t.trim() == f.api_value).count();
    assert_eq!(hits, s.bare.len(), "{}", run.show());
    for c in &f.pulled {
        assert!(
            printenv_on_node(c) == f.api_value,
            "{c}: not the var's value"
        );
    }

    // status: every node's report at the published version, from the store.
    let (published, nodes) = f.status();
    assert_eq!(nodes.len(), s.bare.len() + COMPOSE_NODES, "{nodes:?}");
    for r in &nodes {
        assert_eq!(r["applied_version"], published, "{r}");
        assert_eq!(r["converged"], true, "{r}");
    }
    let mut hostnames: Vec<String> = nodes
        .iter()
        .map(|r| r["hostname"].as_str().unwrap_or_default().to_string())
        .collect();
    hostnames.sort();
    let mut want: Vec<String> = (1..=s.bare.len())
        .map(|i| format!("bare-{i}"))
        .chain((1..=COMPOSE_NODES).map(|i| format!("pull-{i}")))
        .collect();
    want.sort();
    assert_eq!(hostnames, want);
    f.assert_no_leaks();
}

#[test]
#[ignore = "needs the docker-compose cluster and the HA store: scripts/e2e.sh"]
fn f02_a_node_started_with_a_bundle_already_unwrapped_applies_nothing() {
    let f = fleet();
    let s = f.s;
    f.ensure_published();
    // pull-1 unwrapped node-1.json at its first start (it answers /healthz
    // only after its first poll): a copy of it is spent.
    let reused = COMPOSE_NODES + 1;
    let copy = f.bundles.join(format!("node-{reused}.json"));
    std::fs::copy(f.bundles.join("node-1.json"), &copy).unwrap();
    compose_pull(s, &f.bundles, reused).assert_code(0);
    let c = pull_container(s, reused);
    // Its agent refuses to start: the container exits, non-zero.
    let wait = docker(&["wait", &c]);
    wait.assert_code(0);
    assert_ne!(wait.stdout.trim(), "0", "{c}: the agent started");
    let logs = docker(&["logs", &c]);
    assert!(
        logs.text().contains("already unwrapped"),
        "{c}: no clear error: {}",
        logs.show()
    );
    let bundle: Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    let wrapped = bundle["wrapped_secret_id"]
        .as_str()
        .expect("a wrapped bundle");
    assert!(
        !logs.text().contains(wrapped),
        "{c}: the wrapping token was logged"
    );

    // Nothing applied: its home, copied out of the stopped container, has
    // the bundle and no key, no secret_id, no token, no applied state, no env.
    let out = s.work.join("reused-home");
    let _ = std::fs::remove_dir_all(&out);
    docker(&["cp", &format!("{c}:{NODE_HOME}"), &out.to_string_lossy()]).assert_code(0);
    let state = out.join(".rh/agent");
    assert!(
        state.join("bundle.json").is_file(),
        "{c}: no bundle installed"
    );
    for rel in [
        format!(".ssh/{KEY_NAME}"),
        ".rh/agent/pull/secret_id".into(),
        ".rh/agent/pull/token.json".into(),
        ".rh/agent/pull/applied.json".into(),
        ".rh/agent/envs.json".into(),
    ] {
        assert!(!out.join(&rel).exists(), "{c}: {rel} exists");
    }
    std::fs::remove_dir_all(&out).unwrap();
    // No report from it; the others are still there, converged.
    let (published, nodes) = f.status();
    assert!(
        nodes
            .iter()
            .all(|r| r["hostname"] != format!("pull-{reused}").as_str()),
        "{nodes:?}"
    );
    for hostname in (1..=COMPOSE_NODES).map(|i| format!("pull-{i}")) {
        let r = report_of(&nodes, &hostname);
        assert_eq!(r["applied_version"], published, "{r}");
    }
    f.assert_no_leaks();
}

#[test]
#[ignore = "needs the docker-compose cluster and the HA store: scripts/e2e.sh"]
fn f03_systemd_node_pulls_at_boot_and_after_a_restart_gets_what_was_published_while_down() {
    let f = fleet();
    let s = f.s;
    let n = s.systemd.first().expect("no systemd node in the cluster");
    let c = &n.container;
    f.ensure_published();
    // The systemd node joins the pull cluster: bootstrap goes to the
    // cluster's hosts, so the cluster now lists that node only (the others
    // keep pulling; the store is what they follow).
    f.ctl.add_cluster(&[&n.host]);
    let out = f.ctl.bootstrap_pull();
    let r = &out.json()["nodes"][0];
    assert_eq!(r["ok"], true, "{}", out.show());
    assert_eq!(r["boot"], "systemd-system", "{}", out.show());
    check_bundle(c, &f.b);
    let systemctl = |args: &[&str]| {
        let mut a = vec!["systemctl"];
        a.extend_from_slice(args);
        exec(c, &a)
    };
    let show = |prop: &str| {
        systemctl(&["show", "-p", prop, "--value", "rh-agent.service"])
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(show("Type"), "notify", "{c}");
    assert_eq!(show("User"), "ubuntu", "{c}");
    let active = systemctl(&["is-active", "rh-agent"]);
    assert_eq!(active.stdout.trim(), "active", "{}", active.show());
    f.check_key(c, KEY_NAME, &f.private, &f.public);

    // The node goes down; meanwhile a key is added and the var rotated.
    systemctl(&["stop", "rh-agent"]).assert_code(0);
    assert_ne!(
        systemctl(&["is-active", "rh-agent"]).stdout.trim(),
        "active"
    );
    let (late_private, late_public) = key_pair(&f.ctl.home, LATE_KEY);
    f.add_key_lines(&late_private);
    let rotated = format!("pull-e2e-rotated-{}", std::process::id());
    f.secrets.lock().unwrap().push(rotated.clone());
    f.ctl.create_api(&rotated, true);
    let late = format!("ssh-{LATE_KEY}");
    let (_, version) = f
        .ctl
        .publish(&[&format!("ssh-{KEY_NAME}"), "pullapi", &late], &[], 0);
    wait_manifest_everywhere(&f.b, version);
    assert!(
        !node_exists(c, &format!(".ssh/{LATE_KEY}")),
        "{c}: applied while down"
    );

    // Restart: systemctl returns once the unit is started, i.e. (Type=notify)
    // once the agent applied its first poll: what was published is there now.
    systemctl(&["restart", "rh-agent"]).assert_code(0);
    assert_eq!(
        systemctl(&["is-active", "rh-agent"]).stdout.trim(),
        "active"
    );
    f.check_key(c, LATE_KEY, &late_private, &late_public);
    let run = f.ctl.printenv();
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("run JSON");
    let mut seen = Vec::new();
    all_strings(&v, &mut seen);
    assert_eq!(
        seen.iter().filter(|t| t.trim() == rotated).count(),
        1,
        "{}",
        run.show()
    );
    let (published, nodes) = f.status();
    let r = report_of(&nodes, "systemd-1");
    assert_eq!(r["applied_version"], published, "{r}");
    assert_eq!(published.as_u64(), Some(version));
    f.assert_no_leaks();
}
