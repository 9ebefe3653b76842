//! Fleet simulation (used by scripts/bench.d/60-fleet.sh): K simulated nodes
//! in one process, each the agent's real pull client (`agent::pull::simulate`:
//! its own store client and AppRole login, jittered polls, fetches of what
//! changed, reports, files merged into its own home), against a real store.
//! Phases:
//!
//! 1. boot: all K start at once (or spread over `FLEET_BOOT_SPREAD` seconds);
//!    time until every one applied the manifest (p50/p99 from the start);
//! 2. boot reports: until every node wrote the report of its boot (they are
//!    spread over the bundle's `report_spread_secs`): report writes/s;
//! 3. idle: after one poll interval, a window of 3: store requests/s, report writes/s;
//! 4. publish: runs PUBLISH_CMD (a `controller sync` of a changed value),
//!    then times each node from the command's return to the moment it
//!    applied the new version (p50/p99/max);
//! 5. publish reports: until every node reported the new version (spread
//!    over the manifest's `report_spread_secs`);
//! 6. steady: a window of 3 polls, every node on the heartbeat the publish
//!    sized to the fleet;
//! 7. identity refreshes (when the cluster is federated: every window also
//!    prints identity tokens/s): a window of `FLEET_IDENTITY_WINDOW` seconds
//!    (default 3 polls), and the run's refresh, token and error counts.
//!
//! With `BAO_PIDS` (space separated) it reports the store's CPU per phase
//! (from /proc/<pid>/stat, as % of the whole machine), and always its own.
//! Prints names and numbers only, never a value.
//!
//!   fleet_sim BUNDLE K POLL_SECS -- PUBLISH_CMD [ARG]...
//!
//! Built with the agent's `sim` feature (`cargo build -p agent --features
//! sim --example fleet_sim`): the simulated node is not in the agent.
//!
//! `FLEET_SECRET_IDS=FILE` (one secret_id per line) gives each node its own
//! secret_id, as per-node bundles do once unwrapped; without it they all
//! share the launch bundle's (whose limited uses make every login a write on
//! that one secret_id). `FLEET_HOMES=DIR` (a tmpfs): node i merges its files
//! into `DIR/n<i>` (else nothing is written). `FLEET_BOOT_LIMIT`: seconds
//! the boot phase may take (default 600) before the rest is measured anyway.
//! `FLEET_NODE_BOOT_SPREAD=SECS` replaces the bundle's `boot_spread_secs`
//! (the nodes' own spread of their first logins; 0: none).
#![allow(missing_debug_implementations)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::pull::metrics::Metrics;
use common::fleet::{self, Bundle};

/// User + system CPU seconds of the processes `pids`.
fn cpu_secs(pids: &str) -> Option<f64> {
    let mut ticks = 0u64;
    for pid in pids.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        ticks += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of the store and of this process, now.
#[derive(Clone, Copy)]
struct Cpu {
    store: Option<f64>,
    sim: Option<f64>,
    at: Instant,
}

fn cpu_now() -> Cpu {
    Cpu {
        store: std::env::var("BAO_PIDS").ok().and_then(|p| cpu_secs(&p)),
        sim: cpu_secs(&std::process::id().to_string()),
        at: Instant::now(),
    }
}

/// "store CPU x% of the machine (y% of one core), sim z%" between two samples.
fn cpu_between(a: Cpu, b: Cpu) -> String {
    // The machine's CPUs (not this process's affinity: it may be pinned).
    let cores = std::fs::read_to_string("/proc/stat")
        .map(|t| {
            t.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
        .max(1) as f64;
    let span = (b.at - a.at).as_secs_f64().max(1e-9);
    let mut out = String::new();
    if let (Some(x), Some(y)) = (a.store, b.store) {
        let core = 100.0 * (y - x) / span;
        out.push_str(&format!(
            ", store CPU {:.0}% of the machine ({core:.0}% of one core, {cores:.0} cores)",
            core / cores
        ));
    }
    if let (Some(x), Some(y)) = (a.sim, b.sim) {
        out.push_str(&format!(
            ", simulator CPU {:.0}% of the machine",
            100.0 * (y - x) / span / cores
        ));
    }
    out
}

#[derive(Clone, Copy)]
struct Totals {
    requests: u64,
    reports: u64,
    logins: u64,
    errors: u64,
    report_errors: u64,
    secret_reads: u64,
    inline_items: u64,
    /// Workload identity: refreshes, token requests, failed refreshes.
    identity: (u64, u64, u64),
}

fn totals(nodes: &[Arc<Metrics>]) -> Totals {
    let mut t = Totals {
        requests: 0,
        reports: 0,
        logins: 0,
        errors: 0,
        report_errors: 0,
        secret_reads: 0,
        inline_items: 0,
        identity: (0, 0, 0),
    };
    for m in nodes {
        let (r, w, l) = m.store_counts();
        t.requests += r;
        t.reports += w;
        t.logins += l;
        t.errors += m.poll_errors();
        t.report_errors += m.report_errors();
        let (read, inline) = m.item_counts();
        t.secret_reads += read;
        t.inline_items += inline;
        let (refreshes, tokens, errors) = m.identity_counts();
        t.identity.0 += refreshes;
        t.identity.1 += tokens;
        t.identity.2 += errors;
    }
    t
}

/// ", N identity tokens/s (M refreshes, E failed)" between two totals over
/// `secs`, or nothing when the cluster is not federated.
fn identity_between(a: Totals, b: Totals, secs: f64) -> String {
    let tokens = b.identity.1 - a.identity.1;
    if tokens == 0 && b.identity.2 == a.identity.2 {
        return String::new();
    }
    format!(
        ", {:.1} identity tokens/s ({} refreshes, {} failed)",
        tokens as f64 / secs.max(1e-9),
        b.identity.0 - a.identity.0,
        b.identity.2 - a.identity.2
    )
}

/// Wait until every node applied `version`; each node's time since `from`.
async fn wait_applied(
    nodes: &[Arc<Metrics>],
    version: u64,
    from: Instant,
    limit: Duration,
) -> Vec<Duration> {
    let mut done: Vec<Option<Duration>> = vec![None; nodes.len()];
    let deadline = Instant::now() + limit;
    loop {
        let now = Instant::now();
        for (i, m) in nodes.iter().enumerate() {
            if done[i].is_none() && m.applied_version() >= version {
                done[i] = Some(now.saturating_duration_since(from));
            }
        }
        let left = done.iter().filter(|d| d.is_none()).count();
        if left == 0 {
            break;
        }
        if now >= deadline {
            eprintln!("fleet_sim: {left} node(s) did not apply version {version} in {limit:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out: Vec<Duration> = done.into_iter().flatten().collect();
    out.sort();
    out
}

/// Sleep `window`, then print the store requests/s, report writes/s, failed
/// polls and CPU over it.
async fn measure_window(nodes: &[Arc<Metrics>], window: Duration, phase: &str) {
    let (a, ca) = (totals(nodes), cpu_now());
    tokio::time::sleep(window).await;
    let (b, cb) = (totals(nodes), cpu_now());
    let w = window.as_secs_f64();
    println!(
        "K={} {phase} ({w:.0} s): {:.0} store requests/s, {:.1} report writes/s, {} failed polls{}{}",
        nodes.len(),
        (b.requests - a.requests) as f64 / w,
        (b.reports - a.reports) as f64 / w,
        b.errors - a.errors,
        identity_between(a, b, w),
        cpu_between(ca, cb),
    );
}

/// Each node's report writes so far.
fn report_counts(nodes: &[Arc<Metrics>]) -> Vec<u64> {
    nodes.iter().map(|m| m.store_counts().1).collect()
}

/// Wait until every node wrote a report more than it had in `before` (or
/// `limit` passes); print how long, report writes/s and the store's CPU
/// from now on.
async fn drain_reports(nodes: &[Arc<Metrics>], before: &[u64], phase: &str, limit: Duration) {
    let start = totals(nodes);
    let (t0, c0, r0, e0) = (
        Instant::now(),
        cpu_now(),
        start.requests,
        start.report_errors,
    );
    let done = || {
        report_counts(nodes)
            .iter()
            .zip(before)
            .filter(|(now, then)| now > then)
            .count()
    };
    while done() < nodes.len() && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (t1, c1, reported) = (totals(nodes), cpu_now(), done());
    let span = t0.elapsed().as_secs_f64().max(1e-9);
    println!(
        "K={} {phase} reports: {reported}/{} nodes reported, {span:.1} s after the phase before ended; {:.1} report writes/s, {} failed report writes, {:.0} store requests/s{}",
        nodes.len(),
        nodes.len(),
        (t1.reports - start.reports) as f64 / span,
        t1.report_errors - e0,
        (t1.requests - r0) as f64 / span,
        cpu_between(c0, c1),
    );
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sep = args
        .iter()
        .position(|a| a == "--")
        .expect("usage: fleet_sim BUNDLE K POLL_SECS -- CMD...");
    let mut bundle: Bundle =
        serde_json::from_str(&std::fs::read_to_string(&args[1]).expect("read the bundle"))
            .expect("a bundle");
    if let Some(s) = std::env::var("FLEET_NODE_BOOT_SPREAD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        bundle.boot_spread_secs = s;
    }
    let k: usize = args[2].parse().expect("K");
    let poll = Duration::from_secs_f64(args[3].parse().expect("POLL_SECS"));
    let publish = args[sep + 1..].to_vec();
    let spread = Duration::from_secs_f64(
        std::env::var("FLEET_BOOT_SPREAD")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
    );
    let homes = std::env::var_os("FLEET_HOMES").map(PathBuf::from);
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let nodes: Vec<Arc<Metrics>> = (0..k).map(|_| Arc::new(Metrics::default())).collect();
        // One secret_id per node (FLEET_SECRET_IDS: a file, one per line), as
        // per-node bundles give; else every node shares the launch bundle's.
        let ids: Vec<String> = std::env::var("FLEET_SECRET_IDS")
            .ok()
            .map(|p| std::fs::read_to_string(p).expect("read FLEET_SECRET_IDS"))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        let c0 = cpu_now();
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(k);
        for (i, m) in nodes.iter().enumerate() {
            let (mut b, m) = (bundle.clone(), m.clone());
            if let Some(id) = ids.get(i) {
                b.secret_id = Some(common::SecretValue::from(id.as_str()));
            }
            let home = homes.as_ref().map(|d| d.join(format!("n{i:05}")));
            let start = spread.mul_f64(i as f64 / k as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(start).await;
                let node = format!("sim-{i:05}");
                if let Err(e) = agent::pull::simulate(b, node, poll, Duration::from_secs(300), m, home).await {
                    eprintln!("fleet_sim: node {i}: {e}");
                }
            }));
        }
        let boot_limit = std::env::var("FLEET_BOOT_LIMIT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        let boot = wait_applied(&nodes, 1, t0, Duration::from_secs(boot_limit)).await;
        let boot_wall = t0.elapsed();
        let c1 = cpu_now();
        let b = totals(&nodes);
        println!(
            "K={k} poll={:.0}s boot{}, bundle boot spread {} s: {}/{k} applied in {:.2} s (per node from start: p50 {:.2} s, p99 {:.2} s); {} logins, {} failed polls, {} store requests, {} report writes, {} secrets read, {} applied from the manifest{}{}",
            poll.as_secs_f64(),
            if spread.is_zero() { String::from(" (all at once)") } else { format!(" (starts spread over {:.0} s)", spread.as_secs_f64()) },
            bundle.boot_spread_secs,
            boot.len(),
            boot_wall.as_secs_f64(),
            pct(&boot, 0.5),
            pct(&boot, 0.99),
            b.logins,
            b.errors,
            b.requests,
            b.reports,
            b.secret_reads,
            b.inline_items,
            identity_between(totals(&[]), b, boot_wall.as_secs_f64()),
            cpu_between(c0, c1),
        );
        // The boot's reports, spread by the nodes.
        drain_reports(&nodes, &vec![0; k], "boot", Duration::from_secs(bundle.report_spread_secs) + poll * 6).await;
        // Idle window, after one poll interval.
        tokio::time::sleep(poll).await;
        measure_window(&nodes, poll * 3, "idle").await;
        // Publish.
        let (p0, pc0, before_publish) = (totals(&nodes), cpu_now(), report_counts(&nodes));
        // The version this publish makes: one past the newest applied (with
        // FLEET_FEDERATE, `cluster federate` already rewrote the manifest
        // once, so it is not always 2).
        let target = nodes.iter().map(|m| m.applied_version()).max().unwrap_or(1) + 1;
        let sync_start = Instant::now();
        let status = Command::new(&publish[0]).args(&publish[1..]).status().expect("run the publish command");
        assert!(status.success(), "the publish command failed");
        let returned = Instant::now();
        let sync_secs = (returned - sync_start).as_secs_f64();
        let conv = wait_applied(&nodes, target, returned, poll * 5 + Duration::from_secs(60)).await;
        let (p1, pc1) = (totals(&nodes), cpu_now());
        let span = (pc1.at - pc0.at).as_secs_f64();
        println!(
            "K={k} publish (the command took {sync_secs:.2} s): {}/{k} converged; from its return: p50 {:.2} s, p99 {:.2} s, max {:.2} s (target p99 <= poll + 1 s = {:.0} s); {:.0} store requests/s, {:.1} report writes/s, {} secrets read, {} applied from the manifest, {} failed polls{}",
            conv.len(),
            pct(&conv, 0.5),
            pct(&conv, 0.99),
            conv.last().map_or(f64::NAN, Duration::as_secs_f64),
            poll.as_secs_f64() + 1.0,
            (p1.requests - p0.requests) as f64 / span,
            (p1.reports - p0.reports) as f64 / span,
            p1.secret_reads - p0.secret_reads,
            p1.inline_items - p0.inline_items,
            p1.errors - p0.errors,
            cpu_between(pc0, pc1),
        );
        drain_reports(&nodes, &before_publish, "publish", Duration::from_secs(fleet::report_spread_secs(k as u64)) + poll * 6).await;
        // Steady state: every node now follows the heartbeat the publish
        // sized to the fleet.
        measure_window(&nodes, poll * 3, "steady, after the publish's reports").await;
        // Federated (`cluster federate`): a window of FLEET_IDENTITY_WINDOW
        // seconds (default: 3 polls) for the identity refreshes, each node
        // at a random point of the second quarter of its tokens' TTL.
        let all = totals(&nodes);
        if all.identity.1 > 0 {
            let window = std::env::var("FLEET_IDENTITY_WINDOW")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(poll * 3, Duration::from_secs);
            measure_window(&nodes, window, "identity refreshes").await;
            let end = totals(&nodes);
            println!(
                "K={k} identity over the run: {} refreshes, {} token requests, {} failed refreshes",
                end.identity.0, end.identity.1, end.identity.2
            );
        }
        for t in tasks {
            t.abort();
        }
    });
}
