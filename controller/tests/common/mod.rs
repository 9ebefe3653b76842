//! Helpers for the controller's integration tests over real SSH: an OpenSSH
//! server on a loopback high port with its own host key and authorized_keys
//! (`SetEnv HOME=` points each "node" at its own temp home), the real agent
//! on loopback serving that home, and the real `controller` binary run with
//! `HOME` set to a temp dir, an emptied environment and `RH_SSH_CONFIG`
//! pointing at a generated ssh_config, so the real `~/.ssh` and `$HOME` are
//! never touched. Commands run with `RH_SSH_PERSIST=0` unless a test asks
//! otherwise, so no ssh master outlives a command; [`ssh_masters`] finds
//! the ones that do. Ports, modes, the built agent, running a process and
//! the fake agent come from the workspace's `test-support` crate.

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;
#[allow(unused_imports)] // not every test file uses every helper
pub use test_support::{free_port, mode, wait_for_port, FakeAgent, KillOnDrop, Run};

/// Longer than any command of these tests takes: a hang becomes a failure.
const COMMAND_DEADLINE: Duration = Duration::from_secs(600);

fn run_ok(cmd: &mut Command) {
    test_support::run_ok(cmd);
}

/// A new ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "rh-test", "-f"])
            .arg(path),
    );
}

/// The controller binary.
pub fn controller_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_controller"))
}

/// The agent binary of this workspace, next to the controller's (built by
/// `cargo build -p agent`, or any `cargo test --workspace`; never by a test).
pub fn agent_bin() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| test_support::workspace_bin("agent", &["agent/src", "common/src"]))
        .clone()
}

/// `agent serve --pull BUNDLE` serving `home` on `127.0.0.1:port` with the
/// config file `config`: environment cleared but `HOME` and `PATH`, output
/// to `home/agent.log` (fleet mode tests).
pub fn pull_agent_command(home: &Path, port: u16, config: &Path, bundle: &Path) -> Command {
    let log = fs::File::create(home.join("agent.log")).unwrap();
    let mut cmd = Command::new(agent_bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--home"])
        .arg(home)
        .arg("--config")
        .arg(config)
        .arg("--pull")
        .arg(bundle)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    cmd
}

/// A running agent serving `home` on a loopback port.
pub struct Agent {
    pub port: u16,
    pub home: PathBuf,
    child: KillOnDrop,
}

impl Agent {
    pub fn start(home: &Path) -> Agent {
        let port = free_port();
        let state = home.join(".rh/agent");
        fs::create_dir_all(&state).unwrap();
        let mut cmd = Command::new(agent_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--home"])
            .arg(home)
            .arg("--state-dir")
            .arg(&state)
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        let child = spawn_listening(cmd, &home.join("agent-test.log"), port, "agent");
        let token = state.join("token");
        let start = Instant::now();
        while !token.is_file() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            port,
            home: home.to_path_buf(),
            child,
        }
    }
}

/// Start `cmd` with no stdin and its output to `log`, then wait until it
/// listens on `port` (`what` names it in failures); killed on drop.
fn spawn_listening(mut cmd: Command, log: &Path, port: u16, what: &str) -> KillOnDrop {
    let log = fs::File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    wait_for_port(port, what);
    KillOnDrop(child)
}

/// An sshd on a loopback port whose sessions get `HOME=<node home>`.
pub struct Sshd {
    pub port: u16,
    pub host_key: PathBuf,
    child: KillOnDrop,
}

impl Sshd {
    pub fn start(dir: &Path, authorized_keys: &Path, node_home: &Path) -> Sshd {
        Sshd::start_with(dir, authorized_keys, node_home, &[])
    }

    /// Like [`Sshd::start`], with more `SetEnv` variables for the sessions.
    pub fn start_with(
        dir: &Path,
        authorized_keys: &Path,
        node_home: &Path,
        set_env: &[(&str, &str)],
    ) -> Sshd {
        // sshd refuses to start without its privilege separation directory.
        let _ = fs::create_dir_all("/run/sshd");
        fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_key");
        keygen(&host_key);
        let port = free_port();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 StrictModes no\nUsePAM no\nPidFile {pid}\nPermitRootLogin yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n\
                 AllowTcpForwarding yes\nSetEnv HOME={home}{more}\nMaxStartups 100:30:200\nMaxSessions 100\n",
                hk = host_key.display(),
                ak = authorized_keys.display(),
                pid = dir.join("sshd.pid").display(),
                home = node_home.display(),
                more = set_env
                    .iter()
                    .map(|(k, v)| format!(" {k}={v}"))
                    .collect::<String>(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        Sshd {
            port,
            host_key,
            child: spawn_listening(cmd, &dir.join("sshd.log"), port, "sshd"),
        }
    }

    /// The host's public key line as known_hosts wants it.
    pub fn known_hosts_line(&self) -> String {
        let public = fs::read_to_string(self.host_key.with_extension("pub")).unwrap();
        let mut parts = public.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    }
}

impl Sshd {
    /// Stop the listener: new connections are refused from now on, while the
    /// sessions already open (their own sshd processes) go on.
    pub fn stop_listener(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// One "node": an sshd and an agent serving their own home.
pub struct TestNode {
    pub home: PathBuf,
    pub sshd: Sshd,
    pub agent: Option<Agent>,
}

impl TestNode {
    /// `host:port` for `cluster add --host`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.sshd.port)
    }
}

/// A controller home, a client key, an ssh_config and known_hosts, and nodes.
pub struct World {
    pub root: TempDir,
    pub home: PathBuf,
    pub client_key: PathBuf,
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
    pub nodes: Vec<TestNode>,
}

impl World {
    /// `n` nodes with agents running and their host keys in known_hosts.
    pub fn new(n: usize) -> World {
        let mut w = World::bare();
        for _ in 0..n {
            w.add_node(true, true);
        }
        w
    }

    /// No nodes yet.
    pub fn bare() -> World {
        let root = tempfile::Builder::new().prefix("rh-it").tempdir().unwrap();
        let home = root.path().join("home");
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let client_key = root.path().join("client_key");
        keygen(&client_key);
        fs::copy(
            client_key.with_extension("pub"),
            root.path().join("authorized_keys"),
        )
        .unwrap();
        let known_hosts = root.path().join("known_hosts");
        fs::write(&known_hosts, "").unwrap();
        let ssh_config = root.path().join("ssh_config");
        fs::write(
            &ssh_config,
            format!(
                "Host *\n  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  \
                 IdentityFile {key}\n  IdentitiesOnly yes\n  User root\n  \
                 KexAlgorithms curve25519-sha256,sntrup761x25519-sha512@openssh.com\n",
                kh = known_hosts.display(),
                key = client_key.display(),
            ),
        )
        .unwrap();
        World {
            root,
            home,
            client_key,
            ssh_config,
            known_hosts,
            nodes: vec![],
        }
    }

    /// Add a node; optionally start its agent and trust its host key.
    pub fn add_node(&mut self, agent: bool, trusted: bool) -> usize {
        self.add_node_with(agent, trusted, &[])
    }

    /// The directory of node `i` (its home is `<dir>/home`).
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("node{i}"))
    }

    /// [`World::add_node`] with more environment for the node's ssh sessions.
    pub fn add_node_with(&mut self, agent: bool, trusted: bool, set_env: &[(&str, &str)]) -> usize {
        let i = self.nodes.len();
        let dir = self.node_dir(i);
        let home = dir.join("home");
        fs::create_dir_all(&home).unwrap();
        let sshd = Sshd::start_with(
            &dir.join("sshd"),
            &self.root.path().join("authorized_keys"),
            &home,
            set_env,
        );
        if trusted {
            self.trust(&sshd);
        }
        let agent = agent.then(|| Agent::start(&home));
        self.nodes.push(TestNode { home, sshd, agent });
        i
    }

    /// Append a node's host key to known_hosts.
    pub fn trust(&self, sshd: &Sshd) {
        let mut kh = fs::read_to_string(&self.known_hosts).unwrap();
        kh.push_str(&sshd.known_hosts_line());
        fs::write(&self.known_hosts, kh).unwrap();
    }

    /// `controller ARGS` with HOME, an empty environment plus `envs`, and RH_SSH_CONFIG.
    pub fn controller_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        self.controller_input(args, envs, None)
    }

    /// [`World::controller_with`] with `input` on stdin.
    pub fn controller_input(
        &self,
        args: &[&str],
        envs: &[(&str, &str)],
        input: Option<&str>,
    ) -> Run {
        let mut cmd = Command::new(controller_bin());
        cmd.args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RH_SSH_CONFIG", &self.ssh_config)
            .env("RH_AGENT_BIN", agent_bin())
            .env("RH_SSH_PERSIST", "0")
            .stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let what = format!("controller {}", args.join(" "));
        let input = input.map(|i| i.as_bytes().to_vec());
        test_support::run(cmd, COMMAND_DEADLINE, &what, input).finished()
    }

    pub fn controller(&self, args: &[&str]) -> Run {
        self.controller_with(args, &[])
    }

    /// `cluster add NAME` for these node indexes (plus extra raw hosts).
    pub fn add_cluster(&self, name: &str, nodes: &[usize], extra_hosts: &[&str]) {
        let mut args: Vec<String> = vec!["cluster".into(), "add".into(), name.into()];
        for &i in nodes {
            args.push("--host".into());
            args.push(self.nodes[i].host());
        }
        for h in extra_hosts {
            args.push("--host".into());
            args.push((*h).into());
        }
        args.push("--identity-file".into());
        args.push(self.client_key.display().to_string());
        args.push("--user".into());
        args.push("root".into());
        if let Some(a) = &self.nodes.get(nodes[0]).and_then(|n| n.agent.as_ref()) {
            args.push("--agent-port".into());
            args.push(a.port.to_string());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.controller(&refs).ok();
    }

    /// `cluster add NAME` (exit 0) for these node indexes as root with the
    /// client key, and `extra` arguments (`--agent-port P`...).
    pub fn add_cluster_with(&self, name: &str, nodes: &[usize], extra: &[&str]) {
        let hosts: Vec<String> = nodes.iter().map(|&i| self.nodes[i].host()).collect();
        let key = self.client_key.display().to_string();
        let hosts = hosts.iter().map(String::as_str);
        let mut args = test_support::cluster_add_args(name, "root", &key, hosts);
        args.extend(extra);
        self.controller(&args).ok();
    }
}

/// Stops the agents the controller started on these node homes, by their
/// pid files, even when an assert fails: the agent-boot.sh supervisor
/// first (it stops its agent), then the agent, each waited for (up to 5 s)
/// until its pid file is gone.
pub struct StopAgents(pub Vec<PathBuf>);

impl Drop for StopAgents {
    fn drop(&mut self) {
        for home in &self.0 {
            let state = home.join(".rh/agent");
            for file in ["agent-boot.pid", "agent.pid"] {
                if let Ok(pid) = fs::read_to_string(state.join(file)) {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while state.join(file).exists() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }
}

/// Every process's pid and arguments (read from /proc, lossily decoded;
/// nothing is signalled).
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let mut out = vec![];
    for entry in fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((pid, args));
    }
    out
}

/// Pids of the ssh master processes whose control socket is under `dir`
/// (read from /proc; nothing is signalled).
pub fn ssh_masters(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut out = vec![];
    for (pid, args) in processes() {
        let is_ssh = args
            .first()
            .is_some_and(|a| a == "ssh" || a.ends_with("/ssh"));
        // A master that went to the background after its first session
        // (`ControlPersist`) retitles itself `ssh: <control path> [mux]`.
        let is_mux = args
            .first()
            .is_some_and(|a| a.starts_with(&format!("ssh: {needle}")) && a.ends_with("[mux]"));
        if is_mux
            || is_ssh
                && args.iter().any(|a| a == "-M")
                && args.iter().any(|a| a.starts_with(&needle))
        {
            out.push(pid);
        }
    }
    out
}

/// [`ssh_masters`], waiting up to 5 s for the list to become empty.
pub fn ssh_masters_after_exit(dir: &Path) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let m = ssh_masters(dir);
        if m.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fixture credentials (all fake) and the values to look for in outputs.
pub struct Fixtures;

impl Fixtures {
    pub const AWS_KEY: &'static str = "AKIAFIXTUREKEY000001";
    pub const AWS_SECRET: &'static str = "fixture/aws+secret/value0000000000000001";
    pub const HF_TOKEN: &'static str = "hf_fixturetokenvalue0000000001";
    pub const OPENAI_KEY: &'static str = "sk-fixture-openai-000000000000000001";
    pub const VAR_VALUE: &'static str = "plain-var-fixture-value-0001";

    pub fn all() -> Vec<&'static str> {
        vec![
            Self::AWS_KEY,
            Self::AWS_SECRET,
            Self::HF_TOKEN,
            Self::OPENAI_KEY,
            Self::VAR_VALUE,
        ]
    }

    /// Write AWS and Hugging Face credential files into `home`.
    pub fn write(home: &Path) {
        fs::create_dir_all(home.join(".aws")).unwrap();
        fs::write(
            home.join(".aws/credentials"),
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                Self::AWS_KEY,
                Self::AWS_SECRET
            ),
        )
        .unwrap();
        fs::create_dir_all(home.join(".cache/huggingface")).unwrap();
        fs::write(home.join(".cache/huggingface/token"), Self::HF_TOKEN).unwrap();
    }

    /// The environment that makes `openai` detected.
    pub fn env() -> Vec<(&'static str, &'static str)> {
        vec![("OPENAI_API_KEY", Self::OPENAI_KEY)]
    }
}

/// The answers of a process on the agent port that cannot prove it holds
/// the token: an agent-like health without a proof, and one with a made-up
/// proof.
pub const UNPROVEN_HEALTH: [&str; 2] = [
    r#"{"status":"ok","version":"0.1.0"}"#,
    r#"{"status":"ok","version":"0.1.0","proof":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
];
