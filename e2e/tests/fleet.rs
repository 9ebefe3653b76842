//! Pull mode (fleet) end to end: the three-node OpenBao HA cluster
//! (`e2e/vault-ha/cluster.sh`, on the node network, started by
//! `scripts/e2e.sh`), the bare nodes bootstrapped as a pull cluster by the
//! real controller over real SSH (static agent, a fresh bundle per node),
//! a publish with `sync --wait`, the Raft leader killed with `docker kill`
//! right after the publish while the nodes converge, then every node checked
//! for the files (bytes, modes, owner), a var inside an env process, and its
//! report at the new version in `status`. Run after `--test cluster`
//! (the bare nodes' push agents are replaced by pulling ones).

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PULL: &str = "pull";
const KEY_NAME: &str = "pull_e2e";
const VAR: &str = "PULL_E2E_API_KEY";

/// The HA store started by scripts/e2e.sh (`RH_E2E_BAO_ENV`).
struct Bao {
    node_urls: Vec<String>,
    containers: Vec<String>,
    root_token: String,
}

fn bao() -> Bao {
    let path = std::env::var_os("RH_E2E_BAO_ENV")
        .map(PathBuf::from)
        .expect("RH_E2E_BAO_ENV: start the store with e2e/vault-ha/cluster.sh (scripts/e2e.sh)");
    let env = parse_env_file(&path);
    let list = |k: &str| -> Vec<String> {
        env.get(k)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let b = Bao {
        node_urls: list("BAO_NODE_URLS"),
        containers: list("BAO_CONTAINERS"),
        root_token: env.get("BAO_ROOT_TOKEN").cloned().unwrap_or_default(),
    };
    assert_eq!(b.node_urls.len(), 3, "{}: no node URLs", path.display());
    assert_eq!(b.containers.len(), 3);
    b
}

/// `curl` a store API path from the host with the root token: (status, body).
fn store_get(url: &str, token: &str, path: &str) -> (String, String) {
    let out = run_with_deadline(
        {
            let mut c = Command::new("curl");
            c.args(["-s", "-m", "3", "-w", "\n%{http_code}", "-H"])
                .arg(format!("X-Vault-Token: {token}"))
                .arg(format!("{url}/v1/{path}"));
            c
        },
        Duration::from_secs(10),
        "curl",
        &[path],
    );
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "000"));
    (code.trim().to_string(), body.to_string())
}

/// The container of the current Raft leader.
fn leader(b: &Bao) -> String {
    for url in &b.node_urls {
        let (code, body) = store_get(url, &b.root_token, "sys/leader");
        if code != "200" {
            continue;
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let addr = v["leader_address"].as_str().unwrap_or_default();
        for (i, name) in ["bao1", "bao2", "bao3"].iter().enumerate() {
            if addr.contains(&format!("//{name}:")) {
                return b.containers[i].clone();
            }
        }
    }
    panic!("no store node names a leader");
}

/// The controller with its own HOME (an ssh key pair and one env-var secret),
/// logged in to the HA store through the three node-network URLs.
struct PullCtl<'a> {
    s: &'a Suite,
    home: PathBuf,
    env: Vec<(String, String)>,
}

impl PullCtl<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.s.controller);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("USER", "e2e")
            .env("LANG", "C.UTF-8")
            .env("NO_COLOR", "1")
            .env("RH_SSH_CONFIG", &self.s.ssh_config)
            .env("RH_AGENTS_DIR", self.s.agents_dir());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str], deadline: Duration) -> Out {
        let out = run_with_deadline(self.command(args), deadline, "controller", args);
        self.s.log_to("controller-fleet.log", &out);
        out
    }
}

#[test]
#[ignore = "needs the docker-compose cluster and the HA store: scripts/e2e.sh"]
fn f01_pull_nodes_bootstrapped_converge_while_the_store_leader_is_killed() {
    let s = suite();
    let b = bao();
    assert!(!s.bare.is_empty(), "no bare nodes");
    let home = s.work.join("pullhome");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh").join(KEY_NAME);
    let kg = run_with_deadline(
        {
            let mut c = Command::new("ssh-keygen");
            c.args(["-q", "-t", "ed25519", "-N", "", "-C", "rh-pull-e2e", "-f"])
                .arg(&key);
            c
        },
        Duration::from_secs(20),
        "ssh-keygen",
        &[],
    );
    kg.assert_code(0);
    let private = std::fs::read(&key).unwrap();
    let public = std::fs::read(key.with_extension("pub")).unwrap();
    let api_value = format!("pull-e2e-api-{}", std::process::id());
    let ctl = PullCtl {
        s,
        home: home.clone(),
        env: vec![
            ("VAULT_ADDR".into(), b.node_urls.join(",")),
            ("VAULT_TOKEN".into(), b.root_token.clone()),
            // The test store speaks plain http on the private node network.
            ("RH_VAULT_ALLOW_HTTP".into(), "1".into()),
        ],
    };
    // (what, stdout + stderr) of every run that must not carry a value.
    let mut outputs: Vec<(String, String)> = Vec::new();
    let minute = Duration::from_secs(60);
    let ok = |args: &[&str], code: i32| -> Out {
        let out = ctl.run(args, Duration::from_secs(180));
        out.assert_code(code);
        out
    };
    let out = ok(
        &[
            "secret",
            "create",
            "pullapi",
            "--env-var",
            &format!("api_key={VAR}"),
            "--value",
            &format!("api_key={api_value}"),
        ],
        0,
    );
    outputs.push((out.what.clone(), out.text()));
    let ssh_key = s.ssh_key.to_string_lossy().into_owned();
    let mut add = vec![
        "cluster",
        "add",
        PULL,
        "--pull",
        "--user",
        "ubuntu",
        "--identity-file",
        &ssh_key,
    ];
    for n in &s.bare {
        add.extend(["--host", n.host.as_str()]);
    }
    let out = ok(&add, 0);
    outputs.push((out.what.clone(), out.text()));

    // Bootstrap: the static agent and a fresh bundle per node; pull mode at boot.
    let out = ok(
        &[
            "cluster",
            "bootstrap",
            PULL,
            "--poll-interval",
            "3",
            "--json",
        ],
        0,
    );
    outputs.push((out.what.clone(), out.text()));
    let doc = out.json();
    for (i, n) in s.bare.iter().enumerate() {
        let r = &doc["nodes"][i];
        assert_eq!(r["ok"], true, "{}: {}", n.host, out.show());
        assert_eq!(
            r["pull_bundle"],
            "~/.rh/agent/bundle.json",
            "{}",
            out.show()
        );
        let bundle = node_file(&n.container, ".rh/agent/bundle.json").expect("bundle on the node");
        assert_eq!(bundle.mode, "600", "{}", n.container);
        assert_eq!(bundle.owner, "ubuntu:ubuntu", "{}", n.container);
        let v: Value = serde_json::from_slice(&bundle.bytes).expect("bundle JSON");
        assert_eq!(
            v["urls"].as_array().map(Vec::len),
            Some(3),
            "{}",
            n.container
        );
        assert!(!bundle.text().contains(&b.root_token));
        assert!(
            wait_agent(&n.container, Duration::from_secs(20)),
            "{}: no agent after a pull bootstrap",
            n.container
        );
    }

    // Publish with --wait in the background; kill the leader as soon as the
    // manifest is in the store, while the nodes (3 s polls) converge.
    let sync_cmd = ctl.command(&[
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
    let leader_c = leader(&b);
    let manifest = "secret/data/rh/e2e/clusters/pull/manifest";
    let start = Instant::now();
    while store_get(&b.node_urls[0], &b.root_token, manifest).0 != "200"
        && store_get(&b.node_urls[1], &b.root_token, manifest).0 != "200"
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
    s.log_to("controller-fleet.log", &out);
    outputs.push((out.what.clone(), out.text()));
    out.assert_code(0);
    let doc = out.json();
    let rows = doc["nodes"].as_array().expect("--wait rows");
    assert_eq!(rows.len(), s.bare.len(), "{}", out.show());
    assert!(
        rows.iter().all(|r| r["converged"] == true),
        "{}",
        out.show()
    );
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &leader_c]);
    assert_eq!(running.stdout.trim(), "false", "the leader is still up");

    // Every node: the key pair, byte for byte, 0600 in a 0700 ~/.ssh.
    for n in &s.bare {
        let c = &n.container;
        let f = node_file(c, &format!(".ssh/{KEY_NAME}")).expect("private key on the node");
        assert_eq!(f.bytes, private, "{c}: private key bytes");
        assert_eq!(f.mode, "600", "{c}");
        assert_eq!(f.owner, "ubuntu:ubuntu", "{c}");
        let p = node_file(c, &format!(".ssh/{KEY_NAME}.pub")).expect("public key on the node");
        assert_eq!(p.bytes, public, "{c}: public key bytes");
        assert_eq!(node_mode(c, ".ssh").as_deref(), Some("700"), "{c}");
    }
    // The var inside base_env's process on every node.
    let run = ctl.run(
        &["run", "--cluster", PULL, "--json", "--", "printenv", VAR],
        Duration::from_secs(120),
    );
    run.assert_code(0);
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("run JSON");
    let mut seen = Vec::new();
    all_strings(&v, &mut seen);
    let hits = seen.iter().filter(|t| t.trim() == api_value).count();
    assert_eq!(hits, s.bare.len(), "{}", run.show());

    // status: every node's report at the published version.
    let out = ok(&["status", "--cluster", PULL, "--json"], 0);
    outputs.push((out.what.clone(), out.text()));
    let st = out.json();
    let nodes = st["nodes"].as_array().expect("status nodes");
    assert_eq!(nodes.len(), s.bare.len(), "{}", out.show());
    for r in nodes {
        assert_eq!(
            r["applied_version"],
            st["published_version"],
            "{}",
            out.show()
        );
        assert_eq!(r["converged"], true, "{}", out.show());
    }
    let mut hostnames: Vec<String> = nodes
        .iter()
        .map(|r| r["hostname"].as_str().unwrap_or_default().to_string())
        .collect();
    hostnames.sort();
    let mut want: Vec<String> = (1..=s.bare.len()).map(|i| format!("bare-{i}")).collect();
    want.sort();
    assert_eq!(hostnames, want);

    // No value, private key line or token in any output but `run`'s.
    let key_lines: Vec<String> = String::from_utf8_lossy(&private)
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect();
    for (what, text) in &outputs {
        assert!(!text.contains(&api_value), "value leaked: {what}");
        assert!(!text.contains(&b.root_token), "token leaked: {what}");
        for l in &key_lines {
            assert!(!text.contains(l.as_str()), "key leaked: {what}");
        }
    }
}
