//! Value drift in `controller status` on the `local` cluster (the agent on
//! this machine, started by the controller, HOME a temp dir): after a sync
//! every node x secret is `in sync`; changing the local copy (a credential
//! file, or a saved secret replaced with `--force`) makes it `differs from
//! local`; deleting the saved secret makes it `not on this machine`; a
//! resync brings it back in sync. The fingerprints are those of
//! `common::fingerprint` under `~/.rh/clusters/local.key`, and no fixture
//! value ever appears in any output.

mod common;

use std::fs;

use ::common::fingerprint::{value_fingerprint, FingerprintKey};
use ::common::SecretValue;
use serde_json::Value;

use common::{mode, Fixtures, Run, StopAgents, World};

const ROTATED_HF: &str = "hf_rotatedfixturetoken000000002";
const ROTATED_OPENAI: &str = "sk-fixture-openai-rotated-0000000002";

fn all_values() -> Vec<&'static str> {
    let mut v = Fixtures::all();
    v.extend([ROTATED_HF, ROTATED_OPENAI]);
    v
}

/// `nodes[0].drift` of `status --cluster local --json`.
fn drift_of(r: &Run) -> Value {
    r.no_values(&all_values());
    let json = r.json();
    assert_eq!(json["nodes"][0]["ok"], true, "{json:#}");
    json["nodes"][0]["drift"].clone()
}

/// The fingerprint `status --json` shows for `var` of `secret`.
fn var_fingerprint(json: &Value, secret: &str, var: &str) -> String {
    let secret = test_support::entry(&json["nodes"][0]["status"]["secrets"], "name", secret);
    test_support::entry(&secret["vars"], "var", var)["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn status_tells_in_sync_differs_and_no_local_copy_without_values() {
    let w = World::bare();
    Fixtures::write(&w.home);
    let _stop = StopAgents(vec![w.home.clone()]);
    let mut envs = Fixtures::env();
    envs.push(("RH_LOCAL_AGENT_LISTEN", "127.0.0.1:0"));
    envs.push(("RH_SSH_CONFIG", "/nonexistent"));
    let ctl = |args: &[&str]| w.controller_with(args, &envs);
    let value_arg = format!("token={}", Fixtures::VAR_VALUE);
    ctl(&[
        "secret",
        "create",
        "plain",
        "--value",
        &value_arg,
        "--env-var",
        "token=PLAIN_TOKEN",
    ])
    .ok();
    ctl(&["sync", "--cluster", "local"])
        .ok()
        .no_values(&all_values());

    // Right after a sync: everything in sync, under the cluster's own key.
    let r = ctl(&["status", "--cluster", "local", "--json"]).ok();
    let drift = drift_of(&r);
    for name in ["aws", "huggingface", "openai", "plain"] {
        assert_eq!(drift[name], "in_sync", "{name}: {drift:#}");
    }
    let key_path = w.home.join(".rh/clusters/local.key");
    assert_eq!(mode(&key_path), 0o600);
    let key_hex = fs::read_to_string(&key_path).unwrap();
    let key = FingerprintKey::from_hex(key_hex.trim()).unwrap();
    assert_eq!(
        var_fingerprint(&r.json(), "openai", "OPENAI_API_KEY"),
        value_fingerprint(key.as_bytes(), &SecretValue::from(Fixtures::OPENAI_KEY))
    );
    assert!(!r.stdout.contains(key_hex.trim()) && !r.stderr.contains(key_hex.trim()));
    let r = ctl(&["status", "--cluster", "local"]).ok();
    r.no_values(&all_values());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("openai") && l.contains("in sync")),
        "{}",
        r.show()
    );
    assert!(!r.stdout.contains("differs from local"), "{}", r.show());

    // The local copy changes: a rotated credential file, a replaced saved secret.
    fs::write(w.home.join(".cache/huggingface/token"), ROTATED_HF).unwrap();
    let value_arg = format!("api_key={ROTATED_OPENAI}");
    ctl(&[
        "secret",
        "create",
        "openai",
        "--provider",
        "openai",
        "--value",
        &value_arg,
        "--force",
    ])
    .ok();
    ctl(&["secret", "delete", "plain"]).ok();
    let r = ctl(&["status", "--cluster", "local", "--json"]).code(0);
    let drift = drift_of(&r);
    assert_eq!(drift["huggingface"], "differs", "{drift:#}");
    assert_eq!(drift["openai"], "differs", "{drift:#}");
    assert_eq!(drift["aws"], "in_sync", "{drift:#}");
    assert_eq!(drift["plain"], "no_local_copy", "{drift:#}");
    let json = r.json();
    let flagged: Vec<&Value> = json["drift"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["differs_from_local"] == serde_json::json!(["local"]))
        .map(|d| &d["secret"])
        .collect();
    assert_eq!(flagged, ["huggingface", "openai"], "{json:#}");
    let r = ctl(&["status", "--cluster", "local"]).code(0);
    r.no_values(&all_values());
    let line = |secret: &str, word: &str| {
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(secret) && l.contains(word))
    };
    assert!(line("openai", "differs from local"), "{}", r.show());
    assert!(line("huggingface", "differs from local"), "{}", r.show());
    assert!(line("aws", "in sync"), "{}", r.show());
    assert!(line("plain", "not on this machine"), "{}", r.show());
    r.stderr_has("secret openai differs from the local copy on local");

    // A resync with --overwrite brings the node back in sync.
    ctl(&["sync", "--cluster", "local", "--overwrite"])
        .ok()
        .no_values(&all_values());
    let drift = drift_of(&ctl(&["status", "--cluster", "local", "--json"]).ok());
    assert_eq!(drift["huggingface"], "in_sync", "{drift:#}");
    assert_eq!(drift["openai"], "in_sync", "{drift:#}");
    assert_eq!(drift["plain"], "no_local_copy", "{drift:#}");
}
