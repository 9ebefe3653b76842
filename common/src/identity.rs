//! Workload identity of a pull cluster, shared by the controller (which
//! federates the cluster in the store: `controller cluster federate`) and the
//! agent (which fetches the cluster's identity tokens and wires the cloud
//! SDKs to them): the federation document under `<base>/federation`, the
//! names of the store objects (OIDC key, one OIDC role per cloud), the
//! audience each cloud expects, the allow-lists every identifier from the
//! document must pass, and the identity part of a node report.
//!
//! The federation document comes from the store: whoever can write the
//! user's prefix could change it. So it names identifiers only (a role ARN,
//! a GCP provider and service account, an Azure client and tenant), each
//! checked against an allow-list pattern ([`Federation::validate`]); no
//! path, URL or program comes from it. The agent builds every file path
//! (under its own state dir), every URL (the clouds' fixed endpoints, or
//! its own config's) and the credential configuration itself
//! (a GCP `credential_source` is always a `file`, never `executable`).
//! Nothing here holds a token; identity tokens are the agent's business and
//! never appear in a report, an error or a log.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fleet::cluster_base;

/// The federation document format this build writes and reads.
pub const FEDERATION_FORMAT: u32 = 1;

/// Default lifetime of an identity token (the OIDC roles' `ttl`): 15 min.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 900;

/// Shortest identity token lifetime `federate` accepts (nodes refresh at
/// half of it, on their poll; a minute leaves room for a 10 s poll).
pub const MIN_TOKEN_TTL_SECS: u64 = 60;

/// Longest identity token lifetime (AWS accepts web identity tokens up to
/// its own limits; a long-lived token is what this feature avoids).
pub const MAX_TOKEN_TTL_SECS: u64 = 12 * 3600;

/// The AWS audience: what `aws iam create-open-id-connect-provider
/// --client-id-list` names (EKS and GitHub Actions use it too).
pub const AWS_AUDIENCE: &str = "sts.amazonaws.com";

/// The audience Entra ID (Azure) expects in a federated credential.
pub const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Google's STS token endpoint (the `token_url` of an `external_account`
/// configuration) unless the node's own config names another.
pub const GCP_STS_URL: &str = "https://sts.googleapis.com/v1/token";

/// Google's IAM credentials API base (service account impersonation) unless
/// the node's own config names another.
pub const GCP_IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";

/// The token type of a JWT for Google's STS.
pub const GCP_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Largest identity token a node accepts from the store (an RS256 token with
/// a few claims is about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A cloud whose SDKs a node wires to its identity token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    /// Every cloud, in a fixed order.
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Gcp, Cloud::Azure];

    /// `aws`, `gcp`, `azure`: in store names, file names and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }
}

/// What is wrong with a federation setting. Names the field, and shows the
/// value: these are identifiers (ARNs, ids), never secrets.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("{field} {value:?} is not {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the federation document has format {0} (this build reads format {FEDERATION_FORMAT}): upgrade")]
    Format(u32),
    #[error("token_ttl_secs {0} is outside {MIN_TOKEN_TTL_SECS}..={MAX_TOKEN_TTL_SECS}")]
    Ttl(u64),
    #[error("no cloud is configured")]
    Empty,
}

/// AWS: the role nodes assume with their token, and the profile of
/// `~/.aws/config` the node wires (`default` unless named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsFederation {
    pub role_arn: String,
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_profile() -> String {
    "default".into()
}

/// GCP: the workload identity pool provider (its full resource name, the
/// `audience` of an `external_account` configuration), and the service
/// account to impersonate, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpFederation {
    pub audience: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Azure: the application (client) id holding the federated credential,
/// and its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureFederation {
    pub client_id: String,
    pub tenant_id: String,
}

/// The federation document (`<base>/federation`, written by `federate`,
/// read by the cluster's nodes). Identifiers only; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Federation {
    pub format: u32,
    /// The identity tokens' lifetime; nodes refresh at half of it.
    pub token_ttl_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsFederation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpFederation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureFederation>,
}

impl Federation {
    /// The clouds configured, in [`Cloud::ALL`] order.
    pub fn clouds(&self) -> Vec<Cloud> {
        Cloud::ALL
            .into_iter()
            .filter(|c| match c {
                Cloud::Aws => self.aws.is_some(),
                Cloud::Gcp => self.gcp.is_some(),
                Cloud::Azure => self.azure.is_some(),
            })
            .collect()
    }

    /// Check every field against its allow-list. A node applies nothing
    /// from a document that fails (it keeps what it wired before).
    pub fn validate(&self) -> Result<(), IdentityError> {
        if self.format != FEDERATION_FORMAT {
            return Err(IdentityError::Format(self.format));
        }
        if !(MIN_TOKEN_TTL_SECS..=MAX_TOKEN_TTL_SECS).contains(&self.token_ttl_secs) {
            return Err(IdentityError::Ttl(self.token_ttl_secs));
        }
        if self.clouds().is_empty() {
            return Err(IdentityError::Empty);
        }
        if let Some(aws) = &self.aws {
            check(
                "aws role_arn",
                &aws.role_arn,
                is_aws_role_arn,
                "an IAM role ARN (arn:aws:iam::<12 digits>:role/NAME)",
            )?;
            check(
                "aws profile",
                &aws.profile,
                is_aws_profile,
                "a profile name (letters, digits, _ . -)",
            )?;
        }
        if let Some(gcp) = &self.gcp {
            check("gcp audience", &gcp.audience, is_gcp_audience, "a workload identity pool provider (//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)")?;
            if let Some(sa) = &gcp.service_account {
                check(
                    "gcp service_account",
                    sa,
                    is_gcp_service_account,
                    "a service account e-mail",
                )?;
            }
        }
        if let Some(azure) = &self.azure {
            check("azure client_id", &azure.client_id, is_uuid, "a UUID")?;
            check(
                "azure tenant_id",
                &azure.tenant_id,
                is_azure_tenant,
                "a tenant UUID or domain",
            )?;
        }
        Ok(())
    }

    /// A valid document naming all three clouds (tests and docs).
    #[doc(hidden)]
    pub fn example() -> Self {
        Federation {
            format: FEDERATION_FORMAT,
            token_ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            aws: Some(AwsFederation {
                role_arn: "arn:aws:iam::123456789012:role/gpu-nodes".into(),
                profile: "default".into(),
            }),
            gcp: Some(GcpFederation {
                audience: "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/rh/providers/gpu".into(),
                service_account: Some("trainer@proj-1.iam.gserviceaccount.com".into()),
            }),
            azure: Some(AzureFederation {
                client_id: "0b6e8f4e-54b7-4c3b-9d0c-2d3b5d1f7a11".into(),
                tenant_id: "contoso.onmicrosoft.com".into(),
            }),
        }
    }

    /// The audience (`aud`, the OIDC role's `client_id`) of `cloud`'s token,
    /// `None` when the cloud is not configured.
    pub fn audience(&self, cloud: Cloud) -> Option<String> {
        match cloud {
            Cloud::Aws => self.aws.as_ref().map(|_| AWS_AUDIENCE.to_owned()),
            Cloud::Gcp => self.gcp.as_ref().map(|g| gcp_token_audience(&g.audience)),
            Cloud::Azure => self.azure.as_ref().map(|_| AZURE_AUDIENCE.to_owned()),
        }
    }
}

fn check(
    field: &'static str,
    value: &str,
    ok: fn(&str) -> bool,
    expected: &'static str,
) -> Result<(), IdentityError> {
    if ok(value) {
        Ok(())
    } else {
        Err(IdentityError::Invalid {
            field,
            value: value.chars().take(200).collect(),
            expected,
        })
    }
}

/// The `aud` a GCP provider accepts by default: its resource name as an
/// https URL (`https://iam.googleapis.com/projects/...`).
pub fn gcp_token_audience(provider: &str) -> String {
    format!("https:{provider}")
}

fn all(s: &str, ok: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(ok)
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// `arn:<partition>:iam::<12 digits>:role/<path/>NAME`.
pub fn is_aws_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_, partition, iam, region, account, resource] = parts[..] else {
        return false;
    };
    arn_ == "arn"
        && matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
        && iam == "iam"
        && region.is_empty()
        && account.len() == 12
        && all(account, |c| c.is_ascii_digit())
        && resource.len() <= 512
        && resource.strip_prefix("role/").is_some_and(|name| {
            !name.starts_with('/')
                && !name.ends_with('/')
                && !name.contains("//")
                && all(name, |c| {
                    c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c)
                })
        })
}

/// A profile name: letters, digits, `_ . -`, at most 64.
pub fn is_aws_profile(name: &str) -> bool {
    name.len() <= 64 && all(name, |c| name_char(c) || c == '.')
}

/// `//iam.googleapis.com/projects/<digits>/locations/global/workloadIdentityPools/<id>/providers/<id>`.
pub fn is_gcp_audience(aud: &str) -> bool {
    let Some(rest) = aud.strip_prefix("//iam.googleapis.com/projects/") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [number, "locations", "global", "workloadIdentityPools", pool, "providers", provider] =
        parts[..]
    else {
        return false;
    };
    let id = |s: &str| {
        s.len() <= 63
            && all(s, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            })
    };
    number.len() <= 20 && all(number, |c| c.is_ascii_digit()) && id(pool) && id(provider)
}

/// `NAME@PROJECT.iam.gserviceaccount.com` (or another domain): one `@`,
/// lowercase letters, digits, `- .`.
pub fn is_gcp_service_account(email: &str) -> bool {
    let Some((user, domain)) = email.split_once('@') else {
        return false;
    };
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    email.len() <= 254 && all(user, ok) && all(domain, ok) && domain.contains('.')
}

/// A UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An Entra tenant: a UUID or a domain (`contoso.onmicrosoft.com`).
pub fn is_azure_tenant(tenant: &str) -> bool {
    is_uuid(tenant)
        || (tenant.len() <= 253
            && tenant.contains('.')
            && !tenant.starts_with(['.', '-'])
            && all(tenant, |c| {
                c.is_ascii_alphanumeric() || c == '.' || c == '-'
            }))
}

/// Whether `name` may appear in store object names and a token template as
/// is: letters, digits, `_ . -` (cluster names and prefixes allow more).
pub fn is_plain_name(name: &str) -> bool {
    name.len() <= 128 && all(name, |c| name_char(c) || c == '.' || c == '/')
}

/// The KV v2 path of a cluster's federation document (without the mount).
pub fn federation_path(prefix: &str, cluster: &str) -> String {
    format!("{}/federation", cluster_base(prefix, cluster))
}

/// The name of a cluster's ACL policy, AppRole and OIDC key:
/// `rh-fleet-<prefix with - for />-<cluster>`.
pub fn fleet_role_name(prefix: &str, cluster: &str) -> String {
    format!("rh-fleet-{}-{cluster}", prefix.replace('/', "-"))
}

/// The OIDC role of `cloud` for a cluster: `<fleet role name>-<cloud>`.
pub fn oidc_role_name(prefix: &str, cluster: &str, cloud: Cloud) -> String {
    format!("{}-{}", fleet_role_name(prefix, cluster), cloud.as_str())
}

/// The API path (under `/v1/`) a node reads `cloud`'s identity token from.
pub fn token_api_path(prefix: &str, cluster: &str, cloud: Cloud) -> String {
    format!(
        "identity/oidc/token/{}",
        oidc_role_name(prefix, cluster, cloud)
    )
}

/// Whether `token` looks like a compact JWS: three non-empty base64url
/// segments, at most [`MAX_TOKEN_BYTES`]. What a node writes to its token
/// file must pass this (a store answer that does not is refused, and the
/// file keeps the last good token).
pub fn is_compact_jwt(token: &str) -> bool {
    token.len() <= MAX_TOKEN_BYTES
        && token.split('.').count() == 3
        && token
            .split('.')
            .all(|seg| all(seg, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// The identity part of a node report: when the node's identity tokens
/// expire, when it last refreshed them, and its last refresh error (kept
/// after later successes, with its time, so `status` shows what happened
/// while the store was away). Names and times only, never a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStatus {
    /// The clouds the node fetches tokens for.
    #[serde(default)]
    pub clouds: Vec<Cloud>,
    /// When the earliest of its current tokens expires (seconds since the epoch; 0: none).
    #[serde(default)]
    pub expires_at: u64,
    /// When it last fetched them all (0: never).
    #[serde(default)]
    pub refreshed_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When `last_error` happened (0: none).
    #[serde(default)]
    pub last_error_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed() -> Federation {
        Federation::example()
    }

    #[test]
    fn a_valid_document_passes_and_names_its_audiences() {
        let f = fed();
        assert_eq!(f.validate(), Ok(()));
        assert_eq!(f.clouds(), Cloud::ALL);
        assert_eq!(f.audience(Cloud::Aws).unwrap(), "sts.amazonaws.com");
        assert_eq!(
            f.audience(Cloud::Gcp).unwrap(),
            "https://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/rh/providers/gpu"
        );
        assert_eq!(f.audience(Cloud::Azure).unwrap(), AZURE_AUDIENCE);
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Federation>(&text).unwrap(), f);
    }

    #[test]
    fn every_identifier_is_allow_listed() {
        for (arn, ok) in [
            ("arn:aws:iam::123456789012:role/a", true),
            ("arn:aws:iam::123456789012:role/path/to/Role+=,.@_-", true),
            ("arn:aws-cn:iam::123456789012:role/a", true),
            ("arn:aws:iam::12345678901:role/a", false),
            ("arn:aws:iam:us-east-1:123456789012:role/a", false),
            ("arn:aws:iam::123456789012:user/a", false),
            ("arn:aws:iam::123456789012:role/", false),
            ("arn:aws:iam::123456789012:role/a b", false),
            ("arn:aws:iam::123456789012:role/a\n[x]", false),
            ("arn:aws:sts::123456789012:role/a", false),
        ] {
            assert_eq!(is_aws_role_arn(arn), ok, "{arn}");
        }
        for (aud, ok) in [
            ("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q", true),
            ("https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q", false),
            ("//iam.googleapis.com/projects/x/locations/global/workloadIdentityPools/p/providers/q", false),
            ("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/P/providers/q", false),
            ("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q/x", false),
            ("//evil.example/projects/1/locations/global/workloadIdentityPools/p/providers/q", false),
        ] {
            assert_eq!(is_gcp_audience(aud), ok, "{aud}");
        }
        assert!(is_gcp_service_account("a@b.iam.gserviceaccount.com"));
        assert!(!is_gcp_service_account("a@b"));
        assert!(!is_gcp_service_account("a/b@c.com"));
        assert!(!is_gcp_service_account("a@b.com:generateAccessToken?x"));
        assert!(is_uuid("0b6e8f4e-54b7-4c3b-9d0c-2d3b5d1f7a11"));
        assert!(!is_uuid("0b6e8f4e-54b7-4c3b-9d0c-2d3b5d1f7a1"));
        assert!(!is_uuid("0b6e8f4e54b74c3b9d0c2d3b5d1f7a11"));
        assert!(is_azure_tenant("contoso.onmicrosoft.com"));
        assert!(!is_azure_tenant("contoso"));
        assert!(!is_azure_tenant("evil.example/path"));
        assert!(is_aws_profile("default") && is_aws_profile("gpu.nodes-1"));
        assert!(!is_aws_profile("a b") && !is_aws_profile("x]\n[y"));
    }

    #[test]
    fn a_bad_field_fails_the_whole_document() {
        let mut f = fed();
        f.gcp.as_mut().unwrap().service_account = Some("x@y.com/../../z".into());
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains("gcp service_account"), "{err}");
        let mut f = fed();
        f.token_ttl_secs = 10;
        assert_eq!(f.validate(), Err(IdentityError::Ttl(10)));
        let mut f = fed();
        f.format = 2;
        assert_eq!(f.validate(), Err(IdentityError::Format(2)));
        let none = Federation {
            format: 1,
            token_ttl_secs: 900,
            aws: None,
            gcp: None,
            azure: None,
        };
        assert_eq!(none.validate(), Err(IdentityError::Empty));
        // Fields that could point the node elsewhere do not exist: a
        // document carrying one is not a federation document.
        let mut v = serde_json::to_value(fed()).unwrap();
        v["gcp"]["token_url"] = "https://evil.example/token".into();
        assert!(serde_json::from_value::<Federation>(v).is_err());
        let mut v = serde_json::to_value(fed()).unwrap();
        v["aws"]["web_identity_token_file"] = "/etc/passwd".into();
        assert!(serde_json::from_value::<Federation>(v).is_err());
    }

    #[test]
    fn names_and_token_shape() {
        assert_eq!(
            federation_path("rh/a", "gpu"),
            "rh/a/clusters/gpu/federation"
        );
        assert_eq!(fleet_role_name("rh/a", "gpu"), "rh-fleet-rh-a-gpu");
        assert_eq!(
            token_api_path("rh/a", "gpu", Cloud::Gcp),
            "identity/oidc/token/rh-fleet-rh-a-gpu-gcp"
        );
        assert!(is_compact_jwt("eyJh.eyJi.c2ln"));
        assert!(!is_compact_jwt("eyJh.eyJi"));
        assert!(!is_compact_jwt("eyJh..c2ln"));
        assert!(!is_compact_jwt("eyJh.eyJi.c2ln\n"));
        assert!(!is_compact_jwt("a.b."));
        assert!(!is_compact_jwt(&format!(
            "a.b.{}",
            "c".repeat(MAX_TOKEN_BYTES)
        )));
        assert!(is_plain_name("rh/alice") && is_plain_name("gpu-1"));
        assert!(!is_plain_name("gpu{{x}}") && !is_plain_name("a\"b"));
    }
}
