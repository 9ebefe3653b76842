//! Pull mode (fleet) end to end against the three-node OpenBao HA cluster
//! (`e2e/vault-ha/cluster.sh`, on the node network, started by
//! `scripts/e2e.sh`). One fleet is set up once per run ([`fleet`]): the bare
//! nodes bootstrapped as the pull cluster by the real controller over real
//! SSH (static agent, a fresh bundle per node), and pull nodes started by
//! docker-compose from bundles made by `controller cluster enroll` (no SSH:
//! `e2e/cluster.sh pull` mounts each `node-<i>.json` into its container,
//! whose entrypoint installs it and starts the agent in pull mode).
//! - f01: a publish with `sync --wait` while the Raft leader is killed with
//!   `docker kill`; every node of both kinds converges: files (bytes, modes,
//!   owner), the var in an env process, its report at the new version.
//! - f02: one more compose node started with a bundle another node already
//!   unwrapped is refused: its agent exits, nothing is applied, no report.
//! - f03: a systemd node (systemd as PID 1, `rh-agent.service`
//!   `Type=notify`) bootstrapped into the pull cluster is applied when its
//!   unit is active; a publish made while the unit is down is on the node as
//!   soon as `systemctl restart` returns.
//!
//! - f04: workload identity (`cluster federate` with `--issuer`): every
//!   pulling node keeps a token file the store signed, which PyJWT verifies
//!   against the store's JWKS (fetched from each store node: one issuer, one
//!   key set across the HA cluster), refreshed within its TTL, and `status`
//!   shows each node's identity; no token in any output.
//!
//! The controller is given the store's URLs with a standby first and the
//! leader last, so every command starts where a standby answers reads from
//! its own Raft copy.
//!
//! Run after `--test cluster` (the bare and systemd nodes' push agents are
//! replaced by pulling ones), one test at a time in this order. One test
//! binary (one fleet), its tests in modules named so that libtest's name
//! order is the run order: `a_pull_nodes` (f01-f03), `b_federation` (f04).

mod a_pull_nodes;
mod b_federation;
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
const PULL: &str = "pull";
const KEY_NAME: &str = "pull_e2e";

/// A key made while the systemd node's unit is down (f03).
const LATE_KEY: &str = "pull_late";
const VAR: &str = "PULL_E2E_API_KEY";

/// Pull nodes started from enroll's bundles by docker-compose.
const COMPOSE_NODES: usize = 3;

/// Seconds between polls of every pulling node.
const POLL: &str = "3";
const MANIFEST: &str = "secret/data/rh/e2e/clusters/pull/manifest";

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

/// Wait until every store node that answers serves manifest `version`
/// (standbys see a publish shortly after the leader): a node started or
/// restarted now reads it whichever store node it asks.
fn wait_manifest_everywhere(b: &Bao, version: u64) {
    let start = Instant::now();
    loop {
        let mut behind = Vec::new();
        for url in &b.node_urls {
            let (code, body) = store_get(url, &b.root_token, MANIFEST);
            if code == "000" {
                continue; // a killed node
            }
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if v["data"]["data"]["version"].as_u64() != Some(version) {
                behind.push(format!("{url}: {code}"));
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "store nodes never served manifest version {version}: {behind:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The controller with its own HOME (ssh key pairs and one env-var secret),
/// logged in to the HA store through the three node-network URLs. Every
/// output it gives (but `run`'s) is kept for the leak check.
struct PullCtl {
    s: &'static Suite,
    home: PathBuf,
    env: Vec<(String, String)>,
    outputs: Mutex<Vec<(String, String)>>,
}

impl PullCtl {
    /// The suite's controller command with this HOME and the store's env,
    /// without the fixture credentials.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.s.controller_command(args);
        cmd.env("HOME", &self.home);
        for (k, _) in &self.s.fixture_env {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run it; its output is kept for the leak check, and the command line
    /// is logged with every `--value NAME=VALUE` shown as `NAME=<value>`.
    fn run(&self, args: &[&str], deadline: Duration) -> Run {
        let shown: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match i.checked_sub(1).map(|p| args[p]) {
                Some("--value") => format!("{}=<value>", a.split('=').next().unwrap_or("")),
                _ => (*a).to_owned(),
            })
            .collect();
        let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
        let out = run_with_deadline(self.command(args), deadline, "controller", &shown);
        self.record(&out);
        out
    }

    /// Run it and expect `code`.
    fn ok(&self, args: &[&str], code: i32) -> Run {
        let out = self.run(args, Duration::from_secs(180));
        out.assert_code(code);
        out
    }

    /// `cluster bootstrap` of the pull cluster (poll interval, allowed var,
    /// JSON), expecting exit 0.
    fn bootstrap_pull(&self) -> Run {
        let line =
            format!("cluster bootstrap {PULL} --poll-interval {POLL} --allow-var {VAR} --json");
        self.ok(&test_support::argv(&line), 0)
    }

    /// `secret create pullapi`: `VAR` set to `value` (`--force` replaces it).
    fn create_api(&self, value: &str, force: bool) {
        let (var, value) = (format!("api_key={VAR}"), format!("api_key={value}"));
        let mut args = vec!["secret", "create", "pullapi"];
        if force {
            args.push("--force");
        }
        args.extend(["--env-var", &var, "--value", &value]);
        self.ok(&args, 0);
    }

    /// `cluster add` of the pull cluster on `hosts`, over SSH as ubuntu with
    /// the suite's key (used by bootstrap only).
    fn add_cluster(&self, hosts: &[&str]) {
        let key = self.s.ssh_key.to_string_lossy().into_owned();
        let mut args = vec![
            "cluster",
            "add",
            PULL,
            "--pull",
            "--user",
            "ubuntu",
            "--identity-file",
            &key,
        ];
        for host in hosts {
            args.extend(["--host", host]);
        }
        self.ok(&args, 0);
    }

    fn record(&self, out: &Run) {
        self.s.log_to("controller-fleet.log", out);
        self.outputs
            .lock()
            .unwrap()
            .push((out.what.clone(), out.text()));
    }

    /// `controller run --cluster pull -- printenv VAR` (its output carries the value).
    fn printenv(&self) -> Run {
        let args = ["run", "--cluster", PULL, "--json", "--", "printenv", VAR];
        let out = run_with_deadline(
            self.command(&args),
            Duration::from_secs(120),
            "controller",
            &args,
        );
        self.s.log_to("controller-run-output.log", &out);
        out.assert_code(0);
        out
    }

    /// `sync` (publish) of `secrets`, with extra args; the published version.
    fn publish(&self, secrets: &[&str], extra: &[&str], code: i32) -> (Run, u64) {
        let mut args = vec!["sync", "--cluster", PULL, "--json"];
        for s in secrets {
            args.extend(["--secret", s]);
        }
        args.extend_from_slice(extra);
        let out = self.ok(&args, code);
        let version = out.json()["published"]["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no published version: {}", out.show()));
        (out, version)
    }
}

/// An ssh key pair made in `home/.ssh/NAME`: (private, public) bytes.
fn key_pair(home: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let key = home.join(".ssh").join(name);
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
    (
        std::fs::read(&key).unwrap(),
        std::fs::read(key.with_extension("pub")).unwrap(),
    )
}

/// The pull cluster, set up once: bare nodes bootstrapped, compose nodes
/// started from enrolled bundles, nothing published yet.
struct Fleet {
    s: &'static Suite,
    b: Bao,
    ctl: PullCtl,
    private: Vec<u8>,
    public: Vec<u8>,
    api_value: String,
    /// Values that must never appear in an output kept by `ctl`.
    secrets: Mutex<Vec<String>>,
    bundles: PathBuf,
    /// The compose pull nodes (containers).
    pulled: Vec<String>,
}

static FLEET: OnceLock<Fleet> = OnceLock::new();

fn fleet() -> &'static Fleet {
    FLEET.get_or_init(Fleet::set_up)
}

/// Container name of compose pull node `i` (e2e/cluster.sh).
fn pull_container(s: &Suite, i: usize) -> String {
    format!("{}-pull-{i}", s.project)
}

/// `e2e/cluster.sh pull --bundles DIR --nodes N` for this suite's project.
fn compose_pull(s: &Suite, bundles: &Path, nodes: usize) -> Run {
    let mut c = Command::new(s.root.join("e2e/cluster.sh"));
    c.arg("pull")
        .arg("--bundles")
        .arg(bundles)
        .args(["--nodes", &nodes.to_string(), "--poll", POLL])
        // The store's generic secret sets VAR: each node's owner allows it.
        .args(["--allow-var", VAR])
        .env("RH_E2E_PROJECT", &s.project);
    let out = run_with_deadline(c, Duration::from_secs(240), "e2e/cluster.sh", &["pull"]);
    s.log_to("cluster-pull.log", &out);
    out
}

impl Fleet {
    fn set_up() -> Fleet {
        let s = suite();
        let b = bao();
        assert!(!s.bare.is_empty(), "no bare nodes");
        let home = s.work.join("pullhome");
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let (private, public) = key_pair(&home, KEY_NAME);
        let api_value = format!("pull-e2e-api-{}", std::process::id());
        // The controller is given a standby first and the leader last: every
        // command starts where a standby answers reads from its own Raft
        // copy, and must still see its own writes (a key, then the role
        // naming it) by going to the active node.
        let leader_c = leader(&b);
        let mut urls: Vec<&String> = b.node_urls.iter().collect();
        let at = b.containers.iter().position(|c| *c == leader_c).unwrap();
        let leader_url = urls.remove(at);
        urls.push(leader_url);
        let vault_addr: Vec<&str> = urls.iter().map(|u| u.as_str()).collect();
        let ctl = PullCtl {
            s,
            home,
            env: vec![
                ("VAULT_ADDR".into(), vault_addr.join(",")),
                ("VAULT_TOKEN".into(), b.root_token.clone()),
                // The test store speaks plain http on the private node network.
                ("RH_VAULT_ALLOW_HTTP".into(), "1".into()),
            ],
            outputs: Mutex::new(Vec::new()),
        };
        ctl.create_api(&api_value, false);
        let hosts: Vec<&str> = s.bare.iter().map(|n| n.host.as_str()).collect();
        ctl.add_cluster(&hosts);

        // Bootstrap: the static agent and a fresh bundle per node; pull mode at boot.
        let out = ctl.bootstrap_pull();
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
            check_bundle(&n.container, &b);
            assert!(
                wait_agent(&n.container, Duration::from_secs(20)),
                "{}: no agent after a pull bootstrap",
                n.container
            );
        }

        // Enroll: one bundle per compose node, started by docker-compose
        // with its bundle mounted; no SSH from here.
        let bundles = s.work.join("bundles");
        let _ = std::fs::remove_dir_all(&bundles);
        let n = COMPOSE_NODES.to_string();
        let out = ctl.ok(
            &[
                "cluster",
                "enroll",
                PULL,
                "--out",
                &bundles.to_string_lossy(),
                "--nodes",
                &n,
                "--json",
            ],
            0,
        );
        let listed = out.json()["bundles"].as_array().map(Vec::len);
        assert_eq!(listed, Some(COMPOSE_NODES), "{}", out.show());
        for i in 1..=COMPOSE_NODES {
            let f = bundles.join(format!("node-{i}.json"));
            assert_eq!(test_support::mode(&f), 0o600, "{}", f.display());
        }
        compose_pull(s, &bundles, COMPOSE_NODES).assert_code(0);
        let pulled: Vec<String> = (1..=COMPOSE_NODES).map(|i| pull_container(s, i)).collect();
        for c in &pulled {
            // The agent listens once its first poll is applied.
            assert!(
                wait_agent(c, Duration::from_secs(90)),
                "{c}: no agent: {}",
                docker(&["logs", c]).text()
            );
            check_bundle(c, &b);
            let ps = exec(c, &["ps", "-o", "user=", "-C", "agent"]);
            assert!(
                !ps.stdout.trim().is_empty() && ps.stdout.split_whitespace().all(|u| u == "ubuntu"),
                "{c}: the agent does not run as ubuntu: {}",
                ps.show()
            );
            assert_ne!(
                exec(c, &["pgrep", "-x", "sshd"]).code,
                0,
                "{c}: a compose pull node runs no sshd"
            );
        }
        let secrets = Mutex::new(vec![api_value.clone(), b.root_token.clone()]);
        let f = Fleet {
            s,
            b,
            ctl,
            private,
            public,
            api_value,
            secrets,
            bundles,
            pulled,
        };
        f.add_key_lines(&f.private);
        f
    }

    /// Private key lines of `private` never to be printed.
    fn add_key_lines(&self, private: &[u8]) {
        let mut secrets = self.secrets.lock().unwrap();
        secrets.extend(
            String::from_utf8_lossy(private)
                .lines()
                .skip(2)
                .filter(|l| !l.starts_with("-----") && l.len() > 20)
                .map(str::to_string),
        );
    }

    /// No value, private key line or token in any output kept so far.
    fn assert_no_leaks(&self) {
        let secrets = self.secrets.lock().unwrap();
        for (what, text) in self.ctl.outputs.lock().unwrap().iter() {
            for v in secrets.iter() {
                assert!(!text.contains(v.as_str()), "a value leaked: {what}");
            }
        }
    }

    /// The fleet's two secrets in the store (published by f01; when a test
    /// runs alone, published now and waited for on every store node).
    fn ensure_published(&self) {
        let b = &self.b;
        let there = |u: &String| store_get(u, &b.root_token, MANIFEST).0 == "200";
        if b.node_urls.iter().any(there) {
            return;
        }
        let (_, version) = self
            .ctl
            .publish(&[&format!("ssh-{KEY_NAME}"), "pullapi"], &[], 0);
        wait_manifest_everywhere(b, version);
    }

    /// The published key pair on a node: bytes, 0600, ubuntu's, ~/.ssh 0700.
    fn check_key(&self, c: &str, name: &str, private: &[u8], public: &[u8]) {
        let f = node_file(c, &format!(".ssh/{name}"))
            .unwrap_or_else(|| panic!("{c}: no private key {name}"));
        assert_eq!(f.bytes, private, "{c}: private key bytes");
        assert_eq!(f.mode, "600", "{c}");
        assert_eq!(f.owner, "ubuntu:ubuntu", "{c}");
        let p = node_file(c, &format!(".ssh/{name}.pub"))
            .unwrap_or_else(|| panic!("{c}: no public key {name}"));
        assert_eq!(p.bytes, public, "{c}: public key bytes");
        assert_eq!(node_mode(c, ".ssh").as_deref(), Some("700"), "{c}");
    }

    /// `status --json`: (published version, node rows).
    fn status(&self) -> (Value, Vec<Value>) {
        let out = self.ctl.ok(&["status", "--cluster", PULL, "--json"], 0);
        let st = out.json();
        let nodes = st["nodes"].as_array().cloned().unwrap_or_default();
        (st["published_version"].clone(), nodes)
    }
}

/// The status row of the node named `hostname`.
fn report_of<'a>(nodes: &'a [Value], hostname: &str) -> &'a Value {
    nodes
        .iter()
        .find(|r| r["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no report from {hostname}: {nodes:?}"))
}

/// The bundle on a node: installed 0600 for ubuntu, three store URLs, no root token.
fn check_bundle(c: &str, b: &Bao) {
    let bundle = node_file(c, ".rh/agent/bundle.json").expect("bundle on the node");
    assert_eq!(bundle.mode, "600", "{c}");
    assert_eq!(bundle.owner, "ubuntu:ubuntu", "{c}");
    assert_eq!(node_mode(c, ".rh/agent").as_deref(), Some("700"), "{c}");
    let v: Value = serde_json::from_slice(&bundle.bytes).expect("bundle JSON");
    assert_eq!(v["urls"].as_array().map(Vec::len), Some(3), "{c}");
    assert!(!bundle.text().contains(&b.root_token));
}

/// `printenv VAR` inside base_env's process on a node without SSH: the
/// agent's own run route, asked from the node as ubuntu with its token
/// (what `controller run` does over SSH). Its stdout, trimmed.
fn printenv_on_node(c: &str) -> String {
    let out = exec_ubuntu(
        c,
        &format!(
            "curl -fsS -m 30 -H \"Authorization: Bearer $(cat .rh/agent/token)\" \
             -H 'Content-Type: application/json' -d '{{\"argv\":[\"printenv\",\"{VAR}\"]}}' \
             http://127.0.0.1:{AGENT_PORT}/v1/envs/base_env/run"
        ),
    );
    out.assert_code(0);
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("run answer");
    assert_eq!(v["exit_code"], 0, "{c}: printenv {VAR} failed");
    v["stdout"].as_str().unwrap_or_default().trim().to_string()
}
