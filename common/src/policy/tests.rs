//! Tests of the placement policy.

use super::*;
use crate::fsutil::PathError;

const HOME: &str = "/home/u";

fn policy() -> Policy {
    Policy {
        reserved: vec![PathBuf::from("/srv/agent-state")],
        allow: vec!["~/work/creds".into()],
        allow_vars: vec![],
    }
}

fn code(provider: Option<&str>, path: &str, origin: Origin) -> &'static str {
    match policy().check(Path::new(HOME), provider, "s", path, origin) {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn deny_list_applies_to_every_origin() {
    for path in [
        "~/.bashrc",
        "~/.bash_profile",
        "~/.profile",
        "~/.zshrc",
        "~/.zshenv",
        "~/.config/fish/config.fish",
        "~/.ssh/authorized_keys",
        "~/.ssh/authorized_keys2",
        "~/.ssh/rc",
        "~/.ssh/config",
        "~/.ssh/environment",
        "~/.config/systemd/user/x.service",
        "~/.config/autostart/x.desktop",
        "~/.local/share/systemd/x",
        "~/.rh/agent/token",
        "~/.rh/secrets/other.json",
        "~/.rh",
        "~/.gitconfig",
        // spellings of the same files
        "~/./.bashrc",
        "~//.bashrc",
        "~/x/../.bashrc",
        "~/.BASHRC",
        "~/.ssh/./Authorized_Keys",
        ".bashrc",
        "/home/u/.bashrc",
        "/home/u/.ssh/../.ssh/rc",
        // the reserved state dir, anywhere
        "/srv/agent-state/token",
        "/srv/agent-state/../agent-state/x",
    ] {
        for origin in [Origin::Local, Origin::Remote] {
            for provider in [None, Some("aws"), Some("ssh"), Some("wandb")] {
                assert_eq!(
                    code(provider, path, origin),
                    "path_reserved",
                    "{path} {origin:?} {provider:?}"
                );
            }
        }
    }
}

#[test]
fn remote_paths_stay_in_the_providers_locations_or_the_allow_list() {
    for (provider, path, remote) in [
        (Some("aws"), "~/.aws/credentials", "ok"),
        (Some("aws"), "~/.aws/sub/creds", "ok"),
        (Some("aws"), "~/.kube/config", "path_not_allowed"),
        (Some("aws"), "~/.aws", "path_not_allowed"),
        (Some("aws"), "~/.aws/../notes", "path_not_allowed"),
        (Some("kubernetes"), "~/.kube/config", "ok"),
        (Some("gcp"), "~/.config/gcloud/adc.json", "ok"),
        (Some("gcp"), "~/.config/other.json", "path_not_allowed"),
        (
            Some("gcp"),
            "~/.config/gcloud/virtenv/bin/activate",
            "path_not_allowed",
        ),
        (Some("ssh"), "~/.ssh/id_work", "ok"),
        (Some("ssh"), "~/.ssh/id_work.pub", "ok"),
        (Some("ssh"), "~/.ssh/keys/id_work", "path_not_allowed"),
        (Some("ssh"), "~/id_work", "path_not_allowed"),
        (Some("sky"), "~/.ssh/sky-key.pub", "ok"),
        (Some("wandb"), "~/.netrc", "ok"),
        (Some("wandb"), "~/.netrc.d/x", "path_not_allowed"),
        (Some("openai"), "~/openai.json", "path_not_allowed"),
        (Some("huggingface"), "~/.cache/huggingface/token", "ok"),
        (Some("huggingface"), "~/.cache/pip/x", "path_not_allowed"),
        (
            Some("huggingface"),
            "~/.cache/huggingface/modules/transformers_modules/__init__.py",
            "path_not_allowed",
        ),
        (
            Some("huggingface"),
            "~/.cache/huggingface/token.d/x",
            "path_not_allowed",
        ),
        (None, "~/app/secret.json", "path_not_allowed"),
        (Some("custom-id"), "~/.aws/credentials", "path_not_allowed"),
        (None, "~/work/creds", "ok"),
        (None, "~/work/creds/a.json", "ok"),
        (None, "~/work/credsx/a.json", "path_not_allowed"),
        (None, "~/work", "path_not_allowed"),
        (None, "/etc/passwd", "path_not_allowed"),
        (None, "~", "path_not_allowed"),
    ] {
        assert_eq!(code(provider, path, Origin::Remote), remote, "{path}");
        assert_eq!(code(provider, path, Origin::Local), "ok", "{path}");
    }
}

#[test]
fn the_allow_list_never_opens_the_deny_list() {
    let p = Policy {
        reserved: vec![],
        allow: vec!["~/.ssh".into(), "~/".into(), "~/.rh".into()],
        allow_vars: vec![],
    };
    let home = Path::new(HOME);
    for path in ["~/.ssh/authorized_keys", "~/.rh/agent/token"] {
        let err = p.check(home, None, "s", path, Origin::Remote).unwrap_err();
        assert_eq!(err.code(), "path_reserved", "{path}");
    }
    // `~/` allows nothing (an empty prefix is not an allow entry).
    assert!(p
        .check(home, None, "s", "~/x.json", Origin::Remote)
        .is_err());
    assert!(p
        .check(home, None, "s", "~/.ssh/id_x", Origin::Remote)
        .is_ok());
}

#[test]
fn resolved_targets_are_checked_against_the_deny_list() {
    let p = policy();
    let home = Path::new(HOME);
    assert_eq!(
        p.check_resolved(home, "s", Path::new("/home/u/.bashrc"))
            .unwrap_err()
            .code(),
        "path_reserved"
    );
    assert!(p
        .check_resolved(home, "s", Path::new("/home/u/notes/x"))
        .is_ok());
    let err = p
        .check(home, Some("aws"), "mine", "~/.bashrc", Origin::Local)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mine") && err.contains("~/.bashrc"), "{err}");
}

/// A remote secret sets its provider's vars and the owner's
/// `allow_vars`, nothing else: the names the old deny-list missed
/// (issue 19) among them; a local one sets anything.
#[test]
fn remote_env_vars_are_the_providers_or_the_owners_allowed_ones() {
    let p = Policy {
        allow_vars: vec!["MY_TOKEN".into()],
        ..Policy::default()
    };
    let check = |provider: Option<&str>, var: &str, origin| {
        p.check_env_var(provider, "s", var, origin)
            .map_err(|e| e.code())
    };
    for var in [
        // missed by the deny-list
        "SSH_ASKPASS",
        "RUSTC_WRAPPER",
        "NODE_TLS_REJECT_UNAUTHORIZED",
        "PIP_INDEX_URL",
        "GLIBC_TUNABLES",
        "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES",
        "DOCKER_HOST",
        // and what it had
        "LD_PRELOAD",
        "PATH",
        "BASH_ENV",
        "PYTHONPATH",
        "GIT_SSH_COMMAND",
        // another provider's var, a case variant of an allowed one
        "AWS_ACCESS_KEY_ID",
        "my_token",
    ] {
        for provider in [None, Some("openai"), Some("custom-id")] {
            assert_eq!(
                check(provider, var, Origin::Remote),
                Err("var_not_allowed"),
                "{var} {provider:?}"
            );
            assert_eq!(check(provider, var, Origin::Local), Ok(()), "{var}");
        }
    }
    for (provider, var) in [
        (Some("openai"), "OPENAI_API_KEY"),
        (Some("aws"), "AWS_ACCESS_KEY_ID"),
        (Some("aws"), "AWS_SECRET_ACCESS_KEY"),
        (Some("huggingface"), "HF_TOKEN"),
        (Some("wandb"), "WANDB_API_KEY"),
        (None, "MY_TOKEN"),
        (Some("custom-id"), "MY_TOKEN"),
        (Some("aws"), "MY_TOKEN"),
    ] {
        assert_eq!(check(provider, var, Origin::Remote), Ok(()), "{var}");
    }
    let err = p
        .check_env_var(Some("openai"), "api", "DOCKER_HOST", Origin::Remote)
        .unwrap_err()
        .to_string();
    for part in ["api", "DOCKER_HOST", "OPENAI_API_KEY", "allow_vars"] {
        assert!(err.contains(part), "{part}: {err}");
    }
    let err = Policy::default()
        .check_env_var(None, "x", "A\u{1b}[2J", Origin::Remote)
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\u{1b}'), "{err}");
}

fn json_values(v: serde_json::Value) -> crate::Values {
    let serde_json::Value::Object(map) = v else {
        panic!("not an object")
    };
    map.into_iter()
        .map(|(k, v)| (k, crate::SecretValue::new(v)))
        .collect()
}

/// What `data_only` says of a remote secret: `Ok` with the keys left
/// after dropping, or the refused field.
fn data(provider: &str, v: serde_json::Value) -> Result<Vec<String>, String> {
    let mut values = json_values(v);
    match data_only(
        Some(provider),
        "s",
        Some("~/f"),
        &mut values,
        Origin::Remote,
    ) {
        Ok(()) => Ok(values.into_keys().collect()),
        Err(PolicyError::ProgramNotAllowed { field, .. }) => Err(field),
        Err(e) => panic!("{e}"),
    }
}

/// Each provider field that names a program, from the store, is refused
/// by name; the same values pushed by the user pass untouched.
#[test]
fn remote_secrets_carry_data_only() {
    use serde_json::json;
    let kube = |user: serde_json::Value| {
        json!({"apiVersion": "v1", "clusters": [{"name": "c", "cluster": {"server": "https://c"}}],
               "users": [{"name": "ok", "user": {"token": "t"}}, {"name": "u", "user": user}],
               "current-context": "c"})
    };
    let refused = [
        (
            "kubernetes",
            kube(json!({"exec": {"command": "/bin/sh", "args": ["-c", "id"]}})),
            "users[1].user.exec",
        ),
        (
            "kubernetes",
            kube(json!({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}})),
            "users[1].user.auth-provider",
        ),
        (
            "kubernetes",
            kube(json!({"tokenFile": "/etc/shadow"})),
            "users[1].user.tokenFile",
        ),
        (
            "kubernetes",
            json!({"clusters": [], "users": [{"name": "u", "exec": {}}]}),
            "users[0].exec",
        ),
        (
            "kubernetes",
            json!({"clusters": [], "users": {"u": {}}}),
            "users",
        ),
        (
            "kubernetes",
            json!({"clusters": [], "plugins": {}}),
            "plugins",
        ),
        (
            "aws",
            json!({"access_key": "A", "secret_key": "S", "credential_process": "/bin/sh -c id"}),
            "credential_process",
        ),
        (
            "docker",
            json!({"username": "u", "password": "p", "credsStore": "evil"}),
            "credsStore",
        ),
        (
            "docker",
            json!({"username": "u", "credHelpers": {"r.io": "evil"}}),
            "credHelpers",
        ),
        (
            "gcp",
            json!({"type": "external_account", "audience": "a",
                   "credential_source": {"executable": {"command": "/bin/sh -c id"}}}),
            "credential_source.executable",
        ),
        (
            "gcp",
            json!({"type": "impersonated_service_account",
                   "source_credentials": {"type": "external_account",
                       "credential_source": {"executable": {"command": "id"}}}}),
            "source_credentials.credential_source.executable",
        ),
        ("gcp", json!({"type": "gdch_service_account"}), "type"),
        ("gcp", json!({"client_id": "c", "cmd": "id"}), "cmd"),
        (
            "github",
            json!({"oauth_token": "t", "editor": "/bin/sh -c id"}),
            "editor",
        ),
        (
            "github",
            json!({"oauth_token": "t", "users": {"me": {"oauth_token": "t", "pager": "x"}}}),
            "users[0].pager",
        ),
        ("wandb", json!({"api_key": "k", "macdef": "init"}), "macdef"),
        (
            "ssh",
            json!({"private_key": "k", "public_key": "p", "config": "x"}),
            "config",
        ),
        (
            "huggingface",
            json!({"token": "t", "\u{1b}[2J": "x"}),
            "\"\\u{1b}[2J\"",
        ),
    ];
    for (provider, values, field) in refused {
        assert_eq!(
            data(provider, values.clone()),
            Err(field.to_owned()),
            "{provider}"
        );
        let mut local = json_values(values);
        let before = local.len();
        data_only(Some(provider), "s", None, &mut local, Origin::Local).unwrap();
        assert_eq!(local.len(), before, "{provider}: local values untouched");
    }
    // Data passes; a kubeconfig's current-context is dropped.
    assert_eq!(
        data(
            "kubernetes",
            kube(json!({"client-certificate-data": "c", "client-key-data": "k"}))
        ),
        Ok(vec!["apiVersion".into(), "clusters".into(), "users".into()])
    );
    for (provider, values) in [
        (
            "aws",
            json!({"access_key": "A", "secret_key": "S", "session_token": "T"}),
        ),
        (
            "gcp",
            json!({"type": "authorized_user", "client_id": "c", "refresh_token": "r"}),
        ),
        (
            "gcp",
            json!({"type": "external_account", "audience": "a",
                       "credential_source": {"file": "/var/run/token", "format": {"type": "text"}}}),
        ),
        (
            "github",
            json!({"user": "me", "oauth_token": "t", "users": {"me": {"oauth_token": "t"}, "other": null}}),
        ),
        ("mytool", json!({"anything": {"nested": ["data"]}})),
    ] {
        assert!(data(provider, values).is_ok(), "{provider}");
    }
    // The message names the secret, the file and the field, no value.
    let mut v = json_values(kube(json!({"exec": {"command": "/bin/sh"}})));
    let err = data_only(
        Some("kubernetes"),
        "kube",
        Some("~/.kube/config"),
        &mut v,
        Origin::Remote,
    )
    .unwrap_err();
    assert_eq!(err.code(), "program_not_allowed");
    let text = err.to_string();
    for part in ["kube", "~/.kube/config", "users[1].user.exec"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(!text.contains("/bin/sh"), "{text}");
}

/// The policy and the writer read each spelling as one file: what the
/// writer would write (`confine`) is what the policy allows, and a spelling
/// of a denied file is denied wherever the writer would reach it.
#[test]
fn the_policy_and_the_writer_read_tilde_spellings_alike() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let p = Policy {
        allow: vec!["~/x".into(), "~/~user".into()],
        ..Policy::default()
    };
    for (text, written, denied) in [
        ("~//x", Some("~/x"), "path_reserved"),
        ("~/./x", Some("~/x"), "path_reserved"),
        ("~/../x", None, "ok"),
        ("~user/x", Some("~/~user/x"), "ok"),
    ] {
        let confined = crate::fsutil::confine(home, text).ok().map(|f| f.display());
        assert_eq!(confined.as_deref(), written, "{text}");
        let remote = p.check(home, None, "s", text, Origin::Remote);
        assert_eq!(remote.is_ok(), written.is_some(), "{text}: {remote:?}");
        let bashrc = text.replace('x', ".bashrc");
        let local = p.check(home, None, "s", &bashrc, Origin::Local);
        assert_eq!(
            local.map_or_else(|e| e.code(), |()| "ok"),
            denied,
            "{bashrc}"
        );
    }
}

/// `may_write`: the path judged, confined (or taken where the user named
/// it), and the target it resolves to judged: a link in home to a denied
/// file is refused either way, a link leading out only when confined.
#[test]
fn may_write_judges_the_path_confines_it_and_judges_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let home = dir.path();
    let canon = home.canonicalize().unwrap();
    std::fs::write(home.join(".bashrc"), "# mine\n").unwrap();
    std::os::unix::fs::symlink(home.join(".bashrc"), home.join("creds.json")).unwrap();
    std::os::unix::fs::symlink(outside.path(), home.join("out")).unwrap();
    let secret = crate::Secret::base("s", crate::Values::new());
    let p = Policy::default();
    let ask = |path: &str, origin, reach| {
        p.may_write(home, &canon, &secret, path, origin, reach)
            .map(|f| f.display)
    };
    assert_eq!(
        ask("~/a/b.json", Origin::Local, Reach::Home).unwrap(),
        "~/a/b.json"
    );
    for reach in [Reach::Home, Reach::Named] {
        for path in ["~/.bashrc", "~/creds.json"] {
            let err = ask(path, Origin::Local, reach).unwrap_err();
            assert!(
                matches!(&err, Refused::Policy(e) if e.code() == "path_reserved"),
                "{path} {reach:?}: {err}"
            );
        }
    }
    assert!(matches!(
        ask("~/out/f.json", Origin::Local, Reach::Home),
        Err(Refused::Path(PathError::SymlinkEscape { .. }))
    ));
    assert!(ask("~/out/f.json", Origin::Local, Reach::Named).is_ok());
    assert!(matches!(
        ask("~/a.json", Origin::Remote, Reach::Home),
        Err(Refused::Policy(PolicyError::NotAllowed { .. }))
    ));
}
