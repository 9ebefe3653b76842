//! `controller status --cluster NAME`: what each node holds, from
//! `GET /v1/status?key=HEX`: secret names, file paths, env names and var
//! names, and keyed fingerprints; never values.
//!
//! The key is the cluster's own fingerprint key (`~/.rh/clusters/NAME.key`,
//! see [`crate::clusters::fingerprint_key`]), so every node fingerprints
//! under the same key and this machine can fingerprint its local copy of
//! each secret (saved, else detected) with the same canonical encoding
//! (`common::fingerprint`). Each node x secret is then `in sync` (the node
//! holds the local values), `differs from local` (stale or changed there),
//! `not on this machine` (no local copy to compare) or `unknown` (an agent
//! too old to take the key). Secrets that nodes hold with different values,
//! install differently (other files, vars or keys), or lack, are flagged.
//! Drift is information: the exit code only counts nodes that failed to
//! answer. Nothing here prints, logs or returns a value or the key.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use common::apply::secret_env_vars;
use common::fingerprint::{value_fingerprint, values_fingerprint, FingerprintKey};
use common::wire::{InstalledSecret, KeyedBy, StatusResponse};
use common::Secret;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::clusters;
use crate::local_secrets::LocalSecrets;
use crate::mode::Mode;
use crate::output::{print_json, Table};
use crate::remote::exit_code;
use crate::Context;

#[derive(Debug, Serialize)]
struct NodeStatus {
    node: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusResponse>,
    /// Secret name -> how this node's copy compares with this machine's
    /// (present when the node answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<PerSecret>,
}

/// How a node's copy of a secret (or one file or var of it) compares with
/// this machine's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum LocalDrift {
    /// Same values as the local copy.
    InSync,
    /// No local copy of that secret (not saved, not detected, no values).
    NoLocalCopy,
    /// The agent does not fingerprint under a caller's key (too old).
    Unknown,
    /// Other values than the local copy: stale or changed on the node.
    Differs,
}

impl LocalDrift {
    /// The words shown in the table.
    fn word(self) -> &'static str {
        match self {
            LocalDrift::InSync => "in sync",
            LocalDrift::Differs => "differs from local",
            LocalDrift::NoLocalCopy => "not on this machine",
            LocalDrift::Unknown => "unknown (agent too old)",
        }
    }
}

/// Fingerprints of this machine's copy of one secret, under the cluster key.
struct LocalPrints {
    /// Of the values a secret writes into its files.
    files: String,
    /// Env var name -> fingerprint of the value it gets.
    vars: BTreeMap<String, String>,
}

impl LocalPrints {
    fn of(key: &FingerprintKey, secret: &Secret) -> Self {
        Self {
            files: values_fingerprint(key.as_bytes(), &secret.values),
            vars: secret_env_vars(secret)
                .iter()
                .map(|(var, value)| (var.clone(), value_fingerprint(key.as_bytes(), value)))
                .collect(),
        }
    }
}

/// This machine's copy of secret `name`: saved, else detected, else (for
/// `env.E`) env E's plain vars; `None` when there is none or it has no values.
fn local_secret(pool: &LocalSecrets, ctx: &Context, name: &str) -> Option<Secret> {
    let found = pool.get(name).cloned().or_else(|| {
        // `controller env sync` records an env's plain vars as `env.E`.
        let env = name.strip_prefix("env.")?;
        let def = crate::envs::load(&ctx.home, env).ok()?;
        let s = crate::envs::vars_secret(&def);
        (s.name == name).then_some(s)
    })?;
    (!found.values.is_empty()).then_some(found)
}

/// One place a secret is installed on a node (a file path or `env: VAR`),
/// its fingerprint and how it compares with the local copy.
struct Entry {
    place: String,
    fingerprint: String,
    drift: LocalDrift,
}

/// A node's copy of a secret, entry by entry.
fn entries(s: &InstalledSecret, keyed_by: KeyedBy, local: Option<&LocalPrints>) -> Vec<Entry> {
    let judge = |fp: &str, want: Option<&String>| match (keyed_by, local) {
        (KeyedBy::Node, _) => LocalDrift::Unknown,
        (KeyedBy::Request, None) => LocalDrift::NoLocalCopy,
        (KeyedBy::Request, Some(_)) if !fp.is_empty() && want.is_some_and(|w| w == fp) => {
            LocalDrift::InSync
        }
        (KeyedBy::Request, Some(_)) => LocalDrift::Differs,
    };
    let mut out: Vec<Entry> = s
        .files
        .iter()
        .map(|f| Entry {
            place: f.path.clone(),
            fingerprint: f.fingerprint.clone(),
            drift: judge(&f.fingerprint, local.map(|l| &l.files)),
        })
        .collect();
    out.extend(s.vars.iter().map(|v| Entry {
        place: format!("{}: {}", v.env, v.var),
        fingerprint: v.fingerprint.clone(),
        drift: judge(&v.fingerprint, local.and_then(|l| l.vars.get(&v.var))),
    }));
    out
}

/// The drift of a whole secret: the worst of its entries.
fn overall(entries: &[Entry], keyed_by: KeyedBy, has_local: bool) -> LocalDrift {
    entries
        .iter()
        .map(|e| e.drift)
        .max()
        .unwrap_or(match (keyed_by, has_local) {
            (KeyedBy::Node, _) => LocalDrift::Unknown,
            (_, false) => LocalDrift::NoLocalCopy,
            (_, true) => LocalDrift::InSync,
        })
}

/// A secret that is not the same everywhere.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Drift {
    secret: String,
    /// Installed differently (other files, keys or vars) on the nodes that hold it.
    differs: bool,
    /// Nodes that answered but do not hold it.
    missing_on: Vec<String>,
    /// Nodes hold different values of it (comparable fingerprints only).
    values_differ: bool,
    /// Groups of nodes holding the same values, when `values_differ`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    value_groups: Vec<Vec<String>>,
    /// Nodes whose values differ from this machine's copy.
    differs_from_local: Vec<String>,
}

/// Where a secret is installed on one node: `(path, keys)` of its files and
/// `(env:var, "")` of its vars. Fingerprints are left out.
fn footprint(s: &InstalledSecret) -> Footprint {
    s.files
        .iter()
        .map(|f| (f.path.clone(), f.keys.join(",")))
        .chain(
            s.vars
                .iter()
                .map(|v| (format!("{}:{}", v.env, v.var), String::new())),
        )
        .collect()
}

/// Where a secret is installed on one node.
type Footprint = BTreeSet<(String, String)>;

/// Place -> fingerprint of a node's copy (comparable across nodes only
/// under a shared key).
fn values_of(s: &InstalledSecret) -> BTreeMap<String, String> {
    s.files
        .iter()
        .map(|f| (f.path.clone(), f.fingerprint.clone()))
        .chain(
            s.vars
                .iter()
                .map(|v| (format!("{}:{}", v.env, v.var), v.fingerprint.clone())),
        )
        .collect()
}

/// Secret name -> how a node's copy compares with this machine's.
type PerSecret = BTreeMap<String, LocalDrift>;

fn drift(nodes: &[NodeStatus]) -> Vec<Drift> {
    let answered: Vec<(&str, &StatusResponse, Option<&PerSecret>)> = nodes
        .iter()
        .filter_map(|n| {
            n.status
                .as_ref()
                .map(|s| (n.node.as_str(), s, n.drift.as_ref()))
        })
        .collect();
    struct Holder<'a> {
        node: &'a str,
        footprint: Footprint,
        values: Option<BTreeMap<String, String>>,
        local: Option<LocalDrift>,
    }
    let mut by_secret: BTreeMap<&str, Vec<Holder<'_>>> = BTreeMap::new();
    for (node, st, local) in &answered {
        for s in &st.secrets {
            by_secret.entry(s.name.as_str()).or_default().push(Holder {
                node,
                footprint: footprint(s),
                values: (st.fingerprints_keyed_by == KeyedBy::Request).then(|| values_of(s)),
                local: local.and_then(|l| l.get(&s.name).copied()),
            });
        }
    }
    let mut out = vec![];
    for (name, holders) in by_secret {
        let differs = holders.windows(2).any(|w| w[0].footprint != w[1].footprint);
        let missing_on: Vec<String> = answered
            .iter()
            .filter(|(n, _, _)| !holders.iter().any(|h| h.node == *n))
            .map(|(n, _, _)| (*n).to_owned())
            .collect();
        // A place holding two fingerprints on two nodes: their values differ.
        let mut by_place: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for values in holders.iter().filter_map(|h| h.values.as_ref()) {
            for (place, fp) in values {
                by_place.entry(place).or_default().insert(fp);
            }
        }
        let values_differ = by_place.values().any(|fps| fps.len() > 1);
        let mut value_groups: Vec<Vec<String>> = vec![];
        if values_differ {
            let mut groups: BTreeMap<&BTreeMap<String, String>, Vec<String>> = BTreeMap::new();
            for h in &holders {
                if let Some(v) = &h.values {
                    groups.entry(v).or_default().push(h.node.to_owned());
                }
            }
            value_groups = groups.into_values().collect();
        }
        let differs_from_local: Vec<String> = holders
            .iter()
            .filter(|h| h.local == Some(LocalDrift::Differs))
            .map(|h| h.node.to_owned())
            .collect();
        if differs || !missing_on.is_empty() || values_differ || !differs_from_local.is_empty() {
            out.push(Drift {
                secret: name.to_owned(),
                differs,
                missing_on,
                values_differ,
                value_groups,
                differs_from_local,
            });
        }
    }
    out
}

/// `controller status`.
pub async fn run(args: StatusArgs, ctx: &Context) -> Result<u8> {
    let remote = match Mode::load(ctx, &args.cluster, &args.remote, args.output.json)? {
        Mode::Pull(cluster) => return cluster.status(ctx, args.output.json).await,
        Mode::Push(remote) => remote,
    };
    let cluster = &remote.cluster;
    let key_hex = clusters::fingerprint_key(&ctx.home, &cluster.name)?;
    let key = FingerprintKey::from_hex(key_hex.expose_secret())?;
    let pool = match LocalSecrets::load(ctx) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("warning: {e}; nodes are not compared with local copies");
            LocalSecrets::default()
        }
    };
    let outcomes = remote
        .fan_out("status", move |conn| {
            let key_hex = key_hex.clone();
            async move { conn.status_with_key(key_hex.expose_secret()).await }
        })
        .await;
    // This machine's copy of every secret some node holds, fingerprinted once.
    let local: BTreeMap<&str, LocalPrints> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .flat_map(|st| st.secrets.iter().map(|s| s.name.as_str()))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .filter_map(|name| {
            local_secret(&pool, ctx, name).map(|s| (name, LocalPrints::of(&key, &s)))
        })
        .collect();
    let local_of = |name: &str| local.get(name);
    let mut nodes: Vec<NodeStatus> = vec![];
    let mut rows: Vec<(String, String, String, Entry)> = vec![];
    for o in &outcomes {
        match &o.result {
            Ok(st) => {
                let mut per_secret = BTreeMap::new();
                for s in &st.secrets {
                    let prints = local_of(&s.name);
                    let has_local = prints.is_some();
                    let es = entries(s, st.fingerprints_keyed_by, prints);
                    per_secret.insert(
                        s.name.clone(),
                        overall(&es, st.fingerprints_keyed_by, has_local),
                    );
                    let provider = s.provider.clone().unwrap_or_else(|| "-".into());
                    for e in es {
                        rows.push((o.node.name.clone(), s.name.clone(), provider.clone(), e));
                    }
                }
                nodes.push(NodeStatus {
                    node: o.node.name.clone(),
                    ok: true,
                    error: None,
                    status: Some(st.clone()),
                    drift: Some(per_secret),
                });
            }
            Err(e) => nodes.push(NodeStatus {
                node: o.node.name.clone(),
                ok: false,
                error: Some(e.to_string()),
                status: None,
                drift: None,
            }),
        }
    }
    let drift = drift(&nodes);
    if args.output.json {
        print_json(&serde_json::json!({
            "cluster": cluster.name,
            "nodes": nodes,
            "drift": drift,
        }))?;
    } else {
        print_table(&nodes, &rows, &drift, &cluster.name)?;
    }
    for n in &nodes {
        if let Some(e) = &n.error {
            eprintln!("error: {e}");
        }
    }
    Ok(exit_code(nodes.iter().map(|n| n.ok)))
}

fn print_table(
    nodes: &[NodeStatus],
    rows: &[(String, String, String, Entry)],
    drift: &[Drift],
    cluster: &str,
) -> Result<()> {
    let flagged: BTreeMap<&str, &Drift> = drift.iter().map(|d| (d.secret.as_str(), d)).collect();
    let mut secrets = Table::new(&[
        "node",
        "secret",
        "provider",
        "where",
        "fingerprint",
        "local",
        "flag",
    ]);
    // A session secret's vars point at the agent (paths and its URL): its
    // own table below says what matters (minted, expires, served).
    let sessions_of: std::collections::BTreeSet<(&str, &str)> = nodes
        .iter()
        .filter_map(|n| Some((n.node.as_str(), n.status.as_ref()?)))
        .flat_map(|(node, st)| st.sessions.iter().map(move |s| (node, s.name.as_str())))
        .collect();
    for (node, name, provider, e) in rows {
        let session = sessions_of.contains(&(node.as_str(), name.as_str()));
        let flag = match flagged.get(name.as_str()) {
            Some(d) if d.values_differ => "VALUES DIFFER ACROSS NODES",
            Some(d) if d.differs => "DIFFERS ACROSS NODES",
            Some(d) if !d.missing_on.is_empty() => "missing on some nodes",
            _ => "",
        };
        secrets.row(vec![
            node.clone(),
            name.clone(),
            provider.clone(),
            e.place.clone(),
            if e.fingerprint.is_empty() {
                "(unset)".into()
            } else {
                e.fingerprint.clone()
            },
            if session {
                "session secret (below)".into()
            } else {
                e.drift.word().into()
            },
            flag.into(),
        ]);
    }
    let mut envs = Table::new(&["node", "env", "running", "vars"]);
    for n in nodes {
        let Some(st) = &n.status else { continue };
        for e in &st.envs {
            envs.row(vec![
                n.node.clone(),
                e.name.clone(),
                if e.running { "yes" } else { "no" }.into(),
                e.vars.join(" "),
            ]);
        }
    }
    if secrets.is_empty() {
        println!("no secrets installed on the reachable nodes");
    } else {
        secrets.print()?;
    }
    if !envs.is_empty() {
        println!();
        envs.print()?;
    }
    // Session secrets (`crate::mint`): when minted, until when served.
    let mut sessions = Table::new(&[
        "node",
        "session",
        "kind",
        "source",
        "minted at",
        "expires at",
        "state",
        "exposed in",
    ]);
    for n in nodes {
        let Some(st) = &n.status else { continue };
        for s in &st.sessions {
            let mut exposed: Vec<String> = s.envs.iter().map(|e| format!("env {e}")).collect();
            exposed.extend(s.profile.iter().map(|p| format!("profile {p}")));
            let state = match (s.expired, s.shadowed.is_empty()) {
                (true, _) => "EXPIRED (not served)".to_owned(),
                (false, true) => "served".to_owned(),
                (false, false) => format!("served, shadowed by {}", s.shadowed.join(", ")),
            };
            sessions.row(vec![
                n.node.clone(),
                s.name.clone(),
                s.kind.as_str().into(),
                s.source.clone(),
                s.minted_at.clone(),
                s.expires_at.clone(),
                state,
                exposed.join(", "),
            ]);
        }
    }
    if !sessions.is_empty() {
        println!();
        sessions.print()?;
    }
    for d in drift {
        if !d.differs_from_local.is_empty() {
            eprintln!(
                "warning: secret {} differs from the local copy on {} (stale or changed there); refresh with `controller sync --cluster {cluster} --secret {} --overwrite`",
                d.secret,
                d.differs_from_local.join(", "),
                d.secret
            );
        }
        if d.values_differ {
            let groups: Vec<String> = d.value_groups.iter().map(|g| g.join(", ")).collect();
            eprintln!(
                "warning: nodes disagree on the values of secret {}: {}",
                d.secret,
                groups.join(" | ")
            );
        }
        if d.differs {
            eprintln!(
                "warning: secret {} is installed differently across nodes (files, keys or vars); run `controller sync --cluster {cluster} --secret {} --overwrite`",
                d.secret, d.secret
            );
        }
        if !d.missing_on.is_empty() {
            eprintln!(
                "note: secret {} is missing on {}",
                d.secret,
                d.missing_on.join(", ")
            );
        }
    }
    let old: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .is_some_and(|s| s.fingerprints_keyed_by == KeyedBy::Node)
        })
        .map(|n| n.node.as_str())
        .collect();
    if !old.is_empty() {
        eprintln!(
            "note: the agent on {} is too old to compare values; update it with `controller cluster bootstrap {cluster}`",
            old.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;
    use common::wire::{InstalledFile, InstalledVar};

    fn key() -> FingerprintKey {
        FingerprintKey::from_hex(&"ab".repeat(32)).unwrap()
    }

    fn aws(keys: &str, fp: &str) -> InstalledSecret {
        InstalledSecret {
            name: "aws".into(),
            provider: Some("aws".into()),
            files: vec![InstalledFile {
                path: "~/.aws/credentials".into(),
                keys: vec![keys.into()],
                fingerprint: fp.into(),
            }],
            vars: vec![],
        }
    }

    fn node(name: &str, secret: Option<InstalledSecret>, keyed_by: KeyedBy) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            ok: true,
            error: None,
            status: Some(StatusResponse {
                version: "x".into(),
                secrets: secret.into_iter().collect(),
                envs: vec![],
                fingerprints_keyed_by: keyed_by,
                sessions: vec![],
            }),
            drift: None,
        }
    }

    #[test]
    fn drift_flags_layout_differences_and_missing() {
        let n = |name, s| node(name, s, KeyedBy::Node);
        // Node-keyed fingerprints are not compared: only the layout is.
        assert!(drift(&[n("a", Some(aws("k", "f1"))), n("b", Some(aws("k", "f2")))]).is_empty());
        let d = drift(&[
            n("a", Some(aws("k1", "ff"))),
            n("b", Some(aws("k2", "ff"))),
            n("c", None),
        ]);
        assert_eq!(
            d,
            vec![Drift {
                secret: "aws".into(),
                differs: true,
                missing_on: vec!["c".into()],
                values_differ: false,
                value_groups: vec![],
                differs_from_local: vec![],
            }]
        );
    }

    #[test]
    fn drift_groups_nodes_by_values_under_a_shared_key() {
        let n = |name, fp| node(name, Some(aws("k", fp)), KeyedBy::Request);
        assert!(drift(&[n("a", "f1"), n("b", "f1")]).is_empty());
        let mut nodes = vec![n("a", "f1"), n("b", "f2"), n("c", "f1")];
        nodes[1].drift = Some([("aws".to_string(), LocalDrift::Differs)].into());
        let d = drift(&nodes);
        assert_eq!(d.len(), 1);
        assert!(d[0].values_differ && !d[0].differs);
        let mut groups = d[0].value_groups.clone();
        groups.sort();
        assert_eq!(groups, vec![vec!["a", "c"], vec!["b"]]);
        assert_eq!(d[0].differs_from_local, vec!["b"]);
    }

    #[test]
    fn entries_compare_with_the_local_copy() {
        let key = key();
        let mut local = Secret::base("aws", values_from([("k", "v1")]));
        local.env_vars = Some([("k".to_string(), "K".to_string())].into());
        let prints = LocalPrints::of(&key, &local);
        let same = values_fingerprint(key.as_bytes(), &local.values);
        let var_same = value_fingerprint(key.as_bytes(), &"v1".into());
        let mut s = aws("k", &same);
        s.vars.push(InstalledVar {
            env: "base_env".into(),
            var: "K".into(),
            fingerprint: var_same.clone(),
        });
        let drifts = |s: &InstalledSecret, by, l| {
            entries(s, by, l)
                .iter()
                .map(|e| e.drift)
                .collect::<Vec<_>>()
        };
        use LocalDrift::*;
        assert_eq!(
            drifts(&s, KeyedBy::Request, Some(&prints)),
            [InSync, InSync]
        );
        assert_eq!(
            drifts(&s, KeyedBy::Request, None),
            [NoLocalCopy, NoLocalCopy]
        );
        assert_eq!(drifts(&s, KeyedBy::Node, Some(&prints)), [Unknown, Unknown]);
        // A changed file value; a var no longer set (empty fingerprint).
        s.files[0].fingerprint = "0000000000000000".into();
        s.vars[0].fingerprint = String::new();
        let es = entries(&s, KeyedBy::Request, Some(&prints));
        assert_eq!(
            es.iter().map(|e| e.drift).collect::<Vec<_>>(),
            [Differs, Differs]
        );
        assert_eq!(overall(&es, KeyedBy::Request, true), Differs);
        s.vars[0].fingerprint = var_same;
        let es = entries(&s, KeyedBy::Request, Some(&prints));
        assert_eq!(overall(&es, KeyedBy::Request, true), Differs);
        assert_eq!(overall(&[], KeyedBy::Request, true), InSync);
        assert_eq!(overall(&[], KeyedBy::Request, false), NoLocalCopy);
        assert_eq!(
            serde_json::to_value([InSync, Differs, NoLocalCopy, Unknown]).unwrap(),
            serde_json::json!(["in_sync", "differs", "no_local_copy", "unknown"])
        );
    }
}
