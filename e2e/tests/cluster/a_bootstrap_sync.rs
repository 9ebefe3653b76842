//! t01-t05: bootstrap on bare nodes (static agents, one per arch), all 16
//! providers synced to every node, env-var secrets in a named env, a second
//! sync unchanged, and a node's own AWS profile kept.

use super::*;

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
    assert_no_problems(
        "bare nodes after bootstrap and sync",
        check_synced(s, BARE, &s.bare),
    );
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

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t02_sync_puts_all_16_providers_on_every_node() {
    let s = booted();
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
    assert_no_problems("agent nodes after sync", check_synced(s, BOOT, &s.agents));
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t03_env_var_secrets_go_to_a_named_env() {
    let s = booted();
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
    let s = booted();
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
    let s = booted();
    let n = node_with_own_profile(s);
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
