//! End-to-end tests against a live docker-compose cluster (started by
//! `scripts/e2e.sh`): the real `controller` binary over real SSH, faults
//! injected with docker (stop, network disconnect, pause, kill -9), and every
//! assertion made on what is really on the nodes (files, modes, owners, the
//! environment of a real process). All `#[ignore]`: plain `cargo test` skips
//! them; run with `cargo test -p e2e --release -- --ignored --test-threads=1`.
//! Tests are numbered to run in order, but each sets up what it needs.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const BOOT: &str = "boot";
const BARE: &str = "bare";
const NAMED_ENV: &str = "e2e_named";

/// Files each file provider puts on a node, relative to the node home.
const DIRS_0700: [&str; 8] = [
    ".aws",
    ".azure",
    ".config/gcloud",
    ".config/gh",
    ".cache/huggingface",
    ".kube",
    ".lambda_cloud",
    ".ssh",
];

fn boot_cluster(s: &Suite) {
    assert!(!s.agents.is_empty(), "no agent nodes in the cluster");
    s.add_cluster(BOOT, &s.agents);
    for n in &s.agents {
        assert!(
            wait_agent(&n.container, Duration::from_secs(30)),
            "{}: no agent answers /healthz (boot script)",
            n.container
        );
    }
}

/// A node file with mode 0600 owned by ubuntu; problems are collected.
fn secret_file(c: &str, rel: &str, problems: &mut Vec<String>) -> Option<NodeFile> {
    match node_file(c, rel) {
        None => {
            problems.push(format!("{c}: ~/{rel} is missing"));
            None
        }
        Some(f) => {
            if f.mode != "600" {
                problems.push(format!("{c}: ~/{rel} has mode {} (want 600)", f.mode));
            }
            if f.owner != "ubuntu:ubuntu" {
                problems.push(format!("{c}: ~/{rel} is owned by {}", f.owner));
            }
            Some(f)
        }
    }
}

fn yaml(bytes: &[u8], what: &str, problems: &mut Vec<String>) -> yaml_serde::Value {
    yaml_serde::from_slice(bytes).unwrap_or_else(|e| {
        problems.push(format!("{what}: not YAML ({e})"));
        yaml_serde::Value::Null
    })
}

/// Every provider file of the fixture, on one node: contents, 0600, ubuntu, dirs 0700,
/// ssh keys usable.
fn check_provider_files(s: &Suite, node: &Node) -> Vec<String> {
    let c = node.container.as_str();
    let mut p = Vec::new();
    let want = |ok: bool, what: String, p: &mut Vec<String>| {
        if !ok {
            p.push(format!("{c}: {what}"));
        }
    };

    if let Some(f) = secret_file(c, ".aws/credentials", &mut p) {
        let t = f.text();
        let id = ini_get(&t, "default", "aws_access_key_id");
        let key = ini_get(&t, "default", "aws_secret_access_key");
        want(
            id.as_deref() == Some(s.value("aws.access_key")),
            "aws [default] aws_access_key_id differs".into(),
            &mut p,
        );
        want(
            key.as_deref() == Some(s.value("aws.secret_key")),
            "aws [default] aws_secret_access_key differs".into(),
            &mut p,
        );
    }
    if let Some(f) = secret_file(c, ".azure/clouds.config", &mut p) {
        want(
            ini_get(&f.text(), "AzureCloud", "subscription").as_deref()
                == Some(s.value("azure.subscription_id")),
            "azure [AzureCloud] subscription differs".into(),
            &mut p,
        );
    }
    let gcp = ".config/gcloud/application_default_credentials.json";
    if let Some(f) = secret_file(c, gcp, &mut p) {
        let node: Option<Value> = serde_json::from_slice(&f.bytes).ok();
        let local: Value = serde_json::from_slice(&s.local(gcp)).expect("fixture gcp json");
        want(
            node.as_ref() == Some(&local),
            "gcp json differs from the local file".into(),
            &mut p,
        );
    }
    let gh = ".config/gh/hosts.yml";
    if let Some(f) = secret_file(c, gh, &mut p) {
        let node = yaml(&f.bytes, "github hosts.yml", &mut p);
        let local = yaml(&s.local(gh), "local hosts.yml", &mut p);
        want(
            node.get("github.com") == local.get("github.com") && node.get("github.com").is_some(),
            "github hosts.yml github.com mapping differs".into(),
            &mut p,
        );
    }
    if let Some(f) = secret_file(c, ".cache/huggingface/token", &mut p) {
        want(
            f.text().trim() == s.value("huggingface.token") && f.text().lines().count() <= 1,
            "huggingface token differs (or has more than one line)".into(),
            &mut p,
        );
    }
    if let Some(f) = secret_file(c, ".kube/config", &mut p) {
        let node = yaml(&f.bytes, "kubeconfig", &mut p);
        let local = yaml(&s.local(".kube/config"), "local kubeconfig", &mut p);
        want(node == local, "kubeconfig differs".into(), &mut p);
    }
    if let Some(f) = secret_file(c, ".lambda_cloud/lambda_keys", &mut p) {
        want(
            ini_get(&f.text(), "", "api_key").as_deref() == Some(s.value("lambda.api_key")),
            "lambda api_key differs".into(),
            &mut p,
        );
    }
    for key in ["id_e2e", "sky-key"] {
        let rel = format!(".ssh/{key}");
        let local_pub = pubkey_core(&String::from_utf8_lossy(&s.local(&format!("{rel}.pub"))));
        if let Some(f) = secret_file(c, &rel, &mut p) {
            want(
                f.bytes == s.local(&rel),
                format!("~/{rel} bytes differ from the local key"),
                &mut p,
            );
            let derived = exec_ubuntu(c, &format!("ssh-keygen -y -f ~/{rel}"));
            want(
                derived.code == 0 && pubkey_core(&derived.stdout) == local_pub,
                format!("ssh-keygen -y -f ~/{rel} does not give the local public key"),
                &mut p,
            );
        }
        if let Some(f) = secret_file(c, &format!("{rel}.pub"), &mut p) {
            want(
                pubkey_core(&f.text()) == local_pub,
                format!("~/{rel}.pub differs"),
                &mut p,
            );
        }
    }
    for d in DIRS_0700 {
        let m = node_mode(c, d);
        want(
            m.as_deref() == Some("700"),
            format!("~/{d} has mode {m:?} (want 700)"),
            &mut p,
        );
    }
    p
}

/// The env-only providers' vars, with their values, in `env` on every node.
fn check_env_vars(s: &Suite, cluster: &str, env: &str, nodes: &[Node]) -> Vec<String> {
    let (out, stdouts) = s.printenv(cluster, env);
    let mut p = Vec::new();
    if out.code != 0 {
        p.push(format!(
            "run --env {env} -- printenv: exit {}: {}",
            out.code,
            out.stderr.trim()
        ));
    }
    if stdouts.len() != nodes.len() {
        p.push(format!(
            "run --env {env} --json: {} node outputs, want {}",
            stdouts.len(),
            nodes.len()
        ));
    }
    for (i, so) in stdouts.iter().enumerate() {
        for var in ENV_VARS {
            let line = format!("{var}={}", s.env_value(var));
            if !so.lines().any(|l| l == line) {
                p.push(format!(
                    "env {env}, node output {i}: {var} missing or wrong"
                ));
            }
        }
    }
    p
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Every node x every fixture secret has a row, none failed.
fn assert_sync_rows(out: &Out, nodes: &[Node], allowed: &[&str]) {
    let rows = rows(&out.json());
    let mut problems = Vec::new();
    for n in nodes {
        let mine = rows_for(&rows, &n.host);
        let names: BTreeSet<&str> = mine.iter().filter_map(|r| r.secret.as_deref()).collect();
        for s in SECRETS {
            if !names.contains(s) {
                problems.push(format!("{}: no row for secret {s}", n.host));
            }
        }
        for r in mine {
            if !allowed.contains(&r.status.as_str()) {
                problems.push(format!(
                    "{}: secret {:?} is {} (want one of {allowed:?})",
                    n.host, r.secret, r.status
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n  {}\n{}",
        out.what,
        problems.join("\n  "),
        out.show()
    );
}

/// Write an aws credentials file of the node's own on a node (as ubuntu, 0600).
const OWN_PROFILE: &str =
    "[e2e-own]\naws_access_key_id = NODEOWNKEYID\naws_secret_access_key = nodeOwnSecret\nregion = eu-west-3\n";

fn write_own_profile(c: &str) {
    exec_ubuntu(
        c,
        &format!(
            "mkdir -p ~/.aws && chmod 700 ~/.aws && umask 077 && printf '%s' '{OWN_PROFILE}' > ~/.aws/credentials"
        ),
    )
    .assert_code(0);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t01_bootstrap_installs_and_starts_the_agent_on_bare_nodes() {
    let s = suite();
    assert!(!s.bare.is_empty(), "no bare nodes in the cluster");
    for n in &s.bare {
        assert!(
            agent_pid(&n.container).is_none(),
            "{}: an agent runs before bootstrap",
            n.container
        );
    }
    s.add_cluster(BARE, &s.bare);
    let out = s.ctl(&["cluster", "bootstrap", BARE, "--json"]);
    out.assert_code(0);
    // Each node got the static x86_64 agent, byte for byte (the path users take).
    let x86 = "x86_64-unknown-linux-musl";
    let sum = fs::read_to_string(s.agents_dir().join(x86).join("agent.sha256"))
        .expect("scripts/build-agents.sh output");
    let sum = sum.split_whitespace().next().unwrap_or_default();
    let report = out.json();
    for (i, n) in s.bare.iter().enumerate() {
        let r = &report["nodes"][i];
        assert_eq!(r["arch"], "x86_64", "{}: {}", n.host, out.show());
        assert_eq!(r["agent"], x86, "{}: {}", n.host, out.show());
        assert_eq!(r["sha256"], sum, "{}: {}", n.host, out.show());
        let on_node = exec(&n.container, &["sha256sum", "/home/ubuntu/.rh/bin/agent"]);
        assert!(
            on_node.stdout.starts_with(sum),
            "{}: the installed agent is not the static x86_64 one: {}",
            n.container,
            on_node.show()
        );
    }
    for n in &s.bare {
        let c = &n.container;
        assert!(
            wait_agent(c, Duration::from_secs(20)),
            "{c}: no agent answers /healthz after bootstrap"
        );
        let ps = exec(c, &["ps", "-o", "user=", "-C", "agent"]);
        assert!(
            ps.stdout.split_whitespace().any(|u| u == "ubuntu")
                && ps.stdout.split_whitespace().all(|u| u == "ubuntu"),
            "{c}: the agent does not run as ubuntu: {}",
            ps.show()
        );
        let token = node_file(c, ".rh/agent/token").expect("agent token file");
        assert_eq!(token.mode, "600", "{c}: token mode");
        assert_eq!(token.owner, "ubuntu:ubuntu", "{c}: token owner");
    }
    // Bootstrapping again is safe and leaves a running agent.
    s.ctl(&["cluster", "bootstrap", BARE]).assert_code(0);
    for n in &s.bare {
        assert!(
            wait_agent(&n.container, Duration::from_secs(20)),
            "{}: no agent after a second bootstrap",
            n.container
        );
    }
    // And the bootstrapped nodes take a full sync.
    let out = s.sync(BARE, &[]);
    out.assert_code(0);
    assert_sync_rows(&out, &s.bare, &["written", "unchanged"]);
    let mut problems = Vec::new();
    for n in &s.bare {
        problems.extend(check_provider_files(s, n));
    }
    problems.extend(check_env_vars(s, BARE, "base_env", &s.bare));
    assert_no_problems("bare nodes after bootstrap and sync", problems);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t01b_static_agents_are_static_elves_and_each_arch_gets_its_own() {
    use controller::agents::{elf_info, node_target, Agents};
    let s = suite();
    let agents = Agents::in_dirs(vec![s.agents_dir()]);
    for (arch, machine) in [
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
    ] {
        let bin = agents
            .for_arch(arch)
            .unwrap_or_else(|e| panic!("a node answering {arch}: {e}"));
        let target = node_target(arch).expect("a supported arch");
        assert!(
            bin.path.ends_with(format!("{target}/agent")) && target.starts_with(machine),
            "{arch}: {} chosen",
            bin.path.display()
        );
        let bytes = fs::read(&bin.path).expect("agent binary");
        let info = elf_info(&bytes[..bytes.len().min(4096)]).expect("an ELF");
        assert_eq!(info.machine, machine, "{}", bin.path.display());
        assert!(
            info.is_static,
            "{} needs a dynamic loader",
            bin.path.display()
        );
    }
}

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
        assert!(
            wait_sshd(&n.host, Duration::from_secs(60)),
            "{}: sshd not back",
            n.host
        );
        assert!(
            wait_agent(&n.container, Duration::from_secs(60)),
            "{}: systemd did not start the agent after the restart",
            n.container
        );
    }
    // Back with its envs and vars, and files, before any sync.
    let mut p = check_env_vars(s, SYSTEMD, "base_env", &s.systemd);
    p.extend(check_env_vars(s, SYSTEMD, NAMED_ENV, &s.systemd));
    for n in &s.systemd {
        p.extend(check_provider_files(s, n));
    }
    assert_no_problems("systemd node after a restart (no re-sync)", p);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t02_sync_puts_all_16_providers_on_every_node() {
    let s = suite();
    boot_cluster(s);
    let detect = s.ctl(&["secret", "detect", "--json"]);
    detect.assert_code(0);
    let found: BTreeSet<String> = detect
        .json()
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let want: BTreeSet<String> = SECRETS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, want, "secret detect on the fixture home");

    let out = s.sync(BOOT, &[]);
    out.assert_code(0);
    assert_sync_rows(&out, &s.agents, &["written", "unchanged"]);
    let mut problems = Vec::new();
    for n in &s.agents {
        problems.extend(check_provider_files(s, n));
    }
    problems.extend(check_env_vars(s, BOOT, "base_env", &s.agents));
    assert_no_problems("agent nodes after sync", problems);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t03_env_var_secrets_go_to_a_named_env() {
    let s = suite();
    boot_cluster(s);
    let out = s.sync(BOOT, &["--env", NAMED_ENV]);
    out.assert_code(0);
    assert_no_problems(
        "named env after sync --env",
        check_env_vars(s, BOOT, NAMED_ENV, &s.agents),
    );
    let status = s.ctl(&["status", "--cluster", BOOT, "--json"]);
    status.assert_code(0);
    let mut strings = Vec::new();
    all_strings(&status.json(), &mut strings);
    assert!(
        strings.iter().any(|x| x == NAMED_ENV),
        "status does not show env {NAMED_ENV}: {}",
        status.show()
    );
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t04_second_sync_reports_everything_unchanged() {
    let s = suite();
    boot_cluster(s);
    s.sync(BOOT, &[]).assert_code(0);
    let c = &s.agents[0].container;
    let inode = |p: &str| exec(c, &["stat", "-c", "%i %Y", &abs(p)]).stdout;
    let before = inode(".aws/credentials");
    let out = s.sync(BOOT, &[]);
    out.assert_code(0);
    assert_sync_rows(&out, &s.agents, &["unchanged"]);
    assert_eq!(
        inode(".aws/credentials"),
        before,
        "{c}: ~/.aws/credentials was rewritten by an unchanged sync"
    );
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t05_a_nodes_own_aws_profile_survives_sync() {
    let s = suite();
    boot_cluster(s);
    let n = &s.agents[s.agents.len().min(2) - 1];
    write_own_profile(&n.container);
    let out = s.sync(BOOT, &["--secret", "aws"]);
    out.assert_code(0);
    let mut p = Vec::new();
    let f = secret_file(&n.container, ".aws/credentials", &mut p).expect("credentials");
    assert_no_problems("credentials file", p);
    let t = f.text();
    for line in OWN_PROFILE.lines() {
        assert!(
            t.lines().any(|l| l.trim() == line),
            "{}: line {line:?} of the node's own profile is gone:\n{t}",
            n.container
        );
    }
    assert_eq!(
        ini_get(&t, "default", "aws_access_key_id").as_deref(),
        Some(s.value("aws.access_key")),
        "{}: [default] not written next to the own profile",
        n.container
    );
    assert_eq!(
        ini_get(&t, "e2e-own", "aws_secret_access_key").as_deref(),
        Some("nodeOwnSecret")
    );
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t06_stopped_node_partial_failure_then_recovery_by_boot_script() {
    let s = suite();
    boot_cluster(s);
    s.sync(BOOT, &[]).assert_code(0);
    s.sync(BOOT, &["--env", NAMED_ENV]).assert_code(0);
    let down = s.agents.last().expect("a node");
    docker(&["stop", "-t", "1", &down.container]).assert_code(0);
    let out = s.sync(BOOT, &["--timeout", "10"]);
    let started = docker(&["start", &down.container]);
    out.assert_code(3);
    assert!(
        mentions_host(&out.text(), &down.host),
        "the stopped node {} is not named: {}",
        down.host,
        out.show()
    );
    let rows = rows(&out.json());
    for n in s.agents.iter().filter(|n| n.host != down.host) {
        let mine = rows_for(&rows, &n.host);
        assert!(!mine.is_empty(), "{}: no rows: {}", n.host, out.show());
        assert!(
            mine.iter().all(|r| r.status != "failed"),
            "{}: a secret failed although the node is up: {}",
            n.host,
            out.show()
        );
    }
    started.assert_code(0);
    assert!(
        wait_sshd(&down.host, Duration::from_secs(30)),
        "{}: sshd not back",
        down.host
    );
    assert!(
        wait_agent(&down.container, Duration::from_secs(30)),
        "{}: the agent did not come back after a restart (boot script)",
        down.container
    );
    // Env state survived the restart: every var is there before any re-sync,
    // in base_env and in the named env.
    let mut p = check_env_vars(s, BOOT, "base_env", &s.agents);
    p.extend(check_env_vars(s, BOOT, NAMED_ENV, &s.agents));
    assert_no_problems("envs after the node restarted (no re-sync yet)", p);
    let again = s.sync(BOOT, &[]);
    again.assert_code(0);
    assert_sync_rows(&again, &s.agents, &["written", "unchanged"]);
    assert_no_problems("restarted node", check_provider_files(s, down));
}

/// A sync with one node unreachable ends within `--timeout` (plus process
/// overhead) with exit 3 and names that node.
fn assert_cut_off_node_reported(s: &Suite, cut: &Node, how: &str) {
    let timeout = 5u64;
    let out = s.ctl_deadline(
        &[
            "sync",
            "--cluster",
            BOOT,
            "--json",
            "--timeout",
            &timeout.to_string(),
        ],
        Duration::from_secs(60),
    );
    assert!(!out.timed_out, "{how}: sync hung for 60 s: {}", out.show());
    let bound = Duration::from_secs(timeout + 3);
    assert!(
        out.elapsed <= bound,
        "{how}: sync took {:.2?} with --timeout {timeout} (allowed {bound:?}): {}",
        out.elapsed,
        out.show()
    );
    out.assert_code(3);
    assert!(
        mentions_host(&out.text(), &cut.host),
        "{how}: node {} not named: {}",
        cut.host,
        out.show()
    );
    eprintln!(
        "{how}: sync ended in {:.2?} (--timeout {timeout})",
        out.elapsed
    );
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t07_disconnected_node_reported_within_timeout() {
    let s = suite();
    boot_cluster(s);
    // A sync first: the controller's connection to the node exists (and may be
    // kept) when the node drops off the network, as in real life.
    s.sync(BOOT, &[]).assert_code(0);
    let cut = &s.agents[s.agents.len() / 2];
    docker(&["network", "disconnect", &s.network, &cut.container]).assert_code(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_cut_off_node_reported(s, cut, "disconnected")
    }));
    docker(&[
        "network",
        "connect",
        "--ip",
        &cut.host,
        &s.network,
        &cut.container,
    ])
    .assert_code(0);
    assert!(wait_sshd(&cut.host, Duration::from_secs(30)));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    s.sync(BOOT, &[]).assert_code(0);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t08_frozen_node_reported_within_timeout() {
    // `docker pause` freezes sshd and the agent: TCP still connects, nothing
    // answers. The controller must not hang on it.
    let s = suite();
    boot_cluster(s);
    s.sync(BOOT, &[]).assert_code(0);
    let cut = &s.agents[0];
    docker(&["pause", &cut.container]).assert_code(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_cut_off_node_reported(s, cut, "paused")
    }));
    docker(&["unpause", &cut.container]).assert_code(0);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(wait_agent(&cut.container, Duration::from_secs(30)));
    s.sync(BOOT, &[]).assert_code(0);
}

fn blob_values(run: &str, version: usize) -> Value {
    let chunk = format!("{run}-kill-v{version}-");
    serde_json::json!({
        "version": version.to_string(),
        "blob": chunk.repeat(48 * 1024 / chunk.len()),
    })
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t09_kill9_of_the_agent_during_a_sync_loop_leaves_no_torn_file() {
    let s = suite();
    boot_cluster(s);
    let node = &s.agents[0];
    let c = node.container.as_str();
    s.add_cluster("kill1", std::slice::from_ref(node));
    let run = s.value("aws.secret_key").replace("awsSecretKey0aws", "");
    let rel = "e2e-kill/blob.json";
    let values_file = s.work.join("kill-values.json");
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let mut problems = Vec::new();
    let mut kills = 0;

    thread::scope(|scope| {
        scope.spawn(|| {
            let mut v = 0;
            while !stop.load(Ordering::SeqCst) {
                let values = blob_values(&run, v);
                s.add_marker(
                    "e2e-kill.blob",
                    &format!("{run}-kill-v{v}-{run}-kill-v{v}-"),
                );
                fs::write(&values_file, values.to_string()).expect("write values");
                s.ctl(&[
                    "secret",
                    "create",
                    "e2e-kill",
                    "--provider",
                    "e2e_blob",
                    "--path",
                    &format!("~/{rel}"),
                    "--values-json",
                    &values_file.to_string_lossy(),
                    "--force",
                ])
                .assert_code(0);
                let out = s.ctl(&[
                    "sync",
                    "--cluster",
                    "kill1",
                    "--secret",
                    "e2e-kill",
                    "--overwrite",
                    "--timeout",
                    "5",
                ]);
                done.fetch_add(1, Ordering::SeqCst);
                if out.code == 0 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    // The agent is down (being restarted): do not spin.
                    thread::sleep(Duration::from_millis(200));
                }
                v += 1;
            }
        });
        for round in 0..4u64 {
            if !wait_agent(c, Duration::from_secs(20)) {
                eprintln!("{c}: the agent is not back 20 s after kill -9; restarting the node");
                docker(&["restart", "-t", "1", c]).assert_code(0);
                if !wait_agent(c, Duration::from_secs(30)) {
                    problems.push(format!("round {round}: no agent on {c} after a restart"));
                    break;
                }
            }
            // Let two syncs through, then kill in the middle of the next ones.
            let start = ok.load(Ordering::SeqCst);
            let waited = std::time::Instant::now();
            while ok.load(Ordering::SeqCst) < start + 2 {
                if waited.elapsed() > Duration::from_secs(60) {
                    problems.push(format!("round {round}: no sync succeeded within 60 s"));
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            thread::sleep(Duration::from_millis(40 + 37 * round));
            let Some(pid) = agent_pid(c) else {
                problems.push(format!("round {round}: no agent running on {c}"));
                continue;
            };
            exec(c, &["kill", "-9", &pid]).assert_code(0);
            kills += 1;
            check_blob(
                c,
                rel,
                &run,
                &mut problems,
                &format!("right after kill {round}"),
            );
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(
        wait_agent(c, Duration::from_secs(30)),
        "{c}: the agent did not come back after the last kill -9"
    );
    check_blob(c, rel, &run, &mut problems, "at the end");
    let leftovers = exec(c, &["find", &abs("e2e-kill"), "-mindepth", "1"]);
    let extra: Vec<&str> = leftovers
        .stdout
        .lines()
        .filter(|l| !l.ends_with("/blob.json"))
        .collect();
    if !extra.is_empty() {
        eprintln!("note: {c}: files left next to blob.json after kill -9: {extra:?}");
    }
    let (done, ok) = (done.load(Ordering::SeqCst), ok.load(Ordering::SeqCst));
    eprintln!("kill -9: {kills} kills, {done} syncs, {ok} succeeded");
    assert!(kills >= 3, "too few kills happened: {problems:?}");
    assert_no_problems("kill -9 during sync", problems);
    // The node is healthy again and takes a sync.
    s.ctl(&[
        "sync",
        "--cluster",
        "kill1",
        "--secret",
        "e2e-kill",
        "--overwrite",
    ])
    .assert_code(0);
}

/// The blob file on the node is absent (not yet written) or one whole version.
fn check_blob(c: &str, rel: &str, run: &str, problems: &mut Vec<String>, when: &str) {
    let Some(f) = node_file(c, rel) else { return };
    if f.mode != "600" {
        problems.push(format!("{when}: ~/{rel} has mode {}", f.mode));
    }
    let parsed: Option<Value> = serde_json::from_slice(&f.bytes).ok();
    let whole = parsed.as_ref().is_some_and(|v| {
        v.get("version")
            .and_then(Value::as_str)
            .and_then(|x| x.parse::<usize>().ok())
            .is_some_and(|ver| {
                let want = blob_values(run, ver);
                v.get("blob") == want.get("blob")
            })
    });
    if !whole {
        problems.push(format!(
            "{when}: ~/{rel} is torn ({} bytes, not one whole version)",
            f.bytes.len()
        ));
    }
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
    let s = suite();
    boot_cluster(s);
    let own = &s.agents[s.agents.len().min(2) - 1];
    write_own_profile(&own.container);
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
    let s = suite();
    boot_cluster(s);
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
    let s = suite();
    boot_cluster(s);
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
