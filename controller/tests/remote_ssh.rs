//! The controller's SSH connections to real sshd nodes: persisted masters
//! reused and closed by `cluster disconnect`, none left with persistence
//! off, the same options on every ssh process, and the agent token never
//! sent to a listener that cannot prove it holds it.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;

use common::{mode, Fixtures, World};

fn env() -> Vec<(&'static str, &'static str)> {
    Fixtures::env()
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
    r.stderr_has("cannot reach");
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
    assert!(r.stdout.contains("huggingface"), "{}", r.show());
    assert_eq!(common::ssh_masters(&control).len(), 2);
    let r = w.controller(&["cluster", "disconnect", "c", "--json"]).ok();
    let json = r.json();
    for n in json["nodes"].as_array().unwrap() {
        assert_eq!(n["closed"], true, "{json:#}");
    }
    assert!(common::ssh_masters_after_exit(&control).is_empty());
    // Nothing left to close.
    let r = w.controller(&["cluster", "disconnect", "c"]).ok();
    assert!(r.stdout.contains("none open"), "{}", r.show());
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
            w.add_cluster_with("c", &[node], &["--agent-port", &fake.port.to_string()]);
            1
        };
        let r = w.controller_with(&["sync", "--cluster", "c"], &env());
        // First what matters most: the impostor got no token.
        fake.assert_challenged_only(token);
        let r = r.code(expect);
        r.no_values(&Fixtures::all());
        r.no_values(&[token]);
        let name = w.nodes[node].host();
        r.stderr_has(&format!(
            "the process listening on the agent port of {name} could not prove it holds \
                 the agent token"
        ))
        .stderr_has("refusing to send the token");
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
    w.add_cluster_with("c", &[0], &["--agent-port", &wrong_port]);
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
    assert!(r.stdout.contains("unchanged"), "{}", r.show());
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
        assert_eq!(r.code, 0, "round {round}: {}", r.show());
        assert!(
            common::ssh_masters(&control).is_empty(),
            "round {round}: a master outlived its command"
        );
    }
}
