//! t06-t09: faults injected with docker: a stopped node (partial failure,
//! then recovered by its boot script), a disconnected and a frozen node
//! reported within the timeout, and `kill -9` of the agent during a sync
//! loop leaving no torn file.

use super::*;

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t06_stopped_node_partial_failure_then_recovery_by_boot_script() {
    let s = booted();
    s.sync(BOOT, &[]).assert_code(0);
    s.sync(BOOT, &["--env", NAMED_ENV]).assert_code(0);
    let down = s.agents.last().expect("a node");
    docker(&["stop", "-t", "1", &down.container]).assert_code(0);
    let out = s.sync(BOOT, &["--timeout", "10"]);
    let started = docker(&["start", &down.container]);
    out.assert_code(3);
    assert_names(&out, down, "the stopped node");
    let rows = rows(&out.json());
    for n in s.agents.iter().filter(|n| n.host != down.host) {
        let mine = rows_for(&rows, &n.host);
        assert!(!mine.is_empty(), "{}: no rows: {}", n.host, out.show());
        assert!(
            mine.iter().all(|r| r.status != "failed"),
            "{}: a secret failed although the node is up: {}",
            n.host,
            out.show()
        );
    }
    started.assert_code(0);
    assert_back_after_restart(down, Duration::from_secs(30), "the boot script");
    // Env state survived the restart: every var is there before any re-sync,
    // in base_env and in the named env.
    let p = check_both_envs(s, BOOT, &s.agents);
    assert_no_problems("envs after the node restarted (no re-sync yet)", p);
    let again = s.sync(BOOT, &[]);
    again.assert_code(0);
    assert_sync_rows(&again, &s.agents, &["written", "unchanged"]);
    assert_no_problems("restarted node", check_provider_files(s, down));
}

/// Assert `out` names `node` (`what` says which node it is).
fn assert_names(out: &Run, node: &Node, what: &str) {
    assert!(
        mentions_host(&out.text(), &node.host),
        "{what} {} is not named: {}",
        node.host,
        out.show()
    );
}

/// [`assert_cut_off_node_reported`] once `docker cut_with` cut `cut` off;
/// `restore` runs whatever the outcome, before a failure is passed on.
fn assert_reported_while_cut_off(
    s: &Suite,
    cut: &Node,
    how: &str,
    cut_with: &[&str],
    restore: impl FnOnce(),
) {
    docker(cut_with).assert_code(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_cut_off_node_reported(s, cut, how)
    }));
    restore();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A sync with one node unreachable ends within `--timeout` (plus process
/// overhead) with exit 3 and names that node.
fn assert_cut_off_node_reported(s: &Suite, cut: &Node, how: &str) {
    let timeout = 5u64;
    let out = s.ctl_deadline(
        &[
            "sync",
            "--cluster",
            BOOT,
            "--json",
            "--timeout",
            &timeout.to_string(),
        ],
        Duration::from_secs(60),
    );
    assert!(!out.timed_out, "{how}: sync hung for 60 s: {}", out.show());
    let bound = Duration::from_secs(timeout + 3);
    assert!(
        out.elapsed <= bound,
        "{how}: sync took {:.2?} with --timeout {timeout} (allowed {bound:?}): {}",
        out.elapsed,
        out.show()
    );
    out.assert_code(3);
    assert_names(&out, cut, &format!("{how}: node"));
    eprintln!(
        "{how}: sync ended in {:.2?} (--timeout {timeout})",
        out.elapsed
    );
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t07_disconnected_node_reported_within_timeout() {
    let s = booted();
    // A sync first: the controller's connection to the node exists (and may be
    // kept) when the node drops off the network, as in real life.
    s.sync(BOOT, &[]).assert_code(0);
    let cut = &s.agents[s.agents.len() / 2];
    let disconnect = ["network", "disconnect", &s.network, &cut.container];
    assert_reported_while_cut_off(s, cut, "disconnected", &disconnect, || {
        docker(&[
            "network",
            "connect",
            "--ip",
            &cut.host,
            &s.network,
            &cut.container,
        ])
        .assert_code(0);
        assert!(wait_sshd(&cut.host, Duration::from_secs(30)));
    });
    s.sync(BOOT, &[]).assert_code(0);
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t08_frozen_node_reported_within_timeout() {
    // `docker pause` freezes sshd and the agent: TCP still connects, nothing
    // answers. The controller must not hang on it.
    let s = booted();
    s.sync(BOOT, &[]).assert_code(0);
    let cut = &s.agents[0];
    assert_reported_while_cut_off(s, cut, "paused", &["pause", &cut.container], || {
        docker(&["unpause", &cut.container]).assert_code(0);
    });
    assert!(wait_agent(&cut.container, Duration::from_secs(30)));
    s.sync(BOOT, &[]).assert_code(0);
}

/// The sync of t09's secret to its one-node cluster.
const KILL_SYNC: &str = "sync --cluster kill1 --secret e2e-kill --overwrite";

fn blob_values(run: &str, version: usize) -> Value {
    let chunk = format!("{run}-kill-v{version}-");
    serde_json::json!({
        "version": version.to_string(),
        "blob": chunk.repeat(48 * 1024 / chunk.len()),
    })
}

#[test]
#[ignore = "needs the docker-compose cluster: scripts/e2e.sh"]
fn t09_kill9_of_the_agent_during_a_sync_loop_leaves_no_torn_file() {
    let s = booted();
    let node = &s.agents[0];
    let c = node.container.as_str();
    s.add_cluster("kill1", std::slice::from_ref(node));
    let run = s.value("aws.secret_key").replace("awsSecretKey0aws", "");
    let rel = "e2e-kill/blob.json";
    let values_file = s.work.join("kill-values.json");
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let mut problems = Vec::new();
    let mut kills = 0;

    thread::scope(|scope| {
        scope.spawn(|| {
            let mut v = 0;
            while !stop.load(Ordering::SeqCst) {
                let values = blob_values(&run, v);
                s.add_marker(
                    "e2e-kill.blob",
                    &format!("{run}-kill-v{v}-{run}-kill-v{v}-"),
                );
                fs::write(&values_file, values.to_string()).expect("write values");
                s.ctl(&[
                    "secret",
                    "create",
                    "e2e-kill",
                    "--provider",
                    "e2e_blob",
                    "--path",
                    &format!("~/{rel}"),
                    "--values-json",
                    &values_file.to_string_lossy(),
                    "--force",
                ])
                .assert_code(0);
                let out = s.ctl(&test_support::argv(&format!("{KILL_SYNC} --timeout 5")));
                done.fetch_add(1, Ordering::SeqCst);
                if out.code == 0 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    // The agent is down (being restarted): do not spin.
                    thread::sleep(Duration::from_millis(200));
                }
                v += 1;
            }
        });
        for round in 0..4u64 {
            if !wait_agent(c, Duration::from_secs(20)) {
                eprintln!("{c}: the agent is not back 20 s after kill -9; restarting the node");
                docker(&["restart", "-t", "1", c]).assert_code(0);
                if !wait_agent(c, Duration::from_secs(30)) {
                    problems.push(format!("round {round}: no agent on {c} after a restart"));
                    break;
                }
            }
            // Let two syncs through, then kill in the middle of the next ones.
            let start = ok.load(Ordering::SeqCst);
            let waited = std::time::Instant::now();
            while ok.load(Ordering::SeqCst) < start + 2 {
                if waited.elapsed() > Duration::from_secs(60) {
                    problems.push(format!("round {round}: no sync succeeded within 60 s"));
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            thread::sleep(Duration::from_millis(40 + 37 * round));
            let Some(pid) = agent_pid(c) else {
                problems.push(format!("round {round}: no agent running on {c}"));
                continue;
            };
            exec(c, &["kill", "-9", &pid]).assert_code(0);
            kills += 1;
            check_blob(
                c,
                rel,
                &run,
                &mut problems,
                &format!("right after kill {round}"),
            );
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(
        wait_agent(c, Duration::from_secs(30)),
        "{c}: the agent did not come back after the last kill -9"
    );
    check_blob(c, rel, &run, &mut problems, "at the end");
    let leftovers = exec(c, &["find", &abs("e2e-kill"), "-mindepth", "1"]);
    let extra: Vec<&str> = leftovers
        .stdout
        .lines()
        .filter(|l| !l.ends_with("/blob.json"))
        .collect();
    if !extra.is_empty() {
        eprintln!("note: {c}: files left next to blob.json after kill -9: {extra:?}");
    }
    let (done, ok) = (done.load(Ordering::SeqCst), ok.load(Ordering::SeqCst));
    eprintln!("kill -9: {kills} kills, {done} syncs, {ok} succeeded");
    assert!(kills >= 3, "too few kills happened: {problems:?}");
    assert_no_problems("kill -9 during sync", problems);
    // The node is healthy again and takes a sync.
    s.ctl(&test_support::argv(KILL_SYNC)).assert_code(0);
}

/// The blob file on the node is absent (not yet written) or one whole version.
fn check_blob(c: &str, rel: &str, run: &str, problems: &mut Vec<String>, when: &str) {
    let Some(f) = node_file(c, rel) else { return };
    if f.mode != "600" {
        problems.push(format!("{when}: ~/{rel} has mode {}", f.mode));
    }
    let parsed: Option<Value> = serde_json::from_slice(&f.bytes).ok();
    let whole = parsed.as_ref().is_some_and(|v| {
        v.get("version")
            .and_then(Value::as_str)
            .and_then(|x| x.parse::<usize>().ok())
            .is_some_and(|ver| {
                let want = blob_values(run, ver);
                v.get("blob") == want.get("blob")
            })
    });
    if !whole {
        problems.push(format!(
            "{when}: ~/{rel} is torn ({} bytes, not one whole version)",
            f.bytes.len()
        ));
    }
}
