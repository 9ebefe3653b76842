//! Workload identity of a pull cluster: the tokens a real pulling agent
//! keeps are refreshed across several short TTLs, still verified by PyJWT
//! against the real OpenBao dev server's JWKS, and a store outage breaks
//! nothing. Skipped when `bao` or the Python peers are missing (a failure
//! when `CI` is set).

mod federation_common;
#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use federation_common::*;
use vault_common::{raw, DevServer};

/// The JWKS the store publishes now, saved to a file (for checks while the
/// store is away).
fn save_jwks(server: &DevServer, path: &Path) {
    let (status, keys) = raw(
        &server.url,
        "",
        "GET",
        "identity/oidc/.well-known/keys",
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    std::fs::write(path, keys.to_string()).unwrap();
}

#[test]
fn tokens_refresh_across_several_ttls_and_a_store_outage_breaks_nothing() {
    let Some((server, home, out, py)) = setup(&["gpu"], 1) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (_moto, sts) = start_moto(&py, work.path());
    let env = [
        ("AWS_ENDPOINT_URL_STS", sts),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ];
    // The node boots before the cluster is federated (its first poll finds
    // no federation); `federate` marks the manifest, so the node's tokens
    // come on its next poll (1 s here), not at its next recheck of an
    // unfederated cluster (10 minutes, ±50%), well past `wait_files`' 30 s.
    let node = Node::start(&out.path().join("gpu/node-1.json"), "", &env);
    let fed = federate(
        &home,
        &["gpu", "--aws-role-arn", ROLE_ARN, "--token-ttl", "1m"],
    );
    assert_eq!(fed["key"]["algorithm"], "ES256", "{fed:#}");
    node.wait_files(&["aws.jwt"]);

    // A client in an env process, a fresh boto3 session every second for
    // 70 s with a 60 s token (refreshed at 30 s): three tokens, no failure.
    let jwks = jwks_url(&server);
    let (_, text) = node.run(
        &[
            py.to_str().unwrap(),
            PEERS,
            "aws-loop",
            "--seconds",
            "70",
            "--jwks",
            &jwks,
            "--issuer",
            fed["issuer"].as_str().unwrap(),
        ],
        150,
    );
    let summary: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["failures"], 0, "{summary}");
    assert!(summary["calls"].as_u64().unwrap() >= 30, "{summary}");
    assert!(summary["tokens"].as_u64().unwrap() >= 3, "{summary}");

    // The store hangs (SIGSTOP): the next refresh fails and the token file
    // keeps the last good token; once the store is back, status shows the
    // error and the node refreshes again.
    let keys = work.path().join("keys.json");
    save_jwks(&server, &keys);
    let token = node.identity("aws.jwt");
    let errors = node.metric("rh_agent_identity_errors_total");
    server.pause();
    let mut seen = std::collections::BTreeSet::new();
    wait_for("a failed refresh", Duration::from_secs(120), || {
        seen.insert(std::fs::read_to_string(&token).unwrap());
        (node.metric("rh_agent_identity_errors_total") > errors).then_some(())
    });
    seen.insert(std::fs::read_to_string(&token).unwrap());
    server.resume();
    let mut claims = Vec::new();
    for (i, text) in seen.iter().enumerate() {
        let file = work.path().join(format!("seen-{i}.jwt"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(&py)
            .arg(PEERS)
            .arg("verify")
            .arg(&file)
            .args([
                "--jwks",
                keys.to_str().unwrap(),
                "--aud",
                "sts.amazonaws.com",
            ])
            .args(["--issuer", fed["issuer"].as_str().unwrap(), "--no-exp"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "a broken token file during the outage"
        );
        claims.push(out.stdout);
    }
    assert_eq!(
        claims.len(),
        1,
        "the token file changed while the store was away"
    );
    let reported = wait_for("the error in status", Duration::from_secs(90), || {
        let s: Value =
            serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout)
                .unwrap();
        let identity = s["nodes"][0]["identity"].clone();
        identity["last_error"].is_string().then_some(identity)
    });
    let error = reported["last_error"].as_str().unwrap();
    assert!(
        error.contains("timed out") || error.contains("no store node"),
        "{error}"
    );
    // And it refreshes again: a token issued after the error verifies now.
    wait_for(
        "a refresh after the outage",
        Duration::from_secs(90),
        || {
            let s: Value =
                serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout)
                    .unwrap();
            let i = &s["nodes"][0]["identity"];
            (i["refreshed_at"].as_u64()? > i["last_error_at"].as_u64()?).then_some(())
        },
    );
    verify(&py, &token, &jwks, &fed, "sts.amazonaws.com", "gpu");
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(table.contains("last error"), "{table}");
}
