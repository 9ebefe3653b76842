//! Kubernetes users whose credential comes from an `exec` plugin (EKS
//! `aws eks get-token`, GKE `gke-gcloud-auth-plugin`, ...): the plugin runs
//! here, on the user's machine, with `KUBERNETES_EXEC_INFO` set as kubectl
//! sets it, and the node gets the token it printed in place of the `exec`
//! block: never a reference to a binary the node lacks. The token's
//! `expirationTimestamp` is the secret's expiry (`sync --keep-fresh` runs
//! the plugin again before half of it is gone). A plugin that answers with
//! a client certificate, fails or takes over 60 s fails the secret, named
//! with the plugin's exit status only (its output may hold a credential).

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use common::session::{now_secs, parse_rfc3339};
use common::{Secret, SecretValue};
use serde_json::{json, Value};

/// Longest a plugin may run.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `secret` is a kubeconfig with at least one `exec` user.
pub fn has_exec(secret: &Secret) -> bool {
    secret.provider.as_deref() == Some("kubernetes")
        && secret
            .values
            .get("users")
            .and_then(|u| u.expose_secret().as_array())
            .is_some_and(|users| users.iter().any(|u| u.pointer("/user/exec").is_some()))
}

/// Whether kubeconfig `secret` is this machine's own: the file at its path
/// (under `home`) holds the same `users` (so every plugin it names is one
/// the user's kubectl runs already).
pub fn from_own_file(home: &std::path::Path, secret: &Secret) -> bool {
    let Some(path) = &secret.path else {
        return false;
    };
    let Ok(file) = common::fsutil::explicit(home, path) else {
        return false;
    };
    let Ok(Some(text)) = file.read() else {
        return false;
    };
    let provider = common::providers::for_secret(Some("kubernetes"));
    let parsed = provider.parse(&[common::providers::SourceFile { path, text: &text }]);
    matches!(parsed, Ok(values) if values.get("users") == secret.values.get("users"))
}

/// Run one plugin: its token and expiry.
async fn run_plugin(user: &str, exec: &Value) -> Result<(String, Option<i64>)> {
    let command = exec
        .get("command")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("kube user {user}: exec has no command"))?;
    let api = exec
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("client.authentication.k8s.io/v1beta1");
    let mut cmd = tokio::process::Command::new(command);
    if let Some(args) = exec.get("args").and_then(Value::as_array) {
        cmd.args(args.iter().filter_map(Value::as_str));
    }
    for e in exec
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(k), Some(v)) = (
            e.get("name").and_then(Value::as_str),
            e.get("value").and_then(Value::as_str),
        ) {
            cmd.env(k, v);
        }
    }
    let info = json!({"apiVersion": api, "kind": "ExecCredential", "spec": {"interactive": false}});
    cmd.env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(PLUGIN_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("kube user {user}: exec plugin {command} took over 60 s"))?
        .with_context(|| format!("kube user {user}: run exec plugin {command}"))?;
    if !out.status.success() {
        bail!(
            "kube user {user}: exec plugin {command} failed ({})",
            out.status
        );
    }
    let doc: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        anyhow!("kube user {user}: exec plugin {command} printed no ExecCredential")
    })?;
    let doc = SecretValue::new(doc);
    let status = doc
        .expose_secret()
        .get("status")
        .ok_or_else(|| anyhow!("kube user {user}: the ExecCredential has no status"))?;
    let Some(token) = status.get("token").and_then(Value::as_str) else {
        bail!(
            "kube user {user}: exec plugin {command} gave a client certificate, not a token: \
             not supported for nodes"
        );
    };
    let expiry = status
        .get("expirationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    Ok((token.to_owned(), expiry))
}

/// Resolve every `exec` user of kubeconfig `secret` in place: the token its
/// plugin prints replaces the `exec` block. The earliest expiry, if any
/// plugin gave one; `(minted_at, expires_at)`.
pub async fn resolve(secret: &mut Secret) -> Result<Option<(i64, i64)>> {
    let Some(users) = secret.values.get("users") else {
        return Ok(None);
    };
    let mut users = users.expose_secret().clone();
    let minted_at = now_secs();
    let mut earliest: Option<i64> = None;
    for entry in users.as_array_mut().into_iter().flatten() {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let Some(user) = entry.get_mut("user").and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(exec) = user.remove("exec") else {
            continue;
        };
        let (token, expiry) = run_plugin(&name, &exec).await?;
        user.insert("token".into(), Value::String(token));
        if let Some(e) = expiry {
            earliest = Some(earliest.map_or(e, |x| x.min(e)));
        }
    }
    secret
        .values
        .insert("users".into(), SecretValue::new(users));
    Ok(earliest.map(|e| (minted_at, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_plugin_runs_here_and_its_token_replaces_exec() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("get-token");
        std::fs::write(
            &plugin,
            "#!/bin/sh\ncase \"$KUBERNETES_EXEC_INFO\" in *ExecCredential*) ;; *) exit 3;; esac\n\
             printf '{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"k8s-minted-%s\",\"expirationTimestamp\":\"2030-01-01T00:00:00Z\"}}' \"$1\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut secret = Secret::base("kube", Default::default());
        secret.provider = Some("kubernetes".into());
        secret.values.insert(
            "users".into(),
            SecretValue::new(json!([
                {"name": "eks", "user": {"exec": {"command": plugin.to_str().unwrap(), "args": ["c1"],
                    "apiVersion": "client.authentication.k8s.io/v1beta1"}}},
                {"name": "static", "user": {"token": "kept"}}
            ])),
        );
        assert!(has_exec(&secret));
        let (_, expires) = resolve(&mut secret).await.unwrap().unwrap();
        assert_eq!(expires, parse_rfc3339("2030-01-01T00:00:00Z").unwrap());
        assert!(!has_exec(&secret));
        let users = secret.values["users"].expose_secret().clone();
        assert_eq!(users[0]["user"], json!({"token": "k8s-minted-c1"}));
        assert_eq!(users[1]["user"], json!({"token": "kept"}));
        // A failing plugin fails the secret, without its output.
        secret.values.insert(
            "users".into(),
            SecretValue::new(json!([{"name": "bad", "user": {"exec": {"command": "false"}}}])),
        );
        let err = resolve(&mut secret).await.unwrap_err().to_string();
        assert!(
            err.contains("kube user bad") && err.contains("failed"),
            "{err}"
        );
    }
}
