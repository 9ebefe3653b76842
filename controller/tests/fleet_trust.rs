//! Fleet mode against a real OpenBao dev server: what a node or the
//! controller refuses to trust. A stolen bundle revoked by name, node id or
//! file; unreadable and forged reports as their own rows with foreign text
//! escaped; a deleted or rolled-back manifest leaving the node as it is; a
//! store writer that cannot make a node run a program. Every controller run
//! is checked for leaked values and tokens.

mod fleet_common;
#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fleet;
use common::secret_value::values_from;
use common::Secret;
use controller::vault::local;
use serde_json::{json, Value};

use fleet_common::*;
use vault_common::{kubeconfig, mode, raw, root, root_doc, root_put, DevServer, Home};

/// `controller cluster enroll gpu --out DIR EXTRA...`, expected to succeed.
fn enroll_gpu(home: &Home, dir: &Path, extra: &[&str]) -> vault_common::Run {
    let mut args = vec!["cluster", "enroll", "gpu", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    home.ok(&args)
}

/// What a thief who intercepted `bundle` does: unwrap its secret_id.
fn steal(server: &DevServer, bundle: &Path) -> String {
    let b = bundle_json(bundle);
    let (st, body) = raw(
        &server.url,
        b["wrapped_secret_id"].as_str().unwrap(),
        "POST",
        "sys/wrapping/unwrap",
        None,
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    body["data"]["secret_id"].as_str().unwrap().to_owned()
}

/// The status row of the one node whose report id starts with `prefix`.
fn node_row(s: &Value, prefix: &str) -> Value {
    let rows: Vec<&Value> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["report_id"].as_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(rows.len(), 1, "{s:#}");
    rows[0].clone()
}

/// Issue 19 §6: every bundle's secret_id accessor is kept, so one stolen
/// bundle is revoked by its name, its node id or the file, and enrolling a
/// node again revokes the bundle it had: the thief's copy no longer logs in.
#[test]
fn a_stolen_bundle_is_revoked_by_name_node_id_or_file_and_re_enrolling_revokes_it() {
    let Some((server, home, out, bundles)) = published_cluster(3) else {
        return;
    };
    let names: Vec<String> = bundles
        .iter()
        .map(|b| b.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["node-1.json", "node-2.json", "node-3.json"]);
    for (i, b) in bundles.iter().enumerate() {
        let v = bundle_json(b);
        assert_eq!(v["name"], format!("node-{}", i + 1));
        assert!(v["bundle_id"].as_str().unwrap().len() == 16, "{v}");
    }
    // Intercepted on the way to the nodes.
    let stolen: Vec<String> = bundles.iter().map(|b| steal(&server, b)).collect();
    for sid in &stolen {
        assert_eq!(login_status(&server, &bundles[0], sid), 200);
    }
    // The registry: accessors, no secret_id, private.
    let registry = home.file(".rh/clusters/gpu.nodes.json");
    assert_eq!(mode(&registry), 0o600);
    let text = std::fs::read_to_string(&registry).unwrap();
    for sid in &stolen {
        assert!(!text.contains(sid.as_str()));
    }

    // Enrolling node-1 again revokes the intercepted node-1.
    let again = out.path().join("again");
    let run = enroll_gpu(&home, &again, &["--node", "node-1", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["revoked"], json!(["node-1"]), "{doc:#}");
    assert_ne!(login_status(&server, &bundles[0], &stolen[0]), 200);
    assert_eq!(login_status(&server, &bundles[0], &stolen[1]), 200);
    // By the bundle file.
    let file = bundles[1].to_str().unwrap();
    home.ok(&["cluster", "revoke-node", "gpu", "--bundle", file]);
    assert_ne!(login_status(&server, &bundles[0], &stolen[1]), 200);
    // By the bundle's name; again is a no-op.
    home.ok(&["cluster", "revoke-node", "gpu", "node-3"]);
    assert_ne!(login_status(&server, &bundles[0], &stolen[2]), 200);
    let run = home.ok(&["cluster", "revoke-node", "gpu", "node-3"]);
    assert!(run.stdout.contains("already revoked"), "{run:?}");
    let run = home.run(&["cluster", "revoke-node", "gpu", "no-such-node"]);
    assert_eq!(run.code, 2, "{run:?}");
    run.stderr_has("node-1");

    // A spent bundle names the command that revokes it.
    let (spent_home, _port, mut child) = spawn_agent(&bundles[1]);
    assert!(!child.wait().unwrap().success());
    let log = std::fs::read_to_string(spent_home.path().join("agent.log")).unwrap();
    assert!(
        log.contains("controller cluster revoke-node gpu node-2"),
        "{log}"
    );

    // The re-enrolled node runs; its report names its bundle, and its node
    // id revokes it: the secret_id it keeps no longer logs in.
    let agent = start_agent(&again.join("node-1.json"));
    let s = wait_converged(&home, "gpu", 1);
    let row = node_row(&s, "");
    assert_eq!(
        (row["bundle"].as_str(), row["trust"].as_str()),
        (Some("node-1"), Some("verified")),
        "{s:#}"
    );
    let node_id = row["report_id"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(
        table.contains(&node_id) && table.contains("node-1"),
        "{table}"
    );
    let kept = std::fs::read_to_string(agent.state().join("pull/secret_id")).unwrap();
    assert_eq!(login_status(&server, &bundles[0], kept.trim()), 200);
    home.ok(&["cluster", "revoke-node", "gpu", &node_id]);
    assert_ne!(login_status(&server, &bundles[0], kept.trim()), 200);
    let s = status(&home, "gpu");
    assert_eq!(node_row(&s, "")["state"], "revoked", "{s:#}");

    // More nodes continue the names; launch bundles are not revoked by the
    // next one (nodes started from it re-login with it).
    let more = enroll(&home, "gpu", &out.path().join("more"), 2);
    assert!(
        more[0].ends_with("node-4.json") && more[1].ends_with("node-5.json"),
        "{more:?}"
    );
    let launch = |dir: &str| -> String {
        let d = out.path().join(dir);
        let uncounted = [
            "--reusable",
            "--uses",
            "0",
            "--ttl",
            "1h",
            "--cidr",
            "127.0.0.0/8",
        ];
        enroll_gpu(&home, &d, &uncounted);
        bundle_json(&d.join("launch.json"))["secret_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (l1, l2) = (launch("l1"), launch("l2"));
    assert_eq!(login_status(&server, &bundles[0], &l1), 200);
    assert_eq!(login_status(&server, &bundles[0], &l2), 200);
    home.ok(&["cluster", "revoke-node", "gpu", "launch-1"]);
    assert_ne!(login_status(&server, &bundles[0], &l1), 200);
    assert_eq!(login_status(&server, &bundles[0], &l2), 200);
}

/// Issue 19 §8, §15, §18: any node token can write any report of its
/// cluster. A document that is no report is a row of its own; a report
/// that does not verify under the bundle its id names is flagged "forged
/// or foreign" and counts as not converged; what a node can still do is
/// report under its own bundle. Text the store chose reaches no terminal
/// raw (host names, node ids, the manifest's secret names).
#[test]
fn unreadable_and_forged_reports_are_their_own_rows_and_foreign_text_is_escaped() {
    let Some((server, home, _out, bundles)) = published_cluster(2) else {
        return;
    };
    let _agent = start_agent(&bundles[0]);
    let s = wait_converged(&home, "gpu", 1);
    let genuine = node_row(&s, "")["report_id"].as_str().unwrap().to_owned();
    let nodes = "secret/data/rh/alice/clusters/gpu/nodes";
    let put = |id: &str, data: Value| root_put(&server, &format!("{nodes}/{id}"), data);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Not a report.
    put("junk", json!({ "x": "1" }));
    // The genuine report, claiming more than its node applied.
    let mut lie = root_doc(&server, &format!("{nodes}/{genuine}"));
    lie["applied_version"] = json!(99);
    put(&genuine, lie);
    // Node 2 signs a report of its own, under its own bundle: it verifies,
    // and says which bundle wrote it.
    let b2 = bundle_json(&bundles[1]);
    let own = fleet::sign_report(
        fleet::NodeReport {
            node_id: "other-host-000000000000".into(),
            hostname: "host\u{1b}]0;owned\u{7}".into(),
            applied_version: 0,
            reported_at: now,
            last_poll: now,
            poll_interval_secs: 1,
            heartbeat_secs: 300,
            ..Default::default()
        },
        b2["bundle_id"].as_str().unwrap(),
        b2["report_key"].as_str().unwrap(),
    )
    .unwrap();
    put(&own.node_id, serde_json::to_value(&own).unwrap());
    // A report without a bundle id claiming another node id, with escapes.
    put(
        "evil-node",
        json!({ "node_id": "evil\u{1b}[2J\u{1b}]0;owned\u{7}", "hostname": "x",
                "applied_version": 0, "reported_at": now, "last_poll": now,
                "poll_interval_secs": 1, "heartbeat_secs": 300 }),
    );

    let run = home.ok(&["status", "--cluster", "gpu", "--json"]);
    let s: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 4, "{s:#}");
    let junk = node_row(&s, "junk");
    assert_eq!(
        (junk["trust"].as_str(), junk["state"].as_str()),
        (Some("unreadable"), Some("unreadable"))
    );
    let forged = node_row(&s, &genuine);
    assert_eq!(forged["state"], "forged or foreign", "{s:#}");
    let own_row = node_row(&s, "other-host");
    assert_eq!(
        (own_row["trust"].as_str(), own_row["bundle"].as_str()),
        (Some("verified"), Some("node-2"))
    );
    assert_eq!(node_row(&s, "evil-node")["state"], "forged or foreign");
    let run = home.ok(&["status", "--cluster", "gpu"]);
    assert!(
        run.stdout.contains("unreadable") && run.stdout.contains("forged or foreign"),
        "{run:?}"
    );
    assert!(run.stdout.contains("host\\u{1b}]0;owned\\u{7}"), "{run:?}");
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{run:?}"
        );
    }
    run.stderr_has("junk").stderr_has("evil-node");

    // A new publish: the node's next report replaces the lie; the junk and
    // the forged id are named as not converged (they cannot be taken at
    // their word), escaped.
    local::save(home.path(), &file_secret(V2)).unwrap();
    let run = home.run(&["sync", "--cluster", "gpu", "--wait", "20"]);
    assert_eq!(run.code, 3, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        line.contains("junk") && line.contains("evil-node"),
        "{line}"
    );
    assert!(!line.contains(&genuine), "{line}");
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains('\u{1b}'), "{run:?}");
    }

    // A secret name in the manifest the store chose is escaped too.
    let manifest = "secret/data/rh/alice/clusters/gpu/manifest";
    let mut doc = root_doc(&server, manifest);
    doc["secrets"][0]["name"] = json!("x\u{1b}[2J");
    root_put(&server, manifest, doc);
    let run = home.ok(&["status", "--cluster", "gpu"]);
    assert!(run.stdout.contains("x\\u{1b}[2J"), "{run:?}");
    assert!(!run.stdout.contains('\u{1b}'), "{run:?}");
}

/// Issue 19 §4, §5, §7 against real OpenBao and a real agent: a deleted
/// manifest wipes nothing and the owner publishes over it without
/// `--overwrite`; an older manifest put back is refused (status says so)
/// until `--new-epoch`; a manifest whose history is gone needs a new epoch;
/// an item over the cap is refused before anything is written; a secret
/// revoked and published again reaches the node.
#[test]
fn a_deleted_or_rolled_back_manifest_keeps_the_node_as_it_is() {
    let Some((server, home, _out, agent)) = one_pulling_node() else {
        return;
    };
    let manifest = "secret/data/rh/alice/clusters/gpu/manifest";

    // A soft delete of the manifest: the node keeps its files and reports
    // the error; the owner publishes again (no --overwrite).
    let errors = agent.metric("rh_agent_pull_poll_errors_total");
    root(&server, "DELETE", manifest, None, 204);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric("rh_agent_pull_poll_errors_total") < errors + 2.0 {
        assert!(Instant::now() < deadline, "no poll error after the delete");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.token_value().as_deref(), Some(V1));
    let run = home.ok(&["status", "--cluster", "gpu"]);
    run.stderr_has("missing from the store");
    local::save(home.path(), &file_secret(V2)).unwrap();
    home.ok(&["sync", "--cluster", "gpu", "--wait", "20"]);
    assert_eq!(agent.token_value().as_deref(), Some(V2));

    // The first manifest (which carried V1 inline) put back: refused.
    let old = root(&server, "GET", &format!("{manifest}?version=1"), None, 200);
    root_put(&server, manifest, old["data"]["data"].clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        let s = status(&home, "gpu");
        let row = node_row(&s, "");
        if row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("older than applied"))
        {
            break row;
        }
        assert!(Instant::now() < deadline, "not refused: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row["state"], "refused: older than applied", "{row:#}");
    assert_eq!(agent.token_value().as_deref(), Some(V2));
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(table.contains("refused: older than applied"), "{table}");
    // The owner's new epoch is taken.
    let run = home.ok(&test_support::argv(
        "sync --cluster gpu --new-epoch --wait 20 --json",
    ));
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc["not_converged"].is_null(), "{doc:#}");
    assert_eq!(agent.token_value().as_deref(), Some(V2));

    // A manifest garbled by a store writer: the node keeps what it has,
    // status still answers, and the owner publishes over it.
    root_put(&server, manifest, json!({}));
    let run = home.ok(&["status", "--cluster", "gpu"]);
    run.stderr_has("not a manifest");
    let run = home.ok(&["sync", "--cluster", "gpu", "--wait", "20", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc["not_converged"].is_null(), "{doc:#}");
    assert_eq!(agent.token_value().as_deref(), Some(V2));

    // Every version of the manifest destroyed: its epoch is lost, so a
    // publish needs --new-epoch.
    let meta = root(
        &server,
        "GET",
        "secret/metadata/rh/alice/clusters/gpu/manifest",
        None,
        200,
    );
    let versions: Vec<u64> = meta["data"]["versions"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    root(
        &server,
        "POST",
        "secret/destroy/rh/alice/clusters/gpu/manifest",
        Some(json!({ "versions": versions })),
        204,
    );
    local::save(home.path(), &file_secret(V3)).unwrap();
    let run = home.run(&["sync", "--cluster", "gpu"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("--new-epoch");
    home.ok(&["sync", "--cluster", "gpu", "--new-epoch", "--wait", "20"]);
    assert_eq!(agent.token_value().as_deref(), Some(V3));

    // Revoked, then published again: a higher KV version, applied.
    home.ok(&["revoke", "mytool", "--cluster", "gpu"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.token_value().is_some() {
        assert!(Instant::now() < deadline, "not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    home.ok(&test_support::argv(
        "sync --cluster gpu --secret mytool --wait 20",
    ));
    assert_eq!(agent.token_value().as_deref(), Some(V3));

    // An item no node could read is not published: nothing is written.
    let mut big = file_secret(V1);
    big.name = "bigtool".into();
    big.path = Some("~/.config/mytool/big.json".into());
    big.values = values_from([("token", "b".repeat(fleet::MAX_ITEM_BYTES + 1).as_str())]);
    local::save(home.path(), &big).unwrap();
    let run = home.run(&["sync", "--cluster", "gpu", "--secret", "bigtool"]);
    assert_eq!(run.code, 1, "{run:?}");
    run.stderr_has("bigtool").stderr_has("nothing was written");
    root(
        &server,
        "GET",
        "secret/data/rh/alice/clusters/gpu/secrets/bigtool",
        None,
        404,
    );

    // --new-epoch is for pull clusters.
    home.ok(&["cluster", "add", "pushed", "--host", "127.0.0.1"]);
    assert_eq!(
        home.run(&["sync", "--cluster", "pushed", "--new-epoch"])
            .code,
        2
    );
}

/// A secret with `provider` whose values are the keys of a JSON object.
fn json_secret(name: &str, provider: &str, values: Value) -> Secret {
    let Value::Object(map) = values else {
        panic!("values must be an object")
    };
    let mut s = Secret::base(
        name,
        map.into_iter()
            .map(|(k, v)| (k, common::SecretValue::new(v)))
            .collect(),
    );
    s.provider = Some(provider.into());
    s
}

/// Issue 19 items 1 and 2 on a node: whoever can write the cluster's store
/// prefix publishes a kubeconfig whose user runs `/bin/sh` on every
/// `kubectl`, and a var that makes ssh run a program. The node refuses
/// both (its report names the field and the var), writes nothing of them,
/// applies the rest (a data-only kubeconfig, without switching the node's
/// context; a var its owner allows), and keeps its own kubeconfig's bytes.
#[test]
fn a_store_writer_cannot_make_a_node_run_a_program() {
    let Some((_server, home)) = setup() else {
        return;
    };
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("bundles"), 1);
    let agent = start_agent(&bundles[0]);
    // The node owner's kubeconfig, without a current-context.
    let mine = "apiVersion: v1\nkind: Config\nclusters:\n- name: mine\n  cluster:\n    server: https://mine:6443\n";
    std::fs::create_dir_all(agent.file(".kube")).unwrap();
    std::fs::write(agent.file(".kube/config"), mine).unwrap();

    let exec = json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                               "command": "/bin/sh", "args": ["-c", "touch ~/pwned"]}});
    let evil_kube = json_secret("kube-evil", "kubernetes", kubeconfig("evil", exec));
    let mut askpass = json_secret("askpass", "myapi", json!({"k": "/tmp/askpass"}));
    askpass.env_vars = Some(BTreeMap::from([("k".into(), "SSH_ASKPASS".into())]));
    local::save(home.path(), &evil_kube).unwrap();
    local::save(home.path(), &askpass).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let s = status(&home, "gpu");
        let error = s["nodes"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if error.contains("kube-evil") && error.contains("askpass") {
            break error;
        }
        assert!(Instant::now() < deadline, "no refusal reported: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(error.contains("users[0].user.exec"), "{error}");
    assert!(
        error.contains("SSH_ASKPASS") && error.contains("allow_vars"),
        "{error}"
    );
    assert!(!error.contains("/bin/sh"), "{error}");
    assert_eq!(
        std::fs::read_to_string(agent.file(".kube/config")).unwrap(),
        mine
    );
    assert_eq!(agent.env_var("SSH_ASKPASS"), None);
    assert!(!agent.file("pwned").exists());

    // Data is applied: a kubeconfig without a program (its current-context
    // not taken), a var the node's owner allows.
    let ok_kube = json_secret(
        "kube-ok",
        "kubernetes",
        kubeconfig("ok", json!({"token": V1})),
    );
    local::save(home.path(), &ok_kube).unwrap();
    local::save(home.path(), &env_secret()).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.env_var("MYAPI_KEY").is_none() {
        assert!(Instant::now() < deadline, "MYAPI_KEY not applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
    let text = std::fs::read_to_string(agent.file(".kube/config")).unwrap();
    assert!(
        text.contains("https://ok.example:6443") && text.contains("mine"),
        "{text}"
    );
    assert!(!text.contains("current-context"), "{text}");
    assert!(!text.contains("evil") && !text.contains("exec"), "{text}");
    assert_eq!(mode(&agent.file(".kube/config")), 0o600);
    assert_eq!(agent.env_var("SSH_ASKPASS"), None);
}
