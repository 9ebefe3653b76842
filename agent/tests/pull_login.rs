//! The pull client's login against a fake store (an axum server on
//! loopback speaking the few Vault KV v2 / AppRole routes a node uses):
//! a login answered `500 transaction commit failed` (what OpenBao answers to
//! concurrent logins with one use-limited launch secret_id) is retried within
//! the same poll and the node converges with no failed poll; a refused login
//! (400) is not retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::pull::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::fleet::Bundle;
use serde_json::{json, Value};

const SECRET_ID: &str = "launch-secret-id-never-shown-5531";

/// The fake store's behaviour and what it saw (default: answers everything).
#[derive(Default)]
struct Fake {
    /// Logins answered 500 before the first 200.
    busy_logins: u32,
    /// Answer every login 400 (a refused secret_id).
    refuse: bool,
    logins: AtomicU32,
    reports: AtomicU32,
    /// Answer every report write 500 (a store too busy for writes).
    refuse_reports: bool,
    /// The manifest's `report_spread_secs`.
    spread: u64,
    /// The manifest's `heartbeat_secs`.
    heartbeat: u64,
    /// The body of the last report written.
    last_report: std::sync::Mutex<Option<Value>>,
    /// What `sys/health` answers (0: 200, an active node).
    health: u16,
    manifest_reads: AtomicU32,
}

impl Fake {
    /// The `heartbeat_secs` of the last report written (taking it).
    fn last_heartbeat(&self) -> Value {
        let report = self.last_report.lock().unwrap().take().expect("a report");
        report["data"]["heartbeat_secs"].clone()
    }
}

async fn health(State(f): State<Arc<Fake>>) -> StatusCode {
    StatusCode::from_u16(if f.health == 0 { 200 } else { f.health }).unwrap()
}

async fn login(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let n = f.logins.fetch_add(1, Ordering::SeqCst);
    if f.refuse || body["secret_id"] != SECRET_ID {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "errors": ["invalid role or secret ID"] })),
        );
    }
    if n < f.busy_logins {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "errors": ["transaction commit failed"] })),
        );
    }
    (
        StatusCode::OK,
        Json(json!({ "auth": { "client_token": "batch-token-1", "lease_duration": 600 } })),
    )
}

async fn manifest(State(f): State<Arc<Fake>>) -> Json<Value> {
    f.manifest_reads.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "data": {
            "data": { "format": 1, "version": 1, "published_at": "", "secrets": [],
                      "report_spread_secs": f.spread, "heartbeat_secs": f.heartbeat },
            "metadata": { "version": 1 }
        }
    }))
}

async fn report(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    f.reports.fetch_add(1, Ordering::SeqCst);
    *f.last_report.lock().unwrap() = Some(body);
    if f.refuse_reports {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "errors": ["transaction commit failed"] })),
        );
    }
    (StatusCode::OK, Json(json!({ "data": { "version": 1 } })))
}

/// Start the fake store; its URL.
async fn fake_store(fake: Arc<Fake>) -> String {
    let app = Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/auth/approle/login", post(login))
        .route("/v1/secret/data/rh/a/clusters/gpu/manifest", get(manifest))
        .route("/v1/secret/data/rh/a/clusters/gpu/nodes/{id}", post(report))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn launch_bundle(url: String) -> Bundle {
    serde_json::from_value(json!({
        "format": 1, "cluster": "gpu", "urls": [url], "mount": "secret",
        "prefix": "rh/a", "auth_mount": "approle", "role_id": "role-1",
        "secret_id": SECRET_ID
    }))
    .unwrap()
}

/// The value of one counter in the Prometheus text.
fn counter(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Run one simulated node until `done` holds (or 30 s pass).
async fn run_node(fake: Arc<Fake>, done: impl Fn(&Metrics) -> bool) -> Arc<Metrics> {
    let url = fake_store(fake).await;
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let node = tokio::spawn(async move {
        agent::pull::simulate(
            launch_bundle(url),
            "node-1".into(),
            Duration::from_secs(1),
            Duration::from_secs(300),
            m,
            None,
        )
        .await
    });
    until(Duration::from_secs(30), || done(&metrics)).await;
    node.abort();
    metrics
}

/// Wait until `cond` holds, checking every 20 ms, for at most `limit`.
/// [`run_node`] until its counter `name` reaches `n`.
async fn run_until_counted(fake: &Arc<Fake>, name: &'static str, n: u64) -> Arc<Metrics> {
    run_node(fake.clone(), move |m| counter(m, name) >= n).await
}

async fn until(limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Start `n` simulated nodes with `bundle` (1 s polls).
fn start_nodes(bundle: &Bundle, n: usize) -> Vec<(Arc<Metrics>, tokio::task::JoinHandle<()>)> {
    (0..n)
        .map(|i| {
            let metrics = Arc::new(Metrics::default());
            let m = metrics.clone();
            let bundle = bundle.clone();
            let task = tokio::spawn(async move {
                let _ = agent::pull::simulate(
                    bundle,
                    format!("node-{i}"),
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                    m,
                    None,
                )
                .await;
            });
            (metrics, task)
        })
        .collect()
}

#[tokio::test]
async fn a_login_answered_500_is_retried_and_the_node_converges_on_its_first_poll() {
    let fake = Arc::new(Fake {
        busy_logins: 2,
        ..Fake::default()
    });
    // Until the poll that applied also wrote its report (it follows the
    // apply and an identity read: stopping at the apply raced it).
    let seen = fake.clone();
    let metrics = run_node(fake.clone(), move |m| {
        m.applied_version() >= 1 && seen.reports.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(metrics.applied_version(), 1, "the node did not converge");
    assert_eq!(fake.logins.load(Ordering::SeqCst), 3, "two 500s, then 200");
    assert_eq!(counter(&metrics, "rh_agent_pull_logins_total"), 1);
    // Retried inside the login: the first poll itself succeeded.
    assert_eq!(counter(&metrics, "rh_agent_pull_poll_errors_total"), 0);
    assert!(fake.reports.load(Ordering::SeqCst) >= 1, "no node report");
}

#[tokio::test]
async fn a_refused_login_is_not_retried_within_the_poll() {
    let fake = Arc::new(Fake {
        refuse: true,
        ..Fake::default()
    });
    let metrics = run_until_counted(&fake, "rh_agent_pull_poll_errors_total", 1).await;
    assert_eq!(counter(&metrics, "rh_agent_pull_poll_errors_total"), 1);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 1, "a 400 is final");
    assert_eq!(metrics.applied_version(), 0);
}

/// A report write the store refuses is retried after a backoff (2, 4, 8
/// polls), not on every poll: over 6 polls at 1 s, at most 3 attempts.
#[tokio::test]
async fn a_failed_report_write_backs_off_instead_of_retrying_every_poll() {
    let fake = Arc::new(Fake {
        refuse_reports: true,
        ..Fake::default()
    });
    let metrics = run_until_counted(&fake, "rh_agent_pull_polls_total", 7).await;
    let polls = counter(&metrics, "rh_agent_pull_polls_total");
    assert!(polls >= 7, "only {polls} polls");
    assert_eq!(
        metrics.applied_version(),
        1,
        "applying does not wait on reports"
    );
    let attempts = fake.reports.load(Ordering::SeqCst);
    assert!(attempts >= 1, "no report attempted");
    assert!(
        attempts <= 3,
        "{attempts} report writes attempted in {polls} polls: no backoff"
    );
    assert_eq!(counter(&metrics, "rh_agent_pull_report_writes_total"), 0);
}

/// A manifest's `report_spread_secs` spreads the nodes' reports: 20 nodes
/// told to spread over 1,000 s (capped at their 300 s heartbeat) apply at
/// once but write almost no report within their first polls (each waits a
/// uniform random delay under 300 s; without the spread all 20 report on
/// their first poll).
#[tokio::test]
async fn the_manifest_spreads_the_nodes_reports() {
    let fake = Arc::new(Fake {
        spread: 1000,
        ..Fake::default()
    });
    let url = fake_store(fake.clone()).await;
    let nodes = start_nodes(&launch_bundle(url), 20);
    until_polled(&nodes, 3).await;
    for (m, task) in &nodes {
        task.abort();
        assert_eq!(
            m.applied_version(),
            1,
            "applying does not wait on the report"
        );
    }
    let reports = fake.reports.load(Ordering::SeqCst);
    assert!(
        reports < 5,
        "{reports} of 20 nodes reported within their first polls: not spread"
    );
}

/// A bundle's `boot_spread_secs` spreads the first logins of nodes booting
/// together: 20 nodes told 1,000 s (capped at 50 s) mostly have not logged
/// in after 2 s (each waits uniformly within 50 s; without it all 20 log in
/// within half a second).
#[tokio::test]
async fn the_bundle_spreads_the_first_logins_of_nodes_booting_together() {
    let fake = Arc::new(Fake::default());
    let url = fake_store(fake.clone()).await;
    let mut spread = launch_bundle(url.clone());
    spread.boot_spread_secs = 1000;
    let nodes = start_nodes(&spread, 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let early = fake.logins.load(Ordering::SeqCst);
    for (_, task) in &nodes {
        task.abort();
    }
    assert!(
        early < 5,
        "{early} of 20 nodes logged in within 2 s: not spread"
    );

    // The same fleet without a spread: all log in at once (each waits at
    // most half a second).
    let unspread = start_nodes(&launch_bundle(url), 20);
    until(Duration::from_secs(10), || {
        fake.logins.load(Ordering::SeqCst) - early >= 20
    })
    .await;
    let logins = fake.logins.load(Ordering::SeqCst) - early;
    for (_, task) in &unspread {
        task.abort();
    }
    assert_eq!(logins, 20, "without a spread every node logs in at once");
}

/// Poll until every node polled `polls` times (or 30 s pass).
async fn until_polled(nodes: &[(Arc<Metrics>, tokio::task::JoinHandle<()>)], polls: u64) {
    until(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|(m, _)| counter(m, "rh_agent_pull_polls_total") >= polls)
    })
    .await;
}

/// A bundle's `report_spread_secs` spreads the first report of nodes
/// booting together (a fleet that logs in at 100 a second must not write
/// its reports at that rate): 20 nodes whose manifest asks for no spread
/// apply on their first poll but almost none reports within three polls;
/// the same 20 without it all report.
#[tokio::test]
async fn the_bundle_spreads_the_first_reports_of_nodes_booting_together() {
    let fake = Arc::new(Fake::default());
    let url = fake_store(fake.clone()).await;
    let mut bundle = launch_bundle(url.clone());
    bundle.report_spread_secs = 1000;
    let nodes = start_nodes(&bundle, 20);
    until_polled(&nodes, 3).await;
    for (m, task) in &nodes {
        task.abort();
        assert_eq!(m.applied_version(), 1);
    }
    let spread = fake.reports.load(Ordering::SeqCst);
    assert!(
        spread < 5,
        "{spread} of 20 nodes reported at once: not spread"
    );

    let nodes = start_nodes(&launch_bundle(url), 20);
    until_polled(&nodes, 3).await;
    for (_, task) in &nodes {
        task.abort();
    }
    assert_eq!(fake.reports.load(Ordering::SeqCst) - spread, 20);
}

/// The manifest's `heartbeat_secs` lengthens a node's heartbeat (a large
/// fleet's publisher asks for fewer heartbeat writes) and the report says
/// the one used, so liveness follows; never shorter than the node's own
/// (300 s here), never over an hour, whatever the store says.
#[tokio::test]
async fn the_manifest_lengthens_the_heartbeat_within_bounds() {
    for (asked, used) in [(0, 300), (60, 300), (1_000, 1_000), (u64::MAX, 3_600)] {
        let fake = Arc::new(Fake {
            heartbeat: asked,
            ..Fake::default()
        });
        run_until_counted(&fake, "rh_agent_pull_report_writes_total", 1).await;
        assert_eq!(fake.last_heartbeat(), used, "manifest asked {asked}");
    }
}

/// The bundle's `heartbeat_secs` (enroll sized it to the fleet) holds while
/// the manifest, published before the nodes booted, asks for nothing; the
/// larger of the two wins; never over an hour.
#[tokio::test]
async fn the_bundle_lengthens_the_heartbeat_until_the_manifest_asks_more() {
    for (bundle_asks, manifest_asks, used) in [
        (1_000, 0, 1_000),
        (1_000, 2_000, 2_000),
        (u64::MAX, 0, 3_600),
    ] {
        let fake = Arc::new(Fake {
            heartbeat: manifest_asks,
            ..Fake::default()
        });
        let mut bundle = launch_bundle(fake_store(fake.clone()).await);
        bundle.heartbeat_secs = bundle_asks;
        let nodes = start_nodes(&bundle, 1);
        until(Duration::from_secs(30), || {
            fake.reports.load(Ordering::SeqCst) >= 1
        })
        .await;
        for (_, task) in nodes {
            task.abort();
        }
        assert_eq!(
            fake.last_heartbeat(),
            used,
            "bundle {bundle_asks}, manifest {manifest_asks}"
        );
    }
}

/// Logins and report writes go to the store's active node (the one whose
/// `sys/health` answers 200), not to a standby that would forward them;
/// reads stay spread over every node.
#[tokio::test]
async fn logins_and_reports_go_to_the_active_node_and_reads_stay_spread() {
    let standby = Arc::new(Fake {
        health: 429,
        ..Fake::default()
    });
    let active = Arc::new(Fake::default());
    let mut bundle = launch_bundle(fake_store(standby.clone()).await);
    bundle.urls.push(fake_store(active.clone()).await);
    let nodes = start_nodes(&bundle, 20);
    until(Duration::from_secs(30), || {
        active.reports.load(Ordering::SeqCst) >= 20
    })
    .await;
    until_polled(&nodes, 3).await;
    for (_, task) in &nodes {
        task.abort();
    }
    assert_eq!(active.logins.load(Ordering::SeqCst), 20);
    assert_eq!(active.reports.load(Ordering::SeqCst), 20);
    assert_eq!(standby.logins.load(Ordering::SeqCst), 0);
    assert_eq!(standby.reports.load(Ordering::SeqCst), 0);
    let (a, s) = (
        active.manifest_reads.load(Ordering::SeqCst),
        standby.manifest_reads.load(Ordering::SeqCst),
    );
    assert!(a > 0 && s > 0, "reads not spread: active {a}, standby {s}");
}
