//! `controller cluster enroll NAME --out DIR ...`: a pull cluster's policy
//! and AppRole (idempotent), then one bundle per node (a response-wrapped
//! secret_id) or one launch bundle (`--reusable`), each recorded here with
//! its secret_id accessor ([`crate::fleet::nodes::Registry`]); enrolling a
//! node again revokes the bundle it had. Prints the bundles' paths (or
//! `--json`), never a secret_id or token: bundles are written 0600.

use anyhow::Result;
use common::fleet;
use serde::Serialize;

use crate::cli::EnrollArgs;
use crate::exit::{self, UsageError};
use crate::fleet::admin::{self, BundleIdentity, RoleOptions, SecretIdKind};
use crate::fleet::nodes::{BundleEntry, BundleKind, Registry};
use crate::fleet::publish;
use crate::fleet::Store;
use crate::output::print_json;
use crate::Context;

#[derive(Debug, Serialize)]
struct EnrollDoc {
    cluster: String,
    role: String,
    bundles: Vec<String>,
    reusable: bool,
    /// Bundles of the same names enrolled before, now revoked.
    revoked: Vec<String>,
}

/// The names of the bundles to write: the launch bundle's, the `--node`
/// names given, or the next `--nodes` free `node-<k>` names.
fn bundle_names(args: &EnrollArgs, registry: &Registry) -> Result<Vec<String>> {
    if args.reusable {
        return Ok(vec![registry.next_name("launch-")]);
    }
    if args.node_names.is_empty() {
        let first = registry.next_name("node-");
        let k: usize = first["node-".len()..].parse().expect("next_name numbers");
        return Ok((k..k + args.nodes).map(|i| format!("node-{i}")).collect());
    }
    let mut names = Vec::new();
    for n in &args.node_names {
        if !fleet::is_bundle_name(n) {
            return Err(UsageError(format!(
                "--node {n:?} is not a bundle name (letters, digits and . _ - @ : [ ], at most \
                 128, e.g. node-3)"
            ))
            .into());
        }
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    Ok(names)
}

/// `controller cluster enroll NAME --out DIR ...`.
pub(super) async fn run(args: EnrollArgs, ctx: &Context) -> Result<u8> {
    let cluster = super::load_pull(ctx, &args.name, |c| {
        format!(
            "cluster {} is not a pull cluster: add it with `controller cluster add {} --pull`",
            c.name, c.name
        )
    })?;
    let wrap_ttl = args.wrap_ttl;
    let token_ttl = args.token_ttl;
    let kind = if args.reusable {
        let ttl = args
            .ttl
            .ok_or_else(|| UsageError("--reusable needs --ttl DUR".into()))?;
        // 0: not counted (Vault's num_uses 0), bounded by the TTL and CIDRs only.
        let uses = args
            .uses
            .ok_or_else(|| UsageError("--reusable needs --uses N (0: not counted)".into()))?;
        if uses == 0 && args.cidrs.is_empty() {
            eprintln!(
                "warning: --uses 0 without --cidr: the launch bundle logs in from anywhere, \
                 any number of times, until its --ttl runs out"
            );
        }
        SecretIdKind::Reusable {
            uses,
            ttl,
            cidrs: args.cidrs.clone(),
        }
    } else {
        if args.nodes == 0 {
            return Err(UsageError("--nodes must be at least 1".into()).into());
        }
        SecretIdKind::Wrapped { wrap_ttl }
    };
    let mut registry = Registry::load(&ctx.home, &cluster.name)?;
    let names = bundle_names(&args, &registry)?;
    let store = Store::connect(ctx)?;
    // The fleet booting from these bundles: the nodes enrolled, or the
    // logins a launch bundle allows (0: not counted, size unknown).
    let fleet_size = if args.reusable {
        args.uses.unwrap_or(0)
    } else {
        names.len() as u64
    };
    let mut written = Vec::with_capacity(names.len());
    let mut replaced: Vec<BundleEntry> = Vec::new();
    let made = async {
        let role_id = admin::ensure_role(&store, &cluster.name, RoleOptions { token_ttl }).await?;
        for name in names {
            let (bundle_id, report_key) = registry.new_bundle_key();
            let minted =
                admin::new_secret_id(&store, &cluster.name, &kind, &name, &bundle_id).await?;
            let who = BundleIdentity {
                name: name.clone(),
                bundle_id: bundle_id.clone(),
                report_key,
            };
            let bundle = admin::bundle(
                &store,
                &cluster.name,
                &role_id,
                minted.secret,
                !args.reusable,
                fleet_size,
                who,
            )?;
            let file = if args.reusable {
                "launch.json".to_owned()
            } else {
                format!("{name}.json")
            };
            let path = admin::write_bundle(&args.out, &file, &bundle)?;
            written.push(path.display().to_string());
            let entry = BundleEntry {
                name,
                bundle_id,
                accessor: minted.accessor,
                kind: if args.reusable {
                    BundleKind::Launch
                } else {
                    BundleKind::Node
                },
                created_at: common::time::now_rfc3339(false),
                revoked_at: None,
            };
            // Enrolling a node again revokes the bundle it had: a copy of
            // that one (an intercepted bundle) no longer logs in.
            if let Some(old) = registry.add(entry) {
                admin::destroy_secret_id(&store, &cluster.name, &old.accessor).await?;
                registry.mark_revoked(&old.bundle_id);
                replaced.push(old);
            }
        }
        anyhow::Ok(())
    }
    .await;
    // What was made is recorded even when a later bundle failed.
    registry.save(&ctx.home, &cluster.name)?;
    made?;
    for old in &replaced {
        eprintln!(
            "note: the previous bundle {} of cluster {} was revoked (its secret_id no longer \
             logs in)",
            old.name, cluster.name
        );
    }
    // The node reports under its new bundle: its old row goes.
    let ids: Vec<String> = replaced.iter().map(|b| b.bundle_id.clone()).collect();
    if let Err(e) = publish::forget_reports(&store, &cluster.name, &ids).await {
        eprintln!("warning: cannot delete the reports of the replaced bundles: {e}");
    }
    let replaced: Vec<String> = replaced.into_iter().map(|b| b.name).collect();
    let doc = EnrollDoc {
        cluster: cluster.name.clone(),
        role: admin::role_name(&store.config.prefix, &cluster.name),
        bundles: written,
        reusable: args.reusable,
        revoked: replaced,
    };
    if args.output.json {
        print_json(&doc)?;
    } else {
        for b in &doc.bundles {
            println!("{b}");
        }
        if args.reusable {
            eprintln!(
                "note: a launch bundle is weaker than per-node bundles: whoever reads it can log \
                 in as cluster {} until its {} run out",
                cluster.name,
                if args.uses == Some(0) {
                    "TTL"
                } else {
                    "uses or TTL"
                }
            );
        }
        eprintln!(
            "{} bundle(s) for cluster {} (AppRole {}); start each node with `agent serve --pull BUNDLE`",
            doc.bundles.len(),
            cluster.name,
            doc.role
        );
    }
    Ok(exit::OK)
}
