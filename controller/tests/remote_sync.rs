//! `controller sync|run|status|revoke|env` over real SSH to real agents: an
//! sshd on loopback per node, an agent per node home, the real controller
//! binary. Asserts file bytes and modes on the node, the environment of a
//! real process in an env, exit codes, host key handling, and that no
//! fixture value ever shows up in the controller's output.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;

use common::{mode, Fixtures, World};

fn env() -> Vec<(&'static str, &'static str)> {
    Fixtures::env()
}

fn results_of(json: &serde_json::Value, node: usize) -> &Vec<serde_json::Value> {
    json["nodes"][node]["results"].as_array().unwrap()
}

fn status_of(json: &serde_json::Value, node: usize, secret: &str) -> String {
    results_of(json, node)
        .iter()
        .find(|r| r["name"] == secret)
        .unwrap_or_else(|| panic!("no result for {secret} in {json:#}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn sync_writes_files_and_vars_then_unchanged_dry_run_status_revoke() {
    let w = World::new(1);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0], &[]);
    let node = &w.nodes[0].home;
    let values = Fixtures::all();

    // First sync: every detected secret written; files 0600 with the exact bytes.
    let r = w
        .controller_with(&["sync", "--cluster", "c", "--json"], &env())
        .ok();
    r.no_values(&values);
    let json = r.json();
    for s in ["aws", "huggingface", "openai"] {
        assert_eq!(status_of(&json, 0, s), "written", "{s}: {json:#}");
    }
    let token = node.join(".cache/huggingface/token");
    assert_eq!(fs::read_to_string(&token).unwrap(), Fixtures::HF_TOKEN);
    assert_eq!(mode(&token), 0o600);
    let creds = node.join(".aws/credentials");
    let text = fs::read_to_string(&creds).unwrap();
    assert!(text.contains(Fixtures::AWS_KEY) && text.contains(Fixtures::AWS_SECRET));
    assert_eq!(mode(&creds), 0o600);
    assert_eq!(mode(&node.join(".aws")), 0o700);

    // Vars are seen by a real process in the env.
    let r = w
        .controller(&["run", "--cluster", "c", "--", "printenv", "OPENAI_API_KEY"])
        .ok();
    assert_eq!(r.stdout, format!("{}\n", Fixtures::OPENAI_KEY));
    // aws came from a file: it is installed as that file, not copied into the
    // env's variables (printenv exits 1 for an unset var).
    let r = w.controller(&[
        "run",
        "--cluster",
        "c",
        "--",
        "printenv",
        "AWS_ACCESS_KEY_ID",
    ]);
    r.no_values(&values);
    let r = r.code(1);
    assert_eq!(r.stdout, "");
    // The command's exit status comes back.
    w.controller(&["run", "--cluster", "c", "--", "sh", "-c", "exit 7"])
        .code(7);

    // Second sync: unchanged everywhere, the table says so.
    let r = w.controller_with(&["sync", "--cluster", "c"], &env()).ok();
    r.no_values(&values);
    let rows: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert!(rows.len() >= 3, "{}", r.describe());
    assert!(
        rows.iter().all(|l| l.contains("unchanged")),
        "{}",
        r.describe()
    );

    // Trace-level diagnostics carry no value either.
    let r = w
        .controller_with(&["-vv", "sync", "--cluster", "c"], &env())
        .ok();
    r.no_values(&values);
    assert!(r.stderr.contains("/v1/sync"), "{}", r.describe());

    // A changed local token: --dry-run reports, changes nothing.
    fs::write(
        w.home.join(".cache/huggingface/token"),
        "hf_changedfixture0000002",
    )
    .unwrap();
    let before = fs::read(&token).unwrap();
    let r = w
        .controller_with(
            &[
                "sync",
                "--cluster",
                "c",
                "--secret",
                "huggingface",
                "--dry-run",
                "--json",
            ],
            &env(),
        )
        .ok();
    r.no_values(&["hf_changedfixture0000002"]);
    assert_eq!(status_of(&r.json(), 0, "huggingface"), "conflict");
    let r = w
        .controller_with(
            &[
                "sync",
                "--cluster",
                "c",
                "--secret",
                "huggingface",
                "--dry-run",
                "--overwrite",
                "--json",
            ],
            &env(),
        )
        .ok();
    assert_eq!(status_of(&r.json(), 0, "huggingface"), "would_write");
    assert_eq!(fs::read(&token).unwrap(), before);
    // Without --dry-run and without --overwrite: a conflict, nothing written, exit 1.
    let r = w
        .controller_with(
            &["sync", "--cluster", "c", "--secret", "huggingface"],
            &env(),
        )
        .code(1);
    assert!(r.stdout.contains("conflict"), "{}", r.describe());
    assert!(r.stderr.contains("--overwrite"), "{}", r.describe());
    assert_eq!(fs::read(&token).unwrap(), before);

    // Status: names, paths, var names, fingerprints; no values.
    let r = w.controller(&["status", "--cluster", "c", "--json"]).ok();
    r.no_values(&values);
    let json = r.json();
    let secrets = json["nodes"][0]["status"]["secrets"].as_array().unwrap();
    let names: Vec<&str> = secrets
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for s in ["aws", "huggingface", "openai"] {
        assert!(names.contains(&s), "{names:?}");
    }
    let r = w.controller(&["status", "--cluster", "c"]).ok();
    r.no_values(&values);
    assert!(r.stdout.contains("OPENAI_API_KEY") && r.stdout.contains("~/.aws/credentials"));

    // Revoke removes the file on the node.
    let r = w
        .controller(&["revoke", "huggingface", "--cluster", "c"])
        .ok();
    assert!(r.stdout.contains("removed"), "{}", r.describe());
    assert!(!token.exists());
    let r = w.controller(&["status", "--cluster", "c", "--json"]).ok();
    assert!(!r.stdout.contains("\"huggingface\""), "{}", r.describe());
    // Revoking its vars from base_env only.
    w.controller(&["revoke", "openai", "--cluster", "c", "--env", "base_env"])
        .ok();
    let r = w.controller(&["run", "--cluster", "c", "--", "printenv", "OPENAI_API_KEY"]);
    assert_ne!(r.code, 0, "{}", r.describe());
    assert!(r.stdout.is_empty());
}

#[test]
fn send_and_env_sync_create_env_processes_with_vars_and_files() {
    let w = World::new(1);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0], &[]);
    let var = format!("MODE={}", Fixtures::VAR_VALUE);
    let r = w
        .controller_with(
            &[
                "env",
                "create",
                "train",
                "--secret",
                "openai",
                "--secret",
                "huggingface",
                "--var",
                &var,
            ],
            &env(),
        )
        .ok();
    r.no_values(&Fixtures::all());
    assert_eq!(mode(&w.home.join(".rh/envs/train.json")), 0o600);
    let r = w.controller(&["env", "show", "train", "--json"]).ok();
    r.no_values(&Fixtures::all());
    assert_eq!(r.json()["vars"], serde_json::json!(["MODE"]));
    let r = w
        .controller_with(&["env", "sync", "train", "--cluster", "c"], &env())
        .ok();
    r.no_values(&Fixtures::all());
    let node = &w.nodes[0].home;
    assert_eq!(
        fs::read_to_string(node.join(".cache/huggingface/token")).unwrap(),
        Fixtures::HF_TOKEN
    );
    let r = w
        .controller(&[
            "run",
            "--cluster",
            "c",
            "--env",
            "train",
            "--",
            "printenv",
            "MODE",
            "OPENAI_API_KEY",
        ])
        .ok();
    assert_eq!(
        r.stdout,
        format!("{}\n{}\n", Fixtures::VAR_VALUE, Fixtures::OPENAI_KEY)
    );
    // base_env was not touched by the env sync.
    let r = w.controller(&["run", "--cluster", "c", "--", "printenv", "MODE"]);
    assert_ne!(r.code, 0, "{}", r.describe());

    // send: one secret's vars into a named env.
    w.controller_with(
        &["send", "openai", "--cluster", "c", "--env", "other"],
        &env(),
    )
    .ok()
    .no_values(&Fixtures::all());
    let r = w
        .controller(&[
            "run",
            "--cluster",
            "c",
            "--env",
            "other",
            "--",
            "printenv",
            "OPENAI_API_KEY",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), Fixtures::OPENAI_KEY);
    // send a path secret to another path.
    w.controller_with(
        &[
            "send",
            "huggingface",
            "--cluster",
            "c",
            "--path",
            "~/alt/hf-token",
        ],
        &env(),
    )
    .ok();
    assert_eq!(
        fs::read_to_string(node.join("alt/hf-token")).unwrap(),
        Fixtures::HF_TOKEN
    );
    assert_eq!(mode(&node.join("alt/hf-token")), 0o600);
}

#[test]
fn unreachable_node_is_reported_and_exit_is_3_with_a_healthy_one() {
    let w = World::new(2);
    Fixtures::write(&w.home);
    let dead = format!("127.0.0.1:{}", common::free_port());
    w.add_cluster("c", &[0, 1], &[&dead]);
    let r = w
        .controller_with(&["sync", "--cluster", "c", "--timeout", "5"], &env())
        .code(3);
    r.no_values(&Fixtures::all());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(&dead) && l.contains("failed: cannot reach")),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains(&dead), "{}", r.describe());
    for n in &w.nodes {
        assert_eq!(
            fs::read_to_string(n.home.join(".cache/huggingface/token")).unwrap(),
            Fixtures::HF_TOKEN
        );
    }
    // `run` across nodes: headers per node, exit 3 because one node is down.
    let r = w
        .controller(&["run", "--cluster", "c", "--", "printenv", "HF_TOKEN"])
        .code(3);
    assert!(r.stdout.contains(&format!("==> {} <==", w.nodes[0].host())));
    assert!(r.stdout.contains(&format!("==> {} <==", w.nodes[1].host())));
    // Only the dead node: exit 1.
    w.controller(&["run", "--cluster", "c", "--node", &dead, "--", "true"])
        .code(1);
    // Status over both healthy nodes: installed alike, nothing flagged; then
    // one node loses a secret and it is flagged as missing there.
    let r = w.controller(&["status", "--cluster", "c"]).code(3);
    assert!(!r.stderr.contains("differently"), "{}", r.describe());
    let one = "c1";
    w.controller(&[
        "cluster",
        "add",
        one,
        "--host",
        &w.nodes[0].host(),
        "--user",
        "root",
        "--identity-file",
        &w.client_key.display().to_string(),
    ])
    .ok();
    w.controller(&["revoke", "openai", "--cluster", one]).ok();
    let r = w
        .controller(&["status", "--cluster", "c", "--json"])
        .code(3);
    let drift = &r.json()["drift"];
    assert_eq!(drift[0]["secret"], "openai", "{}", r.describe());
    assert_eq!(
        drift[0]["missing_on"],
        serde_json::json!([w.nodes[0].host()])
    );
}

#[test]
fn host_keys_unknown_refused_accepted_on_request_changed_always_refused() {
    let mut w = World::bare();
    Fixtures::write(&w.home);
    w.add_node(true, false);
    w.add_cluster("c", &[0], &[]);
    let token = w.nodes[0].home.join(".cache/huggingface/token");

    let r = w
        .controller_with(&["sync", "--cluster", "c"], &env())
        .code(1);
    assert!(r.stderr.contains("not in known_hosts"), "{}", r.describe());
    assert!(
        r.stderr.contains("--accept-new-host-keys"),
        "{}",
        r.describe()
    );
    assert!(!token.exists());
    assert!(fs::read_to_string(&w.known_hosts).unwrap().is_empty());

    w.controller_with(
        &["sync", "--cluster", "c", "--accept-new-host-keys"],
        &env(),
    )
    .ok();
    assert!(token.exists());
    let kh = fs::read_to_string(&w.known_hosts).unwrap();
    assert!(
        kh.contains(&format!("[127.0.0.1]:{}", w.nodes[0].sshd.port)),
        "{kh}"
    );
    // Now known: no flag needed.
    w.controller_with(&["sync", "--cluster", "c"], &env()).ok();

    // The host's key changes: refused, with or without the flag.
    let other = w.root.path().join("other_host_key");
    common::keygen(&other);
    let public = fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    fs::write(
        &w.known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            w.nodes[0].sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    fs::remove_file(&token).unwrap();
    for extra in [None, Some("--accept-new-host-keys")] {
        let mut args = vec!["sync", "--cluster", "c"];
        args.extend(extra);
        let r = w.controller_with(&args, &env()).code(1);
        assert!(r.stderr.contains("HOST KEY MISMATCH"), "{}", r.describe());
        assert!(!token.exists());
    }
}

#[test]
fn actionable_errors_unknown_cluster_agent_missing_or_down() {
    let mut w = World::new(0);
    Fixtures::write(&w.home);
    // Unknown cluster: usage error listing the known ones.
    let r = w
        .controller_with(&["sync", "--cluster", "nope"], &env())
        .code(2);
    assert!(
        r.stderr.contains("unknown cluster \"nope\""),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("local"), "{}", r.describe());
    // A node without an agent (no token) and one with a token but nothing listening.
    w.add_node(false, true);
    w.add_node(false, true);
    let state = w.nodes[1].home.join(".rh/agent");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("token"), "deadbeef").unwrap();
    let port = common::free_port().to_string();
    w.controller(&[
        "cluster",
        "add",
        "c",
        "--host",
        &w.nodes[0].host(),
        "--host",
        &w.nodes[1].host(),
        "--user",
        "root",
        "--agent-port",
        &port,
        "--identity-file",
        &w.client_key.display().to_string(),
    ])
    .ok();
    let r = w
        .controller_with(&["sync", "--cluster", "c"], &env())
        .code(1);
    r.no_values(&Fixtures::all());
    r.no_values(&["deadbeef"]);
    assert!(
        r.stderr.contains("agent is not installed"),
        "{}",
        r.describe()
    );
    // Said from what was seen: the node refused the agent port (ssh
    // logged the channel it could not open), not guessed from a closed
    // connection.
    assert!(
        r.stderr.contains(&format!(
            "agent is not running on port {port} (connection refused on the node)"
        )),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("controller cluster bootstrap c"),
        "{}",
        r.describe()
    );
    // Bad key: auth failure names user and host.
    let bad = w.root.path().join("bad_key");
    common::keygen(&bad);
    w.controller(&[
        "cluster",
        "add",
        "b",
        "--host",
        &w.nodes[0].host(),
        "--user",
        "root",
        "--identity-file",
        &bad.display().to_string(),
    ])
    .ok();
    // The same config but without the good key.
    let config = w.root.path().join("ssh_config_bad");
    let text = fs::read_to_string(&w.ssh_config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("IdentityFile"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&config, text).unwrap();
    let r = w
        .controller_with(
            &["status", "--cluster", "b"],
            &[("RH_SSH_CONFIG", config.to_str().unwrap())],
        )
        .code(1);
    assert!(
        r.stderr.contains("authentication failed for root@"),
        "{}",
        r.describe()
    );
}

#[test]
fn cluster_add_list_show_remove() {
    let w = World::bare();
    w.controller(&[
        "cluster",
        "add",
        "gpu",
        "--host",
        "10.0.0.1",
        "--host",
        "ubuntu@10.0.0.2:2222",
        "--user",
        "me",
        "--agent-port",
        "32301",
    ])
    .ok();
    let file = w.home.join(".rh/clusters/gpu.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&w.home.join(".rh/clusters")), 0o700);
    let r = w.controller(&["cluster", "list", "--json"]).ok();
    let json = r.json();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["local", "gpu"]);
    let r = w.controller(&["cluster", "show", "gpu", "--json"]).ok();
    assert_eq!(r.json()["agent_port"], 32301);
    w.controller(&["cluster", "remove", "local"]).code(2);
    w.controller(&["cluster", "add", "x", "--host", "-oProxyCommand=evil"])
        .code(2);
    w.controller(&["cluster", "remove", "gpu"]).ok();
    assert!(!file.exists());
    w.controller(&["cluster", "show", "gpu"]).code(2);
}

/// Stops what `cluster bootstrap` started on a node (the agent-boot.sh
/// supervisor, which stops its agent; then the agent itself), even when an
/// assert fails.
struct StopNodeAgent(Vec<std::path::PathBuf>);

impl Drop for StopNodeAgent {
    fn drop(&mut self) {
        for home in &self.0 {
            let state = home.join(".rh/agent");
            if let Ok(pid) = fs::read_to_string(state.join("agent-boot.pid")) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
                for _ in 0..50 {
                    if !state.join("agent-boot.pid").exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
            if let Ok(pid) = fs::read_to_string(state.join("agent.pid")) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// A fake `crontab` (only `-l` and `-`) keeping its table in `dir/crontab.txt`.
fn fake_crontab(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).unwrap();
    let script = dir.join("crontab");
    fs::write(
        &script,
        "#!/bin/sh\nf=\"$(dirname \"$0\")/crontab.txt\"\n\
         case \"$1\" in -l) cat \"$f\" 2>/dev/null || exit 1 ;; -) cat > \"$f\" ;; *) exit 2 ;; esac\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
}

fn pid_of(home: &std::path::Path) -> String {
    fs::read_to_string(home.join(".rh/agent/agent.pid"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn bootstrap_installs_the_boot_scripts_starts_the_agent_and_upgrades_in_place() {
    let mut w = World::bare();
    Fixtures::write(&w.home);
    // Node 0's sessions find a `crontab`; node 1 has neither systemd nor crontab.
    let cron_dir = w.node_dir(0).join("bin");
    fake_crontab(&cron_dir);
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", cron_dir.display());
    w.add_node_with(false, true, &[("PATH", &path)]);
    w.add_node(false, true);
    let homes: Vec<_> = w.nodes.iter().map(|n| n.home.clone()).collect();
    let _stop = StopNodeAgent(homes.clone());
    // Both "nodes" are this machine: one cluster each, with its own agent port.
    let ports = [common::free_port(), common::free_port()];
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        w.controller(&[
            "cluster",
            "add",
            name,
            "--host",
            &w.nodes[i].host(),
            "--user",
            "root",
            "--agent-port",
            &ports[i].to_string(),
            "--identity-file",
            &w.client_key.display().to_string(),
        ])
        .ok();
    }
    // Before: actionable error.
    let r = w
        .controller_with(&["sync", "--cluster", "a"], &env())
        .code(1);
    assert!(
        r.stderr.contains("controller cluster bootstrap a"),
        "{}",
        r.describe()
    );
    let agent = common::agent_bin();
    let bootstrap = |name: &str, json: bool| {
        let mut args = vec![
            "cluster",
            "bootstrap",
            name,
            "--agent-bin",
            agent.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        w.controller(&args).ok()
    };
    let boot_of = |name: &str| {
        let json = bootstrap(name, true).json();
        assert_eq!(json["nodes"][0]["ok"], true, "{json:#}");
        json["nodes"][0]["boot"].as_str().unwrap().to_owned()
    };
    assert_eq!(boot_of("a"), "crontab");
    assert_eq!(boot_of("b"), "none");
    for (home, port) in homes.iter().zip(ports) {
        let bin = home.join(".rh/bin/agent");
        assert_eq!(fs::read(&bin).unwrap(), fs::read(&agent).unwrap());
        assert_ne!(mode(&bin) & 0o111, 0, "the agent is executable");
        let boot = home.join(".rh/bin/agent-boot.sh");
        assert_eq!(
            fs::read_to_string(&boot).unwrap(),
            fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/agent-boot.sh")
            )
            .unwrap()
        );
        assert_ne!(mode(&boot) & 0o111, 0);
        assert_eq!(mode(&home.join(".rh/agent/token")), 0o600);
        assert_eq!(mode(&home.join(".rh/agent")), 0o700);
        assert_eq!(mode(&home.join(".rh")), 0o700);
        // The supervisor runs, and the stage is gone.
        assert!(home.join(".rh/agent/agent-boot.pid").is_file());
        assert!(!home.join(".rh/install").exists());
        let addr = fs::read_to_string(home.join(".rh/agent/agent.addr")).unwrap();
        assert!(addr.contains(&format!("127.0.0.1:{port}")), "{addr}");
    }
    let cron = fs::read_to_string(cron_dir.join("crontab.txt")).unwrap();
    assert!(cron.starts_with("@reboot "), "{cron}");
    assert!(
        cron.contains(&format!("HOME='{}'", homes[0].display())),
        "{cron}"
    );
    assert!(cron.contains("agent-boot.sh"), "{cron}");
    // The table output names the boot method; no crontab is a warning.
    let pids: Vec<String> = homes.iter().map(|h| pid_of(h)).collect();
    let r = bootstrap("a", false);
    assert!(r.stdout.contains("@reboot crontab"), "{}", r.describe());
    assert!(!r.stderr.contains("warning"), "{}", r.describe());
    let r = bootstrap("b", false);
    assert!(r.stdout.contains("no crontab"), "{}", r.describe());
    assert!(
        r.stderr.contains("will not start after a reboot"),
        "{}",
        r.describe()
    );
    // Re-running upgraded in place: a new agent process, one crontab entry.
    for (home, old) in homes.iter().zip(&pids) {
        assert_ne!(&pid_of(home), old, "the agent was restarted");
    }
    let cron = fs::read_to_string(cron_dir.join("crontab.txt")).unwrap();
    assert_eq!(cron.matches("agent-boot.sh").count(), 1, "{cron}");
    // The agents are healthy: sync works and writes to both nodes.
    for (name, home) in ["a", "b"].into_iter().zip(&homes) {
        w.controller_with(&["sync", "--cluster", name], &env()).ok();
        assert_eq!(
            fs::read_to_string(home.join(".cache/huggingface/token")).unwrap(),
            Fixtures::HF_TOKEN
        );
    }
}

/// `dir/bin/NAME`, an executable shell script, for a node's PATH.
fn node_tool(dir: &std::path::Path, name: &str, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(bin.join(name), format!("#!/bin/sh\n{script}\n")).unwrap();
    fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display())
}

/// `dir/TARGET/agent` (a copy of `bin`) with its `agent.sha256`, as
/// scripts/build-agents.sh lays them out.
fn put_agent(dir: &std::path::Path, target: &str, bytes: &[u8]) {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("agent"), bytes).unwrap();
    fs::set_permissions(d.join("agent"), fs::Permissions::from_mode(0o755)).unwrap();
    let sum = hex::encode(sha2::Sha256::digest(bytes));
    fs::write(d.join("agent.sha256"), format!("{sum}  agent\n")).unwrap();
}

#[test]
fn bootstrap_picks_each_nodes_agent_by_uname_verifies_it_on_the_node_and_reports_per_node() {
    let mut w = World::bare();
    // Node 0 answers x86_64 (this machine); node 1 `uname -m` says aarch64;
    // node 2 riscv64; node 3's `sha256sum` sees other bytes than were sent.
    w.add_node(false, true);
    let fake_uname = |arch: &str| {
        format!("[ \"$1\" = -m ] && {{ echo {arch}; exit 0; }}; exec /bin/uname \"$@\"")
    };
    let p1 = node_tool(&w.node_dir(1), "uname", &fake_uname("aarch64"));
    w.add_node_with(false, true, &[("PATH", &p1)]);
    let p2 = node_tool(&w.node_dir(2), "uname", &fake_uname("riscv64"));
    w.add_node_with(false, true, &[("PATH", &p2)]);
    let bad = "0".repeat(64);
    let p3 = node_tool(
        &w.node_dir(3),
        "sha256sum",
        &format!("echo '{bad}  '\"$1\""),
    );
    w.add_node_with(false, true, &[("PATH", &p3)]);
    let homes: Vec<_> = w.nodes.iter().map(|n| n.home.clone()).collect();
    let _stop = StopNodeAgent(homes.clone());
    // The static agents: this machine's build stands in for the x86_64 one;
    // the aarch64 one is an aarch64 ELF header that no x86_64 node can run.
    let agents = w.root.path().join("agents");
    let host_agent = fs::read(common::agent_bin()).unwrap();
    put_agent(&agents, "x86_64-unknown-linux-musl", &host_agent);
    let mut arm = vec![0u8; 120];
    arm[..6].copy_from_slice(b"\x7fELF\x02\x01");
    arm[18] = 183;
    arm[32] = 64;
    arm[54] = 56;
    put_agent(&agents, "aarch64-unknown-linux-musl", &arm);
    let port = common::free_port().to_string();
    let mut add = vec!["cluster", "add", "mixed"];
    let hosts: Vec<String> = w.nodes.iter().map(|n| n.host()).collect();
    for h in &hosts {
        add.extend(["--host", h.as_str()]);
    }
    let key = w.client_key.display().to_string();
    add.extend([
        "--user",
        "root",
        "--agent-port",
        &port,
        "--identity-file",
        &key,
    ]);
    w.controller(&add).ok();

    let agents_env = [("RH_AGENTS_DIR", agents.to_str().unwrap())];
    let r = w
        .controller_with(&["cluster", "bootstrap", "mixed", "--json"], &agents_env)
        .code(3);
    let json = r.json();
    let node = |i: usize| &json["nodes"][i];
    assert_eq!(node(0)["ok"], true, "{json:#}");
    assert_eq!(node(0)["arch"], "x86_64");
    assert_eq!(node(0)["agent"], "x86_64-unknown-linux-musl");
    assert_eq!(
        fs::read(homes[0].join(".rh/bin/agent")).unwrap(),
        host_agent,
        "node 0 runs the static agent for its arch"
    );
    // aarch64: the aarch64 agent was chosen, sent, verified; it cannot run here.
    assert_eq!(node(1)["ok"], false, "{json:#}");
    assert_eq!(node(1)["arch"], "aarch64");
    assert_eq!(node(1)["agent"], "aarch64-unknown-linux-musl");
    let e1 = node(1)["error"].as_str().unwrap();
    assert!(
        e1.contains("does not run on this node (aarch64): not installed"),
        "{e1}"
    );
    // riscv64: no agent for it, said plainly.
    assert_eq!(node(2)["arch"], "riscv64", "{json:#}");
    let e2 = node(2)["error"].as_str().unwrap();
    assert!(e2.contains("\"riscv64\" has no agent"), "{e2}");
    // A copy whose SHA-256 differs on the node is not installed.
    let e3 = node(3)["error"].as_str().unwrap();
    assert!(
        e3.contains(&format!("sha256 {bad}")) && e3.contains("not installed"),
        "{e3}"
    );
    for (i, home) in homes.iter().enumerate().skip(1) {
        assert!(
            !home.join(".rh/bin/agent").exists(),
            "node {i}: installed anyway"
        );
    }
    // The table names each node's arch and agent; errors go to stderr.
    let r = w
        .controller_with(&["cluster", "bootstrap", "mixed"], &agents_env)
        .code(3);
    let row0 = r.stdout.lines().find(|l| l.contains(&hosts[0])).unwrap();
    assert!(
        row0.contains("x86_64-unknown-linux-musl") && row0.contains("running"),
        "{row0}"
    );
    assert!(r.stderr.contains("has no agent"), "{}", r.describe());

    // --agent-bin still overrides the lookup for every node of its machine.
    let r = w
        .controller_with(
            &[
                "cluster",
                "bootstrap",
                "mixed",
                "--json",
                "--agent-bin",
                common::agent_bin().to_str().unwrap(),
            ],
            &[("RH_AGENTS_DIR", "/nonexistent")],
        )
        .code(3);
    let json = r.json();
    assert_eq!(json["nodes"][0]["agent"], "--agent-bin", "{json:#}");
    assert_eq!(json["nodes"][0]["ok"], true, "{json:#}");
    // ... but a binary for another machine is refused before it is copied.
    assert!(json["nodes"][1]["error"]
        .as_str()
        .unwrap()
        .contains("not a Linux aarch64 agent"));
    // No static agents anywhere and no --agent-bin: a per-node error naming the fix.
    let r = w
        .controller_with(
            &["cluster", "bootstrap", "mixed"],
            &[("RH_AGENTS_DIR", "/nonexistent")],
        )
        .code(1);
    assert!(r.stderr.contains("build-agents.sh"), "{}", r.describe());
}

/// Closes every ssh master whose socket is in a control dir (`ssh -O exit`),
/// even when an assert fails.
struct Disconnect(std::path::PathBuf);

impl Drop for Disconnect {
    fn drop(&mut self) {
        for e in fs::read_dir(&self.0).into_iter().flatten().flatten() {
            // Control sockets only: `<ctl>.p<port>` forwards lead to the agent.
            let control = !e.file_name().to_string_lossy().contains('.');
            if control && e.file_type().is_ok_and(|t| t.is_socket()) {
                let _ = std::process::Command::new("ssh")
                    .arg("-S")
                    .arg(e.path())
                    .args(["-O", "exit", "none"])
                    .output();
            }
        }
    }
}

#[test]
fn persistent_master_is_reused_while_sshd_accepts_nothing_new() {
    let mut w = World::new(1);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0], &[]);
    let control = w.home.join(".rh/ssh");
    let _close = Disconnect(control.clone());
    let mut persist = env();
    persist.push(("RH_SSH_PERSIST", "120"));
    let token = w.nodes[0].home.join(".cache/huggingface/token");
    w.controller_with(&["sync", "--cluster", "c"], &persist)
        .ok();
    assert_eq!(fs::read_to_string(&token).unwrap(), Fixtures::HF_TOKEN);
    assert_eq!(mode(&control), 0o700);
    let masters = common::ssh_masters(&control);
    assert_eq!(masters.len(), 1, "one master left running: {masters:?}");
    // Its control socket and the agent forward's socket sit in the private
    // dir under short names.
    let mut sockets: Vec<String> = fs::read_dir(&control)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_socket())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    sockets.sort();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    assert_eq!(sockets[0].len(), 16, "{sockets:?}");
    let agent_port = w.nodes[0].agent.as_ref().unwrap().port;
    assert_eq!(sockets[1], format!("{}.p{agent_port}", sockets[0]));
    assert!(control.join(&sockets[0]).as_os_str().len() <= 90);

    // No new ssh connection can be made from now on.
    let port = w.nodes[0].sshd.port;
    // SAFETY of the test: only the listener stops; the master's session lives on.
    let sshd = &mut w.nodes[0].sshd;
    sshd.stop_listener();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    fs::remove_file(&token).unwrap();
    let r = w
        .controller_with(&["sync", "--cluster", "c"], &persist)
        .ok();
    r.no_values(&Fixtures::all());
    assert_eq!(fs::read_to_string(&token).unwrap(), Fixtures::HF_TOKEN);
    assert_eq!(common::ssh_masters(&control), masters, "the same master");
    // The flag beats the environment: 0 closes the master after this command.
    w.controller_with(
        &["status", "--cluster", "c", "--ssh-persist", "0"],
        &persist,
    )
    .ok();
    assert!(common::ssh_masters_after_exit(&control).is_empty());
    assert_eq!(
        fs::read_dir(&control)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().unwrap().is_socket())
            .count(),
        0
    );
    // And now nothing can reach the node.
    let r = w
        .controller_with(&["status", "--cluster", "c"], &persist)
        .code(1);
    assert!(r.stderr.contains("cannot reach"), "{}", r.describe());
    assert!(common::ssh_masters(&control).is_empty());
}

#[test]
fn cluster_disconnect_closes_persisted_masters_and_persist_0_leaves_none() {
    let w = World::new(2);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0, 1], &[]);
    let control = w.home.join(".rh/ssh");
    let _close = Disconnect(control.clone());
    // The harness default (RH_SSH_PERSIST=0): no master outlives the command.
    w.controller_with(&["sync", "--cluster", "c"], &env()).ok();
    assert!(common::ssh_masters_after_exit(&control).is_empty());
    let r = w
        .controller(&["status", "--cluster", "c", "--ssh-persist", "60"])
        .ok();
    assert!(r.stdout.contains("huggingface"), "{}", r.describe());
    assert_eq!(common::ssh_masters(&control).len(), 2);
    let r = w.controller(&["cluster", "disconnect", "c", "--json"]).ok();
    let json = r.json();
    for n in json["nodes"].as_array().unwrap() {
        assert_eq!(n["closed"], true, "{json:#}");
    }
    assert!(common::ssh_masters_after_exit(&control).is_empty());
    // Nothing left to close.
    let r = w.controller(&["cluster", "disconnect", "c"]).ok();
    assert!(r.stdout.contains("none open"), "{}", r.describe());
}

/// On a node, a process that took the agent's port while the agent is down
/// (the token file is still there) answers `/healthz` like an agent but
/// cannot prove it holds the token: the controller fails that node with a
/// clear error (another node with its agent is synced), and the impostor
/// never receives the token or a request carrying secrets. Once the port
/// comes from `agent.addr`, once from the cluster's `--agent-port`.
#[test]
fn the_token_is_never_sent_over_ssh_to_a_listener_that_cannot_prove_it_holds_it() {
    for (i, body) in common::UNPROVEN_HEALTH.into_iter().enumerate() {
        let via_addr_file = i == 0;
        let mut w = World::new(1);
        Fixtures::write(&w.home);
        let fake = common::FakeAgent::start(body);
        let node = w.add_node(false, true);
        let token = "the-agent-token-0123456789abcdef";
        let state = w.nodes[node].home.join(".rh/agent");
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join("token"), token).unwrap();
        let expect = if via_addr_file {
            fs::write(state.join("agent.addr"), format!("127.0.0.1:{}", fake.port)).unwrap();
            w.add_cluster("c", &[0, node], &[]);
            3
        } else {
            w.controller(&[
                "cluster",
                "add",
                "c",
                "--host",
                &w.nodes[node].host(),
                "--user",
                "root",
                "--agent-port",
                &fake.port.to_string(),
                "--identity-file",
                &w.client_key.display().to_string(),
            ])
            .ok();
            1
        };
        let r = w.controller_with(&["sync", "--cluster", "c"], &env());
        // First what matters most: the impostor got no token.
        fake.assert_challenged_only(token);
        let r = r.code(expect);
        r.no_values(&Fixtures::all());
        r.no_values(&[token]);
        let name = w.nodes[node].host();
        assert!(
            r.stderr.contains(&format!(
                "the process listening on the agent port of {name} could not prove it holds \
                 the agent token"
            )) && r.stderr.contains("refusing to send the token"),
            "{}",
            r.describe()
        );
        for req in fake.requests() {
            for v in Fixtures::all() {
                assert!(!req.contains(v), "a value reached the fake agent: {req}");
            }
        }
    }
}

/// Every ssh process the controller starts (the master, the token read
/// through it, an extra forward) gets the same options, `-F $RH_SSH_CONFIG`
/// first (issue 9 item 14: the token read once went without it and read the
/// user's real `~/.ssh/config`). A warm command starts no ssh process at
/// all: the token comes from the 0600 cache beside the control socket, and
/// a cache whose proof fails is dropped and the token read again once. An
/// `ssh` on PATH records each argv, then runs the real one.
#[test]
fn every_ssh_process_gets_the_same_options_and_a_warm_push_starts_none() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(1);
    Fixtures::write(&w.home);
    let agent_port = w.nodes[0].agent.as_ref().unwrap().port;
    // The cluster names a port nothing listens on: the agent's `agent.addr`
    // tells the real one, which needs one more forward.
    let wrong_port = common::free_port().to_string();
    w.controller(&[
        "cluster",
        "add",
        "c",
        "--host",
        &w.nodes[0].host(),
        "--user",
        "root",
        "--agent-port",
        &wrong_port,
        "--identity-file",
        &w.client_key.display().to_string(),
    ])
    .ok();
    let control = w.home.join(".rh/ssh");
    let _close = Disconnect(control.clone());
    let bin = w.root.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let calls = w.root.path().join("ssh-calls");
    let real = ["/usr/bin/ssh", "/bin/ssh", "/usr/local/bin/ssh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("ssh is installed");
    fs::write(
        bin.join("ssh"),
        format!(
            "#!/bin/sh\n{{ for a in \"$@\"; do printf '%s\\t' \"$a\"; done; echo; }} >> '{}'\n\
             exec {real} \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("ssh"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut run_env = env();
    run_env.push(("PATH", &path));
    run_env.push(("RH_SSH_PERSIST", "60"));
    let recorded = || -> Vec<Vec<String>> {
        fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                l.split('\t')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    };

    // Cold: a new master.
    w.controller_with(&["sync", "--cluster", "c"], &run_env)
        .ok();
    let token = fs::read_to_string(w.nodes[0].home.join(".rh/agent/token")).unwrap();
    let cached: Vec<_> = fs::read_dir(&control)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".token"))
        .map(|e| e.path())
        .collect();
    assert_eq!(cached.len(), 1, "one token cache: {cached:?}");
    let cache = &cached[0];
    assert_eq!(mode(cache), 0o600);
    assert_eq!(
        fs::read_to_string(cache).unwrap(),
        format!("{}\n{agent_port}\n", token.trim())
    );
    let cold = recorded().len();
    assert!(cold >= 2, "a master and a forward: {:?}", recorded());

    // Warm: no ssh process at all.
    let r = w
        .controller_with(&["sync", "--cluster", "c"], &run_env)
        .ok();
    assert!(r.stdout.contains("unchanged"), "{}", r.describe());
    assert_eq!(
        recorded().len(),
        cold,
        "a warm push started ssh: {:?}",
        recorded()
    );

    // A cached token the agent cannot prove is dropped and read again once.
    fs::write(cache, format!("not-the-token\n{agent_port}\n")).unwrap();
    w.controller_with(&["sync", "--cluster", "c"], &run_env)
        .ok();
    assert_eq!(
        fs::read_to_string(cache).unwrap(),
        format!("{}\n{agent_port}\n", token.trim())
    );
    assert_eq!(
        recorded().len(),
        cold + 1,
        "one token read: {:?}",
        recorded()
    );

    // Closing the master removes the cache with it.
    w.controller(&["cluster", "disconnect", "c"]).ok();
    assert!(!cache.exists());

    let all = recorded();
    let kinds = |pred: &dyn Fn(&Vec<String>) -> bool| all.iter().filter(|a| pred(a)).count();
    assert_eq!(kinds(&|a| a.iter().any(|x| x == "-M")), 1, "{all:?}");
    assert_eq!(kinds(&|a| a.iter().any(|x| x == "forward")), 1, "{all:?}");
    assert_eq!(
        kinds(&|a| !a.iter().any(|x| x == "-M") && a.iter().any(|x| x.contains("agent/token"))),
        1,
        "{all:?}"
    );
    let config = w.ssh_config.display().to_string();
    let key = w.client_key.display().to_string();
    for argv in &all {
        assert_eq!(argv[0..2], ["-F".to_owned(), config.clone()], "{argv:?}");
        for want in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
            key.as_str(),
            "root",
        ] {
            assert!(argv.iter().any(|a| a == want), "{want} missing: {argv:?}");
        }
    }
}

/// Commands back to back without persistence (`RH_SSH_PERSIST=0`, the
/// harness default), each starting a master at the same control path while
/// the previous command's master may still be exiting: every one succeeds,
/// and when a command has exited its master is gone (a master told to exit
/// but not waited for was found alive by the next command, reused, and its
/// forward socket, already removed, read as "the agent is not running").
#[test]
fn commands_back_to_back_without_persistence_never_meet_the_last_ones_master() {
    let w = World::new(1);
    Fixtures::write(&w.home);
    w.add_cluster("c", &[0], &[]);
    let control = w.home.join(".rh/ssh");
    let _close = Disconnect(control.clone());
    w.controller_with(&["sync", "--cluster", "c"], &env()).ok();
    for round in 0..30 {
        let r = w.controller(&["status", "--cluster", "c"]);
        assert_eq!(r.code, 0, "round {round}: {}", r.describe());
        assert!(
            common::ssh_masters(&control).is_empty(),
            "round {round}: a master outlived its command"
        );
    }
}
