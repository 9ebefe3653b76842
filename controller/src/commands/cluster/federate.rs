//! `controller cluster federate NAME`: workload identity for a pull
//! cluster. Checks the flags, has the store set up
//! ([`crate::fleet::federate`]: entity, signing key, OIDC roles, policy,
//! federation document), tells running nodes through the manifest, then
//! prints the issuer and, per cloud, what to create there, and with
//! `--discovery-out` writes the discovery document and JWKS for static
//! hosting. Never prints a token: there is none here (nodes fetch their own).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use common::identity::{
    self, AwsFederation, AzureFederation, Cloud, Federation, GcpFederation, FEDERATION_FORMAT,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::FederateArgs;
use crate::clusters::Cluster;
use crate::exit::{self, UsageError};
use crate::fleet::federate::{apply, Applied};
use crate::fleet::{publish, Store};
use crate::output::{escape_text, print_json, FOREIGN_TEXT_MAX};
use crate::Context;

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The federation the flags ask for; `None` when they name no cloud (the
/// cluster's current document is kept then).
fn from_flags(args: &FederateArgs, ttl: u64) -> Option<Federation> {
    let fed = Federation {
        format: FEDERATION_FORMAT,
        token_ttl_secs: ttl,
        aws: args.aws_role_arn.as_ref().map(|arn| AwsFederation {
            role_arn: arn.clone(),
            profile: args.aws_profile.clone().unwrap_or_else(|| "default".into()),
        }),
        gcp: args.gcp_audience.as_ref().map(|aud| GcpFederation {
            audience: aud.clone(),
            service_account: args.gcp_service_account.clone(),
        }),
        azure: args
            .azure_client_id
            .as_ref()
            .zip(args.azure_tenant_id.as_ref())
            .map(|(client, tenant)| AzureFederation {
                client_id: client.clone(),
                tenant_id: tenant.clone(),
            }),
    };
    (!fed.clouds().is_empty()).then_some(fed)
}

/// What `federate` did, and what to create in each cloud.
#[derive(Debug, Serialize)]
struct FederateDoc {
    cluster: String,
    issuer: String,
    subject: String,
    key: KeyDoc,
    token_ttl_secs: u64,
    roles: BTreeMap<Cloud, RoleDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws: Option<AwsSetup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gcp: Option<GcpSetup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azure: Option<AzureSetup>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    discovery_files: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct KeyDoc {
    name: String,
    algorithm: String,
    rotation_secs: u64,
}

#[derive(Debug, Serialize)]
struct RoleDoc {
    role: String,
    audience: String,
    token_path: String,
}

#[derive(Debug, Serialize)]
struct AwsSetup {
    role_arn: String,
    profile: String,
    oidc_provider_arn: String,
    create_provider: String,
    trust_policy: Value,
}

#[derive(Debug, Serialize)]
struct GcpSetup {
    audience: String,
    token_audience: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account: Option<String>,
    principal: String,
    commands: Vec<String>,
}

#[derive(Debug, Serialize)]
struct AzureSetup {
    client_id: String,
    tenant_id: String,
    federated_credential: Value,
    command: String,
}

/// `controller cluster federate NAME ...`.
pub(super) async fn run(args: FederateArgs, ctx: &Context) -> Result<u8> {
    let cluster = super::load_pull(ctx, &args.name, |c| {
        format!(
            "cluster {} is not a pull cluster: workload identity needs nodes that log in to the \
             store (`controller cluster add {} --pull`, then `cluster enroll`)",
            c.name, c.name
        )
    })?;
    let rotation = args.key_rotation;
    if rotation < 60 {
        return Err(usage("--key-rotation must be at least 1m"));
    }
    let flag_ttl = args.token_ttl;
    if let Some(issuer) = &args.issuer {
        check_issuer(issuer)?;
    }
    let store = Store::connect(ctx)?;
    let prefix = store.config.prefix.clone();
    if !identity::is_plain_name(&prefix) || !identity::is_plain_name(&cluster.name) {
        return Err(usage(format!(
            "cluster {:?} or store prefix {:?} has characters an OIDC role or a token claim cannot \
             carry as is (use letters, digits, _ . - /)",
            cluster.name, prefix
        )));
    }
    let path = identity::federation_path(&prefix, &cluster.name);
    let current = store
        .kv_read::<Federation>(&path)
        .await
        .with_context(|| format!("read the federation of cluster {}", cluster.name))?
        .map(|v| v.data);
    let ttl = flag_ttl
        .or(current.as_ref().map(|f| f.token_ttl_secs))
        .unwrap_or(identity::DEFAULT_TOKEN_TTL_SECS);
    let fed = match (from_flags(&args, ttl), current) {
        (Some(fed), _) => fed,
        (None, Some(mut fed)) => {
            fed.token_ttl_secs = ttl;
            fed
        }
        (None, None) => {
            return Err(usage(format!(
                "cluster {} is not federated yet: name at least one cloud (--aws-role-arn, \
                 --gcp-audience, or --azure-client-id with --azure-tenant-id)",
                cluster.name
            )))
        }
    };
    fed.validate().map_err(|e| usage(e.to_string()))?;
    if ttl > 10 * rotation {
        return Err(usage(
            "--token-ttl may be at most ten --key-rotation periods",
        ));
    }
    let algorithm = args.key_algorithm.clone().unwrap_or_else(|| {
        if fed.azure.is_some() {
            "RS256".into()
        } else {
            "ES256".into()
        }
    });
    let mut warnings = Vec::new();
    if fed.azure.is_some() && algorithm != "RS256" {
        warnings.push(
            "Azure (Entra ID) is documented to verify RSA keys only: use --key-algorithm RS256"
                .to_owned(),
        );
    }
    let applied = apply(
        &store,
        &cluster,
        &fed,
        &algorithm,
        rotation,
        args.issuer.as_deref(),
    )
    .await
    .with_context(|| format!("federate cluster {}", cluster.name))?;
    // Nodes already running read the document on their next poll.
    publish::mark_federation(&store, &cluster.name, applied.federation)
        .await
        .with_context(|| format!("tell the nodes of cluster {} it is federated", cluster.name))?;
    if !applied.issuer.starts_with("https://") {
        warnings.push(format!(
            "the issuer {} is not https: AWS, GCP and Azure fetch the issuer's discovery \
             document over https from the internet; set --issuer to where it is served \
             (with --discovery-out for static hosting)",
            applied.issuer
        ));
    }
    let discovery_files = match &args.discovery_out {
        Some(dir) => {
            if args.issuer.is_none() {
                warnings.push(
                    "--discovery-out without --issuer: the documents name the store's own \
                     address as issuer; serve them there, or set --issuer"
                        .to_owned(),
                );
            }
            write_discovery(dir, &applied)?
        }
        None => vec![],
    };
    let doc = setup_doc(
        &cluster,
        &prefix,
        &fed,
        applied,
        algorithm,
        rotation,
        discovery_files,
        warnings,
    );
    if args.output.json {
        print_json(&doc)?;
    } else {
        print_setup(&doc, rotation);
    }
    for w in &doc.warnings {
        eprintln!("warning: {w}");
    }
    Ok(exit::OK)
}

/// An issuer origin: `https://HOST[:PORT]`, no path (OpenBao appends
/// `/v1/identity/oidc`). Plain `http://` is accepted (a test store on a
/// private network); the clouds need https, and `run` warns.
fn check_issuer(issuer: &str) -> Result<()> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| usage(format!("--issuer {issuer:?} must be an https:// origin")))?;
    if rest.is_empty()
        || !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    {
        return Err(usage(format!(
            "--issuer {issuer:?} must be an origin (scheme, host, optional port; no path)"
        )));
    }
    Ok(())
}

/// Write the discovery document and the JWKS under `dir` at the issuer's
/// path (`<dir>/v1/identity/oidc/.well-known/{openid-configuration,keys}`),
/// world-readable (they are public). Returns the files written.
fn write_discovery(dir: &Path, applied: &Applied) -> Result<Vec<String>> {
    let path = applied
        .issuer
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| path)
        .unwrap_or("");
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        anyhow::bail!("the issuer {} has an unusable path", applied.issuer);
    }
    let well_known = dir.join(path).join(".well-known");
    let mut written = vec![];
    for (file, value) in [
        ("openid-configuration", &applied.discovery),
        ("keys", &applied.jwks),
    ] {
        let target = well_known.join(file);
        write_public(&target, serde_json::to_string_pretty(value)?.as_bytes())
            .with_context(|| format!("write {}", target.display()))?;
        written.push(target.display().to_string());
    }
    Ok(written)
}

/// Write a public file atomically (temp file, rename), mode 0644, dirs 0755.
fn write_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn setup_doc(
    cluster: &Cluster,
    prefix: &str,
    fed: &Federation,
    applied: Applied,
    algorithm: String,
    rotation: u64,
    discovery_files: Vec<String>,
    warnings: Vec<String>,
) -> FederateDoc {
    let issuer = escape_text(&applied.issuer, FOREIGN_TEXT_MAX);
    let subject = escape_text(&applied.subject, FOREIGN_TEXT_MAX);
    let host_path = issuer
        .split_once("://")
        .map_or(issuer.as_str(), |(_, rest)| rest)
        .to_owned();
    let roles = fed
        .clouds()
        .into_iter()
        .filter_map(|c| {
            Some((
                c,
                RoleDoc {
                    role: identity::oidc_role_name(prefix, &cluster.name, c),
                    audience: fed.audience(c)?,
                    token_path: identity::token_api_path(prefix, &cluster.name, c),
                },
            ))
        })
        .collect();
    let aws = fed.aws.as_ref().map(|aws| {
        let account = aws.role_arn.split(':').nth(4).unwrap_or_default();
        let partition = aws.role_arn.split(':').nth(1).unwrap_or("aws");
        let provider = format!("arn:{partition}:iam::{account}:oidc-provider/{host_path}");
        AwsSetup {
            role_arn: aws.role_arn.clone(),
            profile: aws.profile.clone(),
            create_provider: format!(
                "aws iam create-open-id-connect-provider --url {issuer} --client-id-list {}",
                identity::AWS_AUDIENCE
            ),
            trust_policy: json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Federated": provider },
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": { "StringEquals": {
                        format!("{host_path}:aud"): identity::AWS_AUDIENCE,
                        format!("{host_path}:sub"): subject,
                    }},
                }],
            }),
            oidc_provider_arn: provider,
        }
    });
    let gcp = fed.gcp.as_ref().map(|gcp| {
        // //iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q
        let parts: Vec<&str> = gcp.audience.split('/').collect();
        let (number, pool, provider) = (parts[4], parts[8], parts[10]);
        let pool_name = format!("projects/{number}/locations/global/workloadIdentityPools/{pool}");
        let principal = format!("principal://iam.googleapis.com/{pool_name}/subject/{subject}");
        let mut commands = vec![format!(
            "gcloud iam workload-identity-pools providers create-oidc {provider} \
             --project={number} --location=global --workload-identity-pool={pool} \
             --issuer-uri={issuer} \
             --attribute-mapping=google.subject=assertion.sub,attribute.cluster=assertion.cluster \
             --attribute-condition=\"assertion.sub=='{subject}'\"{}",
            if discovery_files.is_empty() {
                String::new()
            } else {
                " --jwk-json-path=KEYS (the keys file written by --discovery-out)".to_owned()
            }
        )];
        match &gcp.service_account {
            Some(sa) => commands.push(format!(
                "gcloud iam service-accounts add-iam-policy-binding {sa} \
                 --role=roles/iam.workloadIdentityUser --member={principal}"
            )),
            None => commands.push(format!(
                "grant roles to {principal} directly (no service account to impersonate)"
            )),
        }
        GcpSetup {
            audience: gcp.audience.clone(),
            token_audience: identity::gcp_token_audience(&gcp.audience),
            service_account: gcp.service_account.clone(),
            principal,
            commands,
        }
    });
    let azure = fed.azure.as_ref().map(|az| {
        let credential = json!({
            "name": format!("rh-{}", cluster.name),
            "issuer": issuer,
            "subject": subject,
            "audiences": [identity::AZURE_AUDIENCE],
        });
        AzureSetup {
            client_id: az.client_id.clone(),
            tenant_id: az.tenant_id.clone(),
            command: format!(
                "az ad app federated-credential create --id {} --parameters '{}'",
                az.client_id, credential
            ),
            federated_credential: credential,
        }
    });
    FederateDoc {
        cluster: cluster.name.clone(),
        issuer,
        subject,
        key: KeyDoc {
            name: applied.key,
            algorithm,
            rotation_secs: rotation,
        },
        token_ttl_secs: fed.token_ttl_secs,
        roles,
        aws,
        gcp,
        azure,
        discovery_files,
        warnings,
    }
}

fn print_setup(doc: &FederateDoc, rotation: u64) {
    println!(
        "cluster {}: federated ({} key {}, tokens live {} s; nodes refresh at half)",
        doc.cluster, doc.key.algorithm, doc.key.name, doc.token_ttl_secs
    );
    println!("issuer:  {}", doc.issuer);
    println!(
        "subject: {}  (the same on every node of the cluster)",
        doc.subject
    );
    if let Some(aws) = &doc.aws {
        println!(
            "\nAWS: role {} (profile [{}] on the nodes)",
            aws.role_arn, aws.profile
        );
        println!(
            "  1. the IAM OIDC provider (once per issuer):\n     {}",
            aws.create_provider
        );
        println!(
            "  2. the role's trust policy:\n{}",
            indent(
                &serde_json::to_string_pretty(&aws.trust_policy).unwrap_or_default(),
                5
            )
        );
    }
    if let Some(gcp) = &doc.gcp {
        println!("\nGCP: provider {}", gcp.audience);
        for (i, c) in gcp.commands.iter().enumerate() {
            println!("  {}. {c}", i + 1);
        }
    }
    if let Some(az) = &doc.azure {
        println!(
            "\nAzure: application {} in tenant {}",
            az.client_id, az.tenant_id
        );
        println!("  the federated credential:\n     {}", az.command);
    }
    if !doc.discovery_files.is_empty() {
        println!(
            "\ndiscovery documents for static hosting (serve them at {}; run this again within \
             {} s, the key rotation, so the JWKS holds the signing key):",
            doc.issuer, rotation
        );
        for f in &doc.discovery_files {
            println!("  {f}");
        }
    }
}

fn indent(text: &str, n: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}", " ".repeat(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_origins() {
        assert!(check_issuer("https://oidc.example.com").is_ok());
        assert!(check_issuer("https://oidc.example.com:8443").is_ok());
        assert!(check_issuer("http://127.0.0.1:8200").is_ok());
        assert!(check_issuer("https://oidc.example.com/path").is_err());
        assert!(check_issuer("https://").is_err());
        assert!(check_issuer("ftp://x").is_err());
    }
}
