//! The `local` cluster: the agent on this machine, reached without SSH and
//! started in the background by the controller when it is not running.
//! HOME is a temp dir; the agent the controller starts is stopped at the end
//! through the pid it wrote to `~/.rh/agent/agent.pid`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{mode, Fixtures, World};

/// Kills the agents the controller started, even when an assert fails.
struct StopAgent(PathBuf);

impl Drop for StopAgent {
    fn drop(&mut self) {
        for pid in agents_serving(&self.0) {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// Pids of the `agent serve` processes whose state dir is under `home`.
fn agents_serving(home: &Path) -> Vec<u32> {
    let state = home.join(".rh/agent").display().to_string();
    let serves = |args: &[String]| {
        let dir = args
            .windows(2)
            .any(|w| w[0] == "--state-dir" && w[1] == state);
        dir && args.iter().any(|a| a == "serve")
    };
    common::processes()
        .into_iter()
        .filter(|(_, args)| serves(args))
        .map(|(pid, _)| pid)
        .collect()
}

/// `controller run --cluster local -- printenv VAR`: its stdout (the run must succeed).
fn printenv(w: &World, envs: &[(&str, &str)], var: &str) -> String {
    w.controller_with(&["run", "--cluster", "local", "--", "printenv", var], envs)
        .ok()
        .stdout
}

/// The env of a `local` run: the agent started on a free port, no ssh
/// config at all (local never uses SSH).
const LOCAL_ENV: [(&str, &str); 2] = [
    ("RH_LOCAL_AGENT_LISTEN", "127.0.0.1:0"),
    ("RH_SSH_CONFIG", "/nonexistent"),
];

/// An empty home and the guard stopping its agents.
fn bare_home() -> (World, StopAgent) {
    let w = World::bare();
    let stop = StopAgent(w.home.clone());
    (w, stop)
}

/// A home with the fixtures, the guard stopping its agents, and the
/// fixtures' env with [`LOCAL_ENV`].
fn local_home() -> (World, StopAgent, Vec<(&'static str, &'static str)>) {
    let (w, stop) = bare_home();
    Fixtures::write(&w.home);
    let mut envs = Fixtures::env();
    envs.extend(LOCAL_ENV);
    (w, stop, envs)
}

#[test]
fn local_cluster_starts_the_agent_and_syncs_without_ssh() {
    let (w, _stop, envs) = local_home();
    let r = w
        .controller_with(&["sync", "--cluster", "local", "--json"], &envs)
        .ok();
    r.no_values(&Fixtures::all());
    let json = r.json();
    let results = json["nodes"][0]["results"].as_array().unwrap();
    let status = |name: &str| {
        test_support::entry(&json["nodes"][0]["results"], "name", name)["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The files are this machine's own: already there, unchanged. A secret
    // found in a file is installed as that file only (no HF_TOKEN var); env
    // secrets become vars.
    let hf = results.iter().find(|r| r["name"] == "huggingface").unwrap();
    assert_eq!(hf["files"][0]["status"], "unchanged", "{json:#}");
    assert!(hf.get("vars").is_none(), "{json:#}");
    assert_eq!(status("openai"), "written");
    let state = w.home.join(".rh/agent");
    assert!(state.join("agent.pid").is_file());
    assert!(state.join("agent.log").is_file());
    assert_eq!(mode(&state.join("token")), 0o600);
    // The agent keeps running between commands: the var is in base_env.
    assert_eq!(
        printenv(&w, &envs, "OPENAI_API_KEY"),
        format!("{}\n", Fixtures::OPENAI_KEY)
    );
    let pid = fs::read_to_string(state.join("agent.pid")).unwrap();
    let r = w
        .controller_with(&["status", "--cluster", "local"], &envs)
        .ok();
    r.no_values(&Fixtures::all());
    assert!(r.stdout.contains("OPENAI_API_KEY"), "{}", r.show());
    // Same agent (not restarted).
    assert_eq!(fs::read_to_string(state.join("agent.pid")).unwrap(), pid);
}

#[test]
fn local_run_honours_the_command_timeout() {
    let (w, _stop) = bare_home();
    let envs = LOCAL_ENV;
    // The agent kills a command over its limit and says so; the exit
    // status is the kill's (not 0), and the output so far is kept.
    let r = w.controller_with(
        &[
            "run",
            "--cluster",
            "local",
            "--command-timeout",
            "1",
            "--",
            "sh",
            "-c",
            "echo started; sleep 30",
        ],
        &envs,
    );
    assert_ne!(r.code, 0, "{}", r.show());
    r.stderr_has("timed out");
    assert!(r.stdout.contains("started"), "{}", r.show());
    let r = w.controller_with(
        &test_support::argv("run --cluster local --command-timeout 0 -- true"),
        &envs,
    );
    assert_eq!(r.code, 2, "{}", r.show());
}

#[test]
fn two_controllers_at_once_start_one_local_agent_with_a_private_log() {
    let (w, _stop) = bare_home();
    let envs = LOCAL_ENV;
    let runs: Vec<_> = std::thread::scope(|s| {
        let tasks: Vec<_> = (0..3)
            .map(|_| s.spawn(|| w.controller_with(&["status", "--cluster", "local"], &envs)))
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for r in runs {
        r.ok();
    }
    let agents = agents_serving(&w.home);
    assert_eq!(agents.len(), 1, "agents serving one home: {agents:?}");
    assert_eq!(mode(&w.home.join(".rh/agent/agent.log")), 0o600);
}

/// Another user holding the local agent's port (the agent is down) and
/// answering `/healthz` must not receive the agent token.
#[test]
fn the_local_token_is_never_sent_to_another_users_listener() {
    if !Path::new("/usr/bin/setpriv").exists() || !Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: needs setpriv and /usr/bin/python3");
        return;
    }
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to listen as another user");
        return;
    }
    let w = World::bare();
    let port = common::free_port();
    let seen = w.home.parent().unwrap().join("seen");
    fs::write(&seen, "").unwrap();
    fs::set_permissions(&seen, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let server = format!(
        r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open({seen:?}, "a").write(str(self.headers.get("Authorization")) + "\n")
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.end_headers()
        self.wfile.write(b'{{"version":"x","ok":true}}')
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#,
        seen = seen.display().to_string()
    );
    let imp = std::process::Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(&server)
        .spawn()
        .unwrap();
    let _kill = test_support::KillOnDrop(imp);
    let state = w.home.join(".rh/agent");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("token"), "the-agent-token-0123456789").unwrap();
    fs::write(state.join("agent.addr"), format!("127.0.0.1:{port}")).unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed().as_secs() < 10,
            "the impostor did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = w.controller_with(
        &["status", "--cluster", "local"],
        &[("RH_SSH_CONFIG", "/nonexistent")],
    );
    assert_eq!(r.code, 1, "{}", r.show());
    r.stderr_has("not by you");
    let seen = fs::read_to_string(&seen).unwrap();
    assert!(!seen.contains("the-agent-token"), "{seen}");
    assert!(
        seen.contains("None"),
        "the impostor was asked /healthz: {seen:?}"
    );
}

#[test]
fn the_local_agent_does_not_inherit_the_controllers_environment() {
    let (w, _stop) = bare_home();
    let envs = [
        LOCAL_ENV[0],
        LOCAL_ENV[1],
        ("OPENAI_API_KEY", "sk-never-synced-0123"),
    ];
    // The first command starts the agent; nothing was synced, so the key
    // in the controller's environment must not be in the env process.
    let r = w.controller_with(
        &test_support::argv("run --cluster local -- printenv OPENAI_API_KEY"),
        &envs,
    );
    assert!(!r.stdout.contains("sk-never-synced"), "{}", r.show());
    assert_eq!(r.code, 1, "{}", r.show());
    let r = w
        .controller_with(
            &["run", "--cluster", "local", "--", "printenv", "HOME"],
            &envs,
        )
        .ok();
    assert_eq!(r.stdout.trim(), w.home.display().to_string());
}

/// A process of the same user (so the uid check lets it pass) holding the
/// local agent's port while the agent is down, answering `/healthz` like an
/// agent: it cannot prove it holds the token, so it never receives it, nor a
/// request carrying secrets.
#[test]
fn the_local_token_is_never_sent_to_a_listener_that_cannot_prove_it_holds_it() {
    for body in common::UNPROVEN_HEALTH {
        let (w, _stop, envs) = local_home();
        let fake = common::FakeAgent::start(body);
        let token = "the-agent-token-0123456789abcdef";
        let state = w.home.join(".rh/agent");
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join("token"), token).unwrap();
        fs::write(state.join("agent.addr"), format!("127.0.0.1:{}", fake.port)).unwrap();
        let r = w.controller_with(&["sync", "--cluster", "local"], &envs);
        // First what matters most: the impostor got no token.
        fake.assert_challenged_only(token);
        assert_eq!(r.code, 1, "{}", r.show());
        r.no_values(&Fixtures::all());
        r.no_values(&[token]);
        r.stderr_has(
            "the process listening on the agent port of local could not prove it holds \
                 the agent token",
        )
        .stderr_has("refusing to send the token");
        for req in fake.requests() {
            for v in Fixtures::all() {
                assert!(!req.contains(v), "a value reached the fake agent: {req}");
            }
        }
        // The fake kept the port: no agent was started in its place.
        assert!(agents_serving(&w.home).is_empty());
    }
}

/// An agent of another home on the default port (`127.0.0.1:32300`) is not
/// this home's: with `RH_LOCAL_AGENT_LISTEN` at port 0 and no `agent.addr`
/// yet, the controller starts this home's own agent instead of probing the
/// default port and failing on a token it does not have. (When the port is
/// already taken by something else on this machine, the same holds.)
#[test]
fn an_agent_of_another_home_on_the_default_port_is_left_alone() {
    let other = tempfile::tempdir().unwrap();
    let _stop_other = StopAgent(other.path().to_path_buf());
    let state = other.path().join(".rh/agent");
    let mut decoy = std::process::Command::new(common::agent_bin())
        .args(["serve", "--listen", "127.0.0.1:32300", "--home"])
        .arg(other.path())
        .arg("--state-dir")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Whoever holds the port (the decoy, or something already there): it
    // answers, and it is not this home's agent.
    test_support::wait_for_port(32300, "the agent of another home");
    let (w, _stop, envs) = local_home();
    let r = w
        .controller_with(&["sync", "--cluster", "local", "--json"], &envs)
        .ok();
    r.no_values(&Fixtures::all());
    assert_eq!(r.json()["nodes"][0]["ok"], true, "{}", r.show());
    assert_eq!(agents_serving(&w.home).len(), 1, "this home's own agent");
    let addr = fs::read_to_string(w.home.join(".rh/agent/agent.addr")).unwrap();
    assert!(!addr.contains(":32300"), "{addr}");
    assert!(
        !state.join("installed.json").exists(),
        "the other home's agent was written to"
    );
    let _ = decoy.kill();
    let _ = decoy.wait();
}

/// Issue 19 item 17: a wandb secret created with explicit values gets both
/// places wandb reads its key from, as a detected one does: the
/// `machine api.wandb.ai` entry in `~/.netrc` (other machines kept, 0600)
/// and `WANDB_API_KEY` in the env process.
#[test]
fn a_wandb_secret_created_with_values_gets_the_netrc_entry_and_the_var() {
    const KEY: &str = "created-wandb-key-7c1d";
    let (w, _stop, envs) = local_home();
    let others = "machine github.com\n  login me\n  password keep-me\n";
    fs::write(w.home.join(".netrc"), others).unwrap();
    w.controller_with(
        &[
            "secret",
            "create",
            "wb",
            "--provider",
            "wandb",
            "--value",
            &format!("api_key={KEY}"),
        ],
        &envs,
    )
    .ok();
    let r = w
        .controller_with(
            &["sync", "--cluster", "local", "--secret", "wb", "--json"],
            &envs,
        )
        .ok();
    r.no_values(&[KEY]);
    let netrc = fs::read_to_string(w.home.join(".netrc")).unwrap();
    assert_eq!(
        netrc,
        format!("{others}machine api.wandb.ai\n  login user\n  password {KEY}\n")
    );
    assert_eq!(mode(&w.home.join(".netrc")), 0o600);
    assert_eq!(printenv(&w, &envs, "WANDB_API_KEY"), format!("{KEY}\n"));
}

#[test]
fn secrets_given_as_json_on_stdin_are_sent_and_synced_unsaved() {
    let (w, _stop, envs) = local_home();
    const LAMBDA: &str = "fixture-lambda-key-from-stdin-0001";
    const TOKEN: &str = "fixture-token-from-stdin-env-0001";
    // send: the value only on stdin; the file written by the agent, 0600.
    let entry =
        format!(r#"{{"name":"lambda","provider":"lambda","values":{{"api_key":"{LAMBDA}"}}}}"#);
    let r = w
        .controller_input(
            &["send", "--secret-json", "-", "--cluster", "local", "--json"],
            &envs,
            Some(&entry),
        )
        .ok();
    r.no_values(&[LAMBDA]);
    assert_eq!(r.json()["nodes"][0]["results"][0]["status"], "written");
    let file = w.home.join(".lambda_cloud/lambda_keys");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("api_key = {LAMBDA}\n")
    );
    assert_eq!(mode(&file), 0o600);
    assert!(!w.home.join(".rh/secrets/lambda.json").exists());
    // sync: a --secret name plus a given secret whose values come from the
    // environment on stdin's first line; both land in env `train`.
    let input = format!(
        "{{\"MY_TOKEN\":\"{TOKEN}\"}}\n[{{\"name\":\"tok\",\"env_vars\":{{\"token\":\"MY_TOKEN\"}},\"provider\":\"tok\"}}]"
    );
    let r = w
        .controller_input(
            &test_support::argv("--stdin-env sync --cluster local --secret openai --secret-json - --env train --json"),
            &envs,
            Some(&input),
        )
        .ok();
    r.no_values(&[TOKEN]);
    r.no_values(&Fixtures::all());
    let names: Vec<String> = r.json()["nodes"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["tok", "openai"]);
    let r = w
        .controller_with(
            &test_support::argv("run --cluster local --env train -- printenv MY_TOKEN"),
            &envs,
        )
        .ok();
    assert_eq!(r.stdout, format!("{TOKEN}\n"));
}
