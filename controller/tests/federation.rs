//! Workload identity of a pull cluster against real protocol peers: a real
//! OpenBao dev server signs the tokens (`controller cluster federate`), a real
//! pulling agent keeps them in files and wires the SDKs, and standard
//! libraries do the rest (tests/data/federation/peers.py): PyJWT verifies
//! every token against the store's published JWKS; boto3 (in an env process)
//! and the AWS CLI (in a plain shell) exchange the AWS token at moto's STS
//! (AssumeRoleWithWebIdentity); google-auth's `identity_pool` exchanges the
//! GCP token at a local STS stand-in that verifies it against the JWKS;
//! azure-identity's WorkloadIdentityCredential at a local Entra stand-in
//! (https, `AZURE_AUTHORITY_HOST`) that verifies it the same way; and the
//! discovery documents for static hosting. The refresh under a short TTL and
//! a store outage are in `federation_refresh.rs`, what a node of another
//! cluster or a store writer can do in `federation_isolation.rs`. Skipped
//! when `bao` or the Python peers are missing (a failure when `CI` is set).

mod federation_common;
#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use federation_common::*;
use vault_common::{free_port, mode};

#[test]
fn nodes_exchange_their_identity_tokens_with_unmodified_sdks() {
    let Some((server, home, out, py)) = setup(&["gpu"], 1) else {
        return;
    };
    let fed = federate(
        &home,
        &[
            "gpu",
            "--aws-role-arn",
            ROLE_ARN,
            "--aws-profile",
            "gpu",
            "--gcp-audience",
            GCP_AUD,
            "--gcp-service-account",
            GCP_SA,
            "--azure-client-id",
            AZ_CLIENT,
            "--azure-tenant-id",
            AZ_TENANT,
        ],
    );
    assert_eq!(fed["key"]["algorithm"], "RS256", "{fed:#}"); // Azure: RSA
    let subject = fed["subject"].as_str().unwrap().to_owned();
    assert_eq!(
        fed["aws"]["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v.as_str() == Some(&subject))
            .count(),
        1,
        "{fed:#}"
    );
    let work = tempfile::tempdir().unwrap();
    let (_moto, sts) = start_moto(&py, work.path());
    let (gcp_port, az_port) = (free_port(), free_port());
    let jwks = jwks_url(&server);
    let issuer = fed["issuer"].as_str().unwrap().to_owned();
    // The peers.py stand-in `kind` on `port`, checking tokens against the
    // store's JWKS and issuer, its log in `<name>.log` (stderr `<name>.err`).
    let stand_in = |name: &str, kind: &str, port: u16, extra: &[&str]| {
        let log = work.path().join(format!("{name}.log"));
        let (port, log_arg) = (port.to_string(), log.to_str().unwrap().to_owned());
        let mut args = vec![kind, "--port", &port, "--jwks", &jwks, "--issuer", &issuer];
        args.extend(extra);
        args.extend(["--log", &log_arg]);
        let err = work.path().join(format!("{name}.err"));
        (start_peer(&py, &args, &err), log)
    };
    let (_gcp, gcp_log) = stand_in("gcp", "gcp-sts", gcp_port, &[]);
    let cert = work.path().join("azure.pem");
    let (_azure, az_log) = stand_in(
        "azure",
        "azure-authority",
        az_port,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--tenant",
            AZ_TENANT,
            "--client",
            AZ_CLIENT,
            "--sub",
            &subject,
        ],
    );
    let gcp_url = format!("http://127.0.0.1:{gcp_port}");
    // The SDKs' endpoints: moto for AWS STS, the stand-ins for Google and
    // Entra; in the agent's environment, so its env processes inherit them.
    let env = [
        ("AWS_ENDPOINT_URL_STS", sts.clone()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        (
            "AZURE_AUTHORITY_HOST",
            format!("https://127.0.0.1:{az_port}"),
        ),
        ("REQUESTS_CA_BUNDLE", cert.display().to_string()),
        ("GOOGLE_CLOUD_PROJECT", "proj-1".to_owned()),
    ];
    let node = Node::start(
        &out.path().join("gpu/node-1.json"),
        &format!("identity:\n  gcp_sts_url: {gcp_url}/v1/token\n  gcp_iam_url: {gcp_url}\n"),
        &env,
    );
    node.wait_files(&["aws.jwt", "gcp.jwt", "azure.jwt", "gcp.json"]);

    // Every token: 0600 in a 0700 dir, signed by the store's published key,
    // iss/aud/sub/exp as federate printed them, the cluster named.
    assert_eq!(mode(&node.path(".rh/agent/identity")), 0o700);
    for (file, aud) in [
        ("aws.jwt", "sts.amazonaws.com".to_owned()),
        ("gcp.jwt", format!("https:{GCP_AUD}")),
        ("azure.jwt", "api://AzureADTokenExchange".to_owned()),
    ] {
        assert_eq!(mode(&node.identity(file)), 0o600, "{file}");
        let claims = verify(&py, &node.identity(file), &jwks, &fed, &aud, "gpu");
        assert_eq!(claims["_alg"], "RS256");
        assert_eq!(claims["rh_prefix"], "rh/alice");
        let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(ttl, 900, "{claims}");
    }

    // AWS in an env process: boto3's credentials come from
    // AssumeRoleWithWebIdentity (through the env vars: the wired profile is
    // not the default one), and the caller is the role.
    let (_, text) = node.run(&[py.to_str().unwrap(), PEERS, "aws-check"], 60);
    let aws: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(aws["method"], "assume-role-with-web-identity", "{aws}");
    let arn = aws["arn"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/gpu-nodes/rh-"),
        "{arn}"
    );

    // AWS in a plain shell on the node: the AWS CLI reads the profile of
    // ~/.aws/config.
    let config = std::fs::read_to_string(node.path(".aws/config")).unwrap();
    assert!(
        config.starts_with(&format!("[profile gpu]\nrole_arn = {ROLE_ARN}\n")),
        "{config}"
    );
    assert_eq!(mode(&node.path(".aws/config")), 0o600);
    let shell = test_support::run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' -m awscli sts get-caller-identity --output json",
                py.display()
            ))
            .env_clear()
            .env("HOME", node.home.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL_STS", &sts)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_PROFILE", "gpu"),
    );
    let caller: Value = shell.json();
    assert_eq!(caller["Arn"].as_str(), Some(arn), "{caller}");

    // GCP: google-auth's ADC is the external_account file; it exchanged the
    // token at the STS stand-in (which verified it), impersonated the
    // service account, and uses what it got.
    let gcp_config: Value =
        serde_json::from_str(&std::fs::read_to_string(node.identity("gcp.json")).unwrap()).unwrap();
    assert_eq!(
        gcp_config["credential_source"],
        json!({ "file": node.identity("gcp.jwt").display().to_string(), "format": { "type": "text" } })
    );
    let (_, text) = node.run(
        &[
            py.to_str().unwrap(),
            PEERS,
            "gcp-check",
            "--resource",
            &format!("{gcp_url}/resource"),
        ],
        60,
    );
    let gcp: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        gcp["type"], "google.auth.identity_pool.Credentials",
        "{gcp}"
    );
    assert_eq!(gcp["resource"], 200, "{gcp}");
    let seen = log_lines(&gcp_log);
    let sts_entry = seen.iter().find(|e| e["endpoint"] == "sts").unwrap();
    assert_eq!(sts_entry["ok"], true, "{seen:?}");
    assert_eq!(sts_entry["sub"], subject.as_str());
    let sa_entry = seen
        .iter()
        .find(|e| e["endpoint"] == "impersonate")
        .unwrap();
    assert_eq!(sa_entry["service_account"], GCP_SA);
    assert_eq!(sa_entry["issued"], gcp["token"], "{seen:?}");

    // Azure: WorkloadIdentityCredential from the env vars, at the stand-in.
    let (_, text) = node.run(&[py.to_str().unwrap(), PEERS, "azure-check"], 60);
    let az: Value = serde_json::from_str(&text).unwrap();
    let seen = log_lines(&az_log);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["ok"], true, "{seen:?}");
    assert_eq!(seen[0]["issued"], az["token"]);
    assert_eq!(seen[0]["cluster"], "gpu");

    // Status: the node's identity (expiry, last refresh), no token anywhere.
    let status: Value =
        serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout).unwrap();
    let identity = &status["nodes"][0]["identity"];
    assert_eq!(
        identity["clouds"],
        json!(["aws", "gcp", "azure"]),
        "{status:#}"
    );
    assert!(identity["expires_at"].as_u64().unwrap() > identity["refreshed_at"].as_u64().unwrap());
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(table.contains("aws,gcp,azure"), "{table}");
    let (_, metrics) = node.request("GET", "/metrics", None);
    assert!(node.metric("rh_agent_identity_refreshes_total") >= 1.0);
    assert_no_token(
        &node,
        &[
            ("the agent log", node.log()),
            ("status --json", status.to_string()),
            ("status", table),
            ("metrics", metrics),
        ],
    );
}

#[test]
fn discovery_documents_for_static_hosting_verify_the_node_tokens() {
    let Some((_server, home, out, py)) = setup(&["gpu"], 1) else {
        return;
    };
    let port = free_port();
    let issuer_origin = format!("http://127.0.0.1:{port}");
    let site = tempfile::tempdir().unwrap();
    let fed = federate(
        &home,
        &[
            "gpu",
            "--aws-role-arn",
            ROLE_ARN,
            "--issuer",
            &issuer_origin,
            "--discovery-out",
            site.path().to_str().unwrap(),
        ],
    );
    let issuer = format!("{issuer_origin}/v1/identity/oidc");
    assert_eq!(fed["issuer"], issuer.as_str());
    let well_known = site.path().join("v1/identity/oidc/.well-known");
    let discovery: Value = serde_json::from_str(
        &std::fs::read_to_string(well_known.join("openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/.well-known/keys"));
    for f in ["openid-configuration", "keys"] {
        assert_eq!(mode(&well_known.join(f)), 0o644);
    }
    // Served as static files, the documents verify a node's token.
    let _site = Proc(
        Command::new(&py)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the static site", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let node = Node::start(&out.path().join("gpu/node-1.json"), "", &[]);
    node.wait_files(&["aws.jwt"]);
    let claims = verify(
        &py,
        &node.identity("aws.jwt"),
        &format!("{issuer}/.well-known/keys"),
        &fed,
        "sts.amazonaws.com",
        "gpu",
    );
    assert_eq!(claims["iss"], issuer.as_str());
}
