//! Fleet simulation (used by scripts/bench.d/60-fleet.sh): K simulated nodes
//! in one process, each the agent's real pull client (`agent::pull::simulate`:
//! its own AppRole login, jittered polls, fetches of what changed, reports)
//! installing nothing, against a real store. Phases:
//!
//! 1. boot: all K start at once; time until every one applied the manifest;
//! 2. idle: one window of 3 poll intervals: store requests/s, report writes/s;
//! 3. publish: runs PUBLISH_CMD (a `controller sync`), then times each node
//!    from the command's return to the moment it applied the new version
//!    (p50/p99/max).
//!
//! With `BAO_PIDS` (space separated) it also reports the store's CPU per
//! phase from /proc. Prints names and numbers only, never a value.
//!
//!   fleet_sim LAUNCH_BUNDLE K POLL_SECS -- PUBLISH_CMD [ARG]...
//!
//! `FLEET_SECRET_IDS=FILE` (one secret_id per line) gives each node its own
//! secret_id, as per-node bundles do; without it they all share the launch
//! bundle's (whose limited uses make every login a conflicting write).
#![allow(missing_debug_implementations)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::pull::metrics::Metrics;
use common::fleet::Bundle;

fn store_cpu_secs() -> Option<f64> {
    let pids = std::env::var("BAO_PIDS").ok()?;
    let mut ticks = 0u64;
    for pid in pids.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        ticks += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

struct Totals {
    requests: u64,
    reports: u64,
    logins: u64,
}

fn totals(nodes: &[Arc<Metrics>]) -> Totals {
    let mut t = Totals {
        requests: 0,
        reports: 0,
        logins: 0,
    };
    for m in nodes {
        let (r, w, l) = m.store_counts();
        t.requests += r;
        t.reports += w;
        t.logins += l;
    }
    t
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
                done[i] = Some(now - from);
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
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut out: Vec<Duration> = done.into_iter().flatten().collect();
    out.sort();
    out
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
    let bundle: Bundle =
        serde_json::from_str(&std::fs::read_to_string(&args[1]).expect("read the bundle"))
            .expect("a bundle");
    let k: usize = args[2].parse().expect("K");
    let poll = Duration::from_secs_f64(args[3].parse().expect("POLL_SECS"));
    let publish = &args[sep + 1..];
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
        let cpu0 = store_cpu_secs();
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(k);
        // One secret_id per node (FLEET_SECRET_IDS: a file, one per line), as
        // per-node bundles give; else every node shares the launch bundle's.
        let ids: Vec<String> = std::env::var("FLEET_SECRET_IDS")
            .ok()
            .map(|p| std::fs::read_to_string(p).expect("read FLEET_SECRET_IDS"))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        for (i, m) in nodes.iter().enumerate() {
            let (mut b, m) = (bundle.clone(), m.clone());
            if let Some(id) = ids.get(i) {
                b.secret_id = Some(common::SecretValue::from(id.as_str()));
            }
            tasks.push(tokio::spawn(async move {
                if let Err(e) = agent::pull::simulate(b, format!("sim-{i:05}"), poll, Duration::from_secs(300), m).await {
                    eprintln!("fleet_sim: node {i}: {e}");
                }
            }));
        }
        let boot = wait_applied(&nodes, 1, t0, Duration::from_secs(600)).await;
        let boot_wall = t0.elapsed();
        let cpu1 = store_cpu_secs();
        let b = totals(&nodes);
        println!(
            "K={k} poll={:.0}s boot: {}/{k} applied in {:.2} s (p50 {:.2} s, p99 {:.2} s); {} logins, {} store requests, {} report writes{}",
            poll.as_secs_f64(),
            boot.len(),
            boot_wall.as_secs_f64(),
            pct(&boot, 0.5),
            pct(&boot, 0.99),
            b.logins,
            b.requests,
            b.reports,
            match (cpu0, cpu1) {
                (Some(a), Some(c)) => format!(", store CPU {:.0}% of one core", 100.0 * (c - a) / boot_wall.as_secs_f64()),
                _ => String::new(),
            }
        );
        // Idle window.
        let window = poll * 3;
        let (i0, c0) = (totals(&nodes), store_cpu_secs());
        tokio::time::sleep(window).await;
        let (i1, c1) = (totals(&nodes), store_cpu_secs());
        let w = window.as_secs_f64();
        println!(
            "K={k} idle: {:.0} store requests/s, {:.1} report writes/s{}",
            (i1.requests - i0.requests) as f64 / w,
            (i1.reports - i0.reports) as f64 / w,
            match (c0, c1) {
                (Some(a), Some(c)) => format!(", store CPU {:.0}% of one core", 100.0 * (c - a) / w),
                _ => String::new(),
            }
        );
        // Publish.
        let (p0, pc0) = (totals(&nodes), store_cpu_secs());
        let status = Command::new(&publish[0]).args(&publish[1..]).status().expect("run the publish command");
        assert!(status.success(), "the publish command failed");
        let returned = Instant::now();
        let conv = wait_applied(&nodes, 2, returned, poll * 5 + Duration::from_secs(60)).await;
        let span = returned.elapsed().as_secs_f64();
        let (p1, pc1) = (totals(&nodes), store_cpu_secs());
        println!(
            "K={k} publish: {}/{k} converged; from sync return: p50 {:.2} s, p99 {:.2} s, max {:.2} s (target p99 <= poll + 1 s = {:.0} s); {:.0} store requests/s, {:.1} report writes/s{}",
            conv.len(),
            pct(&conv, 0.5),
            pct(&conv, 0.99),
            conv.last().map_or(f64::NAN, Duration::as_secs_f64),
            poll.as_secs_f64() + 1.0,
            (p1.requests - p0.requests) as f64 / span,
            (p1.reports - p0.reports) as f64 / span,
            match (pc0, pc1) {
                (Some(a), Some(c)) => format!(", store CPU {:.0}% of one core", 100.0 * (c - a) / span),
                _ => String::new(),
            }
        );
        for t in tasks {
            t.abort();
        }
    });
}
