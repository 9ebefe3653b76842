//! The install service's checks as the handlers answer them: a refused
//! placement is a 403 with the policy's code, a malformed one a 400.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::StatusCode;

use common::apply::TargetFile;
use common::placement::{place, PlaceOpts, PlacedEnv, Placement};
use common::policy::{Origin, Policy, Reach};
use common::secret_value::values_from;
use common::wire::SyncItem;
use common::{Secret, SecretValue};

use crate::config::Config;
use crate::error::ApiError;
use crate::install::{self, InstallError};
use crate::state::AppState;

/// The placed files of `secret`, each asked of the node's policy as the
/// install service asks it, refusals answered as the handlers answer them.
fn confine_files(
    (home, canon_home, policy): (&Path, &Path, &Policy),
    secret: &Secret,
    placement: &Placement,
    origin: Origin,
) -> Result<Vec<TargetFile>, ApiError> {
    placement
        .files
        .iter()
        .map(|file| {
            policy
                .may_write(home, canon_home, secret, &file.path, origin, Reach::Home)
                .map_err(|e| InstallError::from(e).into())
        })
        .collect()
}

/// One item checked by the install service, as the handlers answer it.
fn plan(state: &AppState, item: SyncItem, origin: Origin) -> Result<install::Planned, ApiError> {
    install::plan_item(state, item, origin).map_err(ApiError::from)
}

/// Secrets pulled from the store (`Origin::Remote`) only go to their
/// provider's credential locations or the config's `allow_paths`; the
/// same paths pushed by a token holder (`Origin::Local`) pass unless denied.
#[test]
fn remote_paths_need_a_provider_location_or_the_allow_list() {
    let home = tempfile::tempdir().unwrap();
    let mut config = Config::for_home(home.path());
    config.allow_paths = vec!["~/allowed".into()];
    let secret = |provider: &str, path: Option<&str>| {
        let mut s = Secret::base("s", values_from([("access_key", "A"), ("secret_key", "S")]));
        s.provider = Some(provider.into());
        s.path = path.map(Into::into);
        s
    };
    for (provider, path, code) in [
        ("aws", None, None),
        ("aws", Some("~/.aws/other"), None),
        ("aws", Some("~/notes/creds"), Some("path_not_allowed")),
        ("custom", Some("~/app.json"), Some("path_not_allowed")),
        ("custom", Some("~/allowed/app.json"), None),
        ("custom", Some("~/.bashrc"), Some("path_reserved")),
        ("custom", Some("~/.rh/agent/token"), Some("path_reserved")),
    ] {
        let s = secret(provider, path);
        let placed = place(&s, &PlaceOpts::request(None, None, true)).unwrap();
        let (canon, policy) = (
            home.path().canonicalize().unwrap(),
            install::policy(&config),
        );
        let homes = (home.path(), canon.as_path(), &policy);
        let got = confine_files(homes, &s, &placed, Origin::Remote)
            .err()
            .map(|e| (e.status, e.code));
        assert_eq!(got, code.map(|c| (StatusCode::FORBIDDEN, c)), "{path:?}");
        let local = confine_files(homes, &s, &placed, Origin::Local).err();
        assert_eq!(local.is_some(), code == Some("path_reserved"), "{path:?}");
    }
}

/// A placement sent with an item gets the node's own checks on every
/// origin: for a pulled item (`Origin::Remote`) a placement naming a
/// deny-listed or reserved file, a file outside the provider's locations,
/// a var neither the provider's nor in `allow_vars`, a field that is not
/// data (a kube user's `exec`), or an env without vars is refused.
#[tokio::test]
async fn a_sent_placement_gets_the_nodes_checks_for_remote_items() {
    let home = tempfile::tempdir().unwrap();
    let mut config = Config::for_home(home.path());
    // The env host would be this test binary (current_exe), which exits
    // at once on `env-host` arguments; a stand-in that reads its stdin
    // and stays up keeps `open` from racing that exit.
    let host = home.path().join("env-host.sh");
    std::fs::write(&host, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    config.env_host_exe = host;
    config.allow_vars = vec!["MY_TOKEN".into()];
    let state = AppState::open(config).await.unwrap();
    let custom = |path: &str| {
        let mut s = Secret::base("s", values_from([("token", "T")]));
        s.provider = Some("custom".into());
        s.path = Some(path.into());
        s
    };
    let file_item = |path: &str| {
        let s = custom(path);
        let placed = place(&s, &PlaceOpts::request(None, None, true)).unwrap();
        SyncItem::placed(s, placed)
    };
    for path in ["~/.bashrc", "~/.rh/agent/token", "~/notes/app.json"] {
        let err = plan(&state, file_item(path), Origin::Remote).err();
        let code = err.map(|e| (e.status, e.code));
        assert!(
            matches!(code, Some((StatusCode::FORBIDDEN, _))),
            "{path}: {code:?}"
        );
    }
    let var_item = |var: &str| {
        let s = Secret::base("s", values_from([("v", "x")]));
        let mut vars = BTreeMap::new();
        vars.insert(var.to_owned(), "v".to_owned());
        let placed = Placement {
            files: vec![],
            env: Some(PlacedEnv {
                env: "base_env".into(),
                vars,
            }),
        };
        SyncItem::placed(s, placed)
    };
    for var in [
        "LD_PRELOAD",
        "PATH",
        "BASH_ENV",
        "GIT_SSH_COMMAND",
        "SSH_ASKPASS",
        "DOCKER_HOST",
        "OTHER_TOKEN",
    ] {
        let err = plan(&state, var_item(var), Origin::Remote)
            .err()
            .map(|e| (e.status, e.code));
        assert_eq!(
            err,
            Some((StatusCode::FORBIDDEN, "var_not_allowed")),
            "{var}"
        );
        assert!(plan(&state, var_item(var), Origin::Local).is_ok());
    }
    assert!(plan(&state, var_item("MY_TOKEN"), Origin::Remote).is_ok());
    let kube = |user: serde_json::Value| {
        let mut s = Secret::base("k", BTreeMap::new());
        s.provider = Some("kubernetes".into());
        for (key, value) in [
            (
                "clusters",
                serde_json::json!([{"name": "c", "cluster": {"server": "https://c"}}]),
            ),
            ("users", serde_json::json!([{"name": "u", "user": user}])),
            ("current-context", serde_json::json!("c")),
        ] {
            s.values.insert(key.into(), SecretValue::new(value));
        }
        let placed = place(&s, &PlaceOpts::request(None, None, true)).unwrap();
        SyncItem::placed(s, placed)
    };
    let exec = serde_json::json!({"exec": {"command": "/bin/sh"}});
    let err = plan(&state, kube(exec.clone()), Origin::Remote).err();
    let err = err.map(|e| (e.status, e.code, e.message));
    assert!(
        matches!(&err, Some((StatusCode::FORBIDDEN, "program_not_allowed", m)) if m.contains("exec")),
        "{err:?}"
    );
    assert!(plan(&state, kube(exec), Origin::Local).is_ok());
    let data = plan(
        &state,
        kube(serde_json::json!({"token": "t"})),
        Origin::Remote,
    );
    let planned = data.ok().unwrap();
    assert!(!planned.secret.values.contains_key("current-context"));
    let empty_env = SyncItem::placed(
        Secret::base("s", values_from([("v", "x")])),
        Placement {
            files: vec![],
            env: Some(PlacedEnv {
                env: "other".into(),
                vars: BTreeMap::new(),
            }),
        },
    );
    let err = plan(&state, empty_env, Origin::Local)
        .err()
        .map(|e| (e.status, e.code));
    assert_eq!(err, Some((StatusCode::BAD_REQUEST, "invalid_placement")));
}
