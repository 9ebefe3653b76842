//! End-to-end tests against a live docker-compose cluster (started by
//! `scripts/e2e.sh`): the real `controller` binary over real SSH, faults
//! injected with docker (stop, network disconnect, pause, kill -9), and every
//! assertion made on what is really on the nodes (files, modes, owners, the
//! environment of a real process). All `#[ignore]`: plain `cargo test` skips
//! them; run with `cargo test -p e2e --release -- --ignored --test-threads=1`.
//! Tests are numbered to run in order, but each sets up what it needs.
//! One test binary (one suite, its fixture values and the values the tests
//! make, checked by t99), its tests in modules named so that libtest's name
//! order is the run order: `a_bootstrap_sync` (t01-t05), `b_faults`
//! (t06-t09), `c_lifecycle_leaks` (t10-t99).

mod a_bootstrap_sync;
mod b_faults;
mod c_lifecycle_leaks;
#[path = "../common/mod.rs"]
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

/// The suite with the agent nodes added as cluster `boot` and their agents
/// answering (the start of most tests).
fn booted() -> &'static Suite {
    let s = suite();
    boot_cluster(s);
    s
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

/// [`check_provider_files`] on each of `nodes` and [`check_env_vars`] in
/// `cluster`'s `base_env`: what a full sync must leave.
fn check_synced(s: &Suite, cluster: &str, nodes: &[Node]) -> Vec<String> {
    let mut p: Vec<String> = nodes
        .iter()
        .flat_map(|n| check_provider_files(s, n))
        .collect();
    p.extend(check_env_vars(s, cluster, "base_env", nodes));
    p
}

/// [`check_env_vars`] in `base_env` and in the named env.
fn check_both_envs(s: &Suite, cluster: &str, nodes: &[Node]) -> Vec<String> {
    let mut p = check_env_vars(s, cluster, "base_env", nodes);
    p.extend(check_env_vars(s, cluster, NAMED_ENV, nodes));
    p
}

/// Assert `n`'s sshd and agent answer again (within `within`) after its
/// container restarted; `starter` is what starts its agent.
fn assert_back_after_restart(n: &Node, within: Duration, starter: &str) {
    assert!(wait_sshd(&n.host, within), "{}: sshd not back", n.host);
    assert!(
        wait_agent(&n.container, within),
        "{}: {starter} did not start the agent after the restart",
        n.container
    );
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Every node x every fixture secret has a row, none failed.
fn assert_sync_rows(out: &Run, nodes: &[Node], allowed: &[&str]) {
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

/// The second agent node (the first when there is one), its own AWS
/// profile written to its `~/.aws/credentials`.
fn node_with_own_profile(s: &Suite) -> &Node {
    let n = &s.agents[s.agents.len().min(2) - 1];
    exec_ubuntu(
        &n.container,
        &format!(
            "mkdir -p ~/.aws && chmod 700 ~/.aws && umask 077 && printf '%s' '{OWN_PROFILE}' > ~/.aws/credentials"
        ),
    )
    .assert_code(0);
    n
}
