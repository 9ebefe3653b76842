//! The part of the GCE metadata protocol google-auth and gcloud use, for
//! the node's `gcp` session secret: `instance/service-accounts/` (`default`
//! or the account's email: `?recursive=true` info, `email`, `scopes`,
//! `token`), `project/project-id`. Anything else is not found. Paths are
//! matched exactly, segment by segment; a `..` or an empty segment matches
//! nothing. Holds no HTTP types: the handler adds `Metadata-Flavor: Google`.

use common::session::{now_secs, Minted};
use serde_json::{json, Value};

/// What the metadata server answers.
#[derive(Debug)]
pub(crate) enum Answer {
    Json(Value),
    Text(String),
    NotFound,
}

/// The default scope of a token when the session names none.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

fn scopes(minted: &Minted) -> Vec<String> {
    if minted.scopes.is_empty() {
        vec![CLOUD_PLATFORM.to_owned()]
    } else {
        minted.scopes.clone()
    }
}

fn email(minted: &Minted) -> String {
    minted.account.clone().unwrap_or_else(|| "default".into())
}

/// The answer to `GET /computeMetadata/v1/<path>` for `minted`
/// (`recursive`: `?recursive=true`).
pub(crate) fn answer(path: &str, recursive: bool, minted: &Minted) -> Answer {
    let segments: Vec<&str> = path.split('/').collect();
    // A trailing slash leaves one empty last segment; any other empty or
    // dot segment matches nothing.
    let inner = match segments.split_last() {
        Some((&"", rest)) => rest,
        _ => &segments[..],
    };
    if inner
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Answer::NotFound;
    }
    let account = email(minted);
    let is_ours = |s: &str| s == "default" || s == account;
    match inner {
        ["project", "project-id"] => match &minted.project_id {
            Some(p) => Answer::Text(p.clone()),
            None => Answer::NotFound,
        },
        ["instance", "service-accounts"] => Answer::Text(format!("default/\n{account}/\n")),
        ["instance", "service-accounts", sa] if is_ours(sa) => {
            if recursive {
                Answer::Json(json!({
                    "aliases": ["default"],
                    "email": account,
                    "scopes": scopes(minted),
                }))
            } else {
                Answer::Text("aliases\nemail\nidentity\nscopes\ntoken\n".into())
            }
        }
        ["instance", "service-accounts", sa, "email"] if is_ours(sa) => Answer::Text(account),
        ["instance", "service-accounts", sa, "aliases"] if is_ours(sa) => {
            Answer::Text("default".into())
        }
        ["instance", "service-accounts", sa, "scopes"] if is_ours(sa) => {
            Answer::Text(scopes(minted).join("\n") + "\n")
        }
        ["instance", "service-accounts", sa, "token"] if is_ours(sa) => Answer::Json(json!({
            "access_token": minted.part("access_token"),
            "expires_in": (minted.expires_at - now_secs()).max(0),
            "token_type": "Bearer",
        })),
        _ => Answer::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::session::{gcp_credential, SessionKind};

    fn minted() -> Minted {
        Minted {
            kind: SessionKind::Gcp,
            credential: gcp_credential("ya29.minted"),
            expires_at: now_secs() + 3600,
            minted_at: now_secs(),
            source: "refresh_token".into(),
            region: None,
            project_id: Some("proj-1".into()),
            account: Some("sa@proj-1.iam.gserviceaccount.com".into()),
            scopes: vec![],
        }
    }

    #[test]
    fn answers_what_google_auth_asks_and_nothing_else() {
        let m = minted();
        let Answer::Json(info) = answer("instance/service-accounts/default/", true, &m) else {
            panic!()
        };
        assert_eq!(info["email"], "sa@proj-1.iam.gserviceaccount.com");
        assert_eq!(info["scopes"][0], CLOUD_PLATFORM);
        let Answer::Json(token) = answer("instance/service-accounts/default/token", false, &m)
        else {
            panic!()
        };
        assert_eq!(token["access_token"], "ya29.minted");
        assert!(token["expires_in"].as_i64().unwrap() > 3500);
        assert!(matches!(
            answer(
                "instance/service-accounts/sa@proj-1.iam.gserviceaccount.com/token",
                false,
                &m
            ),
            Answer::Json(_)
        ));
        assert!(
            matches!(answer("project/project-id", false, &m), Answer::Text(p) if p == "proj-1")
        );
        for other in [
            "instance/service-accounts/other@x/token",
            "instance/service-accounts/default/../default/token",
            "instance/service-accounts//token",
            "instance/attributes/ssh-keys",
            "",
        ] {
            assert!(
                matches!(answer(other, false, &m), Answer::NotFound),
                "{other}"
            );
        }
    }
}
