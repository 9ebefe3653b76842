//! Harness for the end-to-end tests: the live cluster started by
//! `e2e/cluster.sh up` (read from its `cluster.env`), the fake credentials
//! written by `e2e/fixtures.sh`, the real `controller` binary run with a temp
//! HOME, and `docker` to look at what is really on the nodes.
//! Processes run through the workspace's `test-support` crate
//! (`test_support::run`, a deadline each).
//! It never touches the real $HOME, and every controller output that may
//! legitimately carry a value (`controller run`) is kept apart from the
//! outputs that must never carry one.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The 16 secrets `controller secret detect` finds in the fixture home.
pub(crate) const SECRETS: [&str; 16] = [
    "aws",
    "azure",
    "gcp",
    "github",
    "huggingface",
    "kubernetes",
    "lambda",
    "docker",
    "ssh-id_e2e",
    "sky",
    "anthropic",
    "cohere",
    "langchain",
    "openai",
    "pinecone",
    "wandb",
];

/// Env vars the env-only providers set on the nodes.
pub(crate) const ENV_VARS: [&str; 9] = [
    "SKYPILOT_DOCKER_USERNAME",
    "SKYPILOT_DOCKER_PASSWORD",
    "SKYPILOT_DOCKER_SERVER",
    "ANTHROPIC_API_KEY",
    "COHERE_API_KEY",
    "LANGCHAIN_API_KEY",
    "OPENAI_API_KEY",
    "PINECONE_API_KEY",
    "WANDB_API_KEY",
];

pub(crate) const NODE_HOME: &str = "/home/ubuntu";
pub(crate) const AGENT_PORT: u16 = 32300;

/// One node: the address the controller uses and its container.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) host: String,
    pub(crate) container: String,
}

/// One fixture value, labelled `provider.key`; `secret` ones must never be logged.
pub(crate) struct Marker {
    pub(crate) label: String,
    pub(crate) value: String,
    pub(crate) secret: bool,
}

/// The live cluster and the controller's temp HOME.
pub(crate) struct Suite {
    pub(crate) root: PathBuf,
    pub(crate) project: String,
    pub(crate) network: String,
    pub(crate) ssh_config: PathBuf,
    pub(crate) ssh_key: PathBuf,
    pub(crate) agents: Vec<Node>,
    pub(crate) bare: Vec<Node>,
    /// Nodes with systemd as PID 1 (none in a cluster started without them).
    pub(crate) systemd: Vec<Node>,
    pub(crate) controller: PathBuf,
    pub(crate) home: PathBuf,
    pub(crate) fixture_env: Vec<(String, String)>,
    pub(crate) markers: Vec<Marker>,
    /// Values made by tests (kept for the leak check).
    pub(crate) extra_markers: Mutex<Vec<Marker>>,
    pub(crate) logs: PathBuf,
    pub(crate) work: PathBuf,
}

/// A finished process (fixture values are fake; real ones never reach
/// its messages).
pub(crate) use test_support::Run;

static SUITE: OnceLock<Suite> = OnceLock::new();

/// The suite, set up once per test process.
pub(crate) fn suite() -> &'static Suite {
    SUITE.get_or_init(Suite::load)
}

pub(crate) fn parse_env_file(path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; start the cluster first (scripts/e2e.sh, or e2e/cluster.sh up)",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// Without RH_E2E_CLUSTER_ENV: the most recent `e2e/.build/*/cluster.env`.
fn default_cluster_env(root: &Path) -> PathBuf {
    fs::read_dir(root.join("e2e/.build"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("cluster.env"))
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| root.join("e2e/.build/cluster.env"))
}

impl Suite {
    fn load() -> Suite {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let env_path = std::env::var_os("RH_E2E_CLUSTER_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_cluster_env(&root));
        let env = parse_env_file(&env_path);
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {k}", env_path.display()))
        };
        let nodes = |hosts: &str, containers: &str| -> Vec<Node> {
            let h = env.get(hosts).cloned().unwrap_or_default();
            let c = env.get(containers).cloned().unwrap_or_default();
            h.split_whitespace()
                .zip(c.split_whitespace())
                .map(|(h, c)| Node {
                    host: h.to_string(),
                    container: c.to_string(),
                })
                .collect()
        };
        // A short path: the controller keeps ssh control sockets under its HOME,
        // and a Unix socket path is limited to 108 bytes.
        let work = std::env::var_os("RH_E2E_WORK")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/rhe2e.{}", std::process::id())));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).expect("create run dir");
        let fixtures = work.join("fixtures");
        let st = Command::new(root.join("e2e/fixtures.sh"))
            .arg(&fixtures)
            .stdout(Stdio::null())
            .status()
            .expect("run e2e/fixtures.sh");
        assert!(st.success(), "e2e/fixtures.sh failed");
        let fixture_env = parse_env_file(&fixtures.join("fixture.env"))
            .into_iter()
            .collect();
        let markers = fs::read_to_string(fixtures.join("markers.tsv"))
            .expect("markers.tsv")
            .lines()
            .map(|l| {
                let mut f = l.split('\t');
                Marker {
                    label: f.next().unwrap_or_default().to_string(),
                    value: f.next().unwrap_or_default().to_string(),
                    secret: f.next() == Some("secret"),
                }
            })
            .collect();
        let logs = std::env::var_os("RH_E2E_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("e2e/.build/logs"));
        fs::create_dir_all(&logs).expect("create logs dir");
        let controller = std::env::var_os("RH_E2E_CONTROLLER")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/controller"));
        assert!(
            controller.is_file(),
            "no controller binary at {} (cargo build --release -p controller)",
            controller.display()
        );
        Suite {
            project: get("RH_E2E_PROJECT"),
            network: get("RH_E2E_NETWORK"),
            ssh_config: PathBuf::from(get("RH_E2E_SSH_CONFIG")),
            ssh_key: PathBuf::from(get("RH_E2E_SSH_KEY")),
            agents: nodes("RH_E2E_AGENT_HOSTS", "RH_E2E_AGENT_CONTAINERS"),
            bare: nodes("RH_E2E_BARE_HOSTS", "RH_E2E_BARE_CONTAINERS"),
            systemd: nodes("RH_E2E_SYSTEMD_HOSTS", "RH_E2E_SYSTEMD_CONTAINERS"),
            controller,
            home: fixtures.join("home"),
            fixture_env,
            markers,
            extra_markers: Mutex::new(Vec::new()),
            logs,
            work,
            root,
        }
    }

    /// The fixture value labelled `label` (e.g. `aws.secret_key`).
    pub(crate) fn value(&self, label: &str) -> &str {
        self.markers
            .iter()
            .find(|m| m.label == label)
            .map(|m| m.value.as_str())
            .unwrap_or_else(|| panic!("no fixture value {label}"))
    }

    /// The fixture value of an env var of an env-only provider.
    pub(crate) fn env_value(&self, var: &str) -> &str {
        self.fixture_env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no fixture env var {var}"))
    }

    /// A local fixture file, relative to the controller's HOME.
    pub(crate) fn local(&self, rel: &str) -> Vec<u8> {
        fs::read(self.home.join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
    }

    pub(crate) fn add_marker(&self, label: &str, value: &str) {
        self.extra_markers.lock().unwrap().push(Marker {
            label: label.to_string(),
            value: value.to_string(),
            secret: true,
        });
    }

    pub(crate) fn controller_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.controller);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("USER", "e2e")
            .env("LANG", "C.UTF-8")
            .env("RH_SSH_CONFIG", &self.ssh_config)
            .env("RH_AGENTS_DIR", self.agents_dir())
            .env("NO_COLOR", "1");
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            cmd.env("TMPDIR", tmp);
        }
        for (k, v) in &self.fixture_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run the controller; its output must never hold a value (leak-checked).
    pub(crate) fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_deadline(args, Duration::from_secs(180))
    }

    pub(crate) fn ctl_deadline(&self, args: &[&str], deadline: Duration) -> Run {
        let out = run_with_deadline(self.controller_command(args), deadline, "controller", args);
        self.log_to("controller.log", &out);
        out
    }

    /// Run the controller when its output is meant to carry values
    /// (`controller run -- printenv`): logged apart, not leak-checked.
    pub(crate) fn ctl_exposing(&self, args: &[&str]) -> Run {
        let out = run_with_deadline(
            self.controller_command(args),
            Duration::from_secs(120),
            "controller",
            args,
        );
        self.log_to("controller-run-output.log", &out);
        out
    }

    pub(crate) fn log_to(&self, file: &str, out: &Run) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(file))
            .expect("open controller log");
        let _ = writeln!(
            f,
            "### {} (exit {}, {:.2?})\n{}\n{}",
            out.what,
            out.code,
            out.elapsed,
            out.stdout.trim_end(),
            out.stderr.trim_end()
        );
    }

    /// Where scripts/build-agents.sh put the static agents bootstrap sends.
    pub(crate) fn agents_dir(&self) -> PathBuf {
        std::env::var_os("RH_AGENTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.join("target/agents"))
    }

    /// `controller cluster add NAME` for these nodes (replaces an existing one).
    pub(crate) fn add_cluster(&self, name: &str, nodes: &[Node]) {
        let key = self.ssh_key.to_string_lossy().into_owned();
        let hosts = nodes.iter().map(|n| n.host.as_str());
        let args = test_support::cluster_add_args(name, "ubuntu", &key, hosts);
        self.ctl(&args).assert_code(0);
    }

    /// `controller sync --cluster C --json` plus extra args.
    pub(crate) fn sync(&self, cluster: &str, extra: &[&str]) -> Run {
        let mut args = vec!["sync", "--cluster", cluster, "--json"];
        args.extend_from_slice(extra);
        self.ctl(&args)
    }

    /// `printenv` inside env `env` on every node of `cluster`; one stdout per node.
    pub(crate) fn printenv(&self, cluster: &str, env: &str) -> (Run, Vec<String>) {
        let out = self.ctl_exposing(&[
            "run",
            "--cluster",
            cluster,
            "--env",
            env,
            "--json",
            "--",
            "printenv",
        ]);
        let stdouts = if out.stdout.trim().is_empty() {
            Vec::new()
        } else {
            let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
            let mut found = Vec::new();
            collect_strings_named(&v, "stdout", &mut found);
            found
        };
        (out, stdouts)
    }
}

fn collect_strings_named(v: &Value, key: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    if let Value::String(s) = x {
                        found.push(s.clone());
                        continue;
                    }
                }
                collect_strings_named(x, key, found);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_strings_named(x, key, found)),
        _ => {}
    }
}

/// Every string anywhere in a JSON document (keys and values).
pub(crate) fn all_strings(v: &Value, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                found.push(k.clone());
                all_strings(x, found);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, found)),
        Value::String(s) => found.push(s.clone()),
        _ => {}
    }
}

/// Run a process I started; kill it (by its own handle) at the deadline.
pub(crate) fn run_with_deadline(
    cmd: Command,
    deadline: Duration,
    name: &str,
    args: &[&str],
) -> Run {
    run_with_input(cmd, deadline, name, args, None)
}

/// [`run_with_deadline`], feeding `input` on stdin.
pub(crate) fn run_with_input(
    cmd: Command,
    deadline: Duration,
    name: &str,
    args: &[&str],
    input: Option<Vec<u8>>,
) -> Run {
    test_support::run(cmd, deadline, &format!("{name} {}", args.join(" ")), input)
}

/// `docker ARGS`.
pub(crate) fn docker(args: &[&str]) -> Run {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_with_deadline(cmd, Duration::from_secs(90), "docker", args)
}

/// `docker exec CONTAINER ARGS` (as root).
pub(crate) fn exec(container: &str, args: &[&str]) -> Run {
    let mut a = vec!["exec", container];
    a.extend_from_slice(args);
    docker(&a)
}

/// A bash command on the node as `ubuntu`, in its home.
pub(crate) fn exec_ubuntu(container: &str, script: &str) -> Run {
    docker(&[
        "exec",
        "-u",
        "ubuntu",
        "-w",
        NODE_HOME,
        "-e",
        "HOME=/home/ubuntu",
        container,
        "bash",
        "-c",
        script,
    ])
}

/// A file on a node: its bytes, octal mode and `user:group`.
#[derive(Debug)]
pub(crate) struct NodeFile {
    pub(crate) bytes: Vec<u8>,
    pub(crate) mode: String,
    pub(crate) owner: String,
}

impl NodeFile {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Read `path` (absolute, or relative to the node home) on a node; None if absent.
pub(crate) fn node_file(container: &str, path: &str) -> Option<NodeFile> {
    let path = abs(path);
    let st = exec(container, &["stat", "-c", "%a %U:%G %F", &path]);
    if st.code != 0 {
        return None;
    }
    let mut f = st.stdout.split_whitespace();
    let mode = f.next().unwrap_or_default().to_string();
    let owner = f.next().unwrap_or_default().to_string();
    let cat = exec(container, &["cat", &path]);
    assert_eq!(cat.code, 0, "{}", cat.show());
    Some(NodeFile {
        bytes: cat.raw_stdout,
        mode,
        owner,
    })
}

/// Octal mode of a path on a node (`700`), None if absent.
pub(crate) fn node_mode(container: &str, path: &str) -> Option<String> {
    let st = exec(container, &["stat", "-c", "%a", &abs(path)]);
    (st.code == 0).then(|| st.stdout.trim().to_string())
}

pub(crate) fn node_exists(container: &str, path: &str) -> bool {
    exec(container, &["test", "-e", &abs(path)]).code == 0
}

pub(crate) fn abs(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{NODE_HOME}/{}", path.trim_start_matches("~/"))
    }
}

/// Whether the agent on a node answers `/healthz` within `within`.
pub(crate) fn wait_agent(container: &str, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        let url = format!("http://127.0.0.1:{AGENT_PORT}/healthz");
        if exec(container, &["curl", "-fsS", "-m", "1", &url]).code == 0 {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether sshd on a node accepts a TCP connection from the host within `within`.
pub(crate) fn wait_sshd(host: &str, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        let addr = format!("{host}:22").parse().expect("node address");
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Pid of the agent on a node (as seen inside the container).
pub(crate) fn agent_pid(container: &str) -> Option<String> {
    let out = exec(container, &["pgrep", "-o", "-x", "agent"]);
    (out.code == 0).then(|| out.stdout.trim().to_string())
}

/// Whether `text` names `host` as a whole token (172.30.99.13 is not 172.30.99.131).
pub(crate) fn mentions_host(text: &str, host: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
        .any(|t| t == host)
}

/// Whether a node field (`HOST`, `USER@HOST`, `HOST:PORT`) is this host.
pub(crate) fn is_host(field: &str, host: &str) -> bool {
    let f = field.rsplit('@').next().unwrap_or(field);
    let f = f.strip_suffix(":22").unwrap_or(f);
    f == host
}

/// One result row of a sync/revoke JSON document: the node and secret it is
/// about (from the object itself or the nearest enclosing one) and its status.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) node: Option<String>,
    pub(crate) secret: Option<String>,
    pub(crate) status: String,
}

/// Every object with a string `status`, with its node and secret context.
pub(crate) fn rows(v: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    walk_rows(v, None, None, &mut out);
    out
}

fn str_field(m: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| m.get(*k).and_then(Value::as_str).map(str::to_string))
}

fn walk_rows(v: &Value, node: Option<String>, secret: Option<String>, out: &mut Vec<Row>) {
    match v {
        Value::Object(m) => {
            let node = str_field(m, &["node", "host"]).or(node);
            let secret = str_field(m, &["secret", "name"]).or(secret);
            if let Some(status) = m.get("status").and_then(Value::as_str) {
                out.push(Row {
                    node: node.clone(),
                    secret: secret.clone(),
                    status: status.to_string(),
                });
            }
            for (k, x) in m {
                // Objects keyed by node address: the key is the node.
                let node = if node.is_none() && looks_like_host(k) {
                    Some(k.clone())
                } else {
                    node.clone()
                };
                walk_rows(x, node, secret.clone(), out);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|x| walk_rows(x, node.clone(), secret.clone(), out)),
        _ => {}
    }
}

fn looks_like_host(k: &str) -> bool {
    let h = k.rsplit('@').next().unwrap_or(k);
    h.split(':').next().unwrap_or(h).split('.').count() == 4
        && h.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ':')
}

/// Rows about this host.
pub(crate) fn rows_for<'a>(rows: &'a [Row], host: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.node.as_deref().is_some_and(|n| is_host(n, host)))
        .collect()
}

/// The value of `key` in `[section]` of an INI text.
pub(crate) fn ini_get(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current = s.trim().to_string();
        } else if current == section {
            if let Some((k, v)) = l.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

/// The public key part (`type base64`) of an OpenSSH public key line.
pub(crate) fn pubkey_core(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
