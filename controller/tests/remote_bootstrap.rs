//! `controller cluster bootstrap` over real SSH: the boot scripts installed,
//! the agent started and upgraded in place, each node's agent picked by its
//! `uname`, verified on the node and reported per node. No fixture value
//! ever shows up in the controller's output.

mod common;

use std::fs;

use common::{mode, Fixtures, StopAgents, World};

fn env() -> Vec<(&'static str, &'static str)> {
    Fixtures::env()
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
    let _stop = StopAgents(homes.clone());
    // Both "nodes" are this machine: one cluster each, with its own agent port.
    let ports = [common::free_port(), common::free_port()];
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        w.add_cluster_with(name, &[i], &["--agent-port", &ports[i].to_string()]);
    }
    // Before: actionable error.
    let r = w
        .controller_with(&["sync", "--cluster", "a"], &env())
        .code(1);
    r.stderr_has("controller cluster bootstrap a");
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
    assert!(r.stdout.contains("@reboot crontab"), "{}", r.show());
    assert!(!r.stderr.contains("warning"), "{}", r.show());
    let r = bootstrap("b", false);
    assert!(r.stdout.contains("no crontab"), "{}", r.show());
    r.stderr_has("will not start after a reboot");
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
    let _stop = StopAgents(homes.clone());
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
    let hosts: Vec<String> = w.nodes.iter().map(|n| n.host()).collect();
    let all: Vec<usize> = (0..w.nodes.len()).collect();
    w.add_cluster_with("mixed", &all, &["--agent-port", &port]);

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
    r.stderr_has("has no agent");

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
    r.stderr_has("build-agents.sh");
}
