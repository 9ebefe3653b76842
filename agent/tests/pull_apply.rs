//! What a pulling agent applies from an untrusted store, through the real
//! install path (an in-process agent, `agent::start_pull`, files in a temp
//! home) against a fake store (an axum server on loopback speaking the few
//! KV v2 / AppRole routes a node uses) that the test rewrites between polls:
//! a missing, deleted or malformed manifest wipes nothing (only an explicit
//! empty one unpublishes); an older manifest or an older version of a
//! secret is refused until a new epoch; one unreadable secret does not hold
//! back the others or a removal; a manifest over the entry cap is refused
//! unread and long error text is cut; store error bodies are escaped; and
//! reports are signed under `<node-id>.<bundle-id>`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

const SECRET_ID: &str = "launch-secret-id-pull-apply-7731";
const CLUSTER_KEY: [u8; 32] = [9; 32];
const BUNDLE_ID: &str = "00112233aabbccdd";

/// How the fake store answers a manifest read.
#[derive(Clone)]
enum Answer {
    Doc(Value),
    NotFound,
    /// What a KV v2 read of a soft-deleted version answers.
    Deleted,
    /// 200 with an empty body.
    Empty,
    Error(u16, Value),
}

struct Fake {
    manifest: Mutex<Answer>,
    /// (name, KV version) -> the published item.
    secrets: Mutex<BTreeMap<(String, u64), Value>>,
    /// Report id -> the last report written there.
    reports: Mutex<BTreeMap<String, Value>>,
    secret_reads: AtomicU32,
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn login(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if body["secret_id"] != SECRET_ID {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "errors": ["invalid"] })),
        );
    }
    (
        StatusCode::OK,
        Json(json!({ "auth": { "client_token": "batch-token-1", "lease_duration": 600 } })),
    )
}

async fn manifest(State(f): State<Arc<Fake>>) -> Response {
    let answer = f.manifest.lock().unwrap().clone();
    match answer {
        Answer::Doc(doc) => {
            Json(json!({ "data": { "data": doc, "metadata": { "version": 1 } } })).into_response()
        }
        Answer::NotFound => (StatusCode::NOT_FOUND, Json(json!({ "errors": [] }))).into_response(),
        Answer::Deleted => (
            StatusCode::NOT_FOUND,
            Json(json!({ "data": { "data": null, "metadata": {
                "version": 3, "deletion_time": "2024-01-01T00:00:00Z", "destroyed": false } } })),
        )
            .into_response(),
        Answer::Empty => StatusCode::OK.into_response(),
        Answer::Error(status, body) => {
            (StatusCode::from_u16(status).unwrap(), Json(body)).into_response()
        }
    }
}

async fn secret(
    State(f): State<Arc<Fake>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<BTreeMap<String, u64>>,
) -> Response {
    f.secret_reads.fetch_add(1, Ordering::SeqCst);
    let version = q.get("version").copied().unwrap_or(0);
    match f.secrets.lock().unwrap().get(&(name, version)) {
        Some(item) => Json(json!({ "data": { "data": item, "metadata": { "version": version } } }))
            .into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({ "errors": [] }))).into_response(),
    }
}

async fn report(
    State(f): State<Arc<Fake>>,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    f.reports.lock().unwrap().insert(id, body["data"].clone());
    Json(json!({ "data": { "version": 1 } }))
}

/// A published item: a generic secret whose file the node allows.
fn item(name: &str, value: &str) -> Value {
    let path = format!("~/.cfg/{name}.json");
    json!({ "secret": { "name": name, "provider": name, "path": path,
                        "values": { "token": value } }, "path": path })
}

/// A well-formed manifest listing `(name, kv_version)`.
fn doc(epoch: u64, version: u64, entries: &[(&str, u64)]) -> Value {
    let secrets: Vec<Value> = entries
        .iter()
        .map(|(n, v)| json!({ "name": n, "kv_version": v, "fingerprint": format!("{n}{v}") }))
        .collect();
    json!({ "format": 1, "epoch": epoch, "version": version, "published_at": "",
            "secrets": secrets })
}

/// One in-process pulling agent (a 200 ms poll) on a temp home, and its store.
struct Node {
    home: tempfile::TempDir,
    fake: Arc<Fake>,
    state: agent::AppState,
    _pull: agent::PullHandle,
}

impl Node {
    /// Start the fake store answering `first`, then the agent (it applies
    /// before `start_pull` returns). `sign`: the bundle carries a report key.
    async fn start(first: Answer, secrets: &[(&str, u64, Value)], sign: bool) -> Node {
        let fake = Arc::new(Fake {
            manifest: Mutex::new(first),
            secrets: Mutex::new(
                secrets
                    .iter()
                    .map(|(n, v, item)| ((n.to_string(), *v), item.clone()))
                    .collect(),
            ),
            reports: Mutex::new(BTreeMap::new()),
            secret_reads: AtomicU32::new(0),
        });
        let base = "/v1/secret/data/rh/a/clusters/gpu";
        let app = Router::new()
            .route("/v1/sys/health", get(health))
            .route("/v1/auth/approle/login", post(login))
            .route(&format!("{base}/manifest"), get(manifest))
            .route(&format!("{base}/secrets/{{name}}"), get(secret))
            .route(&format!("{base}/nodes/{{id}}"), post(report))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let home = tempfile::tempdir().unwrap();
        let mut bundle = json!({
            "format": 1, "cluster": "gpu", "urls": [url], "mount": "secret",
            "prefix": "rh/a", "auth_mount": "approle", "role_id": "role-1",
            "secret_id": SECRET_ID, "name": "launch-1"
        });
        if sign {
            bundle["bundle_id"] = BUNDLE_ID.into();
            let key = ::common::fleet::bundle_report_key(&CLUSTER_KEY, BUNDLE_ID);
            bundle["report_key"] = key.expose_secret().into();
        }
        let bundle_path = home.path().join("bundle.json");
        std::fs::write(&bundle_path, bundle.to_string()).unwrap();
        std::fs::set_permissions(
            &bundle_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut config = common::config(home.path());
        config.pull_bundle = Some(bundle_path);
        config.poll_interval = Duration::from_millis(200);
        config.pull_boot_wait = Duration::from_secs(10);
        config.allow_paths = vec!["~/.cfg".into()];
        let state = agent::AppState::open(config).await.unwrap();
        let pull = agent::start_pull(&state).await.unwrap().expect("pull mode");
        Node {
            home,
            fake,
            state,
            _pull: pull,
        }
    }

    /// A node that applied `(name, value)` secrets (KV version 1 each)
    /// from manifest 1 of epoch 1.
    async fn with(secrets: &[(&str, &str)], sign: bool) -> Node {
        let entries: Vec<(&str, u64)> = secrets.iter().map(|(n, _)| (*n, 1)).collect();
        let items: Vec<(&str, u64, Value)> =
            secrets.iter().map(|(n, v)| (*n, 1, item(n, v))).collect();
        Node::start(Answer::Doc(doc(1, 1, &entries)), &items, sign).await
    }

    /// A node that applied secret `a` (`value-a-1`) from manifest 1.
    async fn with_a(sign: bool) -> Node {
        Node::with(&[("a", "value-a-1")], sign).await
    }

    fn file(&self, name: &str) -> PathBuf {
        self.home.path().join(format!(".cfg/{name}.json"))
    }

    /// The token value in a secret's file, if any.
    fn value(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.file(name)).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["token"].as_str().map(str::to_owned)
    }

    fn set_manifest(&self, answer: Answer) {
        *self.fake.manifest.lock().unwrap() = answer;
    }

    fn publish(&self, name: &str, version: u64, item: Value) {
        self.fake
            .secrets
            .lock()
            .unwrap()
            .insert((name.to_owned(), version), item);
    }

    fn polls(&self) -> u64 {
        counter(&self.state, "rh_agent_pull_polls_total")
    }

    fn poll_errors(&self) -> u64 {
        counter(&self.state, "rh_agent_pull_poll_errors_total")
    }

    /// The node's only report so far (id and body).
    fn report(&self) -> (String, Value) {
        let reports = self.fake.reports.lock().unwrap();
        assert_eq!(reports.len(), 1, "{reports:?}");
        let (id, body) = reports.iter().next().unwrap();
        (id.clone(), body.clone())
    }

    /// Wait (at most 30 s) until `cond` holds.
    async fn until(&self, what: &str, cond: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for `n` more polls after now.
    async fn polls_more(&self, n: u64) {
        let start = self.polls();
        self.until("more polls", |node| node.polls() >= start + n)
            .await;
    }

    /// Wait until a poll failed after now, then one more poll ran (so the
    /// report of that failure was written).
    async fn fails(&self) {
        let start = self.poll_errors();
        self.until("a failed poll", |node| node.poll_errors() > start)
            .await;
        self.polls_more(1).await;
    }

    fn last_error(&self) -> String {
        self.report().1["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One counter of the agent's Prometheus text.
fn counter(state: &agent::AppState, name: &str) -> u64 {
    state
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

fn exists(path: &Path) -> bool {
    path.exists()
}

#[tokio::test]
async fn a_missing_deleted_or_malformed_manifest_wipes_nothing_only_an_explicit_empty_one_does() {
    let node = Node::with(&[("a", "value-a-1"), ("b", "value-b-1")], false).await;
    assert_eq!(node.value("a").as_deref(), Some("value-a-1"));
    assert_eq!(node.value("b").as_deref(), Some("value-b-1"));
    let bytes = std::fs::read(node.file("a")).unwrap();
    for (answer, what) in [
        (Answer::NotFound, "missing"),
        (Answer::Deleted, "missing"),
        (Answer::Empty, "missing"),
        (Answer::Doc(json!({})), "no format marker"),
        (
            Answer::Doc(json!({ "version": 9, "secrets": [] })),
            "no format marker",
        ),
        (
            Answer::Doc(json!({ "format": 1, "version": 9 })),
            "no secret list",
        ),
        (Answer::Doc(json!("x")), "not a JSON object"),
    ] {
        node.set_manifest(answer);
        node.fails().await;
        assert_eq!(std::fs::read(node.file("a")).unwrap(), bytes, "{what}");
        assert_eq!(node.value("b").as_deref(), Some("value-b-1"), "{what}");
        let error = node.last_error();
        assert!(
            error.contains(what) && error.contains("everything installed is kept"),
            "{what}: {error}"
        );
    }
    // An explicit, well-formed manifest with no secrets unpublishes them.
    node.set_manifest(Answer::Doc(doc(1, 2, &[])));
    node.until("removed", |n| {
        n.value("a").is_none() && n.value("b").is_none()
    })
    .await;
    node.polls_more(1).await;
    assert_eq!(node.report().1["applied_version"], 2);
}

#[tokio::test]
async fn a_node_with_nothing_applied_boots_while_nothing_is_published() {
    let node = Node::start(Answer::NotFound, &[], false).await;
    assert_eq!(node.poll_errors(), 0, "nothing published is not an error");
    // Then the first publish applies.
    node.publish("a", 1, item("a", "value-a-1"));
    node.set_manifest(Answer::Doc(doc(1, 1, &[("a", 1)])));
    node.until("applied", |n| n.value("a").is_some()).await;
}

#[tokio::test]
async fn an_older_manifest_or_secret_version_is_refused_until_a_new_epoch() {
    let node = Node::start(
        Answer::Doc(doc(100, 1, &[("a", 1)])),
        &[
            ("a", 1, item("a", "rotated-out-1")),
            ("a", 2, item("a", "current-2")),
        ],
        false,
    )
    .await;
    assert_eq!(node.value("a").as_deref(), Some("rotated-out-1"));
    node.set_manifest(Answer::Doc(doc(100, 2, &[("a", 2)])));
    node.until("version 2", |n| {
        n.value("a").as_deref() == Some("current-2")
    })
    .await;

    // The older document put back (its KV version would be newer).
    node.set_manifest(Answer::Doc(doc(100, 1, &[("a", 1)])));
    node.fails().await;
    node.polls_more(2).await;
    assert_eq!(node.value("a").as_deref(), Some("current-2"));
    let error = node.last_error();
    assert!(error.contains("refused: older than applied"), "{error}");
    assert!(error.contains("--new-epoch"), "{error}");
    assert_eq!(node.report().1["applied_version"], 2);

    // A newer serial naming an older version of the secret: that entry is
    // refused, the rest of the node stays as it is.
    node.set_manifest(Answer::Doc(doc(100, 3, &[("a", 1)])));
    node.fails().await;
    assert_eq!(node.value("a").as_deref(), Some("current-2"));
    let error = node.last_error();
    assert!(
        error.contains("a: refused: version 1 is older than version 2 applied"),
        "{error}"
    );

    // The owner's explicit new epoch starts over.
    node.set_manifest(Answer::Doc(doc(200, 1, &[("a", 1)])));
    node.until("new epoch", |n| {
        n.value("a").as_deref() == Some("rotated-out-1")
    })
    .await;
    node.polls_more(1).await;
    let (_, report) = node.report();
    assert_eq!(
        (
            report["applied_epoch"].as_u64(),
            report["applied_version"].as_u64()
        ),
        (Some(200), Some(1))
    );
    assert!(report["last_error"].is_null(), "{report}");
}

#[tokio::test]
async fn one_unreadable_secret_does_not_hold_back_the_others_or_a_removal() {
    let node = Node::with(&[("a", "value-a-1"), ("gone", "value-gone")], false).await;
    assert_eq!(node.value("gone").as_deref(), Some("value-gone"));
    // Over the node's 4 MiB read cap.
    node.publish("big", 1, item("big", &"x".repeat(5 << 20)));
    node.publish("a", 2, item("a", "value-a-2"));
    node.set_manifest(Answer::Doc(doc(1, 2, &[("a", 2), ("big", 1)])));
    node.until("a applied, gone removed", |n| {
        n.value("a").as_deref() == Some("value-a-2") && n.value("gone").is_none()
    })
    .await;
    node.fails().await;
    assert!(!exists(&node.file("big")));
    let error = node.last_error();
    assert!(
        error.starts_with("big: ") && error.contains("larger than"),
        "{error}"
    );
    let (_, report) = node.report();
    assert_eq!(report["secrets"], json!(["a"]), "{report}");
}

#[tokio::test]
async fn a_manifest_over_the_entry_cap_is_refused_unread_and_error_text_is_cut() {
    let node = Node::with_a(false).await;
    let names: Vec<String> = (0..=::common::fleet::MAX_MANIFEST_ENTRIES)
        .map(|i| format!("s{i}"))
        .collect();
    let entries: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let reads = node.fake.secret_reads.load(Ordering::SeqCst);
    node.set_manifest(Answer::Doc(doc(1, 2, &entries)));
    node.fails().await;
    node.polls_more(1).await;
    assert_eq!(
        node.fake.secret_reads.load(Ordering::SeqCst),
        reads,
        "entries were read"
    );
    assert_eq!(node.value("a").as_deref(), Some("value-a-1"));
    assert!(
        node.last_error().contains("more than 10000"),
        "{}",
        node.last_error()
    );

    // 3,000 entries the store does not have: one error each, cut.
    node.set_manifest(Answer::Doc(doc(1, 3, &entries[..3000])));
    node.until("the capped error", |n| {
        n.last_error().contains("more errors")
    })
    .await;
    let error = node.last_error();
    assert!(error.chars().count() <= 2_100, "{} chars", error.len());
    assert!(
        error.starts_with("s0: version 1 is not in the store"),
        "{error}"
    );
    assert_eq!(node.value("a").as_deref(), None, "a was unpublished");
}

#[tokio::test]
async fn store_error_bodies_are_escaped_before_they_are_logged_or_reported() {
    let node = Node::with_a(false).await;
    node.set_manifest(Answer::Error(
        500,
        json!({ "errors": ["sealed\u{1b}]0;owned\u{7}\r\nfake: ok\u{202e}"] }),
    ));
    node.fails().await;
    let error = node.last_error();
    assert!(error.contains("sealed\\u{1b}]0;owned\\u{7}"), "{error}");
    assert!(!error.chars().any(char::is_control), "{error:?}");
    assert!(!error.contains('\u{202e}'), "{error:?}");
}

#[tokio::test]
async fn reports_are_signed_under_the_node_and_bundle_id() {
    let node = Node::with_a(true).await;
    node.until("a report", |n| !n.fake.reports.lock().unwrap().is_empty())
        .await;
    let (id, body) = node.report();
    assert!(id.ends_with(&format!(".{BUNDLE_ID}")), "{id}");
    assert_eq!(body["node_id"], id.as_str());
    assert_eq!(body["bundle_id"], BUNDLE_ID);
    use ::common::fleet::{verify_report, ReportTrust};
    assert_eq!(
        verify_report(&id, &body, Some(&CLUSTER_KEY)),
        ReportTrust::Verified
    );
    assert_eq!(
        verify_report(&id, &body, Some(&[1u8; 32])),
        ReportTrust::Forged
    );
    assert!(!body.to_string().contains("value-a-1"));
}
